"""Each part's health, checked live: the database, storage, and every deployment's own check.

The full report (errors, the runner's jobs, the model, this replica's threads and pool) is for admins;
the public view keeps only ok/degraded per part and the model profile actually serving.
"""

from __future__ import annotations

import asyncio
import os
import socket

from anyio import to_thread
from fastapi.concurrency import run_in_threadpool

from db.engine import ping
from serve_app.deps import Services


async def health_report(services: Services) -> dict:
    """Every part's health with its details: the admin view, GET /admin/health."""
    report: dict = {}

    def check_database() -> None:
        with services.sessions() as session:
            ping(session)

    for name, check in (("database", check_database), ("storage", services.storage.check)):
        try:
            await run_in_threadpool(check)  # the route threads, which the pool is sized for
            report[name] = {"ok": True}
        except Exception as exc:
            report[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    deployments = {}
    for name, check in services.deployment_checks.items():
        try:
            deployments[name] = {"ok": True, **(await asyncio.wait_for(check(), timeout=10))}
        except Exception as exc:
            deployments[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    report["deployments"] = deployments
    engine = services.sessions.kw["bind"]
    report["ingress"] = {"host": socket.gethostname(), "pid": os.getpid(),
                         "threads": to_thread.current_default_thread_limiter().total_tokens,
                         "pool": {"size": engine.pool.size(), "checked_out": engine.pool.checkedout()}}
    model = deployments.get("SdxlTurboGenerator", {})
    warnings = [model["note"]] if model.get("note") else []
    healthy = report["database"]["ok"] and report["storage"]["ok"] and all(d["ok"] for d in deployments.values())
    return {"status": "ok" if healthy else "degraded", "model_profile": model.get("profile"),
            "requested_profile": model.get("requested_profile"), "warnings": warnings, **report}


def public_view(report: dict) -> dict:
    """What anyone may see: no host, process or job (a job id is all it takes to read or cancel a
    job), and no error text."""
    warnings = []
    if report["warnings"]:
        warnings.append(f"model profile {report['requested_profile']} fell back to {report['model_profile']}: "
                        "images are NOT real renders")
    return {"status": report["status"], "model_profile": report["model_profile"], "warnings": warnings,
            "database": {"ok": report["database"]["ok"]}, "storage": {"ok": report["storage"]["ok"]},
            "deployments": {name: {"ok": part["ok"]} for name, part in report["deployments"].items()}}
