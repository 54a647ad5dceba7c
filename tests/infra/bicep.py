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


# --- evaluating the expressions that make names -----------------------------------------------------------------
# pycep returns identifiers and string literals alike as plain strings, and interpolations as their source text; the
# evaluator reads a string as a name when the scope holds it, and resolves `${name}` / `${name.property}` pieces.
# It covers what main.bicep's naming and checks use (string, array and lambda functions, user-defined functions);
# anything else raises, so a template change that it cannot follow fails the tests rather than passing them.

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")


class BicepFail(Exception):  # noqa: N818 - named after Bicep's fail()
    """fail() was evaluated: the deployment would stop with this message."""


def unique_string(*parts: str) -> str:
    """A stand-in for uniqueString(): 13 lower-case letters and digits, deterministic, like the real one
    (https://learn.microsoft.com/azure/azure-resource-manager/bicep/bicep-functions-string#uniquestring)."""
    import hashlib

    digest = hashlib.sha256("|".join(parts).encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(alphabet[b % 32] for b in digest[:13])


class Evaluator:
    def __init__(self, template: Template, parameters: dict[str, Any]) -> None:
        self.template = template
        self.values: dict[str, Any] = dict(parameters)
        # Parameter defaults are expressions too (e.g. 'prefix-${environmentName}'), evaluated like variables.
        self.variables = {name: p["default"] for name, p in params(template).items()
                          if "default" in p and name not in parameters}
        self.variables |= {name: v["value"] for name, v in (template.get("variables") or {}).items()}
        self.functions = template.get("functions") or {}

    def variable(self, name: str) -> Any:
        if name not in self.values:
            self.values[name] = self.eval(self.variables[name], {})
        return self.values[name]

    def _lookup(self, name: str, scope: dict[str, Any]) -> tuple[bool, Any]:
        if name in scope:
            return True, scope[name]
        if name in self.values:
            return True, self.values[name]
        if name in self.variables:
            return True, self.variable(name)
        return False, None

    def _string(self, text: str, scope: dict[str, Any]) -> Any:
        found, value = self._lookup(text, scope)
        if found:
            return value

        def piece(match: re.Match[str]) -> str:
            head, *path = match.group(1).split(".")
            ok, value = self._lookup(head, scope)
            if not ok:
                raise KeyError(f"unknown name in interpolation: {match.group(0)}")
            for key in path:
                value = value[key]
            return str(value)

        return _INTERPOLATION.sub(piece, text)

    def eval(self, node: Any, scope: dict[str, Any]) -> Any:  # noqa: C901, PLR0911, PLR0912 - one dispatch
        if node is None or isinstance(node, bool | int):
            return node
        if isinstance(node, str):
            return self._string(node, scope)
        if isinstance(node, list):
            return [self.eval(item, scope) for item in node]
        if "function" in node:
            return self._call(node["function"], scope)
        if "operator" in node:
            return self._operator(node["operator"], scope)
        if node.get("type") == "lambda_expression":
            return node
        return {key.strip("'"): self.eval(value, scope) for key, value in node.items()}

    def _lambda(self, node: dict, scope: dict[str, Any]) -> Any:
        detail = node["detail"]
        names = [detail[k] for k in sorted(detail) if k.startswith("var_")]
        return lambda *args: self.eval(detail["expression"], {**scope, **dict(zip(names, args, strict=True))})

    def _operator(self, op: dict, scope: dict[str, Any]) -> Any:
        kind, operands = op["type"], op["operands"]
        if kind == "conditional":
            branch = "true_value" if self.eval(operands["condition"], scope) else "false_value"
            return self.eval(operands[branch], scope)
        if kind == "not":
            return not self.eval(operands["bool_value"], scope)
        if kind == "property_accessor":
            return self.eval(operands["operand_1"], scope)[operands["operand_2"]]
        a = self.eval(operands["operand_1"], scope)
        if kind == "and":
            return a and self.eval(operands["operand_2"], scope)
        if kind == "or":
            return a or self.eval(operands["operand_2"], scope)
        b = self.eval(operands["operand_2"], scope)
        comparisons = {"equals": a == b, "not_equals": a != b}
        if kind in comparisons:
            return comparisons[kind]
        if kind == "greater_than":
            return a > b
        raise NotImplementedError(f"operator {kind}")

    def _call(self, call: dict, scope: dict[str, Any]) -> Any:  # noqa: C901, PLR0911, PLR0912 - one dispatch
        kind = call["type"]
        raw = list((call.get("parameters") or {}).values())
        if kind in self.functions:
            declared = self.functions[kind]
            args = [self.eval(a, scope) for a in raw]
            return self.eval(declared["expression"], dict(zip(declared["args"], args, strict=True)))
        if kind in ("map", "filter"):
            items = self.eval(raw[0], scope)
            fn = self._lambda(raw[1], scope)
            return [fn(x) for x in items] if kind == "map" else [x for x in items if fn(x)]
        args = [self.eval(a, scope) for a in raw]
        simple = {
            "to_lower": lambda s: s.lower(),
            "length": len,
            "empty": lambda v: v is None or len(v) == 0,
            "first": lambda v: v[0] if len(v) else ("" if isinstance(v, str) else None),
            "take": lambda v, n: v[: max(n, 0)],
            "substring": lambda s, start, n=None: s[start:] if n is None else s[start:start + n],
            "contains": lambda container, item: item in container,
            "split": lambda s, sep: s.split(sep),
            "join": lambda items, sep: sep.join(items),
            "range": lambda start, count: list(range(start, start + count)),
            "unique_string": unique_string,
            "subscription": lambda *_: {"id": "/subscriptions/00000000-0000-0000-0000-000000000000"},
            "resource_group": lambda *_: {"id": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg",
                                          "location": "swedencentral"},
            "union": lambda *objects: {k: v for o in objects for k, v in o.items()},
        }
        if kind == "fail":
            raise BicepFail(args[0])
        if kind in ("subscription", "resource_group"):
            args = [a for a in args if a is not None]
        if kind in simple:
            return simple[kind](*args)
        raise NotImplementedError(f"function {kind}")


def evaluate(path: Path, variable: str, parameters: dict[str, Any]) -> Any:
    """The value of one variable of a template, for these parameter values (defaults for the rest)."""
    return Evaluator(parse(path), parameters).variable(variable)
