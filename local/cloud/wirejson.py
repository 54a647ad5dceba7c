"""JSON encoding of the local cloud's API answers: its own copy, so that a change to the product's JSON
helpers (shared/fastjson.py) never changes what the stand-in for Microsoft puts on the wire.

orjson writes alert pages (megabytes each) several times faster than the standard library, with the same
bytes; where orjson refuses a value (an integer beyond 64 bits, a lone surrogate) the standard library
writes it instead.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, non-ASCII characters as themselves (as Microsoft's APIs send them)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
