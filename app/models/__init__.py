"""Every table, imported here so Alembic and the mappers see the whole schema."""

from app.db.base import Base
from app.models.alert import AlertState
from app.models.auth import (
    ApiKey,
    EmailCode,
    EmailCodePurpose,
    OneTimeToken,
    OneTimeTokenPurpose,
    RefreshToken,
    RevokedAccessToken,
)
from app.models.billing import (
    AdjustmentKind,
    BillingProfile,
    CreditDebt,
    IdempotencyRecord,
    InvoiceCounter,
    Order,
    OrderAdjustment,
    OrderStatus,
    Plan,
    PlanKind,
    PlanPrice,
    Provider,
    Subscription,
    TaxInvoice,
)
from app.models.credit import (
    MILLICREDITS_PER_CREDIT,
    CreditAccount,
    CreditLedgerEntry,
    LedgerReason,
    SignupBonusClaim,
)
from app.models.design import DesignSource, DesignSystem, DesignSystemTag, UsageAction, UsageRecord
from app.models.email import EmailStatus, OutboxEmail
from app.models.image import TERMINAL_STATUSES, Job, JobKind, JobStatus, Style, Upload, UploadOrigin
from app.models.user import User, UserRole
from app.models.webhook_event import WebhookEvent, WebhookStatus

__all__ = [
    "MILLICREDITS_PER_CREDIT",
    "TERMINAL_STATUSES",
    "AdjustmentKind",
    "AlertState",
    "ApiKey",
    "Base",
    "BillingProfile",
    "CreditAccount",
    "CreditDebt",
    "CreditLedgerEntry",
    "DesignSource",
    "DesignSystem",
    "DesignSystemTag",
    "EmailCode",
    "EmailCodePurpose",
    "EmailStatus",
    "IdempotencyRecord",
    "InvoiceCounter",
    "Job",
    "JobKind",
    "JobStatus",
    "LedgerReason",
    "OneTimeToken",
    "OneTimeTokenPurpose",
    "Order",
    "OrderAdjustment",
    "OrderStatus",
    "OutboxEmail",
    "Plan",
    "PlanKind",
    "PlanPrice",
    "Provider",
    "RefreshToken",
    "RevokedAccessToken",
    "SignupBonusClaim",
    "Style",
    "Subscription",
    "TaxInvoice",
    "Upload",
    "UploadOrigin",
    "UsageAction",
    "UsageRecord",
    "User",
    "UserRole",
    "WebhookEvent",
    "WebhookStatus",
]

from app.models.audit import AuditAction, AuditLog

__all__ += ["AuditAction", "AuditLog"]

from app.models.clone import CloneModel, CloneModelPhoto, CloneModelStatus, ClonePhoto  # noqa: E402

__all__ += ["CloneModel", "CloneModelPhoto", "CloneModelStatus", "ClonePhoto"]
