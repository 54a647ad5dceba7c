"""Durable Functions for the local host: orchestrations replayed through the SDK's own handle, activities
on a bounded pool, timers, sub-orchestrations, the management API the SDK's client calls, and the fault
plan of the crash tests. The host (`local.host`) constructs `DurableEngine` and mounts its routes.
"""

from local.host.durable.engine import DurableEngine, DurableError
from local.host.durable.instances import RuntimeStatus

__all__ = ["DurableEngine", "DurableError", "RuntimeStatus"]
