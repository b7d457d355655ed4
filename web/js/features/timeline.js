// The open room's messages and the composer. Messages are shown in seq
// order, each once (see store.js); the newest page loads when a room opens,
// older pages when the list is scrolled near its top (the scroll position
// is kept), and a gap after a reconnect that could not resume is filled
// with `history ... after`. Queued messages (outbox.js) show below the
// others as "sending" until their own copy arrives.
//
// Hooks for features (attachments now; edits, deletes, reactions, replies,
// pins later): `decorators` are called for every message element built and
// may add to its `.extras` box; `actions` become buttons in each message's
// tool bar (shown on hover and keyboard focus); `refresh(room, seq)`
// rebuilds one message after its stored object changed (an edit, say).

import { conn, onFrame } from "../conn.js";
import { $, clock, el, fill } from "../dom.js";
import { addMessages, emit, label, on, state } from "../store.js";
import { enqueue, queue } from "../outbox.js";

const PAGE = 50;
const MAX_BODY = 4000;

/** fn(message, element, room) for every message element built */
export const decorators = [];

/** {label, applies(message, room) -> bool, run(message, room)} */
export const actions = [];

/** room -> {kind: "tail" | "before" | "after", limit} of the page asked for */
const loading = new Map();

const timeline = () => $("#timeline");
const list = () => $("#messages");

export function atBottom() {
  const t = timeline();
  return t.scrollHeight - t.scrollTop - t.clientHeight < 48;
}

function scrollToBottom() {
  const t = timeline();
  t.scrollTop = t.scrollHeight;
}

function requestHistory(r, kind, extra = {}) {
  if (loading.has(r.name)) return;
  const limit = kind === "tail" ? PAGE : extra.limit || PAGE;
  if (!conn.send({ type: "history", room: r.name, limit, ...extra })) return;
  loading.set(r.name, { kind, limit });
  renderMarker(r);
}

export function loadOlder() {
  const r = state.rooms.get(state.current);
  if (!r || !r.tailLoaded || r.reachedStart || loading.has(r.name)) return;
  const oldest = r.oldest;
  if (oldest === null || oldest <= 1) {
    r.reachedStart = true;
    renderMarker(r);
    return;
  }
  requestHistory(r, "before", { before: oldest });
}

onFrame("history", (f) => {
  const asked = loading.get(f.room);
  loading.delete(f.room);
  const r = state.rooms.get(f.room);
  if (!r) return;
  // A page nobody here is waiting for (its request was forgotten after an
  // error) only adds its messages: what it covers is not known.
  const full = asked && f.messages.length >= asked.limit;
  if (asked && asked.kind === "tail") {
    r.tailLoaded = true;
    if (!full) r.reachedStart = true;
  } else if (asked && asked.kind === "before" && !full) {
    r.reachedStart = true;
  }
  const isCurrent = f.room === state.current;
  const keep = isCurrent && asked && asked.kind === "before" ? anchor() : null;
  addMessages(f.room, f.messages);
  if (keep) keep();
  if (asked && asked.kind === "after" && full) requestHistory(r, "after", { after: r.newest, limit: 200 });
  if (isCurrent) {
    renderMarker(r);
    if (asked && asked.kind === "tail") scrollToBottom();
    fillViewport(r);
  }
});

onFrame("error", (f) => {
  if (f.ref !== "history") return;
  // Which room it was about is not said: let any room ask again.
  loading.clear();
  if (f.code !== "rate_limited") emit("notice", f.message);
  setTimeout(() => {
    const r = state.rooms.get(state.current);
    if (r && !r.tailLoaded) requestHistory(r, "tail");
  }, f.retry_after_ms || 1000);
});

/** Keeps what is on screen in place while older messages go in above it. */
function anchor() {
  const t = timeline();
  const before = t.scrollHeight - t.scrollTop;
  return () => { t.scrollTop = t.scrollHeight - before; };
}

/** Loads older pages until the list can scroll (or the start is reached). */
function fillViewport(r) {
  const t = timeline();
  if (r.name === state.current && r.tailLoaded && !r.reachedStart && t.scrollHeight <= t.clientHeight + 50) {
    loadOlder();
  }
}

