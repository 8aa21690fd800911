"""Storage faults the machine really produces, on 127.0.0.1: a moto server that can be stopped and
started again on its port, and a TCP proxy in front of it that can stall, refuse or throttle reads and
refuse writes."""

from __future__ import annotations

import socket
import threading
from typing import Literal

from serve_app.launcher import free_port
from tests.fault_proxy import TcpProxy, splice

Mode = Literal["forward", "stall-reads", "fail-reads", "throttle-reads", "fail-writes"]

UNAVAILABLE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: 93\r\n"
               b"Connection: close\r\n\r\n<Error><Code>ServiceUnavailable</Code><Message>injected fault</Message>"
               b"</Error>\n")
THROTTLED = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/xml\r\nContent-Length: 70\r\n"
             b"Connection: close\r\n\r\n<Error><Code>SlowDown</Code><Message>injected fault</Message></Error>\n")


class MotoServer:
    """moto's S3 on a fixed loopback port; `stop()` refuses connections, `start()` serves again.

    The buckets live in moto's in-process backend, so they survive a restart, as a real store's do.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._server = None
        self.start()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


class FaultProxy(TcpProxy[Mode]):
    """A TCP proxy on 127.0.0.1 in front of an S3 endpoint.

    Each connection is judged by its first request: in `stall-reads` a GET is accepted and never
    answered (the endpoint that "accepts and never answers"); in `fail-reads` a GET gets a 503, in
    `throttle-reads` a 429 (SlowDown); in `fail-writes` a PUT gets a 503; any other request, and every
    request in `forward`, goes through. Changing the mode drops the open
    connections, so pooled client connections reconnect and meet the new mode.
    """

    def __init__(self, upstream_port: int) -> None:
        super().__init__("forward")
        self.upstream_port = upstream_port
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.stalled = 0  # reads held without an answer so far
        self._start()

    def _accepted(self, client: socket.socket) -> None:
        self._track(client)
        threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            first = b""
            while b"\r\n" not in first:
                chunk = client.recv(65536)
                if not chunk:
                    return
                first += chunk
            is_read = first.startswith(b"GET ")
            if is_read and self.mode == "stall-reads":
                self.stalled += 1
                while client.recv(65536):  # take whatever is sent, answer nothing
                    pass
                return
            if (is_read and self.mode == "fail-reads") or (first.startswith(b"PUT ") and self.mode == "fail-writes"):
                client.sendall(UNAVAILABLE)
                return
            if is_read and self.mode == "throttle-reads":
                client.sendall(THROTTLED)
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._track(upstream)
            upstream.sendall(first)
            splice(client, upstream)
        except OSError:
            pass
        finally:
            client.close()
