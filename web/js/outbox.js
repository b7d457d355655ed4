// The composer queue: every message typed is queued with a random client_id
// until its `ack`. Per room, one message is in flight at a time, so a
// person's messages land in the order they were typed even when one has to
// be resent. The one in flight is resent with the same client_id when the
// connection comes back, when the server says to (`unavailable`,
// `rate_limited`), and after a few seconds without an answer (the node
// serving the room may have died with it), so none is lost or created
// twice. The queue is kept in sessionStorage and survives a reload of the
// tab.

import { conn, onFrame } from "./conn.js";
import { randomId } from "./dom.js";
import { emit, on, dmPeer, roomKind, state } from "./store.js";

const KEY = "troupe.outbox";
const RESEND_AFTER_MS = 5000;

/** [{client_id, room, body, attachments?, sentAt}] in the order typed */
export const queue = load();

function load() {
  try { return JSON.parse(sessionStorage.getItem(KEY)) || []; } catch { return []; }
}

function save() {
  sessionStorage.setItem(KEY, JSON.stringify(queue));
  emit("outbox", queue);
}

export function enqueue(room, body, extra = {}) {
  const item = { client_id: randomId("w-"), room, body, ...extra, sentAt: 0 };
  queue.push(item);
  save();
  if (head(room) === item) transmit(item);
  return item;
}

/** The oldest unacked message of a room: the one in flight. */
function head(room) {
  return queue.find((q) => q.room === room);
}

function heads() {
  const seen = new Set();
  return queue.filter((q) => !seen.has(q.room) && seen.add(q.room));
}

function frameOf(item) {
  const base = { body: item.body, client_id: item.client_id };
  if (item.attachments) base.attachments = item.attachments;
  // A reply names its room (a DM's too): only `send` carries `reply_to`.
  if (item.reply_to) return { type: "send", room: item.room, reply_to: item.reply_to, ...base };
  switch (roomKind(item.room)) {
    case "dm": return { type: "dm", to: dmPeer(item.room), ...base };
    case "broadcast": return { type: "broadcast", ...base };
    default: return { type: "send", room: item.room, ...base };
  }
}

function transmit(item) {
  if (conn.send(frameOf(item))) item.sentAt = Date.now();
}

/** Done with a message (acked, or refused for good): the next one goes. */
function remove(clientId) {
  const i = queue.findIndex((q) => q.client_id === clientId);
  if (i < 0) return null;
  const [item] = queue.splice(i, 1);
  save();
  const next = head(item.room);
  if (next && !next.sentAt) transmit(next);
  return item;
}

export function clear() {
  queue.length = 0;
  sessionStorage.removeItem(KEY);
}

onFrame("ack", (f) => remove(f.client_id));
// Our own message came back (through a replay, say, before any ack).
onFrame("message", (f) => {
  if (f.from === state.me) remove(f.client_id);
});

onFrame("error", (f) => {
  const item = queue.find((q) => q.client_id === f.ref);
  if (!item) return;
  if (f.code === "unavailable" || f.code === "rate_limited") {
    const wait = f.retry_after_ms || 500;
    item.sentAt = Date.now() - RESEND_AFTER_MS + wait;
    return;
  }
  // Refused for good (too long, not a member...): tell the user.
  remove(item.client_id);
  emit("notice", `Not sent (${f.code}): ${f.message}`);
});

on("live", () => {
  for (const item of heads()) transmit(item);
});

setInterval(() => {
  const now = Date.now();
  for (const item of heads()) {
    if (now - item.sentAt >= RESEND_AFTER_MS) transmit(item);
  }
}, 500);
