"""Query options of the two list APIs: validation, error bodies and paging.

Graph: `$filter`, `$top` (1..1000, default 1000: the docs state no alerts_v2 cap, so we take the legacy
/security/alerts cap of 1000 that the facts sheet records and reports say alerts_v2 shares),
`$skip`, `$count`, `$skiptoken` (from our own nextLinks). The skiptoken is an opaque offset into the
live result: each page re-evaluates the filter against what is visible at that moment and slices from
the offset, as the real service's nextLinks do, so items can shift between pages when alerts change.

Defender: `$filter`, `$top` (0..10,000, default 10,000), `$skip`, `$expand=evidence`; never a nextLink.

Any other `$` option is a 400 naming it; options without `$` are ignored, as the services do.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from . import timefmt

GRAPH_MAX_TOP = 1000
DEFENDER_MAX_TOP = 10_000
GRAPH_OPTIONS = ("$filter", "$top", "$skip", "$skiptoken", "$count")
DEFENDER_OPTIONS = ("$filter", "$top", "$skip", "$expand")


class QueryError(ValueError):
    """A request the API answers with 400; `code` is the API's error code."""

    def __init__(self, message: str, code: str = "BadRequest") -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class GraphQuery:
    filter: str | None
    top: int | None
    skip: int
    offset: int | None  # from $skiptoken
    count: bool


@dataclass(slots=True)
class DefenderQuery:
    filter: str | None
    top: int
    skip: int
    expand_evidence: bool


def _check_options(query: Mapping[str, str], allowed: tuple[str, ...], code: str) -> None:
    for name in query:
        if name.startswith("$") and name not in allowed:
            raise QueryError(f"Query option '{name}' is not supported on this resource. "
                             f"Supported: {', '.join(allowed)}.", code)


def _integer(query: Mapping[str, str], name: str, minimum: int, maximum: int | None, code: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit():
        raise QueryError(f"Invalid value '{raw}' for query option '{name}': an integer is expected.", code)
    value = int(text)
    if value < minimum:
        raise QueryError(f"Invalid value '{raw}' for query option '{name}': the minimum is {minimum}.", code)
    if maximum is not None and value > maximum:
        raise QueryError(f"The limit of '{maximum}' for query option '{name}' has been exceeded. "
                         f"The value from the incoming request is '{value}'.", code)
    return value


def parse_graph(query: Mapping[str, str]) -> GraphQuery:
    _check_options(query, GRAPH_OPTIONS, "BadRequest")
    count_raw = query.get("$count")
    if count_raw is not None and count_raw.lower() not in ("true", "false"):
        raise QueryError(f"Invalid value '{count_raw}' for query option '$count': expected true or false.")
    offset = None
    if "$skiptoken" in query:
        offset = decode_skiptoken(query["$skiptoken"])
    return GraphQuery(
        filter=query.get("$filter"),
        top=_integer(query, "$top", 1, GRAPH_MAX_TOP, "BadRequest"),
        skip=_integer(query, "$skip", 0, None, "BadRequest") or 0,
        offset=offset,
        count=(count_raw or "").lower() == "true",
    )


def parse_defender(query: Mapping[str, str]) -> DefenderQuery:
    _check_options(query, DEFENDER_OPTIONS, "ODataError")
    expand = query.get("$expand")
    if expand is not None and expand.strip().lower() != "evidence":
        raise QueryError(f"Invalid value '{expand}' for query option '$expand': only 'evidence' can be "
                         f"expanded on Alert.", "ODataError")
    top = _integer(query, "$top", 0, DEFENDER_MAX_TOP, "ODataError")
    return DefenderQuery(
        filter=query.get("$filter"),
        top=DEFENDER_MAX_TOP if top is None else top,
        skip=_integer(query, "$skip", 0, None, "ODataError") or 0,
        expand_evidence=expand is not None,
    )


def encode_skiptoken(offset: int) -> str:
    raw = json.dumps({"v": 1, "offset": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_skiptoken(token: str) -> int:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset = data["offset"]
        if data.get("v") != 1 or not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ValueError("bad token content")
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise QueryError("The $skiptoken value is invalid or expired.") from None
    return offset


def graph_next_link(base_url: str, parsed: GraphQuery, offset: int) -> str:
    """nextLink: same $filter/$top/$count, and a skiptoken for the absolute offset of the next page."""
    params: list[tuple[str, str]] = []
    if parsed.filter is not None:
        params.append(("$filter", parsed.filter))
    if parsed.top is not None:
        params.append(("$top", str(parsed.top)))
    if parsed.count:
        params.append(("$count", "true"))
    params.append(("$skiptoken", encode_skiptoken(offset)))
    query = urlencode(params, quote_via=quote, safe="$:,'()")
    return f"{base_url.rstrip('/')}/v1.0/security/alerts_v2?{query}"


def graph_error(message: str, now_ticks: int, code: str = "BadRequest") -> dict[str, object]:
    return {"error": {"code": code, "message": message, "innerError": {
        "date": timefmt.format_ticks_seconds(now_ticks),
        "request-id": str(uuid.uuid4()),
        "client-request-id": str(uuid.uuid4()),
    }}}


def defender_error(message: str, code: str = "ODataError") -> dict[str, object]:
    return {"error": {"code": code, "message": message, "target": str(uuid.uuid4())}}
