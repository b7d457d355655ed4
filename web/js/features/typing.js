// Typing indicators: `typing {active: true}` while the user types in the
// composer (again every few seconds while it goes on), `active: false` when
// they stop or send. Others' indicators show under the list and fade on
// their own if the `active: false` never comes (the server keeps no timer).

import { conn, onFrame } from "../conn.js";
import { $, fill } from "../dom.js";
import { on, state } from "../store.js";

const REPEAT_MS = 3000;
const IDLE_MS = 4000;
const SHOWN_MS = 8000;

let activeRoom = null;
let lastSent = 0;
let idle = null;

function stop() {
  clearTimeout(idle);
  if (activeRoom) conn.send({ type: "typing", room: activeRoom, active: false });
  activeRoom = null;
}

function typed() {
  const r = state.rooms.get(state.current);
  if (!r || r.kind === "broadcast" || !r.messages.size && r.kind === "dm" && !r.lastSeq) return;
  if (activeRoom && activeRoom !== r.name) stop();
  const now = Date.now();
  if (activeRoom !== r.name || now - lastSent > REPEAT_MS) {
    if (conn.send({ type: "typing", room: r.name, active: true })) {
      activeRoom = r.name;
      lastSent = now;
    }
  }
  clearTimeout(idle);
  idle = setTimeout(stop, IDLE_MS);
}

onFrame("typing", (f) => {
  const r = state.rooms.get(f.room);
  if (!r || f.user === state.me) return;
  if (f.active) r.typing.set(f.user, Date.now() + SHOWN_MS);
  else r.typing.delete(f.user);
  render();
});

// A message from someone ends their typing.
onFrame("message", (f) => {
  const r = state.rooms.get(f.room);
  if (r && r.typing.delete(f.from)) render();
});

function render() {
  const r = state.rooms.get(state.current);
  const now = Date.now();
  const users = [];
  if (r) {
    for (const [user, until] of r.typing) {
      if (until < now) r.typing.delete(user);
      else users.push(user);
    }
  }
  users.sort();
  let text = "";
  if (users.length === 1) text = `${users[0]} is typing…`;
  else if (users.length === 2) text = `${users[0]} and ${users[1]} are typing…`;
  else if (users.length > 2) text = "Several people are typing…";
  fill($("#typing"), text);
}

on("open", () => { stop(); render(); });
on("sent", stop);

export function setupTyping() {
  $("#composer-input").addEventListener("input", (ev) => {
    if (ev.target.value.trim()) typed();
    else stop();
  });
  setInterval(render, 1000);
}
