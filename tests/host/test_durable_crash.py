"""Crash testing of the local host's Durable engine: the host dies at a chosen point (fault plan set over
HTTP with the master key), loses its in-memory orchestration state, and a new host starts clean; and an
activity delivered twice records one completion."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from local.run.services import LocalHost
from tests.host.durable_support import new_id, start, start_durable_host, status, wait_done

CRASH_EXIT_CODE = 137

HostFactory = Callable[[], LocalHost]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture
def new_host(state_dir: Path, tmp_path: Path) -> Iterator[HostFactory]:
    started: list[LocalHost] = []

    def factory() -> LocalHost:
        service = start_durable_host(state_dir, tmp_path / f"host-{len(started)}.log")
        started.append(service)
        return service

    yield factory
    for service in started:
        service.stop()


def _set_faults(host: LocalHost, plan: dict[str, object]) -> None:
    response = host.admin("POST", "local/faults", json=plan)
    assert response.status_code == 200, response.text


def _side_effects(state_dir: Path, key: str) -> int:
    path = state_dir / f"side-effects-{key}.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _crash_during(host: LocalHost, point: str, function: str, key: str) -> int | None:
    _set_faults(host, {"crash": {"point": point, "function": function, "occurrence": 1}})
    try:
        start(host, "side_effect", key, new_id("crash"))
    except requests.ConnectionError:
        pass  # the host may die before it answers
    return host.wait_exit(15)


def test_crash_after_activity_kills_the_host_after_its_side_effect_happened_once(
        new_host: HostFactory, state_dir: Path) -> None:
    key = new_id("after")

    exit_code = _crash_during(new_host(), "after_activity", "record_side_effect", key)

    assert exit_code == CRASH_EXIT_CODE
    assert _side_effects(state_dir, key) == 1


def test_crash_before_activity_kills_the_host_before_its_side_effect(new_host: HostFactory, state_dir: Path) -> None:
    key = new_id("before")

    exit_code = _crash_during(new_host(), "before_activity", "record_side_effect", key)

    assert exit_code == CRASH_EXIT_CODE
    assert _side_effects(state_dir, key) == 0


def test_crash_after_episode_kills_the_host_before_anything_is_scheduled(
        new_host: HostFactory, state_dir: Path) -> None:
    key = new_id("episode")

    exit_code = _crash_during(new_host(), "after_episode", "side_effect", key)

    assert exit_code == CRASH_EXIT_CODE
    assert _side_effects(state_dir, key) == 0


def test_host_started_after_a_crash_has_no_orchestration_state(new_host: HostFactory, state_dir: Path) -> None:
    crashed = new_host()
    key = new_id("restart")
    instance_id = new_id("lost")
    _set_faults(crashed, {"crash": {"point": "after_activity", "function": "record_side_effect"}})
    start(crashed, "side_effect", key, instance_id)
    assert crashed.wait_exit(15) == CRASH_EXIT_CODE

    restarted = new_host()

    assert status(restarted, instance_id) == {"found": False}
    listed = requests.get(f"{restarted.url}/api/instances", headers={"x-functions-key": restarted.function_key},
                          timeout=10).json()
    assert listed == []
    assert restarted.admin("GET", "local/faults").json() == {}


def test_orchestration_started_again_after_a_crash_repeats_the_side_effect(
        new_host: HostFactory, state_dir: Path) -> None:
    crashed = new_host()
    key = new_id("redo")
    instance_id = new_id("redo")
    _set_faults(crashed, {"crash": {"point": "after_activity", "function": "record_side_effect"}})
    start(crashed, "side_effect", key, instance_id)
    assert crashed.wait_exit(15) == CRASH_EXIT_CODE

    restarted = new_host()
    assert start(restarted, "side_effect", key, instance_id).status_code == 202

    assert wait_done(restarted, instance_id)["runtimeStatus"] == "Completed"
    assert _side_effects(state_dir, key) == 2  # at-least-once: the lost completion makes the work happen again


def test_duplicate_delivery_runs_the_activity_twice_and_records_one_completion(
        new_host: HostFactory, state_dir: Path) -> None:
    host = new_host()
    key = new_id("twice")
    _set_faults(host, {"duplicate_delivery": {"function": "record_side_effect", "count": 1}})
    instance_id = new_id("twice")
    assert start(host, "side_effect", key, instance_id).status_code == 202

    done = wait_done(host, instance_id, with_history=True)

    assert done["output"] == {"recorded": key, "doubled": 42}
    completions = [e for e in done["history"] if e["EventType"] == "TaskCompleted"]
    assert len(completions) == 2  # one per scheduled task: record_side_effect and double
    assert _side_effects_eventually(state_dir, key) == 2


def test_fault_plan_needs_the_master_key(new_host: HostFactory) -> None:
    host = new_host()

    response = requests.post(f"{host.url}/admin/local/faults", json={}, timeout=10,
                             headers={"x-functions-key": host.function_key})

    assert response.status_code == 401


def _side_effects_eventually(state_dir: Path, key: str, expected: int = 2, timeout: float = 5.0) -> int:
    # The duplicate delivery runs after the first completion is recorded, so it may still be running.
    deadline = time.monotonic() + timeout
    count = _side_effects(state_dir, key)
    while count < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        count = _side_effects(state_dir, key)
    return count
