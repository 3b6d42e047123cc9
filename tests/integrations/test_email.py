"""Email senders against fakes that speak the providers' real contracts: Brevo's HTTP API through
respx, a real SMTP server (aiosmtpd) on 127.0.0.1, and the console sender's log line."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from email.message import EmailMessage as MimeMessage
from typing import Any
from uuid import uuid4

import httpx
import pytest
import respx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from app.errors import ProviderNotConfigured
from app.integrations.email import (
    BrevoEmailSender,
    ConsoleEmailSender,
    EmailDeliveryError,
    EmailMessage,
    EmailSender,
    SmtpEmailSender,
    build_email_sender,
)
from app.logging import configure_logging
from tests.conftest import make_settings

SECRET_LINK_TOKEN = "tok_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
MESSAGE = EmailMessage(
    to="jane@example.com",
    subject="Verify your email",
    text=f"Open https://app.test/verify?token={SECRET_LINK_TOKEN} to verify.",
    html=f'<p><a href="https://app.test/verify?token={SECRET_LINK_TOKEN}">Verify</a></p>',
    tags=("verify-email",),
    idempotency_key="verify-0001",
)

# --- console ---------------------------------------------------------------------------------------


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


@pytest.mark.usefixtures("restore_root_logging")
async def test_console_logs_recipient_and_subject_but_never_the_body(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(make_settings(log_format="json"))
    sender = ConsoleEmailSender()

    message_id = await sender.send(MESSAGE)

    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.strip().splitlines()]
    [line] = [line for line in lines if line.get("logger") == "app.email"]
    assert line["event"] == "email.console"
    assert line["to"] == "jane@example.com"
    assert line["subject"] == "Verify your email"
    assert line["tags"] == ["verify-email"]
    assert line["message_id"] == message_id
    assert message_id.startswith("console-")
    assert len(message_id) == len("console-") + 32
    assert SECRET_LINK_TOKEN not in err
    assert "verify?token" not in err
    assert sender.name == "console"


async def test_console_ids_are_unique() -> None:
    sender = ConsoleEmailSender()
    assert await sender.send(MESSAGE) != await sender.send(MESSAGE)


# --- Brevo -----------------------------------------------------------------------------------------

BREVO_BASE_URL = "https://brevo.test"
BREVO_KEY = "xkeysib-0123456789abcdef-test"


class FakeBrevo:
    """POST /v3/smtp/email as Brevo answers it: api-key checked, required fields validated,
    201 {"messageId": "<...>"} on success."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.message_ids: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("api-key") != BREVO_KEY:
            return httpx.Response(401, json={"code": "unauthorized", "message": "Key not found"})
        if request.headers.get("content-type") != "application/json":
            return httpx.Response(415, json={"code": "invalid_parameter", "message": "content-type"})
        assert request.headers.get("accept") == "application/json"
        body = json.loads(request.content)
        for field in ("sender", "to", "subject", "htmlContent"):
            if field not in body:
                return httpx.Response(
                    400, json={"code": "missing_parameter", "message": f"{field} is missing"}
                )
        self.received.append(body)
        message_id = f"<{uuid4().hex}@smtp-relay.fake>"
        self.message_ids.append(message_id)
        return httpx.Response(201, json={"messageId": message_id})


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def brevo(http_client: httpx.AsyncClient) -> BrevoEmailSender:
    return BrevoEmailSender(
        http_client=http_client,
        api_key=make_settings(brevo_api_key=BREVO_KEY).brevo_api_key,  # type: ignore[arg-type]
        from_address="no-reply@pixforge.test",
        from_name="Pixforge",
        base_url=BREVO_BASE_URL + "/",
        timeout=2.0,
    )


def brevo_route(router: respx.MockRouter, base_url: str = BREVO_BASE_URL) -> respx.Route:
    return router.post(f"{base_url}/v3/smtp/email")


