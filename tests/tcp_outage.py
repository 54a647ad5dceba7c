"""A storage outage for end-to-end tests: a TCP proxy in front of one of Azurite's endpoints that a test can cut.

While the proxy runs it forwards bytes both ways unchanged (Shared Key signatures cover the account and the path,
not the host and port, so requests keep authenticating). `cut()` resets every connection through it, mid-request
or idle, and from then on resets every new connection as soon as it is accepted (counted in `refused`, so that a
test can see its clients met the outage); `restore()` forwards again. `cut_at_request(pattern)` cuts for a moment at
a chosen write: the first request a client sends whose first bytes match is not forwarded, every connection open at
that moment (its own included) is reset, and forwarding resumes at once; it returns an event set when that happened.

Azurite behind it keeps running with its data, as an Azure Storage account does through an outage of the network
or a front end: a request the service processed may still lose its response (a received message then stays
invisible for its visibility timeout; a deleted one answers 404 to the client's retry), and nothing the service
acknowledged is lost. That is the outage an instance of the app sees. Restarting Azurite's queue service instead
would also test Azurite's own persistence (its LokiJS metadata is saved every few seconds), which is no part of
what Azure promises.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import struct
import threading

from local.run.services import AZURITE_ACCOUNT, AZURITE_KEY, Azurite, free_port

logger = logging.getLogger(__name__)

_CHUNK = 65536


class TcpOutage:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port` until cut; see the module's docstring."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.accepted = 0  # connections forwarded, over the proxy's life
        self.reset = 0  # open connections reset by cuts
        self.refused = 0  # connections reset on arrival while cut
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._down = False
        self._listener: socket.socket | None = None
        self._trigger: tuple[re.Pattern[bytes], threading.Event] | None = None

    @property
    def down(self) -> bool:
        return self._down

    def start(self) -> TcpOutage:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name=f"tcp-outage-{self.port}", daemon=True).start()
        return self

    def cut(self) -> int:
        """Reset every open connection and refuse new ones until restored; how many were reset."""
        with self._lock:
            self._down = True
            sockets, self._sockets = set(self._sockets), set()
        for sock in sockets:
            _abort(sock)
        # Client and upstream side of each connection are both in the set.
        count = len(sockets) // 2
        self.reset += count
        logger.info("TCP outage on port %d: %d connections reset, new ones refused", self.port, count)
        return count

    def restore(self) -> None:
        with self._lock:
            self._down = False
        logger.info("TCP outage on port %d over: forwarding again", self.port)

    def cut_at_request(self, pattern: re.Pattern[bytes]) -> threading.Event:
        """Cut once, the moment one read of what a client sent starts with a match of `pattern` (an HTTP client
        sends each request on a kept-alive connection after the previous answer, so a request line starts a read),
        and restore at once: that request never reaches the service, its connection and every other one open then
        are reset, and new connections are forwarded again. The event is set once it happened; a later call replaces
        a trigger that did not fire."""
        fired = threading.Event()
        with self._lock:
            self._trigger = (pattern, fired)
        return fired

    def _tripped(self, data: bytes) -> bool:
        with self._lock:
            trigger = self._trigger
            if trigger is None or not trigger[0].match(data):
                return False
            self._trigger = None
        self.cut()
        self.restore()
        trigger[1].set()
        return True

    def stop(self) -> None:
        self.cut()
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            _abort(listener)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            with self._lock:
                refuse = self._down
                self.refused += refuse
            if refuse:
                _abort(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                _abort(client)
                continue
            with self._lock:
                if self._down:  # cut while connecting
                    self.refused += 1
                    _abort(client)
                    _abort(upstream)
                    continue
                self._sockets |= {client, upstream}
                self.accepted += 1
            for source, target, outgoing in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(source, target, outgoing), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, outgoing: bool) -> None:
        try:
            while data := source.recv(_CHUNK):
                if outgoing and self._tripped(data):
                    break
                target.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._sockets.discard(source)
            self._sockets.discard(target)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


def _abort(sock: socket.socket) -> None:
    """Reset the connection (close with a zero linger sends RST, not FIN) after waking any thread blocked on the
    socket (shutting down its reading side sends nothing)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


def queue_through(azurite: Azurite, port: int) -> str:
    """Azurite's connection string with its queue endpoint on `port` (the proxy's); blobs and tables direct."""
    return azurite.connection_string.replace(azurite.queue_url, f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")


def tables_through(azurite: Azurite, port: int) -> str:
    """A connection string for the app's tables (TABLES_CONNECTION_STRING) with Azurite's table endpoint on `port`
    (the proxy's)."""
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"TableEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};")
