"""Many concurrent shoppers against a running app: each polls a job and now and then posts one, until
the test says stop (load tests run "until the lock is over", not for a fixed time)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NamedTuple

import httpx


class Answer(NamedTuple):
    status: int  # 0: the connection dropped, no answer at all
    retry_after: str | None
    text: str


async def poll_and_post(base_url: str, job_ids: list[str], body: dict, done: Callable[[], bool], *,
                        clients: int = 300, post_every: int = 10, pause: float = 0.0) -> list[Answer]:
    """`clients` clients, each turn a GET /jobs/{id} of one of the `job_ids` given, or every
    `post_every`-th turn a POST /generate of `body` (accepted ids are added to `job_ids`), with `pause`
    seconds between turns, until `done()`."""
    polled = len(job_ids)
    answers: list[Answer] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        async def one(index: int) -> None:
            turn = 0
            while not done():
                turn += 1
                try:
                    if (index + turn) % post_every == 0:
                        response = await client.post("/generate", json=body)
                        if response.status_code == 202:
                            job_ids.append(response.json()["job_id"])
                    else:
                        response = await client.get(f"/jobs/{job_ids[(index + turn) % polled]}")
                except httpx.TransportError as exc:  # counted: a dropped connection is no answer either
                    answers.append(Answer(0, None, repr(exc)))
                    continue
                answers.append(Answer(response.status_code, response.headers.get("retry-after"), response.text))
                await asyncio.sleep(pause)

        await asyncio.gather(*(one(i) for i in range(clients)))
    return answers
