"""Onboarding and consent: the webhook, the admin-consent callback and the tenant management API (#3)."""

from grant_access.blueprint import bp

__all__ = ["bp"]
