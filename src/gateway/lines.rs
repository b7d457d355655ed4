//! Line commands for humans with a plain WebSocket client (`websocat`): a
//! text frame starting with `/` is a command, and the node's frames are
//! rendered as plain text lines from then on.
//!
//! Every string a frame carries is escaped before it is shown (see
//! [`escape`]): a message body with a newline could otherwise print a second
//! line that looks like a message from someone else.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::Value;
use troupe_actors::frames::ClientFrame;
use troupe_actors::room::BROADCAST_ROOM;
use troupe_actors::session::new_token;

pub const HELP: &str = "commands:
/register <user> <password>   create an account
/login <user> <password>      log in on this connection
/logout                       log out (revokes the token) and close
/list_user                    who is online
/pm <user> <message>          direct message
/broadcast <message>          message every online user
/group_create <name>          create a group and join it
/group_join <name>            join a group
/group_leave <name>           leave a group
/group_msg <name> <message>   message a group
/reply <room> <seq> <message> answer message #seq (a thread)
/edit <room> <seq> <message>  replace the body of your message #seq
/delete <room> <seq>          delete message #seq (yours, or as the room's owner)
/react <room> <seq> <emoji>   react to message #seq (again: take it back)
/pin <room> <seq>             pin message #seq (/unpin to unpin)
/search <words>               find messages in your rooms
/kick <room> <user>           remove a member (the room's owner or admins)
/topic <room> [text]          set the room's topic (no text: clear it)
/help                         this list";

/// A parsed line command.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Help,
    Register {
        user: String,
        password: String,
    },
    Login {
        user: String,
        password: String,
    },
    Logout,
    CreateGroup {
        name: String,
    },
    /// `/search <words>` (answered by `gateway::search::line`).
    Search {
        text: String,
    },
    /// `/kick`, `/topic`: asked of the room like their REST calls.
    Manage {
        room: String,
        action: troupe_actors::room::ManageAction,
    },
    /// A command that is exactly one JSON frame.
    Frame(ClientFrame),
}

fn client_id() -> String {
    format!("line-{}", new_token(12))
}

