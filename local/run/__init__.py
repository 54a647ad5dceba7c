"""`make run` and what it stands on: starting the local services (services.py) and the whole stack
(stack.py), the demo customers (demo.py, onboarding.py) and notification rules (demo_rules.py), one full
cycle with its summary (cycle.py), and the live demo after start: a new alert every minute and the inbox as
the status line reads it (live.py). Tests start the same services and stacks through these modules.
`python -m local.run` is `make run` (main.py); `python -m local.run.try` (try.py) is what the banner
offers to try next against a running demo."""
