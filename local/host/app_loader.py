"""Index the app's functions the way the Python worker does for the v2 programming model.

The worker imports `function_app.py` from the app root and asks the `FunctionApp` for its functions;
so does this module, once (`get_functions()` is not idempotent: a second call raises on duplicate
names). Nothing is listed by hand: what the app registers is what the host runs. A function with a
binding the host does not implement is indexed "in error" (logged here, listed in the admin API's
errors, never invoked) and the others still run, as the Functions host treats a missing extension.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.host.invoker import FunctionInfo

logger = logging.getLogger(__name__)


class AppLoadError(RuntimeError):
    """The app could not be imported or indexed."""


@dataclass(frozen=True)
class LoadedApp:
    app: Any
    functions: dict[str, FunctionInfo]


def load_app(app_root: Path, app_spec: str = "function_app:app") -> LoadedApp:
    """Import `module:attribute` with app_root first on sys.path (and as the working directory, as the
    worker runs there) and describe every function it registers."""
    module_name, _, attribute = app_spec.partition(":")
    if not module_name or not attribute:
        raise AppLoadError(f"--app must be module:attribute, got {app_spec!r}")
    root = str(app_root.resolve())
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    os.chdir(root)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppLoadError(f"importing {module_name!r} from {root} failed: {type(exc).__name__}: {exc}") from exc
    app = getattr(module, attribute, None)
    if app is None or not hasattr(app, "get_functions"):
        raise AppLoadError(f"{app_spec} is not a FunctionApp (no get_functions())")
    try:
        indexed = app.get_functions()
    except Exception as exc:
        raise AppLoadError(f"indexing {app_spec} failed: {type(exc).__name__}: {exc}") from exc
    functions: dict[str, FunctionInfo] = {}
    for function in indexed:
        info = describe(function)
        if info.name.lower() in (n.lower() for n in functions):
            raise AppLoadError(f"function name {info.name!r} is registered twice")
        functions[info.name] = info
        if info.error:
            logger.error("The 'Functions.%s' function is in error: %s", info.name, info.error)
    logger.info("Found the following functions: %s", ", ".join(sorted(functions)) or "(none)")
    return LoadedApp(app=app, functions=functions)


def describe(function: Any) -> FunctionInfo:
    """A FunctionInfo from an `azure.functions` Function: its function.json bindings (enum values
    rendered as JSON, as the host receives them) and the callable the worker invokes."""
    config = json.loads(function.get_function_json())
    bindings = [_normalised(b) for b in config.get("bindings", [])]
    return FunctionInfo.from_callable(function.get_function_name(), bindings, function.get_user_function())


def _normalised(binding: dict[str, Any]) -> dict[str, Any]:
    """function.json spells direction and authLevel in lower case ("in", "function"); the library's
    serialiser gives the enum names ("IN", "FUNCTION")."""
    result = dict(binding)
    for key in ("direction", "authLevel"):
        if isinstance(result.get(key), str):
            result[key] = result[key].lower()
    return result
