"""Notifications to the MSSP: the rules API, the notification orchestrator and its activities."""

from notify_mssp.blueprint import bp

__all__ = ["bp"]
