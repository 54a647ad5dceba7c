"""`make bench`: run the benchmark scenarios and print their figures with the bound each is measured
against, measured in the same run.

Each scenario is a function `(workdir) -> dict` returning its figures plus `bound`, `target` and `met`.
The last line printed is one JSON object: {"scenarios": {name: figures}, "targets_met": bool}.
The logs of a scenario that misses its target (the hosts', Azurite's, the local cloud's) are kept in
`.local/bench-logs/<scenario>-<UTC time>/`, named by its figures' `logs`.
A new scenario is one more entry of SCENARIOS.

    make bench                          every scenario
    make bench ARGS="durable_fanout_1000"  only the named ones
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local.bench.durable import run_durable_fanout_1000
from local.bench.ingest import run_backlog_50k, run_tenants_1000
from local.bench.notify import run_emails_2000
from local.bench.scaleout import run_scaleout

Scenario = Callable[[Path], dict[str, Any]]
LOGS = Path(__file__).resolve().parents[2] / ".local" / "bench-logs"

SCENARIOS: dict[str, Scenario] = {
    "durable_fanout_1000": run_durable_fanout_1000,
    "emails_2000": run_emails_2000,
    "backlog_50k": run_backlog_50k,
    "tenants_1000": run_tenants_1000,
    "scaleout": run_scaleout,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"scenarios to run (default all: {', '.join(SCENARIOS)})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    unknown = [n for n in args.names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    results: dict[str, dict[str, Any]] = {}
    for name in args.names or list(SCENARIOS):
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as workdir:
            try:
                figures = SCENARIOS[name](Path(workdir))
            except Exception as exc:  # a broken scenario is reported, not hidden, and fails the targets
                figures = {"error": f"{type(exc).__name__}: {exc}", "met": False}
            if figures.get("met") is not True:
                figures["logs"] = _keep_logs(Path(workdir), name)
        results[name] = figures
        print(f"{name}: {json.dumps(figures)}", flush=True)
    summary = {"scenarios": results, "targets_met": all(r.get("met") is True for r in results.values())}
    print(json.dumps(summary), flush=True)
    return 0 if summary["targets_met"] else 1


def _keep_logs(workdir: Path, name: str) -> str:
    """Copy the scenario's log files out of its working directory (deleted next); their new folder."""
    kept = LOGS / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    for log in workdir.rglob("*.log"):
        target = kept / log.relative_to(workdir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, target)
    return str(kept)


if __name__ == "__main__":
    sys.exit(main())
