"""The TCP proxy core that the fault proxies share: a loopback listener whose open connections a
mode change can drop, and the byte pipe between a client and its upstream.

What a proxy does with each accepted connection is its own: `DatabaseProxy` (tests/database_faults.py)
refuses or stalls PostgreSQL connections, `FaultProxy` (tests/storage_faults.py) judges each S3
request by its first line. Both need the same listener and the same way to cut every open connection
at once, so that clients meet the new mode on their next connection.
"""

from __future__ import annotations

import socket
import threading
from typing import Generic, TypeVar

ModeT = TypeVar("ModeT", bound=str)


class TcpProxy(Generic[ModeT]):
    """Listens on 127.0.0.1:`port` and hands each accepted connection to `_accepted`.

    Sockets given to `_track` are shut down by `set_mode` and `close`. A subclass sets what its
    `_accepted` needs, then calls `_start` to begin accepting.
    """

    def __init__(self, mode: ModeT) -> None:
        self.mode = mode
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def set_mode(self, mode: ModeT) -> None:
        self.mode = mode
        self._drop_all()

    def close(self) -> None:
        self._listener.close()
        self._drop_all()

    def _start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def _accepted(self, client: socket.socket) -> None:
        raise NotImplementedError

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            close_socket(sock)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._accepted(client)


def splice(client: socket.socket, upstream: socket.socket) -> None:
    """Copies bytes both ways until either side ends, then closes both (upstream-to-client on a
    thread of its own, client-to-upstream on the caller's)."""
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
    pipe(client, upstream)


def pipe(source: socket.socket, target: socket.socket) -> None:
    """Copies `source` to `target` until either ends or breaks; then closes both, so the other
    direction's pipe ends too."""
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        close_socket(source)
        close_socket(target)


def close_socket(sock: socket.socket) -> None:
    """Shuts down before closing, so a thread blocked in `recv` on it wakes up."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
