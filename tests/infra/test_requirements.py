"""requirements.txt resolves, from wheels only, for what Azure runs: CPython 3.11 on Linux x86-64.

A resolver run with pip's target-platform options (PyPI is reachable from CI); nothing is installed."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.infra.bicep import REPO

PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    work = tmp_path_factory.mktemp("pip")
    report = work / "report.json"
    platform_options = [option for platform in PLATFORMS for option in ("--platform", platform)]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
         "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", *platform_options,
         "--target", str(work / "target"), "--report", str(report), "--quiet", "--disable-pip-version-check",
         "-r", str(REPO / "requirements.txt")],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    installs = json.loads(report.read_text())["install"]
    return {_normalise(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names() -> list[str]:
    names = []
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(_normalise(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]))
    return names


@pytest.mark.slow
def test_requirements_resolve_from_wheels_for_python_311_on_linux_x86_64(resolved: dict[str, str]) -> None:
    assert set(_requirement_names()) <= set(resolved)


def test_azure_functions_resolves_to_a_1x_release_for_python_311(resolved: dict[str, str]) -> None:
    # azure-functions 2.x needs Python 3.13; the deployed 3.11 worker must get 1.x.
    assert resolved["azure-functions"].startswith("1.")


def test_requirements_leave_the_worker_to_the_platform(resolved: dict[str, str]) -> None:
    assert "azure-functions-worker" not in _requirement_names()
