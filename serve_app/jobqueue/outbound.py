"""The one outbound HTTP request the service makes: a webhook POST to an endpoint an admin registered.

Written out on asyncio streams rather than through an HTTP client, because every step is a guarantee:
the host is resolved here and each address checked (in production: only public ones, no private,
loopback, link-local or reserved address, so a DNS answer cannot point us inside), then we connect to
that very address (no second resolution for a rebinding answer to slip into), TLS verifying the host's
name. One request, `Connection: close`; of the answer only the status line is read, within its first
`HEAD_BYTES`: a redirect is an answer like any other (never followed) and a body is never read. The
whole exchange is bounded by one timeout.

In `make run`, Ray lives in a loopback-only network namespace: a loopback destination there is the
namespace's own. With `egress_socket` set (by the local run), loopback destinations are reached through
that Unix socket instead, whose host side connects on the host's loopback (serve_app/isolation.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from serve_app.isolation import egress_line

HEAD_BYTES = 4096  # of an answer, only its status line is wanted, and only this much is ever read

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(ValueError):
    """A URL or address webhooks may not be sent to: the reason is a sentence for admins."""


@dataclass(frozen=True)
class Destination:
    https: bool
    host: str
    port: int
    target: str  # path and query
    host_header: str


def destination(url: str, production: bool) -> Destination:
    """The parts of a webhook URL, or DestinationRefused: http(s) only, https only in production, no
    credentials or fragment; a literal address must pass `check_address` too."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise DestinationRefused(f"not a URL: {error}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise DestinationRefused("the URL must be http(s)://host/...")
    if production and parts.scheme != "https":
        raise DestinationRefused("production sends webhooks over https only")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise DestinationRefused("the URL may carry no credentials and no #fragment")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        literal = None  # a name: its addresses are checked when it is resolved
    if literal is not None:
        check_address(literal, production)
    https = parts.scheme == "https"
    port = port or (443 if https else 80)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return Destination(https, parts.hostname, port, (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                       netloc)


def check_address(address: Address, production: bool) -> None:
    """In production, only public unicast addresses (an IPv4-mapped IPv6 address as the IPv4 it maps)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if production and (not address.is_global or address.is_multicast):
        raise DestinationRefused(f"{address} is not a public address: production sends webhooks to public ones only")


async def resolve(target: Destination, production: bool) -> list[Address]:
    """Every address the host resolves to now, each checked: one refused address refuses the host."""
    infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    for address in addresses:
        check_address(address, production)
    return addresses


async def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float, production: bool,
               egress_socket: str | None = None) -> int:
    """POST `body` to `url` once; the answer's status code. Raises DestinationRefused, OSError (connect,
    TLS, reset), TimeoutError, or ValueError (not an HTTP answer)."""
    async with asyncio.timeout(timeout):
        target = destination(url, production)
        addresses = await resolve(target, production)
        reader, writer = await _connect(target, addresses, egress_socket)
        try:
            head = (f"POST {target.target} HTTP/1.1\r\nHost: {target.host_header}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
                    "User-Agent: Sastre-Webhooks/1\r\n"
                    + "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n")
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
            return _status_code(await _status_line(reader))
        finally:
            writer.close()


async def _connect(target: Destination, addresses: list[Address], egress_socket: str | None
                   ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the first address that takes one (TLS for https, verifying the host's name)."""
    tls = ssl.create_default_context() if target.https else None
    name = target.host if target.https else None
    error: OSError | None = None
    for address in addresses:
        try:
            if egress_socket and address.is_loopback:
                reader, writer = await asyncio.open_unix_connection(egress_socket)
                writer.write(egress_line(address, target.port))
                if tls is not None:
                    await writer.start_tls(tls, server_hostname=name)
                return reader, writer
            return await asyncio.open_connection(str(address), target.port, ssl=tls, server_hostname=name)
        except OSError as failed:
            error = failed
    raise error or OSError(f"{target.host} resolved to no address")


async def _status_line(reader: asyncio.StreamReader) -> bytes:
    head = b""
    while b"\r\n" not in head and len(head) < HEAD_BYTES:
        chunk = await reader.read(HEAD_BYTES - len(head))
        if not chunk:
            break
        head += chunk
    return head.split(b"\r\n", 1)[0]


def _status_code(line: bytes) -> int:
    fields = line.split(b" ", 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/1.") or not fields[1].isdigit() or len(fields[1]) != 3:
        raise ValueError(f"not an HTTP answer: {line[:80]!r}")
    return int(fields[1])
