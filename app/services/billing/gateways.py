"""The configured payment gateways, and what their failures mean to a client."""

from __future__ import annotations

from app.container import Container
from app.errors import AppError, ProviderNotConfigured, ServiceUnavailable
from app.integrations.payments.base import PaymentGateway, PaymentGatewayError
from app.models import Provider

NAMES = {Provider.stripe: "Stripe", Provider.razorpay: "Razorpay", Provider.dodo: "Dodo Payments"}


class ProviderError(AppError):
    status_code = 502
    code = "payment_provider_error"
    default_detail = "The payment provider refused the request."


def _configured(ctx: Container, provider: Provider) -> PaymentGateway | None:
    gateways: dict[Provider, PaymentGateway | None] = {
        Provider.stripe: ctx.stripe,
        Provider.razorpay: ctx.razorpay,
        Provider.dodo: ctx.dodo,
    }
    return gateways[provider]


def gateway(ctx: Container, provider: Provider) -> PaymentGateway:
    """The provider's gateway; 503 provider_not_configured when it has no API key."""
    found = _configured(ctx, provider)
    if found is None:
        raise ProviderNotConfigured(f"{NAMES[provider]} is not configured on this server.")
    return found


def webhook_gateway(ctx: Container, provider: Provider) -> PaymentGateway:
    """The provider's gateway, if it can verify webhooks; 503 provider_not_configured otherwise."""
    found = _configured(ctx, provider)
    if found is None or not found.webhooks_enabled:
        setting = f"{provider.value.upper()}_WEBHOOK_SECRET"
        raise ProviderNotConfigured(f"{NAMES[provider]} webhooks are not configured ({setting}).")
    return found


def app_error(exc: PaymentGatewayError) -> AppError:
    """503 for a failure worth retrying (the provider's 5xx, 429, a timeout), 502 for a refusal."""
    if exc.retryable:
        return ServiceUnavailable(f"{exc} Retry shortly.")
    return ProviderError(str(exc))
