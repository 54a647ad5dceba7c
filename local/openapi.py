"""Write the API's OpenAPI document to docs/openapi.json (`python -m local.openapi`; `--check` exits 1 when
the committed file differs from what the models make). The document is shared.openapi's."""

from __future__ import annotations

import sys
from pathlib import Path

from shared.openapi import document_text

TARGET = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def main(argv: list[str]) -> int:
    text = document_text()
    if "--check" in argv:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python -m local.openapi", file=sys.stderr)  # noqa: T201
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
