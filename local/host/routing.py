"""Route templates of HTTP triggers, matched as ASP.NET Core routing matches them in the Functions host.

A template is `/`-separated segments; a segment holds literal text and parameters: `{name}`,
`{name:constraint[:constraint...]}`, optional `{name?}`, default `{name=value}` and a catch-all `{*name}`
(last segment only). Literals match case-insensitively; values are URL-decoded. When several templates
match a path, the most specific wins (literal before constrained parameter before parameter before
catch-all, segment by segment), like the host's route precedence.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote


class RouteTemplateError(ValueError):
    """The route template is malformed or uses an unknown constraint."""


def _is_int(value: str, bits: int) -> bool:
    if not re.fullmatch(r"[+-]?\d+", value):
        return False
    return -(2 ** (bits - 1)) <= int(value) < 2 ** (bits - 1)


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return value.strip().lower() not in {"nan", "inf", "-inf", "+inf", "infinity"}


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value.strip("{}()"))
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _number(arg: str, constraint: str) -> int:
    try:
        return int(arg)
    except ValueError as exc:
        raise RouteTemplateError(f"constraint {constraint!r} needs a number") from exc


def _constraint(text: str) -> Callable[[str], bool]:
    name, _, arg = text.partition("(")
    name = name.lower()
    arg = arg[:-1] if arg.endswith(")") else arg
    simple: dict[str, Callable[[str], bool]] = {
        "int": lambda v: _is_int(v, 32),
        "long": lambda v: _is_int(v, 64),
        "bool": lambda v: v.lower() in {"true", "false"},
        "guid": _is_guid,
        "alpha": lambda v: bool(re.fullmatch(r"[A-Za-z]+", v)),
        "double": _is_float,
        "float": _is_float,
        "decimal": _is_float,
        "datetime": _is_datetime,
        "required": lambda v: v != "",
    }
    if name in simple and not arg:
        return simple[name]
    if name == "regex" and arg:
        pattern = re.compile(arg, re.IGNORECASE)
        return lambda v: pattern.search(v) is not None
    if name in {"min", "max", "minlength", "maxlength", "length", "range"} and arg:
        numbers = [_number(a.strip(), text) for a in arg.split(",")]
        if name == "min":
            return lambda v: _is_int(v, 64) and int(v) >= numbers[0]
        if name == "max":
            return lambda v: _is_int(v, 64) and int(v) <= numbers[0]
        if name == "range" and len(numbers) == 2:
            return lambda v: _is_int(v, 64) and numbers[0] <= int(v) <= numbers[1]
        if name == "minlength":
            return lambda v: len(v) >= numbers[0]
        if name == "maxlength":
            return lambda v: len(v) <= numbers[0]
        if name == "length":
            low, high = (numbers[0], numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
            return lambda v: low <= len(v) <= high
    raise RouteTemplateError(f"unknown route constraint {text!r}")


@dataclass
class _Parameter:
    name: str
    constraints: list[Callable[[str], bool]] = field(default_factory=list)
    optional: bool = False
    default: str | None = None
    catch_all: bool = False

    def accepts(self, value: str) -> bool:
        return all(check(value) for check in self.constraints)


@dataclass
class _Segment:
    parts: list[str | _Parameter]
    regex: re.Pattern[str] | None = None

    @property
    def literal(self) -> str | None:
        return self.parts[0] if len(self.parts) == 1 and isinstance(self.parts[0], str) else None

    @property
    def parameter(self) -> _Parameter | None:
        return self.parts[0] if len(self.parts) == 1 and isinstance(self.parts[0], _Parameter) else None

    def precedence(self) -> int:
        """Lower is more specific (ASP.NET's route precedence, simplified to whole segments)."""
        if self.literal is not None:
            return 1
        param = self.parameter
        if param is None:
            return 2  # complex segment: literal text around parameters
        if param.catch_all:
            return 5
        return 3 if param.constraints else 4


_PARAM = re.compile(r"\{([^{}]*)\}")


def _parse_parameter(text: str, template: str) -> _Parameter:
    catch_all = text.startswith("*")
    text = text.lstrip("*")
    default = None
    if "=" in text:
        text, _, default = text.partition("=")
    optional = text.endswith("?")
    text = text.rstrip("?")
    name, *constraint_texts = _split_constraints(text)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise RouteTemplateError(f"bad parameter name {name!r} in route {template!r}")
    return _Parameter(name, [_constraint(c) for c in constraint_texts], optional, default, catch_all)


def _split_constraints(text: str) -> list[str]:
    # A ':' inside a constraint's parentheses (e.g. regex(a:b)) does not start a new constraint.
    pieces, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == ":" and depth == 0:
            pieces.append(current)
            current = ""
        else:
            current += char
    pieces.append(current)
    return pieces


class RouteTemplate:
    def __init__(self, template: str) -> None:
        self.template = template.strip("/")
        self.segments: list[_Segment] = []
        raw_segments = self.template.split("/") if self.template else []
        for index, raw in enumerate(raw_segments):
            parts: list[str | _Parameter] = []
            position = 0
            for match in _PARAM.finditer(raw):
                if match.start() > position:
                    parts.append(raw[position:match.start()])
                parts.append(_parse_parameter(match.group(1), template))
                position = match.end()
            if position < len(raw):
                parts.append(raw[position:])
            if not parts:
                raise RouteTemplateError(f"empty segment in route {template!r}")
            segment = _Segment(parts)
            params = [p for p in parts if isinstance(p, _Parameter)]
            if any(p.catch_all for p in params) and (index != len(raw_segments) - 1 or len(parts) != 1):
                raise RouteTemplateError(f"a catch-all parameter must be the whole last segment of {template!r}")
            if len(parts) > 1:
                segment.regex = re.compile(
                    "".join(
                        f"(?P<{p.name}>.+?)" if isinstance(p, _Parameter) else re.escape(p) for p in parts
                    ) + "$",
                    re.IGNORECASE,
                )
            self.segments.append(segment)

    def precedence(self) -> tuple[int, ...]:
        return tuple(s.precedence() for s in self.segments)

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for a request path (without the route prefix), or None."""
        raw = path.strip("/")
        pieces = raw.split("/") if raw else []
        values: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            param = segment.parameter
            if param is not None and param.catch_all:
                rest = "/".join(unquote(p) for p in pieces[index:])
                if rest == "" and param.default is not None:
                    rest = param.default
                if rest and not param.accepts(rest):
                    return None
                if rest or param.default is not None:
                    values[param.name] = rest
                return values
            if index >= len(pieces):
                # Missing trailing segments match only optional or defaulted parameters.
                if param is None or not (param.optional or param.default is not None):
                    return None
                if param.default is not None:
                    values[param.name] = param.default
                continue
            piece = unquote(pieces[index])
            if segment.literal is not None:
                if piece.lower() != segment.literal.lower():
                    return None
            elif param is not None:
                if piece == "" or not param.accepts(piece):
                    return None
                values[param.name] = piece
            else:
                found = segment.regex.match(piece) if segment.regex else None
                if found is None:
                    return None
                for part in segment.parts:
                    if isinstance(part, _Parameter):
                        value = found.group(part.name)
                        if not part.accepts(value):
                            return None
                        values[part.name] = value
        if len(pieces) > len(self.segments):
            return None
        return values
