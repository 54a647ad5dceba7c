"""Support for tests/test_hostile.py: the stack it attacks, the app's HTTP routes as the app itself declares
them, and the ledger that sends every hostile request and judges every response.

The ledger never stops at the first bad answer: it counts and records each offending response (method, path,
status, what was sent, a body excerpt), so one run lists everything that broke.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from tests.grant_access.conftest import Onboarding, start_onboarding

REPO = Path(__file__).resolve().parents[1]
ROUTE_PREFIX = json.loads((REPO / "host.json").read_text()).get("extensions", {}).get("http", {}).get(
    "routePrefix", "api")

# Markers that must never come back raw in HTML or non-JSON bodies, nor in any response header.
MARKERS = ('<x-hostile-"\'>', "<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
BIDI = "\u202e\u2066\u2067\u2068\u2069\u200f\u200e\u061c\u200b\ufeff"
JSON_TYPES = {"application/json", "application/problem+json", "application/x-ndjson"}
PLATFORM_LINK = re.compile(r"/runtime/webhooks|/admin/", re.IGNORECASE)
CODE_PARAM = re.compile(r"[?&;]code=", re.IGNORECASE)


@dataclass(frozen=True)
class Route:
    """One HTTP-triggered function as the app registers it."""

    name: str
    template: str
    methods: tuple[str, ...]
    auth_level: str

    @property
    def params(self) -> list[str]:
        return re.findall(r"\{\*?([A-Za-z0-9_]+)[^}]*\}", self.template)

    def path(self, values: dict[str, str] | None = None) -> str:
        """The URL path with each `{param}` replaced by its (already percent-encoded) value."""
        values = values or {}

        def fill(match: re.Match[str]) -> str:
            return values.get(match.group(1), "x")

        return "/" + "/".join(p for p in (ROUTE_PREFIX, re.sub(r"\{\*?([A-Za-z0-9_]+)[^}]*\}", fill,
                                                               self.template)) if p)


def http_routes() -> list[Route]:
    """Every HTTP trigger of `function_app.app`, read in a child interpreter (get_functions() runs once per
    process), with the route (the function name when it has none), methods and auth level the host uses."""
    script = (
        "import json; from function_app import app\n"
        "print(json.dumps({f.get_function_name(): json.loads(f.get_function_json())['bindings']"
        " for f in app.get_functions()}))"
    )
    output = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            check=True, timeout=120).stdout
    found = []
    for name, bindings in json.loads(output.strip().splitlines()[-1]).items():
        for binding in bindings:
            if binding.get("type") == "httpTrigger":
                methods = tuple(str(m).upper() for m in binding.get("methods") or ()) or (
                    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
                found.append(Route(name, str(binding.get("route") or name), methods,
                                   str(binding.get("authLevel") or "function").lower()))
    return sorted(found, key=lambda r: r.name)


def start_hostile_stack(workdir: Path) -> tuple[Onboarding, str]:
    """The onboarding stack (the MSSP's app in the local cloud) with MailDev, so the rules' test-email route
    can really send; the MSSP app's client secret is returned for forging HS256 id_tokens with it."""
    env = start_onboarding(workdir, with_maildev=True, SEND_RATE_PER_MINUTE="0", SEND_RATE_PER_DAY="0",
                           MAIL_SENDER="alerts@mssp.example")
    return env, env.stack.settings["MSSP_APP_CLIENT_SECRET"]


def enc(value: str) -> str:
    """Percent-encode any text for a URL, lone surrogates included (as their UTF-8-like bytes)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def header_value(value: str) -> bytes:
    """What a front end passes on as a header value (RFC 9110: visible characters, spaces, tabs and
    obs-text bytes): other control characters are refused by the server's parser before any routing, so
    they would only test the local host's HTTP library. UTF-8 bytes, lone surrogates included."""
    cleaned = re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", " ", value).strip()
    return cleaned.encode("utf-8", "surrogatepass")[:2000]


@dataclass
class Offence:
    kind: str
    family: str
    method: str
    path: str
    status: int
    sent: str
    excerpt: str

    def line(self) -> str:
        return (f"[{self.kind}] {self.family}: {self.method} {self.path[:200]} -> {self.status}; "
                f"sent {self.sent[:300]!r}; got {self.excerpt!r}")


@dataclass
class Ledger:
    """Sends hostile requests to the host and counts what they got."""

    base_url: str
    master_key: str
    function_key: str
    sent: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    offences: list[Offence] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)  # "family status" -> count, for the summary file
    session: requests.Session = field(default_factory=requests.Session)

    KINDS = ("5xx", "reflection", "key", "binding", "auth", "platform-link", "unsafe-url", "replay")

    def count(self, kind: str) -> int:
        return sum(1 for o in self.offences if o.kind == kind)

    def offend(self, kind: str, family: str, method: str, path: str, status: int, sent: str, excerpt: str) -> None:
        self.offences.append(Offence(kind, family, method, path, status, sent, excerpt[:200]))

    def send(self, family: str, route: str, method: str, path: str, *, query: str = "",
             headers: dict[str, Any] | None = None, data: bytes | None = None, key: str = "function",
             auth_level: str = "anonymous", note: str = "") -> requests.Response | None:
        """One request; `key` is function (header), query (code=), master, wrong or none. Judged at once."""
        sent_headers: dict[str, Any] = dict(headers or {})
        codes: list[str] = []
        if key == "function":
            sent_headers["x-functions-key"] = self.function_key
        elif key == "master":
            sent_headers["x-functions-key"] = self.master_key
        elif key == "wrong":
            sent_headers["x-functions-key"] = "wrong-" + secrets.token_hex(8)
        elif key == "query":
            codes.append(self.function_key)
            query = "&".join(p for p in (query, f"code={self.function_key}") if p)
        url = self.base_url + path + (f"?{query}" if query else "")
        described = note or f"query={query[:150]!r} headers={ {k: v for k, v in sent_headers.items() if k != 'x-functions-key'} !r:.100} body={(data or b'')[:150]!r}"  # noqa: E501
        self.sent += 1
        self.hits[route] += 1
        try:
            response = self.session.request(method, url, headers=sent_headers, data=data, timeout=60,
                                            allow_redirects=False)
        except requests.RequestException as exc:
            self.offend("5xx", family, method, path, 0, described, f"no response: {type(exc).__name__}: {exc}")
            return None
        self.judge(family, method, path, response, described, codes, auth_level=auth_level, key=key)
        return response

    def judge(self, family: str, method: str, path: str, response: requests.Response, sent: str,
              codes: list[str], *, auth_level: str, key: str) -> None:
        text = response.content.decode("utf-8", "replace")
        excerpt = text[:200]
        status = response.status_code
        self.statuses[f"{family} {status}"] += 1
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        if status >= 500:
            self.offend("5xx", family, method, path, status, sent, excerpt)
        media = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        for marker in MARKERS:
            # JSON strings may hold `<` when served as JSON; HTML, text or untyped bodies may not, and no
            # header may carry a marker at all.
            if (marker in text and media not in JSON_TYPES) or marker in headers:
                at = text.find(marker)
                self.offend("reflection", family, method, path, status, sent,
                            f"{media or 'no content type'}: …{text[max(0, at - 60):at + 100]}")
                break
        for secret in (self.master_key, self.function_key, *codes):
            if secret and (secret in text or secret in headers):
                self.offend("key", family, method, path, status, sent, excerpt)
                break
        else:
            if CODE_PARAM.search(text) or CODE_PARAM.search(headers):
                self.offend("key", family, method, path, status, sent, f"a code= parameter: {excerpt}")
        if PLATFORM_LINK.search(text) or PLATFORM_LINK.search(headers):
            self.offend("platform-link", family, method, path, status, sent, excerpt)
        # Without a valid key a FUNCTION route answers 401; a path no route matches is the host's bare 404, a
        # request line over 8 KiB the host's bare 414 (both before any key is checked, as in Azure).
        if (auth_level != "anonymous" and key in ("none", "wrong") and status != 401
                and not (status in (404, 414) and media not in JSON_TYPES)):
            self.offend("auth", family, method, path, status, sent, excerpt)

    def summary(self) -> str:
        return (f"hostile: {self.sent} requests, {self.count('5xx')} >=500, {self.count('reflection')} "
                f"reflections, {self.count('key')} keys, {self.count('binding')} binding changes, "
                f"{self.count('auth')} auth bypasses, {self.count('platform-link')} platform links, "
                f"{self.count('unsafe-url')} unsafe URLs accepted, {self.count('replay')} replays accepted")

    def report(self, family: str | None = None) -> str:
        chosen = [o for o in self.offences if family is None or o.family == family]
        return "\n".join(o.line() for o in chosen[:60]) + (f"\n… and {len(chosen) - 60} more" if len(chosen) > 60
                                                            else "")
