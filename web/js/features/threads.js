// Threads: "Reply" opens the thread panel of a message: the message, its
// replies (GET .../messages/{seq}/thread, then live ones as they come) and a
// composer that sends with `reply_to`. In the timeline a reply says what it
// answers, and a message with replies says how many (a button to its
// thread).

import { api, ApiError, enc } from "../api.js";
import { $, clock, el, fill } from "../dom.js";
import { enqueue } from "../outbox.js";
import { emit, on, state } from "../store.js";
import { viewOf } from "./changes.js";
import { actions, decorators, refresh } from "./timeline.js";

/** the thread on screen: {room, seq} or null */
let open = null;

function replyCount(r, seq) {
  let n = 0;
  for (const m of r.messages.values()) if (m.reply_to === seq && !m.event) n += 1;
  return n;
}

function line(m, r) {
  const view = viewOf(m, r);
  return el("li", { className: "reply", dataset: { seq: String(m.seq) } },
    el("span", { className: "from" }, m.from), " ",
    el("time", {}, clock(m.ts)), " ",
    el("span", { className: "body", dir: "auto" }, view.deleted ? "deleted" : view.body));
}

function render() {
  const panel = $("#thread-panel");
  if (!open) {
    panel.hidden = true;
    return;
  }
  const r = state.rooms.get(open.room);
  if (!r) return;
  const parent = r.messages.get(open.seq);
  fill($("#thread-parent"), parent ? line(parent, r) : `#${open.seq}`);
  const replies = [...r.messages.values()].filter((m) => m.reply_to === open.seq && !m.event)
    .sort((a, b) => a.seq - b.seq);
  fill($("#thread-list"), replies.length ? replies.map((m) => line(m, r))
    : el("li", { className: "empty" }, "No replies yet."));
  panel.hidden = false;
}

export async function openThread(roomName, seq) {
  open = { room: roomName, seq };
  render();
  $("#thread-input").focus();
  try {
    let after = 0;
    for (;;) {
      const page = await api("GET", `/api/v1/rooms/${enc(roomName)}/messages/${seq}/thread?after=${after}&limit=200`);
      const r = state.rooms.get(roomName);
      if (!r) return;
      for (const m of page.messages) {
        if (!r.messages.has(m.seq)) r.messages.set(m.seq, { ...m, body: m.body ?? "" });
        after = Math.max(after, m.seq);
      }
      if (page.messages.length < 200) break;
    }
    render();
  } catch (e) {
    emit("notice", e instanceof ApiError ? e.message : String(e));
  }
}

function close() {
  open = null;
  render();
  $("#composer-input").focus();
}

actions.push({
  label: "Reply",
  applies: (m) => !m.event && !m.deleted,
  run: (m, r) => openThread(r.name, m.seq),
});

decorators.push((m, node, r) => {
  if (m.event) return;
  if (m.reply_to) {
    node.querySelector("header").append(" ", el("button", {
      type: "button",
      className: "reply-to",
      title: "Open the thread",
      onclick: () => openThread(r.name, m.reply_to),
    }, `reply to #${m.reply_to}`));
  }
  const n = Math.max(replyCount(r, m.seq), m.reply_count || 0);
  if (n) {
    node.querySelector(".extras").append(el("button", {
      type: "button",
      className: "thread-link",
      onclick: () => openThread(r.name, m.seq),
    }, n === 1 ? "1 reply" : `${n} replies`));
  }
});

on("messages", ({ room: r, added }) => {
  // A new reply: its parent's "N replies" changes.
  const parents = new Set(added.filter((m) => m.reply_to && !m.event).map((m) => m.reply_to));
  for (const seq of parents) refresh(r.name, seq);
  if (open && open.room === r.name && added.some((m) => m.reply_to === open.seq || m.seq === open.seq)) render();
});

on("changed", ({ room: r }) => {
  if (open && open.room === r.name) render();
});

on("open", (r) => {
  if (open && open.room !== r.name) close();
});

export function setupThreads() {
  $("#thread-close").addEventListener("click", close);
  $("#thread-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("#thread-input");
    const body = input.value.trim();
    if (!body || !open) return;
    input.value = "";
    enqueue(open.room, body, { reply_to: open.seq });
  });
  $("#thread-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("#thread-form").requestSubmit();
    } else if (ev.key === "Escape") {
      ev.preventDefault();
      close();
    }
  });
}
