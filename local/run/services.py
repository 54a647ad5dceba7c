"""Start and stop the local platform's processes on free ports.

Used by the test fixtures (tests/conftest.py), `make run` (local/run/main.py) and `make bench` (local/bench/main.py),
so that every caller starts Azurite, MailDev, the local Microsoft cloud and the local Functions host the
same way. Each service is a child process; `stop()` ends it gracefully, `kill()` abruptly (crash tests).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import requests

logger = logging.getLogger(__name__)
S = TypeVar("S")

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = REPO_ROOT / "node_modules" / ".bin"
AZURITE_PRELOAD = Path(__file__).with_name("azurite_lokijs.cjs")

# Azurite's published development account. It is a well-known constant of the emulator, not a secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class ServiceError(RuntimeError):
    """A local service did not start or stopped unexpectedly."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PORT_ATTEMPTS = 5


def on_free_ports(count: int, start: Callable[[list[int]], S], attempts: int = PORT_ATTEMPTS) -> S:
    """`start(ports)` on `count` ports that were free a moment ago, and on fresh ones when the service stopped while
    starting because one was taken meanwhile: free_port's port is only reserved once the service binds it, and
    another process (a parallel test worker's service) can bind it first."""
    for _ in range(attempts - 1):
        try:
            return start([free_port() for _ in range(count)])
        except ServiceError as exc:
            if not _port_taken(exc):
                raise
            logger.warning("a port was taken before the service bound it; starting again on other ports")
    return start([free_port() for _ in range(count)])


def _port_taken(exc: ServiceError) -> bool:
    """Whether a start failed because an address was in use (Node: EADDRINUSE; Python: errno 98's message)."""
    text = str(exc).lower()
    return "eaddrinuse" in text or "address already in use" in text


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Service:
    """A child process started by this module."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log_file: object = field(repr=False, default=None)
    # How long stop() waits after SIGTERM before SIGKILL. Node servers holding keep-alive sockets linger.
    stop_grace: float = 10.0

    def wait_ready(self, check: Callable[[], bool], timeout: float = 60.0) -> None:
        """Wait until `check` passes; on any way out but success (failure, timeout, Ctrl-C) the process is
        killed, since the caller never gets a handle to stop it."""
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServiceError(
                        f"{self.name} exited with code {self.process.returncode} while starting; "
                        f"log tail:\n{self.log_tail()}"
                    )
                with contextlib.suppress(Exception):
                    if check():
                        return
                time.sleep(0.05)
            raise ServiceError(f"{self.name} was not ready after {timeout:.0f}s; log tail:\n{self.log_tail()}")
        except BaseException:
            self.kill()
            raise

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """End the process gracefully (SIGTERM to its process group), then forcefully if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def kill(self) -> None:
        """End the process abruptly, as when a worker dies."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self._close_log()

    def wait_exit(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(Exception):
                self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None


def _spawn(name: str, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> Service:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "ab")  # noqa: SIM115 - closed by Service.stop/kill
    process = subprocess.Popen(
        argv,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env=dict(env) if env is not None else None,
        start_new_session=True,  # own process group, so stop() ends node's children too
    )
    logger.debug("started %s (pid %s), log %s", name, process.pid, log_path)
    return Service(name=name, process=process, log_path=log_path, _log_file=log_file)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise ServiceError("node is not on PATH: the local platform needs Node.js 20 (README)")
    return node


def _need_node_tool(tool: str) -> Path:
    path = NODE_BIN / tool
    if not path.exists():
        raise ServiceError(f"{path} is missing: run `make setup` (npm ci) first")
    return path


# --- Azurite -------------------------------------------------------------------------------------------


@dataclass
class Azurite(Service):
    blob_port: int = 0
    queue_port: int = 0
    table_port: int = 0

    @property
    def blob_url(self) -> str:
        return f"http://127.0.0.1:{self.blob_port}/{AZURITE_ACCOUNT}"

    @property
    def queue_url(self) -> str:
        return f"http://127.0.0.1:{self.queue_port}/{AZURITE_ACCOUNT}"

    @property
    def table_url(self) -> str:
        return f"http://127.0.0.1:{self.table_port}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.blob_url};QueueEndpoint={self.queue_url};TableEndpoint={self.table_url};"
        )


KEEP_ALIVE_S = 120


def start_azurite(workdir: Path, *, in_memory: bool = True, debug_log: Path | None = None) -> Azurite:
    """Azurite with blob, queue and table services on free ports, data under workdir (or in memory).
    `debug_log`: Azurite's debug log (every request it served), for tests that count requests."""
    workdir.mkdir(parents=True, exist_ok=True)
    return on_free_ports(3, lambda ports: _start_azurite(workdir, ports, in_memory, debug_log))


