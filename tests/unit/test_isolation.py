"""The Unix-socket bridges that carry HTTP between the host's loopback and Ray's private namespace."""

from __future__ import annotations

import asyncio

from serve_app.isolation import socket_path, start_unix_to_tcp, tcp_to_unix
from serve_app.launcher import free_port


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data.upper())
        await writer.drain()
    writer.close()


def test_unix_socket_reaches_the_tcp_port_behind_it(tmp_path):
    port = free_port()

    async def scenario() -> bytes:
        server = await asyncio.start_server(_echo, "127.0.0.1", port)
        start_unix_to_tcp(tmp_path, [port])
        path = socket_path(tmp_path, port)
        for _ in range(100):
            if path.exists():
                break
            await asyncio.sleep(0.02)
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"GET /health" * 1000)
        await writer.drain()
        writer.write_eof()
        reply = await reader.read()
        server.close()
        return reply

    assert asyncio.run(scenario()) == b"GET /HEALTH" * 1000


def test_host_port_reaches_the_unix_socket(tmp_path):
    port = free_port()

    async def scenario() -> bytes:
        unix = await asyncio.start_unix_server(_echo, str(socket_path(tmp_path, port)))
        servers = await tcp_to_unix(tmp_path, [port])
        assert all(s.sockets[0].getsockname()[0] == "127.0.0.1" for s in servers)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"post")
        writer.write_eof()
        reply = await reader.read()
        for s in servers:
            s.close()
        unix.close()
        return reply

    assert asyncio.run(scenario()) == b"POST"


def test_a_local_run_puts_haproxy_in_front_only_where_its_ports_stay_on_loopback(tmp_path):
    """HAProxy's stats and metrics frontends bind every interface (Ray 2.60), so: HAProxy inside a
    loopback-only namespace, Serve's proxy outside one, and Serve's proxy whenever the setting asks for it."""
    import subprocess
    import sys

    from serve_app.cli import use_haproxy
    from serve_app.isolation import can_isolate, in_loopback_namespace, only_loopback
    from serve_app.settings import Settings

    assert use_haproxy(Settings(data_dir=tmp_path, ingress_proxy="haproxy")) == only_loopback()
    assert use_haproxy(Settings(data_dir=tmp_path, ingress_proxy="serve")) is False
    assert use_haproxy(Settings(data_dir=tmp_path)) == only_loopback()  # HAProxy is the default
    if can_isolate():  # outside a namespace (a plain pytest run): ask the same question inside a fresh one
        probe = "from serve_app.cli import use_haproxy; from serve_app.settings import Settings; " \
                f"print(use_haproxy(Settings(data_dir={str(tmp_path)!r}, ingress_proxy='haproxy')))"
        inside = subprocess.run(in_loopback_namespace([sys.executable, "-c", probe]), capture_output=True, text=True,
                                timeout=60)
        assert inside.stdout.strip() == "True", inside.stderr
