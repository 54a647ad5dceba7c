"""The local host serves HTTP triggers as the Functions host does: routing, keys, requests, responses,
failures and functionTimeout (tests/host/apps/http_app, functionTimeout 00:00:02)."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local.run.services import LocalHost, start_host

APP_ROOT = Path(__file__).resolve().parent / "apps" / "http_app"
NEVER = "0 0 0 1 1 *"  # once a year: the timers stay quiet during these tests
QUIET_TIMERS = {name: NEVER for name in
                ("TICK_SCHEDULE", "STARTUP_SCHEDULE", "SLOW_TICK_SCHEDULE", "MONITORED_SCHEDULE")}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    log_dir = tmp_path_factory.mktemp("http-host")
    settings = {**QUIET_TIMERS, "GREETING_SETTING": "from the settings file"}
    service = start_host(APP_ROOT, settings, log_path=log_dir / "host.log")
    yield service
    service.stop()


def get(host: LocalHost, path: str, **kwargs: object) -> requests.Response:
    return requests.get(f"{host.url}{path}", timeout=30, **kwargs)  # type: ignore[arg-type]


def wait_for_log(host: LocalHost, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = host.log_path.read_text(errors="replace")
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the host log:\n{host.log_tail(60)}")


# --- routing ------------------------------------------------------------------------------------------


def test_function_without_route_template_is_served_under_its_name(host: LocalHost) -> None:
    response = get(host, "/api/hello")
    assert (response.status_code, response.text) == (200, "hello")


def test_route_prefix_and_literals_match_case_insensitively(host: LocalHost) -> None:
    assert get(host, "/API/Hello").text == "hello"


def test_path_outside_the_route_prefix_is_not_found(host: LocalHost) -> None:
    assert get(host, "/hello").status_code == 404


def test_int_parameter_reaches_the_function_as_a_route_param(host: LocalHost) -> None:
    body = get(host, "/api/items/42").json()
    assert body == {"function": "item_by_id", "route_params": {"id": "42"}}


def test_alpha_constraint_picks_the_route_that_accepts_the_value(host: LocalHost) -> None:
    assert get(host, "/api/items/widget").json()["function"] == "item_by_name"


def test_literal_segment_wins_over_parameter_routes(host: LocalHost) -> None:
    assert get(host, "/api/items/latest").json()["function"] == "item_latest"


def test_value_no_constraint_accepts_is_not_found(host: LocalHost) -> None:
    assert get(host, "/api/items/4x").status_code == 404


def test_guid_constraint_accepts_a_guid_only(host: LocalHost) -> None:
    value = str(uuid.uuid4())
    assert get(host, f"/api/guids/{value}").json()["route_params"] == {"id": value}
    assert get(host, "/api/guids/not-a-guid").status_code == 404


def test_catch_all_parameter_takes_the_rest_of_the_path_decoded(host: LocalHost) -> None:
    body = get(host, "/api/files/reports/2024/q1%20final.pdf").json()
    assert body["route_params"] == {"path": "reports/2024/q1 final.pdf"}


def test_optional_parameter_may_be_left_out(host: LocalHost) -> None:
    assert get(host, "/api/pages").json()["route_params"] == {}
    assert get(host, "/api/pages/7").json()["route_params"] == {"page": "7"}


def test_method_the_route_does_not_allow_is_not_found_as_in_azure(host: LocalHost) -> None:
    response = requests.get(f"{host.url}/api/echo/anything", timeout=30)
    assert response.status_code == 404


def test_unknown_route_is_not_found_with_an_empty_body(host: LocalHost) -> None:
    response = get(host, "/api/no/such/route")
    assert (response.status_code, response.content) == (404, b"")


# --- keys and auth levels ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "key", "expected"),
    [
        ("/api/secured/anonymous", None, 200),
        ("/api/secured/anonymous", "wrong", 200),
        ("/api/secured/function", None, 401),
        ("/api/secured/function", "wrong", 401),
        ("/api/secured/function", "function", 200),
        ("/api/secured/function", "master", 200),
        ("/api/secured/admin", None, 401),
        ("/api/secured/admin", "wrong", 401),
        ("/api/secured/admin", "function", 401),
        ("/api/secured/admin", "master", 200),
    ],
)
def test_auth_level_admits_exactly_the_keys_azure_admits(
    host: LocalHost, path: str, key: str | None, expected: int
) -> None:
    keys = {"function": host.function_key, "master": host.master_key, "wrong": "not-a-key", None: None}
    headers = {"x-functions-key": keys[key]} if key else {}
    response = get(host, path, headers=headers)
    assert response.status_code == expected
    if expected == 401:
        assert response.content == b""


def test_a_request_line_over_kestrels_8_kib_is_refused_with_414_before_any_key_check_and_not_echoed(
        host: LocalHost) -> None:
    # GET /api/secured/function?q=... HTTP/1.1: the line is 8,192 bytes at most, as Kestrel allows.
    fits = "x" * (8192 - len("GET /api/secured/function?q= HTTP/1.1"))
    assert get(host, "/api/secured/function", params={"q": fits}).status_code == 401
    for query in (fits + "x", "<x-hostile>" * 3000):
        response = get(host, "/api/secured/function", params={"q": query})
        assert (response.status_code, response.content) == (414, b"")
    with_key = get(host, "/api/secured/function", params={"q": fits + "x"},
                   headers={"x-functions-key": host.function_key})
    assert with_key.status_code == 414


def test_function_key_is_accepted_in_the_code_query_parameter(host: LocalHost) -> None:
    response = get(host, "/api/secured/function", params={"code": host.function_key})
    assert (response.status_code, response.text) == (200, "function level")


def test_wrong_code_query_parameter_is_unauthorized(host: LocalHost) -> None:
    assert get(host, "/api/secured/function", params={"code": "nope"}).status_code == 401


# --- requests and responses ----------------------------------------------------------------------------


def test_request_carries_method_url_query_headers_route_params_and_body(host: LocalHost) -> None:
    response = requests.put(
        f"{host.url}/api/echo/widgets?a=1&a=2&b=x",
        data="payload \u00e9".encode(),
        headers={"X-Test-One": "first"},
        timeout=30,
    )
    body = response.json()
    assert body == {
        "method": "PUT",
        "url": f"{host.url}/api/echo/widgets?a=1&a=2&b=x",
        "route_params": {"kind": "widgets"},
        "params": {"a": "1,2", "b": "x"},
        "headers": {"x-test-one": "first"},
        "body": "payload \u00e9",
        "body_length": len("payload \u00e9".encode()),
    }


def test_large_request_body_reaches_the_function_whole(host: LocalHost) -> None:
    payload = b"x" * (5 * 1024 * 1024)
    response = requests.post(f"{host.url}/api/echo/big", data=payload, timeout=60)
    assert response.json()["body_length"] == len(payload)


def test_http_response_status_headers_and_mimetype_are_returned(host: LocalHost) -> None:
    response = get(host, "/api/status/418")
    assert response.status_code == 418
    assert response.headers["X-Custom"] == "yes"
    assert response.headers["Content-Type"].startswith("text/csv")
    assert response.text == "custom"


def test_plain_string_return_value_is_a_200_text_response(host: LocalHost) -> None:
    response = get(host, "/api/plain")
    assert (response.status_code, response.text) == (200, "plain text")
    assert response.headers["Content-Type"].startswith("text/plain")


def test_return_value_the_worker_cannot_encode_fails_with_500(host: LocalHost) -> None:
    response = get(host, "/api/unencodable")
    assert (response.status_code, response.content) == (500, b"")
    wait_for_log(host, "Executed 'Functions.unencodable' (Failed")


def test_async_function_runs_on_the_event_loop(host: LocalHost) -> None:
    assert get(host, "/api/async").text == "async hello"


def test_context_parameter_receives_function_name_and_invocation_id(host: LocalHost) -> None:
    body = get(host, "/api/context").json()
    assert body["function_name"] == "with_context"
    log = wait_for_log(host, f"Id={body['invocation_id']}")
    assert f"Executing 'Functions.with_context' (Reason='This function was programmatically called via the host " \
           f"APIs.', Id={body['invocation_id']})" in log


def test_settings_file_values_are_in_the_app_environment(host: LocalHost) -> None:
    assert get(host, "/api/settings/GREETING_SETTING").json() == {"value": "from the settings file"}


def test_sync_functions_run_concurrently_in_the_thread_pool(host: LocalHost) -> None:
    markers = [uuid.uuid4().hex for _ in range(3)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        statuses = list(pool.map(
            lambda marker: get(host, "/api/slow", params={"seconds": "1", "marker": marker}).status_code, markers))
    assert statuses == [200, 200, 200]
    # The app's own records, in the order they were made: all three started before any of them finished.
    kinds = [r["kind"] for r in requests.get(f"{host.url}/api/records", timeout=30).json()
             if r.get("marker") in markers]
    assert kinds == ["slow_started"] * 3 + ["slow_finished"] * 3


# --- failures and logs -----------------------------------------------------------------------------------


def test_exception_gives_500_with_empty_body_and_goes_to_the_host_log(host: LocalHost) -> None:
    response = get(host, "/api/fail")
    assert (response.status_code, response.content) == (500, b"")
    log = wait_for_log(host, "Exception while executing function: Functions.fail")
    assert "RuntimeError: secret failure detail" in log
    assert "secret failure detail" not in response.text


def test_successful_invocation_is_logged_with_outcome_id_and_duration(host: LocalHost) -> None:
    body = get(host, "/api/context").json()
    log = wait_for_log(host, f"Executed 'Functions.with_context' (Succeeded, Id={body['invocation_id']}, Duration=")
    assert "ms)" in log.split(f"Id={body['invocation_id']}, Duration=")[1].splitlines()[0]


def test_sync_function_past_function_timeout_gives_500_and_the_timeout_message(host: LocalHost) -> None:
    marker = uuid.uuid4().hex
    response = get(host, "/api/slow", params={"seconds": "4", "marker": marker})
    assert response.status_code == 500
    # Answered at the timeout while the function still ran (not after it returned, not before it started).
    kinds = [r["kind"] for r in requests.get(f"{host.url}/api/records", timeout=30).json() if r.get("marker") == marker]
    assert kinds == ["slow_started"]
    log = wait_for_log(host, "Timeout value of 00:00:02 was exceeded by function: Functions.slow")
    [started] = [r for r in requests.get(f"{host.url}/api/records", timeout=30).json()
                 if r.get("marker") == marker and r["kind"] == "slow_started"]
    assert f"Executed 'Functions.slow' (Failed, Id={started['invocation_id']}" in log


def test_async_function_past_function_timeout_gives_500(host: LocalHost) -> None:
    response = get(host, "/api/slow-async", params={"seconds": "4"})
    assert response.status_code == 500
    wait_for_log(host, "Timeout value of 00:00:02 was exceeded by function: Functions.slow_async")


def test_timed_out_thread_is_abandoned_and_its_end_logged(host: LocalHost) -> None:
    # A marker of this invocation only: an earlier test's abandoned `slow` may still be running.
    marker = uuid.uuid4().hex

    def mine() -> dict[str, dict[str, object]]:
        found = requests.get(f"{host.url}/api/records", timeout=30).json()
        return {r["kind"]: r for r in found if r.get("marker") == marker}

    assert get(host, "/api/slow", params={"seconds": "2.5", "marker": marker}).status_code == 500
    assert "slow_finished" not in mine()  # answered while the thread still ran
    deadline = time.monotonic() + 5
    while "slow_finished" not in mine():
        assert time.monotonic() < deadline, "the abandoned invocation never finished"
        time.sleep(0.05)
    invocation_id = mine()["slow_started"]["invocation_id"]
    wait_for_log(host, f"Abandoned invocation of 'Functions.slow' (Id={invocation_id}) ended after")