def _start_azurite(workdir: Path, ports: list[int], in_memory: bool, debug_log: Path | None) -> Azurite:
    argv = [
        _node(),
        # Azurite without its costs that grow with what is stored (the module lists them; README's known differences)
        "--require", str(AZURITE_PRELOAD),
        str(_need_node_tool("azurite").resolve()),
        "--silent",
        "--disableTelemetry",  # Azurite 3.x sends usage telemetry to Microsoft unless told not to
        "--skipApiVersionCheck",
        "--loose",
        "--blobHost", "127.0.0.1", "--blobPort", str(ports[0]),
        "--queueHost", "127.0.0.1", "--queuePort", str(ports[1]),
        "--tableHost", "127.0.0.1", "--tablePort", str(ports[2]),
        # Azurite closes a connection idle for 5 s (Node's default). A client that reuses one at that very
        # moment gets "Remote end closed connection without response" on a request the server never read,
        # and tests poll at about that interval. Azure keeps idle connections far longer; see the README's
        # known differences. Ingestion retries such drops (docs/ARCHITECTURE.md), and the chaos tests drop
        # connections on purpose instead of by chance.
        *(arg for service in ("blob", "queue", "table")
          for arg in (f"--{service}KeepAliveTimeout", str(KEEP_ALIVE_S))),
    ]
    argv += ["--inMemoryPersistence"] if in_memory else ["--location", str(workdir)]
    if debug_log is not None:
        argv += ["--debug", str(debug_log)]
    base = _spawn("azurite", argv, workdir / "azurite.log")
    base.stop_grace = 1.0 if in_memory else 10.0  # nothing to flush in memory
    service = Azurite(**vars(base), blob_port=ports[0], queue_port=ports[1], table_port=ports[2])
    service.wait_ready(lambda: all(_port_open(p) for p in ports))
    return service


# --- MailDev -------------------------------------------------------------------------------------------


@dataclass
class MailDev(Service):
    smtp_port: int = 0
    web_port: int = 0

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def messages(self) -> list[dict]:
        """Every e-mail MailDev holds, as its REST API returns them."""
        response = requests.get(f"{self.web_url}/api/email", timeout=10)
        response.raise_for_status()
        return list(response.json())

    def clear(self) -> None:
        requests.delete(f"{self.web_url}/api/email/all", timeout=10).raise_for_status()


def start_maildev(workdir: Path) -> MailDev:
    """MailDev's SMTP server and web inbox on free loopback ports, mail kept in memory."""
    return on_free_ports(2, lambda ports: _start_maildev(workdir, *ports))


def _start_maildev(workdir: Path, smtp_port: int, web_port: int) -> MailDev:
    argv = [
        str(_need_node_tool("maildev")),
        "--smtp", str(smtp_port), "--ip", "127.0.0.1",
        "--web", str(web_port), "--web-ip", "127.0.0.1",
        "--silent",
    ]
    base = _spawn("maildev", argv, workdir / "maildev.log")
    base.stop_grace = 1.0  # mail is kept in memory
    service = MailDev(**vars(base), smtp_port=smtp_port, web_port=web_port)
    service.wait_ready(
        lambda: _port_open(smtp_port) and requests.get(f"{service.web_url}/api/healthz", timeout=1).ok
    )
    return service


