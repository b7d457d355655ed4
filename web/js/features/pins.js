// Pins: "Pin" / "Unpin" on a message (its author or the room's owner; the
// server refuses others, and the page says so), a "pinned" mark on pinned
// messages, and the Pins panel listing the open room's pins
// (GET /api/v1/rooms/{room}/pins), refreshed while open.

import { api, ApiError, enc } from "../api.js";
import { $, el, fill } from "../dom.js";
import { on, state } from "../store.js";
import { change, viewOf } from "./changes.js";
import { actions, decorators } from "./timeline.js";

let shown = false;

async function render() {
  const panel = $("#pins-panel");
  panel.hidden = !shown;
  if (!shown || !state.current) return;
  const roomName = state.current;
  try {
    const answer = await api("GET", `/api/v1/rooms/${enc(roomName)}/pins`);
    if (roomName !== state.current) return;
    fill($("#pins-list"), answer.pins.length
      ? answer.pins.map((p) => el("li", { className: "pin", dataset: { seq: String(p.seq) } },
        el("span", { className: "from" }, p.from), ": ", el("span", { className: "body", dir: "auto" }, p.body || "")))
      : el("li", { className: "empty" }, "Nothing is pinned here."));
  } catch (e) {
    fill($("#pins-list"), el("li", { className: "empty" }, e instanceof ApiError ? e.message : String(e)));
  }
}

actions.push({
  label: "Pin",
  applies: (m, r) => !m.event && !m.deleted && !viewOf(m, r).pinned,
  run: (m, r) => change("pin", r.name, m.seq),
});

actions.push({
  label: "Unpin",
  applies: (m, r) => !m.event && !m.deleted && viewOf(m, r).pinned,
  run: (m, r) => change("unpin", r.name, m.seq),
});

decorators.push((m, node, r) => {
  if (m.event || !viewOf(m, r).pinned) return;
  node.classList.add("pinned");
  node.querySelector("header").append(" ", el("span", { className: "pinned-mark" }, "pinned"));
});

on("changed", ({ room: r }) => {
  if (shown && r.name === state.current) render();
});

on("open", () => render());

export function setupPins() {
  const button = $("#pins-btn");
  button.setAttribute("aria-expanded", "false");
  button.addEventListener("click", () => {
    shown = !shown;
    button.setAttribute("aria-expanded", String(shown));
    render();
  });
  $("#pins-close").addEventListener("click", () => {
    shown = false;
    button.setAttribute("aria-expanded", "false");
    render();
    button.focus();
  });
}
