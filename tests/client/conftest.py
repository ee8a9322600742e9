"""The client's tests: `client/src` on the import path, and a stub server for status codes and
bodies the real service gives only under load or never.

The client is a separate distribution (client/pyproject.toml) that the project's venv does not
install; the tests import it from its source tree, and tests/client/test_install.py installs it
into a fresh venv as a user would.
"""

import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

CLIENT_SRC = Path(__file__).resolve().parents[2] / "client" / "src"
if str(CLIENT_SRC) not in sys.path:
    sys.path.insert(0, str(CLIENT_SRC))

from tests.live.conftest import start_server  # noqa: E402, F401 (the fixture, for the key test)


@dataclass
class Stub:
    """A loopback HTTP server that answers POSTs from a list of (status, headers, body)."""

    url: str
    answers: list[tuple[int, dict[str, str], bytes]]
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def stub() -> Iterator[Stub]:
    """A stub server; once its answers run out it repeats the last one."""
    state = Stub("", [(503, {"Retry-After": "0"}, b'{"detail": "busy"}')])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            state.requests.append((self.path, dict(self.headers), body))
            status, headers, content = (
                state.answers.pop(0) if len(state.answers) > 1 else state.answers[0]
            )
            self.send_response(status)
            headers = {"Content-Type": "application/json", **headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def json_body(document: object) -> bytes:
    """A stub answer's body."""
    return json.dumps(document).encode()
