//! Fuzz targets for what a client controls before anything else looks at it:
//! the frame decoder, the line-command parser and renderer, and the REST
//! bodies and query with the validation their handlers call. They run as
//! ordinary tests on the stable toolchain (a short run in every
//! `cargo test`; a long one as told in `fuzz/README.md`).
//!
//! They live here, in the binary crate under `cfg(test)`, because the line
//! parser and the REST bodies are private to it (there is no library target);
//! nothing of this is compiled into the node.
//!
//! The driver is hand-written (about 100 lines): bolero's and cargo-fuzz's
//! coverage-guided engines need a nightly toolchain, and bolero's stable test
//! engine only replays a corpus and draws uniform random bytes, which almost
//! never get past the first JSON token. Mutating real frames and commands
//! from `fuzz/corpus/` with a seeded RNG reaches the decoders' inner paths and
//! is reproducible from the seed it prints.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::Uri;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use troupe_actors::frames::{
    ChatError, ChatMessage, ClientFrame, ErrorCode, HistoryQuery, ServerFrame, HISTORY_MAX_LIMIT,
};
use troupe_actors::limits::{check_room_name, check_username};

use super::lines::{self, Line};
use super::rest::{parse_body, Credentials, Invitation, NewRoom};
use crate::auth::check_password;

/// Inputs per target: `TROUPE_FUZZ_ITERATIONS`, else a few seconds' worth.
fn iterations() -> u64 {
    std::env::var("TROUPE_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(5_000)
}

/// `TROUPE_FUZZ_SEED` replays a run; else a fresh seed, printed.
fn seed() -> u64 {
    std::env::var("TROUPE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    entries.sort();
    let inputs: Vec<Vec<u8>> = entries
        .iter()
        .map(|p| std::fs::read(p).expect("a readable corpus file"))
        .collect();
    assert!(!inputs.is_empty(), "empty corpus {}", dir.display());
    inputs
}

/// Tokens worth inserting: JSON syntax, the protocol's words, and what
/// breaks parsers and terminals (escapes, surrogates, huge numbers, controls).
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "\\udc00",
    "\\u2028",
    "\\n",
    "null",
    "true",
    "false",
    "-0",
    "1e999",
    "-1",
    "0.5",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775808",
    "\"type\"",
    "\"send\"",
    "\"dm\"",
    "\"history\"",
    "\"resume\"",
    "\"ping\"",
    "\"room\"",
    "\"body\"",
    "\"client_id\"",
    "\"limit\"",
    "\"before\"",
    "\"after\"",
    "\"rooms\"",
    "\"nonce\"",
    "\"username\"",
    "\"password\"",
    "\"name\"",
    "\"private\"",
    "\"user\"",
    "dm:a:b",
    "!broadcast",
    "/pm ",
    "/group_msg ",
    "/register ",
    "/login ",
    "/broadcast ",
    "/group_create ",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\u{0}",
    "\u{1b}[2J",
    "\u{85}",
    "\u{2028}",
    "\u{202e}",
    "\u{feff}",
    "é",
    "😀",
    "&",
    "=",
    "%",
    "%zz",
    "%00",
    "?",
    "limit=",
    "before=",
    "after=",
];

/// Keys worth adding to a JSON object.
const KEYS: &[&str] = &[
    "type",
    "room",
    "body",
    "client_id",
    "to",
    "user",
    "token",
    "resume_token",
    "rooms",
    "seq",
    "limit",
    "before",
    "after",
    "active",
    "nonce",
    "username",
    "password",
    "name",
    "private",
    "ref",
];

/// A value a field should not (or should) get.
fn odd_value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..10) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => [
            json!(u64::MAX),
            json!(i64::MIN),
            json!(-1),
            json!(0),
            json!(1.5),
            json!(1e300),
        ][rng.random_range(0..6)]
        .clone(),
        3 => json!(rng.random_range(0..300u32)),
        4 => json!([]),
        5 => json!({}),
        6 => json!("x".repeat(rng.random_range(0..5000))),
        7 => json!(KEYS[rng.random_range(0..KEYS.len())]),
        _ => {
            let mut s = String::new();
            for _ in 0..rng.random_range(0..6) {
                s.push_str(TOKENS[rng.random_range(0..TOKENS.len())]);
            }
            json!(s)
        }
    }
}