function messageElement(m, r) {
  const node = el("article", {
    className: `msg${m.from === state.me ? " mine" : ""}`,
    dataset: { seq: String(m.seq), room: m.room || r.name, from: m.from },
  },
  el("header", {},
    el("span", { className: "from" }, m.from),
    " ",
    el("time", { dateTime: new Date(m.ts).toISOString(), title: new Date(m.ts).toLocaleString() }, clock(m.ts))),
  el("p", { className: "body", dir: "auto" }, m.body),
  el("div", { className: "extras" }),
  el("div", { className: "seen" }));
  const tools = actions.filter((a) => a.applies(m, r)).map((a) =>
    el("button", {
      type: "button",
      className: "action",
      dataset: { action: a.label.toLowerCase() },
      onclick: () => a.run(m, r),
    }, a.label));
  if (tools.length) node.querySelector("header").append(el("span", { className: "tools" }, tools));
  for (const decorate of decorators) {
    try { decorate(m, node, r); } catch (e) { console.error("decorator", e); }
  }
  return node;
}

/** Rebuilds the element of one message of the open room, in place. */
export function refresh(roomName, seq) {
  const r = state.rooms.get(roomName);
  if (!r || roomName !== state.current || !r.messages.has(seq)) return;
  const old = list().querySelector(`.msg[data-seq="${Number(seq)}"]`);
  if (old) old.replaceWith(messageElement(r.messages.get(seq), r));
  emit("rendered", r);
}

/** Inserts in seq order, looking from the end (new) or the start (old). */
function insert(node, seq) {
  const box = list();
  const last = box.lastElementChild;
  if (!last || Number(last.dataset.seq) < seq) {
    box.append(node);
    return;
  }
  for (const child of box.children) {
    if (Number(child.dataset.seq) > seq) {
      box.insertBefore(node, child);
      return;
    }
  }
  box.append(node);
}

function renderMarker(r) {
  const marker = $("#history-marker");
  if (loading.has(r.name)) fill(marker, "Loading…");
  else if (r.reachedStart) fill(marker, `This is the beginning of ${label(r.name)}.`);
  else fill(marker, "");
}

function renderPending() {
  const box = $("#pending");
  fill(box, queue.filter((q) => q.room === state.current).map((q) =>
    el("article", { className: "msg mine pending", dataset: { clientId: q.client_id } },
      el("header", {}, el("span", { className: "from" }, state.me), " ",
        el("span", { className: "state" }, conn.live ? "sending…" : "waiting for the connection…")),
      el("p", { className: "body" }, q.body))));
}

on("open", (r) => {
  fill(list());
  const seqs = [...r.messages.keys()].sort((a, b) => a - b);
  for (const seq of seqs) list().append(messageElement(r.messages.get(seq), r));
  renderPending();
  renderMarker(r);
  scrollToBottom();
  if (!r.tailLoaded) requestHistory(r, "tail");
  else fillViewport(r);
  emit("rendered", r);
  const input = $("#composer-input");
  input.disabled = false;
  input.placeholder = `Message ${label(r.name)}`;
});

on("messages", ({ room: r, added }) => {
  if (r.name !== state.current) return;
  const follow = atBottom() || added.some((m) => m.from === state.me);
  for (const m of added) insert(messageElement(m, r), m.seq);
  if (follow && added.some((m) => m.seq === r.newest)) scrollToBottom();
  emit("rendered", r);
});

on("status", () => renderPending());

on("outbox", () => {
  const follow = atBottom();
  renderPending();
  if (follow) scrollToBottom();
});

// A new connection: pages asked for on the old one will not come. After a
// connection that did not resume (the first, or a refused resume), fetch
// what the loaded rooms may have missed.
on("live", ({ resumed }) => {
  loading.clear();
  if (!resumed) {
    for (const r of state.rooms.values()) {
      if (r.tailLoaded && r.messages.size) requestHistory(r, "after", { after: r.newest, limit: 200 });
    }
  }
  const r = state.rooms.get(state.current);
  if (r && !r.tailLoaded) requestHistory(r, "tail");
  else if (r) fillViewport(r);
});

onFrame("message", (f) => addMessages(f.room, [f]));

export function setupTimeline() {
  timeline().addEventListener("scroll", () => {
    if (timeline().scrollTop < 300) loadOlder();
    emit("scrolled");
  });
  const input = $("#composer-input");
  const send = () => {
    const body = input.value.trim();
    if (!body || !state.current) return;
    if ([...body].length > MAX_BODY) {
      emit("notice", `A message is at most ${MAX_BODY} characters.`);
      return;
    }
    input.value = "";
    enqueue(state.current, body);
    emit("sent", state.current);
  };
  $("#composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    send();
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      send();
    }
  });
}
