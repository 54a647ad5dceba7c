"""The small HTML pages a customer's admin sees after the consent redirect.

Plain words, everything interpolated is escaped, no scripts and no external resources: the
Content-Security-Policy allows only the page's own inline style (by hash). `Referrer-Policy: no-referrer`
keeps the callback URL, with its `state`, out of any later request.
"""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass

import azure.functions as func

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:38em;margin:3em auto;padding:0 1em;color:#1b1b1b;"
          "line-height:1.5}h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.5em}.note{color:#555}"
          "code{background:#f3f3f3;padding:0 .2em;overflow-wrap:anywhere}")
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
_TRY_AGAIN = "Ask your security provider for a new consent link, open it, and accept the permissions."


@dataclass(frozen=True)
class Link:
    """A link inside a line: its text and target, both escaped when rendered. Only https URLs and the app's
    own absolute paths are links; anything else is refused at render time (it would be a bug)."""

    text: str
    href: str


@dataclass(frozen=True)
class Code:
    """A value the reader copies (a tenant id, a group name), shown as code."""

    text: str


# A line of text: plain text, or fragments of plain text, links and values to copy.
Line = str | tuple[str | Link | Code, ...]


@dataclass(frozen=True)
class Section:
    """A heading, optional introductory lines, and numbered steps."""

    heading: str
    intro: tuple[Line, ...] = ()
    steps: tuple[Line, ...] = ()


def _href(href: str) -> str:
    if not (href.startswith("https://") or (href.startswith("/") and not href.startswith("//"))):
        raise ValueError(f"not a link a page may carry: {href!r}")
    return html.escape(href, quote=True)


def _line(line: Line) -> str:
    e = html.escape
    if isinstance(line, str):
        return e(line)
    out = []
    for part in line:
        if isinstance(part, Link):
            out.append(f'<a href="{_href(part.href)}">{e(part.text)}</a>')
        elif isinstance(part, Code):
            out.append(f"<code>{e(part.text)}</code>")
        else:
            out.append(e(part))
    return "".join(out)


@dataclass(frozen=True)
class Page:
    """A page to show: HTTP status, a heading, paragraphs and sections of text (escaped when rendered)."""

    status: int
    title: str
    paragraphs: tuple[Line, ...]
    sections: tuple[Section, ...] = ()

    def render(self) -> str:
        e = html.escape
        parts = [f"<p>{_line(p)}</p>" for p in self.paragraphs]
        for section in self.sections:
            parts.append(f"<h2>{e(section.heading)}</h2>")
            parts += [f"<p>{_line(p)}</p>" for p in section.intro]
            if section.steps:
                parts.append("<ol>" + "".join(f"<li>{_line(s)}</li>" for s in section.steps) + "</ol>")
        body = "\n".join(parts)
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{e(self.title)}</title><style>{_STYLE}</style></head>\n"
                f"<body><main><h1>{e(self.title)}</h1>\n{body}\n</main></body></html>\n")

    def response(self) -> func.HttpResponse:
        return func.HttpResponse(self.render(), status_code=self.status, mimetype="text/html", charset="utf-8",
                                 headers=dict(_HEADERS))


def _for(customer: str | None) -> str:
    return f" for {customer}" if customer else ""


def _next_step(portal_access: str | None) -> Line:
    if not portal_access:
        return "Nothing else is needed. You can close this page."
    return ("Nothing else is needed for the alerts. Next, when you are ready: ",
            Link("give your security provider's analysts access to the Microsoft Defender portal", portal_access),
            " (steps for your organization, in your own admin centers).")


def access_granted(customer: str, portal_access: str | None = None) -> Page:
    return Page(200, f"Access granted{_for(customer)}", (
        f"Thank you. {customer} has granted your security provider read access to its security alerts.",
        _next_step(portal_access)))


def consent_received(customer: str, portal_access: str | None = None) -> Page:
    return Page(200, f"Consent received{_for(customer)}", (
        "Thank you. Your consent was recorded. Microsoft can take a few minutes to apply it everywhere; "
        "your security provider confirms access automatically in the meantime.",
        _next_step(portal_access)))


