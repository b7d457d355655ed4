//! The chat page (`GET /`, web/) in real browsers: headless Chromium driven
//! over the DevTools protocol (tests/common/browser.rs), two browsers, two
//! people, against real troupe nodes. Everything goes through the page's
//! UI: clicks and key events; the DOM is only read.
//!
//! With `WEB_SCREENSHOTS=<dir>` the tests save screenshots of the main views
//! there (docs/ keeps the ones the README shows).
//!
//! Chromium is installed by scripts/install-chromium.sh; without it these
//! tests fail, they do not skip. The cluster test (`cluster_*`: Postgres,
//! Redis and the tansu broker, as tests/cluster.rs) runs with the cluster
//! tests in scripts/test.sh.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::browser::{js_string, Browser};
use common::cluster::{Cluster, ClusterOptions, ADMIN_TOKEN};
use common::{Client, Node};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

const PASSWORD: &str = "secret-pw-1";
const XSS: &str = "<img src=x onerror=alert(1)>";

fn screenshot_dir() -> Option<PathBuf> {
    std::env::var_os("WEB_SCREENSHOTS").map(PathBuf::from)
}

async fn shoot(b: &Browser, name: &str) {
    if let Some(dir) = screenshot_dir() {
        std::fs::create_dir_all(&dir).expect("the screenshot dir");
        b.screenshot(&dir.join(format!("{name}.png"))).await;
    }
}

/// Opens the page and registers (or logs in) through the form; waits until
/// the connection is live.
async fn sign_in(b: &Browser, url: &str, user: &str, register: bool) {
    b.goto(url).await;
    b.wait_for(
        "the login form",
        "!document.querySelector('#login-view').hidden",
    )
    .await;
    b.fill("#login-user", user).await;
    b.fill("#login-pass", PASSWORD).await;
    if register {
        b.click("#register-btn").await;
    } else {
        b.press("Enter").await;
    }
    wait_live(b).await;
    assert_eq!(b.text("#me").await, user);
}

/// The chat view, connected, with its rooms loaded (a room is open): what
/// a person sees before they start typing.
async fn wait_live(b: &Browser) {
    b.wait_for(
        "the chat view, connected, a room open",
        "!document.querySelector('#chat-view').hidden && \
         document.querySelector('#conn-status').dataset.state === 'live' && \
         document.querySelector('#room-title').textContent !== ''",
    )
    .await;
}

/// Joins (or creates) a room through the sidebar form.
async fn join(b: &Browser, room: &str) {
    b.fill("#join-input", room).await;
    b.press("Enter").await;
    b.wait_text("#room-title", &format!("#{room}")).await;
}

/// Types a message in the composer and sends it with Enter.
async fn say(b: &Browser, body: &str) {
    b.click("#composer-input").await;
    b.type_text(body).await;
    b.press("Enter").await;
}

