"""host.json and settings files are read as the Functions host reads them (unit tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.host.hostconfig import (
    DEFAULT_FUNCTION_TIMEOUT,
    HostConfigError,
    SettingNotFoundError,
    load_host_config,
    load_settings_file,
    parse_host_config,
    parse_timespan,
    resolve_setting_expressions,
)


def test_function_timeout_is_read_as_a_timespan() -> None:
    assert parse_host_config({"version": "2.0", "functionTimeout": "00:10:00"}).function_timeout == 600


def test_function_timeout_minus_one_means_unbounded() -> None:
    assert parse_host_config({"version": "2.0", "functionTimeout": "-1"}).function_timeout is None


def test_function_timeout_defaults_to_the_flex_consumption_default() -> None:
    assert parse_host_config({"version": "2.0"}).function_timeout == DEFAULT_FUNCTION_TIMEOUT == 1800


def test_version_other_than_2_0_is_rejected() -> None:
    with pytest.raises(HostConfigError, match="version"):
        parse_host_config({"version": "1.0"})


def test_durable_hub_name_resolves_from_a_setting() -> None:
    config = parse_host_config(
        {"version": "2.0", "extensions": {"durableTask": {"hubName": "%HUB%", "maxConcurrentActivityFunctions": 7,
                                                          "maxConcurrentOrchestratorFunctions": 3}}},
        environ={"HUB": "alertshub"},
    )
    assert (config.durable.hub_name, config.durable.max_concurrent_activities,
            config.durable.max_concurrent_orchestrations) == ("alertshub", 7, 3)


def test_unset_setting_fails_naming_the_setting_and_where_it_is_used() -> None:
    with pytest.raises(SettingNotFoundError, match="'HUB' used in host.json extensions.durableTask.hubName"):
        parse_host_config({"version": "2.0", "extensions": {"durableTask": {"hubName": "%HUB%"}}}, environ={})


def test_setting_expression_may_be_part_of_a_value() -> None:
    assert resolve_setting_expressions("0 */%M% * * * *", where="x", environ={"M": "5"}) == "0 */5 * * * *"


def test_route_prefix_defaults_to_api_and_may_be_empty() -> None:
    assert parse_host_config({"version": "2.0"}).route_prefix == "api"
    empty = parse_host_config({"version": "2.0", "extensions": {"http": {"routePrefix": ""}}})
    assert empty.route_prefix == ""


def test_log_levels_map_to_python_levels() -> None:
    config = parse_host_config({"version": "2.0", "logging": {"logLevel": {"default": "Warning",
                                                                            "Function": "Information"}}})
    assert config.log_levels == {"default": 30, "Function": 20}


@pytest.mark.parametrize(("text", "seconds"), [("00:00:02", 2), ("01:30:00", 5400), ("1.00:00:01", 86401),
                                               ("00:05", 300)])
def test_timespans_parse_like_dotnet(text: str, seconds: float) -> None:
    assert parse_timespan(text) == seconds


def test_settings_file_in_local_settings_shape_gives_its_values(tmp_path: Path) -> None:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {"A": "1", "B": True, "C": None},
                                "ConnectionStrings": {}}))
    assert load_settings_file(path) == {"A": "1", "B": "true", "C": ""}


def test_flat_settings_file_gives_its_values(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"A": "1", "N": 5}))
    assert load_settings_file(path) == {"A": "1", "N": "5"}


def test_app_settings_override_host_json_values_case_insensitively(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"queues": {
        "batchSize": 8, "visibilityTimeout": "00:00:30"}}}))
    environ = {"AzureFunctionsJobHost__extensions__queues__VisibilityTimeout": "00:00:02",
               "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "3",
               "AzureFunctionsJobHost__functionTimeout": "00:01:00", "UNRELATED__extensions": "x"}
    config = load_host_config(tmp_path, environ)
    assert (config.queues.visibility_timeout, config.queues.max_dequeue_count, config.queues.batch_size) == (2, 3, 8)
    assert config.function_timeout == 60
    assert load_host_config(tmp_path, {}).queues.visibility_timeout == 30
