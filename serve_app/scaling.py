"""The scale command: change one deployment's replicas in the running application, as ops would.

The Ray dashboard shows deployments and replicas but cannot change them. `python -m serve_app.cli
scale` reads the application's deployed config from Serve's REST API on the dashboard
(`GET /api/serve/applications/`), changes that one deployment's autoscaling bounds or fixed count,
and PUTs the whole config back (`PUT /api/serve/applications/`), exactly what `serve deploy` sends:
Serve then changes only that deployment's replica target, in place, without restarting the others.
Requests carry Ray's token (Ray 2.60 turns token auth on): the one `ray get-auth-token` prints, found
where Ray looks for it (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH`, `~/.ray/auth_token`).

Refusals (an unknown deployment, min > max, no dashboard, a rejected token) are a `ScaleRefused` with
a message for ops and nothing changed.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

import httpx

APPLICATIONS_PATH = "/api/serve/applications/"
DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
# The top-level keys of Serve's details that PUT takes back as they are; the rest (controller, proxies,
# deploy mode, ...) is server state that the deploy schema refuses.
DEPLOY_KEYS = ("proxy_location", "http_options", "grpc_options", "logging_config", "target_capacity")
# Serve's details expand every autoscaling option; only these are worth carrying into a new config.
AUTOSCALING_KEYS = ("min_replicas", "max_replicas", "initial_replicas", "target_ongoing_requests",
                    "upscale_delay_s", "downscale_delay_s", "downscale_to_zero_delay_s", "look_back_period_s",
                    "upscaling_factor", "downscaling_factor")


class ScaleRefused(Exception):
    """The change was not made; the message says why, for ops."""


@dataclass(frozen=True)
class Scale:
    """The change asked for: bounds for the autoscaler, or a fixed count."""

    deployment: str
    min_replicas: int | None = None
    max_replicas: int | None = None
    replicas: int | None = None

    @property
    def fixed(self) -> bool:
        return self.replicas is not None


def ray_token() -> str | None:
    """The token `ray get-auth-token` prints, from wherever Ray itself would load it."""
    from ray._raylet import AuthenticationTokenLoader

    loader = AuthenticationTokenLoader.instance()
    return loader.get_raw_token(ignore_auth_mode=True) if loader.has_token(ignore_auth_mode=True) else None


class ServeApi:
    """Serve's REST API on the Ray dashboard."""

    def __init__(self, address: str = DEFAULT_DASHBOARD, token: str | None = None, timeout: float = 30) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.address = address
        self.http = httpx.Client(base_url=address, headers=headers, timeout=timeout)

    def _call(self, method: str, body: dict | None = None) -> httpx.Response:
        try:
            response = self.http.request(method, APPLICATIONS_PATH, json=body)
        except httpx.HTTPError as exc:
            raise ScaleRefused(f"cannot reach the Ray dashboard at {self.address} ({exc}); is the service "
                               "running? (`--address` names another dashboard)") from None
        if response.status_code in (401, 403):
            raise ScaleRefused(f"the Ray dashboard refused the token ({response.status_code}: {response.text.strip()}); "
                               "`.venv/bin/ray get-auth-token` prints the right one, RAY_AUTH_TOKEN passes it")
        if response.status_code != 200:
            raise ScaleRefused(f"Serve refused the request ({response.status_code}): {response.text.strip()[:2000]}")
        return response

    def details(self) -> dict:
        return self._call("GET").json()

    def deploy(self, config: dict) -> None:
        self._call("PUT", config)


def application_of(details: dict, deployment: str, app: str | None) -> str:
    """The application holding `deployment` (or `app`, checked); refuses unknown names, listing the known."""
    apps = details.get("applications") or {}
    if not apps:
        raise ScaleRefused("no Serve application is running")
    if app is not None and app not in apps:
        raise ScaleRefused(f"no application {app!r}; running: {', '.join(sorted(apps))}")
    holding = [name for name in ([app] if app else apps) if deployment in apps[name]["deployments"]]
    if not holding:
        known = sorted({name for name in ([app] if app else apps) for name in apps[name]["deployments"]})
        raise ScaleRefused(f"unknown deployment {deployment!r}; known deployments: {', '.join(known)}")
    if len(holding) > 1:
        raise ScaleRefused(f"{deployment!r} is in several applications ({', '.join(holding)}): name one with --app")
    return holding[0]


