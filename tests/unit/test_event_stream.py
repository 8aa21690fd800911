"""The event-stream reader splits GET /jobs/{id}/events the same way whichever client hands it the lines:
httpx's text lines without endings, or aiohttp's raw bytes with CRLF (the events benchmark)."""

from __future__ import annotations

import pytest

from serve_app.generation.event_stream import EventStreamReader

BODY = '{"job_id":"j-1","status":"processing"}'
STREAM = [": keep-alive", "", "event: job", "id: 7", f"data: {BODY}", "", "", "event: job", "id: 8",
          'data: {"status":"completed"}', ""]


@pytest.mark.parametrize("as_sent", [lambda line: line, lambda line: f"{line}\r\n".encode()],
                         ids=["text lines", "raw CRLF bytes"])
def test_a_keep_alive_then_two_events_come_out_as_sent(as_sent):
    reader = EventStreamReader()
    events = [event for line in STREAM if (event := reader.line(as_sent(line))) is not None]
    assert events == [
        {"comment": "keep-alive"},
        {"event": "job", "id": 7, "data": {"job_id": "j-1", "status": "processing"}, "raw": BODY},
        {"event": "job", "id": 8, "data": {"status": "completed"}, "raw": '{"status":"completed"}'},
    ]


def test_an_event_still_open_when_the_stream_ends_is_not_returned():
    reader = EventStreamReader()
    assert [reader.line(line) for line in ("event: job", "id: 9", f"data: {BODY}")] == [None, None, None]
