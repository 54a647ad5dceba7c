"""A storage fault for end-to-end tests: a small HTTP proxy in front of one of Azurite's endpoints that forwards
every request unchanged, except those a rule matches, which it answers with an Azure Storage error instead.

The app reaches its tables through the proxy (TABLES_CONNECTION_STRING names it) while the host's own storage
(queues, Durable, timers) stays on Azurite directly. Shared Key signatures cover the account and path, not the
host, so forwarded requests keep authenticating.

`refuse_row_writes` reproduces what Azure answers for every write to a row that has reached Table storage's
1 MiB entity limit (400 EntityTooLarge; Azurite checks only each request's own size): the one storage
failure that hits a single tenant's row while every other row works.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from local.run.services import AZURITE_ACCOUNT, AZURITE_KEY, Azurite

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
               "proxy-authenticate", "content-length"}
_WRITES = frozenset({"PUT", "PATCH", "MERGE", "POST", "DELETE"})


def _row_address(table: str, partition: str, row: str) -> re.Pattern[str]:
    """The unquoted path of a request to one entity by its keys (a point read or a write of it)."""
    return re.compile(rf"/{re.escape(table)}\(PartitionKey='{re.escape(partition)}',RowKey='{re.escape(row)}'\)(\?|$)")


@dataclass(frozen=True)
class Rule:
    methods: frozenset[str]
    path: re.Pattern[str]  # matched against the unquoted path
    status: int
    code: str
    message: str


class StorageFaultProxy:
    """Forwards to Azurite's table endpoint on `upstream_port`; `rules` decide which requests fail."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.rules: list[Rule] = []
        self.refused = 0
        self.requests: list[tuple[str, str]] = []  # (method, unquoted path) of every request, in arrival order
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = unquote(self.path)
                with proxy._lock:
                    proxy.requests.append((self.command, path))
                rule = proxy.match(self.command, path)
                if rule is not None:
                    self._answer(rule)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
                    headers["Host"] = f"127.0.0.1:{proxy.upstream_port}"
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in _HOP_BY_HOP:
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    upstream.close()

            def _answer(self, rule: Rule) -> None:
                data = json.dumps({"odata.error": {"code": rule.code, "message": {"lang": "en-US",
                                                                                 "value": rule.message}}}).encode()
                self.send_response(rule.status)
                self.send_header("Content-Type", "application/json;odata=minimalmetadata;streaming=true;charset=utf-8")
                self.send_header("x-ms-error-code", rule.code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_PATCH = do_MERGE = do_DELETE = do_HEAD = do_OPTIONS = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="storage-fault-proxy", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def table_connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"TableEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};")

    def row_requests(self, table: str, partition: str, row: str) -> list[str]:
        """The methods of the requests made so far to one row by its address (point reads and writes; not queries,
        nor entity-group transactions, which address the table's $batch)."""
        address = _row_address(table, partition, row)
        with self._lock:
            return [method for method, path in self.requests if address.search(path)]

    def match(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if method in rule.methods and rule.path.search(path):
                    self.refused += 1
                    return rule
        return None

    @contextmanager
    def refuse_row_writes(self, table: str, partition: str, row: str) -> Iterator[Rule]:
        """Every write to one row fails as Azure fails it for an entity at the size limit, until the block ends."""
        rule = Rule(_WRITES, _row_address(table, partition, row), 400, "EntityTooLarge",
                    "The entity is larger than the maximum allowed size (1MB).")
        with self._lock:
            self.rules.append(rule)
        try:
            yield rule
        finally:
            with self._lock:
                self.rules.remove(rule)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_table_proxy(azurite: Azurite) -> StorageFaultProxy:
    return StorageFaultProxy(azurite.table_port)
