"""checkov on infra/: zero failed checks, every file parsed, no global skip list, and each inline skip names
its reason and suppresses a check checkov actually ran (no stale skips).

checkov lives in its own virtual environment (its pins conflict with pytest 9): CHECKOV names the
executable, else .local/infra-venv/bin/checkov, which `make setup` creates (infra/README.md)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep import INFRA, REPO, bicep_files

_SKIP = re.compile(r"checkov:skip=([A-Z0-9_]+)(?::\s*(.*))?")


def _checkov() -> Path:
    path = Path(os.environ.get("CHECKOV") or REPO / ".local" / "infra-venv" / "bin" / "checkov")
    if not path.exists():
        pytest.fail(f"checkov not found at {path}: run `make setup` or set CHECKOV to its executable")
    return path


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    # --skip-download: no network (no Prisma Cloud guidelines); no --skip-check: skips are inline only.
    result = subprocess.run(
        [str(_checkov()), "--directory", str(INFRA), "--framework", "bicep", "--output", "json",
         "--skip-download", "--compact"],
        capture_output=True, text=True, timeout=240, check=False, env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    output = json.loads(result.stdout)
    return output[0] if isinstance(output, list) else output


def _skips() -> list[tuple[str, str, str]]:
    return [(str(path.relative_to(INFRA)), match.group(1), (match.group(2) or "").strip())
            for path in bicep_files() for match in _SKIP.finditer(path.read_text())]


@pytest.mark.slow
def test_checkov_reports_no_failed_check(report: dict[str, Any]) -> None:
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert failed == []


def test_checkov_parses_every_template(report: dict[str, Any]) -> None:
    assert report["summary"]["parsing_errors"] == 0
    checked = {c["file_path"].lstrip("/") for kind in ("passed_checks", "skipped_checks")
               for c in report["results"][kind]}
    assert {"modules/storage.bicep", "modules/function-app.bicep", "modules/keyvault.bicep"} <= checked


@pytest.mark.parametrize(("file", "check", "reason"), _skips(), ids=[f"{f}:{c}" for f, c, _ in _skips()])
def test_every_inline_skip_gives_its_reason(file: str, check: str, reason: str) -> None:
    assert len(reason) >= 20, f"{file}: skip of {check} needs a reason after the colon"


def test_every_inline_skip_suppresses_a_check_checkov_ran(report: dict[str, Any]) -> None:
    used = {(c["file_path"].lstrip("/"), c["check_id"]) for c in report["results"]["skipped_checks"]}
    stale = [(file, check) for file, check, _ in _skips() if (file, check) not in used]
    assert stale == []


def test_there_is_no_global_skip_list() -> None:
    configs = [p for name in (".checkov.yaml", ".checkov.yml") for p in (REPO / name, INFRA / name) if p.exists()]
    assert configs == []
