// Registration and login (REST), and logout. The login token is kept in
// sessionStorage: per tab, so two tabs can be two users.

import { api, auth, ApiError } from "../api.js";
import { $, fill } from "../dom.js";

export function showLogin(message = "") {
  $("#chat-view").hidden = true;
  $("#login-view").hidden = false;
  fill($("#login-error"), message);
  $("#login-user").focus();
}

async function login(user, password) {
  const answer = await api("POST", "/api/v1/login", { username: user, password });
  auth.set(answer.token, answer.username);
}

export function setupLogin(onLoggedIn) {
  const form = $("#login-form");
  const error = $("#login-error");
  const submit = async (register) => {
    const user = $("#login-user").value.trim();
    const password = $("#login-pass").value;
    fill(error, "");
    if (!user || !password) {
      fill(error, "Enter a username and a password.");
      return;
    }
    try {
      if (register) await api("POST", "/api/v1/register", { username: user, password });
      await login(user, password);
      $("#login-pass").value = "";
      onLoggedIn();
    } catch (e) {
      fill(error, e instanceof ApiError ? e.message : String(e));
    }
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submit(false);
  });
  $("#register-btn").addEventListener("click", () => submit(true));
}

export async function logout() {
  try { await api("POST", "/api/v1/logout"); } catch { /* gone already */ }
  auth.clear();
}
