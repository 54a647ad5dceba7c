"""The e-mails themselves, as MailDev receives them over SMTP: Defender-like content, every untrusted value
escaped (hostile titles, descriptions, names), a plain-text part, a stable Message-ID, digests that state
how many alerts they leave out."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from notify_mssp.email import EmailMessage, Sender, render_alert_email, render_digest_email, severity_rise
from notify_mssp.rules import Rule
from notify_mssp.transports import SmtpTransport

SENDER = Sender("alerts@mssp.example", "MSSP alerts", "https://security.microsoft.com")
HOSTILE_TITLE = '<script>alert("x")</script> & \u202eexe.txt\r\nBcc: victim@evil.example'
HOSTILE_DESCRIPTION = '<img src=x onerror=alert(1)>\n<a href="javascript:alert(1)">click</a>\u0000end'


def recipient() -> str:
    return f"soc-{uuid.uuid4().hex[:12]}@mssp.example"


def rule(**fields: Any) -> Rule:
    return Rule.from_json({"id": uuid.uuid4().hex, "name": "SOC <all>", "recipients": ["soc@mssp.example"], **fields})


def tenant_row(name: str = "Contoso Ltd") -> dict[str, Any]:
    return {"PartitionKey": "tenant", "RowKey": str(uuid.uuid4()), "displayName": name}


def alert_row(tenant: dict[str, Any], **fields: Any) -> dict[str, Any]:
    alert_id = f"da{uuid.uuid4().hex}"
    return {"PartitionKey": tenant["RowKey"], "alertId": alert_id, "title": "Suspicious PowerShell command line",
            "severity": "high", "category": "Execution", "mitreTechniques": json.dumps(["T1059.001", "T1105"]),
            "deviceName": "srv-01.contoso.example", "deviceGroup": "Servers",
            "createdDateTime": "2026-11-27T08:01:02.1234567Z", "description": "PowerShell ran an encoded command.",
            "portalLink": f"https://security.microsoft.com/alerts/{alert_id}?tid={tenant['RowKey']}", **fields}


@pytest.fixture
def smtp(maildev) -> SmtpTransport:
    return SmtpTransport("127.0.0.1", maildev.smtp_port, starttls=False, username="", password="", timeout=10)


def deliver(smtp: SmtpTransport, maildev, message: EmailMessage) -> dict[str, Any]:
    assert smtp.send(message).status == "sent"
    (received,) = [m for m in maildev.messages() if m["to"][0]["address"] == message.to[0]]
    return received


def test_the_alert_email_says_what_defender_says_with_the_tenant_link(smtp, maildev):
    tenant, address = tenant_row(), recipient()
    alert = alert_row(tenant)
    mail = deliver(smtp, maildev, render_alert_email(alert, tenant, rule(), address, message_id="m1", sender=SENDER))
    assert mail["subject"] == "Contoso Ltd: High-severity alert: Suspicious PowerShell command line"
    link = f"https://security.microsoft.com/alerts/{alert['alertId']}?tid={tenant['RowKey']}"
    assert f'href="{link}"' in mail["html"] and link in mail["text"]
    for fact in ("Severity: High", "Organization: Contoso Ltd", "Device: srv-01.contoso.example",
                 "Detected: 2026-11-27 08:01 UTC", "Category: Execution", "MITRE techniques: T1059.001, T1105",
                 "PowerShell ran an encoded command."):
        assert fact in mail["text"]
    assert mail["from"][0] == {"address": "alerts@mssp.example", "name": "MSSP alerts"}


def test_hostile_titles_and_descriptions_are_escaped_in_html_and_never_reach_a_header(smtp, maildev):
    tenant, address = tenant_row('Contoso <b>"Ltd"</b> & Co'), recipient()
    alert = alert_row(tenant, title=HOSTILE_TITLE, description=HOSTILE_DESCRIPTION, deviceName="<i>srv</i>")
    mail = deliver(smtp, maildev, render_alert_email(alert, tenant, rule(), address, message_id="m2", sender=SENDER))
    html = mail["html"]
    for raw in ("<script", "<img", "<a href=\"javascript", "<b>", "<i>", "\u202e", "\x00"):
        assert raw not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "Contoso &lt;b&gt;&quot;Ltd&quot;&lt;/b&gt; &amp; Co" in html
    assert [t["address"] for t in mail["to"]] == [address]
    assert "bcc" not in mail["headers"] and "\n" not in mail["subject"]


FORMAT_CHARS = ["\u202e", "\u202a", "\u202d", "\u2066", "\u2067", "\u2068", "\u2069", "\u200b", "\u200c",
                "\u200d", "\u200e", "\u200f", "\u2060", "\ufeff", "\u00ad", "\u061c"]


def test_invisible_format_characters_are_dropped_from_every_part_of_the_message(smtp, maildev):
    # "Invoice\u202efdp.exe" shows as "Invoiceexe.pdf"; zero-width characters split words a reader compares.
    spoof = "".join(FORMAT_CHARS)
    tenant, address = tenant_row(f"Con\u200btoso{spoof} Ltd"), recipient()
    alert = alert_row(tenant, title=f"Invoice\u202efdp.exe opened by pay\u200bpal{spoof}",
                      description=f"Ran \u2066cmd\u2069 from\u00adhost{spoof}\nsecond\ufeff line",
                      deviceName=f"srv\u200d-01{spoof}", deviceGroup="\u202dServers", category="Exec\u200bution",
                      mitreTechniques=json.dumps([f"T1059\u200b.001{spoof}"]))
    mail = deliver(smtp, maildev, render_alert_email(alert, tenant, rule(), address, message_id="m-cf", sender=SENDER))
    for part in ("subject", "html", "text"):
        assert not [c for c in mail[part] if c in FORMAT_CHARS], part
    assert mail["subject"] == "Contoso Ltd: High-severity alert: Invoicefdp.exe opened by paypal"
    for fact in ("Organization: Contoso Ltd", "Device: srv-01", "Device group: Servers", "Category: Execution",
                 "MITRE techniques: T1059.001", "Ran cmd fromhost", "second line"):
        assert fact in mail["text"]

    digest = render_digest_email([(tenant, alert)], rule(mode="digest"), recipient(), total=1, message_id="d-cf",
                                 sender=SENDER)
    received = deliver(smtp, maildev, digest)
    for part in ("subject", "html", "text"):
        assert not [c for c in received[part] if c in FORMAT_CHARS], part
    assert "Invoicefdp.exe opened by paypal | Contoso Ltd | srv-01" in received["text"]


def test_a_severity_rise_email_escapes_and_cleans_like_any_other(smtp, maildev):
    tenant, address = tenant_row('Contoso <b>"Ltd"</b>'), recipient()
    alert = alert_row(tenant, title=HOSTILE_TITLE, description=HOSTILE_DESCRIPTION)
    rise = severity_rise({"reason": "severity-High", "previousSeverity": "low",
                          "riseSeenAt": "2026-11-27T09:15:00+00:00"})
    mail = deliver(smtp, maildev, render_alert_email(alert, tenant, rule(), address, message_id="m-rise",
                                                     sender=SENDER, rise=rise))
    assert mail["subject"].startswith('Contoso <b>"Ltd"</b>: Severity rose from Low to High: <script>')
    assert "\u202e" not in mail["subject"] and "\n" not in mail["subject"] and "bcc" not in mail["headers"]
    for raw in ("<script", "<img", "<b>", "\u202e"):
        assert raw not in mail["html"]
    assert "Severity change: rose from Low to High" in mail["text"]


def test_the_rule_options_leave_out_organisation_device_and_tenant_id(smtp, maildev):
    tenant, address = tenant_row(), recipient()
    alert = alert_row(tenant)
    quiet = rule(includeOrganizationName=False, includeDeviceInformation=False, includeTenantLink=False)
    mail = deliver(smtp, maildev, render_alert_email(alert, tenant, quiet, address, message_id="m3", sender=SENDER))
    assert "Contoso" not in mail["subject"] + mail["text"] + mail["html"]
    assert "srv-01" not in mail["text"] + mail["html"] and "?tid=" not in mail["text"] + mail["html"]
    assert f"https://security.microsoft.com/alerts/{alert['alertId']}" in mail["text"]


def test_every_email_has_a_plain_text_part_and_html_that_loads_nothing(smtp, maildev):
    tenant, address = tenant_row(), recipient()
    mail = deliver(smtp, maildev, render_alert_email(alert_row(tenant), tenant, rule(), address, message_id="m4",
                                                     sender=SENDER))
    assert mail["text"].strip() and mail["html"].strip()
    assert "<img" not in mail["html"] and "<link" not in mail["html"] and "<style" not in mail["html"]
    assert "src=" not in mail["html"]


def test_the_message_id_is_stable_for_the_same_delivery_key():
    tenant = tenant_row()
    alert, r = alert_row(tenant), rule()
    key = f"alert|{tenant['RowKey']}|{alert['alertId']}|{r.id}|soc@mssp.example"
    first = render_alert_email(alert, tenant, r, "soc@mssp.example", message_id=key, sender=SENDER)
    again = render_alert_email(alert, tenant, r, "soc@mssp.example", message_id=key, sender=SENDER)
    other = render_alert_email(alert, tenant, r, "soc@mssp.example", message_id=key + "x", sender=SENDER)
    assert first.message_id == again.message_id != other.message_id
    assert first.message_id.startswith("<") and first.message_id.endswith("@mssp.example>")


def test_the_message_id_reaches_the_inbox(smtp, maildev):
    tenant, address = tenant_row(), recipient()
    message = render_alert_email(alert_row(tenant), tenant, rule(), address, message_id="stable-id-1", sender=SENDER)
    mail = deliver(smtp, maildev, message)
    assert mail["headers"]["message-id"] == "<stable-id-1@mssp.example>"


def test_a_digest_lists_alerts_of_several_tenants_and_counts_the_rest(smtp, maildev):
    first, second = tenant_row("Contoso Ltd"), tenant_row("Fabrikam, Inc.")
    items = [(first, alert_row(first, title="Alert one")), (second, alert_row(second, title=HOSTILE_TITLE))]
    address = recipient()
    message = render_digest_email(items, rule(mode="digest"), address, total=7, message_id="run|rule|to",
                                  sender=SENDER)
    mail = deliver(smtp, maildev, message)
    assert mail["subject"] == "Alert digest: 7 new alerts in 2 customer tenants"
    assert "and 5 more matching alerts not listed here." in mail["text"]
    assert "Contoso Ltd" in mail["text"] and "Fabrikam, Inc." in mail["text"]
    assert f"?tid={second['RowKey']}" in mail["html"] and "<script" not in mail["html"]


def test_an_email_message_crosses_the_durable_boundary_as_json():
    tenant = tenant_row()
    message = render_alert_email(alert_row(tenant), tenant, rule(), "soc@mssp.example", message_id="j", sender=SENDER)
    assert EmailMessage.from_json(json.loads(json.dumps(message.to_json()))) == message
