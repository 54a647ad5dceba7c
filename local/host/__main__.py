"""`python -m local.host`: run a v2-model function app locally, as `func start` would (local/PLATFORM.md).

    python -m local.host --port N --app-root DIR [--app function_app:app] [--settings-file FILE.json]
                         [--master-key K] [--function-key K] [--state-dir DIR]

App settings are put into the environment before the app is imported; keys not given are generated
and printed. `--state-dir` (or LOCAL_HOST_STATE_DIR) keeps timer schedule status across restarts.
Exit codes: 0 after a graceful stop (SIGTERM, SIGINT, POST /admin/local/shutdown), 1 if the app or its
configuration cannot be loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from local.host.app_loader import AppLoadError, load_app
from local.host.hostconfig import (
    HostConfigError,
    apply_settings,
    configure_logging,
    load_host_config,
    load_settings_file,
)
from local.host.keys import HostKeys
from local.host.logs import setup_logging
from local.host.server import HostOptions, LocalHost

logger = logging.getLogger("local.host")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local.host", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--app-root", type=Path, required=True)
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--settings-file", type=Path)
    parser.add_argument("--master-key")
    parser.add_argument("--function-key")
    parser.add_argument("--state-dir", type=Path, default=os.environ.get("LOCAL_HOST_STATE_DIR") or None)
    return parser.parse_args(_join_values(sys.argv[1:] if argv is None else argv))


def _join_values(argv: list[str]) -> list[str]:
    """`--master-key -abc` -> `--master-key=-abc`: generated keys may start with '-', which argparse
    would otherwise take for an option."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        if argv[index] in _VALUE_OPTIONS and index + 1 < len(argv):
            joined.append(f"{argv[index]}={argv[index + 1]}")
            index += 2
        else:
            joined.append(argv[index])
            index += 1
    return joined


_VALUE_OPTIONS = {"--port", "--app-root", "--app", "--settings-file", "--master-key", "--function-key", "--state-dir"}


# App settings the C runtime reads when a process starts. Azure starts the worker with every app setting in its
# environment; this host reads its settings file after starting, so for these it starts itself once more.
PROCESS_START_SETTINGS = ("MALLOC_ARENA_MAX",)


def _restart_with_process_settings(settings: dict[str, str], argv: list[str] | None) -> None:
    """Re-execute this host (same pid, same arguments) when a process-start setting is not yet in effect."""
    wanted = {k: settings[k] for k in PROCESS_START_SETTINGS if k in settings and os.environ.get(k) != settings[k]}
    if not wanted or argv is not None:  # argv given: called in-process (tests), not as the process itself
        return
    logging.shutdown()
    os.execve(sys.executable, [sys.executable, "-m", "local.host", *sys.argv[1:]],  # noqa: S606 - this program again
              {**os.environ, **wanted})


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    setup_logging(sys.stdout)
    app_root = args.app_root.resolve()
    state_dir = args.state_dir.resolve() if args.state_dir else None
    try:
        if args.settings_file:
            settings = load_settings_file(args.settings_file.resolve())
            _restart_with_process_settings(settings, argv)
            apply_settings(settings)
        config = load_host_config(app_root)
        configure_logging(config.log_levels)
        loaded = load_app(app_root, args.app)
    except (HostConfigError, AppLoadError) as exc:
        logger.error("Host failed to start: %s", exc, exc_info=isinstance(exc, AppLoadError))
        return 1
    keys = HostKeys.create(args.master_key, args.function_key)
    if not args.master_key:
        print(f"Master key: {keys.master}", flush=True)  # noqa: T201 - shown to the developer, as Core Tools does
    if not args.function_key:
        print(f"Function key: {keys.function}", flush=True)  # noqa: T201
    options = HostOptions(port=args.port, app_root=app_root, config=config, keys=keys, state_dir=state_dir)
    host = LocalHost(loaded.functions, options)
    asyncio.run(host.run_until_stopped())
    if host.invoker.stats()["abandoned"]:
        # Interpreter exit would join the pool's threads, and an abandoned invocation may never end;
        # the real host kills its worker process at this point, so end this one without waiting.
        logger.warning("Exiting with abandoned invocations still running")
        logging.shutdown()
        os._exit(0)
    # Objects the app leaked (e.g. unclosed client sessions) complain while the interpreter exits;
    # the host has stopped by then, so a failing log write must not print tracebacks.
    logging.raiseExceptions = False
    return 0


if __name__ == "__main__":
    sys.exit(main())
