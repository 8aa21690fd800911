"""Ray's bundled HAProxy, made to pass the caller on to the ingress (`option forwardfor`).

Ray 2.60 renders HAProxy's configuration from a fixed template with no `option forwardfor`, so every
caller reached the ingress replica as HAProxy's own address: one rate-limit budget and one login
throttle for the whole world. Ray lets the HAProxy binary be chosen (`RAY_SERVE_HAPROXY_BINARY_PATH`),
so a local run points it at a two-line script that runs this module: it writes a copy of Ray's
configuration with two lines added and execs the real HAProxy on the copy, on every start and reload.

- `option forwardfor`: HAProxy appends the address it took the request from to `X-Forwarded-For`.
- `http-request del-header X-Forwarded-For` in the HTTP frontend, unless the request comes from a
  trusted proxy (`SASTRE_TRUSTED_PROXIES`): a client-written header never reaches the ingress, so
  no caller can name itself, while a load balancer's header is kept and extended.

Ray's own servers behind HAProxy (uvicorn) take the client from that header when the connection
comes from a trusted address (`FORWARDED_ALLOW_IPS`, set by `serve_app.cli`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SETTINGS_VARIABLE = "SASTRE_HAPROXY_FORWARDING"  # JSON: {"binary": the real HAProxy, "trusted": [networks]}


def forwarding_config(config: str, trusted: list[str]) -> str:
    """Ray's HAProxy configuration with the caller passed on; ValueError if the template changed shape."""
    strip = "    http-request del-header X-Forwarded-For"
    if trusted:
        strip += " unless { src " + " ".join(trusted) + " }"
    added = {"defaults": "    option forwardfor", "frontend http_frontend": strip}
    lines = []
    for line in config.splitlines():
        lines.append(line)
        if line.strip() in added:
            lines.append(added.pop(line.strip()))
    if added:
        raise ValueError(f"Ray's HAProxy configuration has no {' or '.join(added)} section to pass the caller on")
    return "\n".join(lines) + "\n"


def launcher_script(directory: Path) -> Path:
    """An executable in `directory` for RAY_SERVE_HAPROXY_BINARY_PATH that runs `main` with this Python."""
    script = directory / "haproxy-forwarding"
    text = f'#!/bin/sh\nexec "{sys.executable}" -m serve_app.edge.haproxy_forwarding "$@"\n'
    directory.mkdir(parents=True, exist_ok=True)
    partial = script.with_suffix(f".{os.getpid()}")
    partial.write_text(text)
    partial.chmod(0o755)
    partial.replace(script)  # runs starting side by side never see half a script
    return script


def main(argv: list[str]) -> None:
    """Run HAProxy as Ray asked (`argv`), on a copy of its configuration that passes the caller on."""
    settings = json.loads(os.environ[SETTINGS_VARIABLE])
    args = list(argv)
    at = args.index("-f") + 1
    config = Path(args[at])
    forwarding = config.with_name(config.name + ".forwarding")
    forwarding.write_text(forwarding_config(config.read_text(), settings["trusted"]))
    args[at] = str(forwarding)
    os.execv(settings["binary"], [settings["binary"], *args])


if __name__ == "__main__":
    main(sys.argv[1:])
