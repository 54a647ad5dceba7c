"""The value checks every flow shares, one rule each: a GUID (tenant ids, client ids, token claims) and an
e-mail address (rule recipients, onboarding contacts, settings).

Both match the whole value: a value followed by a newline must never reach a table key, a header or a URL.
"""

from __future__ import annotations

import re

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# A dot-atom local part and a host name with at least one dot (RFC 5321/5322 without quoted forms or
# address literals, which no MSSP mailbox needs and which pages and headers would have to escape).
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")


def is_guid(value: object) -> bool:
    """A GUID in its 36-character hyphenated form, in either case (callers lower-case it for keys)."""
    return isinstance(value, str) and bool(_GUID.fullmatch(value))


def is_email(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 254 and bool(_EMAIL.fullmatch(value))
