"""Alert ingestion: the timer that pulls every tenant's alerts and the SIEM pull API."""

from fetch_alerts.blueprint import bp

__all__ = ["bp"]
