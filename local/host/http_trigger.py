"""HTTP triggers: route a request to its function, enforce its auth level, invoke it, answer with its
response, as the Functions host does.

- Routes live under the route prefix (host.json `extensions.http.routePrefix`, default `api`); a function
  without a route template is reached by its name. A path that matches a route whose methods do not
  include the request's gets 404, as in Azure (the host registers one route per method).
- A missing or wrong key gives 401 with an empty body; the check happens after routing.
- Other input bindings (the durable client) come from the invoker's providers.
- The function receives an `azure.functions.HttpRequest` (method, full URL, headers, query parameters
  and route values, with repeated names joined by commas as the host does, and the body bytes). It may
  return an `HttpResponse` or a `str` (200, text/plain); anything else fails the invocation, as the
  worker cannot encode it.
- A failing or timed-out function gives 500 with an empty body; the error goes to the host log only.
- Bodies are limited to 100 MB, Azure's limit (413 above it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import azure.functions as func
from aiohttp import web
from multidict import CIMultiDict, MultiMapping

from local.host.invoker import REASON_HOST_API, FunctionInfo, Invoker
from local.host.keys import HostKeys
from local.host.routing import RouteTemplate

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 100 * 1024 * 1024


@dataclass
class HttpRoute:
    function: FunctionInfo
    template: RouteTemplate
    methods: frozenset[str] | None  # None: every method
    auth_level: str

    @classmethod
    def of(cls, fn: FunctionInfo) -> HttpRoute:
        route = fn.trigger.get("route") or fn.name
        methods = fn.trigger.get("methods")
        return cls(
            function=fn,
            template=RouteTemplate(str(route)),
            methods=frozenset(str(m).upper() for m in methods) if methods else None,
            auth_level=str(fn.trigger.get("authLevel") or "function").lower(),
        )

    def allows_method(self, method: str) -> bool:
        return self.methods is None or method.upper() in self.methods


class HttpTriggers:
    """Serves every HTTP-triggered function of the app."""

    def __init__(
        self,
        functions: dict[str, FunctionInfo],
        invoker: Invoker,
        keys: HostKeys,
        *,
        route_prefix: str = "api",
    ) -> None:
        self.invoker = invoker
        self.keys = keys
        self.route_prefix = route_prefix.strip("/")
        routes = [HttpRoute.of(fn) for fn in functions.values() if fn.trigger_type == "httpTrigger"]
        # Most specific first; ties keep registration order (stable sort).
        self.routes = sorted(routes, key=lambda r: r.template.precedence())

    def url_path(self, route: HttpRoute) -> str:
        return "/" + "/".join(p for p in (self.route_prefix, route.template.template) if p)

    def aiohttp_routes(self) -> list[web.RouteDef]:
        """One catch-all route: register it after every other route of the server."""
        return [web.route("*", "/{tail:.*}", self.handle)]

    def _route_path(self, path: str) -> str | None:
        """The request path below the route prefix (matched case-insensitively, as routing is), or None."""
        if not self.route_prefix:
            return path
        prefix = "/" + self.route_prefix
        head = path[: len(prefix)]
        rest = path[len(prefix):]
        if head.lower() != prefix.lower() or (rest and not rest.startswith("/")):
            return None
        return rest

    def find(self, path: str, method: str) -> tuple[HttpRoute, dict[str, str]] | None:
        for route in self.routes:
            values = route.template.match(path)
            if values is not None and route.allows_method(method):
                return route, values
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # The raw (still percent-encoded) path: route values are decoded once, per segment.
        path = self._route_path(request.rel_url.raw_path)
        found = self.find(path, request.method) if path is not None else None
        if found is None:
            return web.Response(status=404)
        route, route_values = found
        if not self.keys.allows(request, route.auth_level):
            return web.Response(status=401)
        fn = route.function
        inputs: dict[str, object] = {fn.trigger_name: await self._http_request(request, route_values)}
        try:
            response = await self.invoker.invoke(fn, inputs, reason=REASON_HOST_API, convert_result=_to_response)
        except Exception:  # noqa: BLE001 - logged by the invoker; the client learns nothing more
            return web.Response(status=500)
        return cast(web.Response, response)

    async def _http_request(self, request: web.Request, route_values: dict[str, str]) -> func.HttpRequest:
        body = await request.read()
        return func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=_joined(request.headers, case_insensitive=True),
            params=_joined(request.query, case_insensitive=False),
            route_params=route_values,
            body=body,
        )


def _joined(pairs: Mapping[str, str] | MultiMapping[str], *, case_insensitive: bool) -> dict[str, str]:
    """Repeated names joined with commas, as the host flattens headers and query strings."""
    joined: dict[str, str] = {}
    for name, value in pairs.items():
        key = name.lower() if case_insensitive else name
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    return joined


def _to_response(result: object) -> web.Response:
    if isinstance(result, func.HttpResponse):
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in result.headers.items():
            headers.add(name, value)
        if "content-type" not in headers:
            mimetype = result.mimetype or "text/plain"
            charset = result.charset or "utf-8"
            headers["Content-Type"] = f"{mimetype}; charset={charset}" if mimetype.startswith("text/") else mimetype
        return web.Response(status=result.status_code, headers=headers, body=result.get_body() or b"")
    if isinstance(result, str):
        return web.Response(status=200, text=result, content_type="text/plain", charset="utf-8")
    raise TypeError(
        f'unable to encode outgoing TypedData: unsupported type "http" for Python type "{type(result).__name__}"'
    )
