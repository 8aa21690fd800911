"""Reading `GET /jobs/{job_id}/events` as a client does: its `text/event-stream` lines, split into events.

The route writes `event: job`, `id: <version>` and `data: <the body of GET /jobs/{job_id}>`, a blank
line after each event, and `: keep-alive` comments while idle. The tests, the benchmarks and any tool
read the stream with this one reader, whatever HTTP client hands them its lines.
"""

from __future__ import annotations

import json


class EventStreamReader:
    """Fed a stream's lines in order, returns each event as the blank line that ends it arrives."""

    def __init__(self) -> None:
        self._block: list[str] = []

    def line(self, line: str | bytes) -> dict | None:
        """One line (with or without its line ending); the event it completes, else None.

        An event is `{"comment": text}` for a block of comments only (a keep-alive), or
        `{"event", "id", "data", "raw"}` for one with data: `data` parsed as JSON, `raw` as sent, so a
        caller can compare it byte for byte with GET /jobs/{job_id}.
        """
        text = (line.decode() if isinstance(line, bytes) else line).rstrip("\r\n")
        if text:
            self._block.append(text)
            return None
        block, self._block = self._block, []
        if not block:
            return None
        if all(entry.startswith(":") for entry in block):
            return {"comment": "\n".join(entry[1:].strip() for entry in block)}
        fields: dict[str, str] = {}
        for entry in block:
            if not entry.startswith(":"):
                name, _, value = entry.partition(": ")
                fields[name] = value
        if "data" not in fields:
            return None
        return {"event": fields.get("event", "message"), "id": int(fields["id"]), "data": json.loads(fields["data"]),
                "raw": fields["data"]}
