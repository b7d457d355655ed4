// Deleting one's own messages: "Delete" asks once more in place ("Really
// delete?") rather than with a dialog, then sends `delete`; the message then
// shows as "deleted" everywhere (see changes.js).

import { el } from "../dom.js";
import { state } from "../store.js";
import { change } from "./changes.js";
import { actions } from "./timeline.js";

function ask(m, r) {
  const node = document.querySelector(`#messages .msg[data-seq="${Number(m.seq)}"]`);
  if (!node || node.querySelector(".confirm-delete")) return;
  const bar = el("span", { className: "confirm-delete", attrs: { role: "group", "aria-label": "Delete this message?" } },
    "Really delete? ",
    el("button", { type: "button", className: "danger", onclick: () => { change("delete", r.name, m.seq); bar.remove(); } }, "Delete"),
    " ",
    el("button", { type: "button", onclick: () => bar.remove() }, "Keep"));
  node.querySelector("header").append(bar);
  bar.querySelector("button").focus();
}

actions.push({
  label: "Delete",
  applies: (m) => m.from === state.me && !m.event && !m.deleted,
  run: ask,
});
