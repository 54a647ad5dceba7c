"""Validators match the whole value: `^...$` with `re.match` also accepts a value followed by a newline, which
would then reach a table key, a header or a URL. Each validator here refuses the valid value plus "\n"."""

from __future__ import annotations

import uuid

import pytest

from fetch_alerts.keys import parse_ticks
from grant_access.consent_state import new_state, well_formed
from shared.settings import Settings, SettingsError
from shared.tenant_lookup import is_domain
from shared.validators import is_email, is_guid

GUID = str(uuid.uuid4())


@pytest.mark.parametrize("check, valid", [
    (is_email, "soc@mssp.example"),
    (well_formed, new_state()),
    (is_domain, "contoso.example"),
    (is_guid, GUID),
], ids=["e-mail", "consent state", "domain", "guid"])
def test_a_valid_value_followed_by_a_newline_is_refused(check, valid):
    assert check(valid)
    assert not check(valid + "\n")
    assert not check(valid + "\r\n")


@pytest.mark.parametrize("name, valid", [
    ("MSSP_APP_CLIENT_ID", GUID), ("MAIL_SENDER", "alerts@mssp.example"), ("INVITATION_TTL", "7d"),
], ids=lambda value: value if value != GUID else "guid")
def test_a_setting_with_a_newline_and_more_after_it_is_refused(name, valid):
    assert Settings({name: valid}).get(name)
    with pytest.raises(SettingsError, match=name):
        Settings({name: valid + "\nx"}).get(name)


def test_an_alert_time_followed_by_a_newline_and_more_is_refused():
    assert parse_ticks("2026-12-06T10:00:00Z") > 0
    with pytest.raises(ValueError):
        parse_ticks("2026-12-06T10:00:00Z\nx")
