"""Outbound email behind one Protocol: console (development), SMTP, or Brevo's transactional API.

Bodies carry single-use tokens (verification and reset links), so nothing here ever logs a body, and
no error message quotes one. Every failure is an `EmailDeliveryError` that says whether a retry may
succeed (`retryable`): the network, a timeout, 429 or 5xx from Brevo, a 4xx SMTP reply are temporary;
a refused recipient, sender or content, bad credentials or a 4xx from Brevo are not.
"""

from __future__ import annotations

import asyncio
import html as html_lib
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage as MimeMessage
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any, Protocol
from uuid import uuid4

import httpx
import structlog
from pydantic import SecretStr

from app.config import Settings
from app.errors import ProviderNotConfigured

log = structlog.get_logger("app.email")

BREVO_DEFAULT_BASE_URL = "https://api.brevo.com"
# Brevo answers these with a body worth retrying later; any other 4xx is our request's fault.
_BREVO_RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})


@dataclass(frozen=True)
class EmailMessage:
    to: str
    subject: str
    text: str
    html: str | None = None
    tags: tuple[str, ...] = ()
    # Sent to Brevo as headers {"idempotencyKey": ...}: a retried send is delivered once.
    idempotency_key: str | None = None


class EmailDeliveryError(Exception):
    """The email was not accepted. `retryable` says whether sending it again later may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class EmailSender(Protocol):
    name: str

    async def send(self, message: EmailMessage) -> str:
        """Hand the message to the provider; return the provider's message id."""
        ...


class ConsoleEmailSender:
    """Development sender: logs who would receive what, never the body (it holds tokens)."""

    name: str = "console"

    async def send(self, message: EmailMessage) -> str:
        message_id = f"console-{uuid4().hex}"
        log.info(
            "email.console",
            to=message.to,
            subject=message.subject,
            tags=list(message.tags),
            message_id=message_id,
        )
        return message_id


