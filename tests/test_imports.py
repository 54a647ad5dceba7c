"""`python -m local.imports`: the import graph between top-level packages, and its exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from local.imports import flow_edges, graph, report
from local.run.services import REPO_ROOT


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_edges_count_every_import_statement_and_leave_relative_ones_inside(tmp_path: Path):
    write(tmp_path, "function_app.py", "import grant_access\nfrom notify_mssp import bp\n")
    write(tmp_path, "grant_access/a.py", "from shared import x\nfrom . import b\n")
    write(tmp_path, "notify_mssp/n.py", "def f():\n    from fetch_alerts.keys import k\n    import shared.y\n")
    write(tmp_path, "local/cloud/c.py", "import orjson\n")
    edges = graph(tmp_path)
    assert edges == {("function_app", "grant_access"): {"function_app.py"},
                     ("function_app", "notify_mssp"): {"function_app.py"},
                     ("grant_access", "shared"): {"grant_access/a.py"},
                     ("notify_mssp", "fetch_alerts"): {"notify_mssp/n.py"},
                     ("notify_mssp", "shared"): {"notify_mssp/n.py"}}
    assert flow_edges(edges) == {("notify_mssp", "fetch_alerts"): {"notify_mssp/n.py"}}
    assert report(tmp_path)["local_importing_product"] == {"cloud": [], "host": []}


def test_the_command_prints_the_graph_and_fails_only_on_a_flow_to_flow_edge():
    done = subprocess.run([sys.executable, "-m", "local.imports"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert "Import graph between top-level packages" in done.stdout
    assert "local/cloud importing product code: none" in done.stdout
    assert done.returncode == (1 if "Flow-to-flow imports (" in done.stdout else 0), done.stdout + done.stderr
