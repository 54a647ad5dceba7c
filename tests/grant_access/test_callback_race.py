"""The consent callback's one interleaving that used to corrupt the audit trail, forced step by step.

Two requests of one success URL: the first completes the invitation; the second sees it completed but
reads the tenant before the first has written it, then writes only after the first has finished (tenant
`active`). The second must not take the tenant back to `verifying`. Real tables in Azurite; the two
requests run the real callback code, held at chosen points by events on a registry subclass.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from azure.data.tables import TableServiceClient

from grant_access.callback import CallbackDeps, SignIn, handle_callback
from grant_access.invitations import ACCEPTED, InvitationRequest, InvitationStore
from local.run.services import Azurite
from shared.id_token import SigningKeys
from shared.rules import RuleStore
from shared.tenants import TenantRegistry

WAIT = 30


@dataclass(frozen=True)
class Passed:
    outcome: str = "active"
    message: str = "token, role and alert API call all succeeded"


class FirstRequestRegistry(TenantRegistry):
    """Stops the first request right after it has completed the invitation, until the second has read."""

    def __init__(self, table: Any, claimed: threading.Event, second_read: threading.Event) -> None:
        super().__init__(table)
        self._claimed, self._second_read = claimed, second_read

    def change(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        if not self._claimed.is_set():
            self._claimed.set()
            assert self._second_read.wait(WAIT)
        return super().change(*args, **kwargs)


class SecondRequestRegistry(TenantRegistry):
    """Lets the second request read the tenant, then holds it until the first request has finished."""

    def __init__(self, table: Any, second_read: threading.Event, first_done: threading.Event) -> None:
        super().__init__(table)
        self._second_read, self._first_done = second_read, first_done

    def get(self, tenant_id: str) -> dict[str, Any] | None:
        row = super().get(tenant_id)
        if not self._second_read.is_set():
            self._second_read.set()
            assert self._first_done.wait(WAIT)
        return row


@pytest.fixture
def tables(azurite: Azurite) -> dict[str, Any]:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    suffix = uuid.uuid4().hex[:8]
    out = {}
    for name in ("Invitations", "Tenants", "NotificationRules"):
        out[name] = service.create_table(f"{name}{suffix}")
    return out


# The invitation here names its tenant, so no sign-in is involved.
NO_SIGN_IN = SignIn("https://login.invalid", "00000000-0000-0000-0000-000000000000", "https://app.invalid/cb",
                    SigningKeys("https://login.invalid"))


def test_a_repeat_that_read_before_the_first_request_wrote_never_undoes_its_outcome(tables):
    tenant = str(uuid.uuid4())
    now = datetime.now(UTC)
    invitations = InvitationStore(tables["Invitations"])
    invitation, state = invitations.create(InvitationRequest("Contoso Ltd", "graph", tenant, tenant), now, 3600)
    assert state is not None
    query = urlencode({"admin_consent": "True", "tenant": tenant, "state": state,
                       "scope": "https://graph.microsoft.com/.default"})
    claimed, second_read, first_done = threading.Event(), threading.Event(), threading.Event()

    def deps(registry: TenantRegistry) -> CallbackDeps:
        return CallbackDeps(invitations, registry, RuleStore(tables["NotificationRules"]), lambda _t, _s: Passed(),
                            lambda: datetime.now(UTC), 86400, sign_in=NO_SIGN_IN)

    pages: dict[str, Any] = {}

    def first() -> None:
        try:
            pages["first"] = handle_callback(query, deps(FirstRequestRegistry(tables["Tenants"], claimed,
                                                                              second_read)))
        finally:
            first_done.set()

    def second() -> None:
        pages["second"] = handle_callback(query, deps(SecondRequestRegistry(tables["Tenants"], second_read,
                                                                            first_done)))

    one = threading.Thread(target=first)
    one.start()
    assert claimed.wait(WAIT), "the first request never reached the tenant"
    assert invitations.get(invitation.id).outcome == ACCEPTED
    two = threading.Thread(target=second)
    two.start()
    one.join(WAIT)
    two.join(WAIT)

    registry = TenantRegistry(tables["Tenants"])
    assert registry.get(tenant)["status"] == "active"
    assert [change.to_status for change in registry.history(tenant)] == ["verifying", "active"]
    assert "Access granted" in pages["first"].page.render()
    # The repeat read the tenant before it existed; it answers with what it found once it could write.
    assert "Access granted" in pages["second"].page.render()
    assert [n.status for n in pages["first"].notifications] == ["active"] and not pages["second"].notifications