class SmtpEmailSender:
    """Any SMTP server, through the standard library in a worker thread."""

    name: str = "smtp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        from_address: str,
        from_name: str = "",
        username: str | None = None,
        password: SecretStr | None = None,
        starttls: bool = True,
        use_ssl: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.from_address = from_address
        self.from_name = from_name
        self.username = username
        self.password = password
        self.starttls = starttls
        self.use_ssl = use_ssl
        self.timeout = timeout

    async def send(self, message: EmailMessage) -> str:
        try:
            mime = self._build(message)
        except (ValueError, TypeError) as exc:  # e.g. a line break in the subject or address
            raise EmailDeliveryError(f"SMTP email could not be built: {exc}", retryable=False) from exc
        message_id = str(mime["Message-ID"])
        try:
            await asyncio.to_thread(self._deliver, mime)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _reply in exc.recipients.values()]
            retryable = any(_is_temporary(code) for code in codes)
            raise EmailDeliveryError(
                f"SMTP server refused the recipient ({_smtp_replies(exc.recipients)})", retryable=retryable
            ) from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise EmailDeliveryError(
                f"SMTP login failed ({exc.smtp_code} {_decode(exc.smtp_error)})",
                retryable=_is_temporary(exc.smtp_code),
            ) from exc
        except smtplib.SMTPResponseException as exc:  # sender refused, data refused, HELO refused...
            raise EmailDeliveryError(
                f"SMTP server answered {exc.smtp_code} {_decode(exc.smtp_error)}",
                retryable=_is_temporary(exc.smtp_code),
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:  # no STARTTLS / AUTH / SMTPUTF8 on this server
            raise EmailDeliveryError(f"SMTP server lacks a needed extension: {exc}", retryable=False) from exc
        except (smtplib.SMTPException, OSError) as exc:  # refused, reset, disconnected, timed out
            raise EmailDeliveryError(
                f"SMTP server {self.host}:{self.port} unreachable ({type(exc).__name__}: {exc})",
                retryable=True,
            ) from exc
        return message_id

    def _build(self, message: EmailMessage) -> MimeMessage:
        domain = self.from_address.rpartition("@")[2] or "localhost"
        mime = MimeMessage()
        mime["From"] = (
            formataddr((self.from_name, self.from_address)) if self.from_name else self.from_address
        )
        mime["To"] = message.to
        mime["Subject"] = message.subject
        mime["Date"] = format_datetime(datetime.now(UTC))
        mime["Message-ID"] = make_msgid(domain=domain)
        mime.set_content(message.text)
        if message.html is not None:
            mime.add_alternative(message.html, subtype="html")  # multipart/alternative
        return mime

    def _deliver(self, mime: MimeMessage) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.use_ssl:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.starttls and not self.use_ssl:
                smtp.ehlo()
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username:
                password = self.password.get_secret_value() if self.password else ""
                smtp.login(self.username, password)
            smtp.send_message(mime)
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()


class BrevoEmailSender:
    """Brevo's transactional API (POST /v3/smtp/email) over an injected httpx client."""

    name: str = "brevo"

    def __init__(
        self,
        *,
        http_client: httpx.AsyncClient,
        api_key: SecretStr,
        from_address: str,
        from_name: str = "",
        base_url: str = BREVO_DEFAULT_BASE_URL,
        timeout: float = 10.0,
    ) -> None:
        self.http_client = http_client
        self.api_key = api_key
        self.from_address = from_address
        self.from_name = from_name
        self.url = f"{base_url.rstrip('/')}/v3/smtp/email"
        self.timeout = timeout

    def _payload(self, message: EmailMessage) -> dict[str, Any]:
        sender: dict[str, str] = {"email": self.from_address}
        if self.from_name:
            sender["name"] = self.from_name
        payload: dict[str, Any] = {
            "sender": sender,
            "to": [{"email": message.to}],
            "subject": message.subject,
            "htmlContent": message.html
            if message.html is not None
            else f"<pre>{html_lib.escape(message.text)}</pre>",
            "textContent": message.text,
        }
        if message.tags:
            payload["tags"] = list(message.tags)
        if message.idempotency_key is not None:
            payload["headers"] = {"idempotencyKey": message.idempotency_key}
        return payload

    async def send(self, message: EmailMessage) -> str:
        try:
            response = await self.http_client.post(
                self.url,
                json=self._payload(message),
                headers={
                    "api-key": self.api_key.get_secret_value(),
                    "accept": "application/json",
                    "content-type": "application/json",
                },
                timeout=self.timeout,
            )
        except httpx.TimeoutException as exc:
            raise EmailDeliveryError(
                f"Brevo did not answer in time ({type(exc).__name__})", retryable=True
            ) from exc
        except httpx.TransportError as exc:
            raise EmailDeliveryError(
                f"Brevo unreachable ({type(exc).__name__}: {exc})", retryable=True
            ) from exc

        if response.is_success:
            message_id = _json_field(response, "messageId")
            if not message_id:
                # Accepted, so sending again could deliver twice: report it, but not as retryable.
                raise EmailDeliveryError(
                    f"Brevo accepted the email ({response.status_code}) without a messageId", retryable=False
                )
            return message_id

        retryable = response.status_code >= 500 or response.status_code in _BREVO_RETRYABLE_STATUSES
        detail = " ".join(
            part
            for part in (_json_field(response, "code"), _json_field(response, "message"))
            if part is not None
        )
        raise EmailDeliveryError(
            f"Brevo refused the email ({response.status_code}{': ' + detail if detail else ''})",
            retryable=retryable,
        )


def build_email_sender(settings: Settings, http_client: httpx.AsyncClient) -> EmailSender:
    """The sender `EMAIL_PROVIDER` names, configured from the settings."""
    if settings.email_provider == "smtp":
        return SmtpEmailSender(
            host=settings.smtp_host,
            port=settings.smtp_port,
            from_address=settings.email_from_address,
            from_name=settings.email_from_name,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            use_ssl=settings.smtp_use_ssl,
            timeout=settings.smtp_timeout_seconds,
        )
    if settings.email_provider == "brevo":
        api_key = settings.brevo_api_key
        if api_key is None or not api_key.get_secret_value().strip():
            raise ProviderNotConfigured("Email provider brevo needs BREVO_API_KEY.")
        return BrevoEmailSender(
            http_client=http_client,
            api_key=api_key,
            from_address=settings.email_from_address,
            from_name=settings.email_from_name,
            base_url=settings.brevo_base_url,
            timeout=settings.brevo_timeout_seconds,
        )
    return ConsoleEmailSender()


def _is_temporary(smtp_code: int) -> bool:
    """SMTP 5xx is a permanent refusal; 4xx means "try again later" (and so does a garbled reply)."""
    return not 500 <= smtp_code < 600


def _decode(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _smtp_replies(recipients: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{address}: {code} {_decode(reply)}" for address, (code, reply) in recipients.items())


def _json_field(response: httpx.Response, key: str) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, str) else None