def portal_access_unknown() -> Page:
    return Page(404, "This page does not exist", (
        "There is no portal-access guide at this address: the link is incomplete, or the consent it belongs "
        "to has not been granted.",
        "Use the link shown after you granted consent, or ask your security provider for it."))


def declined(customer: str | None) -> Page:
    return Page(200, f"Access was not granted{_for(customer)}", (
        "The permissions were declined, so your security provider cannot read your security alerts.",
        f"If this was not intended: {_TRY_AGAIN}"))


def not_licensed(customer: str | None) -> Page:
    return Page(200, f"Microsoft Defender is not enabled{_for(customer)}", (
        "Your organization does not have Microsoft Defender for Endpoint enabled, so there are no alerts "
        "your security provider could read.",
        f"Once it is enabled: {_TRY_AGAIN}"))


def not_verified(customer: str, status: str) -> Page:
    reasons = {
        "permission_missing": "the consent did not include the permission to read security alerts.",
        "consent_revoked": "the app's consent has been removed from your organization.",
        "verification_failed": "access could not be confirmed.",
        "disabled": "your security provider has paused this connection.",
        "offboarded": "your security provider has ended this connection.",
    }
    return Page(200, f"Access is not working yet{_for(customer)}", (
        f"Your consent was recorded, but {reasons.get(status, 'access could not be confirmed.')}",
        f"Your security provider has been told. If they ask you to: {_TRY_AGAIN}"))


def link_invalid() -> Page:
    return Page(400, "This link is not valid", (
        "This consent link is incomplete, was changed, or does not belong to an invitation.",
        _TRY_AGAIN))


def link_expired() -> Page:
    return Page(400, "This link has expired", (
        "Consent links are valid for a limited time and this one has run out.", _TRY_AGAIN))


def link_used() -> Page:
    return Page(400, "This link has already been used", (
        "This consent link was already completed and cannot be used again.",
        "If access still needs to be granted: " + _TRY_AGAIN))


def wrong_organization() -> Page:
    return Page(400, "Signed in to a different organization", (
        "The consent was given in an organization other than the one this link was made for. "
        "Nothing was changed.",
        "Sign in with an administrator account of the invited organization. " + _TRY_AGAIN))


def unavailable() -> Page:
    return Page(503, "Please try again in a moment", (
        "The service could not record your answer just now. Reload this page in a minute.",))


def already_onboarded(customer: str | None) -> Page:
    return Page(409, f"Already connected{_for(customer)}", (
        "Your organization is already connected to your security provider through another invitation, or "
        "the provider has offboarded or paused it, so this link cannot change it. Nothing was changed.",
        "If access must be granted again, your security provider sends a fresh consent link."))


def sign_in_incomplete(customer: str | None) -> Page:
    return Page(200, f"Sign-in not completed{_for(customer)}", (
        "After the consent, the sign-in that confirms your organization did not complete. Nothing was "
        "changed yet.",
        "Open the consent link again and sign in with an administrator account of your organization."))


def sign_in_not_admin(customer: str | None) -> Page:
    return Page(403, f"An administrator must confirm{_for(customer)}", (
        "The account that signed in is not an administrator of your organization (or is a guest in it), so it "
        "cannot confirm the consent. Nothing was changed.",
        "Open the consent link again and sign in with a Global Administrator or Privileged Role "
        "Administrator account of your organization."))


def sign_in_invalid() -> Page:
    return Page(400, "This sign-in could not be confirmed", (
        "The sign-in answer was not issued by Microsoft Entra for this link, or it has expired. Nothing "
        "was changed.",
        "Open the consent link again. " + _TRY_AGAIN))


def redirect(location: str) -> func.HttpResponse:
    """A 302 to the next step of the flow (the sign-in), with the pages' privacy headers."""
    headers = {name: value for name, value in _HEADERS.items() if name != "Content-Security-Policy"}
    return func.HttpResponse(status_code=302, headers={**headers, "Location": location})
