"""structlog for our code and stdlib loggers alike: console in development, JSON elsewhere.

Logging runs on the event loop's thread, so rendering a line must cost microseconds, whatever is logged:
tracebacks are plain text (no source listings, no frame locals: a rich traceback with locals took
20 s for one client that hung up), with a bounded number of frames and characters, and long values are
cut."""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import TextIO

import structlog
from structlog.typing import EventDict, ExcInfo, Processor, WrappedLogger

from app.config import Settings

# Keys whose values must never reach a log line, whoever logs them.
_SENSITIVE_KEY = re.compile(
    r"pass(word)?|secret|token|authorization|cookie|api[_-]?key|signature|otp|credential", re.IGNORECASE
)
REDACTED = "[redacted]"

# Innermost frames kept per exception of a chain, and characters kept of a whole traceback / one value.
TRACEBACK_FRAMES = 40
TRACEBACK_CHARS = 16_000
VALUE_CHARS = 4_000


def redact_sensitive_values(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    for key in list(event_dict):
        if key != "event" and _SENSITIVE_KEY.search(key):
            event_dict[key] = REDACTED
    return event_dict


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    # The end of a traceback says what was raised, its start where: keep both.
    head = limit // 4
    tail = limit - head
    return f"{text[:head]}\n... [{len(text) - limit} characters cut] ...\n{text[-tail:]}"


def bounded_traceback(exc_info: ExcInfo) -> str:
    """The standard library's plain traceback, at most TRACEBACK_FRAMES frames per exception and
    TRACEBACK_CHARS characters in all."""
    lines = traceback.format_exception(*exc_info, limit=-TRACEBACK_FRAMES)
    return _cut("".join(lines).rstrip("\n"), TRACEBACK_CHARS)


def _console_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    sio.write("\n" + bounded_traceback(exc_info))


def bound_values(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    for key, value in event_dict.items():
        if isinstance(value, str) and len(value) > VALUE_CHARS:
            event_dict[key] = _cut(value, VALUE_CHARS)
    return event_dict


class AccessLog:
    """The access log: one line per request, the hot path's only log line, so it is rendered here in one
    step (the same fields, JSON or console, as a structlog line of logger `app.access`) rather than
    through the processor chain, which cost it five times as much. What the request bound with
    structlog's contextvars joins the line, redacted like any other."""

    def __init__(self, *, json_lines: bool, enabled: bool) -> None:
        self.json_lines = json_lines
        self.enabled = enabled

    def request(self, method: str, path: str, status: int, duration_ms: float, client: str | None) -> None:
        if not self.enabled:
            return
        line: dict[str, object] = {
            key: REDACTED if _SENSITIVE_KEY.search(key) else value
            for key, value in structlog.contextvars.get_contextvars().items()
        }
        line.update(
            method=method,
            path=path if len(path) <= VALUE_CHARS else _cut(path, VALUE_CHARS),
            status=status,
            duration_ms=duration_ms,
            client=client,
            event="http.request",
            level="info",
            logger="app.access",
            # isoformat is the cheap way to the stamp structlog writes (strftime cost the line a third).
            timestamp=datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z",
        )
        if self.json_lines:
            text = json.dumps(line, default=str)
        else:
            fields = " ".join(f"{key}={line[key]}" for key in sorted(line) if key not in _CONSOLE_HEAD)
            text = f"{line['timestamp']} [info     ] http.request [app.access] {fields}"
        stream = sys.stderr
        stream.write(text + "\n")
        stream.flush()


_CONSOLE_HEAD = frozenset({"timestamp", "level", "event", "logger"})

access_log = AccessLog(json_lines=True, enabled=True)


def configure_logging(settings: Settings) -> None:
    global access_log
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_sensitive_values,
        bound_values,
    ]
    renderer: Processor
    if settings.json_logs:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.ExceptionRenderer(bounded_traceback))
    else:
        renderer = structlog.dev.ConsoleRenderer(exception_formatter=_console_traceback)

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    access_log = AccessLog(
        json_lines=settings.json_logs, enabled=logging.getLevelName(settings.log_level) <= logging.INFO
    )
    # The logging HOWTO's "Optimization": no record needs its caller's file and line (a stack walk per
    # line), its thread, process or multiprocessing name; nothing we render shows them.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level)
    # Our middleware writes the access log (with the request id); uvicorn's would be a duplicate.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO if settings.db_echo else logging.WARNING)
    # Drivers that log statements with their parameters (password hashes, token links) at DEBUG.
    for name in ("aiosqlite", "asyncmy", "asyncpg", "httpcore", "hpack"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # libpng's warnings about an uploaded file (one per odd chunk, as many as a client sends) are the
    # client's business: its errors still refuse the file.
    logging.getLogger("imagecodecs").setLevel(logging.ERROR)