def deploy_config(details: dict) -> dict:
    """The full config that `PUT /api/serve/applications/` takes, rebuilt from what GET reports."""
    config = {key: details[key] for key in DEPLOY_KEYS if details.get(key) is not None}
    config["applications"] = [copy.deepcopy(app["deployed_app_config"])
                              for app in details["applications"].values() if app.get("deployed_app_config")]
    return config


def rescaled(details: dict, app: str, scale: Scale) -> dict:
    """The deploy config with `scale` applied to its deployment, everything else as deployed."""
    config = deploy_config(details)
    [app_config] = [entry for entry in config["applications"] if entry["name"] == app]
    entries = app_config.setdefault("deployments", [])
    entry = next((entry for entry in entries if entry["name"] == scale.deployment), None)
    if entry is None:
        entry = {"name": scale.deployment}
        entries.append(entry)
    if scale.fixed:
        # An explicit null: an entry without it keeps the autoscaling_config written in the code, and
        # Serve lets that win over num_replicas.
        entry["autoscaling_config"] = None
        entry["num_replicas"] = scale.replicas
        return config
    running = details["applications"][app]["deployments"][scale.deployment]["deployment_config"]
    current = entry.get("autoscaling_config") or running.get("autoscaling_config") or {}
    bounds = {key: current[key] for key in AUTOSCALING_KEYS if current.get(key) is not None}
    if scale.min_replicas is not None:
        bounds["min_replicas"] = scale.min_replicas
    if scale.max_replicas is not None:
        bounds["max_replicas"] = scale.max_replicas
    low, high = bounds.get("min_replicas", 1), bounds.get("max_replicas", 1)
    if low > high:
        raise ScaleRefused(f"min_replicas {low} > max_replicas {high} for {scale.deployment}: nothing changed")
    bounds.pop("initial_replicas", None)  # only meaningful at first deploy; it must also lie within the new bounds
    entry.pop("num_replicas", None)
    entry["autoscaling_config"] = bounds
    return config


def describe(details: dict, app: str, deployment: str) -> str:
    """One line for ops: how the deployment is sized, and its replicas now."""
    found = details["applications"][app]["deployments"][deployment]
    autoscaling = found["deployment_config"].get("autoscaling_config")
    sizing = (f"autoscaling {autoscaling['min_replicas']}..{autoscaling['max_replicas']}" if autoscaling
              else f"fixed {found['deployment_config'].get('num_replicas')}")
    running = sum(1 for replica in found.get("replicas", []) if replica.get("state") == "RUNNING")
    return f"{deployment}: {sizing}; target {found['target_num_replicas']} replicas, {running} running ({found['status']})"


def applied(details: dict, app: str, scale: Scale) -> bool:
    """The new sizing is in force and the running replicas match Serve's target."""
    found = details["applications"][app]["deployments"].get(scale.deployment)
    if found is None:
        return False
    config = found["deployment_config"]
    autoscaling = config.get("autoscaling_config")
    if scale.fixed:
        sized = autoscaling is None and config.get("num_replicas") == scale.replicas
    else:
        sized = autoscaling is not None and all(
            wanted is None or autoscaling.get(key) == wanted
            for key, wanted in (("min_replicas", scale.min_replicas), ("max_replicas", scale.max_replicas)))
    running = sum(1 for replica in found.get("replicas", []) if replica.get("state") == "RUNNING")
    return sized and found["status"] == "HEALTHY" and running == found["target_num_replicas"]


def scale_deployment(api: ServeApi, scale: Scale, app: str | None = None, wait_seconds: float = 60,
                     say: Callable[[str], None] = print) -> bool:
    """Apply `scale`, saying before and after; True once Serve runs the new count, False while it still
    applies after `wait_seconds` (a GPU replica loading its weights takes minutes)."""
    details = api.details()
    app = application_of(details, scale.deployment, app)
    config = rescaled(details, app, scale)
    say("before: " + describe(details, app, scale.deployment))
    api.deploy(config)
    deadline = time.monotonic() + wait_seconds
    while True:
        details = api.details()
        if applied(details, app, scale):
            say("after:  " + describe(details, app, scale.deployment))
            return True
        if time.monotonic() >= deadline:
            say("still applying: " + describe(details, app, scale.deployment) + " (watch the dashboard's Serve tab)")
            return False
        time.sleep(1)
