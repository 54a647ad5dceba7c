"""The local Functions host: runs the v2-model app the way the Azure Functions host and Python worker do.

`python -m local.host` (see local/PLATFORM.md) serves HTTP triggers, fires timers, exposes the admin API
and runs Durable Functions (`local.host.durable`). Never deployed; `.funcignore` keeps `local/` out.
"""
