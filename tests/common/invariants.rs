//! The one invariant checker: what the clients saw (their [`Ledger`]s)
//! against what history holds (read over REST), after the traffic stopped.
//! The fault tests (one node) and the cluster tests (the load driver) both
//! end with it. The promises, numbered as in tests/cluster.rs:
//!
//! 1. every acked message is in history with its acked seq, its client_id
//!    and its sender; no seq is acked to two sends;
//! 2. per room, history lists seqs 1..=last in order, without a gap or a
//!    seq twice, no (sender, client_id) twice, and only what the clients
//!    sent, as they sent it (room, sender, body);
//! 3. every member received every message of its rooms from its join on,
//!    exactly once, in increasing seq order, as history has it;
//! 4. every disconnected client resumed, and `resumed` came after the
//!    replay of what it missed and before any live message.
//!
//! Besides: the broken promises the clients saw on the wire
//! ([`Ledger::problems`]) and sends never acked despite their retries.
//! [`check`] reports every violation, grouped by the promise it breaks, with
//! the counts of the run ([`Report`]); [`Report::assert_clean`] fails the
//! test with them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ledger::{Ledger, Sent};

/// A message as history lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HistMsg {
    pub seq: u64,
    pub client_id: String,
    pub from: String,
    pub body: String,
}

/// Every room's history, in the order REST listed it.
pub type History = BTreeMap<String, Vec<HistMsg>>;

/// Every message of `room` through `GET /api/v1/rooms/{room}/messages` on
/// the node at `base` (`http://host:port`), in pages of 200.
pub async fn read_history(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    room: &str,
) -> Result<Vec<HistMsg>, String> {
    let mut out: Vec<HistMsg> = Vec::new();
    let mut after = 0u64;
    loop {
        let url = format!("{base}/api/v1/rooms/{room}/messages?after={after}&limit=200");
        let r = http
            .get(&url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if status != 200 {
            return Err(format!("GET {url}: {status} {text}"));
        }
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("GET {url}: {e}: {text}"))?;
        let page = v["messages"].as_array().cloned().unwrap_or_default();
        let s = |m: &Value, k: &str| m[k].as_str().unwrap_or_default().to_string();
        for m in &page {
            let seq = m["seq"].as_u64().unwrap_or(0);
            out.push(HistMsg {
                seq,
                client_id: s(m, "client_id"),
                from: s(m, "from"),
                body: s(m, "body"),
            });
            after = after.max(seq);
        }
        if page.len() < 200 {
            return Ok(out);
        }
    }
}

