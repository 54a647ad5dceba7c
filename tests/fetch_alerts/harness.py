"""A local stack for ingestion tests: the MSSP's app registered in the local cloud, tenants made active
without onboarding, and a way to run one ingestion tick through the real host and wait for it.

Shared with the SIEM pull API tests (H9) and the benches.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from local.run.cycle import finished_invocations, fire_timer
from local.run.stack import (
    LocalStack,
    cloud_now,
    stack_table,
    start_with_mssp_app,
)

SECRET = "ingestion-test-secret"
TIMER = "fetch_alerts"
table = stack_table


def start_stack(workdir: Path, *, instances: int = 1, **settings: str) -> LocalStack:
    """A LocalStack whose app settings name a fresh MSSP app (created in the local cloud), running `instances`
    host instances (0: none yet, see local.run.stack.start_with_mssp_app)."""
    return start_with_mssp_app(workdir, SECRET, instances=instances,
                               **{"FETCH_BACKOFF_MS": "50", **settings})


def client_id(stack: LocalStack) -> str:
    return stack.settings["MSSP_APP_CLIENT_ID"]


def add_tenant(stack: LocalStack, *, source: str = "graph", alerts: dict[str, Any] | None = None,
               activated_at: datetime | None = None, rate_limits: bool = False, consent: bool = True,
               **row: Any) -> str:
    """A consented tenant of the local cloud with an active Tenants row (no onboarding)."""
    body: dict[str, Any] = {"domains": [f"t{uuid.uuid4().hex[:12]}.example"], "displayName": "Contoso",
                            "rateLimits": rate_limits, "alerts": alerts or {}}
    tenant = stack.cloud.control("POST", "tenants", json=body).json()
    tenant_id = tenant["id"]
    if consent:
        stack.cloud.control("POST", f"tenants/{tenant_id}/consents",
                            json={"clientId": client_id(stack), "propagated": True})
    activated = activated_at or cloud_now(stack)
    table(stack, "Tenants").upsert_entity({
        "PartitionKey": "tenant", "RowKey": tenant_id, "status": "active", "displayName": "Contoso",
        "alertSource": source, "apiHost": "", "activatedAt": activated, "statusChangedAt": activated, **row})
    return tenant_id


def add_tenants(stack: LocalStack, count: int, *, latency_ms: int = 0, workers: int = 8, **kwargs: Any) -> list[str]:
    """`count` tenants as add_tenant makes them (same arguments), set up `workers` at a time; with `latency_ms`,
    each of their alert API calls is that much slower (add_latency)."""

    def one(_: int) -> str:
        tenant_id = add_tenant(stack, **kwargs)
        if latency_ms:
            add_latency(stack, tenant_id, latency_ms, api=kwargs.get("source", "graph"))
        return tenant_id

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, range(count)))


def add_latency(stack: LocalStack, tenant_id: str, ms: int, api: str = "graph") -> None:
    """Every call of the tenant's `api` answers `ms` later, until the tenant's faults are cleared."""
    stack.cloud.control("POST", f"tenants/{tenant_id}/faults", json={"kind": "latency", "api": api, "latencyMs": ms})


def retire_tenants(stack: LocalStack, tenant_ids: Iterable[str]) -> None:
    """Take tenants out of later ticks (status `disabled`), so that a module's next test ticks only its own."""
    tenants = table(stack, "Tenants")
    for tenant_id in tenant_ids:
        tenants.upsert_entity({"PartitionKey": "tenant", "RowKey": tenant_id, "status": "disabled"})


def tenant_row(stack: LocalStack, tenant_id: str) -> dict[str, Any]:
    return dict(table(stack, "Tenants").get_entity("tenant", tenant_id))


def _finished(stack: LocalStack) -> int:
    return finished_invocations(stack, TIMER)


# When each stack's last tick was fired, on the cloud's clock (keyed by the cloud's URL: one per stack).
_TICK_FIRED: dict[str, datetime] = {}


def fire(stack: LocalStack) -> int:
    """Start one tick; returns the finished count to wait beyond."""
    before = _finished(stack)
    _TICK_FIRED[stack.cloud.url] = cloud_now(stack)
    fire_timer(stack, TIMER)
    return before


def last_tick_fired(stack: LocalStack) -> datetime | None:
    """The cloud time at which the stack's last tick (fire or run_tick) was fired; None before any."""
    return _TICK_FIRED.get(stack.cloud.url)