/// Parses `/command args`; the error is the usage line to show.
pub fn parse(text: &str) -> Result<Line, String> {
    let text = text.trim_end_matches(['\r', '\n']);
    let (command, rest) = text.split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim_start();
    let mut words = rest.split_whitespace();
    let one = |usage: &str| -> Result<String, String> {
        let mut w = rest.split_whitespace();
        match (w.next(), w.next()) {
            (Some(a), None) => Ok(a.to_string()),
            _ => Err(format!("usage: {usage}")),
        }
    };
    // "<word> <the rest as a message>"
    let word_and_text = |usage: &str| -> Result<(String, String), String> {
        match rest.split_once(' ') {
            Some((word, message)) if !message.trim().is_empty() => {
                Ok((word.to_string(), message.trim().to_string()))
            }
            _ => Err(format!("usage: {usage}")),
        }
    };
    match command {
        "/help" => Ok(Line::Help),
        "/register" | "/login" => {
            let (Some(user), Some(password), None) = (words.next(), words.next(), words.next())
            else {
                return Err(format!("usage: {command} <user> <password>"));
            };
            let (user, password) = (user.to_string(), password.to_string());
            Ok(if command == "/register" {
                Line::Register { user, password }
            } else {
                Line::Login { user, password }
            })
        }
        "/logout" => Ok(Line::Logout),
        "/list_user" => Ok(Line::Frame(ClientFrame::Who)),
        "/pm" => {
            let (to, body) = word_and_text("/pm <user> <message>")?;
            Ok(Line::Frame(ClientFrame::Dm {
                to,
                body,
                client_id: client_id(),
            }))
        }
        "/broadcast" => {
            if rest.trim().is_empty() {
                return Err("usage: /broadcast <message>".into());
            }
            Ok(Line::Frame(ClientFrame::Broadcast {
                body: rest.trim().to_string(),
                client_id: client_id(),
            }))
        }
        "/group_create" => Ok(Line::CreateGroup {
            name: one("/group_create <name>")?,
        }),
        "/group_join" => Ok(Line::Frame(ClientFrame::Join {
            room: one("/group_join <name>")?,
        })),
        "/group_leave" => Ok(Line::Frame(ClientFrame::Leave {
            room: one("/group_leave <name>")?,
        })),
        "/group_msg" => {
            let (room, body) = word_and_text("/group_msg <name> <message>")?;
            Ok(Line::Frame(ClientFrame::Send {
                room,
                body,
                client_id: client_id(),
                reply_to: None,
                attachments: Vec::new(),
            }))
        }
        "/reply" | "/edit" => {
            let usage = format!("usage: {command} <room> <seq> <message>");
            let mut parts = rest.splitn(3, ' ');
            let (Some(room), Some(seq), Some(body)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(usage);
            };
            let (Ok(seq), body) = (seq.parse::<u64>(), body.trim()) else {
                return Err(usage);
            };
            if body.is_empty() {
                return Err(usage);
            }
            let (room, body) = (room.to_string(), body.to_string());
            Ok(Line::Frame(if command == "/reply" {
                ClientFrame::Send {
                    room,
                    body,
                    client_id: client_id(),
                    reply_to: Some(seq),
                    attachments: Vec::new(),
                }
            } else {
                ClientFrame::Edit {
                    room,
                    seq,
                    body,
                    client_id: client_id(),
                }
            }))
        }
        "/delete" | "/pin" | "/unpin" => {
            let usage = format!("usage: {command} <room> <seq>");
            let (Some(room), Some(Ok(seq)), None) = (
                words.next(),
                words.next().map(str::parse::<u64>),
                words.next(),
            ) else {
                return Err(usage);
            };
            let (room, client_id) = (room.to_string(), client_id());
            Ok(Line::Frame(match command {
                "/delete" => ClientFrame::Delete {
                    room,
                    seq,
                    client_id,
                },
                "/pin" => ClientFrame::Pin {
                    room,
                    seq,
                    client_id,
                },
                _ => ClientFrame::Unpin {
                    room,
                    seq,
                    client_id,
                },
            }))
        }
        "/react" | "/unreact" => {
            let usage = format!("usage: {command} <room> <seq> <emoji>");
            let (Some(room), Some(Ok(seq)), Some(emoji), None) = (
                words.next(),
                words.next().map(str::parse::<u64>),
                words.next(),
                words.next(),
            ) else {
                return Err(usage);
            };
            let (room, emoji, client_id) = (room.to_string(), emoji.to_string(), client_id());
            Ok(Line::Frame(if command == "/react" {
                ClientFrame::React {
                    room,
                    seq,
                    emoji,
                    client_id,
                }
            } else {
                ClientFrame::Unreact {
                    room,
                    seq,
                    emoji,
                    client_id,
                }
            }))
        }
        "/kick" => {
            let mut words = rest.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(room), Some(user), None) => Ok(Line::Manage {
                    room: room.to_string(),
                    action: troupe_actors::room::ManageAction::Kick {
                        user: user.to_string(),
                    },
                }),
                _ => Err("usage: /kick <room> <user>".into()),
            }
        }
        "/topic" => {
            let rest = rest.trim();
            let (room, topic) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if room.is_empty() {
                return Err("usage: /topic <room> [text]".into());
            }
            let topic = topic.trim();
            Ok(Line::Manage {
                room: room.to_string(),
                action: troupe_actors::room::ManageAction::SetTopic {
                    topic: (!topic.is_empty()).then(|| topic.to_string()),
                },
            })
        }
        "/search" => {
            if rest.trim().is_empty() {
                return Err("usage: /search <words>".into());
            }
            Ok(Line::Search {
                text: rest.trim().to_string(),
            })
        }
        other => Err(format!(
            "unknown command {}; /help lists them",
            escape(other)
        )),
    }
}

/// Whether `c` would be shown as anything but itself on a terminal: C0 and
/// C1 controls (newline, carriage return, tab, ESC...), the Unicode line and
/// paragraph separators, and the bidi controls that reorder what follows.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' // line and paragraph separators
                | '\u{061c}' | '\u{200e}' | '\u{200f}' // bidi marks
                | '\u{202a}'..='\u{202e}' // bidi embeddings and overrides
                | '\u{2066}'..='\u{2069}' // bidi isolates
        )
}

/// A client-supplied string made safe for one line of text: what
/// [`needs_escape`] is written the way Rust writes it (`\n`, `\r`, `\t`,
/// else `\u{1b}`), so that one message is always one line and reads the
/// same on any terminal. Backslashes stay as they are: a literal `\n` and
/// an escaped newline look alike, but neither starts a line.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A string field of a frame, escaped.
fn s<'a>(v: &'a Value, key: &str) -> Cow<'a, str> {
    escape(v.get(key).and_then(Value::as_str).unwrap_or(""))
}