async def test_brevo_sends_the_documented_body_and_returns_the_message_id(
    outside_http: respx.MockRouter, brevo: BrevoEmailSender
) -> None:
    fake = FakeBrevo()
    route = brevo_route(outside_http).mock(side_effect=fake)

    message_id = await brevo.send(MESSAGE)

    assert route.call_count == 1
    assert message_id == fake.message_ids[0]
    assert fake.received == [
        {
            "sender": {"email": "no-reply@pixforge.test", "name": "Pixforge"},
            "to": [{"email": "jane@example.com"}],
            "subject": "Verify your email",
            "htmlContent": MESSAGE.html,
            "textContent": MESSAGE.text,
            "tags": ["verify-email"],
            "headers": {"idempotencyKey": "verify-0001"},
        }
    ]


async def test_brevo_text_only_message_gets_escaped_pre_html_and_no_optional_fields(
    outside_http: respx.MockRouter, brevo: BrevoEmailSender
) -> None:
    fake = FakeBrevo()
    brevo_route(outside_http).mock(side_effect=fake)

    await brevo.send(EmailMessage(to="a@example.com", subject="Hi", text="1 < 2 & <b>x</b>"))

    assert fake.received == [
        {
            "sender": {"email": "no-reply@pixforge.test", "name": "Pixforge"},
            "to": [{"email": "a@example.com"}],
            "subject": "Hi",
            "htmlContent": "<pre>1 &lt; 2 &amp; &lt;b&gt;x&lt;/b&gt;</pre>",
            "textContent": "1 < 2 & <b>x</b>",
        }
    ]


async def test_brevo_with_a_wrong_key_is_not_retryable_and_does_not_leak_the_key(
    outside_http: respx.MockRouter, http_client: httpx.AsyncClient
) -> None:
    brevo_route(outside_http).mock(side_effect=FakeBrevo())
    sender = BrevoEmailSender(
        http_client=http_client,
        api_key=make_settings(brevo_api_key="xkeysib-wrong").brevo_api_key,  # type: ignore[arg-type]
        from_address="no-reply@pixforge.test",
        base_url=BREVO_BASE_URL,
    )

    with pytest.raises(EmailDeliveryError) as raised:
        await sender.send(MESSAGE)

    assert raised.value.retryable is False
    assert "401" in str(raised.value)
    assert "unauthorized" in str(raised.value)
    assert "Key not found" in str(raised.value)
    assert "xkeysib-wrong" not in str(raised.value)


@pytest.mark.parametrize(
    ("status", "body", "retryable", "expected_in_message"),
    [
        (400, {"code": "missing_parameter", "message": "sender is missing"}, False, "missing_parameter"),
        (401, {"code": "unauthorized", "message": "Key not found"}, False, "Key not found"),
        (402, {"code": "not_enough_credits", "message": "Not enough credits"}, False, "not_enough_credits"),
        (403, {"code": "permission_denied", "message": "IP not allowed"}, False, "permission_denied"),
        (429, {"code": "too_many_requests", "message": "Slow down"}, True, "429"),
        (500, {"code": "internal_error", "message": "Oops"}, True, "internal_error"),
        (503, None, True, "503"),
    ],
)
async def test_brevo_errors_say_whether_to_retry(
    outside_http: respx.MockRouter,
    brevo: BrevoEmailSender,
    status: int,
    body: dict[str, str] | None,
    retryable: bool,
    expected_in_message: str,
) -> None:
    response = (
        httpx.Response(status, json=body)
        if body is not None
        else httpx.Response(status, text="<html>down</html>")
    )
    brevo_route(outside_http).mock(return_value=response)

    with pytest.raises(EmailDeliveryError) as raised:
        await brevo.send(MESSAGE)

    assert raised.value.retryable is retryable
    assert expected_in_message in str(raised.value)
    assert str(status) in str(raised.value)
    assert SECRET_LINK_TOKEN not in str(raised.value)


@pytest.mark.parametrize(
    "transport_error",
    [httpx.ReadTimeout("timed out"), httpx.ConnectTimeout("timed out"), httpx.ConnectError("refused")],
)
async def test_brevo_timeouts_and_network_errors_are_retryable(
    outside_http: respx.MockRouter, brevo: BrevoEmailSender, transport_error: httpx.TransportError
) -> None:
    brevo_route(outside_http).mock(side_effect=transport_error)

    with pytest.raises(EmailDeliveryError) as raised:
        await brevo.send(MESSAGE)

    assert raised.value.retryable is True


