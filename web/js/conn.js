// The WebSocket connection: authenticate with the login token (`auth`),
// then, on every connection after the first, `resume` with the previous
// session's resume token and the last seq seen per room, so that what was
// missed while away is replayed in order before anything live. A dropped
// connection is reopened (to whatever node the address leads to) with
// backoff; the page shows a quiet "reconnecting" state meanwhile.

import { emit, resumeSeqs } from "./store.js";

const handlers = new Map();

/** Registers a handler for a server frame type ("message", "ack", ...). */
export function onFrame(type, fn) {
  if (!handlers.has(type)) handlers.set(type, []);
  handlers.get(type).push(fn);
}

export const conn = {
  ws: null,
  token: null,
  resumeToken: null,
  node: null,
  /** authenticated, caught up, and live */
  live: false,
  stopped: true,
  attempt: 0,
  timer: null,

  start(token) {
    this.token = token;
    this.stopped = false;
    this.resumeToken = null;
    this.open();
  },

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this.live = false;
  },

  /** Sends a frame if the connection is live; false otherwise. */
  send(frame) {
    if (!this.live || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  },

  open() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws`);
    this.ws = ws;
    this.live = false;
    status(this.attempt ? "reconnecting" : "connecting");
    ws.onopen = () => ws.send(JSON.stringify({ type: "auth", token: this.token }));
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      let frame;
      try { frame = JSON.parse(ev.data); } catch { return; }
      this.handle(ws, frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.live = false;
      if (this.stopped) return;
      if (ev.code === 4009) {
        // Another connection resumed this session: do not fight over it.
        status("replaced");
        return;
      }
      this.attempt += 1;
      const delay = Math.min(5000, 250 * 2 ** Math.min(this.attempt - 1, 5));
      status("reconnecting");
      this.timer = setTimeout(() => this.open(), delay * (0.75 + Math.random() / 2));
    };
  },

  handle(ws, frame) {
    switch (frame.type) {
      case "session": {
        const previous = this.resumeToken;
        this.resumeToken = frame.resume_token;
        this.node = frame.node;
        if (previous) {
          // Replay what was missed, then `resumed`; nothing live before it.
          ws.send(JSON.stringify({ type: "resume", resume_token: previous, rooms: resumeSeqs() }));
        } else {
          // The first connection of the page: any frame makes it live.
          ws.send(JSON.stringify({ type: "ping", nonce: "hello" }));
          this.goLive(false);
        }
        break;
      }
      case "resumed":
        this.goLive(true);
        break;
      case "error":
        if (frame.ref === "auth" && frame.code === "unauthorized") {
          this.stop();
          emit("auth-failed", frame.message);
          return;
        }
        if (frame.ref === "auth" || frame.ref === "session") {
          // The node could not take us now (its token store is down, too
          // many sessions): try again later, maybe elsewhere.
          ws.close();
          return;
        }
        if (frame.ref === "resume") {
          // The old session cannot be resumed: go live, and reload history.
          this.resumeToken = null;
          this.goLive(false);
        }
        break;
      default:
        break;
    }
    for (const fn of handlers.get(frame.type) || []) {
      try { fn(frame); } catch (e) { console.error(`frame ${frame.type}`, e); }
    }
  },

  goLive(resumed) {
    this.live = true;
    const reconnected = this.attempt > 0;
    this.attempt = 0;
    status("live");
    emit("live", { resumed, reconnected });
  },
};

function status(what) {
  emit("status", what);
}
