// Friends: the Friends section of the sidebar lists friends with their
// presence (friends' `presence` frames come whether or not a room is
// shared), requests to me (Accept / Reject) and mine (Cancel), and a form
// to ask someone. Each friend has Remove and Block. The lists come from
// GET /api/v1/friends and are fetched again on every `friend` frame.

import { api, ApiError, enc } from "../api.js";
import { onFrame } from "../conn.js";
import { $, ago, el, fill } from "../dom.js";
import { emit, on, setPerson, state } from "../store.js";
import { openDm } from "./dms.js";

let lists = { friends: [], incoming: [], outgoing: [] };

async function call(method, path, done) {
  try {
    await api(method, path);
    if (done) emit("notice", done);
  } catch (e) {
    emit("notice", e instanceof ApiError ? e.message : String(e));
  }
  await load();
}

const ask = (user) => call("POST", `/api/v1/friends/${enc(user)}`);
const remove = (user) => call("DELETE", `/api/v1/friends/${enc(user)}`);
const block = (user) => call("PUT", `/api/v1/blocks/${enc(user)}`, `${user} is blocked.`);

function presence(user, f) {
  const p = state.people.get(user) || f;
  if (p.online) return "online";
  return p.last_seen ? `last seen ${ago(p.last_seen)}` : "offline";
}

function button(text, onclick, title) {
  return el("button", { type: "button", className: "small", onclick, attrs: { "aria-label": title } }, text);
}

function render() {
  const items = [];
  for (const f of lists.friends) {
    const online = (state.people.get(f.user) || f).online;
    items.push(el("li", { className: `friend${online ? " online" : ""}`, dataset: { user: f.user, status: "friends" } },
      el("button", { type: "button", className: `person${online ? " online" : ""}`, onclick: () => openDm(f.user), title: `Message ${f.user}` },
        el("span", { className: "dot", attrs: { "aria-hidden": "true" } }),
        el("span", { className: "name" }, f.user),
        el("span", { className: "presence" }, presence(f.user, f))),
      button("Remove", () => remove(f.user), `Remove ${f.user}`),
      button("Block", () => block(f.user), `Block ${f.user}`)));
  }
  for (const f of lists.incoming) {
    items.push(el("li", { className: "friend request", dataset: { user: f.user, status: "incoming" } },
      el("span", { className: "name" }, f.user), " wants to be friends ",
      button("Accept", () => ask(f.user), `Accept ${f.user}`),
      button("Reject", () => remove(f.user), `Reject ${f.user}`),
      button("Block", () => block(f.user), `Block ${f.user}`)));
  }
  for (const f of lists.outgoing) {
    items.push(el("li", { className: "friend request", dataset: { user: f.user, status: "outgoing" } },
      el("span", { className: "name" }, f.user), " asked ",
      button("Cancel", () => remove(f.user), `Cancel the request to ${f.user}`)));
  }
  fill($("#friend-list"), items.length ? items : el("li", { className: "empty" }, "No friends yet."));
  const n = lists.incoming.length;
  fill($("#friends-count"), n ? ` (${n} new)` : "");
}

async function load() {
  try {
    lists = await api("GET", "/api/v1/friends");
    for (const f of lists.friends) {
      const known = state.people.get(f.user);
      if (!known) setPerson(f.user, f.online, f.last_seen);
    }
  } catch (e) {
    if (!(e instanceof ApiError) || e.code !== "rate_limited") emit("notice", `Could not load your friends: ${e.message}`);
  }
  render();
}

onFrame("friend", (f) => {
  if (f.status === "incoming") emit("notice", `${f.user} wants to be your friend.`);
  else if (f.status === "friends") emit("notice", `You and ${f.user} are friends.`);
  load();
});

on("live", () => load());
on("people", () => render());

export function setupFriends() {
  $("#friend-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("#friend-input");
    const user = input.value.trim();
    if (!user) return;
    if (user === state.me) {
      emit("notice", "You cannot befriend yourself.");
      return;
    }
    input.value = "";
    await call("POST", `/api/v1/friends/${enc(user)}`, `Friend request sent to ${user}.`);
  });
  render();
}
