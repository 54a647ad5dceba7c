"""Onboarding and consent: the webhook, the admin-consent callback and the tenant management API."""

from grant_access.blueprint import bp

__all__ = ["bp"]
