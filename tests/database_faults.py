"""A database outage on 127.0.0.1: a TCP proxy in front of PostgreSQL that a test can cut and restore.

The service (or a unit test's engine) is given `proxy.url` instead of the database's own URL, so only
what goes through the proxy loses the database; the test keeps its own direct connection.
"""

from __future__ import annotations

import socket
import threading
from typing import Literal
from urllib.parse import quote

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
