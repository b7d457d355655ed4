//! A headless Chromium driven over the DevTools protocol (CDP), for tests
//! of the web pages: Debian's `/usr/bin/chromium` (installed by
//! scripts/install-chromium.sh), one process and one fresh profile per
//! [`Browser`], a WebSocket to its page target. Tests act through real input
//! events (`Input.dispatchMouseEvent`, `Input.dispatchKeyEvent`) and read
//! the DOM with `Runtime.evaluate`; they never call the page's own
//! functions. Exceptions, console errors (CSP violations among them) and
//! JavaScript dialogs (`alert`) are recorded for the test to check.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A bound on one wait for the page (not a timing check: only how long a
/// broken page may take to fail the test).
pub const PAGE_WAIT: Duration = Duration::from_secs(30);

pub fn chromium_path() -> &'static Path {
    let path = Path::new(CHROMIUM);
    assert!(
        path.exists(),
        "{CHROMIUM} is missing: run scripts/install-chromium.sh (as root) first"
    );
    path
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, Value>>>>>;

pub struct Browser {
    pub name: String,
    _child: tokio::process::Child,
    _profile: tempfile::TempDir,
    out: mpsc::UnboundedSender<Message>,
    pending: Pending,
    next_id: AtomicU64,
    /// What went wrong in the page: exceptions, console errors, dialogs.
    problems: Arc<Mutex<Vec<String>>>,
    /// Messages of JavaScript dialogs that opened (and were dismissed).
    pub dialogs: Arc<Mutex<Vec<String>>>,
    /// Everything the page logged, for failure messages.
    console: Arc<Mutex<Vec<String>>>,
    /// The text frames the page sent on its WebSockets, once
    /// [`Browser::record_websocket`] turned the recording on.
    ws_sent: Arc<Mutex<Vec<String>>>,
}

