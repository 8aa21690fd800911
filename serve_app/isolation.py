"""Keep a local run's Ray processes off the network while the API stays on the host's 127.0.0.1.

Ray 2.60's core processes (GCS, raylet, workers) listen on every interface whatever node IP they are
given. On Linux with the right privileges, the local run therefore starts Ray and the application in
a private network namespace that has only loopback, and bridges the HTTP and dashboard ports back to
the host's 127.0.0.1 through Unix sockets, which reach across namespaces as files.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Awaitable, Callable

Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


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
            target_reader, target_writer = await open_target()
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(_pipe(reader, target_writer), _pipe(target_reader, writer))
        finally:
            writer.close()
            target_writer.close()
    return handle


def socket_path(directory: Path, port: int) -> Path:
    return directory / f"{port}.sock"


async def tcp_to_unix(directory: Path, ports: list[int]) -> list[asyncio.Server]:
    """Host side: 127.0.0.1:port → <directory>/<port>.sock."""
    return [
        await asyncio.start_server(
            _forward(lambda p=port: asyncio.open_unix_connection(str(socket_path(directory, p)))), "127.0.0.1", port
        )
        for port in ports
    ]


def start_unix_to_tcp(directory: Path, ports: list[int]) -> None:
    """Namespace side, in a daemon thread: <directory>/<port>.sock → 127.0.0.1:port."""
    async def serve() -> None:
        for port in ports:
            path = socket_path(directory, port)
            path.unlink(missing_ok=True)
            await asyncio.start_unix_server(
                _forward(lambda p=port: asyncio.open_connection("127.0.0.1", p)), str(path)
            )
            os.chmod(path, 0o600)
        await asyncio.Event().wait()

    threading.Thread(target=asyncio.run, args=(serve(),), daemon=True, name="netns-bridge").start()
