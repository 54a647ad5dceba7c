"""Reading infra/ without a Bicep compiler: pycep-parser's JSON of each template, and the small helpers the
infra tests share (values as written, parameter defaults, the app settings object)."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MAIN = INFRA / "main.bicep"
APP_SETTINGS = INFRA / "modules" / "app-settings.bicep"
APP_REGISTRATION = INFRA / "app-registration.bicep"

Template = dict[str, Any]


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def bicepparam_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicepparam"))


@functools.cache
def parse(path: Path) -> Template:
    """pycep's JSON of one template (identifiers and string literals both come back as plain strings)."""
    return BicepParser().parse(file_path=path)


def params(template: Template) -> dict[str, Any]:
    return template.get("parameters") or {}


def default(template: Template, name: str) -> Any:
    """The literal default of a parameter, or KeyError when it has none."""
    return params(template)[name]["default"]


def has_description(declaration: dict[str, Any]) -> bool:
    return any(d.get("type") == "description" and d.get("argument") for d in declaration.get("decorators") or [])


def resource(template: Template, name: str) -> dict[str, Any]:
    """A resource's body, unwrapped from its condition or loop (see the template itself for the loop)."""
    config = template["resources"][name]["config"]
    return config["config"] if "condition" in config and "config" in config else config


APP_SETTING_VALUES = "appSettingValues"
SETTING_OVERRIDES = "settingOverrides"


def app_settings_resource() -> dict[str, Any]:
    """The body of the config/appsettings resource."""
    template = parse(APP_SETTINGS)
    (name,) = [n for n, r in template["resources"].items()
               if r["type"] == "Microsoft.Web/sites/config" and r["config"].get("name") == "appsettings"]
    return resource(template, name)


def app_settings() -> dict[str, Any]:
    """Every app setting the Bicep sets, before overrides: setting name -> value expression."""
    return parse(APP_SETTINGS)["variables"][APP_SETTING_VALUES]["value"]


def camel(setting_name: str) -> str:
    """The parameter name that carries a setting: FETCH_ALERTS_SCHEDULE -> fetchAlertsSchedule."""
    first, *rest = setting_name.lower().split("_")
    return first + "".join(word.capitalize() for word in rest)


_USING = re.compile(r"^\s*using\s+'([^']+)'", re.MULTILINE)
_PARAM = re.compile(r"^\s*param\s+([A-Za-z_][A-Za-z0-9_]*)\s*=", re.MULTILINE)
_LINE_COMMENT = re.compile(r"//[^\n]*")


def bicepparam(path: Path) -> tuple[Path, list[str]]:
    """The template a .bicepparam file uses and the parameters it assigns (comments ignored).

    pycep does not read .bicepparam files; their grammar for this is two statements, so a regex does."""
    text = _LINE_COMMENT.sub("", path.read_text())
    using = _USING.search(text)
    if using is None:
        raise AssertionError(f"{path.name} has no using statement")
    return (path.parent / using.group(1)).resolve(), _PARAM.findall(text)