/// Violations, grouped by the promise they break.
#[derive(Debug, Default)]
pub struct Violations(BTreeMap<&'static str, Vec<String>>);

impl Violations {
    pub fn push(&mut self, what: &'static str, msg: String) {
        self.0.entry(what).or_default().push(msg);
    }

    pub fn count(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    /// Per kind: how many, then the first `each`.
    pub fn report(&self, each: usize) -> Vec<String> {
        let mut out = Vec::new();
        for (what, msgs) in &self.0 {
            out.push(format!("== {what}: {} violation(s)", msgs.len()));
            out.extend(msgs.iter().take(each).map(|m| format!("   {m}")));
            if msgs.len() > each {
                out.push(format!("   ... and {} more", msgs.len() - each));
            }
        }
        out
    }
}

/// The outcome of [`check`]: the violations and the counts of the run.
#[derive(Debug, Default)]
pub struct Report {
    pub violations: Violations,
    pub sent: usize,
    pub acked: usize,
    pub delivered: usize,
    /// Acked messages not in history, and messages members never received.
    pub lost: usize,
    pub lost_acked: usize,
    pub missed_deliveries: usize,
    /// Deliveries received twice, and messages stored twice.
    pub duplicated: usize,
    pub resumes: usize,
    pub disconnects: usize,
    pub unacked: usize,
    pub resends: u32,
    pub silent_resends: u64,
    pub unavailable: usize,
    pub history: usize,
    /// From a send's first transmission to its ack, sorted.
    pub ack_ms: Vec<u64>,
}

impl Report {
    /// The `p` quantile of the ack times, in ms.
    pub fn ack_percentile(&self, p: f64) -> u64 {
        if self.ack_ms.is_empty() {
            return 0;
        }
        let at = ((self.ack_ms.len() as f64 * p) as usize).min(self.ack_ms.len() - 1);
        self.ack_ms[at]
    }

    /// One line of counts (`key=value ...`).
    pub fn counts(&self) -> String {
        format!(
            "acked={} delivered={} lost={} duplicated={} resumes={} (sent={} history={} unacked={} \
             resends={} unanswered={} unavailable={} disconnects={} lost_acked={} missed_deliveries={} \
             ack_p50_ms={} ack_p99_ms={} ack_max_ms={} violations={})",
            self.acked,
            self.delivered,
            self.lost,
            self.duplicated,
            self.resumes,
            self.sent,
            self.history,
            self.unacked,
            self.resends,
            self.silent_resends,
            self.unavailable,
            self.disconnects,
            self.lost_acked,
            self.missed_deliveries,
            self.ack_percentile(0.5),
            self.ack_percentile(0.99),
            self.ack_ms.last().copied().unwrap_or(0),
            self.violations.count()
        )
    }

    /// Panics listing every violation (the first 12 of each kind) and
    /// `context` (a node's log tail) when there is any.
    pub fn assert_clean(&self, context: &str) {
        let count = self.violations.count();
        assert!(
            count == 0,
            "{count} invariant violation(s):\n{}\n{}\n{context}",
            self.violations.report(12).join("\n"),
            self.counts()
        );
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// The last `n` of `v`.
pub fn last_few(v: &[String], n: usize) -> Vec<String> {
    v[v.len().saturating_sub(n)..].to_vec()
}

/// Checks every promise of the module docs. `started`: when the traffic
/// began (reports say when things happened relative to it).
pub fn check(ledgers: &[&Ledger], history: &History, started: Instant) -> Report {
    let mut r = Report::default();
    let v = &mut r.violations;
    let mut dup_history = 0usize;
    let mut dup_deliveries = 0usize;

    // (2) history: seqs 1..=last in order, each once; no (sender, client_id) twice.
    let mut by_seq: BTreeMap<&str, BTreeMap<u64, &HistMsg>> = BTreeMap::new();
    for (room, msgs) in history {
        let map = by_seq.entry(room.as_str()).or_default();
        let mut ids: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        let mut prev = 0;
        for m in msgs {
            if let Some(first) = map.insert(m.seq, m) {
                v.push(
                    "(2) history seq listed twice",
                    format!("{room} #{}: {} and {}", m.seq, first.client_id, m.client_id),
                );
            } else if m.seq < prev {
                v.push(
                    "(2) history lists seqs out of order",
                    format!("{room}: #{} listed after #{prev}", m.seq),
                );
            }
            prev = prev.max(m.seq);
            if let Some(first) = ids.insert((m.from.as_str(), m.client_id.as_str()), m.seq) {
                dup_history += 1;
                v.push(
                    "(2) duplicate message in history (same sender and client_id)",
                    format!(
                        "{room}: {} / {} stored as #{first} and #{}",
                        m.from, m.client_id, m.seq
                    ),
                );
            }
        }
        let last = map.keys().next_back().copied().unwrap_or(0);
        let gaps: Vec<u64> = (1..=last).filter(|s| !map.contains_key(s)).collect();
        if !gaps.is_empty() {
            v.push(
                "(2) history seq gaps",
                format!(
                    "{room}: {} missing seqs in 1..={last}: {:?}",
                    gaps.len(),
                    &gaps[..gaps.len().min(20)]
                ),
            );
        }
    }
    r.history = history.values().map(Vec::len).sum();

    // What each client sent, and the broken promises it saw on the wire.
    let mut sent_by: BTreeMap<&str, (&str, &Sent)> = BTreeMap::new();
    for l in ledgers {
        for p in &l.problems {
            v.push("broken promises on the wire", p.clone());
        }
        for (id, sent) in &l.sends {
            sent_by.insert(id, (&l.user, sent));
        }
        for id in &l.open {
            let p = &l.sends[id];
            v.push(
                "sends never acked (despite retries)",
                format!(
                    "{}: {id} to {} ({} tries, first sent {} ms before the check)",
                    l.user,
                    p.room,
                    p.tries,
                    ms(p.first_sent.elapsed())
                ),
            );
        }
        r.sent += l.sends.len();
        r.unacked += l.open.len();
        r.resends += l.resends();
        r.silent_resends += l.silent_resends;
        r.unavailable += l.unavailable.len();
        r.acked += l.acks.len();
        r.delivered += l.deliveries.len();
        r.resumes += l.resumes.len();
        r.disconnects += l.disconnects.len();
        for (id, a) in &l.acks {
            r.ack_ms
                .push(ms(a.at.duration_since(l.sends[id].first_sent)) as u64);
        }
    }
    r.ack_ms.sort_unstable();

    // (2) history holds only what the clients sent, as they sent it.
    for (room, msgs) in history {
        for m in msgs {
            match sent_by.get(m.client_id.as_str()) {
                None => v.push(
                    "(2) history holds a message no client sent",
                    format!("{room} #{}: {} / {}", m.seq, m.from, m.client_id),
                ),
                Some((user, sent))
                    if sent.room != *room || m.from != *user || m.body != sent.body =>
                {
                    v.push(
                        "(2) history holds a message other than the one sent",
                        format!(
                            "{room} #{}: {} / {} / {:?}, but {user} sent {:?} to {}",
                            m.seq, m.from, m.client_id, m.body, sent.body, sent.room
                        ),
                    )
                }
                Some(_) => {}
            }
        }
    }

    // (1) every ack is in history with its seq; no seq acked twice.
    let mut acked_seqs: BTreeMap<(&str, u64), &str> = BTreeMap::new();
    for l in ledgers {
        for (id, a) in &l.acks {
            if let Some(other) = acked_seqs.insert((&a.room, a.seq), id) {
                v.push(
                    "(1) one seq acked to two sends",
                    format!("{} #{}: {other} and {id}", a.room, a.seq),
                );
            }
            let problem = match by_seq.get(a.room.as_str()).and_then(|m| m.get(&a.seq)) {
                Some(m) if m.client_id == *id && m.from == l.user => continue,
                Some(m) => format!(
                    "{} {id} acked as {} #{}, but history has #{} = {} / {}",
                    l.user, a.room, a.seq, a.seq, m.from, m.client_id
                ),
                None => format!(
                    "{} {id} acked as {} #{}: no such seq in history",
                    l.user, a.room, a.seq
                ),
            };
            r.lost_acked += 1;
            v.push("(1) acked message not in history with its seq", problem);
        }
    }

    // (3) every message of its rooms from the join on, once, in order.
    for l in ledgers {
        let mut prev: BTreeMap<&str, u64> = l.rooms.iter().map(|(r, j)| (r.as_str(), *j)).collect();
        let mut got: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
        for d in &l.deliveries {
            let Some(prev) = prev.get_mut(d.room.as_str()) else {
                v.push(
                    "(3) message of a foreign room delivered",
                    format!(
                        "{} (member of {:?}): {} #{} ({})",
                        l.user,
                        l.rooms.keys().collect::<Vec<_>>(),
                        d.room,
                        d.seq,
                        d.client_id
                    ),
                );
                continue;
            };
            if !got.entry(&d.room).or_default().insert(d.seq) {
                dup_deliveries += 1;
                v.push(
                    "(3) message delivered twice to a member",
                    format!(
                        "{}: {} #{} ({}), the second time on node{}",
                        l.user,
                        d.room,
                        d.seq,
                        d.client_id,
                        d.node + 1
                    ),
                );
            } else if d.seq <= *prev {
                v.push(
                    "(3) message delivered out of order",
                    format!(
                        "{}: {} #{} arrived after #{prev} (on node{})",
                        l.user,
                        d.room,
                        d.seq,
                        d.node + 1
                    ),
                );
            }
            *prev = (*prev).max(d.seq);
            match by_seq.get(d.room.as_str()).and_then(|m| m.get(&d.seq)) {
                Some(m) if m.client_id == d.client_id && m.from == d.from && m.body == d.body => {}
                Some(m) => v.push(
                    "(3) delivered message differs from history",
                    format!(
                        "{}: {} #{} delivered as {} / {} / {:?} but history has {} / {} / {:?}",
                        l.user,
                        d.room,
                        d.seq,
                        d.from,
                        d.client_id,
                        d.body,
                        m.from,
                        m.client_id,
                        m.body
                    ),
                ),
                None => v.push(
                    "(3) delivered message not in history",
                    format!("{}: {} #{} ({})", l.user, d.room, d.seq, d.client_id),
                ),
            }
        }
        for (room, &join_seq) in &l.rooms {
            let last = by_seq
                .get(room.as_str())
                .and_then(|m| m.keys().next_back().copied())
                .unwrap_or(0);
            let empty = BTreeSet::new();
            let got = got.get(room.as_str()).unwrap_or(&empty);
            let missing: Vec<u64> = (join_seq + 1..=last).filter(|q| !got.contains(q)).collect();
            if missing.is_empty() {
                continue;
            }
            r.missed_deliveries += missing.len();
            let last_before_gap = l
                .deliveries
                .iter()
                .find(|d| d.room == *room && d.seq == missing[0] - 1)
                .map(|d| d.at);
            // Its own sends acked after the gap began: the connection (and
            // the way to the room) worked, only the deliveries stopped.
            let acked_since = last_before_gap.map_or(0, |t| {
                l.acks
                    .values()
                    .filter(|a| a.room == *room && a.at > t)
                    .count()
            });
            v.push(
                "(3) member missed messages of its room",
                format!(
                    "{}: missed {} of the {} messages of {room} after its join (#{join_seq}): {:?}{}; \
                     connected to node{} (at the end); before the first gap it last got #{} at +{} ms \
                     into the run ({acked_since} of its own sends acked since); its disconnects: {:?}",
                    l.user,
                    missing.len(),
                    last - join_seq,
                    &missing[..missing.len().min(20)],
                    if missing.len() > 20 { " ..." } else { "" },
                    l.node + 1,
                    missing[0] - 1,
                    last_before_gap.map_or(-1, |t| t.duration_since(started).as_millis() as i64),
                    l.disconnects
                        .iter()
                        .map(|d| format!(
                            "node{} at +{} ms: {}",
                            d.node + 1,
                            ms(d.at.duration_since(started)),
                            d.reason
                        ))
                        .collect::<Vec<_>>()
                ),
            );
        }
    }

    // (4) a resume replays every missed message, then `resumed`, then live
    // traffic: `resumed` names exactly the last seq that arrived.
    for l in ledgers {
        // The load driver's users resume one room: theirs.
        let room = l.rooms.keys().next().cloned().unwrap_or_default();
        for res in &l.resumes {
            let Some(claimed) = res.claimed else { continue };
            if claimed < res.seen_then {
                v.push(
                    "(4) resume: a live message arrived before `resumed`",
                    format!(
                        "{}: resumed on node{} with {room}: {}; `resumed` said caught up through #{claimed}, but #{} had arrived already",
                        l.user,
                        res.node + 1,
                        res.from,
                        res.seen_then
                    ),
                );
                continue;
            }
            if claimed == res.seen_then {
                continue;
            }
            let late: Vec<String> = (res.seen_then + 1..=claimed)
                .map(
                    |q| match l.deliveries.iter().find(|d| d.room == room && d.seq == q) {
                        Some(d) if d.at >= res.at => {
                            format!("#{q} +{}ms", ms(d.at.duration_since(res.at)))
                        }
                        Some(_) => format!("#{q} before"),
                        None => format!("#{q} never"),
                    },
                )
                .collect();
            v.push(
                "(4) resume: `resumed` arrived before the replay was complete",
                format!(
                    "{}: resumed on node{} with {room}: {}; `resumed` said caught up through #{claimed}, but only #{} had arrived; the rest arrived after `resumed`: [{}]",
                    l.user,
                    res.node + 1,
                    res.from,
                    res.seen_then,
                    late.join(", ")
                ),
            );
        }
        if l.resumes.len() != l.disconnects.len() {
            v.push(
                "(4) disconnected client did not resume",
                format!(
                    "{}: disconnected {} times, resumed {} times",
                    l.user,
                    l.disconnects.len(),
                    l.resumes.len()
                ),
            );
        }
    }
    r.lost = r.lost_acked + r.missed_deliveries;
    r.duplicated = dup_deliveries + dup_history;
    r
}
