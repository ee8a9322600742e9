"""Logs: one JSON object per line on stdout, each carrying the id of the request it belongs to.

The request id lives in a context variable set by the request middleware; context variables
follow a request into `run_in_threadpool`, so log lines written by the computation carry it too.
Each record is stamped with it when created (a log-record factory), whatever handler writes it.
Nothing here logs headers, query strings or bodies: API keys and other secrets cannot leak.

Plain-text lines escape control characters in the message and the `extra` fields (a request
path with %0A cannot forge a log line; JSON lines are escaped by JSON itself). Python warnings
(numpy's RuntimeWarnings among them) go through the same handler, logger "py.warnings", instead
of plain text on stderr.
"""

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request being served (None outside a request)."""

ACCESS_LOGGER = "gradcheck.access"
"""One line per finished request, written by the request middleware (replaces uvicorn's)."""

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's `extra=` fields and its request id (if it was written during a request)."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RECORD_ATTRIBUTES
        and not key.startswith("_")
        and not (key == "request_id" and value is None)
    }


def _record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """A LogRecord stamped with the current request id when it is created (not when a handler
    formats it later, perhaps outside the request)."""
    record = _base_record_factory(*args, **kwargs)
    record.request_id = REQUEST_ID.get()
    return record


_base_record_factory = logging.getLogRecordFactory()


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "request_id", ...extra fields, "exception"}`."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_character(match: re.Match[str]) -> str:
    character = match.group()
    named = _NAMED_ESCAPES.get(character)
    if named is not None:
        return named
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control_characters(text: str) -> str:
    """`text` with line breaks and other control characters written as escapes (\\n, \\x1b)."""
    return _CONTROL_CHARACTERS.sub(_escape_character, text)


class PlainFormatter(logging.Formatter):
    """`time level logger [request id] message key=value ...` for reading in a terminal; one
    line per record (control characters escaped), plus the traceback if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of text (plus a traceback, if any)."""
        extras = _extra_fields(record)
        request_id = extras.pop("request_id", None)
        line = " ".join(
            part
            for part in (
                self.formatTime(record),
                record.levelname,
                record.name,
                f"[{request_id}]" if request_id else "",
                record.getMessage(),
                " ".join(f"{key}={value}" for key, value in extras.items()),
            )
            if part
        )
        line = escape_control_characters(line)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


_HANDLER = logging.StreamHandler(sys.stdout)
_HANDLER.name = "gradcheck"


def configure_logging(level: str, json_lines: bool) -> None:
    """Send every log (the service's and uvicorn's) through one stdout handler on the root logger.

    Idempotent: calling it again only changes the level and format. Uvicorn's own access log is
    switched off, since `ACCESS_LOGGER` writes one line per request (with its id) instead.
    Warnings (`warnings.warn`, numpy's RuntimeWarnings) are logged by "py.warnings".
    """
    logging.captureWarnings(True)
    logging.setLogRecordFactory(_record_with_request_id)
    _HANDLER.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True
