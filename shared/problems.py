"""RFC 9457 problem details (`application/problem+json`) for the app's HTTP APIs (design.md invariant 4).

Every API error names what was wrong (`field` for a request field) and never carries internals: no stack
traces, exception texts or storage errors.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import azure.functions as func

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
