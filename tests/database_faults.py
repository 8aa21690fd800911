"""Database trouble a test can cause: an outage on 127.0.0.1 (a TCP proxy in front of PostgreSQL that
a test can cut and restore), and a table locked past the statement timeout.

The service (or a unit test's engine) is given `proxy.url` instead of the database's own URL, so only
what goes through the proxy loses the database; the test keeps its own direct connection.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Literal
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tests.fault_proxy import TcpProxy, close_socket, splice

Mode = Literal["forward", "refuse", "stall"]


class DatabaseProxy(TcpProxy[Mode]):
    """Forwards 127.0.0.1:`port` to the PostgreSQL server of `database_url` (TCP or Unix socket).

    `refuse`: every open connection is dropped and each new one closed at once (a server that went
    away: clients fail fast). `stall`: open connections are dropped and new ones accepted and never
    answered (a network that blackholes: clients hang until their own timeouts). `forward` again:
    connections go through. Changing the mode drops the open connections either way.
    """

    def __init__(self, database_url: str) -> None:
        params = conninfo_to_dict(database_url)
        host, port = params.get("host") or "/var/run/postgresql", int(params.get("port") or 5432)
        self._upstream: tuple[int, str | tuple[str, int]] = (
            (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}") if host.startswith("/") else (socket.AF_INET, (host, port)))
        self.connections = 0  # connections accepted so far, whatever the mode
        super().__init__("forward")
        user = quote(params.get("user", "postgres"))
        password = f":{quote(params['password'])}" if params.get("password") else ""
        self.url = f"postgresql://{user}{password}@127.0.0.1:{self.port}/{quote(params.get('dbname', 'postgres'))}"
        self._start()

    def _accepted(self, client: socket.socket) -> None:
        self.connections += 1
        if self.mode == "refuse":
            close_socket(client)
            return
        self._track(client)
        if self.mode == "stall":
            return  # held open, never answered, until the mode changes
        threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        family, address = self._upstream
        try:
            upstream = socket.socket(family, socket.SOCK_STREAM)
            upstream.connect(address)
        except OSError:
            close_socket(client)
            return
        self._track(upstream)
        splice(client, upstream)


class TableLock:
    """`LOCK TABLE … IN ACCESS EXCLUSIVE MODE` on its own thread (a migration, a VACUUM FULL, a stuck
    transaction): taken `after` seconds from `start()`, held `hold` seconds from the moment it is granted.

    Load tests run "until the lock is over", not for a fixed time: on a loaded machine the lock can be
    granted seconds late, and a fixed window could then end before any request met it.
    """

    def __init__(self, database_url: str, table: str, *, after: float, hold: float) -> None:
        self.database_url, self.table, self.after, self.hold = database_url, table, after, hold
        self.granted: float | None = None  # time.monotonic() when the lock was granted
        self.released = threading.Event()
        self._released_at = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TableLock:
        self._thread.start()
        return self

    def over_for(self, seconds: float) -> bool:
        """Whether the lock was released at least `seconds` ago (it was not, while it is still to come)."""
        return self.released.is_set() and time.monotonic() >= self._released_at + seconds

    def join(self) -> None:
        self._thread.join()
        assert self.granted is not None, "the lock was never taken"

    def _run(self) -> None:
        try:
            time.sleep(self.after)
            with psycopg.connect(self.database_url) as conn:
                conn.execute(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")
                self.granted = time.monotonic()
                time.sleep(self.hold)
        finally:
            self._released_at = time.monotonic()
            self.released.set()
