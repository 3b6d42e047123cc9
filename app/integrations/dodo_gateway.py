"""Moved to app.integrations.payments.dodo; kept until app/container.py imports it from there."""

from app.integrations.payments.dodo import DodoGateway

__all__ = ["DodoGateway"]
