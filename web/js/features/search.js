// Message search over `GET /api/v1/search` (the rooms the user can read,
// newest first, "More" for the next page). Choosing a result opens its room
// and loads history back to the message, which is then highlighted. Ctrl+K
// goes to the search field; ArrowDown from it into the results.

import { api, ApiError, enc } from "../api.js";
import { onFrame } from "../conn.js";
import { $, clock, el, fill } from "../dom.js";
import { emit, label, on, state } from "../store.js";
import { loadOlder } from "./timeline.js";
import { openRoom } from "./rooms.js";

let query = "";
let next = null;
/** {room, seq} to show once loaded */
let target = null;

function panel() { return $("#search-results"); }

export function closeSearch() {
  panel().hidden = true;
}

async function run(q, before) {
  const params = `q=${enc(q)}&limit=20${before ? `&before=${enc(before)}` : ""}`;
  let answer;
  try {
    answer = await api("GET", `/api/v1/search?${params}`);
  } catch (e) {
    emit("notice", e instanceof ApiError ? e.message : String(e));
    return;
  }
  query = q;
  next = answer.next_before || null;
  const list = $("#search-list");
  if (!before) fill(list);
  for (const hit of answer.results) {
    list.append(el("li", {},
      el("button", { type: "button", className: "hit", dataset: { room: hit.room, seq: String(hit.seq) },
        onclick: () => jump(hit.room, hit.seq) },
      el("span", { className: "hit-where" }, `${label(hit.room)} · ${hit.from} · ${clock(hit.ts)}`),
      el("span", { className: "hit-body" }, hit.body))));
  }
  if (!list.children.length) list.append(el("li", { className: "empty" }, `No messages found for "${q}".`));
  fill($("#search-title"), `Results for "${q}"`);
  $("#search-more").hidden = !next;
  panel().hidden = false;
}

function jump(room, seq) {
  closeSearch();
  target = { room, seq };
  openRoom(room);
  reveal();
  // The chosen result is gone with the panel: the focus goes on typing.
  $("#composer-input").focus();
}

/** ArrowDown from the search field into the results, then Up and Down
 * between them (ArrowUp from the first goes back to the field). */
function arrows(ev) {
  if (ev.key !== "ArrowDown" && ev.key !== "ArrowUp") return;
  if (panel().hidden) return;
  const hits = [...document.querySelectorAll("#search-list button.hit")];
  if (!hits.length) return;
  const at = hits.indexOf(document.activeElement);
  const field = ev.target === $("#search-input");
  if (!field && at < 0) return;
  ev.preventDefault();
  if (field) {
    if (ev.key === "ArrowDown") hits[0].focus();
  } else if (ev.key === "ArrowDown") {
    hits[Math.min(at + 1, hits.length - 1)].focus();
  } else if (at === 0) {
    $("#search-input").focus();
  } else {
    hits[at - 1].focus();
  }
}

/** Loads older pages until the target is loaded, then shows it. */
function reveal() {
  if (!target || target.room !== state.current) return;
  const node = document.querySelector(`#messages .msg[data-seq="${Number(target.seq)}"]`);
  if (node) {
    target = null;
    node.classList.add("highlight");
    node.scrollIntoView({ block: "center" });
    setTimeout(() => node.classList.remove("highlight"), 3000);
    return;
  }
  loadOlder();
}

on("rendered", reveal);
onFrame("history", () => setTimeout(reveal, 0));

export function setupSearch() {
  $("#search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = $("#search-input").value.trim();
    if (q) run(q, null);
  });
  $("#search-more").addEventListener("click", () => run(query, next));
  $("#search-close").addEventListener("click", closeSearch);
  $("#search-input").addEventListener("keydown", arrows);
  $("#search-list").addEventListener("keydown", arrows);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && !panel().hidden) closeSearch();
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "k") {
      ev.preventDefault();
      $("#search-input").focus();
    }
  });
}
