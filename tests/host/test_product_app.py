"""The product app (function_app:app at the repo root) runs in the local host: every function the app
registers is indexed and listed, timers resolve their schedules, HTTP routes answer with their auth level.

Written to stay true as functions are added: the listed set is compared with the app itself
(`get_functions()` in a separate interpreter), and the functions the product already has are required by
name (a superset is fine, a missing one fails).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from local.run.services import Azurite, LocalHost, ServiceError, start_host

REPO = Path(__file__).resolve().parents[2]
#: Functions the product has now, by name -> trigger type (new functions only add to this).
CORE_FUNCTIONS = {
    "health": "httpTrigger",
    "list_tenants": "httpTrigger",
    "fetch_alerts": "timerTrigger",
    "notify_mssp": "orchestrationTrigger",
    "list_pending_tenants": "activityTrigger",
}


def registered_functions() -> dict[str, dict[str, Any]]:
    """name -> trigger binding, straight from the app (in a child process: get_functions() runs once)."""
    script = (
        "import json; from function_app import app\n"
        "print(json.dumps({f.get_function_name(): json.loads(str(f))['bindings'] for f in app.get_functions()}))"
    )
    output = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            check=True, timeout=60).stdout
    bindings = json.loads(output.strip().splitlines()[-1])
    return {name: next(b for b in items if b["type"].endswith("Trigger")) for name, items in bindings.items()}


@pytest.fixture(scope="module")
def product_host(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    sample = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    settings = {**sample, "TABLES_CONNECTION_STRING": azurite.connection_string,
                "AzureWebJobsStorage": azurite.connection_string}
    log_dir = tmp_path_factory.mktemp("product-host")
    service = start_host(REPO, settings, log_path=log_dir / "host.log")
    yield service
    service.stop()


def test_host_lists_exactly_the_functions_the_app_registers(product_host: LocalHost) -> None:
    listed = {f["name"] for f in product_host.admin("GET", "functions").json()}
    assert listed == set(registered_functions())
    assert listed


def test_host_lists_the_products_core_functions_with_their_triggers(product_host: LocalHost) -> None:
    listed = {f["name"]: f for f in product_host.admin("GET", "functions").json()}
    missing = set(CORE_FUNCTIONS) - set(listed)
    assert not missing, f"functions missing from the product: {sorted(missing)}"
    triggers = {name: listed[name]["config"]["bindings"] for name in CORE_FUNCTIONS}
    for name, trigger_type in CORE_FUNCTIONS.items():
        assert trigger_type in [b["type"] for b in triggers[name]], name


def test_every_timer_schedule_resolves_without_errors(product_host: LocalHost) -> None:
    status = product_host.admin("GET", "host/status").json()
    assert status["state"] == "Running"
    assert "errors" not in status


def test_http_functions_are_served_under_the_api_prefix(product_host: LocalHost) -> None:
    listed = {f["name"]: f for f in product_host.admin("GET", "functions").json()}
    for name, trigger in registered_functions().items():
        if trigger["type"] == "httpTrigger":
            assert listed[name]["invoke_url_template"].startswith(f"{product_host.url}/api/")


def test_health_route_answers_anonymously(product_host: LocalHost) -> None:
    response = requests.get(f"{product_host.url}/api/health", timeout=30)
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"


def test_function_level_route_needs_a_key(product_host: LocalHost) -> None:
    assert requests.get(f"{product_host.url}/api/tenants", timeout=30).status_code == 401
    response = requests.get(f"{product_host.url}/api/tenants",
                            headers={"x-functions-key": product_host.function_key}, timeout=30)
    assert response.status_code == 200


def test_timer_with_a_durable_client_runs_when_invoked_through_the_admin_api(product_host: LocalHost) -> None:
    assert product_host.admin("POST", "functions/fetch_alerts", json={"input": ""}).status_code == 202
    deadline = time.monotonic() + 15
    while "Executed 'Functions.fetch_alerts' (" not in product_host.log_path.read_text():
        assert time.monotonic() < deadline, product_host.log_tail(40)
        time.sleep(0.1)
    assert "Executed 'Functions.fetch_alerts' (Succeeded" in product_host.log_path.read_text()


def test_host_refuses_to_start_when_a_host_json_setting_is_unset(tmp_path: Path) -> None:
    host_json = json.loads((REPO / "host.json").read_text())
    hub = host_json["extensions"]["durableTask"]["hubName"]
    assert hub.startswith("%") and hub.endswith("%"), "the hub name must come from an app setting"
    sample = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    setting = hub.strip("%")
    sample.pop(setting, None)
    with pytest.raises(ServiceError, match=f"app setting '{setting}' used in .*hubName is not set"):
        start_host(REPO, sample, log_path=tmp_path / "host.log", ready_timeout=30)
