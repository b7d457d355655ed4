// Read receipts. The page sends `read` for the open room up to its newest
// message while the tab is visible and the list is scrolled to the bottom;
// `read` frames (everyone's, ours included) move the receipts, and each
// other member's receipt is shown as "Seen by ..." under the last message
// they have read.

import { conn, onFrame } from "../conn.js";
import { el, fill } from "../dom.js";
import { emit, on, state } from "../store.js";
import { atBottom } from "./timeline.js";

/** room -> the highest seq this page has sent `read` for */
const sent = new Map();

function maybeRead() {
  const r = state.rooms.get(state.current);
  if (!r || r.kind === "broadcast" || document.visibilityState !== "visible") return;
  const seq = r.newest;
  if (!seq || !r.tailLoaded || !atBottom()) return;
  const receipt = Math.max(sent.get(r.name) || 0, serverReceipt(r));
  if (seq <= receipt) {
    if (r.readSeq < seq) {
      r.readSeq = seq;
      emit("receipts", r);
    }
    return;
  }
  if (conn.send({ type: "read", room: r.name, seq })) {
    sent.set(r.name, seq);
    r.readSeq = Math.max(r.readSeq, seq);
    emit("receipts", r);
  }
}

function serverReceipt(r) {
  const mine = r.memberList.find((m) => m.user === state.me);
  return mine ? mine.read_seq : 0;
}

let timer = null;
function soon() {
  clearTimeout(timer);
  timer = setTimeout(maybeRead, 150);
}

on("rendered", maybeRead);
on("scrolled", soon);
on("live", () => { sent.clear(); soon(); });
document.addEventListener("visibilitychange", soon);

onFrame("read", (f) => {
  const r = state.rooms.get(f.room);
  if (!r) return;
  const m = r.memberList.find((x) => x.user === f.user);
  if (m) m.read_seq = Math.max(m.read_seq, f.seq);
  else r.memberList.push({ user: f.user, online: true, last_seen: null, read_seq: f.seq });
  if (f.user === state.me) {
    r.readSeq = Math.max(r.readSeq, f.seq);
    r.receiptKnown = true;
  }
  emit("receipts", r);
});

/** Puts "Seen by a, b" under the last loaded message each member has read. */
function renderSeen() {
  const r = state.rooms.get(state.current);
  for (const box of document.querySelectorAll("#messages .seen")) fill(box);
  if (!r || r.kind === "broadcast") return;
  const byNode = new Map();
  const nodes = [...document.querySelectorAll("#messages .msg")];
  for (const m of r.memberList) {
    if (m.user === state.me || !m.read_seq) continue;
    let target = null;
    for (const node of nodes) {
      if (Number(node.dataset.seq) <= m.read_seq) target = node;
      else break;
    }
    if (!target) continue;
    if (!byNode.has(target)) byNode.set(target, []);
    byNode.get(target).push(m.user);
  }
  for (const [node, users] of byNode) {
    fill(node.querySelector(".seen"), el("span", { className: "seen-by" }, `Seen by ${users.sort().join(", ")}`));
  }
}

on("receipts", (r) => { if (r.name === state.current) renderSeen(); });
on("members", (r) => { if (r.name === state.current) renderSeen(); });
on("rendered", renderSeen);
