"""`make run` and what it stands on: starting the local services (services.py) and the whole stack
(stack.py), the demo customers (demo.py, onboarding.py) and notification rules (demo_rules.py), and one
full cycle with its summary (cycle.py). Tests start the same services and stacks through these modules.
`python -m local.run` is `make run` (main.py)."""
