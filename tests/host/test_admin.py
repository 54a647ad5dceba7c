"""The admin API answers as the Functions host's does (master key only), and the local extras (stats,
shutdown) work; SIGTERM stops the host gracefully (tests/host/apps/http_app)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from local.run.services import LocalHost, start_host

APP_ROOT = Path(__file__).resolve().parent / "apps" / "http_app"
UNSUPPORTED_APP_ROOT = Path(__file__).resolve().parent / "apps" / "unsupported_app"
NEVER = "0 0 0 1 1 *"
QUIET_TIMERS = {name: NEVER for name in
                ("TICK_SCHEDULE", "STARTUP_SCHEDULE", "SLOW_TICK_SCHEDULE", "MONITORED_SCHEDULE")}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    log_dir = tmp_path_factory.mktemp("admin-host")
    settings = {**QUIET_TIMERS, "PYTHON_THREADPOOL_THREAD_COUNT": "3"}
    service = start_host(APP_ROOT, settings, log_path=log_dir / "host.log")
    yield service
    service.stop()


def records(host: LocalHost, kind: str) -> list[dict[str, Any]]:
    return [r for r in requests.get(f"{host.url}/api/records", timeout=30).json() if r["kind"] == kind]


def wait_for_records(host: LocalHost, kind: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = records(host, kind)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} {kind} records after {timeout}s")


@pytest.mark.parametrize("key", [None, "wrong", "function"])
def test_admin_api_refuses_anything_but_the_master_key(host: LocalHost, key: str | None) -> None:
    keys = {"function": host.function_key, "wrong": "wrong"}
    headers = {"x-functions-key": keys[key]} if key else {}
    response = requests.get(f"{host.url}/admin/host/status", headers=headers, timeout=30)
    assert response.status_code == 401


def test_host_status_says_running_with_id_and_version(host: LocalHost) -> None:
    body = host.admin("GET", "host/status").json()
    assert body["state"] == "Running"
    assert body["id"] and body["version"]


def test_master_key_in_the_code_query_parameter_is_accepted(host: LocalHost) -> None:
    response = requests.get(f"{host.url}/admin/host/status", params={"code": host.master_key}, timeout=30)
    assert response.status_code == 200


def test_function_list_has_every_function_with_its_bindings(host: LocalHost) -> None:
    listed = {f["name"]: f for f in host.admin("GET", "functions").json()}
    assert {"hello", "echo", "tick", "startup", "records"} <= set(listed)
    tick_trigger = listed["tick"]["config"]["bindings"][0]
    assert tick_trigger == {"direction": "in", "type": "timerTrigger", "name": "timer",
                            "schedule": "%TICK_SCHEDULE%"}
    assert listed["echo"]["invoke_url_template"] == f"{host.url}/api/echo/{{kind}}"
    assert listed["tick"]["invoke_url_template"] is None


def test_one_function_is_found_by_name_ignoring_case(host: LocalHost) -> None:
    assert host.admin("GET", "functions/HELLO").json()["name"] == "hello"


def test_invoking_a_timer_function_is_accepted_and_runs_it(host: LocalHost) -> None:
    before = len(records(host, "tick"))
    response = host.admin("POST", "functions/tick", json={"input": ""})
    assert response.status_code == 202
    fired = wait_for_records(host, "tick", before + 1)[-1]
    assert fired["past_due"] is False
    log = host.log_path.read_text()
    assert "Executing 'Functions.tick' (Reason='This function was programmatically called via the host APIs." in log


def test_admin_run_of_a_monitored_timer_gets_its_current_schedule_status(host: LocalHost) -> None:
    before = len(records(host, "monitored"))
    assert host.admin("POST", "functions/monitored", json={"input": ""}).status_code == 202
    fired = wait_for_records(host, "monitored", before + 1)[-1]
    # As TimerTriggerBinding reads the schedule monitor: the yearly schedule's next occurrence, never run.
    next_new_year = dt.datetime(dt.datetime.now(dt.UTC).year + 1, 1, 1, tzinfo=dt.UTC)
    assert dt.datetime.fromisoformat(fired["status"]["Next"]) == next_new_year
    assert dt.datetime.fromisoformat(fired["status"]["Last"]).year == 1
    assert fired["past_due"] is False


def test_admin_run_of_an_unmonitored_timer_gets_no_schedule_status(host: LocalHost) -> None:
    before = len(records(host, "unmonitored"))
    assert host.admin("POST", "functions/unmonitored", json={"input": ""}).status_code == 202
    fired = wait_for_records(host, "unmonitored", before + 1)[-1]
    assert fired["status"] == {}
    assert fired["past_due"] is False


def test_invoking_an_unknown_function_is_not_found(host: LocalHost) -> None:
    assert host.admin("POST", "functions/no_such_function", json={"input": ""}).status_code == 404


def test_invoking_without_a_body_is_a_bad_request(host: LocalHost) -> None:
    assert host.admin("POST", "functions/tick").status_code == 400


def test_invoking_an_http_function_is_refused(host: LocalHost) -> None:
    response = host.admin("POST", "functions/hello", json={"input": ""})
    assert response.status_code == 400
    assert "own route" in response.json()["error"]


def test_invoking_with_the_function_key_is_unauthorized(host: LocalHost) -> None:
    response = requests.post(f"{host.url}/admin/functions/tick", json={"input": ""},
                             headers={"x-functions-key": host.function_key}, timeout=30)
    assert response.status_code == 401


def test_local_stats_report_peak_rss_and_invocation_counts(host: LocalHost) -> None:
    requests.get(f"{host.url}/api/hello", timeout=30)
    body = host.admin("GET", "local/stats").json()
    assert 10 < body["peak_rss_mb"] < 4096
    assert body["pid"] == host.process.pid
    assert body["invocations"]["functions"]["hello"]["succeeded"] >= 1


def test_thread_pool_size_comes_from_python_threadpool_thread_count(host: LocalHost) -> None:
    assert host.admin("GET", "local/stats").json()["invocations"]["thread_pool_size"] == 3


@pytest.fixture(scope="module")
def unsupported_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    service = start_host(UNSUPPORTED_APP_ROOT, {}, log_path=tmp_path_factory.mktemp("unsupported") / "host.log")
    yield service
    service.stop()


def test_functions_with_unimplemented_bindings_are_in_error_in_the_host_status(unsupported_host: LocalHost) -> None:
    errors = unsupported_host.admin("GET", "host/status").json()["errors"]
    assert any(e.startswith("queued: binding type queue is not implemented by the local host") for e in errors)
    assert any(e.startswith("blob_reader: binding type blob is not implemented by the local host") for e in errors)
    assert len(errors) == 2


def test_function_in_error_is_logged_at_indexing(unsupported_host: LocalHost) -> None:
    log = unsupported_host.log_path.read_text()
    assert "The 'Functions.queued' function is in error: binding type queue is not implemented by the local host" \
        in log


def test_function_in_error_is_never_run(unsupported_host: LocalHost) -> None:
    response = requests.post(f"{unsupported_host.url}/api/queued", data="job", timeout=30)
    assert response.status_code != 202
    refused = unsupported_host.admin("POST", "functions/blob_reader", json={"input": ""})
    assert refused.status_code == 400
    assert "binding type blob is not implemented" in refused.json()["error"]
    assert "Executing 'Functions.queued'" not in unsupported_host.log_path.read_text()


def test_functions_beside_one_in_error_keep_working(unsupported_host: LocalHost) -> None:
    response = requests.get(f"{unsupported_host.url}/api/ok", timeout=30)
    assert (response.status_code, response.text) == (200, "ok")


def test_keys_starting_with_a_dash_are_accepted_on_the_command_line(tmp_path: Path) -> None:
    service = start_host(APP_ROOT, QUIET_TIMERS, log_path=tmp_path / "host.log",
                         master_key="-master-key", function_key="-function-key")
    try:
        response = requests.get(f"{service.url}/api/secured/function",
                                headers={"x-functions-key": "-function-key"}, timeout=30)
        assert response.status_code == 200
    finally:
        service.stop()


def test_local_shutdown_stops_the_host_with_exit_code_zero(tmp_path: Path) -> None:
    service = start_host(APP_ROOT, QUIET_TIMERS, log_path=tmp_path / "host.log")
    try:
        assert service.admin("POST", "local/shutdown").status_code == 202
        assert service.wait_exit(10) == 0
    finally:
        service.kill()


def test_sigterm_stops_the_host_gracefully(tmp_path: Path) -> None:
    service = start_host(APP_ROOT, QUIET_TIMERS, log_path=tmp_path / "host.log")
    service.stop()
    assert service.process.returncode == 0
    assert "Host stopped" in service.log_path.read_text()


def test_sigterm_exits_promptly_with_an_abandoned_invocation_still_running(tmp_path: Path) -> None:
    service = start_host(APP_ROOT, QUIET_TIMERS, log_path=tmp_path / "host.log")
    try:
        # functionTimeout is 2 s: the 60 s thread is abandoned and would keep a normal exit waiting.
        assert requests.get(f"{service.url}/api/slow", params={"seconds": "60"}, timeout=30).status_code == 500
        service.stop()
        # Exited by itself (a host still waiting at the end of the grace is killed), without waiting for
        # the abandoned thread: its end is never logged.
        assert service.process.returncode == 0
        log = service.log_path.read_text()
        assert "Host stopped" in log and "Abandoned invocation of 'Functions.slow'" not in log
    finally:
        service.kill()


def test_a_setting_read_at_process_start_is_in_the_hosts_environment_from_its_start(tmp_path: Path) -> None:
    # glibc reads MALLOC_ARENA_MAX when the process starts; Azure starts the worker with the app settings in
    # its environment, so the local host (which reads its settings file later) starts itself once more.
    service = start_host(APP_ROOT, {**QUIET_TIMERS, "MALLOC_ARENA_MAX": "2"}, log_path=tmp_path / "host.log",
                         env={"MALLOC_ARENA_MAX": ""})
    try:
        initial = Path(f"/proc/{service.process.pid}/environ").read_bytes().split(b"\0")
        assert b"MALLOC_ARENA_MAX=2" in initial
        assert requests.get(f"{service.url}/api/items/7", timeout=30).status_code == 200
    finally:
        service.stop()
    assert service.process.returncode == 0