def wait_finished(stack: LocalStack, before: int, count: int = 1, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _finished(stack) >= before + count:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{TIMER} did not finish within {timeout:.0f}s")


def run_tick(stack: LocalStack, timeout: float = 120.0) -> None:
    """Run one ingestion tick through the host and wait until it finished."""
    wait_finished(stack, fire(stack), timeout=timeout)


def wait_lease_free(stack: LocalStack, tenant_id: str, timeout: float = 60.0) -> None:
    """Wait until no invocation holds the tenant's ingestion lease (fetch_alerts/lease.py), e.g. the lease of a
    host that was killed mid-pass, which only expiry frees."""
    from fetch_alerts.lease import current

    leases = table(stack, "IngestLeases")
    deadline = time.monotonic() + timeout
    while current(leases, tenant_id) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"tenant {tenant_id}: its ingestion lease was not freed within {timeout:.0f}s")
        time.sleep(0.2)


def add_alert(stack: LocalStack, tenant_id: str, **fields: Any) -> dict[str, Any]:
    return stack.cloud.control("POST", f"tenants/{tenant_id}/alerts", json=fields).json()


def update_alert(stack: LocalStack, tenant_id: str, alert_id: str, **changes: Any) -> dict[str, Any]:
    return stack.cloud.control("PATCH", f"tenants/{tenant_id}/alerts/{alert_id}", json=changes).json()


def make_reread_due(stack: LocalStack, tenant_id: str, kind: str) -> None:
    """Make the tenant's `hour` or `day` re-read due at the next tick, as if that long had passed.

    The host runs on real time (only the cloud's clock can be advanced), so instead of waiting an hour or a
    day the test moves ingestion's record of when that re-read last started back by one period."""
    column = {"hour": "rereadHourAt", "day": "rereadDayAt"}[kind]
    period = timedelta(hours=1) if kind == "hour" else timedelta(days=1)
    table(stack, "Tenants").upsert_entity({"PartitionKey": "tenant", "RowKey": tenant_id,
                                           column: datetime.now(UTC) - period - timedelta(minutes=1)})


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hours_ago(stack: LocalStack, hours: float) -> str:
    return iso(cloud_now(stack) - timedelta(hours=hours))


# --- who ingested which tenant when, from the hosts' logs ------------------------------------------------------

# The lines fetch_alerts/runner.py logs around a pass (docs/ARCHITECTURE.md, "Ingestion on a queue"), with the
# local host's timestamp (local/host/__main__.py: "[<UTC ISO 8601, ms>Z] LEVEL logger: message").
_STAMP = r"^\[(?P<at>[0-9T:.-]+)Z\] \w+ [\w.]+: tenant (?P<tenant>[0-9a-f-]{36}): "
_STARTED = re.compile(_STAMP + r"ingestion started \(message (?P<message>[^,]+), dequeue (?P<dequeue>\d+), "
                      r"invocation (?P<invocation>[^,]+), run (?P<run>[^)]+)\)")
_ENDED = re.compile(_STAMP + r"ingestion ended \(message (?P<message>[^,]+), invocation (?P<invocation>[^)]+)\): "
                    r"(?P<result>[^,]+),")
# The local host's line before it runs a queue message (local/host/queues.py, as the extension logs it).
_RECEIVED = re.compile(r"^\[[0-9T:.-]+Z\] \w+ [\w.]+: Trigger Details: MessageId: (?P<message>[^,]+), "
                       r"DequeueCount: (?P<dequeue>\d+),")
_DUPLICATE = re.compile(_STAMP + r"duplicate message (?P<message>\S+) \(run (?P<run>[^,]+), dequeue "
                        r"(?P<dequeue>\d+)\)")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@dataclass
class Pass:
    """One delivery's hold of a tenant's lease, from "ingestion started" to "ingestion ended" in the log of the
    instance (index in stack.hosts) that ran it. `ended` is None when the log has no end (the instance died)."""

    instance: int
    tenant_id: str
    message_id: str
    dequeue: int
    invocation_id: str
    run_id: str
    started: datetime
    ended: datetime | None = None
    result: str = ""


@dataclass(frozen=True)
class Duplicate:
    """A delivery completed without work because another invocation held the tenant's lease."""

    instance: int
    tenant_id: str
    message_id: str
    dequeue: int
    at: datetime


