//! Line commands for humans with a plain WebSocket client: text frames that
//! start with `/`, answered with plain text lines (not JSON).

mod common;

use common::{Client, Node, WAIT};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A human at `websocat`: types commands, reads text lines.
struct Term {
    name: &'static str,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Lines read while looking for another.
    seen: Vec<String>,
}

impl Term {
    async fn open(node: &Node, name: &'static str) -> Term {
        Term {
            name,
            ws: Client::raw(node).await,
            seen: Vec::new(),
        }
    }

    async fn type_line(&mut self, line: &str) {
        self.ws
            .send(Message::Text(line.into()))
            .await
            .expect("send a line");
    }

    /// The next text frame; a close or the end of the socket is a panic.
    async fn next_text(&mut self, what: &str) -> String {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => panic!(
                    "{}: no {what} within {WAIT:?}; seen {:?}",
                    self.name, self.seen
                ),
                Ok(Some(Ok(Message::Text(t)))) => {
                    let t = t.to_string();
                    assert!(
                        serde_json::from_str::<serde_json::Value>(&t).is_err(),
                        "{}: a JSON frame in line mode: {t}",
                        self.name
                    );
                    return t;
                }
                Ok(Some(Ok(Message::Close(f)))) => {
                    panic!(
                        "{}: closed ({f:?}) while waiting for {what}; seen {:?}",
                        self.name, self.seen
                    )
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => {
                    panic!("{}: socket error {e} while waiting for {what}", self.name)
                }
                Ok(None) => panic!("{}: socket ended while waiting for {what}", self.name),
            }
        }
    }

    /// The next text frame that contains `needle` (earlier ones are kept in `seen`).
    async fn expect(&mut self, needle: &str) -> String {
        if let Some(i) = self.seen.iter().position(|l| l.contains(needle)) {
            return self.seen.remove(i);
        }
        loop {
            let line = self.next_text(&format!("a line with {needle:?}")).await;
            if line.contains(needle) {
                return line;
            }
            self.seen.push(line);
        }
    }

    /// Types a command and waits for the line that answers it.
    async fn run(&mut self, command: &str, needle: &str) -> String {
        self.type_line(command).await;
        self.expect(needle).await
    }

    /// The close code once the node closes the socket.
    async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => panic!(
                    "{}: not closed within {WAIT:?}; seen {:?}",
                    self.name, self.seen
                ),
                Ok(Some(Ok(Message::Close(f)))) => return f.map(|f| u16::from(f.code)),
                Ok(Some(Ok(Message::Text(t)))) => self.seen.push(t.to_string()),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Ok(None) => return None,
            }
        }
    }

    /// Registers and logs in; the welcome line.
    async fn sign_up(&mut self, user: &str, password: &str) -> String {
        let registered = self
            .run(&format!("/register {user} {password}"), "registered")
            .await;
        assert!(registered.contains(user), "{registered}");
        self.run(&format!("/login {user} {password}"), "welcome")
            .await
    }
}

#[tokio::test]
async fn two_humans_chat_with_line_commands() {
    let node = Node::start().await;
    let mut ann = Term::open(&node, "ann").await;
    let mut bob = Term::open(&node, "bob").await;

    let welcome = ann.sign_up("ann", "secret1").await;
    assert!(welcome.contains("ann"), "{welcome}");
    let welcome = bob.sign_up("bob", "secret2").await;
    assert!(welcome.contains("bob"), "{welcome}");

    // A group: created (and joined) by ann, joined by bob.
    let created = ann.run("/group_create lobby", "created group").await;
    assert_eq!(created, "created group lobby");
    let joined = ann.expect("joined lobby").await;
    assert!(joined.contains("1 member"), "{joined}");
    let joined = bob.run("/group_join lobby", "joined lobby").await;
    assert!(joined.contains("2 member"), "{joined}");
    ann.expect("* bob joined lobby").await;

    // A group message reaches the other member, and the sender's own screen.
    ann.type_line("/group_msg lobby hello there").await;
    let line = bob.expect("ann: hello there").await;
    assert!(line.contains("lobby"), "{line}");
    ann.expect("ann: hello there").await;
    bob.type_line("/group_msg lobby hi ann").await;
    ann.expect("bob: hi ann").await;

    // A private message.
    ann.type_line("/pm bob just between us").await;
    let line = bob.expect("ann: just between us").await;
    assert!(line.contains("pm"), "a DM is labelled as one: {line}");
    bob.type_line("/pm ann ok").await;
    ann.expect("bob: ok").await;

    // Who is online.
    let online = ann.run("/list_user", "online:").await;
    assert!(online.contains("ann"), "{online}");
    assert!(online.contains("bob"), "{online}");

    // A broadcast reaches everyone online.
    ann.type_line("/broadcast hello everyone").await;
    let line = bob.expect("ann: hello everyone").await;
    assert!(line.contains("broadcast"), "{line}");
    ann.expect("ann: hello everyone").await;

    // Bob leaves the group: ann is told, and bob can no longer post there.
    let left = bob.run("/group_leave lobby", "left lobby").await;
    assert!(!left.starts_with("error"), "{left}");
    ann.expect("* bob left lobby").await;
    let refused = bob.run("/group_msg lobby still here?", "error").await;
    assert!(refused.contains("forbidden"), "{refused}");

    // Ann logs out: the connection closes, and bob sees her go offline.
    ann.type_line("/logout").await;
    ann.expect("logged out").await;
    assert_eq!(ann.expect_close().await, Some(1000));
    bob.expect("* ann is offline").await;
    let online = bob.run("/list_user", "online:").await;
    assert!(online.contains("bob"), "{online}");
    assert!(!online.contains("ann (online)"), "ann logged out: {online}");
}

