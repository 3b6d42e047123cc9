"""Moved to app.integrations.payments.stripe; kept until app/container.py imports it from there."""

from app.integrations.payments.stripe import StripeGateway

__all__ = ["StripeGateway"]