async def test_brevo_2xx_without_message_id_is_reported_but_not_retried(
    outside_http: respx.MockRouter, brevo: BrevoEmailSender
) -> None:
    brevo_route(outside_http).mock(return_value=httpx.Response(201, json={}))

    with pytest.raises(EmailDeliveryError) as raised:
        await brevo.send(MESSAGE)

    assert raised.value.retryable is False


# --- SMTP ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RecordingHandler:
    """Accepts everything and keeps what it received, unless told to refuse RCPT or DATA."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.rcpt_reply: str | None = None
        self.data_reply: str | None = None

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply is not None:
            return self.data_reply
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def received(self) -> MimeMessage:
        [envelope] = self.envelopes
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, MimeMessage)
        return parsed


StartServer = Callable[..., tuple[RecordingHandler, int]]


@pytest.fixture
def smtp_server() -> Iterator[StartServer]:
    """Starts a real SMTP server on 127.0.0.1 (keyword arguments go to aiosmtpd's SMTP)."""
    controllers: list[Controller] = []

    def start(**smtp_kwargs: Any) -> tuple[RecordingHandler, int]:
        handler = RecordingHandler()
        port = free_port()
        controller = Controller(
            handler,
            hostname="127.0.0.1",
            port=port,
            server_hostname="smtp.test",
            ready_timeout=5,
            **smtp_kwargs,
        )
        controller.start()
        controllers.append(controller)
        return handler, port

    yield start
    for controller in controllers:
        controller.stop()


def smtp_sender(port: int, **overrides: Any) -> SmtpEmailSender:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "from_address": "no-reply@pixforge.test",
        "from_name": "Pixforge",
        "starttls": False,
        "timeout": 5.0,
    }
    values.update(overrides)
    return SmtpEmailSender(**values)


async def test_smtp_delivers_a_multipart_alternative_message(smtp_server: StartServer) -> None:
    handler, port = smtp_server()

    message_id = await smtp_sender(port).send(MESSAGE)

    [envelope] = handler.envelopes
    assert envelope.mail_from == "no-reply@pixforge.test"
    assert envelope.rcpt_tos == ["jane@example.com"]
    received = handler.received()
    assert received["To"] == "jane@example.com"
    assert received["Subject"] == "Verify your email"
    assert received["From"] == "Pixforge <no-reply@pixforge.test>"
    assert received["Message-ID"] == message_id
    assert message_id.startswith("<")
    assert message_id.endswith("@pixforge.test>")
    assert received["Date"]
    assert received.get_content_type() == "multipart/alternative"
    plain = received.get_body(("plain",))
    html = received.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert plain.get_content().strip() == MESSAGE.text
    assert html.get_content().strip() == MESSAGE.html


async def test_smtp_text_only_message_is_plain_text(smtp_server: StartServer) -> None:
    handler, port = smtp_server()

    await smtp_sender(port).send(EmailMessage(to="a@example.com", subject="Hi", text="Hello"))

    received = handler.received()
    assert received.get_content_type() == "text/plain"
    assert received.get_content().strip() == "Hello"


async def test_smtp_built_from_settings_delivers(
    smtp_server: StartServer, http_client: httpx.AsyncClient
) -> None:
    handler, port = smtp_server()
    settings = make_settings(
        email_provider="smtp",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_starttls=False,
        email_from_address="mail@pixforge.test",
        email_from_name="Pixforge Mail",
    )

    sender = build_email_sender(settings, http_client)
    await sender.send(MESSAGE)

    assert sender.name == "smtp"
    assert handler.received()["From"] == "Pixforge Mail <mail@pixforge.test>"


async def test_smtp_logs_in_with_the_configured_credentials(smtp_server: StartServer) -> None:
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s3cret", handled=False)

    handler, port = smtp_server(authenticator=authenticator, auth_require_tls=False)
    settings = make_settings(smtp_password="s3cret")

    await smtp_sender(port, username="mailer", password=settings.smtp_password).send(MESSAGE)

    assert logins == [(b"mailer", b"s3cret")]
    assert len(handler.envelopes) == 1


