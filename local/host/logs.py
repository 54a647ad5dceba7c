"""The local host's log lines: `[2026-01-01T00:00:00.000Z] LEVEL logger: message`, in UTC, on one stream."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TextIO

FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"


class UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        # No strftime: it imports at first use, which fails for records logged during interpreter exit.
        m = dt.datetime.fromtimestamp(record.created, dt.UTC)
        return (f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}."
                f"{m.microsecond // 1000:03d}Z")


def setup_logging(stream: TextIO) -> None:
    """Every record of the process, INFO and above, to `stream`."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(UtcFormatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
