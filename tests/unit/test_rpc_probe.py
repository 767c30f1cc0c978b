"""The RPC head-height probe against real HTTP servers on 127.0.0.1: heights read, redirects never followed."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aitbc_operator.reconcilers.rpc_probe import TIMEOUT_SECONDS, Height, head_heights


class _Handler(http.server.BaseHTTPRequestHandler):
    location: str | None = None  # set on a subclass: answer 302 to there
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if self.location is not None:
            self.send_response(302)
            self.send_header("Location", self.location + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"height": 42}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@contextmanager
def server(location: str | None = None) -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_Handler,), {"location": location, "seen": seen})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_heights_are_read() -> None:
    with server() as (url, seen):
        assert asyncio.run(head_heights(url, ["ait-mainnet"])) == {"ait-mainnet": Height(42, None)}
    assert seen == ["/rpc/head?chain_id=ait-mainnet"]


def test_a_redirect_is_not_followed() -> None:
    """The RPC (the resource author's code) answers 302 to another address: the operator does not go there."""
    with server() as (elsewhere, visited), server(location=elsewhere) as (rpc, seen):
        assert asyncio.run(head_heights(rpc, ["ait-mainnet"])) == {"ait-mainnet": Height(None, "redirect refused")}
    assert seen == ["/rpc/head?chain_id=ait-mainnet"]
    assert visited == []


def test_a_silent_rpc_times_out_and_a_closed_port_is_unreachable() -> None:
    """A server that accepts but never answers costs the probe's timeout, not more; nothing listening: unreachable."""
    import socket
    import time

    with socket.socket() as silent, socket.socket() as closed:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        began = time.monotonic()
        heights = asyncio.run(head_heights(f"http://127.0.0.1:{silent.getsockname()[1]}", ["a", "b"]))
        took = time.monotonic() - began
        assert heights == {"a": Height(None, "timeout"), "b": Height(None, "timeout")}
        assert took < 3 * TIMEOUT_SECONDS  # concurrent, each bounded
        refused = asyncio.run(head_heights(f"http://127.0.0.1:{closed.getsockname()[1]}", ["a"]))
        assert refused == {"a": Height(None, "unreachable")}
