"""The queue listeners' own process, as the Storage Queues extension runs in the Functions host, a .NET process
apart from the Python worker that runs the app
(https://github.com/Azure/azure-functions-host/wiki/Language-Extensibility: the host manages the function events,
language worker processes run the functions, and the two talk over gRPC).

The local host runs the app in its own Python process. Were the listeners' polls, renewals and deletes made there
too, each would wait for that process's GIL behind the app's threads: under load a delete took about 100 ms of a
tenant's second, and the refills lagged, which the real host's storage requests never do. So `python -m
local.host.listener_process` (started and stopped by the host, `ListenerProcess`) polls the queues with
local/host/queues.py's listeners, and the host process only runs the invocations:

- host -> listener process, one JSON object per line on its stdin: first the listeners to run (functions, queue
  names, connection strings), host.json's `extensions.queues`, the in-flight visibility and the log level; then
  `{"op": "done", "seq": n, "ok": bool}` when an invocation has ended, `{"op": "stats"}`, `{"op": "stop",
  "grace": s}`.
- listener process -> host, on its stdout: `{"op": "invoke", "seq": n, "function": name, "body": base64,
  "facts": {...}}` for each message to run, `{"op": "stats", ...}` in answer to a stats request, and `{"op":
  "stopped", ...}` when a graceful stop is over.

Its log lines go to the host's log (stderr is the host's stdout). It ignores SIGTERM and SIGINT (the host, which
gets them too as they are sent to its process group, stops it gracefully with the listeners), and it exits at once
when its stdin ends: a host that was killed leaves its messages invisible until their visibility timeout passes,
as a dead Azure instance does, instead of completing or releasing them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

from local.host.hostconfig import QueuesOptions
from local.host.logs import setup_logging

logger = logging.getLogger("local.host.queues")

#: Lines can carry a message body of up to 64 KiB, base64-encoded.
_LINE_LIMIT = 1 << 20
#: How long a stats request waits for the listener process's answer before the last known figures are used.
STATS_WAIT_SECONDS = 2.0


@dataclasses.dataclass(frozen=True)
class ListenerPlan:
    """One queue-triggered function's listener: the queue it polls and the storage connection string."""

    function: str
    queue: str
    connection: str


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


# --- the host's side ---------------------------------------------------------------------------------------------


class ListenerProcess:
    """Starts the listener process and runs, through `invoke`, each message it hands over; answers its end."""

    def __init__(self, plans: list[ListenerPlan], options: QueuesOptions, visibility: int,
                 invoke: Callable[[str, bytes, dict[str, Any]], Awaitable[bool]]) -> None:
        self._plans = plans
        self._options = options
        self._visibility = visibility
        self._invoke = invoke
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._stats: dict[str, Any] = {}
        self._stats_waiters: list[asyncio.Future[None]] = []
        self._stopping = False

    async def start(self) -> None:
        """Start the listener process (none without listeners). It inherits the host's environment and working
        directory, so it imports `local` as the host did."""
        if not self._plans:
            return
        options = {**dataclasses.asdict(self._options),
                   "new_batch_threshold": self._options.effective_new_batch_threshold}
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "local.host.listener_process", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=_LINE_LIMIT)
        self._send({"listeners": [dataclasses.asdict(p) for p in self._plans], "options": options,
                    "visibility": self._visibility, "log_level": logging.getLogger().getEffectiveLevel()})
        self._reader = asyncio.create_task(self._read(), name="queue listener process")

    def stats(self) -> dict[str, Any]:
        """The listeners' figures as the listener process last reported them."""
        return self._stats

    async def refresh_stats(self) -> None:
        """Ask the listener process for its figures and wait (a little) for them."""
        if self._process is None or self._process.returncode is not None:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._stats_waiters.append(waiter)
        self._send({"op": "stats"})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter, STATS_WAIT_SECONDS)

    async def stop(self, grace: float) -> None:
        """The listeners stop polling and let the messages in flight finish (the host keeps running them) for up to
        `grace` seconds, then release what still runs; the process then exits."""
        process = self._process
        if process is None:
            return
        self._stopping = True
        self._send({"op": "stop", "grace": grace})
        try:
            await asyncio.wait_for(process.wait(), grace + 10)
        except TimeoutError:
            logger.warning("The queue listener process did not stop within %.0fs; killing it", grace + 10)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if self._reader is not None:
            await self._reader

    def _send(self, message: dict[str, Any]) -> None:
        process = self._process
        if process is None or process.stdin is None or process.stdin.is_closing():
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            process.stdin.write(_line(message))

    async def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        while line := await stdout.readline():
            message = json.loads(line)
            op = message.get("op")
            if op == "invoke":
                task = asyncio.create_task(self._run(message), name=f"queue message {message['seq']}")
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            elif op in ("stats", "stopped"):
                self._stats = message["stats"]
                waiters, self._stats_waiters = self._stats_waiters, []
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        code = await self._process.wait()
        if not self._stopping:
            logger.error("The queue listener process ended unexpectedly (exit code %s): no queue is polled", code)

    async def _run(self, message: dict[str, Any]) -> None:
        succeeded = await self._invoke(message["function"], base64.b64decode(message["body"]), message["facts"])
        self._send({"op": "done", "seq": message["seq"], "ok": succeeded})


