// Follows a service's event stream with EventSource.
//
// When the connection drops, the browser reconnects by itself and sends `Last-Event-ID`,
// so the server resumes after the last event the page got. When the browser gives up (an
// HTTP error, e.g. a 503 while Redis is away) the stream is opened again here, after a
// growing pause, from the last event id (`?last_event_id=`). Either way an event that
// arrives twice is recognized by `ServiceView.apply`, so nothing is shown twice.

export const EVENT_TYPES = [
  "service",
  "step",
  "queued",
  "backpressure",
  "started",
  "token",
  "restart",
  "result",
  "done",
  "error",
  "cancelled",
];
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 15000;

function withParam(url, name, value) {
  const u = new URL(url, location.href);
  u.searchParams.set(name, value);
  return u.pathname + u.search;
}

/**
 * Open `url` and hand every event to `onEvent` until `close()`.
 *
 * @param {string} url the service's `events_url`.
 * @param {{onEvent: Function, onConnection: Function, lastId: Function, check: Function}}
 *   hooks `onEvent({id, type, raw, data})`; `onConnection("open"|"reconnecting")`;
 *   `lastId()` the id to resume after when the stream is opened again here; `check()`,
 *   asked before that, resolves to whether the stream is still worth opening (the service
 *   may have ended, or be gone).
 * @returns {{close: Function}} a handle.
 */
export function follow(url, { onEvent, onConnection, lastId, check }) {
  let source = null;
  let closed = false;
  let timer = null;
  let pause = RETRY_MIN_MS;

  const handle = (type) => (ev) => {
    if (closed || !(ev instanceof MessageEvent)) return;
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch {
      return; // not an event of ours
    }
    pause = RETRY_MIN_MS;
    onEvent({ id: ev.lastEventId || null, type, raw: ev.data, data });
  };

  const open = () => {
    if (closed) return;
    const after = lastId();
    source = new EventSource(after ? withParam(url, "last_event_id", after) : url);
    for (const type of EVENT_TYPES) source.addEventListener(type, handle(type));
    source.addEventListener("open", () => onConnection("open"));
    // `error` is both the stream's `event: error` (a MessageEvent, handled above) and the
    // connection's failure (a plain Event).
    source.addEventListener("error", (ev) => {
      if (closed || ev instanceof MessageEvent) return;
      onConnection("reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        source = null;
        timer = setTimeout(reopen, pause);
        pause = Math.min(RETRY_MAX_MS, pause * 2);
      }
    });
  };

  const reopen = async () => {
    if (closed) return;
    if (await check()) {
      open();
    } else {
      closed = true;
    }
  };

  open();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      if (source) source.close();
    },
  };
}
