// Following a job until it ends: the server's event stream, or polling GET /jobs/{id} every 2 s where the
// stream is unavailable (a server without /jobs/{id}/events, a proxy that buffers, no EventSource).

import { api } from "./api.js";

export const FINAL = new Set(["completed", "failed", "canceled", "expired"]);
const POLL_MS = 2000;

// Calls onUpdate(job) with each new state, onError(message) on a lost service; returns stop().
export function watchJob(jobId, { onUpdate, onError, onMode = () => {} }) {
  let stopped = false;
  let source = null;
  let timer = null;

  const stop = () => {
    stopped = true;
    if (source) source.close();
    if (timer) clearTimeout(timer);
  };

  const deliver = (job) => {
    if (stopped) return;
    onUpdate(job);
    if (FINAL.has(job.status)) stop();
  };

  const poll = async () => {
    if (stopped) return;
    try {
      deliver(await api(`/jobs/${encodeURIComponent(jobId)}`));
    } catch (error) {
      if (error.status === 404) {
        onError(error.message);
        stop();
        return;
      }
      onError(error.message); // transient (503, lost connection): keep trying
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  };

  const startPolling = () => {
    if (source) source.close();
    source = null;
    onMode("polling");
    poll();
  };

  if (typeof EventSource === "undefined") {
    startPolling();
    return stop;
  }

  let received = false;
  source = new EventSource(`/jobs/${encodeURIComponent(jobId)}/events`);
  onMode("stream");
  const onMessage = (event) => {
    received = true;
    try {
      deliver(JSON.parse(event.data));
    } catch {
      /* a malformed event: the next one carries the whole state again */
    }
  };
  source.addEventListener("job", onMessage);
  source.addEventListener("message", onMessage);
  source.addEventListener("error", () => {
    if (stopped) return;
    // Before any message: no stream here (404, wrong type). After: the browser reconnects by itself
    // unless it gave up (CLOSED); then polling takes over.
    if (!received || source.readyState === EventSource.CLOSED) startPolling();
  });
  return stop;
}
