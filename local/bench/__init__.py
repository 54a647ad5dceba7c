"""`make bench`: the benchmark scenarios (durable.py, ingest.py, notify.py) and the apps they run
(apps/). `python -m local.bench` runs them (main.py)."""
