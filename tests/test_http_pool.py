"""The shared HTTP sessions (shared/http_pool.py): as many connections kept as threads use them at once, so
none is closed and opened again, and the environment's proxy settings still obeyed. Against real local HTTP
servers and Azurite."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from azure.data.tables import UpdateMode

from shared.http_pool import PooledSession
from shared.settings import Settings
from shared.tables import REQUESTS_PER_TENANT, Table, TableStore

POOL_FULL = "Connection pool is full"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, barrier: threading.Barrier | None) -> None:
        self.barrier = barrier
        self.connections: set[int] = set()  # client ports: one per TCP connection
        self.request_lines: list[str] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a connection serves many requests
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        with self.server.lock:
            self.server.connections.add(self.client_address[1])
            self.server.request_lines.append(self.requestline)
        if self.server.barrier is not None:
            self.server.barrier.wait(timeout=10)  # every request of a round is in flight at once
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@contextmanager
def _server(barrier: threading.Barrier | None = None) -> Iterator[_Server]:
    server = _Server(barrier)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_as_many_threads_as_the_pool_holds_reuse_their_connections(caplog, monkeypatch):
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    threads = 24  # more than requests' default pool of 10
    session = PooledSession(threads)
    caplog.set_level(logging.WARNING, logger="urllib3")
    with _server(threading.Barrier(threads)) as server, ThreadPoolExecutor(threads) as pool:
        for _ in range(3):
            answers = list(pool.map(lambda _: session.get(f"{server.url}/x", timeout=20).status_code,
                                    range(threads)))
            assert answers == [200] * threads
    assert len(server.connections) == threads  # the first round's connections served the next two
    assert POOL_FULL not in caplog.text


def test_the_environment_proxy_and_its_exceptions_still_apply(monkeypatch):
    with _server() as proxy, _server() as direct:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        session = PooledSession(4)
        for _ in range(2):  # the second time from what the session remembered of the environment
            assert session.get("http://alerts.example.invalid/v1/x", timeout=10).status_code == 200
            assert session.get(f"{direct.url}/y", timeout=10).status_code == 200
        assert proxy.request_lines == ["GET http://alerts.example.invalid/v1/x HTTP/1.1"] * 2
        assert direct.request_lines == ["GET /y HTTP/1.1"] * 2


def test_the_table_clients_share_one_pool_sized_to_the_concurrency(azurite, caplog):
    concurrency = 8
    store = TableStore.from_settings(Settings({"TABLES_CONNECTION_STRING": azurite.connection_string,
                                               "TABLES_NAME_PREFIX": "p" + uuid.uuid4().hex[:8],
                                               "FETCH_CONCURRENCY": str(concurrency)}))
    assert store.table(Table.TENANTS) is store.table(Table.TENANTS)  # one client per table, kept
    tenants, alerts = store.table(Table.TENANTS), store.table(Table.ALERTS)
    threads = concurrency * REQUESTS_PER_TENANT
    caplog.set_level(logging.WARNING, logger="urllib3")

    def write(index: int) -> None:
        table = tenants if index % 2 else alerts
        table.upsert_entity({"PartitionKey": "p", "RowKey": str(index), "n": index}, mode=UpdateMode.MERGE)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, range(threads * 20)))
    assert sum(1 for _ in tenants.list_entities()) + sum(1 for _ in alerts.list_entities()) == threads * 20
    assert POOL_FULL not in caplog.text