/// One edit somewhere in a JSON document: a field replaced, dropped or
/// added. Most mutants of a frame stay JSON and reach the field checks.
fn mutate_json(rng: &mut StdRng, v: &mut Value, depth: usize) {
    match v {
        Value::Object(map) if !map.is_empty() && depth < 8 && rng.random_range(0..4) > 0 => {
            let i = rng.random_range(0..map.len());
            let key = map.keys().nth(i).cloned().unwrap_or_default();
            match rng.random_range(0..6) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(KEYS[rng.random_range(0..KEYS.len())].into(), odd_value(rng));
                }
                _ => {
                    if let Some(child) = map.get_mut(&key) {
                        mutate_json(rng, child, depth + 1);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() && depth < 8 && rng.random() => {
            let i = rng.random_range(0..items.len());
            mutate_json(rng, &mut items[i], depth + 1);
        }
        _ => *v = odd_value(rng),
    }
}

/// One to eight random edits of `input`, kept under `max` bytes: on a JSON
/// document, half the time structured ones (then maybe a byte edit or two).
fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, pool: &[Vec<u8>], max: usize) {
    let mut byte_edits = rng.random_range(1..=8);
    if rng.random() {
        if let Ok(mut v) = serde_json::from_slice::<Value>(input) {
            for _ in 0..rng.random_range(1..=3) {
                mutate_json(rng, &mut v, 0);
            }
            *input = serde_json::to_vec(&v).unwrap_or_default();
            byte_edits = [0, 0, 0, 1, 2][rng.random_range(0..5)];
        }
    }
    for _ in 0..byte_edits {
        let len = input.len();
        let at = rng.random_range(0..=len);
        match rng.random_range(0..9) {
            0 if len > 0 => input[at.min(len - 1)] ^= 1 << rng.random_range(0..8),
            1 if len > 0 => input[at.min(len - 1)] = rng.random(),
            2 => {
                let token = TOKENS[rng.random_range(0..TOKENS.len())].as_bytes();
                input.splice(at..at, token.iter().copied());
            }
            3 if at < len => {
                let end = rng.random_range(at..=len.min(at + 16));
                input.drain(at..end);
            }
            4 if at < len => {
                let end = rng.random_range(at..=len.min(at + 32));
                let chunk = input[at..end].to_vec();
                input.splice(at..at, chunk);
            }
            5 => {
                // Splice in a piece of another input.
                let other = &pool[rng.random_range(0..pool.len())];
                let from = rng.random_range(0..=other.len());
                let to = rng.random_range(from..=other.len());
                input.splice(at..at, other[from..to].iter().copied());
            }
            6 => input.truncate(at),
            7 => {
                // Deep nesting or a long run: recursion and size limits.
                let token = *[b"[".as_slice(), b"{\"a\":", b"\"", b"x"]
                    .get(rng.random_range(0..4))
                    .unwrap_or(&b"[".as_slice());
                let run = token.repeat(rng.random_range(1..2000));
                input.splice(at..at, run);
            }
            _ => input.push(rng.random()),
        }
    }
    input.truncate(max);
}

/// Runs `check` on the corpus, then on `iterations()` mutants of it. A panic
/// fails the test with the seed, the iteration and the input that caused it.
/// `check` tells whether the input was accepted (counted: a run whose
/// mutants were all refused would have tested the error paths only).
fn fuzz(target: &str, max: usize, check: impl Fn(&[u8]) -> bool) {
    let pool = corpus(target);
    let (seed, n) = (seed(), iterations());
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let run = |i: u64, input: &[u8]| match catch_unwind(AssertUnwindSafe(|| check(input))) {
        Ok(accepted) => accepted,
        Err(_) => panic!(
            "fuzz target {target} panicked (TROUPE_FUZZ_SEED={seed}, input {i}) on {:?}",
            String::from_utf8_lossy(input)
        ),
    };
    for input in &pool {
        run(0, input);
    }
    let mut input = Vec::new();
    let mut accepted = 0u64;
    for i in 1..=n {
        input.clear();
        input.extend_from_slice(&pool[rng.random_range(0..pool.len())]);
        mutate(&mut rng, &mut input, &pool, max);
        accepted += u64::from(run(i, &input));
    }
    println!(
        "fuzz {target}: {n} inputs ({accepted} accepted) + {} seeds in {:.1?}, seed {seed}: \
         no panic, every property held",
        pool.len(),
        started.elapsed()
    );
}

/// Text as the WebSocket layer hands it over: always UTF-8.
fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

/// A decoded frame encodes and decodes to itself (the nonce of a ping is
/// any JSON, whose floats need not survive a round trip: left out).
fn assert_round_trip(frame: &ClientFrame) {
    let encoded = serde_json::to_string(frame).expect("a frame encodes");
    let again = ClientFrame::decode(&encoded)
        .unwrap_or_else(|e| panic!("{frame:?} encoded as {encoded} does not decode: {e:?}"));
    match (frame, &again) {
        (ClientFrame::Ping { .. }, ClientFrame::Ping { .. }) => {}
        _ => assert_eq!(&again, frame, "round trip through {encoded}"),
    }
}

/// A refusal is a 400 `bad_request`, never another code.
fn valid(result: Result<(), ChatError>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
            assert!(!e.message.is_empty());
            false
        }
    }
}

