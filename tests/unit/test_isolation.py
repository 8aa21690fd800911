"""The Unix-socket bridges that carry HTTP between the host's loopback and Ray's private namespace."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from serve_app.isolation import (EGRESS_SOCKET, caller_of, egress_target, egress_to_loopback, in_loopback_namespace,
                                 socket_path, start_unix_to_tcp, tcp_to_unix)
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
        writer.write(b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 8000\r\n")
        writer.write(b"GET /health" * 1000)
        await writer.drain()
        writer.write_eof()
        reply = await reader.read()
        server.close()
        return reply

    assert asyncio.run(scenario()) == b"GET /HEALTH" * 1000


async def _wait_for(path) -> None:
    for _ in range(500):
        if path.exists():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def test_host_port_reaches_the_unix_socket_led_by_the_callers_address(tmp_path):
    """The host side names each connection's caller (127.0.0.24 here, not the bridge's 127.0.0.1) in a
    PROXY protocol v1 line before the bytes the caller sent."""
    port = free_port()
    firsts = []

    async def first_line_then_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        firsts.append(await reader.readline())
        await _echo(reader, writer)

    async def scenario() -> bytes:
        unix = await asyncio.start_unix_server(first_line_then_echo, str(socket_path(tmp_path, port)))
        servers = await tcp_to_unix(tmp_path, [port])
        assert all(s.sockets[0].getsockname()[0] == "127.0.0.1" for s in servers)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.24", 0))
        writer.write(b"post")
        writer.write_eof()
        reply = await reader.read()
        for s in servers:
            s.close()
        unix.close()
        return reply

    assert asyncio.run(scenario()) == b"POST"
    assert caller_of(firsts[0]) == "127.0.0.24"
    assert firsts[0].startswith(b"PROXY TCP4 127.0.0.24 127.0.0.1 ") and firsts[0].endswith(b" %d\r\n" % port)


def test_the_namespace_side_connects_from_the_callers_address_and_drops_a_connection_that_names_none(tmp_path):
    """What listens inside the namespace sees the caller itself as its peer; without a caller's line
    (only the host side writes into the socket) nothing is forwarded."""
    port = free_port()
    peers = []

    async def record_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername")[0])
        await _echo(reader, writer)

    async def exchange(first: bytes) -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(socket_path(tmp_path, port)))
        writer.write(first + b"body")
        writer.write_eof()
        return await reader.read()

    async def scenario() -> tuple[bytes, bytes]:
        server = await asyncio.start_server(record_peer, "127.0.0.1", port)
        start_unix_to_tcp(tmp_path, [port])
        await _wait_for(socket_path(tmp_path, port))
        named = await exchange(b"PROXY TCP4 127.0.0.31 127.0.0.1 41000 8000\r\n")
        unnamed = await exchange(b"GET / HTTP/1.1\r\n")
        server.close()
        return named, unnamed

    assert asyncio.run(scenario()) == (b"BODY", b"")
    assert peers == ["127.0.0.31"]


def test_a_local_run_puts_haproxy_in_front_only_where_its_ports_stay_on_loopback(tmp_path):
    """HAProxy's stats and metrics frontends bind every interface (Ray 2.60), so: HAProxy inside a
    loopback-only namespace, Serve's proxy outside one, and Serve's proxy whenever the setting asks for it."""
    from serve_app.cli import use_haproxy
    from serve_app.isolation import can_isolate, only_loopback
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


def test_a_webhook_from_inside_the_namespace_reaches_a_receiver_on_the_hosts_loopback(tmp_path):
    """`make run`'s Ray has its own loopback: a deliverer in there reaches the shop developer's receiver
    on the host's 127.0.0.1 only through the egress socket, whose host side goes nowhere but loopback.
    Under `make test`, itself in a loopback-only namespace, that namespace plays the host: one nests."""

    assert egress_target(b"EGRESS 127.0.0.5 8080\r\n") == ("127.0.0.5", 8080)
    assert egress_target(b"EGRESS ::1 443\r\n") == ("::1", 443)
    assert [egress_target(line) for line in (b"EGRESS 10.0.0.1 80\r\n", b"EGRESS 93.184.215.14 443\r\n",
                                              b"EGRESS localhost 80\r\n", b"EGRESS 127.0.0.1 0\r\n",
                                              b"PROXY TCP4 127.0.0.1 127.0.0.1 1 2\r\n")] == [None] * 5
    if subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode != 0:
        pytest.skip("no network namespaces here (unshare --net needs root)")
    port = free_port()
    sender = ("import asyncio, sys\n"
              "from serve_app.jobqueue.outbound import post\n"
              "url, socket = sys.argv[1:]\n"
              "async def both():\n"
              "    try:\n"
              "        await post(url, b'{}', {}, timeout=3, production=False)\n"
              "        print('direct reached it')\n"
              "    except OSError:\n"
              "        print('direct refused')\n"
              "    print(await post(url, b'{\"type\": \"job.completed\"}', {'webhook-id': 'msg_1'}, timeout=3,\n"
              "                     production=False, egress_socket=socket))\n"
              "asyncio.run(both())\n")
    received = []

    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario() -> subprocess.CompletedProcess:
        receiver = await asyncio.start_server(receive, "127.0.0.1", port)
        egress = await egress_to_loopback(tmp_path)
        try:
            argv = in_loopback_namespace([sys.executable, "-c", sender, f"http://127.0.0.1:{port}/hook",
                                          str(tmp_path / EGRESS_SOCKET)])
            return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=30,
                                           cwd=Path(__file__).resolve().parents[2])
        finally:
            egress.close()
            receiver.close()

    done = asyncio.run(scenario())
    assert done.stdout.split() == ["direct", "refused", "204"], done.stderr
    [request] = received
    assert request.startswith(b"POST /hook HTTP/1.1\r\n") and b"webhook-id: msg_1\r\n" in request