# --- the listener process -----------------------------------------------------------------------------------------


class _Dispatcher:
    """The listeners' `dispatch`: hands a message to the host and waits for its invocation to end."""

    def __init__(self) -> None:
        self._pending: dict[int, asyncio.Future[bool]] = {}
        self._seq = 0

    async def __call__(self, function: str, body: bytes, facts: Any) -> None:
        self._seq += 1
        seq = self._seq
        ended = asyncio.get_running_loop().create_future()
        self._pending[seq] = ended
        try:
            _write({"op": "invoke", "seq": seq, "function": function, "body": base64.b64encode(body).decode("ascii"),
                    "facts": dataclasses.asdict(facts)})
            if not await ended:
                raise RuntimeError("the invocation failed")
        finally:
            self._pending.pop(seq, None)

    def done(self, seq: int, ok: bool) -> None:
        ended = self._pending.get(seq)
        if ended is not None and not ended.done():
            ended.set_result(ok)


class _Protocol:
    """The listener process's end of the pipe to the host: its own duplicate of stdout, so that whatever else the
    process prints goes to the log instead of into the protocol (`main` points stdout at stderr)."""

    stream: BinaryIO | None = None


def _write(message: dict[str, Any]) -> None:
    stream = _Protocol.stream or sys.stdout.buffer
    stream.write(_line(message))
    stream.flush()


async def _serve() -> None:
    from local.host.queues import Listeners  # the listener process's own import: queues.py imports this module

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=_LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    config = json.loads(await stdin.readline() or b"{}")
    logging.getLogger().setLevel(int(config.get("log_level", logging.INFO)))  # host.json's `default`, as the host's
    dispatcher = _Dispatcher()
    listeners = Listeners([ListenerPlan(**p) for p in config.get("listeners", [])],
                          QueuesOptions(**config.get("options", {})), int(config.get("visibility", 600)), dispatcher)
    listeners.start()
    stopping: asyncio.Task[None] | None = None

    async def stop(grace: float) -> None:
        await listeners.stop(grace)
        _write({"op": "stopped", "stats": listeners.stats()})
        os._exit(0)

    while line := await stdin.readline():
        message = json.loads(line)
        op = message.get("op")
        if op == "done":
            dispatcher.done(int(message["seq"]), bool(message["ok"]))
        elif op == "stats":
            _write({"op": "stats", "stats": listeners.stats()})
        elif op == "stop" and stopping is None:
            stopping = asyncio.create_task(stop(float(message["grace"])))
    # The host is gone (killed): its messages stay invisible until their visibility timeout, as a dead
    # instance's do; nothing is completed or released.
    os._exit(0)


def main() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _Protocol.stream = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    setup_logging(sys.stderr)
    asyncio.run(_serve())


if __name__ == "__main__":
    # Through the package's module, so that the listeners and this process share one copy of its classes.
    from local.host import listener_process

    listener_process.main()
