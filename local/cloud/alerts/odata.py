"""An OData v4 `$filter` parser and evaluator for the alert list APIs.

Grammar (what both alert APIs document): comparisons `prop op literal` with eq, ne, gt, ge, lt, le,
combined with `and` / `or` (and binds tighter) and parentheses. Literals: single-quoted strings with
`''` as the escaped quote, unquoted DateTimeOffset (`2024-01-01T00:00:00Z`, fractions up to 7 digits,
or a `+hh:mm` offset), integers, `null`, `true`/`false`. `not`, functions (`startswith`, ...), `in`,
`has` and property-to-property comparisons are refused, as are properties outside the API's filterable
list. Operators and keywords are lowercase, as OData requires. Comparisons with null follow OData:
`eq null`/`ne null` test for null; ordering operators are false when either side is null.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import timefmt
from .model import AlertRecord, AlertVersion

Predicate = Callable[[AlertRecord, AlertVersion], bool]
COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")


class FilterError(ValueError):
    """A `$filter` the API would answer with 400; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """A filterable property: its type and how to read its value from a record version."""

    name: str
    kind: str  # datetime, string, long, enum
    read: Callable[[AlertRecord, AlertVersion], Any]
    # For enums: literal text -> canonical member, and member -> ordinal (for gt/lt).
    members: Callable[[str], str | None] | None = None
    ordinal: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Schema:
    entity: str                     # type name used in messages
    properties: dict[str, PropertySpec]
    known: frozenset[str]           # every property of the entity (to tell "not filterable" from "unknown")
    case_insensitive_names: bool

    def resolve(self, name: str) -> PropertySpec:
        if self.case_insensitive_names:
            lookup = {key.lower(): spec for key, spec in self.properties.items()}
            spec = lookup.get(name.lower())
            known = name.lower() in {k.lower() for k in self.known}
        else:
            spec = self.properties.get(name)
            known = name in self.known
        if spec is not None:
            return spec
        allowed = ", ".join(self.properties)
        if known:
            raise FilterError(f"Invalid filter clause: the property '{name}' is not filterable. "
                              f"Filterable properties of {self.entity}: {allowed}.")
        raise FilterError(f"Invalid filter clause: could not find a property named '{name}' on type "
                          f"'{self.entity}'. Filterable properties: {allowed}.")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # lparen, rparen, comma, string, datetime, number, word, end
    text: str
    pos: int


_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:T[0-9:.]*(?:Z|z|[+-]\d{2}:\d{2})?)?")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_./]*")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char.isspace():
            pos += 1
        elif char in "(),":
            tokens.append(Token({"(": "lparen", ")": "rparen", ",": "comma"}[char], char, pos))
            pos += 1
        elif char == "'":
            end, parts = pos + 1, []
            while True:
                quote = text.find("'", end)
                if quote < 0:
                    raise FilterError(f"Invalid filter clause: unterminated string literal at position {pos}.")
                parts.append(text[end:quote])
                if text.startswith("''", quote):
                    parts.append("'")
                    end = quote + 2
                    continue
                tokens.append(Token("string", "".join(parts), pos))
                pos = quote + 1
                break
        elif char.isdigit() and (match := _DATETIME.match(text, pos)) is not None:
            tokens.append(Token("datetime", match.group(0), pos))
            pos = match.end()
        elif (match := _NUMBER.match(text, pos)) is not None:
            tokens.append(Token("number", match.group(0), pos))
            pos = match.end()
        elif (match := _WORD.match(text, pos)) is not None:
            tokens.append(Token("word", match.group(0), pos))
            pos = match.end()
        else:
            raise FilterError(f"Invalid filter clause: syntax error at position {pos}: unexpected {char!r}.")
    tokens.append(Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str, schema: Schema) -> None:
        self.tokens = tokenize(text)
        self.index = 0
        self.schema = schema

    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def parse(self) -> Predicate:
        if self.peek().kind == "end":
            raise FilterError("Invalid filter clause: the $filter expression is empty.")
        predicate = self.parse_or()
        token = self.peek()
        if token.kind != "end":
            raise FilterError(f"Invalid filter clause: syntax error at position {token.pos}: "
                              f"unexpected '{token.text}' after a complete expression.")
        return predicate

    def parse_or(self) -> Predicate:
        left = self.parse_and()
        while self.peek().kind == "word" and self.peek().text == "or":
            self.take()
            right = self.parse_and()
            left = _either(left, right)
        return left

    def parse_and(self) -> Predicate:
        left = self.parse_primary()
        while self.peek().kind == "word" and self.peek().text == "and":
            self.take()
            right = self.parse_primary()
            left = _both(left, right)
        return left

    def parse_primary(self) -> Predicate:
        token = self.take()
        if token.kind == "lparen":
            inner = self.parse_or()
            closing = self.take()
            if closing.kind != "rparen":
                raise FilterError(f"Invalid filter clause: ')' expected at position {closing.pos}.")
            return inner
        if token.kind == "word" and token.text == "not":
            raise FilterError("Invalid filter clause: the 'not' operator is not supported on this resource.")
        if token.kind != "word":
            raise FilterError(f"Invalid filter clause: a property name is expected at position {token.pos}, "
                              f"found '{token.text or 'end of expression'}'.")
        if self.peek().kind == "lparen":
            raise FilterError(f"Invalid filter clause: the function '{token.text}' is not supported.")
        spec = self.schema.resolve(token.text)
        op = self.take()
        if op.kind != "word" or op.text not in COMPARISONS:
            if op.kind == "word" and op.text.lower() in COMPARISONS + ("in", "has"):
                raise FilterError(f"Invalid filter clause: the operator '{op.text}' is not supported; "
                                  f"use one of {', '.join(COMPARISONS)} (lowercase).")
            raise FilterError(f"Invalid filter clause: a comparison operator ({', '.join(COMPARISONS)}) is "
                              f"expected after '{token.text}' at position {op.pos}.")
        literal = self.take()
        value = _literal(spec, literal)
        return _compare(spec, op.text, value)


