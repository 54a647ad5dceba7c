"""Durable Functions on the local host, over HTTP: orchestrations replayed through the SDK's handle, read
through the SDK's real client (tests/host/apps/durable_app)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import requests

from local.run.services import LocalHost
from tests.host.durable_support import new_id, run, start, start_durable_host, status, wait_done, wait_status


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("durable-state")


@pytest.fixture(scope="module")
def host(state_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    service = start_durable_host(state_dir, tmp_path_factory.mktemp("durable-host") / "host.log")
    yield service
    service.stop()


def _replays(host: LocalHost, instance_id: str) -> int:
    return host.admin("GET", f"local/durable/instances/{instance_id}").json()["replays"]


def test_fan_out_returns_every_result_with_fewer_replays_than_activities(host: LocalHost) -> None:
    instance_id = new_id("fan")
    assert start(host, "fan_out", 60, instance_id).status_code == 202

    done = wait_done(host, instance_id)

    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == sum(2 * i for i in range(60))
    assert _replays(host, instance_id) < 60


def test_activities_run_at_most_max_concurrent_activity_functions_at_once(host: LocalHost, state_dir: Path) -> None:
    key = new_id("conc")
    done = run(host, "concurrency_fan_out", {"key": key, "count": 9})

    assert done["runtimeStatus"] == "Completed"
    assert int((state_dir / f"peak-{key}").read_text()) == 3  # host.json: maxConcurrentActivityFunctions 3


def test_episodes_run_at_most_max_concurrent_orchestrator_functions_at_once(
        host: LocalHost, state_dir: Path) -> None:
    key = new_id("episodes")
    instance_ids = [new_id("busy") for _ in range(8)]
    # Started side by side, so all 8 are queued while the first episodes (1 s each) still run.
    with ThreadPoolExecutor(max_workers=8) as pool:
        started = list(pool.map(lambda instance_id: start(host, "busy_episode", key, instance_id), instance_ids))
    assert [response.status_code for response in started] == [202] * 8

    for instance_id in instance_ids:
        assert wait_done(host, instance_id)["runtimeStatus"] == "Completed"
    assert int((state_dir / f"peak-{key}").read_text()) == 4  # host.json: maxConcurrentOrchestratorFunctions 4


def test_failing_activity_is_retried_to_success_after_durable_timers(host: LocalHost) -> None:
    done = run(host, "retry_flaky", {"key": new_id("flaky"), "fail_times": 2, "max_attempts": 5},
               with_history=True)

    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == {"succeeded_on_attempt": 3}
    kinds = [event["EventType"] for event in done["history"]]
    assert kinds.count("TaskFailed") == 2
    assert kinds.count("TimerFired") == 2
    assert kinds.count("TaskCompleted") == 1


def test_parallel_retried_activities_each_succeed_on_their_own_attempt(host: LocalHost) -> None:
    done = run(host, "parallel_retries", None)

    assert done["runtimeStatus"] == "Completed", done["output"]
    assert done["output"] == {"attempts": [1, 2, 3, 4], "doubled": [10, 12]}


def test_exhausted_retries_fail_the_orchestration_with_the_activity_error(host: LocalHost, state_dir: Path) -> None:
    key = new_id("exhaust")
    done = run(host, "retry_flaky", {"key": key, "fail_times": 5, "max_attempts": 2})

    assert done["runtimeStatus"] == "Failed"
    assert done["output"].startswith("Orchestrator function 'retry_flaky' failed: Activity function 'flaky' failed")
    assert "flaky attempt 2 failed" in done["output"]
    assert (state_dir / f"flaky-{key}").read_text() == "2"


def test_durable_timer_resumes_the_orchestration_at_its_fire_time(host: LocalHost) -> None:
    done = run(host, "durable_timer", 0.6)

    assert done["runtimeStatus"] == "Completed"
    started = datetime.fromisoformat(done["output"]["started"])
    resumed = datetime.fromisoformat(done["output"]["resumed"])
    assert (resumed - started).total_seconds() >= 0.6


def test_task_any_resumes_with_the_timer_when_it_fires_first(host: LocalHost) -> None:
    done = run(host, "race", {"activity_s": 1.5, "timer_s": 0.2})

    assert done["output"] == {"winner": "timer"}


def test_task_any_resumes_with_the_activity_when_it_finishes_first(host: LocalHost) -> None:
    done = run(host, "race", {"activity_s": 0.05, "timer_s": 30})

    assert done["output"] == {"winner": "activity", "result": "slow finished"}


def test_sub_orchestrations_return_their_output_to_the_parent(host: LocalHost) -> None:
    instance_id = new_id("parent")
    assert start(host, "parent", None, instance_id).status_code == 202

    done = wait_done(host, instance_id)

    assert done["runtimeStatus"] == "Completed"
    assert done["output"] == {"fan_out": 6, "retry_flaky": {"succeeded_on_attempt": 2}}
    child = status(host, f"{instance_id}:0")
    assert (child["name"], child["runtimeStatus"], child["output"]) == ("fan_out", "Completed", 6)


def test_stale_child_completion_is_not_delivered_to_a_new_parent_with_the_same_id(host: LocalHost) -> None:
    parent_id, old_child, new_child = new_id("reused"), new_id("oldchild"), new_id("newchild")
    assert start(host, "parent_of_waiting_child", old_child, parent_id).status_code == 202
    wait_status(host, old_child, lambda s: s.get("runtimeStatus") == "Running")
    _post(host, f"terminate/{parent_id}")
    assert wait_done(host, parent_id)["runtimeStatus"] == "Terminated"
    assert start(host, "parent_of_waiting_child", new_child, parent_id).status_code == 202
    wait_status(host, new_child, lambda s: s.get("runtimeStatus") == "Running")

    _post(host, f"raise/{old_child}/approval", "stale")
    assert wait_done(host, old_child)["runtimeStatus"] == "Completed"
    _post(host, f"raise/{new_child}/approval", "fresh")

    done = wait_done(host, parent_id)
    assert (done["runtimeStatus"], done["output"]) == ("Completed", {"approval": "fresh"})


def _post(host: LocalHost, path: str, payload: object = None) -> None:
    response = requests.post(f"{host.url}/api/{path}", json=payload,
                             headers={"x-functions-key": host.function_key}, timeout=10)
    assert response.status_code == 202, response.text


def test_failed_sub_orchestration_is_retried_as_a_new_child_instance(host: LocalHost) -> None:
    instance_id = new_id("retrychild")
    assert start(host, "parent_retrying_child", None, instance_id).status_code == 202

    done = wait_done(host, instance_id)

    assert (done["runtimeStatus"], done["output"]) == ("Completed", 2)
    assert status(host, f"{instance_id}:0")["runtimeStatus"] == "Failed"
    assert status(host, f"{instance_id}:2")["runtimeStatus"] == "Completed"  # sequence 1 was the retry timer


def test_sub_orchestration_failure_surfaces_in_the_parent(host: LocalHost) -> None:
    done = run(host, "parent_catching_child", None)

    assert done["runtimeStatus"] == "Completed"
    assert done["output"]["caught"].startswith("Orchestrator function 'failing' failed: the orchestrator gave up")


def test_start_with_the_id_of_a_running_instance_is_refused(host: LocalHost) -> None:
    instance_id = new_id("dup")
    assert start(host, "with_status", None, instance_id).status_code == 202
    wait_status(host, instance_id, lambda s: s.get("runtimeStatus") == "Running")

    refused = start(host, "with_status", None, instance_id)

    assert refused.status_code == 409
    assert "An Orchestration instance with the status Running already exists." in refused.json()["refused"]


def test_start_with_the_id_of_a_completed_instance_starts_it_again(host: LocalHost) -> None:
    instance_id = new_id("again")
    assert start(host, "fan_out", 2, instance_id).status_code == 202
    assert wait_done(host, instance_id)["output"] == 2

    assert start(host, "fan_out", 3, instance_id).status_code == 202

    assert wait_done(host, instance_id)["output"] == 6


def test_status_read_by_the_sdk_client_has_the_extension_fields(host: LocalHost) -> None:
    done = run(host, "fan_out", 2, prefix="fields")

    assert done["name"] == "fan_out"
    assert done["runtimeStatus"] == "Completed"
    assert done["input"] == "2"  # the input as the JSON text the client sent, as the extension returns it
    assert done["output"] == 2
    assert done["createdTime"] <= done["lastUpdatedTime"]


def test_status_of_an_unknown_instance_is_not_found(host: LocalHost) -> None:
    assert status(host, new_id("missing")) == {"found": False}


def test_check_status_url_answers_with_the_key_it_carries(host: LocalHost) -> None:
    instance_id = new_id("check")
    accepted = start(host, "fan_out", 1, instance_id)
    wait_done(host, instance_id)

    status_url = accepted.json()["statusQueryGetUri"]
    answered = requests.get(status_url, timeout=10)

    assert accepted.headers["Location"] == status_url
    assert answered.status_code == 200
    assert answered.json()["runtimeStatus"] == "Completed"


def test_check_status_url_without_a_key_is_unauthorized(host: LocalHost) -> None:
    instance_id = new_id("nokey")
    accepted = start(host, "fan_out", 1, instance_id)
    wait_done(host, instance_id)

    bare_url = accepted.json()["statusQueryGetUri"].split("?", 1)[0]

    assert requests.get(bare_url, timeout=10).status_code == 401


def test_webhooks_refuse_the_function_key(host: LocalHost) -> None:
    instance_id = new_id("fkey")
    bare_url = start(host, "fan_out", 1, instance_id).json()["statusQueryGetUri"].split("?", 1)[0]
    wait_done(host, instance_id)

    answered = requests.get(bare_url, headers={"x-functions-key": host.function_key}, timeout=10)

    assert answered.status_code == 401


def test_webhooks_accept_the_master_key(host: LocalHost) -> None:
    instance_id = new_id("mkey")
    bare_url = start(host, "fan_out", 1, instance_id).json()["statusQueryGetUri"].split("?", 1)[0]
    wait_done(host, instance_id)

    answered = requests.get(bare_url, params={"code": host.master_key}, timeout=10)

    assert answered.status_code == 200


@pytest.mark.parametrize(("body", "message"), [(b"{not json", "Invalid JSON content"),
                                               (b'"\xff\xfe"', "not valid UTF-8")])
def test_start_with_an_unreadable_body_is_a_bad_request(host: LocalHost, body: bytes, message: str) -> None:
    response = requests.post(f"{host.url}/runtime/webhooks/durabletask/orchestrators/fan_out/{new_id('bad')}",
                             data=body, params={"code": host.master_key},
                             headers={"Content-Type": "application/json"}, timeout=10)

    assert response.status_code == 400
    assert message in response.json()["Message"]


@pytest.mark.parametrize(("body", "message"), [(b"{not json", "Invalid JSON content"),
                                               (b"\xff\xfe", "not valid UTF-8")])
def test_raise_event_with_an_unreadable_body_is_a_bad_request(host: LocalHost, body: bytes, message: str) -> None:
    instance_id = new_id("badevent")
    assert start(host, "with_status", None, instance_id).status_code == 202
    wait_status(host, instance_id, lambda s: s.get("runtimeStatus") == "Running")

    response = requests.post(f"{host.url}/durabletask/instances/{instance_id}/raiseEvent/approval", data=body,
                             headers={"Content-Type": "application/json"}, timeout=10)

    assert response.status_code == 400
    assert message in response.json()["Message"]
    assert status(host, instance_id)["runtimeStatus"] == "Running"


def test_direct_activity_run_with_invalid_json_is_a_bad_request(host: LocalHost) -> None:
    response = host.admin("POST", "local/durable/direct", data=b"{not json")

    assert response.status_code == 400
    assert "Invalid JSON content" in response.json()["error"]


def test_unhandled_orchestrator_error_fails_the_instance_with_its_message(host: LocalHost) -> None:
    done = run(host, "failing", None)

    assert done["runtimeStatus"] == "Failed"
    assert done["output"] == "Orchestrator function 'failing' failed: the orchestrator gave up"


def test_orchestrator_that_replays_differently_fails_as_non_deterministic(host: LocalHost) -> None:
    done = run(host, "nondeterministic", None)

    assert done["runtimeStatus"] == "Failed"
    assert "Non-Deterministic workflow detected" in done["output"]


def test_continue_as_new_restarts_the_instance_with_the_new_input(host: LocalHost) -> None:
    done = run(host, "counter", 0)

    assert (done["runtimeStatus"], done["output"]) == ("Completed", 3)


def test_custom_status_and_external_event_drive_a_waiting_orchestration(host: LocalHost) -> None:
    instance_id = new_id("approve")
    assert start(host, "with_status", None, instance_id).status_code == 202
    waiting = wait_status(host, instance_id, lambda s: s.get("customStatus") == {"stage": "waiting"})
    assert waiting["runtimeStatus"] == "Running"

    raised = requests.post(f"{host.url}/api/raise/{instance_id}/approval", json={"by": "test"},
                           headers={"x-functions-key": host.function_key}, timeout=10)

    assert raised.status_code == 202
    done = wait_done(host, instance_id)
    assert done["output"] == {"approval": {"by": "test"}}
    assert done["customStatus"] == {"stage": "approved"}


def test_terminate_ends_a_running_orchestration(host: LocalHost) -> None:
    instance_id = new_id("term")
    assert start(host, "with_status", None, instance_id).status_code == 202
    wait_status(host, instance_id, lambda s: s.get("runtimeStatus") == "Running")

    requests.post(f"{host.url}/api/terminate/{instance_id}", headers={"x-functions-key": host.function_key},
                  timeout=10)

    done = wait_done(host, instance_id)
    assert (done["runtimeStatus"], done["output"]) == ("Terminated", "stopped by test")


def test_list_by_runtime_status_returns_only_matching_instances(host: LocalHost) -> None:
    running_id = new_id("listrun")
    assert start(host, "with_status", None, running_id).status_code == 202
    completed = run(host, "fan_out", 1, prefix="listdone")
    wait_status(host, running_id, lambda s: s.get("runtimeStatus") == "Running")

    listed = requests.get(f"{host.url}/api/instances", params={"status": "Running"},
                          headers={"x-functions-key": host.function_key}, timeout=10).json()

    ids = {item["instanceId"] for item in listed}
    assert running_id in ids
    assert completed["instanceId"] not in ids
    assert {item["runtimeStatus"] for item in listed} == {"Running"}


def test_purge_deletes_a_finished_instance(host: LocalHost) -> None:
    done = run(host, "fan_out", 1, prefix="purge")

    purged = requests.delete(f"{host.url}/api/purge/{done['instanceId']}",
                             headers={"x-functions-key": host.function_key}, timeout=10)

    assert purged.json() == {"deleted": 1}
    assert status(host, done["instanceId"]) == {"found": False}


def test_purge_of_a_running_instance_is_refused(host: LocalHost) -> None:
    instance_id = new_id("nopurge")
    assert start(host, "with_status", None, instance_id).status_code == 202
    wait_status(host, instance_id, lambda s: s.get("runtimeStatus") == "Running")

    refused = requests.delete(f"{host.url}/api/purge/{instance_id}",
                              headers={"x-functions-key": host.function_key}, timeout=10)

    assert refused.status_code == 409
    assert "412" in refused.json()["refused"]  # the extension's PreconditionFailed, surfaced by the SDK
    assert status(host, instance_id)["runtimeStatus"] == "Running"


def test_history_has_the_extension_event_sequence(host: LocalHost) -> None:
    done = run(host, "side_effect", new_id("hist"), with_history=True)

    kinds = [event["EventType"] for event in done["history"]]
    assert kinds == ["ExecutionStarted", "TaskScheduled", "TaskCompleted", "TaskScheduled", "TaskCompleted",
                     "ExecutionCompleted"]


def test_raw_history_follows_the_extension_protocol(host: LocalHost) -> None:
    done = run(host, "fan_out", 4, prefix="raw")

    events = host.admin("GET", f"local/durable/instances/{done['instanceId']}",
                        params={"history": "true"}).json()["history"]

    kinds = [e["EventType"] for e in events]
    assert kinds[:7] == [12, 0, 4, 4, 4, 4, 13]
    assert kinds[-2:] == [13, 1]
    started = events[1]
    assert (started["Name"], started["Version"], started["Input"]) == ("fan_out", "", "4")
    assert [(e["EventId"], e["Name"]) for e in events if e["EventType"] == 4] == [(i, "double") for i in range(4)]
    results = {e["TaskScheduledId"]: e["Result"] for e in events if e["EventType"] == 5}
    assert results == {0: "0", 1: "2", 2: "4", 3: "6"}
    assert all(e["IsPlayed"] for e in events)
    episode_starts = [e["Timestamp"] for e in events if e["EventType"] == 12]
    assert episode_starts == sorted(episode_starts)
