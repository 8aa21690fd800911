"""Keep a local run's Ray processes off the network while the API stays on the host's 127.0.0.1.

Ray 2.60's core processes (GCS, raylet, workers) listen on every interface whatever node IP they are
given. On Linux with the right privileges, the local run therefore starts Ray and the application in
a private network namespace that has only loopback, and bridges the HTTP and dashboard ports back to
the host's 127.0.0.1 through Unix sockets, which reach across namespaces as files.

The bridge keeps the caller's address, which rate limits and login throttling key on: the host side
opens each connection with a PROXY protocol v1 line naming the TCP caller, and the namespace side
connects onward from that same address (every caller of a bridge on 127.0.0.1 is on 127.0.0.0/8,
which the namespace's loopback also holds), so what listens inside sees the caller as its peer and
needs no header to trust.

One bridge runs the other way: webhooks (serve_app/jobqueue/outbound.py) sent from inside to a receiver
on the host's loopback, where a shop developer tries them, go through `egress.sock`, whose host side
connects only to the loopback address and port each connection names.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Awaitable, Callable

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# Opens the onward connection for an accepted one (given its streams), or None to drop it.
Opener = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[Streams | None]]
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")  # the addresses a caller of the host side can have
CALLER_LINE_SECONDS = 5.0  # the host side writes it at once; a connection without one is dropped
EGRESS_SOCKET = "egress.sock"  # in the bridges' folder: webhooks out of the namespace to the host's loopback


def only_loopback() -> bool:
    """True inside a namespace whose only interface is loopback (nothing to isolate from)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def can_isolate() -> bool:
    if only_loopback() or not (shutil.which("unshare") and shutil.which("ip")):
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


def in_loopback_namespace(argv: list[str]) -> list[str]:
    """The command line that runs `argv` in a new network namespace with loopback up."""
    return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', *argv]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction; pass the end of input on as a half-close so replies still flow back."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass


def _forward(open_target: Opener):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target = await open_target(reader, writer)
        except (OSError, asyncio.TimeoutError, ValueError):
            target = None
        if target is None:
            writer.close()
            return
        target_reader, target_writer = target
        try:
            await asyncio.gather(_pipe(reader, target_writer), _pipe(target_reader, writer))
        finally:
            writer.close()
            target_writer.close()
    return handle


def caller_line(writer: asyncio.StreamWriter) -> bytes:
    """The PROXY protocol v1 line that names the TCP caller of `writer`'s connection."""
    source, source_port = writer.get_extra_info("peername")[:2]
    target, target_port = writer.get_extra_info("sockname")[:2]
    family = "TCP6" if ipaddress.ip_address(source).version == 6 else "TCP4"
    return f"PROXY {family} {source} {target} {source_port} {target_port}\r\n".encode("ascii")


def caller_of(line: bytes) -> str | None:
    """The caller's address in a PROXY protocol v1 line, or None when the line is not one."""
    fields = line.decode("ascii", "replace").split()
    if len(fields) != 6 or fields[0] != "PROXY" or fields[1] not in ("TCP4", "TCP6"):
        return None
    try:
        return str(ipaddress.ip_address(fields[2]))
    except ValueError:
        return None


def socket_path(directory: Path, port: int) -> Path:
    return directory / f"{port}.sock"


async def tcp_to_unix(directory: Path, ports: list[int]) -> list[asyncio.Server]:
    """Host side: 127.0.0.1:port → <directory>/<port>.sock, each connection led by its caller's line."""
    def opener(port: int) -> Opener:
        async def open_target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Streams:
            target_reader, target_writer = await asyncio.open_unix_connection(str(socket_path(directory, port)))
            target_writer.write(caller_line(writer))
            return target_reader, target_writer
        return open_target

    return [await asyncio.start_server(_forward(opener(port)), "127.0.0.1", port) for port in ports]


def _listening_unix_socket(path: Path) -> socket.socket:
    """A Unix socket already listening when its file appears at `path` (owner only): bound and listened
    on under a temporary name, then renamed into place, so whoever sees the file can connect (a socket
    file exists from `bind`, and a connect before `listen` is refused)."""
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(staging))
    sock.listen(socket.SOMAXCONN)
    os.chmod(staging, 0o600)
    os.replace(staging, path)
    return sock


def start_unix_to_tcp(directory: Path, ports: list[int]) -> None:
    """Namespace side, in a daemon thread: <directory>/<port>.sock → 127.0.0.1:port, connecting from
    the caller's own loopback address (named by the connection's first line)."""
    def opener(port: int) -> Opener:
        async def open_target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Streams | None:
            caller = caller_of(await asyncio.wait_for(reader.readline(), CALLER_LINE_SECONDS))
            if caller is None:
                return None
            source = (caller, 0) if ipaddress.ip_address(caller) in LOOPBACK else None
            return await asyncio.open_connection("127.0.0.1", port, local_addr=source)
        return open_target

    async def serve() -> None:
        for port in ports:
            await asyncio.start_unix_server(_forward(opener(port)), sock=_listening_unix_socket(socket_path(directory, port)))
        await asyncio.Event().wait()

    threading.Thread(target=asyncio.run, args=(serve(),), daemon=True, name="netns-bridge").start()


def egress_line(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bytes:
    """The first line on the egress socket: where its host side is to connect."""
    return f"EGRESS {address} {port}\r\n".encode("ascii")


def egress_target(line: bytes) -> tuple[str, int] | None:
    """The loopback address and port an egress line names, or None: not such a line, or not loopback."""
    fields = line.decode("ascii", "replace").split()
    if len(fields) != 3 or fields[0] != "EGRESS" or not fields[2].isdigit():
        return None
    try:
        address = ipaddress.ip_address(fields[1])
    except ValueError:
        return None
    port = int(fields[2])
    return (str(address), port) if address.is_loopback and 0 < port < 65536 else None


async def egress_to_loopback(directory: Path) -> asyncio.Server:
    """Host side of the webhooks' egress: <directory>/egress.sock → the host's loopback address and port
    named by each connection's first line. Loopback only: the namespace reaches nothing else through it,
    and the deliverer has already checked the destination as it checks every other."""
    async def open_target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Streams | None:
        target = egress_target(await asyncio.wait_for(reader.readline(), CALLER_LINE_SECONDS))
        return None if target is None else await asyncio.open_connection(*target)

    return await asyncio.start_unix_server(_forward(open_target), sock=_listening_unix_socket(directory / EGRESS_SOCKET))
