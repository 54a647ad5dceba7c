"""infra/ templates, checked offline: each parses, declares something, documents its parameters, and the
files that wire templates together (modules, .bicepparam) name only parameters that exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.infra.bicep import (
    INFRA,
    MAIN,
    bicep_files,
    bicepparam,
    bicepparam_files,
    has_description,
    params,
    parse,
)


def _relative(path: Path) -> str:
    return str(path.relative_to(INFRA))


def test_infra_has_the_templates_issue_6_names() -> None:
    names = {_relative(p) for p in bicep_files()}
    assert {"main.bicep", "app-registration.bicep", "modules/identity.bicep", "modules/storage.bicep",
            "modules/monitoring.bicep", "modules/keyvault.bicep", "modules/function-app.bicep",
            "modules/app-settings.bicep", "modules/rbac.bicep"} <= names


@pytest.mark.parametrize("path", bicep_files(), ids=_relative)
def test_every_template_parses_and_declares_resources_or_modules(path: Path) -> None:
    template = parse(path)
    declared = list(template.get("resources") or {}) + list(template.get("modules") or {})
    assert declared, f"{_relative(path)} parsed to nothing"


@pytest.mark.parametrize("path", bicep_files(), ids=_relative)
def test_every_parameter_has_a_description(path: Path) -> None:
    undocumented = [name for name, p in params(parse(path)).items() if not has_description(p)]
    assert undocumented == []


@pytest.mark.parametrize("path", bicep_files(), ids=_relative)
def test_templates_reference_no_registry_module(path: Path) -> None:
    modules = (parse(path).get("modules") or {}).values()
    assert [m["detail"] for m in modules if m.get("type") != "local"] == []


@pytest.mark.parametrize("path", bicepparam_files(), ids=_relative)
def test_bicepparam_files_assign_only_parameters_the_template_declares(path: Path) -> None:
    template_path, assigned = bicepparam(path)
    assert template_path.exists(), f"{_relative(path)} uses a missing template"
    declared = set(params(parse(template_path)))
    assert assigned and set(assigned) <= declared, sorted(set(assigned) - declared)


@pytest.mark.parametrize("path", bicepparam_files(), ids=_relative)
def test_bicepparam_files_assign_every_required_parameter(path: Path) -> None:
    template_path, assigned = bicepparam(path)
    required = {name for name, p in params(parse(template_path)).items() if "default" not in p}
    assert required <= set(assigned), sorted(required - set(assigned))


def _module_calls() -> list[tuple[str, Path, dict]]:
    calls = []
    for caller in bicep_files():
        for name, module in (parse(caller).get("modules") or {}).items():
            target = (caller.parent / module["detail"]["path"]).resolve()
            calls.append((f"{_relative(caller)}:{name}", target, module["config"]))
    return calls


@pytest.mark.parametrize(("call", "target", "config"), _module_calls(), ids=[c[0] for c in _module_calls()])
def test_module_calls_pass_declared_parameters_and_every_required_one(call: str, target: Path, config: dict) -> None:
    body = config.get("config", config) if "condition" in config else config
    passed = set(body.get("params") or {})
    declared = params(parse(target))
    required = {name for name, p in declared.items() if "default" not in p}
    assert passed <= set(declared), f"{call} passes unknown {sorted(passed - set(declared))}"
    assert required <= passed, f"{call} misses {sorted(required - passed)}"


def test_graph_extension_is_pinned_in_bicepconfig() -> None:
    config = json.loads((INFRA / "bicepconfig.json").read_text())
    reference = config["extensions"]["microsoftGraphV1"]
    assert reference.startswith("br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:")
    assert "microsoftGraphV1" in (parse(INFRA / "app-registration.bicep").get("extensions") or {})


def test_main_outputs_what_publishing_and_consent_need() -> None:
    outputs = parse(MAIN).get("outputs") or {}
    assert {"AZURE_FUNCTION_APP_NAME", "FUNCTION_APP_BASE_URL", "CONSENT_CALLBACK_URL"} <= set(outputs)
