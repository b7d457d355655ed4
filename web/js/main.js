// The chat page's entry point: login or chat, and the wiring of the
// features (one module each under features/). See docs/web.md.

import { auth } from "./api.js";
import { conn } from "./conn.js";
import { $, fill } from "./dom.js";
import { clear as clearOutbox } from "./outbox.js";
import { emit, on, state } from "./store.js";
import { setupAttachments } from "./features/attachments.js";
import "./features/changes.js";
import "./features/deletes.js";
import { setupDms } from "./features/dms.js";
import "./features/edits.js";
import { setupFriends } from "./features/friends.js";
import { logout, setupLogin, showLogin } from "./features/login.js";
import { setupPeople } from "./features/people.js";
import { setupPins } from "./features/pins.js";
import { setupPublic } from "./features/public.js";
import "./features/reactions.js";
import "./features/receipts.js";
import { loadRooms, renderLists, setupRooms } from "./features/rooms.js";
import { setupSearch } from "./features/search.js";
import { setupThreads } from "./features/threads.js";
import { setupTimeline } from "./features/timeline.js";
import { setupTyping } from "./features/typing.js";

let loaded = false;

function startChat() {
  state.me = auth.user;
  loaded = false;
  $("#login-view").hidden = true;
  $("#chat-view").hidden = false;
  fill($("#me"), state.me);
  conn.start(auth.token);
  $("#composer-input").focus();
}

on("live", async () => {
  if (loaded) return;
  loaded = true;
  try {
    await loadRooms();
  } catch (e) {
    loaded = false;
    emit("notice", `Could not load your rooms: ${e.message}`);
  }
});

on("auth-failed", () => {
  auth.clear();
  clearOutbox();
  location.reload();
});

const STATUS = {
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  live: "",
  replaced: "This chat continues in another tab.",
};

on("status", (what) => {
  const box = $("#conn-status");
  fill(box, STATUS[what] ?? "");
  box.dataset.state = what;
  box.title = what === "live" && conn.node ? `connected to ${conn.node}` : "";
  document.body.classList.toggle("offline", what !== "live");
});

let noticeTimer = null;
on("notice", (text) => {
  const box = $("#notice");
  fill(box, text);
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { box.hidden = true; }, 8000);
});

function setup() {
  setupLogin(startChat);
  setupRooms();
  setupDms();
  setupTimeline();
  setupTyping();
  setupPeople();
  setupSearch();
  setupAttachments();
  setupThreads();
  setupPins();
  setupFriends();
  setupPublic();
  $("#logout-btn").addEventListener("click", async () => {
    conn.stop();
    clearOutbox();
    await logout();
    location.reload();
  });
  // Small screens: the room list and the members slide over the messages.
  const toggles = [["#menu-btn", "show-sidebar"], ["#members-btn", "show-members"]];
  for (const [button, shown] of toggles) {
    $(button).setAttribute("aria-expanded", "false");
    $(button).addEventListener("click", () => {
      const open = document.body.classList.toggle(shown);
      $(button).setAttribute("aria-expanded", String(open));
    });
  }
  document.addEventListener("keydown", (ev) => {
    if (ev.key !== "Escape") return;
    for (const [button, shown] of toggles) {
      document.body.classList.remove(shown);
      $(button).setAttribute("aria-expanded", "false");
    }
  });
  $("#notice").addEventListener("click", (ev) => { ev.currentTarget.hidden = true; });
  renderLists();
  if (auth.token) startChat();
  else showLogin();
}

setup();
