"""JSON and plain log lines carry the request id and `extra` fields; setup is idempotent."""

import json
import logging
import sys
import warnings

import numpy as np
import pytest

from app.core.logging import (
    REQUEST_ID,
    JsonFormatter,
    PlainFormatter,
    configure_logging,
    escape_control_characters,
)


def record(message: str, **extra: object) -> logging.LogRecord:
    """A log record as `logger.info(message, extra=extra)` makes it, once logging is set up."""
    configure_logging("INFO", json_lines=True)
    entry = logging.getLogRecordFactory()(
        "gradcheck.test", logging.INFO, __file__, 1, message, None, None
    )
    entry.__dict__.update(extra)
    return entry


def test_json_line_has_request_id_and_extra_fields() -> None:
    token = REQUEST_ID.set("req-42")
    try:
        line = JsonFormatter().format(record("served", status=200, route="/v1/softmax"))
    finally:
        REQUEST_ID.reset(token)
    entry = json.loads(line)
    assert entry["message"] == "served"
    assert entry["level"] == "INFO"
    assert entry["logger"] == "gradcheck.test"
    assert entry["request_id"] == "req-42"
    assert (entry["status"], entry["route"]) == (200, "/v1/softmax")
    assert "\n" not in line


def test_json_line_outside_a_request_has_no_request_id() -> None:
    assert "request_id" not in json.loads(JsonFormatter().format(record("startup")))


def test_json_line_carries_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        entry = record("failed")
        entry.exc_info = sys.exc_info()
    parsed = json.loads(JsonFormatter().format(entry))
    assert "ValueError: boom" in parsed["exception"]


def test_plain_line_has_request_id_and_extras() -> None:
    token = REQUEST_ID.set("abc")
    try:
        line = PlainFormatter().format(record("served", status=404))
    finally:
        REQUEST_ID.reset(token)
    assert "[abc]" in line
    assert "served" in line
    assert "status=404" in line


@pytest.mark.parametrize("json_lines", [True, False])
def test_configure_logging_installs_one_handler_and_replaces_uvicorns_access_log(
    json_lines: bool,
) -> None:
    configure_logging("WARNING", json_lines)
    configure_logging("INFO", json_lines)
    root = logging.getLogger()
    ours = [handler for handler in root.handlers if handler.name == "gradcheck"]
    assert len(ours) == 1
    assert isinstance(ours[0].formatter, JsonFormatter if json_lines else PlainFormatter)
    assert root.level == logging.INFO
    assert logging.getLogger("uvicorn.access").disabled
    assert logging.getLogger("uvicorn.error").propagate


def test_plain_lines_escape_control_characters() -> None:
    """A path with %0A (decoded to a line break) cannot forge a second log line."""
    forged = "/x\n2026-01-01 00:00:00,000 ERROR gradcheck.access forged\r\x1b[31m"
    line = PlainFormatter().format(record("request\nINFO fake", path=forged))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "request\\nINFO fake" in line
    assert "path=/x\\n2026-01-01" in line
    assert "\\x1b[31m" in line


def test_plain_traceback_keeps_its_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        entry = record("failed")
        entry.exc_info = sys.exc_info()
    line = PlainFormatter().format(entry)
    first, rest = line.split("\n", 1)
    assert "failed" in first
    assert "Traceback" in rest and "ValueError: boom" in rest


def test_escape_control_characters() -> None:
    assert escape_control_characters("a\tb\x00c\u2028é") == "a\\tb\\x00c\\u2028é"


def test_numpy_warnings_go_through_the_logger(caplog: pytest.LogCaptureFixture) -> None:
    logging.captureWarnings(False)  # pytest replaced showwarning per test: capture afresh
    configure_logging("INFO", json_lines=True)
    caplog.set_level("WARNING", logger="py.warnings")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            logging.captureWarnings(False)
            logging.captureWarnings(True)
            with np.errstate(divide="warn"):
                np.log(np.zeros(1))
    finally:
        logging.captureWarnings(False)
        logging.captureWarnings(True)
    (entry,) = [r for r in caplog.records if r.name == "py.warnings"]
    assert "RuntimeWarning" in entry.getMessage()
    assert "divide by zero" in entry.getMessage()
