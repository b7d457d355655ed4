// Messages that live: edits, deletes, reactions and pins arrive as room
// events (`message` frames with an `event` object, in the live stream and in
// history pages). They are not shown as messages: each one is kept with its
// target (`room.changes`, by target seq, so an event loaded before its
// target still applies) and the target is re-rendered from `viewOf`. The
// frames that make them go out through `change` with a fresh client_id; a
// refusal comes back as an `error` whose ref is that client_id.

import { conn, onFrame } from "../conn.js";
import { randomId } from "../dom.js";
import { emit, on } from "../store.js";
import { decorators, refresh } from "./timeline.js";

/** client_id -> what was asked, for the notice on a refusal */
const pending = new Map();

function changesOf(r) {
  if (!r.changes) r.changes = new Map();
  return r.changes;
}

/**
 * The current state of message `m` of room `r`: the body and version after
 * the edits seen, deleted, reactions {emoji: Set(users)}, pinned.
 */
export function viewOf(m, r) {
  const view = {
    body: m.body,
    edited: Boolean(m.edited_at),
    deleted: Boolean(m.deleted),
    reactions: new Map(),
    pinned: Boolean(m.pinned),
  };
  for (const [emoji, users] of Object.entries(m.reactions || {})) view.reactions.set(emoji, new Set(users));
  const events = (r.changes && r.changes.get(m.seq)) || [];
  for (const e of events) {
    const ev = e.event;
    switch (ev.kind) {
      case "edit": view.body = ev.body; view.edited = true; break;
      case "delete": view.deleted = true; break;
      case "react": {
        if (!view.reactions.has(ev.emoji)) view.reactions.set(ev.emoji, new Set());
        view.reactions.get(ev.emoji).add(e.from);
        break;
      }
      case "unreact": {
        const users = view.reactions.get(ev.emoji);
        if (users) {
          users.delete(e.from);
          if (!users.size) view.reactions.delete(ev.emoji);
        }
        break;
      }
      case "pin": view.pinned = true; break;
      case "unpin": view.pinned = false; break;
      default: break;
    }
  }
  if (view.deleted) {
    view.body = "";
    view.reactions.clear();
    view.pinned = false;
  }
  return view;
}

/** Sends a change frame (`edit`, `delete`, `react`, ...) for message `seq`. */
export function change(type, room, seq, extra = {}) {
  const client_id = randomId("w-");
  if (!conn.send({ type, room, seq, client_id, ...extra })) {
    emit("notice", "Not connected; try again in a moment.");
    return false;
  }
  pending.set(client_id, type);
  return true;
}

onFrame("ack", (f) => pending.delete(f.client_id));

onFrame("error", (f) => {
  const what = pending.get(f.ref);
  if (!what) return;
  pending.delete(f.ref);
  emit("notice", `Could not ${what} (${f.code}): ${f.message}`);
});

on("messages", ({ room: r, added }) => {
  const touched = new Set();
  for (const m of added) {
    if (!m.event || typeof m.event.target !== "number") continue;
    const list = changesOf(r);
    if (!list.has(m.event.target)) list.set(m.event.target, []);
    const events = list.get(m.event.target);
    events.push(m);
    events.sort((a, b) => a.seq - b.seq);
    touched.add(m.event.target);
  }
  for (const seq of touched) refresh(r.name, seq);
  if (touched.size) emit("changed", { room: r, seqs: [...touched] });
});

// Room events are not messages on screen; a message shows its current view.
decorators.push((m, node, r) => {
  if (m.event) {
    node.hidden = true;
    node.classList.add("event");
    return;
  }
  const view = viewOf(m, r);
  const body = node.querySelector(".body");
  if (view.deleted) {
    node.classList.add("deleted");
    body.textContent = "deleted";
    node.querySelector(".extras").replaceChildren();
    const tools = node.querySelector(".tools");
    if (tools) tools.remove();
  } else {
    body.textContent = view.body;
  }
});
