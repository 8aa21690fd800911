"""Ray's bundled HAProxy passes the caller on (serve_app/edge/haproxy_forwarding.py), run for real on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from serve_app.cli import caller_environment
from serve_app.edge.haproxy_forwarding import SETTINGS_VARIABLE, forwarding_config
from serve_app.launcher import free_port
from serve_app.settings import Settings

LOAD_BALANCER = "127.0.0.9"
# The shape of the configuration Ray 2.60 renders (haproxy_templates.py), reduced to what routes a request.
RAY_SHAPED = """global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s
frontend http_frontend
    bind 127.0.0.1:{port}
    default_backend ingress
backend ingress
    server replica 127.0.0.1:{upstream}
"""


class EchoForwardedFor(BaseHTTPRequestHandler):
    """The ingress replica's view: answers with the X-Forwarded-For it received (one header line each)."""

    def do_GET(self) -> None:
        body = json.dumps(self.headers.get_all("X-Forwarded-For") or []).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def haproxy_in_front(tmp_path) -> Iterator[str]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), EchoForwardedFor)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(RAY_SHAPED.format(port=port, upstream=upstream.server_address[1]))
    # what Ray's HAProxy manager runs in a local run: its binary path, now the forwarding script
    local_run = caller_environment(Settings(data_dir=tmp_path / "data", trusted_proxies=[LOAD_BALANCER]), haproxy=True)
    process = subprocess.Popen([local_run["RAY_SERVE_HAPROXY_BINARY_PATH"], "-db", "-f", str(config)],
                               env={**os.environ, **local_run}, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    base_url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(base_url, timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read().decode()
                time.sleep(0.05)
        yield base_url
    finally:
        process.terminate()
        process.wait(timeout=10)
        upstream.shutdown()


def forwarded_for(base_url: str, address: str, header: str | None = None) -> list[str]:
    """The X-Forwarded-For lines the replica gets for a caller on `address`."""
    headers = {"X-Forwarded-For": header} if header else {}
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address)) as client:
        return client.get(base_url, headers=headers).json()


def test_haproxy_names_the_caller_and_drops_what_an_untrusted_caller_wrote(tmp_path):
    with haproxy_in_front(tmp_path) as base_url:
        assert forwarded_for(base_url, "127.0.0.51") == ["127.0.0.51"]  # Ray's own config: no header at all
        assert forwarded_for(base_url, "127.0.0.52", "198.51.100.1") == ["127.0.0.52"]
        assert forwarded_for(base_url, "127.0.0.1", "198.51.100.2") == ["127.0.0.1"]
        # a trusted load balancer's header is kept, and HAProxy adds the balancer itself after it
        assert forwarded_for(base_url, LOAD_BALANCER, "203.0.113.7") == ["203.0.113.7", LOAD_BALANCER]


def test_a_configuration_of_another_shape_is_refused_rather_than_served_without_the_caller():
    with pytest.raises(ValueError, match="frontend http_frontend"):
        forwarding_config("global\ndefaults\n    mode http\nfrontend main\n    bind :80\n", [])
    untrusting = forwarding_config(RAY_SHAPED, [])
    assert "    http-request del-header X-Forwarded-For\n" in untrusting and "unless" not in untrusting


def test_a_local_run_tells_rays_servers_whose_x_forwarded_for_to_believe(tmp_path):
    """uvicorn's default (127.0.0.1) believed any caller on the host's loopback behind Serve's proxy."""
    serve_proxy = caller_environment(Settings(data_dir=tmp_path, trusted_proxies=["10.0.0.0/8"]), haproxy=False)
    assert serve_proxy == {"FORWARDED_ALLOW_IPS": "10.0.0.0/8"}
    assert caller_environment(Settings(data_dir=tmp_path), haproxy=False) == {"FORWARDED_ALLOW_IPS": ""}
    behind_haproxy = caller_environment(Settings(data_dir=tmp_path), haproxy=True)
    assert behind_haproxy["FORWARDED_ALLOW_IPS"] == "127.0.0.1"  # HAProxy's address, inside the namespace
    assert json.loads(behind_haproxy[SETTINGS_VARIABLE])["binary"].endswith("/haproxy")
    assert os.access(behind_haproxy["RAY_SERVE_HAPROXY_BINARY_PATH"], os.X_OK)
