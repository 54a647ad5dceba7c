"""The whole local platform wired together: Azurite, MailDev, the local cloud and the local host running
the real app with settings that point every Microsoft endpoint at the local cloud.

`make run` (local/run/main.py), `make bench` and the end-to-end tests start it through `LocalStack.start`, so
the app sees the same settings everywhere; only the settings differ from Azure (docs/ARCHITECTURE.md, invariant 7).

The app may run as several host instances against the one Azurite (`LocalStack.start(..., instances=N)` or
`stack.start_hosts(N)`), as a scaled-out app runs in Azure: each instance polls the queues, one holds the
timers' locks (instance 0, started first), and `stack.host` (instance 0) serves the HTTP API the tests and the
demo call. `stack.invocations(name)` sums a function's invocation counts over the running instances.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import certifi
from azure.data.tables import TableClient, TableServiceClient

from local.run.services import (
    REPO_ROOT,
    Azurite,
    LocalCloud,
    LocalHost,
    MailDev,
    start_azurite,
    start_cloud,
    start_host,
    start_maildev,
)

logger = logging.getLogger(__name__)


def trust_bundle(cloud: LocalCloud, workdir: Path) -> Path:
    """Public CAs plus the local cloud's CA, so the app trusts both (REQUESTS_CA_BUNDLE replaces the
    default bundle rather than adding to it)."""
    bundle = workdir / "ca-bundle.pem"
    base = os.environ.get("REQUESTS_CA_BUNDLE") or certifi.where()
    bundle.write_text(Path(base).read_text() + "\n" + cloud.ca_path.read_text())
    return bundle


def app_settings(azurite: Azurite, cloud: LocalCloud, *, schedule: str = "0 */5 * * * *",
                 extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The app settings of a local deployment: Azure's defaults with every endpoint pointed at the stand-ins."""
    settings = {
        "AzureWebJobsStorage": azurite.connection_string,
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "TABLES_CONNECTION_STRING": azurite.connection_string,
        "FETCH_ALERTS_SCHEDULE": schedule,
        "VERIFICATION_SCHEDULE": "0 */2 * * * *",
        "RETENTION_SCHEDULE": "0 30 3 * * *",
        "OPS_NOTICES_SCHEDULE": "0 */5 * * * *",
        "DURABLE_HUB_NAME": "msspalertslocal",
        "ENTRA_AUTHORITY_HOST": cloud.url,
        "ENTRA_DISABLE_INSTANCE_DISCOVERY": "true",
        "GRAPH_API_HOST": cloud.url,
        "DEFENDER_API_HOST": cloud.url,
        "PORTAL_HOST": "https://security.microsoft.com",
        # The deployment's own MAC key for SIEM continuation tokens (make deploy creates one in Key Vault).
        "SIEM_TOKEN_KEY": secrets.token_hex(32),
        "MALLOC_ARENA_MAX": "2",  # as Bicep sets it (infra/modules/app-settings.bicep); the host applies it at start
    }
    settings.update(extra or {})
    return settings


@dataclass
class LocalStack:
    workdir: Path
    azurite: Azurite
    cloud: LocalCloud
    maildev: MailDev | None
    #: Instance 0 of the app (the first of `hosts`): the one whose HTTP API the tests and the demo call.
    host: LocalHost | None = None
    settings: dict[str, str] = field(default_factory=dict)
    host_port: int | None = None
    #: Every host instance started, in order; a restarted instance takes its old place (and port).
    hosts: list[LocalHost] = field(default_factory=list)

    @classmethod
    def start(cls, workdir: Path, *, host_port: int | None = None, with_maildev: bool = True,
              schedule: str = "0 */5 * * * *", extra_settings: Mapping[str, str] | None = None,
              start_app: bool = True, instances: int = 1) -> LocalStack:
        workdir.mkdir(parents=True, exist_ok=True)
        azurite, cloud, maildev = _start_services(workdir, with_maildev)
        extra = dict(extra_settings or {})
        if maildev is not None:
            extra.setdefault("SMTP_HOST", "127.0.0.1")
            extra.setdefault("SMTP_PORT", str(maildev.smtp_port))
        stack = cls(workdir=workdir, azurite=azurite, cloud=cloud, maildev=maildev, host_port=host_port,
                    settings=app_settings(azurite, cloud, schedule=schedule, extra=extra))
        try:
            if start_app:
                stack.start_hosts(instances)
        except BaseException:
            stack.stop()  # the services, and any instance that did start
            raise
        return stack

    def start_host(self) -> LocalHost:
        """(Re)start instance 0 of the local host with the real app; in-memory Durable state starts empty."""
        return self.start_instance(0)

    def start_hosts(self, count: int) -> list[LocalHost]:
        """Have `count` instances of the app running against the same storage, instance 0 first (ready only once
        it tried for the timers' locks, so it holds them in a normal start); running ones are kept."""
        for index in range(count):
            if index >= len(self.hosts) or not self.hosts[index].alive:
                self.start_instance(index)
        return self.hosts[:count]

    def start_instance(self, index: int) -> LocalHost:
        """(Re)start instance `index` (0 up to the number started so far) on its own port, with the same settings
        and keys as the others (all instances of an app share its keys, as in Azure)."""
        if not 0 <= index <= len(self.hosts) or (index > 0 and self.host is None):
            raise ValueError(f"instance {index} cannot start: instances start in order, from 0")
        bundle = trust_bundle(self.cloud, self.workdir)
        env = {"REQUESTS_CA_BUNDLE": str(bundle), "SSL_CERT_FILE": str(bundle)}
        keys = {}
        if self.host is not None:  # a restart, or another instance, keeps the keys callers already hold
            keys = {"master_key": self.host.master_key, "function_key": self.host.function_key}
        port = self.host_port if index == 0 else (self.hosts[index].port if index < len(self.hosts) else None)
        log_name = "host.log" if index == 0 else f"host-{index}.log"
        host = start_host(REPO_ROOT, self.settings, port=port, env=env,
                          log_path=self.workdir / "host" / log_name, **keys)
        if index < len(self.hosts):
            self.hosts[index] = host
        else:
            self.hosts.append(host)
        if index == 0:
            self.host = host
            self.host_port = host.port  # a restart comes back on the same port
        return host

    def invocations(self, function: str) -> dict[str, int]:
        """`function`'s invocation counts (succeeded, failed, timed_out) summed over the running instances."""
        total = {"succeeded": 0, "failed": 0, "timed_out": 0}
        for host in self.hosts:
            if host.alive:
                for key, count in host.invocations(function).items():
                    total[key] += count
        return total

    def stop(self) -> None:
        for service in (*reversed(self.hosts[1:]), self.host, self.maildev, self.cloud, self.azurite):
            if service is not None:
                with contextlib.suppress(Exception):
                    service.stop()


