// Attachments: the composer's file button uploads to the open room
// (`POST /api/v1/rooms/{room}/attachments`) and sends a message that names
// the upload (its `attachments` field, and its URL in the body so that
// every client sees it). Messages that name an attachment get a preview for
// images (fetched with the bearer token and shown from a blob: URL, as the
// Content-Security-Policy allows) or a download button for other files.

import { ApiError, enc, parse, raw } from "../api.js";
import { $, el, fill } from "../dom.js";
import { emit, state } from "../store.js";
import { enqueue } from "../outbox.js";
import { decorators } from "./timeline.js";

const URL_RE = /\/api\/v1\/attachments\/([0-9a-f]{32})\b/g;
const PREVIEW_MAX = 10 * 1024 * 1024;

function idsOf(m) {
  const ids = new Set();
  for (const a of m.attachments || []) ids.add(typeof a === "string" ? a : a.id);
  for (const match of (m.body || "").matchAll(URL_RE)) ids.add(match[1]);
  return [...ids].filter((id) => /^[0-9a-f]{32}$/.test(id || ""));
}

async function fetchBlob(id) {
  const response = await raw("GET", `/api/v1/attachments/${id}`);
  if (!response.ok) await parse(response);
  return response.blob();
}

function filenameOf(response, id) {
  const cd = response.headers.get("Content-Disposition") || "";
  const star = /filename\*=UTF-8''([^;]+)/i.exec(cd);
  if (star) {
    try { return decodeURIComponent(star[1]); } catch { /* as below */ }
  }
  const plain = /filename="([^"]*)"/i.exec(cd);
  return plain ? plain[1] : id;
}

async function show(id, box) {
  let head;
  try {
    head = await raw("HEAD", `/api/v1/attachments/${id}`);
  } catch {
    return;
  }
  if (!head.ok) {
    box.append(el("span", { className: "attachment missing" }, "attachment unavailable"));
    return;
  }
  const type = head.headers.get("Content-Type") || "";
  const size = Number(head.headers.get("Content-Length") || 0);
  const name = filenameOf(head, id);
  if (type.startsWith("image/") && !type.includes("svg") && size <= PREVIEW_MAX) {
    try {
      const url = URL.createObjectURL(await fetchBlob(id));
      box.append(el("img", { className: "preview", src: url, alt: name }));
      return;
    } catch { /* fall back to the button */ }
  }
  box.append(el("button", {
    type: "button",
    className: "attachment",
    onclick: async () => {
      const url = URL.createObjectURL(await fetchBlob(id));
      const a = el("a", { href: url, download: name });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    },
  }, `Download ${name} (${Math.ceil(size / 1024)} KiB)`));
}

decorators.push((m, node) => {
  const ids = idsOf(m);
  if (!ids.length) return;
  const box = node.querySelector(".extras");
  for (const id of ids) show(id, box);
});

async function upload(file) {
  const room = state.current;
  if (!room) return;
  const status = $("#upload-status");
  fill(status, `Uploading ${file.name}…`);
  try {
    const response = await raw("POST",
      `/api/v1/rooms/${enc(room)}/attachments?filename=${enc(file.name)}`,
      { body: file, headers: { "Content-Type": file.type || "application/octet-stream" } });
    const a = await parse(response);
    enqueue(room, `Attached ${a.filename || file.name}: ${a.url}`, { attachments: [a.id] });
    fill(status, "");
  } catch (e) {
    fill(status, "");
    emit("notice", `Upload failed: ${e instanceof ApiError ? e.message : String(e)}`);
  }
}

export function setupAttachments() {
  const input = $("#attach-input");
  input.addEventListener("change", () => {
    for (const file of input.files) upload(file);
    input.value = "";
  });
}
