// "Browse public rooms": a modal dialog (<dialog>, so focus stays in it and
// Escape closes it) that searches GET /api/v1/rooms/public?q= as one types,
// pages with "More" (`next_after`), and joins a room with its Join button.

import { api, ApiError, enc } from "../api.js";
import { conn } from "../conn.js";
import { $, el, fill } from "../dom.js";
import { emit, state } from "../store.js";
import { openRoom, expectJoin } from "./rooms.js";

const PAGE = 50;
let next = null;
let query = "";
let timer = null;

function row(r) {
  const member = state.rooms.has(r.name);
  return el("li", { className: "public-room", dataset: { room: r.name } },
    el("span", { className: "room-name" }, `#${r.name}`),
    el("span", { className: "meta" }, ` ${r.members} ${r.members === 1 ? "member" : "members"}`),
    el("button", {
      type: "button",
      className: "small",
      attrs: { "aria-label": `${member ? "Open" : "Join"} #${r.name}` },
      onclick: () => join(r.name),
    }, member ? "Open" : "Join"));
}

function join(name) {
  $("#public-dialog").close();
  if (state.rooms.has(name)) {
    openRoom(name);
    return;
  }
  expectJoin(name);
  if (!conn.send({ type: "join", room: name })) emit("notice", "Not connected; try again in a moment.");
}

async function load(more) {
  const q = query;
  const after = more && next ? `&after=${enc(next)}` : "";
  try {
    const answer = await api("GET", `/api/v1/rooms/public?q=${enc(q)}&limit=${PAGE}${after}`);
    if (q !== query) return;
    next = answer.next_after || null;
    const rows = answer.rooms.map(row);
    if (more) $("#public-list").append(...rows);
    else fill($("#public-list"), rows.length ? rows : el("li", { className: "empty" }, "No public room matches."));
    $("#public-more").hidden = !next;
  } catch (e) {
    fill($("#public-status"), e instanceof ApiError ? e.message : String(e));
    return;
  }
  fill($("#public-status"), "");
}

export function setupPublic() {
  const dialog = $("#public-dialog");
  $("#browse-btn").addEventListener("click", () => {
    query = "";
    $("#public-input").value = "";
    fill($("#public-list"));
    dialog.showModal();
    $("#public-input").focus();
    load(false);
  });
  $("#public-input").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      query = $("#public-input").value.trim();
      load(false);
    }, 200);
  });
  $("#public-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    clearTimeout(timer);
    query = $("#public-input").value.trim();
    load(false);
  });
  $("#public-more").addEventListener("click", () => load(true));
  $("#public-close").addEventListener("click", () => dialog.close());
}
