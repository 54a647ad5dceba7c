"""Paging through a tenant's alerts so that nothing visible is skipped while the list changes under us.

A *pass* reads every alert whose last update is at or after `lo` (the cursor minus the overlap, or the
look-back of a new tenant). It can span several ticks; its state (`PassState`) is saved after each call's
page is written and resumed at the next tick. Alerts that enter the filtered set while a pass runs (new
alerts, late visibility, older alerts updated past `lo`) carry a last update at or after the pass's start
minus the ingestion lag, so the next pass reads them (see `cursor.py`: the cursor never passes the start).

Graph (`alerts_v2`): filtered with `lastUpdateDateTime ge lo` and paged by nextLink. Microsoft documents
the list as newest first (https://learn.microsoft.com/en-us/graph/api/security-list-alerts_v2): an alert
in the filtered set never leaves it (createdDateTime never changes, a last update only grows) and never
moves before one that was ahead of it, so an entry ahead of our offset makes us read one alert twice,
never skip one. To resume at a later tick the pass adds `createdDateTime le <oldest created time read>`,
which is only right if the alerts really came newest first: the pager checks the order it is served and,
if it ever sees an older alert before a newer one, keeps the resume bound it had (re-reading, never
skipping) and logs the violation.

Defender (`/api/alerts`): Microsoft documents no list order and no nextLink
(https://learn.microsoft.com/en-us/defender-endpoint/api/get-alerts; its example response happens to be
oldest first), only `$filter` on `alertCreationTime` and `lastUpdateTime` and `$top` up to 10,000. So
the pass reads *windows* of the immutable creation time (`alertCreationTime ge a and alertCreationTime
lt b`, either bound open) and trusts nothing but counts: a window that comes back with fewer alerts
than `$top` held all of them and is done; a window that comes back full proves nothing (in an unknown
order the missing alerts can be anywhere in it) and is split in two at a creation time taken from the
alerts it returned, each half read again. A pass starts with one open window (one call when fewer than
a page changed, as before); the pending windows are the saved state. Every call is a fresh filter, with
no offset an update could shift. Order is used only as a hint for where to split (a page that came
sorted newest first is probably the newest part of its window), and after each complete window the
next one is cut to the width that should hold about three quarters of a page, so a backlog costs about
1.3-2 calls per page of alerts instead of one. More than a page created at one instant cannot be split
by creation time; such a window is split the same way by last update time (an alert updated while the
pass runs may move to a window already read, but then its new last update is after the pass's start
and the next pass reads it). A full window of one creation instant and one last-update instant cannot
be paged correctly in every order (`$skip` is only safe in a stable order, which is not documented):
the tenant fails with `UnpageableAlerts` (raise FETCH_DEFENDER_PAGE_SIZE), its pass kept, nothing lost
silently. (A page of 10,000 is a memory risk with evidence expanded; FETCH_DEFENDER_PAGE_SIZE bounds it.)
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse

from fetch_alerts.config import IngestionConfig
from fetch_alerts.http import ApiClient
from fetch_alerts.keys import odata_literal, parse_ticks
from shared.alert_sources import AlertSource, ApiHosts, alerts_url, api_host
from shared.errors import BadResponse, UnpageableAlerts
from shared.gcpause import gc_paused

logger = logging.getLogger(__name__)
# Pages of at least this many alerts are a backlog being read: the next is handled with the collector paused.
LARGE_PAGE = 200
# A window's bounds: alertCreationTime ge/lt and lastUpdateTime ge/lt, in ticks; None leaves the side open
# (an open lastUpdateTime lower bound is the pass's `lo`).
Window = tuple[int | None, int | None, int | None, int | None]
ROOT: Window = (None, None, None, None)
_TICK_FLOOR = 946_684_800 * 10_000_000  # 2000-01-01: windows are not cut below it (the rest is read whole)
_DAY = 86_400 * 10_000_000



@dataclass
class PassState:
    """An unfinished pass: what it reads (`lo`), the cursor cap (`cap`: our clock when it began), the
    largest last update written so far, and where it resumes: Graph by `created_le` (alerts created at
    or before it are still to read), Defender by its pending `windows` (None: the pass has not split
    yet) and `width` (the creation-time width expected to hold about three quarters of a page)."""

    lo: int
    cap: int
    max_seen: int | None = None
    created_le: int | None = None
    windows: tuple[Window, ...] | None = None
    width: int | None = None

    def to_json(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v is not None or k in ("max_seen", "created_le")}
        if self.windows is not None:
            data["windows"] = [list(w) for w in self.windows]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PassState | None:
        """The saved state; states saved before Defender windows existed (Defender's `created_le` meant
        "created at or before it still to read") are read as they were meant, in `defender_windows`."""
        try:
            data = json.loads(text)
            fields = {"lo", "cap", "max_seen", "created_le", "width"}
            values: dict[str, Any] = {k: (int(v) if v is not None else None) for k, v in data.items() if k in fields}
            state = cls(**values)
            if data.get("windows") is not None:
                state.windows = tuple(_window(w) for w in data["windows"])
            return state
        except (ValueError, TypeError, AttributeError):
            logger.warning("unreadable pass state ignored")
            return None

    def defender_windows(self) -> tuple[Window, ...]:
        if self.windows is not None:
            return self.windows
        if self.created_le is not None:  # a pass saved by the earlier keyset pager
            return ((None, self.created_le + 1, None, None),)
        return (ROOT,)


def _window(value: Any) -> Window:
    if not isinstance(value, list) or len(value) != 4:
        raise ValueError("a window is a list of four bounds")
    a, b, c, d = (None if v is None else int(v) for v in value)
    return a, b, c, d


@dataclass
class Page:
    alerts: list[dict[str, Any]]
    state: PassState     # the pass state once this page is written
    complete: bool       # the pass ends with this page
    read: int = 0        # alerts the page held (set when its list is released)


def _updated_ticks(alert: dict[str, Any], source: AlertSource) -> int | None:
    text = alert.get("lastUpdateDateTime" if source is AlertSource.GRAPH else "lastUpdateTime")
    try:
        return parse_ticks(str(text)) if text else None
    except ValueError:
        return None


def _alerts_of(body: dict[str, Any], tenant_id: str, api: str) -> list[dict[str, Any]]:
    value = body.get("value")
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise BadResponse(tenant_id, f"{api} answered without a `value` list of alerts", code="InvalidShape")
    return value


class Pager:
    """The pages of one pass for one tenant, at most `max_pages` calls, stopping at `deadline`."""

    def __init__(self, hosts: ApiHosts, config: IngestionConfig, api: ApiClient, tenant_id: str,
                 source: AlertSource, state: PassState, max_pages: int, deadline: float, *,
                 api_host: str = "") -> None:
        self._hosts = hosts
        self._config = config
        # Defender only: the tenant's own (allow-listed) API host, e.g. a geo host near its data.
        self._defender_url = alerts_url(AlertSource.DEFENDER, hosts, api_host)
        self._api = api
        self._tenant = tenant_id
        self._source = source
        self._state = state
        self._max_pages = max_pages
        self._deadline = deadline
        self.calls = 0
        # Alerts served twice in this run: the list shifted under our offset (observability and tests).
        self.repeated = 0
        self._seen: set[str] = set()

    def pages(self) -> Iterator[Page]:
        if self._source is AlertSource.GRAPH:
            return self._graph()
        return self._defender()

    def _get(self, url: str, params: dict[str, str] | None) -> dict[str, Any]:
        self.calls += 1
        return self._api.get(self._tenant, self._source, url, params, self._deadline)

    def _budget_left(self) -> bool:
        return self.calls < self._max_pages and time.monotonic() < self._deadline

    def _with_seen(self, alerts: list[dict[str, Any]], **changes: Any) -> PassState:
        seen = [t for t in (_updated_ticks(a, self._source) for a in alerts) if t is not None]
        state = PassState(**{**asdict(self._state), **changes})
        if seen:
            state.max_seen = max(seen + ([state.max_seen] if state.max_seen is not None else []))
        self._state = state
        return state

    def _count_repeats(self, alerts: list[dict[str, Any]]) -> None:
        for alert in alerts:
            alert_id = alert.get("id")
            if isinstance(alert_id, str):
                if alert_id in self._seen:
                    self.repeated += 1
                else:
                    self._seen.add(alert_id)

    # --- Graph -----------------------------------------------------------------------------------------

    def _graph(self) -> Iterator[Page]:
        state = self._state
        clauses = [f"lastUpdateDateTime ge {odata_literal(state.lo)}"]
        if state.created_le is not None:
            clauses.append(f"createdDateTime le {odata_literal(state.created_le)}")
        params: dict[str, str] | None = {"$filter": " and ".join(clauses),
                                         "$top": str(self._config.graph_page_size)}
        url = alerts_url(AlertSource.GRAPH, self._hosts)
        host = urlparse(api_host(AlertSource.GRAPH, self._hosts)).netloc
        # Resuming with `createdDateTime le <oldest created time read>` relies on the documented order,
        # newest first (https://learn.microsoft.com/en-us/graph/api/security-list-alerts_v2), so the order
        # served along this run's nextLink chain is checked: `newest` is the last created time read.
        ordered, newest = True, None
        while self._budget_left():
            body = self._get(url, params)
            alerts = _alerts_of(body, self._tenant, "graph")
            self._count_repeats(alerts)
            next_link = body.get("@odata.nextLink")
            if next_link is not None and (not isinstance(next_link, str)
                                          or urlparse(next_link).netloc != host
                                          or urlparse(next_link).scheme != "https"):
                raise BadResponse(self._tenant, "graph answered with a nextLink to another host", code="InvalidLink")
            created = [c for c in (_created(a) for a in alerts) if c is not None]
            changes: dict[str, Any] = {}
            if ordered and any(later > earlier for earlier, later in zip([newest, *created], created, strict=False)
                               if earlier is not None):
                # Not the documented order: the unread rest may hold alerts created after any we read, so
                # the resume bound stays where it was (a later tick re-reads from there, never skips).
                ordered = False
                logger.warning("tenant %s: graph served alerts out of the documented newest-first order; "
                               "the resume point is kept where it was", self._tenant)
            if ordered and created:
                newest = created[-1]
                changes["created_le"] = min(created)
            page = Page(alerts, self._with_seen(alerts, **changes), complete=not next_link)
            # Only the page may hold the parsed alerts: the consumer releases them once prepared, and a
            # reference left in this frame would keep a second page alive while the next one is parsed.
            del body, alerts
            yield page
            if page.complete or next_link is None:  # the same test (complete is `not next_link`), typed
                return
            url, params = next_link, None

    # --- Defender --------------------------------------------------------------------------------------

    def _defender(self) -> Iterator[Page]:
        top = min(self._config.defender_page_size, 10_000)
        windows = list(self._state.defender_windows())  # a stack: the last is read next
        width = self._state.width
        self._down = True  # where the next window is cut from a wide one: its newest end (a hint only)
        while windows and self._budget_left():
            window = windows.pop()
            window, rest = self._cut(window, width, top)
            windows.extend(rest)
            alerts = self._defender_call(window, top)
            if len(alerts) >= top:
                # Full: in an unknown order the rest of the window can be anywhere in it. Nothing of it is
                # kept (each half will be read whole); the split itself is saved as progress.
                windows.extend(self._split(window, alerts))
                del alerts
                yield Page([], self._with_seen([], windows=tuple(windows), width=width, created_le=None),
                           complete=False)
                continue
            self._count_repeats(alerts)
            width = self._learn(window, alerts, top, width)
            page = Page(alerts, self._with_seen(alerts, windows=tuple(windows), width=width, created_le=None),
                        complete=not windows)
            del alerts  # see _graph: the page alone holds the parsed alerts
            yield page

    def _cut(self, window: Window, width: int | None, top: int) -> tuple[Window, list[Window]]:
        """The part of `window` to read next (about `width` of creation time at the end the walk goes
        to) and the rest, pushed back to be read later; the whole window when no cut is worth making."""
        c_ge, c_lt, u_ge, u_lt = window
        if width is None or u_ge is not None or u_lt is not None or (c_ge is None and c_lt is None):
            return window, []
        if c_ge is not None and c_lt is not None and c_lt - c_ge <= 2 * width:
            return window, []
        top_end = c_lt is not None and (self._down or c_ge is None)
        if top_end and c_lt is not None and c_lt - width >= _TICK_FLOOR:
            return (c_lt - width, c_lt, None, None), [(c_ge, c_lt - width, None, None)]
        if c_ge is not None and c_ge + width <= self._state.cap + _DAY:
            return (c_ge, c_ge + width, None, None), [(c_ge + width, c_lt, None, None)]
        return window, []

    def _learn(self, window: Window, alerts: list[dict[str, Any]], top: int, width: int | None) -> int | None:
        """The width of the next window from a complete one: the width that held about three quarters of
        a page at this window's density; None (read the rest whole) where alerts are sparse."""
        c_ge, c_lt, u_ge, u_lt = window
        if u_ge is not None or u_lt is not None:
            return width
        created = [c for c in (_created(a, AlertSource.DEFENDER) for a in alerts) if c is not None]
        if len(created) < top // 4:
            return None
        low = c_ge if c_ge is not None else min(created)
        high = c_lt if c_lt is not None else max(created) + 1
        span = max(1, high - low)
        return max(1, min(span * 4, span * (3 * top // 4) // len(created)))

    def _split(self, window: Window, alerts: list[dict[str, Any]]) -> list[Window]:
        """Two or three windows that together are `window`, split at a value the full page holds, in the
        order to push them (the last is read next)."""
        c_ge, c_lt, u_ge, u_lt = window
        if c_ge is None or c_lt is None or c_lt - c_ge > 1:
            values = [c for c in (_created(a, AlertSource.DEFENDER) for a in alerts)
                      if c is not None and (c_ge is None or c >= c_ge) and (c_lt is None or c < c_lt)]
            low, high = c_ge, c_lt

            def make(a: int | None, b: int | None) -> Window:
                return a, b, u_ge, u_lt
        else:
            # One creation instant holds more than a page: split it by last update time instead.
            floor = self._state.lo if u_ge is None else max(u_ge, self._state.lo)
            if u_lt is not None and u_lt - floor <= 1:
                raise UnpageableAlerts(self._tenant, f"more than {len(alerts)} alerts were created at "
                                       f"{odata_literal(c_ge)} and last updated at {odata_literal(floor)}; no "
                                       "documented query separates them: raise FETCH_DEFENDER_PAGE_SIZE",
                                       code="UnpageableAlerts")
            values = [u for u in (_updated_ticks(a, AlertSource.DEFENDER) for a in alerts)
                      if u is not None and u >= floor and (u_lt is None or u < u_lt)]
            low, high = u_ge, u_lt

            def make(a: int | None, b: int | None) -> Window:
                return c_ge, c_lt, a, b
        if not values:
            raise BadResponse(self._tenant, "defender answered a full page without an alert inside the window "
                              "it was asked for", code="FilterIgnored")
        ordered = sorted(values)
        first = ordered[0]
        if first == ordered[-1]:  # all at one instant: that instant alone, and what lies either side
            parts = [make(low, first)] if low is None or low < first else []
            if high is None or first + 1 < high:
                parts.append(make(first + 1, high))
            return [*parts, make(first, first + 1)]
        descending = all(a >= b for a, b in zip(values, values[1:], strict=False))
        ascending = all(a <= b for a, b in zip(values, values[1:], strict=False))
        count = len(ordered)
        if descending:  # probably the newest of the window: the upper part holds most of them, read it next
            cut, self._down = ordered[count // 10], True
        elif ascending:  # probably the oldest: the lower part holds most of them, read it next
            cut, self._down = ordered[count - count // 10 - 1], False
        else:  # no order to go by: halve the alerts seen
            cut = ordered[count // 2]
        if cut == first:
            cut = next(v for v in ordered if v > first)
        lower, upper = make(low, cut), make(cut, high)
        return [lower, upper] if descending else [upper, lower]

    def _defender_call(self, window: Window, top: int) -> list[dict[str, Any]]:
        c_ge, c_lt, u_ge, u_lt = window
        clauses = [f"lastUpdateTime ge {odata_literal(self._state.lo if u_ge is None else max(u_ge, self._state.lo))}"]
        if u_lt is not None:
            clauses.append(f"lastUpdateTime lt {odata_literal(u_lt)}")
        if c_ge is not None:
            clauses.append(f"alertCreationTime ge {odata_literal(c_ge)}")
        if c_lt is not None:
            clauses.append(f"alertCreationTime lt {odata_literal(c_lt)}")
        params = {"$filter": " and ".join(clauses), "$top": str(top), "$expand": "evidence"}
        body = self._get(self._defender_url, params)
        return _alerts_of(body, self._tenant, "defender")


def _created(alert: dict[str, Any], source: AlertSource = AlertSource.GRAPH) -> int | None:
    text = alert.get("createdDateTime" if source is AlertSource.GRAPH else "alertCreationTime")
    try:
        return parse_ticks(str(text)) if text else None
    except ValueError:
        return None


class Prefetcher:
    """Fetches the next page on a helper thread while the caller writes the current one (one page ahead,
    so memory stays at two pages)."""

    _DONE = object()

    def __init__(self, pages: Iterator[Page], prepare: Callable[[Page], Any] = lambda page: page) -> None:
        """`prepare` runs on the helper thread too (decoding and compressing the next page overlaps the
        storage writes of the current one)."""
        self._pages = pages
        self._prepare = prepare
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="alert-prefetch")
        self._thread.start()

    def _run(self) -> None:
        try:
            pages = iter(self._pages)
            large = False
            while True:
                # A page comes after a large one (a backlog is being read): pause the cyclic collector while it
                # is fetched, parsed and prepared, and release it before the pause ends (shared/gcpause.py).
                with gc_paused() if large else nullcontext():
                    page = next(pages, None)
                    if page is None:
                        break
                    large = len(page.alerts) >= LARGE_PAGE
                    item = self._prepare(page)
                    del page
                self._put(item)
                if self._stop.is_set():
                    return
            self._put(self._DONE)
        except Exception as exc:  # BudgetExhausted too: handed to the consumer, which raises it
            self._put(exc)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
