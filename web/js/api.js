// REST calls with the tab's login token (kept in sessionStorage: per tab,
// gone when the tab closes). Errors come back as ApiError with the server's
// code and message.

const TOKEN_KEY = "troupe.token";
const USER_KEY = "troupe.user";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const auth = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  get user() { return sessionStorage.getItem(USER_KEY); },
  set(token, user) {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(USER_KEY, user);
  },
  clear() { sessionStorage.clear(); },
};

/** fetch() with the bearer token; raw Response (for attachments). */
export async function raw(method, path, { body, headers = {} } = {}) {
  const h = { ...headers };
  if (auth.token) h.Authorization = `Bearer ${auth.token}`;
  return fetch(path, { method, headers: h, body, credentials: "omit", cache: "no-store" });
}

/** A JSON call: the parsed answer, or throws ApiError. */
export async function api(method, path, body) {
  let response;
  try {
    response = await raw(method, path, {
      body: body === undefined ? undefined : JSON.stringify(body),
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
    });
  } catch (e) {
    throw new ApiError(0, "unavailable", "the server cannot be reached");
  }
  return parse(response);
}

export async function parse(response) {
  if (response.status === 204) return null;
  let json = null;
  try { json = await response.json(); } catch { /* not JSON */ }
  if (!response.ok) {
    const e = json && json.error;
    throw new ApiError(response.status, e ? e.code : "unavailable",
      e ? e.message : `HTTP ${response.status}`);
  }
  return json;
}

export const enc = encodeURIComponent;
