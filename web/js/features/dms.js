// Direct messages: open a conversation with a user by name (or by clicking
// them in the people list). The DM room `dm:<a>:<b>` exists once either has
// written; until then the page shows it empty and the first message (a `dm`
// frame, see outbox.js) creates it.

import { $ } from "../dom.js";
import { dmRoom, emit, room, state } from "../store.js";
import { openRoom } from "./rooms.js";

const USERNAME = /^[a-zA-Z0-9_.-]{3,32}$/;

export function openDm(user) {
  if (!USERNAME.test(user)) {
    emit("notice", "A username is 3 to 32 letters, digits, '_', '.' or '-'.");
    return;
  }
  if (user === state.me) {
    emit("notice", "That is you.");
    return;
  }
  const name = dmRoom(state.me, user);
  if (!state.rooms.has(name)) {
    // Not created yet: nothing to load.
    const r = room(name);
    r.tailLoaded = true;
    r.reachedStart = true;
  }
  openRoom(name);
}

export function setupDms() {
  $("#dm-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("#dm-input");
    const user = input.value.trim();
    input.value = "";
    openDm(user);
    $("#composer-input").focus();
  });
}
