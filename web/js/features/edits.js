// Editing one's own messages: "Edit" turns the body into a text box (Enter
// saves with an `edit` frame, Escape cancels); an edited message says
// "edited", and that label opens its earlier versions
// (GET .../messages/{seq}/versions) on demand.

import { api, ApiError, enc } from "../api.js";
import { el } from "../dom.js";
import { emit, state } from "../store.js";
import { change, viewOf } from "./changes.js";
import { actions, decorators } from "./timeline.js";

const MAX_BODY = 4000;

function startEdit(m, r) {
  const node = document.querySelector(`#messages .msg[data-seq="${Number(m.seq)}"]`);
  if (!node) return;
  const body = node.querySelector(".body");
  const box = el("textarea", { className: "edit-box", rows: 2, value: viewOf(m, r).body, attrs: { "aria-label": "Edit message" } });
  const done = () => { box.replaceWith(body); };
  box.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      ev.preventDefault();
      ev.stopPropagation();
      done();
    } else if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      const text = box.value.trim();
      if (!text) return;
      if ([...text].length > MAX_BODY) {
        emit("notice", `A message is at most ${MAX_BODY} characters.`);
        return;
      }
      if (text !== viewOf(m, r).body) change("edit", r.name, m.seq, { body: text });
      done();
    }
  });
  body.replaceWith(box);
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
}

async function showVersions(m, r, node, button) {
  const old = node.querySelector(".versions");
  if (old) {
    old.remove();
    button.setAttribute("aria-expanded", "false");
    return;
  }
  try {
    const answer = await api("GET", `/api/v1/rooms/${enc(r.name)}/messages/${m.seq}/versions`);
    const list = el("ol", { className: "versions", attrs: { "aria-label": "Earlier versions" } },
      answer.versions.map((v) => el("li", {}, el("span", { className: "version" }, `v${v.version}: `), v.body)));
    node.querySelector(".extras").prepend(list);
    button.setAttribute("aria-expanded", "true");
  } catch (e) {
    emit("notice", e instanceof ApiError ? e.message : String(e));
  }
}

actions.push({
  label: "Edit",
  applies: (m) => m.from === state.me && !m.event && !m.deleted,
  run: startEdit,
});

decorators.push((m, node, r) => {
  if (m.event) return;
  const view = viewOf(m, r);
  if (!view.edited || view.deleted) return;
  const button = el("button", {
    type: "button",
    className: "edited",
    title: "Show earlier versions",
    attrs: { "aria-expanded": "false" },
  }, "edited");
  button.addEventListener("click", () => showVersions(m, r, node, button));
  node.querySelector("header").append(" ", button);
});