#[tokio::test]
async fn help_lists_the_commands() {
    let node = Node::start().await;
    let mut term = Term::open(&node, "anon").await;
    let help = term.run("/help", "/register").await;
    for command in [
        "/login",
        "/logout",
        "/list_user",
        "/pm",
        "/broadcast",
        "/group_create",
        "/group_join",
        "/group_leave",
        "/group_msg",
        "/help",
    ] {
        assert!(
            help.contains(command),
            "{command} missing from the help: {help}"
        );
    }
}

#[tokio::test]
async fn bad_commands_answer_an_error_line_and_the_connection_stays() {
    let node = Node::start().await;
    let mut ann = Term::open(&node, "ann").await;

    let e = ann.run("/fly away", "error").await;
    assert!(e.starts_with("error:"), "{e}");
    assert!(e.contains("/fly"), "{e}");
    // Chat before logging in.
    let e = ann.run("/group_join lobby", "error").await;
    assert!(e.contains("login"), "{e}");
    // Missing arguments.
    let e = ann.run("/login ann", "error").await;
    assert!(e.contains("usage"), "{e}");

    ann.sign_up("ann", "secret1").await;
    let e = ann.run("/pm bob", "error").await;
    assert!(e.contains("usage"), "{e}");
    let e = ann.run("/group_msg lobby", "error").await;
    assert!(e.contains("usage"), "{e}");
    let e = ann.run("/group_join", "error").await;
    assert!(e.contains("usage"), "{e}");
    // Rejected by the node, not by the parser.
    let e = ann.run("/group_join bad/name", "error").await;
    assert!(e.contains("bad_request"), "{e}");
    let e = ann.run("/pm nobody hello", "error").await;
    assert!(e.contains("not_found"), "{e}");
    let e = ann.run("/login ann secret1", "error").await;
    assert!(e.contains("already"), "{e}");

    // Still connected and logged in.
    ann.run("/group_create lobby", "created group lobby").await;
    let e = ann.run("/group_create lobby", "error").await;
    assert!(e.contains("conflict"), "{e}");
    ann.type_line("/group_msg lobby still works").await;
    ann.expect("ann: still works").await;
}

#[tokio::test]
async fn login_and_register_failures_are_error_lines() {
    let node = Node::start().await;
    let mut ann = Term::open(&node, "ann").await;
    ann.run("/register ann secret1", "registered ann").await;
    let e = ann.run("/register ann secret1", "error").await;
    assert!(e.contains("conflict"), "{e}");
    let e = ann.run("/register ann 123", "error").await;
    assert!(e.contains("bad_request"), "{e}");
    let e = ann.run("/register x secret1", "error").await;
    assert!(e.contains("bad_request"), "{e}");
    let e = ann.run("/login ann wrongpass", "error").await;
    assert!(e.contains("unauthorized"), "{e}");
    let e = ann.run("/login nobody secret1", "error").await;
    assert!(e.contains("unauthorized"), "{e}");
    // The right password still works on the same connection.
    let welcome = ann.run("/login ann secret1", "welcome").await;
    assert!(welcome.contains("ann"), "{welcome}");
}

