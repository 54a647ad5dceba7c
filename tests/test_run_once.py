"""`make run ARGS=--once`: one full cycle from empty storage, summarised in one JSON line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from local.run.services import REPO_ROOT, free_port

SUMMARY_KEYS = {"tenants", "alerts_stored", "emails_delivered", "duplicates", "failures", "errors"}


@pytest.mark.slow
def test_once_runs_a_cycle_and_ends_with_the_summary_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "local.run", "--once", "--port", str(free_port()), "--workdir", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240,
    )
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-2000:]
    summary = json.loads(lines[-1])
    assert set(summary) == SUMMARY_KEYS
    assert summary["errors"] == [], summary["errors"]
    assert result.returncode == 0, result.stderr[-2000:]
    assert summary["duplicates"] == 0 and summary["failures"] == 0


def test_once_reports_a_platform_failure_as_an_error_and_a_non_zero_exit(tmp_path):
    busy = tmp_path / "not-a-dir"
    busy.write_text("a file where the work folder should be")
    result = subprocess.run(
        [sys.executable, "-m", "local.run", "--once", "--port", str(free_port()), "--workdir", str(busy)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) == SUMMARY_KEYS
    assert result.returncode != 0
    assert summary["errors"] and summary["errors"][0]["where"] == "platform"