impl Browser {
    /// Starts chromium with a 1280x800 window on about:blank.
    pub async fn launch(name: &str) -> Browser {
        let profile = tempfile::tempdir().expect("a temp dir");
        let mut cmd = tokio::process::Command::new(chromium_path());
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-extensions",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--force-color-profile=srgb",
            "--force-device-scale-factor=1",
            "--hide-scrollbars",
            // Two browsers share the machine: neither page is "in the
            // background" (timers throttled, hidden).
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
            "--window-size=1280,800",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let mut child = cmd.spawn().expect("chromium starts");
        let stderr = child.stderr.take().expect("chromium's stderr");
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = tokio::time::timeout(PAGE_WAIT, async {
            while let Some(line) = lines.next_line().await.expect("chromium's stderr") {
                if let Some(at) = line.find("ws://") {
                    return line[at..].trim().to_string();
                }
            }
            panic!("chromium exited without a DevTools endpoint");
        })
        .await
        .expect("chromium printed its DevTools endpoint");
        // Keep draining stderr so that chromium never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let http_base = endpoint
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("host:port")
            .to_string();
        let targets: Value = reqwest::get(format!("http://{http_base}/json/list"))
            .await
            .expect("the DevTools HTTP endpoint answers")
            .json()
            .await
            .expect("a target list");
        let page_ws = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target in {targets}"))
            .to_string();
        let (ws, _) = tokio_tungstenite::connect_async(page_ws.as_str())
            .await
            .expect("the page's DevTools socket");
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let problems: Arc<Mutex<Vec<String>>> = Arc::default();
        let dialogs: Arc<Mutex<Vec<String>>> = Arc::default();
        let console: Arc<Mutex<Vec<String>>> = Arc::default();
        let ws_sent: Arc<Mutex<Vec<String>>> = Arc::default();
        {
            let (pending, problems, dialogs, console, ws_sent, out) = (
                pending.clone(),
                problems.clone(),
                dialogs.clone(),
                console.clone(),
                ws_sent.clone(),
                out.clone(),
            );
            let who = name.to_string();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = stream.next().await {
                    let Message::Text(text) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    if let Some(id) = v["id"].as_u64() {
                        if let Some(tx) = pending.lock().unwrap().remove(&id) {
                            let _ = tx.send(match v.get("error") {
                                Some(e) => Err(e.clone()),
                                None => Ok(v["result"].clone()),
                            });
                        }
                        continue;
                    }
                    let params = &v["params"];
                    match v["method"].as_str() {
                        Some("Runtime.exceptionThrown") => {
                            let d = &params["exceptionDetails"];
                            let text = d["exception"]["description"]
                                .as_str()
                                .or(d["text"].as_str())
                                .unwrap_or("?");
                            problems.lock().unwrap().push(format!("exception: {text}"));
                        }
                        Some("Runtime.consoleAPICalled") => {
                            let args: Vec<String> = params["args"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .map(|x| {
                                            x["value"]
                                                .as_str()
                                                .map(str::to_string)
                                                .unwrap_or_else(|| x["description"].to_string())
                                        })
                                        .collect()
                                })
                                .unwrap_or_default();
                            let line =
                                format!("[{who}] console.{}: {}", params["type"], args.join(" "));
                            if params["type"] == "error" {
                                problems.lock().unwrap().push(line.clone());
                            }
                            console.lock().unwrap().push(line);
                        }
                        Some("Log.entryAdded") => {
                            let e = &params["entry"];
                            let line =
                                format!("[{who}] log {}: {} {}", e["level"], e["text"], e["url"]);
                            // A refused WebSocket while a node is down is
                            // expected; a CSP refusal or a script error is not.
                            if e["level"] == "error" && e["source"] != "network" {
                                problems.lock().unwrap().push(line.clone());
                            }
                            console.lock().unwrap().push(line);
                        }
                        Some("Network.webSocketFrameSent") => {
                            if let Some(text) = params["response"]["payloadData"].as_str() {
                                ws_sent.lock().unwrap().push(text.to_string());
                            }
                        }
                        Some("Page.javascriptDialogOpening") => {
                            dialogs
                                .lock()
                                .unwrap()
                                .push(params["message"].as_str().unwrap_or("").to_string());
                            let m = json!({"id": 0, "method": "Page.handleJavaScriptDialog",
                                           "params": {"accept": false}});
                            let _ = out.send(Message::Text(m.to_string().into()));
                        }
                        _ => {}
                    }
                }
            });
        }
        let browser = Browser {
            name: name.to_string(),
            _child: child,
            _profile: profile,
            out,
            pending,
            next_id: AtomicU64::new(1),
            problems,
            dialogs,
            console,
            ws_sent,
        };
        for domain in ["Runtime.enable", "Page.enable", "Log.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    /// One CDP command; its result (panics on a protocol error).
    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .await
            .unwrap_or_else(|e| panic!("[{}] {method} failed: {e}", self.name))
    }

    pub async fn try_call(&self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let m = json!({"id": id, "method": method, "params": params});
        self.out
            .send(Message::Text(m.to_string().into()))
            .expect("the DevTools socket is open");
        tokio::time::timeout(PAGE_WAIT, rx)
            .await
            .unwrap_or_else(|_| panic!("[{}] no answer to {method}", self.name))
            .expect("the DevTools socket stayed open")
    }

    /// Evaluates an expression in the page (reading the DOM); its value.
    pub async fn eval(&self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("[{}] evaluating {expression}: {e}", self.name);
        }
        r["result"]["value"].clone()
    }

    pub async fn text(&self, selector: &str) -> String {
        let v = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({}); return e ? e.textContent : null; }})()",
                js_string(selector)
            ))
            .await;
        v.as_str().map(str::to_string).unwrap_or_default()
    }

    /// Waits until `expression` is truthy; its value. Fails the test with
    /// `what` and the page's console after [`PAGE_WAIT`].
    pub async fn wait_for(&self, what: &str, expression: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let v = self.eval(expression).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "[{}] waited {PAGE_WAIT:?} for {what} ({expression}); last value {v}\nconsole:\n{}",
                    self.name,
                    self.console.lock().unwrap().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the element's text contains `needle`.
    pub async fn wait_text(&self, selector: &str, needle: &str) {
        let expr = format!(
            "(() => {{ const e = document.querySelector({}); return !!e && e.textContent.includes({}); }})()",
            js_string(selector),
            js_string(needle)
        );
        self.wait_for(&format!("{selector} to contain {needle:?}"), &expr)
            .await;
    }

    pub async fn goto(&self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_for("the page to load", "document.readyState === 'complete'")
            .await;
    }

    /// The centre of the (first) visible element matching `selector`,
    /// scrolled into view.
    async fn centre(&self, selector: &str) -> (f64, f64) {
        let expr = format!(
            "(() => {{ const e = document.querySelector({});
                if (!e || e.offsetParent === null && getComputedStyle(e).position !== 'fixed') return null;
                e.scrollIntoView({{block: 'nearest'}});
                const r = e.getBoundingClientRect();
                return [r.left + r.width / 2, r.top + r.height / 2]; }})()",
            js_string(selector)
        );
        let v = self
            .wait_for(&format!("{selector} to be visible"), &expr)
            .await;
        (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
    }

    /// A left click in the middle of the element, as a mouse does it.
    pub async fn click(&self, selector: &str) {
        let (x, y) = self.centre(selector).await;
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        )
        .await;
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// The mouse wheel over the element (negative `dy`: up).
    pub async fn wheel(&self, selector: &str, dy: f64) {
        let (x, y) = self.centre(selector).await;
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseWheel", "x": x, "y": y, "deltaX": 0, "deltaY": dy}),
        )
        .await;
    }

    /// Types `text` into the focused element, one key event per character.
    pub async fn type_text(&self, text: &str) {
        for c in text.chars() {
            let s = c.to_string();
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": "keyDown", "key": s, "text": s, "unmodifiedText": s}),
            )
            .await;
            self.call("Input.dispatchKeyEvent", json!({"type": "keyUp", "key": s}))
                .await;
        }
    }

    /// A named key: "Enter", "Escape", "Tab", "PageUp", "Home".
    pub async fn press(&self, key: &str) {
        self.press_with(key, 0).await;
    }

    /// A named key with modifiers held (CDP's bits: Alt 1, Ctrl 2, Meta 4,
    /// Shift 8).
    pub async fn press_with(&self, key: &str, modifiers: u8) {
        let (code, text) = match key {
            "Enter" => (13, "\r"),
            "Escape" => (27, ""),
            "Tab" => (9, ""),
            "PageUp" => (33, ""),
            "PageDown" => (34, ""),
            "Home" => (36, ""),
            "End" => (35, ""),
            "ArrowUp" => (38, ""),
            "ArrowDown" => (40, ""),
            // A letter with a modifier (Ctrl+K): its key code, no text.
            letter if letter.len() == 1 && letter.as_bytes()[0].is_ascii_alphabetic() => {
                (letter.to_ascii_uppercase().as_bytes()[0] as i64, "")
            }
            other => panic!("no key code for {other}"),
        };
        let mut down = json!({"type": if text.is_empty() { "rawKeyDown" } else { "keyDown" },
                              "key": key, "code": key_code(key), "windowsVirtualKeyCode": code,
                              "nativeVirtualKeyCode": code, "modifiers": modifiers});
        if !text.is_empty() {
            down["text"] = json!(text);
            down["unmodifiedText"] = json!(text);
        }
        self.call("Input.dispatchKeyEvent", down).await;
        self.call(
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": key, "code": key_code(key), "windowsVirtualKeyCode": code,
                   "nativeVirtualKeyCode": code, "modifiers": modifiers}),
        )
        .await;
    }

    /// Clicks into a field and types into it.
    pub async fn fill(&self, selector: &str, text: &str) {
        self.click(selector).await;
        self.type_text(text).await;
    }

    /// Sets the viewport (e.g. a phone's 390x844), or back with `None`.
    pub async fn viewport(&self, size: Option<(u32, u32)>) {
        match size {
            Some((w, h)) => {
                self.call(
                    "Emulation.setDeviceMetricsOverride",
                    json!({"width": w, "height": h, "deviceScaleFactor": 1, "mobile": w < 700}),
                )
                .await;
            }
            None => {
                self.call("Emulation.clearDeviceMetricsOverride", json!({}))
                    .await;
            }
        }
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Records from now on every frame the page sends on its WebSockets
    /// (the DevTools Network domain), for [`Browser::ws_sent`].
    pub async fn record_websocket(&self) {
        self.call("Network.enable", json!({})).await;
    }

    /// The JSON frames the page sent on its WebSockets since
    /// [`Browser::record_websocket`], in order.
    pub fn ws_sent(&self) -> Vec<Value> {
        self.ws_sent
            .lock()
            .unwrap()
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect()
    }

    /// Exceptions, console errors and CSP refusals seen so far.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }

    pub fn console(&self) -> String {
        self.console.lock().unwrap().join("\n")
    }
}

/// The DOM `code` of a key: "KeyK" for a letter, else its name.
fn key_code(key: &str) -> String {
    if key.len() == 1 {
        format!("Key{}", key.to_ascii_uppercase())
    } else {
        key.to_string()
    }
}

/// A JavaScript string literal of `s`.
pub fn js_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}