# --- Local Microsoft cloud -----------------------------------------------------------------------------


@dataclass
class LocalCloud(Service):
    port: int = 0
    state_dir: Path = Path()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> Path:
        return self.state_dir / "ca.pem"

    def control(self, method: str, path: str, **kwargs: object) -> requests.Response:
        """Call the control API (`/control/...`), trusting the cloud's CA."""
        response = requests.request(
            method, f"{self.url}/control/{path.lstrip('/')}", verify=str(self.ca_path), timeout=30, **kwargs
        )  # type: ignore[arg-type]
        if response.status_code >= 400:
            raise ServiceError(f"control {method} {path}: {response.status_code} {response.text[:500]}")
        return response


def start_cloud(state_dir: Path, port: int | None = None) -> LocalCloud:
    """The local Microsoft cloud (Entra, Graph, Defender) over HTTPS with its own CA in state_dir."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if not port:
        return on_free_ports(1, lambda ports: start_cloud(state_dir, ports[0]))
    argv = [sys.executable, "-m", "local.cloud", "--port", str(port), "--state-dir", str(state_dir)]
    base = _spawn("local-cloud", argv, state_dir / "cloud.log", env=_python_env())
    service = LocalCloud(**vars(base), port=port, state_dir=state_dir)
    service.wait_ready(
        lambda: service.ca_path.exists()
        and requests.get(f"{service.url}/control/health", verify=str(service.ca_path), timeout=2).ok
    )
    return service


# --- Local Functions host ------------------------------------------------------------------------------


@dataclass
class LocalHost(Service):
    port: int = 0
    master_key: str = ""
    function_key: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self, method: str, path: str, **kwargs: object) -> requests.Response:
        """Call an admin endpoint (`/admin/...`) with the master key."""
        headers = {"x-functions-key": self.master_key}
        return requests.request(
            method, f"{self.url}/admin/{path.lstrip('/')}", headers=headers, timeout=30, **kwargs
        )  # type: ignore[arg-type]

    def stats(self) -> dict:
        """The host's `/admin/local/stats` (invocation counts, queue listeners, timers it runs)."""
        response = self.admin("GET", "local/stats")
        response.raise_for_status()
        return dict(response.json())

    def invocations(self, function: str) -> dict[str, int]:
        """This instance's invocation counts of `function`: succeeded, failed, timed_out (zeros if it never ran)."""
        counts = self.stats()["invocations"]["functions"].get(function) or {}
        return {key: int(counts.get(key, 0)) for key in ("succeeded", "failed", "timed_out")}


def start_host(
    app_root: Path,
    settings: Mapping[str, str],
    *,
    app: str = "function_app:app",
    port: int | None = None,
    master_key: str | None = None,
    function_key: str | None = None,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 60.0,
) -> LocalHost:
    """The local Functions host running `app` from app_root with the given app settings."""
    port = port or free_port()
    master_key = master_key or secrets.token_hex(24)
    function_key = function_key or secrets.token_hex(24)
    settings_dir = log_path.parent if log_path else Path(tempfile.mkdtemp(prefix="local-host-"))
    settings_dir.mkdir(parents=True, exist_ok=True)
    settings_file = settings_dir / f"host-settings-{port}.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": dict(settings)}, indent=2))
    settings_file.chmod(0o600)
    log_path = log_path or settings_dir / f"host-{port}.log"
    argv = [
        sys.executable, "-m", "local.host",
        "--port", str(port),
        "--app-root", str(app_root),
        "--app", app,
        "--settings-file", str(settings_file),
        "--master-key", master_key,
        "--function-key", function_key,
    ]
    base = _spawn("local-host", argv, log_path, env=_python_env(env))
    service = LocalHost(**vars(base), port=port, master_key=master_key, function_key=function_key)
    service.wait_ready(lambda: service.admin("GET", "host/status").status_code == 200, timeout=ready_timeout)
    return service


def _python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env
