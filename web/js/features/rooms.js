// The room list (with unread badges), opening a room, joining or creating a
// group (public by `join`, private by `POST /api/v1/rooms`), leaving, and
// invitations: a member invites a user into the open group; the invitee's
// page learns of it by `joined` and says so.

import { api, ApiError, enc } from "../api.js";
import { conn, onFrame } from "../conn.js";
import { $, el, fill } from "../dom.js";
import { askMembers } from "../members.js";
import { BROADCAST, emit, label, on, room, state } from "../store.js";

const ROOM_NAME = /^[a-zA-Z0-9_.-]{1,64}$/;
const CURRENT_KEY = "troupe.current";
/** rooms this page asked to join: their `joined` is no surprise */
const asked = new Set();

export function openRoom(name) {
  room(name);
  state.current = name;
  sessionStorage.setItem(CURRENT_KEY, name);
  document.body.classList.remove("show-sidebar");
  emit("open", state.rooms.get(name));
  renderLists();
}

/** The rooms of the user (REST): their privacy, member counts, last seqs. */
async function fetchRooms() {
  const answer = await api("GET", "/api/v1/rooms");
  for (const r of answer.rooms) {
    const it = room(r.name);
    it.private = r.private;
    it.members = r.members;
    it.lastSeq = Math.max(it.lastSeq, r.last_seq);
    if (typeof r.unread === "number") {
      // Unread badges at once after login, before any `members` answer.
      it.readSeq = Math.max(it.readSeq, r.last_read_seq || 0);
      it.receiptKnown = true;
      it.server = { unread: r.unread, lastSeq: r.last_seq, readSeq: it.readSeq };
    }
  }
  renderLists();
  return answer;
}

/** After the first connection: the rooms of the user, then the saved room. */
export async function loadRooms() {
  const answer = await fetchRooms();
  // My read receipt (and everyone's) comes with `members`.
  for (const r of answer.rooms) askMembers(r.name);
  room(BROADCAST);
  const saved = sessionStorage.getItem(CURRENT_KEY);
  const groups = answer.rooms.filter((r) => !r.name.startsWith("dm:"));
  const first = saved && state.rooms.has(saved) ? saved : (groups[0] || answer.rooms[0] || {}).name;
  // A room the person opened while this list was on its way (a join
  // answered first) stays open.
  if (state.current) return;
  openRoom(first || BROADCAST);
}

/** A `joined` for this room is the answer to this page's own request. */
export function expectJoin(name) {
  asked.add(name);
}

function byName(a, b) {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

function roomButton(r) {
  const current = r.name === state.current;
  const unread = current ? 0 : r.unread;
  return el("li", {},
    el("button", {
      type: "button",
      className: `room${current ? " current" : ""}${unread ? " has-unread" : ""}`,
      dataset: { room: r.name },
      attrs: current ? { "aria-current": "page" } : {},
      onclick: () => openRoom(r.name),
    },
    el("span", { className: "room-name" }, label(r.name),
      r.private && r.kind === "group" ? el("span", { className: "private" }, " private") : null),
    unread ? el("span", { className: "badge", attrs: { "aria-label": `${unread} unread` } }, String(unread)) : null));
}

export function renderLists() {
  const all = [...state.rooms.values()].sort(byName);
  fill($("#room-list"), all.filter((r) => r.kind !== "dm").map(roomButton));
  fill($("#dm-list"), all.filter((r) => r.kind === "dm").map(roomButton));
  const r = state.rooms.get(state.current);
  fill($("#room-title"), r ? label(r.name) : "");
  $("#leave-btn").hidden = !r || r.kind !== "group";
  $("#invite-form").hidden = !r || r.kind !== "group";
  const total = all.reduce((n, x) => n + (x.name === state.current ? 0 : x.unread), 0);
  document.title = total ? `(${total}) troupe` : "troupe";
}

on("rooms", renderLists);
on("messages", renderLists);
on("receipts", renderLists);

onFrame("joined", (f) => {
  const known = state.rooms.has(f.room);
  const r = room(f.room);
  r.members = f.members;
  r.lastSeq = Math.max(r.lastSeq, f.last_seq);
  askMembers(f.room);
  if (asked.delete(f.room)) openRoom(f.room);
  else if (!known) emit("notice", `You were added to ${label(f.room)}.`);
  // Whether it is private is not in `joined`.
  if (!known) fetchRooms().catch(() => {});
  renderLists();
});

onFrame("left", (f) => {
  state.rooms.delete(f.room);
  if (state.current === f.room) openRoom(BROADCAST);
  renderLists();
});

for (const type of ["user_joined", "user_left"]) {
  onFrame(type, (f) => {
    const r = state.rooms.get(f.room);
    if (!r) return;
    r.members += type === "user_joined" ? 1 : -1;
    askMembers(f.room);
  });
}

onFrame("error", (f) => {
  if (["join", "leave", "invite"].includes(f.ref)) emit("notice", f.message);
});

export function setupRooms() {
  $("#join-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("#join-input");
    const name = input.value.trim();
    const private_ = $("#join-private").checked;
    if (!ROOM_NAME.test(name)) {
      emit("notice", "A room name is 1 to 64 letters, digits, '_', '.' or '-'.");
      return;
    }
    input.value = "";
    $("#join-private").checked = false;
    if (state.rooms.has(name)) {
      openRoom(name);
      return;
    }
    asked.add(name);
    if (private_) {
      try {
        await api("POST", "/api/v1/rooms", { name, private: true });
      } catch (e) {
        asked.delete(name);
        emit("notice", e instanceof ApiError ? e.message : String(e));
      }
    } else if (!conn.send({ type: "join", room: name })) {
      asked.delete(name);
      emit("notice", "Not connected; try again in a moment.");
    }
  });

  $("#leave-btn").addEventListener("click", () => {
    const name = state.current;
    if (name && confirm(`Leave ${label(name)}?`)) conn.send({ type: "leave", room: name });
  });

  $("#invite-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("#invite-input");
    const user = input.value.trim();
    if (!user || !state.current) return;
    try {
      await api("POST", `/api/v1/rooms/${enc(state.current)}/members`, { user });
      input.value = "";
      emit("notice", `${user} was invited to ${label(state.current)}.`);
    } catch (e) {
      emit("notice", e instanceof ApiError ? e.message : String(e));
    }
  });

  // Alt+Up / Alt+Down: the previous / next room.
  document.addEventListener("keydown", (ev) => {
    if (!ev.altKey || (ev.key !== "ArrowUp" && ev.key !== "ArrowDown")) return;
    const names = [...document.querySelectorAll("#sidebar button.room")].map((b) => b.dataset.room);
    const i = names.indexOf(state.current);
    const next = names[(i + (ev.key === "ArrowDown" ? 1 : names.length - 1)) % names.length];
    if (next) {
      ev.preventDefault();
      openRoom(next);
    }
  });
}
