//! Full-text search over message bodies: the [`SearchIndex`] trait, the
//! query rules shared by every implementation (validation, paging cursors,
//! order), and an in-memory index for unit tests.
//!
//! The index holds one document per message (room, seq, sender, body, ts).
//! The SQL stores keep it in the same transaction as history (Postgres: a
//! GIN index over a `tsvector`; SQLite: an FTS5 table), so a message is
//! found once history holds it. Edits replace a document's body
//! ([`SearchIndex::update`]); deletes empty it ([`SearchIndex::remove`]).
//!
//! Matching: every word of the query must occur in the body, whole and in
//! any case (no stemming, no stop words: any language searches the same).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use base64::Engine;
use serde::Serialize;

use super::StoreResult;
use crate::frames::{ChatError, ChatMessage};

/// The longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// Most words in a query.
pub const MAX_QUERY_WORDS: usize = 16;
pub const SEARCH_DEFAULT_LIMIT: usize = 20;
/// Larger `limit`s are clamped to this.
pub const SEARCH_MAX_LIMIT: usize = 100;

/// One message found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    pub room: String,
    pub seq: u64,
    pub from: String,
    pub body: String,
    pub ts: i64,
}

/// Where a page starts: only results strictly older than this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Within one room: seq < this (the `before` of history).
    Seq(u64),
    /// Across rooms: (ts, room, seq) < this, compared in that order.
    At { ts: i64, room: String, seq: u64 },
}

impl Cursor {
    /// The cursor after `hit` in a search of one room (`by_seq`) or of all.
    pub fn after(hit: &SearchHit, by_seq: bool) -> Cursor {
        if by_seq {
            Cursor::Seq(hit.seq)
        } else {
            Cursor::At {
                ts: hit.ts,
                room: hit.room.clone(),
                seq: hit.seq,
            }
        }
    }

    /// The `next_before` string: a seq within a room, else opaque
    /// (URL-safe base64 of `ts:seq:room`).
    pub fn encode(&self) -> String {
        match self {
            Cursor::Seq(seq) => seq.to_string(),
            Cursor::At { ts, room, seq } => base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!("{ts}:{seq}:{room}")),
        }
    }

    /// Reads a `before` parameter: digits are a seq, anything else must be
    /// a `next_before` this node handed out.
    pub fn parse(text: &str) -> Result<Cursor, ChatError> {
        let bad = || ChatError::bad_request("before must be a seq or a next_before as answered");
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text.parse().map(Cursor::Seq).map_err(|_| bad());
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let mut parts = raw.splitn(3, ':');
        let (Some(ts), Some(seq), Some(room)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        Ok(Cursor::At {
            ts: ts.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
            room: room.to_string(),
        })
    }
}

/// A validated search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// The text as the user typed it (trimmed); each backend reads its
    /// words the way it reads bodies.
    pub text: String,
    /// The rooms searched; never empty.
    pub rooms: Vec<String>,
    /// One room asked for: newest first by seq. Else newest first by
    /// (ts, room, seq), all descending.
    pub by_seq: bool,
    pub before: Option<Cursor>,
    pub limit: usize,
}

impl SearchQuery {
    /// Checks what a client asked for; `rooms` are the rooms it may read
    /// (the one room asked for, when `by_seq`).
    pub fn new(
        text: &str,
        rooms: Vec<String>,
        by_seq: bool,
        before: Option<&str>,
        limit: Option<u64>,
    ) -> Result<SearchQuery, ChatError> {
        let text = check_text(text)?;
        let before = match before {
            None => None,
            Some(b) => match (Cursor::parse(b)?, by_seq) {
                // A cross-room cursor used within a room: its seq holds.
                (Cursor::At { seq, .. }, true) => Some(Cursor::Seq(seq)),
                (Cursor::Seq(_), false) => {
                    return Err(ChatError::bad_request(
                        "before=<seq> needs room=; across rooms, pass next_before as answered",
                    ))
                }
                (cursor, _) => Some(cursor),
            },
        };
        Ok(SearchQuery {
            text,
            rooms,
            by_seq,
            before,
            limit: clamp_limit(limit),
        })
    }

    /// The `next_before` of a page: present when the page is full.
    pub fn next_before(&self, page: &[SearchHit]) -> Option<String> {
        if page.len() < self.limit {
            return None;
        }
        page.last()
            .map(|hit| Cursor::after(hit, self.by_seq).encode())
    }
}

/// `limit` clamped to 1..=[`SEARCH_MAX_LIMIT`]; [`SEARCH_DEFAULT_LIMIT`] if unset.
pub fn clamp_limit(limit: Option<u64>) -> usize {
    limit.map_or(SEARCH_DEFAULT_LIMIT, |n| {
        n.clamp(1, SEARCH_MAX_LIMIT as u64) as usize
    })
}

