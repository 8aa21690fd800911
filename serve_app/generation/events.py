"""Live job state for `GET /jobs/{job_id}/events`: one LISTEN connection per process, fanned out.

Every visible write in `db/jobs.py` announces the job id on `jobs.EVENTS_CHANNEL` when it commits. A
`JobEvents` hub per HTTP process (an Ingress replica) holds the one connection that LISTENs there and
a `Watch` (an asyncio queue) per open stream; a notification for a watched job asks for one read of
that job, and the snapshot it gives goes to every stream of the job. So an open stream costs neither a
database connection nor a thread: a thousand streams are a thousand queues, one LISTEN connection and
one reader connection, both the hub's own (the route pool is never touched).

- Reads run on the hub's own thread and connection. Notified reads are batched: whatever was notified
  while a read ran is served by the next one, a single `SELECT … WHERE job_id IN (…)`.
- A snapshot's version is the row's `updated_at` in epoch microseconds, which every visible write moves
  strictly forward (`jobs._touched`). A stream sends a snapshot only when it is newer than the last one
  it sent, or than the client's `Last-Event-ID`: repeated and overtaken reads are dropped, order holds.
- The LISTEN connection is probed while idle and reconnects with backoff when lost (a database
  restart); once back it re-reads every watched job, so a change announced while nobody was listening
  is still delivered. A read the database could not answer is retried the same way. Open streams keep
  sending keep-alives meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg
from fastapi import HTTPException
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import make_url
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Receive, Scope, Send

from db import jobs, queue_positions
from db.engine import make_engine, make_sessionmaker, sqlalchemy_url
from db.models import GenerationJob
from db.queue_positions import QueuePlace
from deployments.storage import Storage
from serve_app.deps import Services
from serve_app.generation.service import job_out
from serve_app.retrying import Backoff, connection_lost, database_unavailable, retrying

logger = logging.getLogger("sastre.events")

FINAL_STATUSES = frozenset(jobs.FINAL_STATUSES)
LISTEN_NAME = "sastre-job-events-listen"  # application_name of the hub's connections, seen in pg_stat_activity
READ_NAME = "sastre-job-events-read"
BACKOFF = Backoff(0.5, cap=5.0)  # between tries to reconnect, and to read again
CLIENT_RETRY_MS = 1000  # the `retry:` an EventSource waits before it reconnects after a close
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MISSING = object()  # what a read gives for a job that does not exist


@dataclass(frozen=True)
class Snapshot:
    """A job as GET /jobs/{id} shows it, at one version."""

    version: int
    status: str
    data: str  # the JSON body of GET /jobs/{id}, byte for byte

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    def event(self) -> str:
        return f"event: job\nid: {self.version}\ndata: {self.data}\n\n"


def version_of(job: GenerationJob) -> int:
    """`updated_at` in epoch microseconds, in integers (a float loses the last microseconds)."""
    return (job.updated_at - EPOCH) // timedelta(microseconds=1)


def snapshot(job: GenerationJob, storage: Storage, place: QueuePlace | None = None) -> Snapshot:
    body = job_out(job, storage, place).model_dump(mode="json")
    # Serialized as JSONResponse does, so a stream's data equals GET /jobs/{id}'s body.
    return Snapshot(version_of(job), job.status,
                    json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")))


class Watch:
    """One stream's view of one job: the snapshots read for it since it started watching."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.queue: asyncio.Queue = asyncio.Queue()


