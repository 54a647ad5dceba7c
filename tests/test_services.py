"""The service launchers never leave a child process behind."""

from __future__ import annotations

import pytest

from local.run.services import ServiceError, _spawn


def _sleeper(tmp_path):
    return _spawn("sleeper", ["sleep", "60"], tmp_path / "sleeper.log")


def test_an_interrupted_start_kills_the_child(tmp_path):
    service = _sleeper(tmp_path)

    def interrupted() -> bool:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        service.wait_ready(interrupted, timeout=5)
    assert not service.alive


def test_a_start_that_times_out_kills_the_child_and_says_so(tmp_path):
    service = _sleeper(tmp_path)
    with pytest.raises(ServiceError, match="not ready after"):
        service.wait_ready(lambda: False, timeout=0.3)
    assert not service.alive


def test_a_child_that_exits_while_starting_is_reported_with_its_code(tmp_path):
    service = _spawn("quitter", ["sh", "-c", "echo failing; exit 3"], tmp_path / "quitter.log")
    with pytest.raises(ServiceError, match="exited with code 3"):
        service.wait_ready(lambda: False, timeout=10)
