"""shared.fastjson: the same JSON as the standard library, faster; and no input refused that it accepted."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import fastjson

# What the alert APIs send: objects, arrays, strings (any Unicode), 64-bit integers, booleans, null.
_scalars = (st.none() | st.booleans() | st.integers(min_value=-2**63, max_value=2**63 - 1)
            | st.text(st.characters(exclude_categories=("Cs",))))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=5)
                     | st.dictionaries(st.text(st.characters(exclude_categories=("Cs",)), max_size=8), inner,
                                       max_size=5), max_leaves=40)


def _stdlib_canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@settings(max_examples=300, deadline=None)
@given(_json)
def test_canonical_bytes_are_the_standard_librarys(value):
    assert fastjson.canonical(value) == _stdlib_canonical(value)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_parsing_gives_what_the_standard_library_gives(value):
    data = json.dumps(value).encode()
    assert fastjson.loads(data) == json.loads(data)
    assert fastjson.loads(fastjson.dumps(value)) == value


def test_integers_beyond_64_bits_and_lone_surrogates_fall_back_to_the_standard_library():
    value = {"big": 2**70, "text": "\ud800 lone"}
    assert fastjson.canonical(value) == json.dumps(value, sort_keys=True, separators=(",", ":"),
                                                   ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert json.loads(fastjson.dumps({"big": 2**70})) == {"big": 2**70}


def test_what_the_standard_library_accepts_beyond_strict_json_is_still_read():
    parsed = fastjson.loads(b'{"a": NaN, "b": "\\ud800"}')
    assert math.isnan(parsed["a"]) and parsed["b"] == "\ud800"


@pytest.mark.parametrize("data", [b"", b"{", b'{"a": 1,}', b"[1, 2", b"\xff\xfe{}"])
def test_what_is_not_json_raises_a_value_error(data):
    with pytest.raises(ValueError):  # json.JSONDecodeError and UnicodeDecodeError are both ValueErrors
        fastjson.loads(data)


def test_floats_round_trip_even_where_the_text_differs():
    # orjson writes 1e-7 where the standard library writes 1e-07: the same number, other bytes (STORAGE.md).
    for number in (1e-7, -1e-5, 0.1, 1e22, 5e-324, 12345678901234567.0):
        assert json.loads(fastjson.canonical({"n": number})) == {"n": number}