#[test]
fn fuzz_frames() {
    fuzz("frames", 70 * 1024, |input| {
        match ClientFrame::decode(&text(input)) {
            Ok(frame) => {
                assert_round_trip(&frame);
                // The `ref` an error about it would carry.
                let _ = frame.reference();
                true
            }
            Err(e) => valid(Err(e.error)),
        }
    });
}

/// Whether every number in `v` is an integer serde reads as one: JSON
/// Schema counts `1.0` as an integer, serde's `u64` does not; such inputs
/// say nothing about the schema.
fn plain_numbers(v: &Value) -> bool {
    match v {
        Value::Number(n) => !n.is_f64(),
        Value::Array(items) => items.iter().all(plain_numbers),
        Value::Object(map) => map.values().all(plain_numbers),
        _ => true,
    }
}

/// The frames' JSON Schema (`/api/frames.schema.json`) accepts exactly the
/// frames the node accepts: those `ClientFrame::decode` decodes and that
/// pass the checks applied to every frame of their type (the history page
/// size).
#[test]
fn fuzz_frames_against_their_schema() {
    let mut root = super::api::frames::document();
    root.as_object_mut().expect("an object").remove("anyOf");
    root["$ref"] = json!("#/$defs/ClientFrame");
    let schema = jsonschema::draft202012::new(&root).expect("the frames schema compiles");
    fuzz("frames", 70 * 1024, |input| {
        let Ok(value) = serde_json::from_slice::<Value>(input) else {
            return false;
        };
        if !value.is_object() || !plain_numbers(&value) {
            return false;
        }
        let node_accepts = match ClientFrame::decode(&text(input)) {
            Ok(ClientFrame::History { query, .. }) => query.checked_limit().is_ok(),
            Ok(_) => true,
            Err(_) => false,
        };
        let schema_accepts = schema.is_valid(&value);
        assert_eq!(
            schema_accepts,
            node_accepts,
            "the schema {} {value} but the node {} it",
            if schema_accepts { "accepts" } else { "refuses" },
            if node_accepts { "accepts" } else { "refuses" },
        );
        node_accepts
    });
}

#[test]
fn fuzz_lines() {
    fuzz("lines", 4 * 1024, |input| {
        let text = text(input);
        let accepted = match lines::parse(&text) {
            Ok(Line::Frame(frame)) => {
                assert_round_trip(&frame);
                true
            }
            Ok(_) => true,
            Err(usage) => {
                assert!(!usage.is_empty());
                false
            }
        };
        // Whatever the node is handed, a text-mode client gets something sane.
        let _ = lines::render(&text);
        // A message carrying this text as its body and room is one line.
        let message = ServerFrame::Message(ChatMessage {
            room: text.clone(),
            seq: 1,
            from: "ann".into(),
            body: text,
            ts: 0,
            client_id: "c".into(),
            ..Default::default()
        })
        .encode();
        let line = lines::render(&message).expect("a message is shown");
        assert!(
            !line.chars().any(|c| c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}')),
            "{line:?}"
        );
        assert_eq!(
            lines::escape(&line),
            line,
            "escaping is idempotent on its output"
        );
        accepted
    });
}

#[test]
fn fuzz_rest_bodies() {
    fuzz("rest", 70 * 1024, |input| {
        let bytes = || Ok(Bytes::copy_from_slice(input));
        // Each body as its handler parses it, then the validation it calls.
        let credentials = parse_body::<Credentials>(bytes())
            .map_err(|e| e.0)
            .and_then(|c| check_username(&c.username).and(check_password(&c.password)));
        let room = parse_body::<NewRoom>(bytes())
            .map_err(|e| e.0)
            .and_then(|r| {
                check_room_name(&r.name).map(|()| {
                    let _ = r.private;
                })
            });
        let invitation = parse_body::<Invitation>(bytes())
            .map_err(|e| e.0)
            .and_then(|i| check_username(&i.user));
        // `|`, not `||`: every check runs on every input.
        valid(credentials) | valid(room) | valid(invitation)
    });
}

#[test]
fn fuzz_history_query() {
    fuzz("query", 4 * 1024, |input| {
        // The query string of GET /api/v1/rooms/{room}/messages, as axum parses it.
        let Ok(uri) = format!("/api/v1/rooms/r/messages?{}", text(input)).parse::<Uri>() else {
            return false;
        };
        let Ok(Query(query)) = Query::<HistoryQuery>::try_from_uri(&uri) else {
            return false;
        };
        match query.checked_limit() {
            Ok(limit) => {
                assert!((1..=HISTORY_MAX_LIMIT as usize).contains(&limit));
                true
            }
            Err(e) => valid(Err(e)),
        }
    });
}
