"""Graph `POST /v1.0/users/{id}/sendMail` of the local cloud: validation like Graph, and a mailbox of record.

Every accepted message is kept (ground truth for "nothing lost, nothing sent twice"). Recipients on the
rejection list get a permanent 400, as a real tenant answers for an address it cannot resolve.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[^@\s<>()\[\],;:\".]+$")
_CONTENT_TYPES = {"text", "html"}


class MailError(Exception):
    """A sendMail request Graph would refuse, with the Graph error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _recipients(message: Mapping[str, Any], key: str) -> list[str]:
    value = message.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MailError(400, "ErrorInvalidRequest", f"The '{key}' property must be a collection.")
    addresses = []
    for entry in value:
        email = entry.get("emailAddress") if isinstance(entry, dict) else None
        address = email.get("address") if isinstance(email, dict) else None
        if not isinstance(address, str) or not address:
            raise MailError(400, "ErrorInvalidRecipients",
                            "At least one recipient is not valid., A message can't be sent because it "
                            "contains no recipients.")
        if not _ADDRESS.match(address):
            raise MailError(400, "ErrorInvalidRecipients",
                            f"At least one recipient is not valid., Recipient '{address}' is not resolved. "
                            "All recipients must be resolved before a message can be submitted.")
        addresses.append(address)
    return addresses


@dataclass
class Mailbox:
    """Messages accepted by sendMail, in order, and the addresses a tenant refuses."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    rejected: set[str] = field(default_factory=set)

    def set_rejected(self, addresses: list[str]) -> None:
        self.rejected = {a.lower() for a in addresses}

    def send(self, tenant_id: str, client_id: str, user: str, body: Any, now: dt.datetime) -> dict[str, Any]:
        """Validate a sendMail body and record it; raises MailError as Graph would answer."""
        if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
            raise MailError(400, "ErrorInvalidRequest",
                            "Cannot process input: the request body must contain a 'message' object.")
        message = body["message"]
        subject = message.get("subject", "")
        if not isinstance(subject, str):
            raise MailError(400, "ErrorInvalidRequest", "The 'subject' property must be a string.")
        content = message.get("body") or {}
        if not isinstance(content, dict):
            raise MailError(400, "RequestBodyRead",
                            "Cannot convert the literal to the expected type 'microsoft.graph.itemBody'.")
        content_type = str(content.get("contentType", "text"))
        if content_type.lower() not in _CONTENT_TYPES or not isinstance(content.get("content", ""), str):
            raise MailError(400, "RequestBodyRead",
                            f"Cannot convert the literal '{content_type}' to the expected type "
                            "'microsoft.graph.bodyType'.")
        to = _recipients(message, "toRecipients")
        cc = _recipients(message, "ccRecipients")
        bcc = _recipients(message, "bccRecipients")
        if not (to or cc or bcc):
            raise MailError(400, "ErrorInvalidRecipients",
                            "At least one recipient is not valid., A message can't be sent because it "
                            "contains no recipients.")
        refused = [a for a in to + cc + bcc if a.lower() in self.rejected]
        if refused:
            raise MailError(400, "ErrorInvalidRecipients",
                            f"At least one recipient is not valid., Recipient '{refused[0]}' is not resolved. "
                            "All recipients must be resolved before a message can be submitted.")
        headers = message.get("internetMessageHeaders") or []
        for header in headers:
            name = header.get("name", "") if isinstance(header, dict) else ""
            # Graph only accepts custom x- headers here.
            if not name.lower().startswith("x-"):
                raise MailError(400, "InvalidInternetMessageHeader",
                                f"The internet message header name '{name}' should start with 'x-' or 'X-'.")
        record = {
            "tenantId": tenant_id,
            "clientId": client_id,
            "sender": user,
            "receivedDateTime": now.isoformat().replace("+00:00", "Z"),
            "subject": subject,
            "body": {"contentType": content_type, "content": content.get("content", "")},
            "toRecipients": to,
            "ccRecipients": cc,
            "bccRecipients": bcc,
            "internetMessageHeaders": headers,
            "internetMessageId": message.get("internetMessageId"),
            "saveToSentItems": body.get("saveToSentItems", True),
        }
        self.messages.append(record)
        return record