def _literal(spec: PropertySpec, token: Token) -> Any:
    """The typed value of `token` for comparison with `spec`; 400 on a type mismatch."""
    if token.kind == "word" and token.text == "null":
        return None
    if token.kind == "word" and token.text in ("true", "false"):
        raise FilterError(f"Invalid filter clause: a Boolean cannot be compared with '{spec.name}' ({spec.kind}).")
    if spec.kind == "datetime":
        if token.kind != "datetime":
            raise FilterError(f"Invalid filter clause: '{spec.name}' is a DateTimeOffset; compare it with an "
                              f"unquoted literal such as 2024-01-01T00:00:00Z, not '{token.text}'.")
        try:
            return timefmt.parse_iso(token.text)
        except ValueError:
            raise FilterError(f"Invalid filter clause: '{token.text}' is not a valid DateTimeOffset literal "
                              f"(expected e.g. 2024-01-01T00:00:00Z).") from None
    if spec.kind == "long":
        if token.kind != "number" or not re.fullmatch(r"-?\d+", token.text):
            raise FilterError(f"Invalid filter clause: '{spec.name}' is an integer; '{token.text}' is not.")
        return int(token.text)
    if token.kind != "string":
        raise FilterError(f"Invalid filter clause: '{spec.name}' is a string; quote the value "
                          f"('{token.text}') in single quotes.")
    if spec.kind == "enum":
        assert spec.members is not None
        member = spec.members(token.text)
        if member is None:
            raise FilterError(f"Invalid filter clause: '{token.text}' is not a valid value of '{spec.name}'.")
        return member
    return token.text


def _compare(spec: PropertySpec, op: str, value: Any) -> Predicate:
    read = spec.read
    if value is None:
        if op == "eq":
            return lambda rec, ver: read(rec, ver) is None
        if op == "ne":
            return lambda rec, ver: read(rec, ver) is not None
        return lambda rec, ver: False
    if spec.kind == "enum" and op not in ("eq", "ne"):
        assert spec.ordinal is not None
        order, bound = spec.ordinal, spec.ordinal[value]

        def key(rec: AlertRecord, ver: AlertVersion) -> int | None:
            current = read(rec, ver)
            return None if current is None else order[current]
        return _ordered(key, op, bound)
    if op == "eq":
        return lambda rec, ver: read(rec, ver) == value
    if op == "ne":
        return lambda rec, ver: read(rec, ver) != value
    return _ordered(read, op, value)


def _ordered(read: Callable[[AlertRecord, AlertVersion], Any], op: str, bound: Any) -> Predicate:
    def check(rec: AlertRecord, ver: AlertVersion) -> bool:
        current = read(rec, ver)
        if current is None:
            return False
        if op == "gt":
            return current > bound
        if op == "ge":
            return current >= bound
        if op == "lt":
            return current < bound
        return current <= bound
    return check


def _both(left: Predicate, right: Predicate) -> Predicate:
    return lambda rec, ver: left(rec, ver) and right(rec, ver)


def _either(left: Predicate, right: Predicate) -> Predicate:
    return lambda rec, ver: left(rec, ver) or right(rec, ver)


def compile_filter(text: str, schema: Schema) -> Predicate:
    """Parse `text` against `schema`; raises FilterError with a message naming the problem."""
    return _Parser(text, schema).parse()
