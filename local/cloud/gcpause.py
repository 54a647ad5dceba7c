"""The cyclic garbage collector paused while the local cloud renders a large page of alerts.

A rendered page is hundreds of thousands of dicts and lists without cycles; with the collector paused
they are never walked, and reference counting frees them. The local cloud's own copy (the product has
one in shared/gcpause.py), so the stand-in depends on no product module. Pauses are counted across
threads: the collector runs again as soon as the last one ends, if it was on before the first.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pauses = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    global _pauses, _was_enabled
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
