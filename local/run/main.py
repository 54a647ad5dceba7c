"""`make run`: the whole product on the local platform.

    make run                 start everything, print where it is, show a live status; Ctrl-C stops it all
    make run ARGS=--once     from empty storage, run one full cycle, print a one-line JSON summary, exit

Exit code of --once is non-zero when the summary lists errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from local.run.cycle import api_get, count_alert_rows, run_cycle
from local.run.demo import CUSTOMERS, LIVE_SCHEDULES, setup_demo
from local.run.live import LiveDemo, start_live_demo, write_state
from local.run.services import REPO_ROOT
from local.run.stack import LocalStack
from shared.settings import SETTINGS

REGISTERED = {s.name for s in SETTINGS}
#: Host instances `make run` starts, as a scaled-out app: each consumes the ingestion queue, the first runs the
#: timers (it holds their locks) and serves the API the banner prints.
INSTANCES = 2

logger = logging.getLogger("local.run")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true", help="run one full cycle, print the summary, exit")
    parser.add_argument("--port", type=int, default=7071, help="local Functions host port (default 7071)")
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / ".local" / "run",
                        help="where logs and the local CA go (default .local/run)")
    parser.add_argument("--status-every", type=float, default=15.0, help="seconds between status lines")
    return parser.parse_args(argv)


def banner(stack: LocalStack, workdir: Path | None = None) -> str:
    assert stack.host is not None
    key, api = stack.host.function_key, f"{stack.host.url}/api"
    helper = ".venv/bin/python -m local.run.try"
    if workdir is not None and workdir.resolve() != (REPO_ROOT / ".local" / "run").resolve():
        helper += f" --workdir {workdir}"
    customer = CUSTOMERS[0].domain
    rule = ('{"name": "Me: every alert", "recipients": ["me@mssp.example"], "mode": "per-alert"}')
    lines = [
        "",
        "MSSP Defender alerts: running locally",
        f"  API base URL        {api}",
        f"  Function key        {key}   (header x-functions-key, or ?code=)",
        f"  Master key          {stack.host.master_key}   (admin API: {stack.host.url}/admin/...)",
        f"  Local cloud         {stack.cloud.url}   (Entra, Graph, Defender; control API at /control)",
        f"  Local cloud CA      {stack.cloud.ca_path}",
        f"  Storage (Azurite)   {stack.azurite.table_url}",
    ]
    for index, other in enumerate(stack.hosts[1:], start=2):
        lines.append(f"  Host instance {index}     {other.url}   (the same app and keys: it consumes the ingestion "
                     "queue too, and takes the timers over if the first instance stops)")
    if stack.maildev is not None:
        lines.append(f"  Mail inbox          {stack.maildev.web_url}   (SMTP on 127.0.0.1:{stack.maildev.smtp_port})")
    lines += [
        f"  Logs                {stack.workdir}",
        "",
        "What happens: ingestion runs every minute and each tick's notification run e-mails the rules' "
        "recipients;",
        "a new alert is raised for a demo customer every minute, e-mailed after the next tick. Watch the inbox.",
        "",
        "Try, in another terminal (from the repo):",
        f"  Tenants             curl -s -H 'x-functions-key: {key}' {api}/tenants",
        f"  SIEM feed           curl -s -H 'x-functions-key: {key}' '{api}/alerts?pageSize=5'",
        f"  Add a rule          curl -s -H 'x-functions-key: {key}' -H 'content-type: application/json' "
        f"-d '{rule}' {api}/notification-rules",
        f"  New alert           curl -s --cacert {stack.cloud.ca_path} -d '{{\"severity\": \"high\"}}' "
        f"{stack.cloud.url}/control/tenants/{customer}/alerts",
        f"  Severity rise       {helper} escalate {customer}",
        f"  Onboard a customer  {helper} onboard 'Tailspin Toys' tailspin.example",
        "                      (signs the webhook, prints the consent link: open it in a browser and accept the",
        "                      warning about the local cloud's own CA, or add --accept to consent by script)",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def _or_unavailable(read: Callable[[], object]) -> str:
    """A status figure, or why it could not be read: one failed read must not end the whole run."""
    try:
        return str(read())
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"


def _tenant_text(stack: LocalStack) -> str:
    tenants = Counter(str(t.get("status")) for t in api_get(stack, "tenants")["value"])
    return ", ".join(f"{n} {s}" for s, n in sorted(tenants.items())) or "none yet"


def _hosts_text(stack: LocalStack) -> str:
    up, total = sum(1 for host in stack.hosts if host.alive), len(stack.hosts)
    if not up:
        return "DOWN"
    if up < total:
        return f"{up} of {total} instances up"
    return "up" if total == 1 else f"up ({total} instances)"


def status_line(stack: LocalStack, live: LiveDemo | None = None) -> str:
    alive = _hosts_text(stack)
    if live is not None:
        mail = _or_unavailable(lambda: live.status_text(live.inbox()))
    else:
        emails = (lambda: len(stack.maildev.messages())) if stack.maildev is not None else (lambda: 0)
        mail = f"e-mails in inbox: {_or_unavailable(emails)}"
    return (f"[{time.strftime('%H:%M:%S')}] host {alive}; tenants: {_or_unavailable(lambda: _tenant_text(stack))}; "
            f"alerts stored: {_or_unavailable(lambda: count_alert_rows(stack))}; {mail}")


def start_demo_stack(workdir: Path, port: int, *, live: bool = True) -> LocalStack:
    """Azurite, MailDev and the local cloud, the demo world in the cloud, then the host with the real app;
    `live` (what `make run` shows) runs ingestion and the ops check every minute (demo.LIVE_SCHEDULES),
    without it the timers keep the product's defaults (`--once`).

    Only registered settings reach the app: what the demo creates for later features (credentials of the
    MSSP's app registrations) flows in once the code that reads it registers it."""
    stack = LocalStack.start(workdir, host_port=port, start_app=False)
    try:
        demo = setup_demo(stack)
        if live:
            demo.update(LIVE_SCHEDULES)
        stack.settings.update({k: v for k, v in demo.items() if k in REGISTERED})
        stack.start_hosts(INSTANCES)
        write_state(stack)
    except BaseException:
        stack.stop()
        raise
    return stack


def run_live(stack: LocalStack, live: LiveDemo, status_every: float) -> None:
    """Until Ctrl-C: a new demo alert when one is due, a status line every `status_every` seconds, and a line
    of its own when the first alert e-mail is in the inbox."""
    next_status = 0.0
    while True:
        try:
            live.raise_if_due()
        except Exception as exc:  # the local cloud is a child process: say so, keep showing the rest
            print(f"  raising a demo alert failed: {type(exc).__name__}: {exc}", flush=True)
        now = time.monotonic()
        if live.first_alert_email is None:
            try:
                live.inbox()
            except Exception:  # noqa: BLE001,S110 - the status line reports the inbox as unavailable
                pass
            if live.first_alert_email is not None:
                first = live.first_alert_email
                to = ", ".join(str(t.get("address")) for t in first.get("to") or [])
                after = live.first_alert_email_after or 0.0
                print(f"[{time.strftime('%H:%M:%S')}] first alert e-mail in the inbox, {after:.0f} s after start: "
                      f"\"{first.get('subject')}\" to {to}", flush=True)
        if now >= next_status:
            print(status_line(stack, live), flush=True)
            next_status = now + status_every
        time.sleep(1.0)


def failed_summary(where: str, message: str) -> dict[str, object]:
    return {"tenants": {}, "alerts_stored": 0, "emails_delivered": 0, "duplicates": 0, "failures": 0,
            "errors": [{"where": where, "message": message}]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # SIGTERM ends the run like Ctrl-C, so every child process is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    stack = None
    started = time.monotonic()
    try:
        try:
            stack = start_demo_stack(args.workdir, args.port, live=not args.once)
            summary = run_cycle(stack) if args.once else None
        except Exception as exc:
            if not args.once:
                raise
            logger.exception("the local platform failed")
            summary = failed_summary("platform", f"{type(exc).__name__}: {exc}")
        if summary is not None:
            print(json.dumps(summary), flush=True)
            return 1 if summary["errors"] else 0
        print(banner(stack, args.workdir), flush=True)
        print("onboarding the demo customers, raising a first new alert and running the first ingestion "
              "tick...", flush=True)
        live = LiveDemo(stack, started=started)
        for error in start_live_demo(stack, live):
            print(f"  {error['where']}: {error['message']}", flush=True)
        run_live(stack, live, args.status_every)
    except KeyboardInterrupt:
        print("stopping...", file=sys.stderr)
        return 0
    finally:
        # A second Ctrl-C while stopping must not leave the remaining services running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())
