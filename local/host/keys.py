"""Function keys and authorization levels, as the Functions host enforces them on HTTP requests.

The key comes from the `x-functions-key` header or the `code` query parameter. The master key passes
every level; the function key passes FUNCTION and ANONYMOUS; ANONYMOUS needs no key; ADMIN (and the
admin API) needs the master key.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web

KEY_HEADER = "x-functions-key"
KEY_QUERY = "code"


@dataclass(frozen=True)
class HostKeys:
    master: str
    function: str

    @classmethod
    def create(cls, master: str | None, function: str | None) -> HostKeys:
        return cls(master=master or secrets.token_urlsafe(32), function=function or secrets.token_urlsafe(32))

    def level_of(self, request: web.Request) -> str:
        """The authorization level the request's key grants: "admin", "function" or "anonymous"."""
        presented = request.headers.get(KEY_HEADER) or request.query.get(KEY_QUERY) or ""
        if presented and hmac.compare_digest(presented.encode(), self.master.encode()):
            return "admin"
        if presented and hmac.compare_digest(presented.encode(), self.function.encode()):
            return "function"
        return "anonymous"

    def allows(self, request: web.Request, required: str) -> bool:
        granted = self.level_of(request)
        required = required.lower()
        if required == "anonymous":
            return True
        if required == "function":
            return granted in {"function", "admin"}
        return granted == "admin"  # admin and system levels