@dataclass
class IngestionLog:
    passes: list[Pass]
    duplicates: list[Duplicate]
    #: Per instance, every queue message it ran (any queue's): message id -> the highest DequeueCount it ran with.
    received: dict[int, dict[str, int]]

    def of(self, tenant_id: str) -> list[Pass]:
        return [p for p in self.passes if p.tenant_id == tenant_id]


def ingestion_log(stack: LocalStack, tenant_ids: Iterable[str]) -> IngestionLog:
    """Every pass and duplicate delivery of `tenant_ids` in the logs of the stack's instances (a restarted instance
    appends to its log)."""
    wanted = set(tenant_ids)
    passes: dict[str, Pass] = {}
    duplicates: list[Duplicate] = []
    received: dict[int, dict[str, int]] = {}
    for index, host in enumerate(stack.hosts):
        messages = received.setdefault(index, {})
        for line in host.log_path.read_text(errors="replace").splitlines():
            if match := _RECEIVED.match(line):
                messages[match["message"]] = max(messages.get(match["message"], 0), int(match["dequeue"]))
            elif (match := _STARTED.match(line)) and match["tenant"] in wanted:
                passes[match["invocation"]] = Pass(index, match["tenant"], match["message"], int(match["dequeue"]),
                                                   match["invocation"], match["run"], _at(match["at"]))
            elif (match := _ENDED.match(line)) and match["invocation"] in passes:
                found = passes[match["invocation"]]
                found.ended, found.result = _at(match["at"]), match["result"]
            elif (match := _DUPLICATE.match(line)) and match["tenant"] in wanted:
                duplicates.append(Duplicate(index, match["tenant"], match["message"], int(match["dequeue"]),
                                            _at(match["at"])))
    return IngestionLog(sorted(passes.values(), key=lambda p: p.started), duplicates, received)


def assert_one_pass_at_a_time(log: IngestionLog, died_at: Mapping[int, datetime] | None = None) -> None:
    """No two passes of one tenant overlap, on one instance or on two. A pass of an instance that died (its index in
    `died_at`) without logging its end lasted until then; any other pass must have ended."""
    died_at = died_at or {}
    by_tenant: dict[str, list[tuple[datetime, datetime, Pass]]] = {}
    for found in log.passes:
        end = found.ended or died_at.get(found.instance)
        assert end is not None, f"tenant {found.tenant_id}: the pass of invocation {found.invocation_id} on " \
                                f"instance {found.instance} never ended"
        by_tenant.setdefault(found.tenant_id, []).append((found.started, end, found))
    for tenant_id, spans in by_tenant.items():
        spans.sort(key=lambda span: span[0])
        for (_, end, first), (start, _, second) in zip(spans, spans[1:], strict=False):
            assert end <= start, (f"tenant {tenant_id} was ingested twice at once: instance {first.instance} "
                                  f"({first.started:%H:%M:%S.%f}..{end:%H:%M:%S.%f}, dequeue {first.dequeue}) and "
                                  f"instance {second.instance} (from {start:%H:%M:%S.%f}, dequeue {second.dequeue})")


def wait_for(predicate: Any, timeout: float, what: str, poll: float = 0.2) -> Any:
    """Poll `predicate` until it returns something true (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(poll)


if TYPE_CHECKING:
    from tests.tcp_outage import TcpOutage


@dataclass
class BehindOutage:
    stack: LocalStack
    outage: TcpOutage


@contextmanager
def stack_behind_outage(workdir: Path, service: Literal["queue", "table"], instances: int,
                        **settings: str) -> Iterator[BehindOutage]:
    """A stack (start_stack) whose `instances` hosts reach Azurite's queue or table service through a TcpOutage
    proxy the test can cut; the other services stay direct."""
    from tests.tcp_outage import TcpOutage, queue_through, tables_through

    stack = start_stack(workdir, instances=0, **settings)
    outage: TcpOutage | None = None
    try:
        if service == "queue":
            outage = TcpOutage(stack.azurite.queue_port).start()
            stack.settings["AzureWebJobsStorage"] = queue_through(stack.azurite, outage.port)
        else:
            outage = TcpOutage(stack.azurite.table_port).start()
            stack.settings["TABLES_CONNECTION_STRING"] = tables_through(stack.azurite, outage.port)
        stack.start_hosts(instances)
        yield BehindOutage(stack, outage)
    finally:
        stack.stop()
        if outage is not None:
            outage.stop()
