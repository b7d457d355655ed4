// `members` requests, paced: the page asks for the members (and with them
// the read receipts) of every room at start, and a user in many rooms would
// otherwise empty the `members` rate-limit bucket (10/s, bursts of 30) at
// once. One request per room is kept in the queue at a time.

import { conn } from "./conn.js";

const INTERVAL_MS = 150;
const queue = [];
let timer = null;

export function askMembers(room) {
  if (!queue.includes(room)) queue.push(room);
  if (!timer) drain();
}

function drain() {
  timer = null;
  const room = queue[0];
  if (room === undefined) return;
  // Not connected: keep it for later (the next `live` drains the queue).
  if (!conn.send({ type: "members", room })) return;
  queue.shift();
  if (queue.length) timer = setTimeout(drain, INTERVAL_MS);
}

export function resumeMembers() {
  if (!timer) drain();
}