class JobEvents:
    """The hub of one HTTP process. Starts on first use, in the event loop that serves the streams."""

    def __init__(self, database_url: str, storage: Storage, *, probe_seconds: float = 15.0,
                 statement_timeout: float | None = None, pool_timeout: float = 5.0) -> None:
        url = make_url(sqlalchemy_url(database_url))
        self.listen_url = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.storage = storage
        self.probe_seconds = probe_seconds
        # The hub's own one-connection pool: reads never wait behind (or hold up) route threads.
        self._sessions: sessionmaker[Session] = make_sessionmaker(make_engine(
            url.update_query_dict({"application_name": READ_NAME}).render_as_string(hide_password=False),
            pool_size=1, max_overflow=0, pool_timeout=pool_timeout, statement_timeout=statement_timeout))
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="job-events-read")
        self._watches: dict[str, set[Watch]] = {}
        self._pending: set[str] = set()
        self._wanted = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.listening = False  # LISTEN is active right now
        self.reads = 0  # batched reads done (each one SELECT)

    @classmethod
    def for_services(cls, services: Services) -> JobEvents:
        settings = services.settings
        engine = services.sessions.kw["bind"]
        return cls(engine.url.render_as_string(hide_password=False), services.storage,
                   probe_seconds=settings.events_keepalive_seconds,
                   statement_timeout=settings.db_statement_timeout_seconds,
                   pool_timeout=settings.db_pool_timeout_seconds)

    def describe(self) -> dict:
        return {"listening": self.listening, "watched_jobs": len(self._watches),
                "streams": sum(len(w) for w in self._watches.values()), "reads": self.reads}

    # -- streams -----------------------------------------------------------------------------------
    async def watch(self, job_id: str) -> tuple[Watch, Snapshot] | None:
        """Follow a job: its current state, and a queue of its later states. None for an unknown job.

        The watch is registered before the first read, so a change committed after that read reaches
        it; the listener starts only for a job that exists, and re-reads every watched job once it is
        listening, which covers the moment before. Raises the database's error when the first read
        fails (the route answers 503).
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # First use, or a new event loop (a process that runs one loop per call): start afresh there.
            self._watches, self._pending, self._wanted, self._tasks, self._loop = {}, set(), asyncio.Event(), [], loop
        watch = Watch(job_id)
        self._watches.setdefault(job_id, set()).add(watch)
        try:
            first = (await loop.run_in_executor(self._thread, self._read, [job_id])).get(job_id)
        except BaseException:
            self.unwatch(watch)
            raise
        if first is None:
            self.unwatch(watch)
            return None
        if not self._tasks:
            self._tasks = [loop.create_task(self._read_loop()), loop.create_task(self._listen_loop())]
        return watch, first

    def unwatch(self, watch: Watch) -> None:
        watches = self._watches.get(watch.job_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.job_id]

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if self._loop is asyncio.get_running_loop():
            await asyncio.gather(*tasks, return_exceptions=True)
        self._sessions.kw["bind"].dispose()

    def _want(self, job_ids: Iterable[str]) -> None:
        self._pending.update(job_ids)
        self._wanted.set()

    def _deliver(self, job_id: str, item) -> None:
        for watch in list(self._watches.get(job_id, ())):
            watch.queue.put_nowait(item)

    # -- the reader ----------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        """Read what was notified, in batches. While the database does not answer, the batch is read again
        until it does (with whatever was notified meanwhile) and the streams send keep-alives; a read
        that fails otherwise is a bug, logged, and its streams wait for their job's next change."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            wanted = self._take_pending()
            if not wanted:
                continue
            reading = retrying("reading watched jobs", retry_if=database_unavailable, backoff=BACKOFF, tries=None,
                               log=logger)
            try:
                async for attempt in reading:
                    with attempt:
                        wanted |= self._take_pending()
                        snapshots = await loop.run_in_executor(self._thread, self._read, sorted(wanted))
            except Exception:
                logger.exception("reading %d watched jobs failed", len(wanted))
                continue
            self.reads += 1
            for job_id in wanted:
                self._deliver(job_id, snapshots.get(job_id, MISSING))

    def _take_pending(self) -> set[str]:
        """The notified jobs that someone still watches; the rest are dropped."""
        wanted = {job_id for job_id in self._pending if job_id in self._watches}
        self._pending = set()
        return wanted

    def _read(self, job_ids: list[str]) -> dict[str, Snapshot]:
        with self._sessions() as session:
            found = jobs.get_jobs(session, job_ids)
            waiting = queue_positions.places(session, [job.job_id for job in found if job.status == "pending"])
        return {job.job_id: snapshot(job, self.storage, waiting.get(job.job_id)) for job in found}

    # -- the listener --------------------------------------------------------------------------------
    async def _listen_loop(self) -> None:
        """Hold a LISTEN connection for as long as the hub runs (`close` cancels it). Each connection,
        once made, listens until it is lost; then connecting starts over, its backoff afresh, after the
        backoff's first wait (a server that accepts and drops connections is not asked in a tight loop)."""
        while True:
            connecting = retrying("job events: connecting to LISTEN", retry_if=connection_lost, backoff=BACKOFF,
                                  tries=None, log=logger)
            conn = await connecting(self._connect)
            try:
                async with conn:
                    await self._listen(conn)
            except Exception as exc:
                if not connection_lost(exc):
                    raise
                logger.warning("job events: LISTEN connection lost (%s: %s); connecting again in %.1f s",
                               type(exc).__name__, exc, BACKOFF.first)
            finally:
                self.listening = False
            await asyncio.sleep(BACKOFF.first)

    async def _connect(self) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(self.listen_url, autocommit=True, application_name=LISTEN_NAME,
                                                     connect_timeout=max(2, int(self.probe_seconds)))

    async def _listen(self, conn: psycopg.AsyncConnection) -> None:
        """LISTEN on `conn` and ask for a read of each watched job notified, until the connection is lost."""
        await conn.execute(f"LISTEN {jobs.EVENTS_CHANNEL}")
        self.listening = True
        self._want(self._watches)  # whatever changed while nobody was listening
        while True:
            async for notice in conn.notifies(timeout=self.probe_seconds):
                if notice.payload in self._watches:
                    self._want([notice.payload])
            async with asyncio.timeout(self.probe_seconds):
                await conn.execute("SELECT 1")  # idle: prove the connection is still there