/// The messages shown in the open room: (seq, from, body), in page order.
async fn shown(b: &Browser) -> Vec<(u64, String, String)> {
    let v = b
        .eval(
            "[...document.querySelectorAll('#messages .msg')].map(m => \
             [Number(m.dataset.seq), m.querySelector('.from').textContent, \
              m.querySelector('.body').textContent])",
        )
        .await;
    v.as_array()
        .expect("an array")
        .iter()
        .map(|m| {
            (
                m[0].as_u64().expect("a seq"),
                m[1].as_str().unwrap().to_string(),
                m[2].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Waits until a message with this body is shown.
async fn wait_message(b: &Browser, from: &str, body: &str) {
    let expr = format!(
        "[...document.querySelectorAll('#messages .msg')].some(m => \
          m.querySelector('.from').textContent === {} && m.querySelector('.body').textContent === {})",
        js_string(from),
        js_string(body)
    );
    b.wait_for(&format!("{from}: {body:?}"), &expr).await;
}

fn assert_clean(b: &Browser) {
    let problems = b.problems();
    assert!(
        problems.is_empty(),
        "[{}] the page had errors:\n{}",
        b.name,
        problems.join("\n")
    );
    assert!(
        b.dialogs.lock().unwrap().is_empty(),
        "[{}] a dialog opened: {:?}",
        b.name,
        b.dialogs.lock().unwrap()
    );
}

#[tokio::test]
async fn two_people_chat_in_two_browsers() {
    let node = Node::start().await;
    let url = node.url("/");
    let (ann, bob) = tokio::join!(Browser::launch("ann"), Browser::launch("bob"));

    // The page itself: its security headers.
    let r = reqwest::get(&url).await.expect("GET /");
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );

    ann.goto(&url).await;
    ann.wait_for(
        "the login form",
        "!document.querySelector('#login-view').hidden",
    )
    .await;
    shoot(&ann, "web-login").await;
    // Registration through the form; a wrong password is refused with the
    // server's message.
    sign_in(&ann, &url, "ann", true).await;
    bob.goto(&url).await;
    bob.fill("#login-user", "bob").await;
    bob.fill("#login-pass", "wrong-password").await;
    bob.click("#login-btn").await;
    bob.wait_for(
        "a login error",
        "document.querySelector('#login-error').textContent !== ''",
    )
    .await;
    assert_contrast(&bob, "a login error").await;
    sign_in(&bob, &url, "bob", true).await;

    // ann creates the room, bob joins it.
    join(&ann, "garden").await;
    join(&bob, "garden").await;
    ann.wait_for(
        "bob among the members",
        "!!document.querySelector('#member-list button[data-user=\"bob\"]')",
    )
    .await;

    // bob types: ann sees it; then he sends.
    bob.click("#composer-input").await;
    bob.type_text("hello ann").await;
    ann.wait_text("#typing", "bob is typing").await;
    bob.press("Enter").await;
    wait_message(&ann, "bob", "hello ann").await;
    wait_message(&bob, "bob", "hello ann").await;
    ann.wait_for(
        "the typing line to clear",
        "document.querySelector('#typing').textContent === ''",
    )
    .await;

    // ann answers; bob's page (scrolled to the bottom, visible) reads it and
    // ann sees that he did.
    say(&ann, "hi bob").await;
    wait_message(&bob, "ann", "hi bob").await;
    ann.wait_text("#messages .msg[data-seq=\"2\"] .seen", "Seen by bob")
        .await;
    bob.wait_text("#messages .msg[data-seq=\"2\"] .seen", "Seen by ann")
        .await;

    // Markup in a message is text.
    say(&bob, XSS).await;
    wait_message(&ann, "bob", XSS).await;
    assert_eq!(
        ann.eval("document.querySelectorAll('#messages img').length")
            .await,
        json!(0)
    );
    assert_eq!(
        ann.eval(
            "document.querySelector('#messages .msg[data-seq=\"3\"] .body').childNodes.length"
        )
        .await,
        json!(1),
        "the body is one text node"
    );

    // Online list: each sees the other online.
    ann.wait_for(
        "bob online",
        "!!document.querySelector('#people-list button.person.online[data-user=\"bob\"]')",
    )
    .await;

    // A DM from bob: an unread badge at ann's, then the conversation.
    bob.fill("#dm-input", "ann").await;
    bob.press("Enter").await;
    bob.wait_text("#room-title", "@ann").await;
    say(&bob, "psst, a secret").await;
    wait_message(&bob, "bob", "psst, a secret").await;
    let dm = "#dm-list button[data-room=\"dm:ann:bob\"]";
    ann.wait_text(&format!("{dm} .badge"), "1").await;
    ann.click(dm).await;
    ann.wait_text("#room-title", "@bob").await;
    wait_message(&ann, "bob", "psst, a secret").await;
    say(&ann, "tell me").await;
    wait_message(&bob, "ann", "tell me").await;
    assert_eq!(
        ann.eval(&format!("document.querySelector('{dm} .badge')"))
            .await,
        Value::Null,
        "the badge is gone once read"
    );
    // Back in garden at bob's, nothing was shown twice.
    bob.click("#room-list button[data-room=\"garden\"]").await;
    wait_message(&bob, "bob", XSS).await;
    let seqs: Vec<u64> = shown(&bob).await.iter().map(|m| m.0).collect();
    assert_eq!(seqs, vec![1, 2, 3]);

    // A private room: ann creates it and invites bob, whose page says so.
    ann.fill("#join-input", "secret").await;
    ann.click("#join-private").await;
    ann.click("#join-form button[type=submit]").await;
    ann.wait_text("#room-title", "#secret").await;
    ann.wait_text("#room-list button[data-room=\"secret\"]", "private")
        .await;
    ann.fill("#invite-input", "bob").await;
    ann.press("Enter").await;
    bob.wait_text("#notice", "You were added to #secret").await;
    bob.wait_for(
        "secret in bob's list",
        "!!document.querySelector('#room-list button[data-room=\"secret\"]')",
    )
    .await;
    // A message there while bob looks at garden: an unread badge.
    say(&ann, "for your eyes only").await;
    bob.wait_text("#room-list button[data-room=\"secret\"] .badge", "1")
        .await;
    bob.click("#composer-input").await;
    bob.type_text("so many rooms").await;
    ann.click("#room-list button[data-room=\"garden\"]").await;
    ann.wait_text("#typing", "bob is typing").await;
    shoot(&bob, "web-chat").await;
    shoot(&ann, "web-typing").await;
    assert_contrast(&bob, "rooms with unread badges").await;
    assert_contrast(&ann, "someone typing").await;
    bob.press("Enter").await;

    // Search finds a message and opens its room.
    ann.fill("#search-input", "hello").await;
    ann.press("Enter").await;
    ann.wait_for(
        "a search result",
        "!!document.querySelector('#search-list button.hit[data-room=\"garden\"][data-seq=\"1\"]')",
    )
    .await;
    shoot(&ann, "web-search").await;
    assert_contrast(&ann, "search results").await;
    ann.click("#search-list button.hit[data-room=\"garden\"]")
        .await;
    ann.wait_text("#room-title", "#garden").await;

    // A phone-sized screen: one column, the room list behind a button.
    if screenshot_dir().is_some() {
        ann.viewport(Some((390, 844))).await;
        shoot(&ann, "web-phone").await;
        ann.click("#menu-btn").await;
        shoot(&ann, "web-phone-rooms").await;
        ann.viewport(None).await;
    }

    // bob leaves: ann sees when he was last there.
    bob.click("#logout-btn").await;
    ann.wait_text(
        "#people-list button.person[data-user=\"bob\"] .presence",
        "last seen just now",
    )
    .await;
    ann.wait_text(
        "#member-list button.person[data-user=\"bob\"] .presence",
        "last seen",
    )
    .await;

    assert_clean(&ann);
    assert_clean(&bob);
}

#[tokio::test]
async fn scrolling_up_loads_all_200_messages_in_order() {
    let node = Node::start_with(&[("TROUPE_LIMITS__MESSAGE_BURST", "1000")]).await;
    // 200 messages written by another client before the reader comes.
    let mut writer = Client::new_user(&node, "writer").await;
    writer.join("archive").await;
    for i in 1..=200 {
        let ack = writer
            .say("archive", &format!("message number {i}"), &format!("c{i}"))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    common::account(&node, "reader").await;

    let b = Browser::launch("reader").await;
    b.goto(&node.url("/")).await;
    // Keyboard only: the user field has the focus, Tab goes to the
    // password, Enter submits.
    b.wait_for(
        "the focus in the user field",
        "document.activeElement && document.activeElement.id === 'login-user'",
    )
    .await;
    b.type_text("reader").await;
    b.press("Tab").await;
    b.type_text(common::PASSWORD).await;
    b.press("Enter").await;
    wait_live(&b).await;
    join(&b, "archive").await;
    // Alt+Up / Alt+Down walk the room list.
    b.press_with("ArrowUp", 1).await;
    b.wait_text("#room-title", "announcements").await;
    b.press_with("ArrowDown", 1).await;
    b.wait_text("#room-title", "#archive").await;
    wait_message(&b, "writer", "message number 200").await;
    let first_page = shown(&b).await;
    assert!(
        first_page.len() < 200,
        "{} messages loaded at once: nothing left to scroll back to",
        first_page.len()
    );

    // Scroll up with the mouse wheel until the start of the room shows.
    let deadline = tokio::time::Instant::now() + common::browser::PAGE_WAIT * 2;
    while !b
        .text("#history-marker")
        .await
        .contains("beginning of #archive")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached the start; {} messages shown\n{}",
            shown(&b).await.len(),
            b.console()
        );
        b.wheel("#timeline", -2000.0).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let all = shown(&b).await;
    let expected: Vec<(u64, String, String)> = (1..=200)
        .map(|i| (i, "writer".to_string(), format!("message number {i}")))
        .collect();
    assert_eq!(all, expected);
    // Keyboard: End in the focused list goes back to the newest.
    b.click("#messages .msg[data-seq=\"1\"] .body").await;
    b.press("End").await;
    b.wait_for(
        "the list at the bottom",
        "(() => { const t = document.querySelector('#timeline'); \
           return t.scrollHeight - t.scrollTop - t.clientHeight < 48; })()",
    )
    .await;

    // Logging out forgets the tab's token: a reload shows the login form.
    // (The page reloads itself: while it does, there is no #login-view.)
    b.click("#logout-btn").await;
    b.wait_for(
        "the login form",
        "(() => { const e = document.querySelector('#login-view'); return !!e && !e.hidden; })()",
    )
    .await;
    b.goto(&node.url("/")).await;
    b.wait_for(
        "the login form again",
        "!document.querySelector('#login-view').hidden",
    )
    .await;
    assert_eq!(b.eval("sessionStorage.length").await, json!(0));
    assert_clean(&b);
}

/// A TCP load balancer in front of the cluster, as a browser would reach
/// it: each connection goes to the first of `backends` that accepts it; with
/// no backend, connections are closed at once (the site is unreachable).
struct Balancer {
    addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Balancer {
    async fn start(backends: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().unwrap();
        let backends = Arc::new(Mutex::new(backends));
        let list = backends.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let choices = list.lock().unwrap().clone();
                tokio::spawn(async move {
                    for backend in choices {
                        if let Ok(mut server) = TcpStream::connect(backend).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer { addr, backends }
    }

    fn set(&self, backends: Vec<SocketAddr>) {
        *self.backends.lock().unwrap() = backends;
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

async fn sessions_of(cluster: &Cluster, node: usize, user: &str) -> Vec<Value> {
    let r: Value = cluster
        .http()
        .get(cluster.nodes[node].url(&format!("/admin/actors?kind=session&name={user}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("/admin/actors answers")
        .json()
        .await
        .expect("JSON");
    r["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["actors"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["state"]["user"] == user)
        .collect()
}

#[tokio::test]
async fn cluster_kill9_of_the_node_a_browser_uses_it_resumes_on_the_other() {
    // Two nodes: the survivor is no majority of the two until it forgets
    // the dead one (`cluster.forget_after_s`, 30 s by default); 2 s here.
    let options = ClusterOptions {
        env: vec![("TROUPE_CLUSTER__FORGET_AFTER_S".into(), "2".into())],
        ..Default::default()
    };
    let mut cluster = Cluster::start_with("web-kill9", 2, options).await;
    let ann_token = cluster.account(0, "ann").await;
    cluster.account(1, "bob").await;
    // A room served by node1, the node that dies: it moves to node2 while
    // bob writes to it.
    let mut room = None;
    for i in 0..20 {
        let name = format!("relay{i}");
        let r = cluster
            .http()
            .post(cluster.nodes[0].url("/api/v1/rooms"))
            .bearer_auth(&ann_token)
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("create a room");
        assert_eq!(r.status(), 201, "{name}");
        if cluster.rooms_owned_by("node1").contains(&name) {
            room = Some(name);
            break;
        }
    }
    let room = room.expect("one of 20 rooms served by node1");
    println!("room {room} is served by node1");
    // ann reaches the cluster through a balancer that prefers node1; bob
    // talks to node2.
    let lb = Balancer::start(vec![cluster.nodes[0].http, cluster.nodes[1].http]).await;
    let (ann, bob) = tokio::join!(Browser::launch("ann"), Browser::launch("bob"));
    for (b, url, user) in [
        (&ann, lb.url(), "ann"),
        (&bob, cluster.nodes[1].url("/"), "bob"),
    ] {
        b.goto(&url).await;
        b.fill("#login-user", user).await;
        b.fill("#login-pass", common::cluster::PASSWORD).await;
        b.press("Enter").await;
        wait_live(b).await;
    }
    let on = |node: &str| {
        format!("document.querySelector('#conn-status').title === 'connected to {node}'")
    };
    ann.wait_for("ann on node1", &on("node1")).await;
    join(&ann, &room).await;
    join(&bob, &room).await;
    say(&ann, "before 1").await;
    say(&bob, "before 2").await;
    wait_message(&ann, "bob", "before 2").await;
    wait_message(&bob, "ann", "before 1").await;

    // node1 dies while the balancer has nowhere to send ann: her page stays
    // disconnected, and what she writes waits in the composer queue.
    lb.set(vec![]);
    cluster.kill9(0);
    ann.wait_for(
        "ann's page to notice",
        "document.querySelector('#conn-status').dataset.state === 'reconnecting'",
    )
    .await;
    assert_eq!(ann.text("#conn-status").await, "Reconnecting…");
    say(&ann, "written offline").await;
    ann.wait_for(
        "the message queued",
        "document.querySelectorAll('#pending .msg.pending').length === 1",
    )
    .await;
    assert_eq!(
        ann.text("#pending .msg.pending .state").await,
        "waiting for the connection…"
    );
    shoot(&ann, "web-reconnecting").await;
    assert_contrast(&ann, "reconnecting, a message queued").await;
    // Meanwhile bob chats on, three messages in a row: his page resends
    // while the room moves, one at a time, so they land in the order typed.
    for i in 1..=3 {
        say(&bob, &format!("while away {i}")).await;
    }
    wait_message(&bob, "bob", "while away 3").await;

    // The balancer now leads to node2: ann's page reconnects there, resumes,
    // and sends what was queued (same client_id).
    lb.set(vec![cluster.nodes[1].http]);
    ann.wait_for("ann on node2", &on("node2")).await;
    wait_message(&ann, "ann", "written offline").await;
    wait_message(&bob, "ann", "written offline").await;
    say(&bob, "after").await;
    wait_message(&ann, "bob", "after").await;
    let expected = [
        ("ann", "before 1"),
        ("bob", "before 2"),
        ("bob", "while away 1"),
        ("bob", "while away 2"),
        ("bob", "while away 3"),
    ];
    for b in [&ann, &bob] {
        let got = shown(b).await;
        let seqs: Vec<u64> = got.iter().map(|m| m.0).collect();
        assert_eq!(seqs, (1..=7).collect::<Vec<u64>>(), "[{}] {got:?}", b.name);
        for (i, (from, body)) in expected.iter().enumerate() {
            assert_eq!(
                (got[i].1.as_str(), got[i].2.as_str()),
                (*from, *body),
                "[{}] {got:?}",
                b.name
            );
        }
        // ann's offline message lands once, wherever the outage put it, and
        // "after" comes last.
        assert_eq!(
            (got[5].1.as_str(), got[5].2.as_str()),
            ("ann", "written offline")
        );
        assert_eq!((got[6].1.as_str(), got[6].2.as_str()), ("bob", "after"));
    }
    assert_eq!(
        ann.eval("document.querySelectorAll('#pending .msg').length")
            .await,
        json!(0),
        "nothing left in the queue"
    );
    assert!(
        cluster.rooms_owned_by("node2").contains(&room),
        "{room} moved to node2"
    );
    // It was a resume, on node2.
    let sessions = sessions_of(&cluster, 1, "ann").await;
    assert!(
        sessions
            .iter()
            .any(|s| s["node"] == "node2" && s["state"]["resumed"] == true),
        "no resumed session of ann on node2: {sessions:?}"
    );
    assert_eq!(ann.text("#conn-status").await, "");
    // The refused connections while node1 was gone are network errors,
    // which assert_clean does not count.
    assert_clean(&ann);
    assert_clean(&bob);
}

/// A tiny PNG: 4x3 pixels of one colour.
fn png_bytes() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 4, 3);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("a PNG header");
        writer
            .write_image_data(&[0x20, 0x80, 0x40].repeat(12))
            .expect("PNG data");
    }
    out
}

#[tokio::test]
async fn an_image_sent_through_the_file_button_shows_as_a_preview() {
    let node = Node::start().await;
    let url = node.url("/");
    let (ann, bob) = tokio::join!(Browser::launch("ann"), Browser::launch("bob"));
    sign_in(&ann, &url, "ann", true).await;
    sign_in(&bob, &url, "bob", true).await;
    join(&ann, "photos").await;
    join(&bob, "photos").await;

    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("dot.png");
    std::fs::write(&file, png_bytes()).expect("the PNG file");
    // What the file chooser does: the file is set on the input, which then
    // fires its change event.
    let doc = ann.call("DOM.getDocument", json!({})).await;
    let input = ann
        .call(
            "DOM.querySelector",
            json!({"nodeId": doc["root"]["nodeId"], "selector": "#attach-input"}),
        )
        .await;
    ann.call(
        "DOM.setFileInputFiles",
        json!({"nodeId": input["nodeId"], "files": [file.display().to_string()]}),
    )
    .await;
    for b in [&ann, &bob] {
        let size = b
            .wait_for(
                "the image preview",
                "(() => { const i = document.querySelector('#messages .msg img.preview'); \
                   return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight, i.src, i.alt] : null; })()",
            )
            .await;
        assert_eq!((&size[0], &size[1]), (&json!(4), &json!(3)), "{size}");
        assert!(size[2].as_str().unwrap().starts_with("blob:"), "{size}");
        assert_eq!(size[3], "dot.png");
    }
    assert_clean(&ann);
    assert_clean(&bob);
}

/// The seq of the shown message with this body (waits for it).
async fn seq_of(b: &Browser, body: &str) -> u64 {
    let expr = format!(
        "(() => {{ const m = [...document.querySelectorAll('#messages .msg')].find(m => \
           !m.hidden && m.querySelector('.body') && m.querySelector('.body').textContent === {}); \
           return m ? Number(m.dataset.seq) : null; }})()",
        js_string(body)
    );
    b.wait_for(&format!("a message {body:?}"), &expr)
        .await
        .as_u64()
        .expect("a seq")
}

fn msg(seq: u64, inner: &str) -> String {
    format!("#messages .msg[data-seq=\"{seq}\"] {inner}")
}

async fn exists(b: &Browser, what: &str, selector: &str) {
    b.wait_for(
        what,
        &format!("!!document.querySelector({})", js_string(selector)),
    )
    .await;
}

#[tokio::test]
async fn messages_live_edits_reactions_threads_pins_and_deletes_in_two_browsers() {
    let node = Node::start().await;
    let url = node.url("/");
    let (ann, bob) = tokio::join!(Browser::launch("ann"), Browser::launch("bob"));
    sign_in(&ann, &url, "ann", true).await;
    sign_in(&bob, &url, "bob", true).await;
    join(&ann, "garden").await;
    join(&bob, "garden").await;

    say(&ann, "hello world").await;
    let seq = seq_of(&bob, "hello world").await;
    assert_eq!(seq_of(&ann, "hello world").await, seq);

    // ann edits her message (the Edit button, then keys): bob sees the new
    // body marked "edited", and its earlier version on demand.
    ann.click(&msg(seq, "button[data-action=\"edit\"]")).await;
    ann.wait_for(
        "the edit box",
        "document.activeElement && document.activeElement.classList.contains('edit-box')",
    )
    .await;
    ann.type_text(" again").await;
    ann.press("Enter").await;
    wait_message(&bob, "ann", "hello world again").await;
    wait_message(&ann, "ann", "hello world again").await;
    bob.click(&msg(seq, "button.edited")).await;
    bob.wait_text(&msg(seq, ".versions"), "v1: hello world")
        .await;
    // bob cannot edit ann's message: no Edit button on it.
    assert_eq!(
        bob.eval(&format!(
            "!!document.querySelector({})",
            js_string(&msg(seq, "button[data-action=\"edit\"]"))
        ))
        .await,
        json!(false)
    );

    // bob reacts through the picker; ann sees the count and adds hers by
    // the chip; bob sees 2.
    bob.click(&msg(seq, "button[data-action=\"react\"]")).await;
    bob.click(&msg(seq, ".picker button[data-emoji=\"👍\"]"))
        .await;
    let chip = msg(seq, "button.reaction[data-emoji=\"👍\"]");
    exists(&ann, "bob's reaction", &format!("{chip}[data-count=\"1\"]")).await;
    ann.click(&chip).await;
    exists(&bob, "two reactions", &format!("{chip}[data-count=\"2\"]")).await;
    exists(
        &ann,
        "my reaction pressed",
        &format!("{chip}.mine[aria-pressed=\"true\"]"),
    )
    .await;

    // bob replies in a thread; ann sees "1 reply" and opens the thread.
    bob.click(&msg(seq, "button[data-action=\"reply\"]")).await;
    bob.wait_for(
        "the thread composer focused",
        "document.activeElement && document.activeElement.id === 'thread-input'",
    )
    .await;
    bob.type_text("a reply in the thread").await;
    bob.press("Enter").await;
    bob.wait_text("#thread-list", "a reply in the thread").await;
    bob.press("Escape").await;
    ann.wait_text(&msg(seq, ".thread-link"), "1 reply").await;
    let reply = seq_of(&ann, "a reply in the thread").await;
    ann.wait_text(&msg(reply, "button.reply-to"), &format!("reply to #{seq}"))
        .await;
    ann.click(&msg(seq, ".thread-link")).await;
    ann.wait_text("#thread-parent", "hello world again").await;
    ann.wait_text("#thread-list", "a reply in the thread").await;
    shoot(&ann, "web-thread").await;
    assert_contrast(&ann, "a thread, reactions, an edit").await;
    ann.click("#thread-close").await;

    // ann pins her message: bob sees it pinned and in the Pins panel.
    ann.click(&msg(seq, "button[data-action=\"pin\"]")).await;
    exists(&bob, "the pinned mark", &msg(seq, ".pinned-mark")).await;
    bob.click("#pins-btn").await;
    bob.wait_text("#pins-list", "hello world again").await;
    shoot(&bob, "web-pins").await;
    assert_contrast(&bob, "the pins").await;
    bob.click("#pins-close").await;

    // ann deletes a message (asked once more in place): bob sees "deleted".
    say(&ann, "oops, wrong room").await;
    let oops = seq_of(&bob, "oops, wrong room").await;
    ann.click(&msg(oops, "button[data-action=\"delete\"]"))
        .await;
    ann.click(&msg(oops, ".confirm-delete button.danger")).await;
    exists(
        &bob,
        "the deleted message",
        &format!("#messages .msg.deleted[data-seq=\"{oops}\"]"),
    )
    .await;
    assert_eq!(bob.text(&msg(oops, ".body")).await, "deleted");
    assert_contrast(&bob, "a deleted message").await;

    // The state is the server's: REST agrees.
    let login: Value = common::login(&node, "ann", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().expect("a token").to_string();
    let view: Value = reqwest::Client::new()
        .get(node.url(&format!("/api/v1/rooms/garden/messages/{seq}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["body"], "hello world again", "{view}");
    assert_eq!(view["version"], 2, "{view}");
    assert_eq!(view["pinned"], true, "{view}");
    assert_eq!(view["reply_count"], 1, "{view}");
    assert_eq!(view["reactions"]["👍"], json!(["ann", "bob"]), "{view}");
    assert_clean(&ann);
    assert_clean(&bob);
}

#[tokio::test]
async fn friends_unread_badges_and_public_rooms_in_two_browsers() {
    let node = Node::start().await;
    let url = node.url("/");
    let (ann, bob) = tokio::join!(Browser::launch("ann"), Browser::launch("bob"));
    sign_in(&ann, &url, "ann", true).await;
    sign_in(&bob, &url, "bob", true).await;

    // ann asks bob; bob accepts in his browser; both see the other as a
    // friend, online.
    ann.fill("#friend-input", "bob").await;
    ann.press("Enter").await;
    exists(
        &ann,
        "the outgoing request",
        "#friend-list li[data-status=\"outgoing\"][data-user=\"bob\"]",
    )
    .await;
    exists(
        &bob,
        "the incoming request",
        "#friend-list li[data-status=\"incoming\"][data-user=\"ann\"]",
    )
    .await;
    bob.wait_text("#friends-count", "1 new").await;
    bob.click("#friend-list button[aria-label=\"Accept ann\"]")
        .await;
    for (b, other) in [(&ann, "bob"), (&bob, "ann")] {
        b.wait_text(
            &format!("#friend-list li[data-status=\"friends\"][data-user=\"{other}\"] .presence"),
            "online",
        )
        .await;
    }
    shoot(&ann, "web-friends").await;
    assert_contrast(&ann, "friends").await;

    // ann makes two public rooms and a private one; bob browses, searches
    // and joins one from the dialog.
    join(&ann, "plants").await;
    join(&ann, "planets").await;
    join(&ann, "zoo").await;
    ann.click("#join-private").await;
    ann.fill("#join-input", "plans-secret").await;
    ann.press("Enter").await;
    ann.wait_text("#room-title", "#plans-secret").await;
    bob.click("#browse-btn").await;
    bob.wait_for(
        "the dialog with every public room",
        "document.querySelector('#public-dialog').open && \
         [...document.querySelectorAll('#public-list .room-name')].map(e => e.textContent).join() === '#planets,#plants,#zoo'",
    )
    .await;
    bob.type_text("PLANT").await;
    bob.wait_for(
        "the search result",
        "[...document.querySelectorAll('#public-list .room-name')].map(e => e.textContent).join() === '#plants'",
    )
    .await;
    shoot(&bob, "web-public-rooms").await;
    assert_contrast(&bob, "the public rooms dialog").await;
    bob.click("#public-list button[aria-label=\"Join #plants\"]")
        .await;
    bob.wait_text("#room-title", "#plants").await;
    assert_eq!(
        bob.eval("document.querySelector('#public-dialog').open")
            .await,
        json!(false)
    );

    // Unread badges come from GET /api/v1/rooms at login: ann writes to
    // plants twice while bob is away in zoo; bob reloads and sees 2.
    join(&bob, "zoo").await;
    ann.click("#room-list button[data-room=\"plants\"]").await;
    say(&ann, "one").await;
    say(&ann, "two").await;
    wait_message(&ann, "ann", "two").await;
    bob.goto(&url).await;
    wait_live(&bob).await;
    bob.wait_text("#room-list button[data-room=\"plants\"] .badge", "2")
        .await;
    assert_clean(&ann);
    assert_clean(&bob);
}

/// The WCAG 2 contrast of every piece of text the page shows: (element,
/// text, ratio, the minimum) for each below AA (4.5:1, 3:1 for large text).
/// The background is the first opaque one up the element's ancestors, with
/// the translucent ones on the way blended over it; text under `opacity`
/// is blended into it (what is invisible, under 0.1, is left out).
const CONTRAST_FAILURES: &str = r##"(() => {
  const parse = (c) => {
    const m = /rgba?\(([^)]+)\)/.exec(c);
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) => [0, 1, 2].map((i) => top[i] * top[3] + under[i] * (1 - top[3])).concat(1);
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let acc = [255, 255, 255, 1];
    for (const l of layers.reverse()) acc = over(l, acc);
    return acc;
  };
  const lum = (c) => {
    const [r, g, b] = c.slice(0, 3).map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const failures = [];
  let checked = 0;
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim() !== "");
    if (!own || el.matches(":disabled")) continue;
    const rect = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (rect.width <= 1 || rect.height <= 1 || style.visibility === "hidden") continue;
    // Opacity on the way up fades the text into what is under it.
    let opacity = 1;
    for (let e = el; e; e = e.parentElement) opacity *= Number(getComputedStyle(e).opacity);
    if (opacity < 0.1) continue;
    const bg = background(el);
    const color = parse(style.color);
    color[3] *= opacity;
    const fg = over(color, bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    const min = large ? 3 : 4.5;
    checked += 1;
    if (ratio < min) {
      const name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") +
        (el.className && typeof el.className === "string" ? "." + el.className.trim().replace(/\s+/g, ".") : "");
      failures.push(`${name} ${JSON.stringify(el.textContent.trim().slice(0, 40))}: ${ratio.toFixed(2)} < ${min} (${style.color} on rgb(${bg.slice(0, 3).map(Math.round)}))`);
    }
  }
  return { checked, failures };
})()"##;

/// Every text the page shows now reads at WCAG AA contrast.
async fn assert_contrast(b: &Browser, view: &str) {
    let r = b.eval(CONTRAST_FAILURES).await;
    let checked = r["checked"].as_u64().expect("a count");
    assert!(
        checked >= 5,
        "[{}] {view}: only {checked} texts checked",
        b.name
    );
    let failures = r["failures"].as_array().expect("a list");
    assert!(
        failures.is_empty(),
        "[{}] {view}: text below WCAG AA contrast:\n{}",
        b.name,
        failures
            .iter()
            .map(|f| f.as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Whether the element is laid out (not `display: none`, in the page).
fn displayed(selector: &str) -> String {
    format!(
        "(() => {{ const e = document.querySelector({}); return !!e && e.getClientRects().length > 0; }})()",
        js_string(selector)
    )
}

#[tokio::test]
async fn a_phone_sized_screen_has_everything_in_reach_and_readable() {
    let node = Node::start().await;
    let url = node.url("/");
    let b = Browser::launch("ann").await;
    b.viewport(Some((390, 844))).await;
    // The controls a person needs, each fully inside the 390 px screen, and
    // nothing wider than the screen (no sideways scrolling).
    let fits = |selectors: &[&str]| {
        format!(
            "(() => {{ const w = window.innerWidth; \
               if (document.documentElement.scrollWidth > w) return 'the page is ' + document.documentElement.scrollWidth + ' px wide'; \
               for (const s of {}) {{ const e = document.querySelector(s); \
                 if (!e || !e.getClientRects().length) return s + ' is not shown'; \
                 const r = e.getBoundingClientRect(); \
                 if (r.left < 0 || r.right > w || r.width < 24) return s + ' is at ' + r.left + '..' + r.right; }} \
               return 'ok'; }})()",
            serde_json::to_string(selectors).unwrap()
        )
    };
    b.goto(&url).await;
    b.wait_for(
        "the login form",
        "!document.querySelector('#login-view').hidden",
    )
    .await;
    let login = fits(&["#login-user", "#login-pass", "#login-btn", "#register-btn"]);
    assert_eq!(b.eval(&login).await, json!("ok"));
    assert_contrast(&b, "login").await;
    b.fill("#login-user", "ann").await;
    b.fill("#login-pass", PASSWORD).await;
    b.click("#register-btn").await;
    wait_live(&b).await;

    // One column: the conversation; the room list and the members are
    // behind the top bar's buttons.
    let chat = fits(&[
        "#menu-btn",
        "#room-title",
        "#members-btn",
        "#search-input",
        "#logout-btn",
        "#composer-input",
        "#send-btn",
    ]);
    assert_eq!(b.eval(&chat).await, json!("ok"));
    assert_eq!(b.eval(&displayed("#sidebar")).await, json!(false));
    assert_eq!(b.eval(&displayed("#members-panel")).await, json!(false));
    b.click("#menu-btn").await;
    b.wait_for("the room list", &displayed("#sidebar")).await;
    assert_eq!(
        b.eval("document.querySelector('#menu-btn').getAttribute('aria-expanded')")
            .await,
        json!("true")
    );
    let sidebar = fits(&["#join-input", "#browse-btn", "#dm-input", "#friend-input"]);
    assert_eq!(b.eval(&sidebar).await, json!("ok"));
    assert_contrast(&b, "phone: the room list").await;
    // Joining a room from it closes it and shows the room.
    b.fill("#join-input", "pocket").await;
    b.press("Enter").await;
    b.wait_text("#room-title", "#pocket").await;
    b.wait_for(
        "the room list closed",
        &format!("!{}", displayed("#sidebar")),
    )
    .await;
    say(
        &b,
        "typed on a small screen, a long line that has to wrap to fit",
    )
    .await;
    wait_message(
        &b,
        "ann",
        "typed on a small screen, a long line that has to wrap to fit",
    )
    .await;
    assert_eq!(b.eval(&chat).await, json!("ok"));
    assert_contrast(&b, "phone: a room").await;
    // The members, then Escape back to the conversation.
    b.click("#members-btn").await;
    b.wait_for("the members", &displayed("#members-panel"))
        .await;
    exists(
        &b,
        "ann among the members",
        "#member-list button[data-user=\"ann\"]",
    )
    .await;
    assert_eq!(b.eval(&fits(&["#invite-input"])).await, json!("ok"));
    b.press("Escape").await;
    b.wait_for(
        "the members closed",
        &format!("!{}", displayed("#members-panel")),
    )
    .await;
    assert_clean(&b);
}

/// A TCP proxy in front of one node that can lose the node's answers: a
/// muted connection forwards what the browser sends and drops what the node
/// answers (an `ack` lost on the way), until it is cut.
struct LossyProxy {
    addr: SocketAddr,
    /// the generation whose connections are muted (u64::MAX: none)
    muted: Arc<std::sync::atomic::AtomicU64>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl LossyProxy {
    async fn start(backend: SocketAddr) -> LossyProxy {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().unwrap();
        let muted = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let (mute, gens) = (muted.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut cut = gens.subscribe();
                let mine = *cut.borrow_and_update();
                let mute = mute.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(backend).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::io::copy(&mut cr, &mut sw);
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = sr.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            if mute.load(Ordering::SeqCst) != mine {
                                cw.write_all(&buf[..n]).await?;
                            }
                        }
                    };
                    // Dropping both sockets closes them.
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        LossyProxy {
            addr,
            muted,
            generation,
        }
    }

    /// From now on, the node's answers on the open connections are lost.
    fn mute(&self) {
        let current = *self.generation.borrow();
        self.muted
            .store(current, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes every open connection; new ones work normally.
    fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

#[tokio::test]
async fn a_message_whose_ack_is_lost_is_resent_with_its_client_id_and_shown_once() {
    let node = Node::start().await;
    let proxy = LossyProxy::start(node.addr).await;
    let ann = Browser::launch("ann").await;
    ann.record_websocket().await;
    sign_in(&ann, &proxy.url(), "ann", true).await;
    join(&ann, "lossy").await;
    say(&ann, "first").await;
    wait_message(&ann, "ann", "first").await;

    // The node's answers stop reaching the page: the message is written,
    // its ack and its copy are lost; the page keeps it as "sending…".
    proxy.mute();
    say(&ann, "in flight").await;
    let login: Value = common::login(&node, "ann", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().expect("a token").to_string();
    // The bodies of the room's messages as the node has them, by seq (room
    // events left out); None when the read is refused (its rate limit).
    let history = || async {
        let r = reqwest::Client::new()
            .get(node.url("/api/v1/rooms/lossy/messages?limit=50"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            return None;
        }
        let v: Value = r.json().await.unwrap();
        let mut messages: Vec<(u64, String)> = v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|m| m.get("event").is_none_or(Value::is_null))
            .map(|m| {
                let seq = m["seq"].as_u64().expect("a seq");
                (seq, m["body"].as_str().unwrap_or_default().to_string())
            })
            .collect();
        messages.sort();
        Some(messages.into_iter().map(|m| m.1).collect::<Vec<_>>())
    };
    let deadline = tokio::time::Instant::now() + common::browser::PAGE_WAIT;
    while !history()
        .await
        .is_some_and(|h| h.iter().any(|b| b == "in flight"))
    {
        assert!(tokio::time::Instant::now() < deadline, "never written");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(
        ann.text("#pending .msg.pending .state").await,
        "sending…",
        "the page has no ack"
    );
    // No answer: the page sends it again on the same connection, with the
    // same client_id.
    let sends = |b: &Browser| {
        b.ws_sent()
            .into_iter()
            .filter(|f| f["type"] == "send" && f["body"] == "in flight")
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + common::browser::PAGE_WAIT;
    while sends(&ann).len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never resent: {:?}",
            sends(&ann)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The connection drops: the page reconnects through the proxy, resumes,
    // and the message ends up shown once, where the room put it.
    proxy.cut();
    ann.wait_for(
        "the queue empty",
        "document.querySelectorAll('#pending .msg').length === 0",
    )
    .await;
    wait_message(&ann, "ann", "in flight").await;
    wait_live(&ann).await;
    say(&ann, "after").await;
    wait_message(&ann, "ann", "after").await;
    let got = shown(&ann).await;
    let bodies: Vec<&str> = got.iter().map(|m| m.2.as_str()).collect();
    assert_eq!(bodies, ["first", "in flight", "after"], "{got:?}");
    let seqs: Vec<u64> = got.iter().map(|m| m.0).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    assert_eq!(
        history().await.expect("the history"),
        ["first", "in flight", "after"]
    );
    let sent = sends(&ann);
    assert!(sent.len() >= 2, "{sent:?}");
    assert!(
        sent.iter().all(|f| f["client_id"] == sent[0]["client_id"]),
        "resent with another client_id: {sent:?}"
    );
    // It was a resume (the previous session's token, the room's last seq).
    let resume = ann
        .ws_sent()
        .into_iter()
        .find(|f| f["type"] == "resume")
        .expect("a resume frame");
    assert!(resume["rooms"]["lossy"].as_u64().unwrap() >= 1, "{resume}");
    assert_clean(&ann);
}

/// Presses Tab (Shift+Tab when `back`) until the focused element matches
/// `selector`; at most `limit` presses. Returns how many it took.
async fn tab_to(b: &Browser, selector: &str, back: bool, limit: usize) -> usize {
    let is_focused = format!(
        "!!document.activeElement && document.activeElement.matches({})",
        js_string(selector)
    );
    for n in 1..=limit {
        b.press_with("Tab", if back { 8 } else { 0 }).await;
        if b.eval(&is_focused).await == json!(true) {
            return n;
        }
    }
    panic!(
        "[{}] {selector} not reached in {limit} {}; the focus is on {}",
        b.name,
        if back { "Shift+Tabs" } else { "Tabs" },
        b.eval(
            "(() => { const e = document.activeElement; return e ? e.outerHTML.slice(0, 200) : null; })()"
        )
        .await
    );
}

/// Whether the focused element can be seen (a keyboard user sees where
/// they are).
const FOCUSED_VISIBLE: &str =
    "(() => { const e = document.activeElement; const s = getComputedStyle(e); \
     let o = 1; for (let x = e; x; x = x.parentElement) o *= Number(getComputedStyle(x).opacity); \
     return e.getClientRects().length > 0 && s.visibility === 'visible' && o > 0.5; })()";

#[tokio::test]
async fn message_actions_and_search_work_from_the_keyboard() {
    let node = Node::start().await;
    let url = node.url("/");
    let b = Browser::launch("ann").await;
    sign_in(&b, &url, "ann", true).await;
    join(&b, "keys").await;
    say(&b, "first").await;
    say(&b, "typed with keys").await;
    let seq = seq_of(&b, "typed with keys").await;

    // From the composer, back (Shift+Tab) into the last message's buttons:
    // Edit, then Enter, type, Enter.
    b.click("#composer-input").await;
    tab_to(&b, &msg(seq, "button[data-action=\"edit\"]"), true, 12).await;
    assert_eq!(
        b.eval(FOCUSED_VISIBLE).await,
        json!(true),
        "Edit is invisible"
    );
    b.press("Enter").await;
    b.wait_for(
        "the edit box",
        "document.activeElement && document.activeElement.classList.contains('edit-box')",
    )
    .await;
    b.type_text(" and edited").await;
    b.press("Enter").await;
    wait_message(&b, "ann", "typed with keys and edited").await;

    // React: the picker takes the focus; Tab to an emoji, Enter.
    b.click("#composer-input").await;
    tab_to(&b, &msg(seq, "button[data-action=\"react\"]"), true, 12).await;
    assert_eq!(
        b.eval(FOCUSED_VISIBLE).await,
        json!(true),
        "React is invisible"
    );
    b.press("Enter").await;
    b.wait_for(
        "the picker focused",
        "document.activeElement && document.activeElement.classList.contains('emoji')",
    )
    .await;
    tab_to(&b, ".picker button[data-emoji=\"🎉\"]", false, 6).await;
    b.press("Enter").await;
    exists(
        &b,
        "the reaction",
        &msg(
            seq,
            "button.reaction.mine[data-emoji=\"🎉\"][data-count=\"1\"]",
        ),
    )
    .await;

    // Reply in a thread: Enter on Reply, type, Enter; Escape closes it.
    b.click("#composer-input").await;
    tab_to(&b, &msg(seq, "button[data-action=\"reply\"]"), true, 14).await;
    b.press("Enter").await;
    b.wait_for(
        "the thread composer focused",
        "document.activeElement && document.activeElement.id === 'thread-input'",
    )
    .await;
    b.type_text("answered from the keyboard").await;
    b.press("Enter").await;
    b.wait_text("#thread-list", "answered from the keyboard")
        .await;
    b.press("Escape").await;
    b.wait_for(
        "the thread closed",
        "document.querySelector('#thread-panel').hidden",
    )
    .await;

    // Ctrl+K: the search field; Enter searches; ArrowDown to the result,
    // Enter opens it.
    b.click("#composer-input").await;
    b.press_with("k", 2).await;
    b.wait_for(
        "the search field focused",
        "document.activeElement && document.activeElement.id === 'search-input'",
    )
    .await;
    b.type_text("first").await;
    b.press("Enter").await;
    exists(
        &b,
        "a search result",
        "#search-list button.hit[data-room=\"keys\"]",
    )
    .await;
    b.press("ArrowDown").await;
    b.wait_for(
        "the result focused",
        "document.activeElement && document.activeElement.matches('#search-list button.hit[data-room=\"keys\"]')",
    )
    .await;
    b.press("Enter").await;
    b.wait_for(
        "the results closed, back to typing",
        "document.querySelector('#search-results').hidden && \
         document.activeElement && document.activeElement.id === 'composer-input'",
    )
    .await;
    b.wait_text("#room-title", "#keys").await;
    assert_clean(&b);
}
