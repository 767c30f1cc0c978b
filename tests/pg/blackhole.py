"""A "dead" PostgreSQL server for failure-isolation tests and benchmarks: a TCP listener that accepts connections and
never answers (what a blackholed port or a hung server looks like to libpq, unlike a closed port, which refuses at
once). It counts the connections it accepted, so a test can tell how often the operator tried.

    with Blackhole() as hole:          # hole.port
        ...
    hole.accepted                      # connections accepted so far
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class Blackhole:
    """Accepts TCP connections on 127.0.0.1 and holds them open, silent, until closed."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(512)
        self.host, self.port = "127.0.0.1", int(self._listener.getsockname()[1])
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="blackhole", daemon=True)
        self._thread.start()

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        with self._lock:
            return len(self._held)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                self._held.append(conn)

    def close(self) -> None:
        """Stop listening and drop the held connections."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        self._thread.join(5)
        with self._lock:
            for conn in self._held:
                conn.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