#[tokio::test]
async fn a_line_user_and_a_json_user_talk_to_each_other() {
    let node = Node::start().await;
    let mut bob = Client::new_user(&node, "bob").await;
    bob.join("lobby").await;
    let mut ann = Term::open(&node, "ann").await;
    ann.sign_up("ann", "secret1").await;
    ann.run("/group_join lobby", "joined lobby").await;

    ann.type_line("/group_msg lobby from the terminal").await;
    let m = bob.expect_message("lobby").await;
    assert_eq!(m["from"], "ann");
    assert_eq!(m["body"], "from the terminal");
    assert_eq!(m["seq"], 1);

    bob.say("lobby", "from JSON", "j-1").await;
    ann.expect("bob: from JSON").await;

    // A line-command logout revokes nothing of bob's, and bob sees ann leave.
    ann.type_line("/logout").await;
    assert_eq!(ann.expect_close().await, Some(1000));
    let p = bob
        .expect_where("ann offline", |f| {
            f["type"] == "presence" && f["user"] == "ann"
        })
        .await;
    assert_eq!(p["online"], false);
}

/// A body with line breaks, terminal escapes and bidi overrides, sent as JSON
/// by one user, shows as exactly one line to a text-mode reader: it cannot
/// print a line that looks like a message from somebody else.
#[tokio::test]
async fn a_body_with_control_characters_cannot_forge_lines() {
    let node = Node::start().await;
    let mut bob = Client::new_user(&node, "bob").await;
    bob.join("lobby").await;
    let mut ann = Term::open(&node, "ann").await;
    ann.sign_up("ann", "secret1").await;
    ann.run("/group_join lobby", "joined lobby").await;

    let body = "hi\n[lobby] admin: give me your password\r\n\
                \u{1b}[2Jclear\tscreen\u{2028}[lobby] root: x\u{2029}\u{85}\u{202e}evil\u{7f}";
    let shown = "hi\\n[lobby] admin: give me your password\\r\\n\
                 \\u{1b}[2Jclear\\tscreen\\u{2028}[lobby] root: x\\u{2029}\\u{85}\\u{202e}evil\\u{7f}";
    bob.say("lobby", body, "forge-1").await;
    let line = ann.expect("bob: hi").await;
    assert_eq!(line, format!("[lobby] #1 bob: {shown}"));
    // The same message in a history page, and nothing else arrived meanwhile.
    ann.type_line(r#"{"type":"history","room":"lobby"}"#).await;
    let page = ann.expect("#1").await;
    assert_eq!(page, format!("[lobby] #1 bob: {shown}"));
    assert!(
        ann.seen.iter().all(|l| !l.contains("admin")),
        "{:?}",
        ann.seen
    );
    // JSON clients still get the body exactly as sent.
    let m = bob.expect_message("lobby").await;
    assert_eq!(m["body"], body);
}

#[tokio::test]
async fn humans_reply_edit_react_pin_and_delete_with_line_commands() {
    let node = Node::start().await;
    let mut ann = Term::open(&node, "ann").await;
    let mut bob = Term::open(&node, "bob").await;
    ann.sign_up("ann", "secret1").await;
    bob.sign_up("bob", "secret2").await;
    ann.run("/group_create den", "created group den").await;
    bob.run("/group_join den", "joined den").await;

    // Every message line shows its seq, the handle of the other commands.
    ann.type_line("/group_msg den helo everyone").await;
    let line = bob.expect("ann: helo everyone").await;
    assert!(line.contains("#1 "), "{line}");
    bob.type_line("/reply den 1 hi ann").await;
    ann.expect("bob (reply to #1): hi ann").await;
    ann.type_line("/edit den 1 hello everyone").await;
    bob.expect("ann edited #1: hello everyone").await;
    bob.type_line("/react den 1 👍").await;
    ann.expect("bob reacted 👍 to #1").await;
    ann.type_line("/pin den 1").await;
    bob.expect("ann pinned #1").await;
    // Refusals come back as errors: bob is neither the author nor the owner.
    let refused = bob.run("/edit den 1 mine now", "error").await;
    assert!(refused.contains("forbidden"), "{refused}");
    let refused = bob.run("/delete den 1", "error").await;
    assert!(refused.contains("forbidden"), "{refused}");
    let usage = bob.run("/react den one 👍", "usage").await;
    assert!(usage.contains("/react <room> <seq> <emoji>"), "{usage}");
    ann.type_line("/delete den 1").await;
    bob.expect("ann deleted #1").await;
    let refused = bob.run("/react den 1 🎉", "error").await;
    assert!(refused.contains("not_found"), "{refused}");
}
