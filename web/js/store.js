// The page's state: the rooms the user is in, the messages loaded of each
// (by seq, so a message delivered twice, by a resume replay, a history page
// and live, is kept once and always shown in seq order), people's presence.
// Features subscribe to its events; nothing here touches the DOM.

const listeners = new Map();

export function on(event, fn) {
  if (!listeners.has(event)) listeners.set(event, []);
  listeners.get(event).push(fn);
}

export function emit(event, data) {
  for (const fn of listeners.get(event) || []) {
    try { fn(data); } catch (e) { console.error(`handler of ${event}`, e); }
  }
}

export const BROADCAST = "!broadcast";

export const state = {
  me: null,
  /** name -> Room */
  rooms: new Map(),
  /** the room on screen */
  current: null,
  /** user -> {online, last_seen} */
  people: new Map(),
};

export function roomKind(name) {
  if (name === BROADCAST) return "broadcast";
  if (name.startsWith("dm:")) return "dm";
  return "group";
}

/** The other user of a DM room `dm:a:b`. */
export function dmPeer(name) {
  const [, a, b] = name.split(":");
  return a === state.me ? b : a;
}

export function dmRoom(a, b) {
  return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}

export function label(name) {
  const kind = roomKind(name);
  if (kind === "dm") return `@${dmPeer(name)}`;
  if (kind === "broadcast") return "announcements";
  return `#${name}`;
}

class Room {
  constructor(name) {
    this.name = name;
    this.kind = roomKind(name);
    this.private = this.kind === "dm";
    this.members = 0;
    /** the highest seq known to exist (from the room list, live messages, history) */
    this.lastSeq = 0;
    /** my read receipt */
    this.readSeq = 0;
    /** whether readSeq is known (from `members` or `read`): no badge before */
    this.receiptKnown = this.kind !== "group" && this.kind !== "dm";
    /** seq -> message */
    this.messages = new Map();
    /** the newest page has been loaded: the loaded messages reach the end */
    this.tailLoaded = false;
    /** seq 1 is loaded (or the room is empty) */
    this.reachedStart = false;
    /** [{user, online, last_seen, read_seq}] from `members`, kept current */
    this.memberList = [];
    /** user -> expiry (ms) of their typing indicator */
    this.typing = new Map();
  }

  get oldest() {
    let min = Infinity;
    for (const seq of this.messages.keys()) if (seq < min) min = seq;
    return min === Infinity ? null : min;
  }

  get newest() {
    let max = 0;
    for (const seq of this.messages.keys()) if (seq > max) max = seq;
    return max;
  }

  get unread() {
    if (!this.receiptKnown) return 0;
    // The server's count (GET /api/v1/rooms: room events, deleted and own
    // messages left out) while my receipt has not moved, plus what came since.
    const s = this.server;
    if (s && this.readSeq <= s.readSeq) {
      let since = 0;
      for (const m of this.messages.values()) {
        if (m.seq > s.lastSeq && !m.event && m.from !== state.me) since += 1;
      }
      return s.unread + since;
    }
    return Math.max(0, this.lastSeq - this.readSeq);
  }
}

export function room(name) {
  let r = state.rooms.get(name);
  if (!r) {
    r = new Room(name);
    state.rooms.set(name, r);
    emit("rooms", r);
  }
  return r;
}

/**
 * Adds messages (live, replayed or from history) to their room; returns the
 * ones it did not have. Emits "messages" with {room, added}.
 */
export function addMessages(name, messages) {
  // A room first heard of through its messages (a new DM) is all unread.
  const isNew = !state.rooms.has(name);
  const r = room(name);
  if (isNew) r.receiptKnown = true;
  const added = [];
  for (const m of messages) {
    if (r.messages.has(m.seq)) continue;
    r.messages.set(m.seq, m);
    added.push(m);
    if (m.seq > r.lastSeq) r.lastSeq = m.seq;
    if (m.seq === 1) r.reachedStart = true;
    if (m.from === state.me && m.seq > r.readSeq) r.readSeq = m.seq;
  }
  if (added.length) emit("messages", { room: r, added });
  return added;
}

/** The last seq seen per room, for `resume`. */
export function resumeSeqs() {
  const seqs = {};
  for (const r of state.rooms.values()) {
    if (r.kind === "broadcast" && !r.lastSeq && !r.tailLoaded) continue;
    seqs[r.name] = r.lastSeq;
  }
  return seqs;
}

export function setPerson(user, online, lastSeen) {
  state.people.set(user, { online, last_seen: lastSeen });
  emit("people", user);
}
