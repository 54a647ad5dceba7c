"""RFC 9457 problem details (`application/problem+json`) for the app's HTTP APIs (docs/ARCHITECTURE.md, invariant 4),
and the JSON answers and error handling the API triggers share.

Every API error names what was wrong (`field` for a request field) and never carries internals: no stack
traces, exception texts or storage errors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import azure.functions as func
from azure.core.exceptions import AzureError

from shared.settings import SettingsError

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """An API error to answer with; raised by validation, caught by the trigger."""

    def __init__(self, status: int, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": "about:blank", "title": HTTPStatus(self.status).phrase,
                                "status": self.status, "detail": self.detail}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return body

    def response(self) -> func.HttpResponse:
        return func.HttpResponse(json.dumps(self.body()), status_code=self.status, mimetype=PROBLEM_JSON)


def problem_response(status: int, detail: str, *, field: str | None = None, **extra: Any) -> func.HttpResponse:
    return Problem(status, detail, field=field, **extra).response()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype=JSON, headers=headers)


def error_response(exc: Problem | SettingsError | AzureError, logger: logging.Logger) -> func.HttpResponse:
    """The answer to an API error: a Problem as it is; a configuration failure a 500 and a storage failure a
    503, both logged (on the caller's logger) and answered without internals."""
    if isinstance(exc, Problem):
        return exc.response()
    if isinstance(exc, SettingsError):
        logger.error("configuration error: %s", exc)
        return problem_response(500, "the service is not configured correctly; see its log")
    logger.error("table storage failed: %s", type(exc).__name__)
    return problem_response(503, "storage is unavailable; try again later")


def run_api(handler: Callable[[], func.HttpResponse], logger: logging.Logger) -> func.HttpResponse:
    """Run an API handler: a Problem is the answer; a dependency failure is a 503 or 500 without internals."""
    try:
        return handler()
    except (Problem, SettingsError, AzureError) as exc:
        return error_response(exc, logger)
