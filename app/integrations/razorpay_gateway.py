"""Moved to app.integrations.payments.razorpay; kept until app/container.py imports it from there."""

from app.integrations.payments.razorpay import RazorpayGateway

__all__ = ["RazorpayGateway"]
