"""`python -m local.imports`: the import graph between the repo's top-level packages.

Reads every .py file with `ast` (nothing is imported or run) and counts, for each pair of top-level
packages (grant_access, fetch_alerts, notify_mssp, shared, local, tests, function_app), the modules of
the first that import something of the second, wherever the import statement is (module level or inside
a function). Relative imports count for the package they are in.

The three flows (grant_access, fetch_alerts, notify_mssp) share code only through shared/ (see
docs/ARCHITECTURE.md, "Layout"): the exit status is 1 when one flow imports another, 0 otherwise. The
last lines also say whether the local cloud and the local host import product code (they should not:
local/PLATFORM.md, "Layout, by purpose").

    python -m local.imports            the graph, then the flow-to-flow edges (if any) with their modules
    python -m local.imports --json     the same as one JSON object
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("grant_access", "fetch_alerts", "notify_mssp", "shared", "local", "tests", "function_app")
FLOWS = ("grant_access", "fetch_alerts", "notify_mssp")
PRODUCT = (*FLOWS, "shared", "function_app")
SKIP_DIRS = {".venv", "node_modules", ".local", ".git", "__pycache__", ".pytest_cache", ".ruff_cache"}

Edges = dict[tuple[str, str], set[str]]


def python_files(root: Path) -> list[Path]:
    files = [root / "function_app.py"] if (root / "function_app.py").is_file() else []
    for package in PACKAGES:
        if (root / package).is_dir():
            files += [p for p in sorted((root / package).rglob("*.py"))
                      if not SKIP_DIRS & set(p.relative_to(root).parts)]
    return files


def owner(relative: Path) -> str | None:
    """The top-level package a file belongs to (None for a file outside them)."""
    top = relative.parts[0]
    if top == "function_app.py":
        return "function_app"
    return top if top in PACKAGES else None


def imported_tops(tree: ast.AST) -> set[str]:
    """Top-level names of what a module imports (absolute imports only; relative ones stay inside)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def graph(root: Path = REPO_ROOT, under: str | None = None) -> Edges:
    """(importer package, imported package) -> the importing files; `under` limits importers to a folder."""
    edges: Edges = defaultdict(set)
    for path in python_files(root):
        relative = path.relative_to(root)
        if under and not relative.as_posix().startswith(under.rstrip("/") + "/"):
            continue
        source = owner(relative)
        if source is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(relative))
        for target in imported_tops(tree) & set(PACKAGES):
            if target != source:
                edges[(source, target)].add(relative.as_posix())
    return edges


def flow_edges(edges: Edges) -> Edges:
    return {pair: files for pair, files in edges.items() if pair[0] in FLOWS and pair[1] in FLOWS}


def report(root: Path = REPO_ROOT) -> dict[str, object]:
    edges = graph(root)
    local_parts = {part: sorted({f for (_, t), files in graph(root, f"local/{part}").items() if t in PRODUCT
                                 for f in files})
                   for part in ("cloud", "host")}
    return {
        "edges": [{"from": s, "to": t, "modules": len(files)} for (s, t), files in sorted(edges.items())],
        "flow_edges": [{"from": s, "to": t, "files": sorted(files)}
                       for (s, t), files in sorted(flow_edges(edges).items())],
        "local_importing_product": local_parts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.imports", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = report()
    flows = result["flow_edges"]
    if args.json:
        print(json.dumps(result, indent=2))
        return 1 if flows else 0
    print("Import graph between top-level packages (importer -> imported: modules that import it)")
    for edge in result["edges"]:  # type: ignore[union-attr]
        print(f"  {edge['from']:>13} -> {edge['to']:<13} {edge['modules']}")
    print()
    if flows:
        print("Flow-to-flow imports (each flow shares code through shared/ only):")
        for edge in flows:  # type: ignore[union-attr]
            print(f"  {edge['from']} -> {edge['to']}: {', '.join(edge['files'])}")
    else:
        print("Flow-to-flow imports: none (grant_access, fetch_alerts, notify_mssp import only shared/)")
    for part, files in result["local_importing_product"].items():  # type: ignore[union-attr]
        print(f"local/{part} importing product code: {', '.join(files) if files else 'none'}")
    return 1 if flows else 0


if __name__ == "__main__":
    sys.exit(main())
