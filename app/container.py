"""The process's long-lived collaborators, built once per app from settings. Tests swap members."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from pydantic import SecretStr

from app.compute import Compute
from app.config import Settings
from app.db.session import Database
from app.integrations.alerts import AlertSender, SlackWebhookSender
from app.integrations.clerk import ClerkSessionVerifier
from app.integrations.email import EmailSender, build_email_sender
from app.integrations.google import GoogleOAuthClient
from app.integrations.images.base import BackgroundRemover, ReplicateApi, Vectorizer
from app.integrations.images.clipdrop import ClipDropRemover
from app.integrations.images.local_background import LocalBackgroundRemover
from app.integrations.images.local_vectorizer import LocalVectorizer
from app.integrations.images.replicate import ReplicateClient
from app.integrations.job_queue import JobQueue, build_job_queue
from app.integrations.outbound import public_only_client
from app.integrations.payments.base import PaymentGateway
from app.integrations.payments.dodo import DodoGateway
from app.integrations.payments.razorpay import RazorpayGateway
from app.integrations.payments.stripe import StripeGateway
from app.integrations.rate_limit import RateLimiter
from app.integrations.storage import LocalStorage, S3Storage, Storage, s3_client
from app.integrations.vies import VatNumberChecker, ViesClient
from app.metrics import Metrics, ProviderOutages, ReadinessRecord
from app.security import CallerCache, LocalTokenCodec, PasswordHasher

# What the compute workers run: a palette from a colour, rendered as the answer shows it.
PALETTE_MODULES = ("app.services.design.palettes", "app.schemas.palette_answer")


@dataclass
class Container:
    settings: Settings
    database: Database
    http: httpx.AsyncClient
    # For URLs a provider hands us: public addresses only (app/integrations/outbound.py).
    public_http: httpx.AsyncClient
    passwords: PasswordHasher
    tokens: LocalTokenCodec
    # Credentials verified in the last AUTH_CACHE_SECONDS (app/services/credentials.py `identify`).
    callers: CallerCache
    email: EmailSender
    rate_limiter: RateLimiter
    clerk: ClerkSessionVerifier | None
    google: GoogleOAuthClient | None
    # Payment providers, each behind the PaymentGateway Protocol (None: not configured).
    stripe: PaymentGateway | None
    razorpay: PaymentGateway | None
    dodo: PaymentGateway | None
    storage: Storage
    # The engines' providers, chosen by settings; fakes stand in for them in tests.
    background_remover: BackgroundRemover
    vectorizer: Vectorizer
    replicate: ReplicateApi | None
    # Predictions a job is waiting on, set by Replicate's webhook to end the wait early (this process).
    prediction_signals: dict[str, asyncio.Event] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)
    # Online checks of EU VAT numbers (None: VIES_CHECK_ENABLED is off, format checks only).
    vat_checker: VatNumberChecker | None = None
    # The broker jobs are sent to (JOB_QUEUE=redis|rabbitmq); None: they run in this process.
    job_queue: JobQueue | None = None
    # Operator alerts (None: ALERT_WEBHOOK_URL is not set), what they read that only this process sees
    # (providers' 5xx/timeouts, the housekeeping loop's readiness checks), and the delivery in flight.
    alert_sender: AlertSender | None = None
    provider_outages: ProviderOutages = field(default_factory=ProviderOutages)
    readiness_record: ReadinessRecord = field(default_factory=ReadinessRecord)
    alert_delivery: asyncio.Task[None] | None = None
    # Kinds claimed in memory while the database could not be reached (app/services/alerts.py).
    alerts_sent_here: dict[str, datetime] = field(default_factory=dict)
    # Pure-Python CPU work (palettes) in worker processes, off the event loop (COMPUTE_PROCESSES).
    compute: Compute = field(default_factory=lambda: Compute(0))

    @classmethod
    def build(cls, settings: Settings, database: Database) -> Container:
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(15.0, connect=5.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            headers={"User-Agent": "pixforge/0.1"},
        )
        outages = ProviderOutages()
        metrics = Metrics()
        callers = CallerCache(settings.auth_cache_seconds)
        public_http = public_only_client()
        return cls(
            settings=settings,
            database=database,
            http=http,
            public_http=public_http,
            passwords=PasswordHasher.from_settings(settings),
            tokens=LocalTokenCodec.from_settings(settings),
            callers=callers,
            email=build_email_sender(settings, http),
            rate_limiter=RateLimiter.for_redis_url(settings.redis_url, enabled=settings.rate_limits_enabled),
            clerk=_clerk(settings, http, callers),
            google=_google(settings, http),
            stripe=_stripe(settings),
            razorpay=_razorpay(settings),
            dodo=_dodo(settings),
            storage=_storage(settings),
            background_remover=_background_remover(settings, http, outages, metrics),
            vectorizer=LocalVectorizer(
                max_concurrency=settings.local_engine_concurrency,
                timeout_seconds=settings.vectorize_timeout_seconds,
            ),
            replicate=_replicate(settings, http, outages, public_http),
            vat_checker=_vat_checker(settings, http),
            job_queue=build_job_queue(settings),
            alert_sender=_alert_sender(settings, http),
            provider_outages=outages,
            metrics=metrics,
            compute=Compute(
                settings.compute_processes, preload=PALETTE_MODULES, observe=metrics.observe_compute
            ),
        )

    @property
    def removes_backgrounds_here(self) -> bool:
        """Cut-outs are this process's own work (its model, in its worker processes), not a provider's."""
        return isinstance(self.background_remover, LocalBackgroundRemover)

    async def warm_up(self) -> None:
        """Start the worker processes now rather than on the first requests that need them."""
        await self.compute.warm_up()
        if isinstance(self.background_remover, LocalBackgroundRemover):
            await self.background_remover.warm_up()

    async def aclose(self) -> None:
        if self.alert_delivery is not None:
            self.alert_delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.alert_delivery
        await self.http.aclose()
        await self.public_http.aclose()
        await self.rate_limiter.aclose()
        if self.stripe is not None:
            await self.stripe.aclose()
        if self.dodo is not None:
            await self.dodo.aclose()
        await self.vectorizer.aclose()  # its worker processes
        if isinstance(self.background_remover, LocalBackgroundRemover):
            await self.background_remover.aclose()  # and, if it has them, its own
        await self.compute.aclose()  # and these
        if self.job_queue is not None:
            await asyncio.to_thread(self.job_queue.close)


def _clerk(settings: Settings, http: httpx.AsyncClient, callers: CallerCache) -> ClerkSessionVerifier | None:
    if not settings.clerk_issuer:
        return None
    issuer = settings.clerk_issuer.rstrip("/")
    return ClerkSessionVerifier(
        http,
        jwks_url=settings.clerk_jwks_url or f"{issuer}/.well-known/jwks.json",
        issuer=issuer,
        authorized_parties=settings.clerk_authorized_parties,
        clock_skew_seconds=settings.clerk_clock_skew_seconds,
        min_refresh_seconds=settings.clerk_jwks_min_refresh_seconds,
        on_keys_retired=lambda: callers.forget_via("clerk"),
    )


def _google(settings: Settings, http: httpx.AsyncClient) -> GoogleOAuthClient | None:
    if not settings.google_client_id or not settings.google_client_secret:
        return None
    return GoogleOAuthClient(
        http,
        client_id=settings.google_client_id,
        client_secret=settings.google_client_secret.get_secret_value(),
        auth_url=settings.google_auth_url,
        token_url=settings.google_token_url,
        jwks_url=settings.google_jwks_url,
    )


def _vat_checker(settings: Settings, http: httpx.AsyncClient) -> VatNumberChecker | None:
    if not settings.vies_check_enabled:
        return None
    return ViesClient(http, base_url=settings.vies_base_url, timeout_seconds=settings.vies_timeout_seconds)


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None and value.get_secret_value() else None


def _stripe(settings: Settings) -> StripeGateway | None:
    secret_key = _secret(settings.stripe_secret_key)
    if secret_key is None:
        return None
    return StripeGateway(
        secret_key=secret_key,
        webhook_secret=_secret(settings.stripe_webhook_secret),
        api_base=settings.stripe_api_base,
        automatic_tax=settings.stripe_automatic_tax,
        tax_id_collection=settings.stripe_tax_id_collection,
        max_retries=settings.payment_api_max_retries,
        timeout_seconds=settings.stripe_timeout_seconds,
    )


def _razorpay(settings: Settings) -> RazorpayGateway | None:
    key_secret = _secret(settings.razorpay_key_secret)
    if not settings.razorpay_key_id or key_secret is None:
        return None
    return RazorpayGateway(
        key_id=settings.razorpay_key_id,
        key_secret=key_secret,
        webhook_secret=_secret(settings.razorpay_webhook_secret),
        base_url=settings.razorpay_base_url,
    )


def _dodo(settings: Settings) -> DodoGateway | None:
    api_key = _secret(settings.dodo_api_key)
    if api_key is None:
        return None
    return DodoGateway(
        api_key=api_key,
        webhook_secret=_secret(settings.dodo_webhook_secret),
        base_url=settings.dodo_base_url,
        max_retries=settings.payment_api_max_retries,
    )


def s3_client_for(settings: Settings) -> Any:
    return s3_client(
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=_secret(settings.s3_secret_access_key),
        connect_timeout=settings.s3_connect_timeout_seconds,
        read_timeout=settings.s3_read_timeout_seconds,
        max_attempts=settings.s3_max_attempts,
    )


def _storage(settings: Settings) -> Storage:
    if settings.storage_backend == "s3":
        return S3Storage(bucket=settings.s3_bucket, client=s3_client_for(settings))
    # Its own key, derived from SECRET_KEY: a download signature can never pass for a token signature.
    signing_key = hmac.new(
        settings.secret_key.get_secret_value().encode(), b"pixforge-files", "sha256"
    ).digest()
    return LocalStorage(
        settings.storage_dir, public_base_url=settings.public_base_url, signing_key=signing_key
    )


def _background_remover(
    settings: Settings, http: httpx.AsyncClient, outages: ProviderOutages, metrics: Metrics
) -> BackgroundRemover:
    api_key = _secret(settings.clipdrop_api_key)
    wants_clipdrop = settings.background_removal_provider == "clipdrop" or (
        settings.background_removal_provider == "auto" and api_key is not None
    )
    if wants_clipdrop and api_key is not None:
        return ClipDropRemover(
            http,
            api_key=api_key,
            base_url=settings.clipdrop_base_url,
            timeout_seconds=settings.clipdrop_timeout_seconds,
            outages=outages,
        )
    # Level 1: the PNG goes straight back to the client; encoding time matters more than bytes.
    return LocalBackgroundRemover(
        max_concurrency=settings.local_engine_concurrency,
        png_compress_level=1,
        worker_processes=settings.local_engine_processes,
        observe=metrics.observe_compute,
    )


def _replicate(
    settings: Settings, http: httpx.AsyncClient, outages: ProviderOutages, public_http: httpx.AsyncClient
) -> ReplicateApi | None:
    token = _secret(settings.replicate_api_token)
    if token is None:
        return None
    return ReplicateClient(
        http,
        api_token=token,
        base_url=settings.replicate_base_url,
        webhook_secret=_secret(settings.replicate_webhook_secret),
        timeout_seconds=settings.replicate_timeout_seconds,
        outages=outages,
        download_http=public_http,
    )


def _alert_sender(settings: Settings, http: httpx.AsyncClient) -> AlertSender | None:
    url = _secret(settings.alert_webhook_url)
    if url is None:
        return None
    return SlackWebhookSender(
        http,
        url=url,
        timeout_seconds=settings.alert_timeout_seconds,
        attempts=settings.alert_attempts,
        backoff_seconds=settings.alert_backoff_seconds,
    )