fn n(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// `room` is escaped already.
pub(super) fn room_label(room: &str) -> String {
    if room == BROADCAST_ROOM {
        "broadcast".to_string()
    } else if let Some(pair) = room.strip_prefix("dm:") {
        format!("pm {}", pair.replace(':', "/"))
    } else {
        room.to_string()
    }
}

fn statuses(v: &Value, key: &str) -> String {
    let list = v
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        return "(nobody)".into();
    }
    list.iter()
        .map(|u| {
            let state = if u.get("online").and_then(Value::as_bool).unwrap_or(false) {
                "online"
            } else {
                "offline"
            };
            format!("{} ({state})", s(u, "user"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `message` frame: a message with its seq (to answer or edit it), or
/// what a room event changed.
fn message_line(v: &Value) -> String {
    let room = room_label(&s(v, "room"));
    let (seq, from) = (n(v, "seq"), s(v, "from"));
    let Some(event) = v.get("event") else {
        let reply = match v.get("reply_to").and_then(Value::as_u64) {
            Some(to) => format!(" (reply to #{to})"),
            None => String::new(),
        };
        return format!("[{room}] #{seq} {from}{reply}: {}", s(v, "body"));
    };
    let target = n(event, "target");
    match s(event, "kind").as_ref() {
        "edit" => format!("[{room}] {from} edited #{target}: {}", s(event, "body")),
        "delete" => format!("[{room}] {from} deleted #{target}"),
        "react" => format!("[{room}] {from} reacted {} to #{target}", s(event, "emoji")),
        "unreact" => format!(
            "[{room}] {from} took back {} on #{target}",
            s(event, "emoji")
        ),
        "pin" => format!("[{room}] {from} pinned #{target}"),
        "unpin" => format!("[{room}] {from} unpinned #{target}"),
        other => format!("[{room}] {from}: {other} #{target}"),
    }
}

/// A server frame as a text line; `None` for frames a human does not need
/// (typing, read receipts, acks). Text that is not JSON passes through: it
/// is the node's own (help, usage), built from validated names only.
pub fn render(frame: &str) -> Option<String> {
    let Ok(v) = serde_json::from_str::<Value>(frame) else {
        return Some(frame.to_string());
    };
    let kind = s(&v, "type");
    let line = match kind.as_ref() {
        "session" => format!("welcome {} (node {})", s(&v, "user"), s(&v, "node")),
        "message" => message_line(&v),
        "joined" => format!("joined {} ({} members)", s(&v, "room"), n(&v, "members")),
        "left" => format!("left {}", s(&v, "room")),
        "user_joined" => format!("* {} joined {}", s(&v, "user"), s(&v, "room")),
        "user_left" => format!("* {} left {}", s(&v, "user"), s(&v, "room")),
        "kicked" => format!(
            "* {} was removed from {} by {}",
            s(&v, "user"),
            s(&v, "room"),
            s(&v, "by")
        ),
        "role_changed" => format!(
            "* {} is now {} of {}",
            s(&v, "user"),
            s(&v, "role"),
            s(&v, "room")
        ),
        "topic_changed" => match v.get("topic").and_then(Value::as_str) {
            Some(_) => format!(
                "* {} set the topic of {}: {}",
                s(&v, "by"),
                s(&v, "room"),
                s(&v, "topic")
            ),
            None => format!("* {} cleared the topic of {}", s(&v, "by"), s(&v, "room")),
        },
        "room_deleted" => format!("* {} deleted {}", s(&v, "by"), s(&v, "room")),
        "presence" => {
            let online = v.get("online").and_then(Value::as_bool).unwrap_or(false);
            format!(
                "* {} is {}",
                s(&v, "user"),
                if online { "online" } else { "offline" }
            )
        }
        "users" => format!("online: {}", statuses(&v, "users")),
        "members" => format!("members of {}: {}", s(&v, "room"), statuses(&v, "members")),
        "history" => {
            let room = room_label(&s(&v, "room"));
            let lines: Vec<String> = v
                .get("messages")
                .and_then(Value::as_array)
                .map(|ms| {
                    ms.iter()
                        .map(|m| {
                            format!(
                                "[{room}] #{} {}: {}",
                                n(m, "seq"),
                                s(m, "from"),
                                s(m, "body")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if lines.is_empty() {
                format!("[{room}] no messages")
            } else {
                lines.join("\n")
            }
        }
        "error" => format!("error ({}): {}", s(&v, "code"), s(&v, "message")),
        "pong" => "pong".into(),
        "resumed" => "resumed".into(),
        "ack" | "typing" | "read" => return None,
        other => format!("{other}: {}", escape(frame)),
    };
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse("/register ann secret1").unwrap(),
            Line::Register {
                user: "ann".into(),
                password: "secret1".into()
            }
        );
        assert!(parse("/login ann").is_err());
        match parse("/group_msg lobby hello there").unwrap() {
            Line::Frame(ClientFrame::Send { room, body, .. }) => {
                assert_eq!(room, "lobby");
                assert_eq!(body, "hello there");
            }
            other => panic!("{other:?}"),
        }
        match parse("/pm bob hi bob").unwrap() {
            Line::Frame(ClientFrame::Dm { to, body, .. }) => {
                assert_eq!((to.as_str(), body.as_str()), ("bob", "hi bob"))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse("/pm bob").is_err());
        assert!(parse("/group_join").is_err());
        assert!(parse("/fly").unwrap_err().contains("unknown command"));
        assert_eq!(
            parse("/search  quick fox ").unwrap(),
            Line::Search {
                text: "quick fox".into()
            }
        );
        assert!(parse("/search   ").is_err());
        match parse("/edit lobby 3 better words").unwrap() {
            Line::Frame(ClientFrame::Edit {
                room, seq, body, ..
            }) => {
                assert_eq!(
                    (room.as_str(), seq, body.as_str()),
                    ("lobby", 3, "better words")
                )
            }
            other => panic!("{other:?}"),
        }
        match parse("/reply lobby 2 me too").unwrap() {
            Line::Frame(ClientFrame::Send { reply_to, .. }) => assert_eq!(reply_to, Some(2)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("/react lobby 2 👍").unwrap(),
            Line::Frame(ClientFrame::React { seq: 2, .. })
        ));
        assert!(matches!(
            parse("/delete lobby 2").unwrap(),
            Line::Frame(ClientFrame::Delete { seq: 2, .. })
        ));
        assert!(parse("/pin lobby x").is_err());
        assert!(parse("/edit lobby 2").is_err());
    }

    #[test]
    fn parses_and_renders_room_management() {
        use troupe_actors::room::ManageAction;
        assert_eq!(
            parse("/kick club bob"),
            Ok(Line::Manage {
                room: "club".into(),
                action: ManageAction::Kick { user: "bob".into() }
            })
        );
        assert!(parse("/kick club").is_err());
        assert_eq!(
            parse("/topic club Books and tea"),
            Ok(Line::Manage {
                room: "club".into(),
                action: ManageAction::SetTopic {
                    topic: Some("Books and tea".into())
                }
            })
        );
        assert_eq!(
            parse("/topic club"),
            Ok(Line::Manage {
                room: "club".into(),
                action: ManageAction::SetTopic { topic: None }
            })
        );
        assert!(parse("/topic").is_err());
        assert_eq!(
            render(r#"{"type":"kicked","room":"club","user":"cat","by":"bob","members":2}"#)
                .unwrap(),
            "* cat was removed from club by bob"
        );
        assert_eq!(
            render(r#"{"type":"topic_changed","room":"club","topic":"a\nb","by":"bob"}"#).unwrap(),
            "* bob set the topic of club: a\\nb"
        );
        assert_eq!(
            render(r#"{"type":"room_deleted","room":"club","by":"ann"}"#).unwrap(),
            "* ann deleted club"
        );
    }

    #[test]
    fn renders_frames() {
        assert_eq!(
            render(r#"{"type":"message","room":"lobby","seq":1,"from":"ann","body":"hi","ts":1,"client_id":"x"}"#).unwrap(),
            "[lobby] #1 ann: hi"
        );
        assert_eq!(
            render(r#"{"type":"message","room":"r","seq":3,"from":"ann","body":"","ts":1,"client_id":"x","event":{"kind":"edit","target":1,"body":"new"}}"#).unwrap(),
            "[r] ann edited #1: new"
        );
        assert_eq!(render(r#"{"type":"ack"}"#), None);
        assert_eq!(render("registered ann").unwrap(), "registered ann");
        assert_eq!(
            render(r#"{"type":"error","code":"forbidden","message":"no","ref":"x"}"#).unwrap(),
            "error (forbidden): no"
        );
    }

    #[test]
    fn escapes_what_could_start_a_line_or_move_the_cursor() {
        assert_eq!(escape("plain text, é ✓ 😀"), "plain text, é ✓ 😀");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(escape("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(
            escape("\u{1b}[31m\u{0}\u{7f}\u{85}\u{9b}"),
            "\\u{1b}[31m\\u{0}\\u{7f}\\u{85}\\u{9b}"
        );
        assert_eq!(escape("x\u{2028}y\u{2029}z"), "x\\u{2028}y\\u{2029}z");
        assert_eq!(
            escape("\u{202e}abc\u{2066}\u{200f}"),
            "\\u{202e}abc\\u{2066}\\u{200f}"
        );
        // A backslash is not an escape of its own.
        assert_eq!(escape(r"C:\new"), r"C:\new");
    }

    #[test]
    fn every_field_of_a_frame_is_escaped() {
        let line =
            render(r#"{"type":"members","room":"r","members":[{"user":"a\nb","online":true}]}"#)
                .unwrap();
        assert_eq!(line, "members of r: a\\nb (online)");
        let line = render(r#"{"type":"error","code":"x","message":"m\u2028n"}"#).unwrap();
        assert_eq!(line, "error (x): m\\u{2028}n");
        let line = render(r#"{"type":"new\nkind","x":"\u0085"}"#).unwrap();
        assert!(!line.contains(['\n', '\u{85}']), "{line}");
    }
}
