// Reactions: "React" opens a small picker of emoji (buttons, so Tab and
// Enter work); each message shows its reactions as chips with their counts,
// pressed when one of them is mine, and a chip toggles my reaction
// (`react` / `unreact`).

import { el } from "../dom.js";
import { state } from "../store.js";
import { change, viewOf } from "./changes.js";
import { actions, decorators } from "./timeline.js";

export const EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "👀"];

function toggle(r, seq, emoji, mine) {
  change(mine ? "unreact" : "react", r.name, seq, { emoji });
}

function pick(m, r) {
  const node = document.querySelector(`#messages .msg[data-seq="${Number(m.seq)}"]`);
  if (!node) return;
  const old = node.querySelector(".picker");
  if (old) {
    old.remove();
    return;
  }
  const mine = viewOf(m, r).reactions;
  const picker = el("div", { className: "picker", attrs: { role: "group", "aria-label": "Pick a reaction" } },
    EMOJI.map((emoji) => el("button", {
      type: "button",
      className: "emoji",
      dataset: { emoji },
      attrs: { "aria-label": `React with ${emoji}` },
      onclick: () => {
        toggle(r, m.seq, emoji, Boolean(mine.get(emoji) && mine.get(emoji).has(state.me)));
        picker.remove();
      },
    }, emoji)));
  picker.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      ev.stopPropagation();
      picker.remove();
    }
  });
  node.querySelector(".extras").append(picker);
  picker.querySelector("button").focus();
}

actions.push({
  label: "React",
  applies: (m) => !m.event && !m.deleted,
  run: pick,
});

decorators.push((m, node, r) => {
  if (m.event) return;
  const view = viewOf(m, r);
  if (view.deleted || !view.reactions.size) return;
  const chips = [...view.reactions.entries()].map(([emoji, users]) => {
    const mine = users.has(state.me);
    return el("button", {
      type: "button",
      className: `reaction${mine ? " mine" : ""}`,
      dataset: { emoji, count: String(users.size) },
      title: [...users].sort().join(", "),
      attrs: { "aria-pressed": String(mine), "aria-label": `${emoji} ${users.size}` },
      onclick: () => toggle(r, m.seq, emoji, mine),
    }, `${emoji} ${users.size}`);
  });
  node.querySelector(".extras").append(el("div", { className: "reactions" }, chips));
});
