"""host.json and app settings, read the way the Functions host reads them.

Serves the local host (`python -m local.host`): the settings file is put into the process environment
before the app is imported, and host.json gives `functionTimeout`, log levels, the HTTP route prefix,
the Durable Task options, the Storage queues trigger's options (`extensions.queues`) and the singleton
lock periods of listeners (`singleton`). `%NAME%` expressions (in host.json's `extensions` section and in binding values
such as timer schedules) resolve from the environment, as the host's name resolver does; an unset
setting fails with an error that names it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_SETTING_EXPRESSION = re.compile(r"%([^%\s]+)%")
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?$")

#: Flex Consumption's default functionTimeout (the plan the product deploys to).
DEFAULT_FUNCTION_TIMEOUT = 30 * 60.0
#: The Durable extension's defaults are 10 x the processor count.
_DURABLE_DEFAULT_CONCURRENCY = 10 * (os.cpu_count() or 1)

# host.json names -> Python logging levels.
_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "information": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "none": logging.CRITICAL + 10,
}


class HostConfigError(ValueError):
    """host.json or an app setting it needs is missing or invalid."""


class SettingNotFoundError(HostConfigError):
    """A `%NAME%` expression names an app setting that is not set."""

    def __init__(self, name: str, where: str) -> None:
        super().__init__(f"app setting {name!r} used in {where} is not set")
        self.name = name


def resolve_setting_expressions(value: str, *, where: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace every `%NAME%` in value with the app setting NAME."""
    env = os.environ if environ is None else environ

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise SettingNotFoundError(name, where)
        return env[name]

    return _SETTING_EXPRESSION.sub(lookup, value)


def parse_timespan(text: str) -> float:
    """Seconds in a .NET TimeSpan string as host.json uses them: `[d.]hh:mm[:ss[.fff]]`."""
    match = _TIMESPAN.match(text.strip())
    if not match:
        raise HostConfigError(f"{text!r} is not a TimeSpan (expected hh:mm:ss)")
    days, hours, minutes, seconds, fraction = match.groups()
    if int(minutes) > 59 or (seconds and int(seconds) > 59):
        raise HostConfigError(f"{text!r} is not a TimeSpan (minutes and seconds must be below 60)")
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds or 0)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


