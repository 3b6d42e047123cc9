"""Every knob of the service, read once from the environment (and `.env`)."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Values that ship in `.env.example` and in this file: acceptable on a laptop, never in production.
INSECURE_SECRET_VALUES = frozenset({"", "changethis", "change-me", "secret", "development-only-secret"})


class Environment(StrEnum):
    development = "development"
    testing = "testing"
    production = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=False,
        extra="ignore",
        case_sensitive=False,
    )

    # --- runtime -----------------------------------------------------------------------------------
    environment: Environment = Environment.development
    app_name: str = "Pixforge"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    data_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "console", "json"] = "auto"
    # Requests larger than this are refused with 413 before the body is read in full.
    # The default is the largest upload plus room for the multipart envelope, so an oversize upload is
    # refused while it streams in, before it is read whole.
    max_request_body_bytes: int = Field(default=10 * 1024 * 1024 + 256 * 1024, ge=1024)
    # Requests a process runs at once; the others wait their turn in arrival order (app/admission.py).
    # 0: no limit. Past MAX_QUEUED_REQUESTS waiting, a request is answered 503 `overloaded` at once.
    # 8 (bench.images, a 512 px cut-out while 64 clients read credits: +70% over raw onnxruntime at 16,
    # +45% at 8, +35% at 4; bench.hot_path's reads the same from 4 to 16). Fewer leaves little room for
    # requests waiting on an outside service, which hold their slot for up to the lease.
    max_active_requests: int = Field(default=8, ge=0)
    max_queued_requests: int = Field(default=4096, ge=0)
    # A request still unanswered after this long runs on without its slot (it is waiting on something
    # outside: a model, a provider, its client's upload).
    admission_lease_seconds: float = Field(default=1.0, gt=0)
    # Requests that start image work in this process (cut-outs on the local engine, vectorizing; none with
    # a job queue) wait in a lane served first, up to half the slots while others wait; false: one line.
    admission_image_work_first: bool = True
    # While such a request runs, the others run at most this many at once; 0: no limit but the gate's.
    # bench.images, a 512 px cut-out while 64 clients read credits, over raw onnxruntime: +27% with no
    # limit, +20% at 2, +18% at 1 (README, "Overload queues").
    max_active_beside_image_work: int = Field(default=2, ge=0)
    # Worker processes for pure-Python CPU work (a palette's colour science), so that it runs on another
    # core instead of stopping the event loop (app/compute.py). 0: on the event loop.
    compute_processes: int = Field(default=1, ge=0)
    # Browser origins allowed to call the API with credentials (exact origins, comma separated).
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:3000", "http://localhost:5173"]
    )
    docs_enabled: bool = True
    # GET /metrics (Prometheus). With METRICS_TOKEN set it asks for `Authorization: Bearer <token>`;
    # without one it is open, for a scraper on a private network: keep it off the public proxy.
    metrics_enabled: bool = True
    metrics_token: SecretStr | None = None
    # Seconds between housekeeping rounds (due emails, expired token rows).
    maintenance_interval_seconds: float = Field(default=30.0, gt=0)

    # --- error tracking ------------------------------------------------------------------------------
    # SENTRY_DSN turns on Sentry (scrubbed: no bodies, cookies, credentials or emails); the share of
    # errors sent, and of requests traced (0: no performance tracing).
    sentry_dsn: SecretStr | None = None
    sentry_sample_rate: float = Field(default=1.0, ge=0, le=1)
    sentry_traces_sample_rate: float = Field(default=0.0, ge=0, le=1)

    # --- alerts ------------------------------------------------------------------------------------
    # ALERT_WEBHOOK_URL (a Slack-compatible incoming webhook) turns alerts on. Each kind is sent at most
    # once per ALERT_WINDOW_SECONDS across all processes; each delivery attempt waits at most
    # ALERT_TIMEOUT_SECONDS, ALERT_ATTEMPTS times, ALERT_BACKOFF_SECONDS apart (doubling). A kind fires
    # when: a webhook event has stayed failed ALERT_WEBHOOK_FAILED_MINUTES; at least
    # ALERT_JOB_FAILURE_MIN_JOBS jobs ended in the last ALERT_RECENT_MINUTES and at least
    # ALERT_JOB_FAILURE_RATE of them failed; ALERT_REFUNDS_PER_HOUR refunds or disputes arrived in the
    # last hour; a provider answered ALERT_PROVIDER_ERRORS 5xx/timeouts in the last ALERT_RECENT_MINUTES
    # (in one process); readiness has failed for ALERT_READYZ_FAILING_SECONDS. 0 turns a kind off.
    alert_webhook_url: SecretStr | None = None
    alert_window_seconds: int = Field(default=3600, ge=1)
    alert_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    alert_attempts: int = Field(default=3, ge=1, le=10)
    alert_backoff_seconds: float = Field(default=1.0, ge=0, le=60)
    alert_webhook_failed_minutes: int = Field(default=15, ge=0)
    alert_recent_minutes: int = Field(default=15, ge=1)
    alert_job_failure_rate: float = Field(default=0.5, ge=0, le=1)
    alert_job_failure_min_jobs: int = Field(default=10, ge=1)
    alert_refunds_per_hour: int = Field(default=5, ge=0)
    alert_provider_errors: int = Field(default=5, ge=0)
    alert_readyz_failing_seconds: int = Field(default=120, ge=0)

    # --- backups (`pixforge backup` / `restore`) -------------------------------------------------
    # Where backups go: "dir" (BACKUP_DIR, default `<data_dir>/backups`) or "s3" (the S3 bucket under
    # BACKUP_S3_PREFIX). The newest BACKUP_KEEP stay. With BACKUP_SCHEDULE_ENABLED the API process takes
    # one every BACKUP_INTERVAL_HOURS; BACKUP_INCLUDE_STORAGE adds the local storage tree.
    backup_destination: Literal["dir", "s3"] = "dir"
    backup_dir: Path | None = None
    backup_s3_prefix: str = "backups/"
    backup_keep: int = Field(default=30, ge=1)
    backup_include_storage: bool = True
    backup_schedule_enabled: bool = False
    backup_interval_hours: float = Field(default=24.0, gt=0)

    # --- database ----------------------------------------------------------------------------------
    # Empty means the embedded SQLite file `<data_dir>/pixforge.db`.
    database_url: str = ""
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    # How long a request queues for a pooled connection before it is answered 503: the queue limit that
    # turns overload into latency, not errors (256 clients on a 30-connection pool wait their turn).
    db_pool_timeout_seconds: float = Field(default=30.0, gt=0)
    # A round trip before every checkout. Off: a connection the server dropped fails its statement, which
    # invalidates the whole pool at once, so one request per restart sees the 503 instead of none.
    db_pool_pre_ping: bool = False
    db_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    db_statement_timeout_seconds: float = Field(default=15.0, gt=0)
    db_echo: bool = False

    # --- secrets -----------------------------------------------------------------------------------
    secret_key: SecretStr = SecretStr("changethis")

    # --- identity --------------------------------------------------------------------------------
    # Public URL of this API (links in emails point at it) and of the frontend (where browsers land).
    public_base_url: str = "http://127.0.0.1:8000"
    frontend_url: str = "http://localhost:5173"
    access_token_ttl_seconds: int = Field(default=600, ge=30)
    # A credential verified within this many seconds is not looked up again by this process: every
    # request of a busy client would otherwise read its token's revocation and its account. The bound
    # of the promise "a token revoked at logout, a banned or erased account, is refused by every process
    # within one second"; this process forgets at once what it revokes itself. 0 turns it off.
    auth_cache_seconds: float = Field(default=1.0, ge=0, le=1.0)
    refresh_token_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=300)
    email_verification_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    password_reset_ttl_seconds: int = Field(default=3600, ge=60)
    # Argon2id cost for new password hashes (OWASP's minimum is 19 MiB, 2 passes).
    password_hash_memory_kib: int = Field(default=65536, ge=1024)
    password_hash_time_cost: int = Field(default=3, ge=1)
    # Also set httpOnly cookies on login/refresh (SPA on the same site); the CSRF cookie guards them.
    auth_cookies_enabled: bool = False
    auth_cookie_domain: str | None = None
    # Credits every new account receives once.
    signup_bonus_credits: Decimal = Field(default=Decimal(10), ge=0, decimal_places=3)
    # Clerk session tokens: `azp` values accepted (empty: azp not checked), and clock skew.
    clerk_authorized_parties: Annotated[list[str], NoDecode] = Field(default_factory=list)
    clerk_clock_skew_seconds: int = Field(default=5, ge=0, le=60)
    # An unknown `kid` refetches the JWKS at most this often.
    clerk_jwks_min_refresh_seconds: float = Field(default=30.0, ge=0)
    # Where Google sends the browser back, and where we send it after sign-in.
    google_redirect_uri: str | None = None
    google_login_success_url: str | None = None

    # --- emailed codes, cookie sessions, refresh grace ---------------------------------------------
    # A 6-digit sign-in/sign-up code lives this long and dies after this many wrong tries.
    login_code_ttl_seconds: int = Field(default=600, ge=60, le=3600)
    login_code_max_attempts: int = Field(default=5, ge=1, le=20)
    # Asking for a code, per caller address and per email address; verifying or checking one, per
    # caller address (each challenge also has its own attempt limit).
    rate_limit_code_request_per_ip: str = "10/hour"
    rate_limit_code_request_per_account: str = "5/hour"
    rate_limit_code_verify_per_ip: str = "30/hour"
    # A refresh token presented again this many seconds after it was rotated still yields a new pair in
    # its family (two tabs refreshing at once); later, it revokes the whole family as a stolen token.
    refresh_reuse_grace_seconds: int = Field(default=10, ge=0, le=60)

    # --- billing -----------------------------------------------------------------------------------
    # Where providers send the browser after checkout (default FRONTEND_URL/billing/success|cancel).
    checkout_success_url: str | None = None
    checkout_cancel_url: str | None = None
    # USD prices of the plans in cents, "code=cents,..." (e.g. "basic=699,premium=1299"); applied to the
    # catalogue at startup over the seeded defaults.
    plan_prices_usd: str = ""
    # Stripe Tax: compute tax automatically, and collect customers' tax ids (EU VAT) at checkout.
    stripe_automatic_tax: bool = False
    stripe_tax_id_collection: bool = False
    # Dodo charges its products' own prices, in this currency (plans are offered through Dodo in it only).
    dodo_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    # Dodo: a pay-what-you-want product for buying any number of credits, its price per credit and bounds.
    dodo_credits_product_id: str | None = None
    dodo_price_per_credit_cents: int = Field(default=5, ge=1)
    dodo_min_custom_credits: int = Field(default=10, ge=1)
    dodo_max_custom_credits: int = Field(default=100_000, ge=1)
    # Retries of a provider API call (Stripe, Dodo SDKs) on connection errors, 409, 429 and 5xx.
    payment_api_max_retries: int = Field(default=2, ge=0, le=5)
    # Seconds per call to the Stripe API. Some calls run inside a webhook's transaction (finding a
    # refunded renewal's invoice): the SDK's own 80 s would hold that transaction, and SQLite's lock.
    stripe_timeout_seconds: float = Field(default=20.0, gt=0)
    # How long a response to a request with an Idempotency-Key is kept for replay.
    idempotency_key_ttl_seconds: int = Field(default=24 * 3600, ge=60)

    # --- tax invoices and VAT ----------------------------------------------------------------------
    # The seller printed on every tax invoice (copied onto it at issue). The address takes "\n" or ";"
    # between lines; the country is ISO 3166 alpha-2 (it decides the reverse charge, see README).
    invoice_seller_name: str = Field(default="Pixforge", min_length=1, max_length=200)
    invoice_seller_address: str = Field(default="", max_length=500)
    invoice_seller_vat_id: str | None = Field(default=None, max_length=32)
    invoice_seller_country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    # VAT rates by buyer country, "CC=percent,..." (e.g. "DE=19,FR=20,IE=23"): used when the provider did
    # not report the tax (Stripe Tax does); a country not listed pays no VAT. Prices already include it.
    vat_rates: Annotated[dict[str, Decimal], NoDecode] = Field(default_factory=dict)
    # Check buyers' EU VAT numbers online with VIES when they save them (off: format check only).
    vies_check_enabled: bool = False
    vies_base_url: str = "https://ec.europa.eu/taxation_customs/vies/rest-api"
    vies_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # A TrueType font for the invoice PDF (any script in names and addresses; the image installs
    # fonts-dejavu-core). Missing or empty: the PDF's built-in Helvetica, Latin-1 text only.
    invoice_font_path: str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"

    @field_validator("invoice_seller_country", "invoice_seller_vat_id", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().upper() or None
        return value

    @field_validator("vat_rates", mode="before")
    @classmethod
    def _parse_vat_rates(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        rates: dict[str, Decimal] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            country, sep, rate = (text.strip() for text in item.partition("="))
            if not sep or len(country) != 2 or not country.isalpha():
                raise ValueError(f"VAT rate {item!r}: expected CC=percent (e.g. DE=19)")
            try:
                rates[country.upper()] = Decimal(rate)
            except ArithmeticError:
                raise ValueError(f"VAT rate {item!r}: the rate is no number") from None
        return rates

    @field_validator("vat_rates")
    @classmethod
    def _vat_rates_in_range(cls, rates: dict[str, Decimal]) -> dict[str, Decimal]:
        normalized = {country.upper(): rate for country, rate in rates.items()}
        if any(not rate.is_finite() or not Decimal(0) <= rate < Decimal(100) for rate in normalized.values()):
            raise ValueError("a VAT rate is a percentage from 0 up to 100")
        if any(rate != rate.quantize(Decimal("0.01")) for rate in normalized.values()):
            raise ValueError("a VAT rate has at most 2 decimal places")
        return normalized

    # --- images and AI jobs --------------------------------------------------------------------------
    # Where files live: "local" (DATA_DIR/storage, served by the API through signed URLs) or "s3".
    storage_backend: Literal["local", "s3"] = "local"
    s3_bucket: str = "pixforge"
    s3_region: str = "us-east-1"
    # A stalled or unreachable store fails fast instead of holding a job for minutes.
    s3_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    s3_read_timeout_seconds: float = Field(default=30.0, gt=0)
    s3_max_attempts: int = Field(default=3, ge=1, le=10)
    # Lifetime of the download URLs handed to clients.
    signed_url_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    upload_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Images larger than this many pixels are refused from their header, before decoding.
    upload_max_pixels: int = Field(default=25_000_000, ge=10_000)
    # "auto": ClipDrop when CLIPDROP_API_KEY is set, else the local u2netp model.
    background_removal_provider: Literal["auto", "local", "clipdrop"] = "auto"
    # Credits per job (up to 3 decimals).
    remove_background_cost_credits: Decimal = Field(default=Decimal(1), ge=0, decimal_places=3)
    vectorize_preview_cost_credits: Decimal = Field(default=Decimal("0.2"), ge=0, decimal_places=3)
    vectorize_full_cost_credits: Decimal = Field(default=Decimal(1), ge=0, decimal_places=3)
    # Local engines: how many inferences run at once.
    local_engine_concurrency: int = Field(default=2, ge=1, le=32)
    # Local background removal in that many worker processes (its image work holds the GIL in many short
    # stretches, which a busy event loop would make wait); false: in worker threads of the server.
    local_engine_processes: bool = True
    # A local vectorization running longer than this is stopped (its worker killed) and the job fails
    # as `image_too_complex`, uncharged.
    vectorize_timeout_seconds: float = Field(default=60.0, gt=0)
    # Provider timeouts/5xx are retried with exponential backoff up to this many attempts in all.
    job_max_attempts: int = Field(default=3, ge=1, le=10)
    job_retry_base_seconds: float = Field(default=1.0, ge=0)
    # A job PROCESSING longer than this is presumed abandoned and recovered (re-run or failed).
    job_lease_seconds: int = Field(default=600, ge=10)
    # Where jobs run: "inline" in the API process that accepted them (after its commit), or "redis" /
    # "rabbitmq": sent (ids only) to Dramatiq workers (`pixforge worker`) through that broker.
    job_queue: Literal["inline", "redis", "rabbitmq"] = "inline"
    # The Redis queue's broker; REDIS_URL when unset.
    job_queue_redis_url: str | None = None
    rabbitmq_url: str | None = None
    job_queue_name: str = Field(default="pixforge-jobs", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Redis only: a worker silent this long is presumed dead and its unacknowledged messages are
    # delivered again; the check runs on JOB_QUEUE_MAINTENANCE_CHANCE broker calls in a million.
    job_queue_heartbeat_timeout_seconds: float = Field(default=60.0, ge=1)
    job_queue_maintenance_chance: int = Field(default=1000, ge=1, le=1_000_000)
    # A request that waits for a queued job (remove-background without ?async) gives up after this
    # long: the job is cancelled, uncharged, and the request answered 503.
    job_wait_timeout_seconds: float = Field(default=120.0, gt=0)
    # Hairstyle generation on Replicate: the model, credits per generated view, polling and limits.
    replicate_model: str = "bytedance/seedream-4"
    generate_cost_credits: Decimal = Field(default=Decimal(1), ge=0, decimal_places=3)
    replicate_poll_interval_seconds: float = Field(default=2.0, gt=0)
    replicate_prediction_timeout_seconds: float = Field(default=300.0, gt=0)
    replicate_timeout_seconds: float = Field(default=30.0, gt=0)
    replicate_download_max_bytes: int = Field(default=30_000_000, ge=1024)
    clipdrop_timeout_seconds: float = Field(default=60.0, gt=0)
    rate_limit_generate_per_user: str = "5/minute"
    # Hours before images of each kind (and plain uploads) are deleted; 0 keeps them.
    retention_hours_uploads: int = Field(default=0, ge=0)
    retention_hours_remove_background: int = Field(default=0, ge=0)
    retention_hours_vectorize: int = Field(default=0, ge=0)
    retention_hours_generate: int = Field(default=0, ge=0)
    # Days the audit trail is kept (the housekeeping sweep deletes older rows); 0 keeps it forever.
    audit_log_retention_days: int = Field(default=365, ge=0)

    # --- readiness: webhook events that failed ----------------------------------------------------
    # /readyz answers 503 when at least READYZ_FAILED_WEBHOOK_COUNT stored webhook events have stayed
    # failed longer than READYZ_FAILED_WEBHOOK_AGE_SECONDS (money that did not arrive: replay them with
    # POST /api/v1/admin/webhooks/{id}/replay). A count of 0 turns the check off.
    readyz_failed_webhook_age_seconds: int = Field(default=3600, ge=0)
    readyz_failed_webhook_count: int = Field(default=1, ge=0)

    # --- analytics and reports (admin) -----------------------------------------------------------
    # The most buckets one analytics summary may hold (400: a year and a bit of days).
    analytics_max_buckets: int = Field(default=400, ge=1, le=10_000)
    # The longest period one report may cover; CSV, JSON lines and XLSX stream whatever it holds.
    reports_max_range_days: int = Field(default=3660, ge=1)
    # A PDF is a document to read, not an export: it lists at most this many rows (totals cover all).
    reports_pdf_max_rows: int = Field(default=2000, ge=1, le=100_000)

    # --- rate limits ("N/second|minute|hour|day"); storage is REDIS_URL when set, else memory ---------
    rate_limits_enabled: bool = True
    rate_limit_login_per_ip: str = "20/minute"
    rate_limit_login_per_account: str = "5/minute"
    rate_limit_register_per_ip: str = "10/hour"
    rate_limit_password_forgot_per_ip: str = "10/hour"
    rate_limit_password_forgot_per_account: str = "3/hour"
    rate_limit_verification_per_ip: str = "20/hour"
    rate_limit_verification_per_account: str = "5/hour"

    # --- email -------------------------------------------------------------------------------------
    # Who sends transactional mail: "console" logs recipient and subject only (never the body),
    # "smtp" speaks to SMTP_HOST, "brevo" calls Brevo's API with BREVO_API_KEY.
    email_provider: Literal["console", "smtp", "brevo"] = "console"
    email_from_address: str = "no-reply@pixforge.local"
    email_from_name: str = "Pixforge"
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # STARTTLS after connecting (port 587); SMTP_USE_SSL opens TLS from the start (port 465) instead.
    smtp_starttls: bool = True
    smtp_use_ssl: bool = False
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    brevo_timeout_seconds: float = Field(default=10.0, gt=0)

    # --- outside services (every base URL is a setting so tests and proxies can point elsewhere) ----
    redis_url: str | None = None
    clipdrop_base_url: str = "https://clipdrop-api.co"
    clipdrop_api_key: SecretStr | None = None
    replicate_base_url: str = "https://api.replicate.com"
    replicate_api_token: SecretStr | None = None
    replicate_webhook_secret: SecretStr | None = None
    stripe_api_base: str = "https://api.stripe.com"
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    razorpay_base_url: str = "https://api.razorpay.com"
    razorpay_key_id: str | None = None
    razorpay_key_secret: SecretStr | None = None
    razorpay_webhook_secret: SecretStr | None = None
    dodo_base_url: str = "https://test.dodopayments.com"
    dodo_api_key: SecretStr | None = None
    dodo_webhook_secret: SecretStr | None = None
    clerk_issuer: str | None = None
    clerk_jwks_url: str | None = None
    clerk_webhook_secret: SecretStr | None = None
    google_auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_url: str = "https://oauth2.googleapis.com/token"
    google_jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    brevo_base_url: str = "https://api.brevo.com"
    brevo_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com"
    openai_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    anthropic_api_key: SecretStr | None = None
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None

    # --- AI clones ----------------------------------------------------------------------------------
    # Photos per POST /photos request, photos a user's set may hold, the largest photo (bytes; the
    # smaller of this and UPLOAD_MAX_BYTES applies) and its longest side after storing (larger ones are
    # scaled down).
    clone_photos_max_per_request: int = Field(default=10, ge=1, le=100)
    clone_photos_max_per_user: int = Field(default=50, ge=1)
    clone_photo_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    clone_photo_max_side: int = Field(default=2048, ge=256)
    # Personal model training (POST /models) on Replicate: credits it costs (held at the start, kept
    # only if it succeeds), how many of the user's photos it takes, and the most bytes they may add up to
    # (the zip handed to Replicate's Files API).
    clone_training_cost_credits: Decimal = Field(default=Decimal(5), ge=0, decimal_places=3)
    clone_training_min_photos: int = Field(default=5, ge=1)
    clone_training_max_photos: int = Field(default=50, ge=1)
    clone_training_max_zip_bytes: int = Field(default=100_000_000, ge=1024)
    # The Replicate account that owns the trained models (empty: training is not configured, 503), the
    # trainer (owner/name:<64-hex version>), and how a user's destination model is created (one per user,
    # named <prefix>-<user id>; visibility and hardware SKU of POST /v1/models).
    clone_replicate_owner: str = ""
    clone_trainer_version: str = Field(
        default="ostris/flux-dev-lora-trainer:"
        "26dce37af90b9d997eeb970d92e47de3064d46c300504ae376c75bef6a9022d2",
        pattern=r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*:[0-9a-f]{64}$",
    )
    clone_model_name_prefix: str = Field(default="pixforge-clone", pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")
    clone_model_visibility: Literal["private", "public"] = "private"
    clone_model_hardware: str = Field(default="gpu-t4", min_length=1, max_length=50)
    # Training steps when the request names none, and the most a request may ask for.
    clone_training_default_steps: int = Field(default=1000, ge=3, le=6000)
    clone_training_max_steps: int = Field(default=4000, ge=3, le=6000)
    # A training the webhook has not ended is polled once it is this old (the webhook may be lost), and
    # cancelled (failed, credits released) past the timeout.
    clone_training_poll_after_seconds: float = Field(default=300.0, ge=0)
    clone_training_timeout_seconds: float = Field(default=4 * 3600.0, gt=0)
    # Prompt enhancement (POST /prompts/enhance, through the LLM above): seconds per attempt, the most
    # tokens of one answer, and the most characters of the enhanced prompt kept (cut past it).
    prompt_enhance_timeout_seconds: float = Field(default=20.0, gt=0, le=120)
    prompt_enhance_max_output_tokens: int = Field(default=400, ge=64, le=4096)
    prompt_enhance_output_max_chars: int = Field(default=1500, ge=100, le=10_000)
    # Plan quotas, as plan=number pairs (comma separated; "unlimited" for no bound; a plan not listed gets
    # the `free` entry, which must be present): personal models a plan may ever train, and image
    # generations it may start per UTC day.
    clone_model_quotas: Annotated[dict[str, int | None], NoDecode] = Field(
        default_factory=lambda: {"free": 5, "pro": None}
    )
    clone_generation_daily_quotas: Annotated[dict[str, int | None], NoDecode] = Field(
        default_factory=lambda: dict[str, int | None]({"free": 20, "pro": 100})
    )

    # The most images one generation may ask for, per plan (same pairs; "unlimited": up to
    # GENERATION_MAX_OUTPUTS): "pro: larger outputs". Past it the answer is 403 plan_required.
    clone_generation_max_outputs: Annotated[dict[str, int | None], NoDecode] = Field(
        default_factory=lambda: dict[str, int | None]({"free": 1, "pro": None})
    )

    @field_validator(
        "clone_model_quotas", "clone_generation_daily_quotas", "clone_generation_max_outputs", mode="before"
    )
    @classmethod
    def _parse_quotas(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        quotas: dict[str, int | None] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            plan, sep, amount = (text.strip() for text in item.partition("="))
            if not sep or not plan:
                raise ValueError(f"quota {item!r}: expected plan=number or plan=unlimited")
            quotas[plan.lower()] = None if amount.lower() == "unlimited" else int(amount)
        return quotas

    @field_validator("clone_model_quotas", "clone_generation_daily_quotas", "clone_generation_max_outputs")
    @classmethod
    def _free_quota_present(cls, quotas: dict[str, int | None]) -> dict[str, int | None]:
        if "free" not in quotas:
            raise ValueError("the quotas must name the `free` plan (the default of unlisted plans)")
        if any(amount is not None and amount < 0 for amount in quotas.values()):
            raise ValueError("a quota is a number >= 0 or `unlimited`")
        return quotas

    # --- text to image (POST /generations) -------------------------------------------------------------
    # The model run without a personal model (an official model: owner/name, or owner/name:<version>).
    text_to_image_model: str = Field(default="black-forest-labs/flux-schnell", min_length=3, max_length=255)
    # Credits per output image (num_outputs of them are reserved; captured on success).
    generation_cost_credits: Decimal = Field(default=Decimal(1), ge=0, decimal_places=3)
    # The most images one request may ask for (Flux's own bound is 4).
    generation_max_outputs: int = Field(default=4, ge=1, le=4)
    # The longest prompt and negative prompt accepted (characters; longer is 422).
    generation_prompt_max_chars: int = Field(default=2000, ge=10, le=10_000)
    # The default model's input names for guidance and for a negative prompt, when it takes them
    # (flux-schnell takes neither; flux-dev takes `guidance`): unset, those fields are not sent to it.
    # Personal models (cog-flux LoRAs) take guidance as `guidance_scale` and no negative prompt.
    text_to_image_guidance_input: str | None = Field(default=None, max_length=64)
    text_to_image_negative_prompt_input: str | None = Field(default=None, max_length=64)
    # The image type asked of the model, and how strongly a personal model's LoRA applies (-1..3).
    generation_output_format: Literal["webp", "jpg", "png"] = "webp"
    generation_lora_scale: float = Field(default=1.0, ge=-1, le=3)
    rate_limit_generation_per_user: str = "10/minute"
    # Hours before generated images are deleted; 0 keeps them.
    retention_hours_generation: int = Field(default=0, ge=0)

    # --- design systems and the LLM ----------------------------------------------------------------
    # Which LLM answers prompt-driven work (palettes and design systems from a description, prompt
    # enhancement); it needs OPENAI_API_KEY or ANTHROPIC_API_KEY, else those endpoints answer 503.
    llm_provider: Literal["openai", "anthropic"] = "openai"
    llm_openai_model: str = Field(default="gpt-5.4-mini", min_length=1, max_length=100)
    llm_anthropic_model: str = Field(default="claude-haiku-4-5", min_length=1, max_length=100)
    # Seconds per LLM attempt, how many retries (connection errors, 429, 5xx), and the most tokens one
    # answer may have.
    llm_timeout_seconds: float = Field(default=30.0, gt=0)
    llm_max_retries: int = Field(default=1, ge=0, le=5)
    llm_max_output_tokens: int = Field(default=1024, ge=64, le=16384)
    # Credits per palette (any source) and per generated design system, by tier.
    palette_cost_credits: Decimal = Field(default=Decimal(1), ge=0, decimal_places=3)
    design_system_colors_cost_credits: Decimal = Field(default=Decimal(1), ge=0, decimal_places=3)
    design_system_full_cost_credits: Decimal = Field(default=Decimal(3), ge=0, decimal_places=3)
    # Export formats only users on one of DESIGN_PRO_PLANS may download (comma separated; others 403).
    design_export_pro_formats: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["figma-tokens"]
    )
    design_pro_plans: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["pro"])
    # Saved design systems per user (409 past it).
    design_systems_max_per_user: int = Field(default=500, ge=1)

    @field_validator("design_export_pro_formats", "design_pro_plans", mode="before")
    @classmethod
    def _split_design_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip().lower() for item in value.split(",") if item.strip()]
        return value

    @field_validator("design_export_pro_formats")
    @classmethod
    def _known_export_formats(cls, formats: list[str]) -> list[str]:
        known = {"json", "css", "tailwind", "scss", "figma-tokens"}
        if unknown := sorted(set(formats) - known):
            raise ValueError(
                f"DESIGN_EXPORT_PRO_FORMATS: unknown format(s) {unknown}; known: {sorted(known)}"
            )
        return formats

    @field_validator("plan_prices_usd")
    @classmethod
    def _price_overrides_parse(cls, value: str) -> str:
        parse_price_overrides(value)
        return value

    @field_validator("cors_origins", "clerk_authorized_parties", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _exact_origins_only(cls, origins: list[str]) -> list[str]:
        # Credentials are allowed, so a wildcard would hand any site the user's session.
        if any("*" in origin for origin in origins):
            raise ValueError("CORS_ORIGINS must list exact origins; '*' is not allowed with credentials")
        return [origin.rstrip("/") for origin in origins]

    @model_validator(mode="after")
    def _providers_have_credentials(self) -> Settings:
        if self.background_removal_provider == "clipdrop" and not (
            self.clipdrop_api_key and self.clipdrop_api_key.get_secret_value()
        ):
            raise ValueError("BACKGROUND_REMOVAL_PROVIDER=clipdrop needs CLIPDROP_API_KEY")
        if self.job_queue == "redis" and not self.resolved_job_queue_redis_url:
            raise ValueError("JOB_QUEUE=redis needs JOB_QUEUE_REDIS_URL or REDIS_URL")
        if self.job_queue == "rabbitmq" and not self.rabbitmq_url:
            raise ValueError("JOB_QUEUE=rabbitmq needs RABBITMQ_URL")
        return self

    @model_validator(mode="after")
    def _refuse_default_secrets_in_production(self) -> Settings:
        if self.environment is not Environment.production:
            return self
        insecure = [
            name.upper()
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), SecretStr)
            and value.get_secret_value().strip().lower() in INSECURE_SECRET_VALUES
        ]
        if "SECRET_KEY" not in insecure and len(self.secret_key.get_secret_value()) < 32:
            insecure.append("SECRET_KEY (shorter than 32 characters)")
        if insecure:
            raise ValueError(
                "refusing to start in production with a default or empty secret: " + ", ".join(insecure)
            )
        return self

    @property
    def resolved_google_redirect_uri(self) -> str:
        return self.google_redirect_uri or f"{self.public_base_url}/api/v1/auth/google/callback"

    @property
    def resolved_google_login_success_url(self) -> str:
        return self.google_login_success_url or f"{self.frontend_url}/auth/callback"

    @property
    def usd_price_overrides(self) -> dict[str, int]:
        return parse_price_overrides(self.plan_prices_usd)

    @property
    def resolved_checkout_success_url(self) -> str:
        return self.checkout_success_url or f"{self.frontend_url}/billing/success"

    @property
    def resolved_checkout_cancel_url(self) -> str:
        return self.checkout_cancel_url or f"{self.frontend_url}/billing/cancel"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def resolved_backup_dir(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"

    @property
    def cookies_secure(self) -> bool:
        """Cookies are Secure whenever the API is served over HTTPS (always in production)."""
        return self.environment is Environment.production or self.public_base_url.startswith("https://")

    @property
    def is_development(self) -> bool:
        return self.environment is Environment.development

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'pixforge.db').resolve()}"

    @property
    def resolved_job_queue_redis_url(self) -> str | None:
        return self.job_queue_redis_url or self.redis_url

    @property
    def json_logs(self) -> bool:
        if self.log_format == "auto":
            return not self.is_development
        return self.log_format == "json"


def parse_price_overrides(raw: str) -> dict[str, int]:
    """ "basic=699, premium=1299" -> {"basic": 699, "premium": 1299}."""
    overrides = {}
    for part in filter(None, (chunk.strip() for chunk in raw.split(","))):
        code, _, cents = part.partition("=")
        if not code.strip() or not cents.strip().isdigit():
            raise ValueError(f"PLAN_PRICES_USD entry {part!r} is not code=cents")
        overrides[code.strip()] = int(cents)
    return overrides


@lru_cache
def get_settings() -> Settings:
    return Settings()
