"""Paging through a tenant's alerts so that nothing visible is skipped while the list changes under us.

A *pass* reads every alert whose last update is at or after `lo` (the cursor minus the overlap, or the
look-back of a new tenant). It can span several ticks; its state (`PassState`) is saved after each page
is written and resumed at the next tick.

Graph (`alerts_v2`): the list is ordered by createdDateTime descending and filtered with
`lastUpdateDateTime ge lo` only. createdDateTime never changes and a last update only grows, so an alert
in the filtered set at the start of the pass never leaves it and never moves before one that was ahead of
it; the only change the live list sees is alerts *entering* (new alerts, late visibility, older alerts
updated past `lo`). An entry ahead of our nextLink offset pushes every later alert one place down: we
read one alert twice, never skip one. The entering alerts themselves are caught by the next pass (see
`cursor.py`: the cursor never passes the pass's start). To resume at a later tick the pass adds
`createdDateTime le <created time of the last alert written>`, which keeps the same guarantees.

Defender (`/api/alerts`, no nextLink, `$top` up to 10,000): the same filter, paged by keyset on the
immutable creation time instead of offsets: each call asks for `alertCreationTime le <oldest creation
time of the previous page>` (the list is newest-created first), so every call is a fresh snapshot with no
offset an update could shift; the boundary instant is read again (duplicates, never a gap). More than a
page of alerts created at one instant is read with `$skip` inside that instant, where nothing can leave
the set. (A page of 10,000 is a memory risk with evidence expanded; FETCH_DEFENDER_PAGE_SIZE bounds it.)
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

from fetch_alerts.http import ApiClient
from fetch_alerts.keys import odata_literal, parse_ticks
from shared.alert_sources import AlertSource, alerts_url, api_host
from shared.errors import BadResponse
from shared.gcpause import gc_paused
from shared.settings import Settings

logger = logging.getLogger(__name__)
# Pages of at least this many alerts are a backlog being read: the next is handled with the collector paused.
LARGE_PAGE = 200



@dataclass
class PassState:
    """An unfinished pass: what it reads (`lo`), the cursor cap (`cap`: our clock when it began), the
    largest last update written so far, and where it resumes."""

    lo: int
    cap: int
    max_seen: int | None = None
    created_le: int | None = None  # resume: alerts created at or before this are still to read

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PassState | None:
        try:
            data = json.loads(text)
            fields = {"lo", "cap", "max_seen", "created_le"}
            return cls(**{k: (int(v) if v is not None else None) for k, v in data.items() if k in fields})
        except (ValueError, TypeError):
            logger.warning("unreadable pass state ignored")
            return None


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

    def __init__(self, settings: Settings, api: ApiClient, tenant_id: str, source: AlertSource, state: PassState,
                 max_pages: int, deadline: float) -> None:
        self._settings = settings
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
                                         "$top": str(self._settings.get("FETCH_GRAPH_PAGE_SIZE"))}
        url = alerts_url(AlertSource.GRAPH, self._settings)
        host = urlparse(api_host(AlertSource.GRAPH, self._settings)).netloc
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
            if created:
                changes["created_le"] = min(created)
            page = Page(alerts, self._with_seen(alerts, **changes), complete=not next_link)
            # Only the page may hold the parsed alerts: the consumer releases them once prepared, and a
            # reference left in this frame would keep a second page alive while the next one is parsed.
            del body, alerts
            yield page
            if page.complete:
                return
            url, params = next_link, None

    # --- Defender --------------------------------------------------------------------------------------

    def _defender(self) -> Iterator[Page]:
        top = min(self._settings.get("FETCH_DEFENDER_PAGE_SIZE"), 10_000)
        created_le = self._state.created_le
        while self._budget_left():
            alerts = self._defender_call(created_le, top)
            created = [c for c in (_created(a, AlertSource.DEFENDER) for a in alerts) if c is not None]
            if len(alerts) >= top and created and min(created) == max(created) == created_le:
                # More than a page created at one instant: $skip through that instant alone (safe there:
                # with `lastUpdateTime ge lo` and a fixed creation time nothing can leave the set).
                alerts = self._defender_instant(created_le, top)
                self._count_repeats(alerts)
                state = self._with_seen(alerts, created_le=created_le - 1)
                created_le = state.created_le
                yield Page(alerts, state, complete=False)
                continue
            self._count_repeats(alerts)
            if len(alerts) < top:
                yield Page(alerts, self._with_seen(alerts), complete=True)
                return
            created_le = min(created) if created else created_le
            page = Page(alerts, self._with_seen(alerts, created_le=created_le), complete=False)
            del alerts  # see _graph: the page alone holds the parsed alerts
            yield page

    def _defender_call(self, created_le: int | None, top: int, *, instant: bool = False,
                       skip: int = 0) -> list[dict[str, Any]]:
        clause = f"lastUpdateTime ge {odata_literal(self._state.lo)}"
        if created_le is not None:
            clause += f" and alertCreationTime {'eq' if instant else 'le'} {odata_literal(created_le)}"
        params = {"$filter": clause, "$top": str(top), "$expand": "evidence"}
        if skip:
            params["$skip"] = str(skip)
        body = self._get(alerts_url(AlertSource.DEFENDER, self._settings), params)
        return _alerts_of(body, self._tenant, "defender")

    def _defender_instant(self, created: int, top: int) -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        skip = 0
        while True:
            page = self._defender_call(created, top, instant=True, skip=skip)
            for alert in page:
                if isinstance(alert.get("id"), str):
                    found.setdefault(alert["id"], alert)
            if len(page) < top:
                break
            skip += len(page)
        logger.info("tenant %s: %d alerts share one creation instant", self._tenant, len(found))
        return list(found.values())


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