# -- the HTTP side ---------------------------------------------------------------------------------------
class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` response that lets go of its watch however it ends (even unstarted)."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def last_seen(last_event_id: str | None) -> int | None:
    """The version a reconnecting client already has; anything that is not one is ignored."""
    try:
        return int(last_event_id) if last_event_id is not None else None
    except ValueError:
        return None


async def open_stream(services: Services, job_id: str, last_event_id: str | None) -> Response:
    """The response of GET /jobs/{id}/events: 404 for an unknown job, 204 when the client already has the
    job's final state (an EventSource stops reconnecting), else the stream."""
    if services.events is None:
        services.events = JobEvents.for_services(services)
    events: JobEvents = services.events
    watched = await events.watch(job_id)
    if watched is None:
        raise HTTPException(404, f"job {job_id} not found")
    watch, first = watched
    seen = last_seen(last_event_id)
    if first.final and seen is not None and seen >= first.version:
        events.unwatch(watch)
        return Response(status_code=204)
    settings = services.settings
    stream = job_stream(watch, first, seen, settings.events_keepalive_seconds, settings.events_stream_seconds)
    return EventStreamResponse(stream, lambda: events.unwatch(watch))


async def job_stream(watch: Watch, first: Snapshot, seen: int | None, keepalive_seconds: float,
                     stream_seconds: float) -> AsyncIterator[str]:
    """Events `job` for each newer state, a comment while idle; ends after a final state or after
    `stream_seconds` (the client resumes from its Last-Event-ID)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + stream_seconds
    sent, sent_data = -1 if seen is None else seen, None
    current = first
    yield f"retry: {CLIENT_RETRY_MS}\n\n"
    while True:
        # A newer state; or, while pending, the same state further up the queue (its place is not versioned).
        if current.version > sent or (current.version == sent and sent_data is not None and current.data != sent_data):
            yield current.event()
            sent, sent_data = current.version, current.data
        if current.final:
            return
        item = None
        while not isinstance(item, Snapshot):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(min(keepalive_seconds, remaining)):
                    item = await watch.queue.get()
            except TimeoutError:
                if deadline - loop.time() > 0:
                    yield ": keep-alive\n\n"
                continue
            if item is MISSING:
                return
        current = item
