"""The send rate cap seen from the receiving side: two instances share a cap of 3 a minute and send to
MailDev as fast as the cap lets them; the times MailDev received the e-mails hold at most 3 in any 60 s.
The fixed-minute cap let 4 through within 41 s. (This test waits out one minute of the cap.)"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from azure.data.tables import TableServiceClient

from notify_mssp.email import EmailMessage
from notify_mssp.ratecap import SendRateCap
from notify_mssp.transports import SmtpTransport
from tests.notify_mssp.test_ratecap import most_in_any_window
from tests.notify_mssp.test_transports import message

CAP = 3


def send_under_the_cap(cap: SendRateCap, transport: SmtpTransport, messages: list[EmailMessage]) -> None:
    """What an instance does, without the run around it: send what the cap grants, look again shortly."""
    pending = list(messages)
    while pending:
        for _ in range(cap.try_acquire(len(pending))):
            assert transport.send(pending.pop(0)).status == "sent"
        if pending:
            time.sleep(0.2)


@pytest.mark.slow
def test_maildev_never_receives_more_than_the_cap_in_any_60_seconds(azurite, maildev):
    table = TableServiceClient.from_connection_string(azurite.connection_string).create_table(
        f"SendRate{uuid.uuid4().hex[:12]}")
    tag = uuid.uuid4().hex[:8]
    addresses = [f"soc-{tag}-{i}@mssp.example" for i in range(CAP + 1)]
    messages = [message(address) for address in addresses]
    instances = [(SendRateCap(table, per_minute=CAP, per_day=0),
                  SmtpTransport("127.0.0.1", maildev.smtp_port, starttls=False, username="", password="", timeout=5))
                 for _ in range(2)]

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda i: send_under_the_cap(*instances[i], messages[i::2]), range(2)))

    received = [datetime.fromisoformat(m["time"].replace("Z", "+00:00")).timestamp() for m in maildev.messages()
                if m["to"][0]["address"] in addresses]
    assert len(received) == CAP + 1
    assert most_in_any_window(received, 60.0) <= CAP