def load_settings_file(path: Path) -> dict[str, str]:
    """App settings from a JSON file: local.settings.json's shape (`Values`) or a flat object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HostConfigError(f"cannot read settings file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise HostConfigError(f"settings file {path} must hold a JSON object")
    values = data["Values"] if "Values" in data else data
    if not isinstance(values, dict):
        raise HostConfigError(f"'Values' in {path} must be a JSON object")
    # local.settings.json may carry other sections (Host, ConnectionStrings); only scalar values are settings.
    return {str(k): _setting_text(v) for k, v in values.items() if not isinstance(v, dict | list)}


def _setting_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def apply_settings(settings: Mapping[str, str], environ: MutableMapping[str, str] | None = None) -> None:
    """Put app settings into the environment, as the host does for the worker process."""
    env = os.environ if environ is None else environ
    for name, value in settings.items():
        env[name] = value


@dataclass(frozen=True)
class DurableOptions:
    hub_name: str = "TestHubName"
    max_concurrent_activities: int = _DURABLE_DEFAULT_CONCURRENCY
    max_concurrent_orchestrations: int = _DURABLE_DEFAULT_CONCURRENCY


#: Azure Queues returns at most 32 messages per Get Messages call; the extension refuses a larger batchSize.
MAX_QUEUE_BATCH_SIZE = 32
#: The extension's shortest polling interval (QueuePollingIntervals.Minimum); maxPollingInterval may not be below it.
MIN_QUEUE_POLLING_INTERVAL = 0.1


def _processor_count() -> int:
    """The processor count the Storage queues extension scales its default newBatchThreshold by (SkuUtility:
    1 on the Dynamic SKU, the machine's count elsewhere, Flex Consumption included)."""
    if os.environ.get("WEBSITE_SKU", "").lower() == "dynamic":
        return 1
    return os.cpu_count() or 1


@dataclass(frozen=True)
class QueuesOptions:
    """host.json `extensions.queues`, with the defaults of QueuesOptions in
    Microsoft.Azure.WebJobs.Extensions.Storage.Queues v5 (sdk/storage/...Storage.Common/src/Shared/Queues/
    QueuesOptions.cs in azure-sdk-for-net; documented in "Azure Queue storage trigger and bindings", host.json
    settings)."""

    batch_size: int = 16
    #: None: the extension's default, batchSize / 2 x the processor count.
    new_batch_threshold: int | None = None
    max_polling_interval: float = 60.0
    #: Seconds before a message whose invocation failed is visible again.
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    #: "base64" or "none".
    message_encoding: str = "base64"

    @property
    def effective_new_batch_threshold(self) -> int:
        if self.new_batch_threshold is not None:
            return self.new_batch_threshold
        return (self.batch_size // 2) * _processor_count()


@dataclass(frozen=True)
class SingletonOptions:
    """host.json `singleton`: the blob lease of a listener lock (the timer trigger's), as SingletonOptions in
    azure-webjobs-sdk (src/Microsoft.Azure.WebJobs.Host/Singleton/SingletonOptions.cs): a 60 s lease, and an
    instance without the lock retries to acquire it every minute."""

    listener_lock_period: float = 60.0
    listener_lock_recovery_polling_interval: float = 60.0


@dataclass(frozen=True)
class HostConfig:
    version: str = "2.0"
    #: Seconds, or None when host.json says -1 (unbounded).
    function_timeout: float | None = DEFAULT_FUNCTION_TIMEOUT
    route_prefix: str = "api"
    log_levels: dict[str, int] = field(default_factory=dict)
    durable: DurableOptions = field(default_factory=DurableOptions)
    queues: QueuesOptions = field(default_factory=QueuesOptions)
    singleton: SingletonOptions = field(default_factory=SingletonOptions)


def load_host_config(app_root: Path, environ: Mapping[str, str] | None = None) -> HostConfig:
    """Read `app_root/host.json` (absent: the host's defaults)."""
    path = app_root / "host.json"
    if not path.exists():
        logger.warning("No host.json in %s; using the host's defaults", app_root)
        return HostConfig()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise HostConfigError(f"{path} is not valid JSON: {exc}") from exc
    return parse_host_config(apply_overrides(data, os.environ if environ is None else environ), environ=environ,
                             where=str(path))


OVERRIDE_PREFIX = "AzureFunctionsJobHost__"


def apply_overrides(data: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """host.json with the values app settings override: a setting `AzureFunctionsJobHost__a__b` replaces the value
    at path a.b (keys matched case-insensitively, missing objects created), as the host documents
    (https://learn.microsoft.com/azure/azure-functions/functions-host-json#override-hostjson-values)."""
    merged: dict[str, Any] = json.loads(json.dumps(data))
    for name, value in sorted(environ.items()):
        if not name.lower().startswith(OVERRIDE_PREFIX.lower()):
            continue
        path = [part for part in name[len(OVERRIDE_PREFIX):].split("__") if part]
        node = merged
        for part in path[:-1]:
            key = next((k for k in node if k.lower() == part.lower()), part)
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if path:
            node[next((k for k in node if k.lower() == path[-1].lower()), path[-1])] = value
    return merged


def parse_host_config(
    data: Mapping[str, Any], *, environ: Mapping[str, str] | None = None, where: str = "host.json"
) -> HostConfig:
    version = str(data.get("version", ""))
    if version != "2.0":
        raise HostConfigError(f"{where}: 'version' must be \"2.0\" (found {version!r})")
    extensions = _resolve_tree(data.get("extensions") or {}, where=f"{where} extensions", environ=environ)
    return HostConfig(
        version=version,
        function_timeout=_function_timeout(data.get("functionTimeout"), where),
        route_prefix=_route_prefix(extensions),
        log_levels=_log_levels(data.get("logging") or {}, where),
        durable=_durable(extensions.get("durableTask") or {}, where),
        queues=_queues(extensions.get("queues") or {}, where),
        singleton=_singleton(data.get("singleton") or {}, where),
    )


def _resolve_tree(node: Any, *, where: str, environ: Mapping[str, str] | None) -> Any:
    if isinstance(node, str):
        return resolve_setting_expressions(node, where=where, environ=environ)
    if isinstance(node, dict):
        return {k: _resolve_tree(v, where=f"{where}.{k}", environ=environ) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_tree(v, where=where, environ=environ) for v in node]
    return node


def _function_timeout(value: Any, where: str) -> float | None:
    if value is None:
        return DEFAULT_FUNCTION_TIMEOUT
    if str(value).strip() == "-1":
        return None
    seconds = parse_timespan(str(value))
    if seconds <= 0:
        raise HostConfigError(f"{where}: functionTimeout must be positive or -1")
    return seconds


def _route_prefix(extensions: Mapping[str, Any]) -> str:
    http = extensions.get("http") or {}
    return str(http.get("routePrefix", "api")).strip("/")


def _log_levels(logging_section: Mapping[str, Any], where: str) -> dict[str, int]:
    levels: dict[str, int] = {}
    for category, name in (logging_section.get("logLevel") or {}).items():
        level = _LEVELS.get(str(name).lower())
        if level is None:
            raise HostConfigError(f"{where}: unknown log level {name!r} for {category!r}")
        levels[str(category)] = level
    return levels


def _durable(section: Mapping[str, Any], where: str) -> DurableOptions:
    defaults = DurableOptions()

    def positive(key: str, default: int) -> int:
        raw = section.get(key, default)
        try:
            value = int(raw)
        except (TypeError, ValueError) as exc:
            raise HostConfigError(f"{where}: extensions.durableTask.{key} must be a number") from exc
        if value < 1:
            raise HostConfigError(f"{where}: extensions.durableTask.{key} must be at least 1")
        return value

    hub = str(section.get("hubName") or defaults.hub_name)
    # Azure Storage task hubs: 3-45 letters and digits, starting with a letter (the extension refuses others).
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,44}", hub):
        raise HostConfigError(
            f"{where}: durableTask.hubName {hub!r} must be 3-45 letters and digits, starting with a letter"
        )
    return DurableOptions(
        hub_name=hub,
        max_concurrent_activities=positive("maxConcurrentActivityFunctions", defaults.max_concurrent_activities),
        max_concurrent_orchestrations=positive(
            "maxConcurrentOrchestratorFunctions", defaults.max_concurrent_orchestrations
        ),
    )


def _int_option(section: Mapping[str, Any], key: str, default: int, *, lowest: int, highest: int | None,
                where: str) -> int:
    raw = section.get(key, default)
    if isinstance(raw, bool):
        raise HostConfigError(f"{where}: {key} must be a whole number")
    try:
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise HostConfigError(f"{where}: {key} must be a whole number") from exc
    if value < lowest or (highest is not None and value > highest):
        bound = f"between {lowest} and {highest}" if highest is not None else f"at least {lowest}"
        raise HostConfigError(f"{where}: {key} must be {bound} (found {value})")
    return value


def _timespan_option(section: Mapping[str, Any], key: str, default: float, where: str) -> float:
    raw = section.get(key)
    if raw is None:
        return default
    try:
        return parse_timespan(str(raw))
    except HostConfigError as exc:
        raise HostConfigError(f"{where}: {key}: {exc}") from exc


def _queues(section: Mapping[str, Any], where: str) -> QueuesOptions:
    """extensions.queues, validated as the extension's QueuesOptions setters validate it."""
    defaults = QueuesOptions()
    at = f"{where}: extensions.queues"
    batch_size = _int_option(section, "batchSize", defaults.batch_size, lowest=1, highest=MAX_QUEUE_BATCH_SIZE,
                             where=at)
    threshold = None
    if section.get("newBatchThreshold") is not None:
        threshold = _int_option(section, "newBatchThreshold", 0, lowest=0, highest=None, where=at)
    max_polling = _timespan_option(section, "maxPollingInterval", defaults.max_polling_interval, at)
    if max_polling < MIN_QUEUE_POLLING_INTERVAL:
        raise HostConfigError(f"{at}: maxPollingInterval must not be less than 00:00:00.1")
    visibility = _timespan_option(section, "visibilityTimeout", defaults.visibility_timeout, at)
    encoding = str(section.get("messageEncoding", defaults.message_encoding)).lower()
    if encoding not in ("base64", "none"):
        raise HostConfigError(f"{at}: messageEncoding must be base64 or none (found {encoding!r})")
    return QueuesOptions(
        batch_size=batch_size,
        new_batch_threshold=threshold,
        max_polling_interval=max_polling,
        visibility_timeout=visibility,
        max_dequeue_count=_int_option(section, "maxDequeueCount", defaults.max_dequeue_count, lowest=1,
                                      highest=None, where=at),
        message_encoding=encoding,
    )


#: Azure Storage blob leases last 15 to 60 seconds; SingletonOptions refuses lock periods outside that range.
_LEASE_RANGE = (15.0, 60.0)


def _singleton(section: Mapping[str, Any], where: str) -> SingletonOptions:
    defaults = SingletonOptions()
    at = f"{where}: singleton"
    period = _timespan_option(section, "listenerLockPeriod", defaults.listener_lock_period, at)
    if not _LEASE_RANGE[0] <= period <= _LEASE_RANGE[1]:
        raise HostConfigError(f"{at}: listenerLockPeriod must be between 00:00:15 and 00:01:00")
    recovery = _timespan_option(section, "listenerLockRecoveryPollingInterval",
                                defaults.listener_lock_recovery_polling_interval, at)
    if recovery < _LEASE_RANGE[0]:
        raise HostConfigError(f"{at}: listenerLockRecoveryPollingInterval must be at least 00:00:15")
    return SingletonOptions(listener_lock_period=period, listener_lock_recovery_polling_interval=recovery)


def configure_logging(levels: Mapping[str, int]) -> None:
    """Apply host.json log levels: `default` to the root logger (the app's own logs) and `Function` to the
    invocation log. Categories of the .NET host's internals (`Host.*`, `DurableTask.*`) have no
    counterpart here and are ignored."""
    if "default" in levels:
        logging.getLogger().setLevel(levels["default"])
    if "Function" in levels:
        logging.getLogger("local.host.invoker").setLevel(levels["Function"])
