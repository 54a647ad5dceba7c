"""The raw alert payload as stored: hashed, compressed once, split across binary properties.

Table Storage limits an entity to 1 MiB and a property to 64 KiB (docs/MICROSOFT.md, "Table Storage
limits"); an alert with megabytes of
evidence must still be stored, so the compressed JSON is cut into chunk properties, and when even that
exceeds the entity budget the evidence list is trimmed and the row marked (`payloadTrimmed`). The hash is
always of the full payload as served, so a trimmed row still proves which version it holds.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any

from shared import fastjson

CHUNK_BYTES = 63_000
# Leaves room under the 1 MiB entity limit for the normalised columns (strings count 2 bytes a char).
MAX_COMPRESSED_BYTES = 15 * CHUNK_BYTES
ENCODING = "zlib+json"
_LEVEL = 1


@dataclass(frozen=True)
class Payload:
    hash: str
    columns: dict[str, Any]
    compressed_bytes: int


def canonical_bytes(raw: dict[str, Any]) -> bytes:
    return fastjson.canonical(raw)


def encode(raw: dict[str, Any]) -> Payload:
    text = canonical_bytes(raw)
    digest = hashlib.sha256(text).hexdigest()
    compressed = zlib.compress(text, _LEVEL)
    trimmed = False
    if len(compressed) > MAX_COMPRESSED_BYTES:
        compressed = _trimmed(raw)
        trimmed = True
    columns: dict[str, Any] = {
        "payloadHash": digest,
        "payloadEncoding": ENCODING,
        "payloadBytes": len(text),
        "payloadTrimmed": trimmed,
    }
    parts = [compressed[i:i + CHUNK_BYTES] for i in range(0, len(compressed), CHUNK_BYTES)] or [b""]
    columns["payloadParts"] = len(parts)
    for index, part in enumerate(parts):
        columns[f"payload{index}"] = part
    return Payload(digest, columns, len(compressed))


def _trimmed(raw: dict[str, Any]) -> bytes:
    """The compressed payload with as much evidence as fits; a marker says how much was kept."""
    raw_evidence = raw.get("evidence")
    evidence: list[Any] = raw_evidence if isinstance(raw_evidence, list) else []
    total = len(evidence)
    low, high = 0, total
    best = _compress_with(raw, evidence, 0, total)
    while low < high:  # the largest evidence prefix that fits
        middle = (low + high + 1) // 2
        candidate = _compress_with(raw, evidence, middle, total)
        if len(candidate) <= MAX_COMPRESSED_BYTES:
            best, low = candidate, middle
        else:
            high = middle - 1
    if len(best) > MAX_COMPRESSED_BYTES:  # huge non-evidence fields: keep the identifying ones only
        keep = {k: raw.get(k) for k in ("id", "title", "severity", "status", "createdDateTime",
                                         "lastUpdateDateTime", "alertCreationTime", "lastUpdateTime")}
        keep["_trimmed"] = {"evidenceKept": 0, "evidenceTotal": total, "fieldsDropped": True}
        best = zlib.compress(canonical_bytes(keep), _LEVEL)
    return best


def _compress_with(raw: dict[str, Any], evidence: list[Any], kept: int, total: int) -> bytes:
    copy = dict(raw)
    copy["evidence"] = evidence[:kept]
    copy["_trimmed"] = {"evidenceKept": kept, "evidenceTotal": total}
    return zlib.compress(canonical_bytes(copy), _LEVEL)


def decode_payload(row: dict[str, Any]) -> dict[str, Any]:
    """The stored alert object of an alert row (trimmed rows carry `_trimmed`)."""
    parts = int(row.get("payloadParts") or 0)
    data = b"".join(bytes(row.get(f"payload{i}") or b"") for i in range(parts))
    value = json.loads(zlib.decompress(data)) if data else {}
    if not isinstance(value, dict):
        raise ValueError("stored payload is not an object")
    return value