def _start_services(workdir: Path, with_maildev: bool) -> tuple[Azurite, LocalCloud, MailDev | None]:
    """Azurite, the local cloud and (optionally) MailDev, started side by side: none needs another, and each
    spends its start waiting for its process to listen. If one fails (or Ctrl-C comes), the others are stopped
    once their starts have ended."""
    starts: dict[str, Callable[[], Any]] = {"azurite": lambda: start_azurite(workdir / "azurite"),
                                             "cloud": lambda: start_cloud(workdir / "cloud")}
    if with_maildev:
        starts["maildev"] = lambda: start_maildev(workdir / "maildev")
    pool = ThreadPoolExecutor(len(starts), thread_name_prefix="service-start")
    futures = {name: pool.submit(start) for name, start in starts.items()}
    try:
        concurrent.futures.wait(futures.values())
        errors = [error for error in (f.exception() for f in futures.values()) if error is not None]
        if errors:
            raise errors[0]
    except BaseException:
        pool.shutdown(wait=True)
        for future in futures.values():
            if future.exception() is None:
                with contextlib.suppress(Exception):
                    future.result().stop()
        raise
    pool.shutdown()
    maildev = futures["maildev"].result() if "maildev" in futures else None
    return futures["azurite"].result(), futures["cloud"].result(), maildev


# --- an ingestion stack: the MSSP's app registered in the local cloud (ingestion tests and benches) ------

GRAPH_RESOURCE = "https://graph.microsoft.com"
DEFENDER_RESOURCE = "https://api.securitycenter.microsoft.com"
NEVER = "0 0 0 1 1 *"  # a timer schedule that never fires on its own
# The schedules of the app's other timers (verification, operational notices, retention), off: a run that
# measures or tests ingestion fires what it needs through the admin API.
QUIET = {"VERIFICATION_SCHEDULE": NEVER, "OPS_NOTICES_SCHEDULE": NEVER, "RETENTION_SCHEDULE": NEVER}


def start_with_mssp_app(workdir: Path, secret: str, *, instances: int = 1, **settings: str) -> LocalStack:
    """A LocalStack (no MailDev, timers that never fire by themselves) whose settings name a fresh MSSP
    multi-tenant app with a client secret, registered in the local cloud with both alert APIs' roles, running
    `instances` host instances (0: none yet; the caller may change `stack.settings`, then `stack.start_hosts`)."""
    from uuid import uuid4

    client_id = str(uuid4())
    extra = {"MSSP_APP_CLIENT_ID": client_id, "MSSP_APP_CREDENTIAL": "secret", "MSSP_APP_CLIENT_SECRET": secret,
             **QUIET, **settings}
    stack = LocalStack.start(workdir, with_maildev=False, schedule=NEVER, extra_settings=extra,
                             start_app=instances > 0, instances=instances)
    try:
        register_mssp_app(stack.cloud, client_id, secret)
    except BaseException:
        stack.stop()
        raise
    return stack


def register_mssp_app(cloud: LocalCloud, client_id: str, secret: str) -> None:
    """Register the MSSP's multi-tenant app in the local cloud: a client secret and both alert APIs' roles."""
    cloud.control("POST", "apps", json={
        "clientId": client_id, "displayName": "MSSP alerts", "multiTenant": True,
        "secrets": [{"value": secret}], "redirectUris": ["https://127.0.0.1/api/consent/callback"],
        "requiredResourceAccess": {GRAPH_RESOURCE: ["SecurityAlert.Read.All"],
                                   DEFENDER_RESOURCE: ["Alert.Read.All"]}})


def stack_table(stack: LocalStack, name: str) -> TableClient:
    """A client of the stack's table `name` (created when missing), through Azurite's connection string."""
    service = TableServiceClient.from_connection_string(stack.azurite.connection_string)
    service.create_table_if_not_exists(name)
    return service.get_table_client(name)


def cloud_now(stack: LocalStack) -> datetime:
    """The local cloud's clock (tests may have moved it)."""
    return datetime.fromisoformat(stack.cloud.control("GET", "clock").json()["now"].replace("Z", "+00:00"))