/// The query text, trimmed, or why it cannot be searched.
pub fn check_text(text: &str) -> Result<String, ChatError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ChatError::bad_request("q must not be empty"));
    }
    let chars = text.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(ChatError::bad_request(format!(
            "q has {chars} characters, the limit is {MAX_QUERY_CHARS}"
        )));
    }
    let words = words(text).len();
    if words == 0 {
        return Err(ChatError::bad_request(
            "q has no words to search for (letters or digits)",
        ));
    }
    if words > MAX_QUERY_WORDS {
        return Err(ChatError::bad_request(format!(
            "q has {words} words, the limit is {MAX_QUERY_WORDS}"
        )));
    }
    Ok(text.to_string())
}

/// The lowercased words of `text` (runs of letters and digits), in order:
/// how the in-memory index reads a body or a query, and what a query must
/// have at least one of. (The SQL backends read words their own way, which
/// also keeps the combining marks of scripts such as Devanagari.)
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The query as FTS5 phrases: each whitespace-separated chunk quoted (so no
/// character of it is FTS5 syntax), the phrases ANDed. FTS5 tokenizes each
/// phrase the way it tokenized the bodies; chunks without a word are left
/// out (FTS5 would ignore them anyway).
pub fn fts5_query(text: &str) -> String {
    text.split_whitespace()
        .filter(|chunk| chunk.chars().any(char::is_alphanumeric))
        .map(|chunk| format!("\"{}\"", chunk.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The search index of message bodies.
#[async_trait]
pub trait SearchIndex: Send + Sync + 'static {
    /// Adds messages; one already there keeps its body (an edit or a delete
    /// may have reached the index first).
    async fn index(&self, messages: &[ChatMessage]) -> StoreResult<()>;
    /// The message's body is now `body` (an edit): found by its new words only.
    async fn update(&self, room: &str, seq: u64, body: &str) -> StoreResult<()>;
    /// The message is deleted: never found again.
    async fn remove(&self, room: &str, seq: u64) -> StoreResult<()>;
    /// Drops every document of a deleted room.
    async fn remove_room(&self, room: &str) -> StoreResult<()>;
    /// A page of matches in `query.rooms`, newest first.
    async fn search(&self, query: &SearchQuery) -> StoreResult<Vec<SearchHit>>;
}

/// A document of the in-memory index.
#[derive(Debug, Clone, Default)]
struct Doc {
    sender: String,
    body: String,
    ts: i64,
}

/// The index in memory, for unit tests: the same rules, a linear scan.
#[derive(Default)]
pub struct MemorySearch {
    docs: Mutex<BTreeMap<(String, u64), Doc>>,
}

impl MemorySearch {
    fn upsert_body(&self, room: &str, seq: u64, body: &str) {
        let mut docs = self.docs.lock().expect("search index lock");
        docs.entry((room.to_string(), seq)).or_default().body = body.to_string();
    }
}

/// Whether every whitespace-separated chunk of the query occurs in `body`
/// as consecutive words.
fn matches(query: &[Vec<String>], body: &[String]) -> bool {
    query.iter().all(|phrase| {
        phrase.is_empty()
            || body
                .windows(phrase.len())
                .any(|window| window == phrase.as_slice())
    })
}

#[async_trait]
impl SearchIndex for MemorySearch {
    async fn index(&self, messages: &[ChatMessage]) -> StoreResult<()> {
        let mut docs = self.docs.lock().expect("search index lock");
        for m in messages {
            let doc = docs.entry((m.room.clone(), m.seq)).or_insert_with(|| Doc {
                body: m.body.clone(),
                ..Doc::default()
            });
            doc.sender = m.from.clone();
            doc.ts = m.ts;
        }
        Ok(())
    }

    async fn update(&self, room: &str, seq: u64, body: &str) -> StoreResult<()> {
        self.upsert_body(room, seq, body);
        Ok(())
    }

    async fn remove(&self, room: &str, seq: u64) -> StoreResult<()> {
        self.upsert_body(room, seq, "");
        Ok(())
    }

    async fn remove_room(&self, room: &str) -> StoreResult<()> {
        let mut docs = self.docs.lock().expect("search index lock");
        docs.retain(|(r, _), _| r != room);
        Ok(())
    }

    async fn search(&self, query: &SearchQuery) -> StoreResult<Vec<SearchHit>> {
        let phrases: Vec<Vec<String>> = query.text.split_whitespace().map(words).collect();
        let docs = self.docs.lock().expect("search index lock");
        let mut hits: Vec<SearchHit> = docs
            .iter()
            .filter(|((room, _), _)| query.rooms.contains(room))
            .filter(|(_, doc)| matches(&phrases, &words(&doc.body)))
            .map(|((room, seq), doc)| SearchHit {
                room: room.clone(),
                seq: *seq,
                from: doc.sender.clone(),
                body: doc.body.clone(),
                ts: doc.ts,
            })
            .filter(|hit| match &query.before {
                None => true,
                Some(Cursor::Seq(before)) => hit.seq < *before,
                Some(Cursor::At { ts, room, seq }) => {
                    (hit.ts, hit.room.as_str(), hit.seq) < (*ts, room.as_str(), *seq)
                }
            })
            .collect();
        if query.by_seq {
            hits.sort_by_key(|h| std::cmp::Reverse(h.seq));
        } else {
            hits.sort_by(|a, b| (b.ts, &b.room, b.seq).cmp(&(a.ts, &a.room, a.seq)));
        }
        hits.truncate(query.limit);
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::ErrorCode;

    fn msg(room: &str, seq: u64, body: &str, ts: i64) -> ChatMessage {
        ChatMessage {
            room: room.into(),
            seq,
            from: "ann".into(),
            body: body.into(),
            ts,
            client_id: format!("c{seq}"),
            ..Default::default()
        }
    }

    fn all(text: &str, rooms: &[&str], before: Option<&str>, limit: u64) -> SearchQuery {
        let rooms = rooms.iter().map(|r| r.to_string()).collect();
        SearchQuery::new(text, rooms, false, before, Some(limit)).unwrap()
    }

    #[test]
    fn queries_are_checked() {
        let bad = |q: &str| SearchQuery::new(q, vec!["r".into()], false, None, None).unwrap_err();
        assert_eq!(bad("").code, ErrorCode::BadRequest);
        assert_eq!(bad("   ").code, ErrorCode::BadRequest);
        assert!(
            bad("?!").message.contains("no words"),
            "{}",
            bad("?!").message
        );
        assert!(bad(&"a".repeat(MAX_QUERY_CHARS + 1))
            .message
            .contains("limit"));
        assert!(bad(&"w ".repeat(MAX_QUERY_WORDS + 1))
            .message
            .contains("words"));
        assert_eq!(clamp_limit(None), SEARCH_DEFAULT_LIMIT);
        assert_eq!(clamp_limit(Some(0)), 1);
        assert_eq!(clamp_limit(Some(10_000)), SEARCH_MAX_LIMIT);
        // A seq cursor means nothing across rooms.
        let e = SearchQuery::new("x", vec!["r".into()], false, Some("12"), None).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(Cursor::parse("not a cursor!").is_err());
        assert!(Cursor::parse("").is_err());
    }

    #[test]
    fn cursors_round_trip() {
        let at = Cursor::At {
            ts: 1_733_000_000_123,
            room: "dm:ann:bob".into(),
            seq: 42,
        };
        assert_eq!(Cursor::parse(&at.encode()).unwrap(), at);
        assert_eq!(Cursor::parse("17").unwrap(), Cursor::Seq(17));
        // A cross-room cursor within a room keeps its seq.
        let q = SearchQuery::new("x", vec!["r".into()], true, Some(&at.encode()), None).unwrap();
        assert_eq!(q.before, Some(Cursor::Seq(42)));
    }

    #[test]
    fn fts5_queries_quote_everything() {
        assert_eq!(fts5_query("hello world"), r#""hello" "world""#);
        assert_eq!(
            fts5_query(r#"a"b OR NEAR(x) -y *"#),
            r#""a""b" "OR" "NEAR(x)" "-y""#
        );
        assert_eq!(words("Don't PANIC, Größe"), ["don", "t", "panic", "größe"]);
    }

    #[tokio::test]
    async fn finds_words_newest_first_and_pages() {
        let index = MemorySearch::default();
        index
            .index(&[
                msg("a", 1, "the quick brown fox", 10),
                msg("a", 2, "a lazy dog", 20),
                msg("b", 1, "Quick thinking", 30),
                msg("c", 1, "quick but unreadable", 40),
                msg("a", 3, "QUICK quick", 50),
            ])
            .await
            .unwrap();
        let page = index
            .search(&all("quick", &["a", "b"], None, 2))
            .await
            .unwrap();
        let keys: Vec<_> = page.iter().map(|h| (h.room.as_str(), h.seq)).collect();
        assert_eq!(keys, [("a", 3), ("b", 1)]);
        let q = all("quick", &["a", "b"], None, 2);
        let next = q.next_before(&page).expect("a full page has a next");
        let page = index
            .search(&all("quick", &["a", "b"], Some(&next), 2))
            .await
            .unwrap();
        let keys: Vec<_> = page.iter().map(|h| (h.room.as_str(), h.seq)).collect();
        assert_eq!(keys, [("a", 1)]);
        assert_eq!(q.next_before(&page), None);
        // Every word must match.
        let page = index
            .search(&all("quick fox", &["a"], None, 10))
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].body, "the quick brown fox");
    }

    #[tokio::test]
    async fn edits_and_deletes_change_what_is_found() {
        let index = MemorySearch::default();
        index.index(&[msg("a", 1, "old words", 10)]).await.unwrap();
        index.update("a", 1, "new words").await.unwrap();
        assert!(index
            .search(&all("old", &["a"], None, 5))
            .await
            .unwrap()
            .is_empty());
        let found = index.search(&all("new", &["a"], None, 5)).await.unwrap();
        assert_eq!(found[0].body, "new words");
        assert_eq!(found[0].from, "ann");
        // A late re-index (history written again) keeps the edit.
        index.index(&[msg("a", 1, "old words", 10)]).await.unwrap();
        assert!(index
            .search(&all("old", &["a"], None, 5))
            .await
            .unwrap()
            .is_empty());
        index.remove("a", 1).await.unwrap();
        assert!(index
            .search(&all("words", &["a"], None, 5))
            .await
            .unwrap()
            .is_empty());
    }
}
