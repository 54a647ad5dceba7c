"""HTTP calls to URLs we were given (an onboarding system's callbackUrl), pinned to a vetted address.

`post` resolves the URL's host once (shared.outbound_url.resolve_public), vets every address, and connects
to the vetted one; nothing resolves the name again between the check and the connect, so DNS rebinding
cannot swap in an internal address (OWASP Server-Side Request Forgery Prevention Cheat Sheet). TLS is
still verified against the host name: urllib3 connects to the address but sends the name as SNI and
the standard library checks the certificate against it (urllib3's `server_hostname` pool setting), and
the request carries `Host: <name>`. Redirects are never followed (a 3xx is the answer), and no proxy
is used: a proxy would resolve the name itself.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from shared.outbound_url import Resolver, Target, resolve_public, system_resolver


class PinnedAdapter(HTTPAdapter):
    """A transport adapter whose connections go to `target.address` and whose TLS checks `target.host`."""

    def __init__(self, target: Target, netloc: str) -> None:
        self._target = target
        self._netloc = netloc
        super().__init__(max_retries=0)

    # types-requests types the pool kwargs as a closed TypedDict without `server_hostname`, which urllib3's
    # pools accept (its PoolKey has key_server_hostname): the stub is narrower than the runtime.
    def build_connection_pool_key_attributes(  # type: ignore[override]
            self, request: requests.PreparedRequest, verify: Any,
            cert: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        # requests documents this method as the one to override to change how connections are made.
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        parts = urlsplit(request.url or "")
        if (parts.hostname or "").rstrip(".").lower() != self._target.host or parts.scheme != "https":
            raise requests.exceptions.InvalidURL("a pinned connection only serves the URL it was made for")
        # Only server_hostname, not assert_hostname: with it alone the standard library's own hostname
        # check (check_hostname) stays on, and it is what SNI carries.
        return ({**host_params, "host": self._target.address, "port": self._target.port},
                {**pool_kwargs, "server_hostname": self._target.host})

    def add_headers(self, request: requests.PreparedRequest, **kwargs: Any) -> None:
        # Without it the Host header would name the address the pool connects to.
        request.headers["Host"] = self._netloc

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=None)


def post(url: str, *, data: bytes, headers: dict[str, str], timeout: float, allow_loopback: bool = False,
         resolver: Resolver = system_resolver, verify: bool | str = True) -> requests.Response:
    """POST `data` to `url` at an address vetted once; UnsafeUrl when the URL or any address is refused.

    `verify` is requests' (True: REQUESTS_CA_BUNDLE or the certifi bundle; a path: that bundle)."""
    target = resolve_public(url, allow_loopback=allow_loopback, resolver=resolver)
    netloc = urlsplit(url).netloc
    with requests.Session() as session:
        session.proxies.clear()
        session.mount("https://", PinnedAdapter(target, netloc))
        session.mount("http://", PinnedAdapter(target, netloc))  # refuses: the URL was checked to be https
        return session.post(url, data=data, headers=headers, timeout=timeout, allow_redirects=False,
                            verify=verify)
