// Who is around: the people online (`who`, refreshed every 30 s, and
// `presence` frames as they come and go, with "last seen" for those who
// left), and the open room's members (`members`) with their presence.
// Clicking a person opens a DM with them.

import { conn, onFrame } from "../conn.js";
import { $, ago, el, fill } from "../dom.js";
import { askMembers, resumeMembers } from "../members.js";
import { emit, on, setPerson, state } from "../store.js";
import { openDm } from "./dms.js";

function presenceText(p) {
  if (!p) return "";
  if (p.online) return "online";
  return p.last_seen ? `last seen ${ago(p.last_seen)}` : "offline";
}

function person(user, p, extra = null) {
  return el("li", {},
    el("button", {
      type: "button",
      className: `person${p && p.online ? " online" : ""}`,
      dataset: { user },
      title: user === state.me ? "you" : `Message ${user}`,
      onclick: () => { if (user !== state.me) openDm(user); },
    },
    el("span", { className: "dot", attrs: { "aria-hidden": "true" } }),
    el("span", { className: "name" }, user),
    el("span", { className: "presence" }, presenceText(p)),
    extra));
}

function renderPeople() {
  const users = [...state.people.entries()]
    .filter(([user, p]) => user !== state.me && (p.online || p.last_seen))
    .sort(([a, pa], [b, pb]) => (pb.online - pa.online) || (a < b ? -1 : 1));
  fill($("#people-list"), users.length
    ? users.map(([user, p]) => person(user, p))
    : el("li", { className: "empty" }, "Nobody else is online."));
}

function renderMembers() {
  const r = state.rooms.get(state.current);
  const box = $("#member-list");
  if (!r || r.kind === "broadcast") {
    fill(box, el("li", { className: "empty" }, "Everyone reads announcements."));
    return;
  }
  fill(box, r.memberList.map((m) => person(m.user, state.people.get(m.user) || m)));
}

onFrame("users", (f) => {
  for (const u of f.users) setPerson(u.user, u.online, u.last_seen);
  // Those no longer online were missed going offline.
  const online = new Set(f.users.map((u) => u.user));
  for (const [user, p] of state.people) {
    if (p.online && !online.has(user)) setPerson(user, false, p.last_seen || Date.now());
  }
  renderPeople();
  renderMembers();
});

onFrame("presence", (f) => {
  setPerson(f.user, f.online, f.last_seen);
  renderPeople();
  renderMembers();
});

onFrame("members", (f) => {
  const r = state.rooms.get(f.room);
  if (!r) return;
  r.memberList = f.members;
  const mine = f.members.find((m) => m.user === state.me);
  if (mine && mine.read_seq > r.readSeq) r.readSeq = mine.read_seq;
  r.receiptKnown = true;
  for (const m of f.members) {
    const known = state.people.get(m.user);
    if (!known || known.online !== m.online || m.last_seen) setPerson(m.user, m.online, m.last_seen);
  }
  emit("members", r);
  emit("receipts", r);
  renderPeople();
  renderMembers();
});

on("open", (r) => {
  if (r.kind !== "broadcast" && !(r.kind === "dm" && !r.lastSeq)) askMembers(r.name);
  renderMembers();
});

on("live", () => {
  conn.send({ type: "who" });
  resumeMembers();
});

export function setupPeople() {
  setInterval(() => conn.send({ type: "who" }), 30000);
  // Keep "last seen 5 min ago" current.
  setInterval(() => { renderPeople(); renderMembers(); }, 30000);
  renderPeople();
}
