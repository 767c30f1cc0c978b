"""A tiny JSON-over-HTTP server for the stand-in node and RPC (stdlib only)."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

Reply = tuple[int, dict[str, Any]]
Route = Callable[[dict[str, list[str]]], Reply]


class JsonServer:
    """Serves GET routes returning JSON on 0.0.0.0:port in a background thread."""

    def __init__(self, port: int, routes: Mapping[str, Route]) -> None:
        handler = type("Handler", (_Handler,), {"routes": dict(routes)})
        self._server = http.server.ThreadingHTTPServer(("0.0.0.0", port), handler)  # noqa: S104 (a pod's port)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, Route] = {}

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        route = self.routes.get(url.path)
        try:
            code, body = route(urllib.parse.parse_qs(url.query)) if route else (404, {"error": "not found"})
        except Exception as exc:  # a failing read is a 500 with its reason, the server goes on
            code, body = 500, {"error": f"{type(exc).__name__}: {exc}"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not worth a log line."""