async def test_smtp_login_failure_is_not_retryable(smtp_server: StartServer) -> None:
    handler, port = smtp_server(
        authenticator=lambda *args: AuthResult(success=False, handled=False), auth_require_tls=False
    )
    settings = make_settings(smtp_password="wrong")

    with pytest.raises(EmailDeliveryError) as raised:
        await smtp_sender(port, username="mailer", password=settings.smtp_password).send(MESSAGE)

    assert raised.value.retryable is False
    assert "535" in str(raised.value)
    assert "wrong" not in str(raised.value)
    assert handler.envelopes == []


@pytest.mark.parametrize(
    ("where", "reply", "retryable"),
    [
        ("rcpt", "550 mailbox unavailable", False),
        ("rcpt", "450 mailbox busy, try later", True),
        ("data", "554 message rejected as spam", False),
        ("data", "451 local error in processing", True),
    ],
)
async def test_smtp_refusals_say_whether_to_retry(
    smtp_server: StartServer, where: str, reply: str, retryable: bool
) -> None:
    handler, port = smtp_server()
    setattr(handler, f"{where}_reply", reply)

    with pytest.raises(EmailDeliveryError) as raised:
        await smtp_sender(port).send(MESSAGE)

    assert raised.value.retryable is retryable
    assert reply.split()[0] in str(raised.value)
    assert SECRET_LINK_TOKEN not in str(raised.value)
    assert handler.envelopes == []


async def test_smtp_closed_port_is_retryable() -> None:
    with pytest.raises(EmailDeliveryError) as raised:
        await smtp_sender(free_port()).send(MESSAGE)

    assert raised.value.retryable is True


async def test_smtp_server_that_never_answers_times_out_retryably() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts the TCP handshake in its backlog, never greets
        port = silent.getsockname()[1]

        with pytest.raises(EmailDeliveryError) as raised:
            await smtp_sender(port, timeout=0.3).send(MESSAGE)

    assert raised.value.retryable is True


async def test_smtp_starttls_against_a_server_without_it_is_not_retryable(smtp_server: StartServer) -> None:
    handler, port = smtp_server()

    with pytest.raises(EmailDeliveryError) as raised:
        await smtp_sender(port, starttls=True).send(MESSAGE)

    assert raised.value.retryable is False
    assert "STARTTLS" in str(raised.value)
    assert handler.envelopes == []


async def test_smtp_subject_with_a_line_break_is_refused_before_connecting() -> None:
    bad = EmailMessage(to="a@example.com", subject="Hi\r\nBcc: victim@example.com", text="x")

    with pytest.raises(EmailDeliveryError) as raised:
        await smtp_sender(free_port()).send(bad)  # a closed port: would be retryable had it connected

    assert raised.value.retryable is False


# --- build_email_sender ----------------------------------------------------------------------------


async def test_console_is_the_default(http_client: httpx.AsyncClient) -> None:
    sender = build_email_sender(make_settings(), http_client)
    assert isinstance(sender, ConsoleEmailSender)
    assert sender.name == "console"


@pytest.mark.parametrize("api_key", [None, "", "   "])
async def test_brevo_without_a_key_is_not_configured(
    http_client: httpx.AsyncClient, api_key: str | None
) -> None:
    settings = make_settings(email_provider="brevo", brevo_api_key=api_key)

    with pytest.raises(ProviderNotConfigured, match=r"^Email provider brevo needs BREVO_API_KEY\.$"):
        build_email_sender(settings, http_client)


async def test_brevo_built_from_settings_uses_the_default_base_url_and_key(
    outside_http: respx.MockRouter, http_client: httpx.AsyncClient
) -> None:
    fake = FakeBrevo()
    route = brevo_route(outside_http, "https://api.brevo.com").mock(side_effect=fake)
    settings = make_settings(email_provider="brevo", brevo_api_key=BREVO_KEY)

    sender: EmailSender = build_email_sender(settings, http_client)
    message_id = await sender.send(MESSAGE)

    assert sender.name == "brevo"
    assert route.call_count == 1
    assert message_id == fake.message_ids[0]
    assert fake.received[0]["sender"] == {"email": "no-reply@pixforge.local", "name": "Pixforge"}
