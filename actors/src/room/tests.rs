//! Room behaviour with in-memory stores: group commit, idempotency, and what
//! happens when the log fails an append.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use ractor::{Actor, ActorRef};
use serde_json::Value;

use super::supervisor::{RoomSupervisor, RoomSupervisorMsg};
use super::*;
use crate::outbox::{Outbound, OutboxReceiver};
use crate::presence::Presence;
use crate::store::memory::{MemoryLeases, MemoryLog};
use crate::store::{LeaseStore, MessageLog, StoreResult};

/// Fails the first `failures` appends: after writing (`write_anyway`), before
/// writing, or (`land_late`) writing the failed records only when the next
/// append comes, just before it: an append that timed out and landed late.
struct FlakyLog {
    inner: MemoryLog,
    failures: AtomicUsize,
    write_anyway: bool,
    land_late: bool,
    late: std::sync::Mutex<Vec<LogRecord>>,
}

impl FlakyLog {
    fn new(failures: usize, write_anyway: bool, land_late: bool) -> Self {
        FlakyLog {
            inner: MemoryLog::default(),
            failures: AtomicUsize::new(failures),
            write_anyway,
            land_late,
            late: Default::default(),
        }
    }
}

#[async_trait]
impl MessageLog for FlakyLog {
    async fn append(&self, room: &str, records: &[LogRecord]) -> StoreResult<Vec<LogPosition>> {
        let fail = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let late: Vec<LogRecord> = std::mem::take(&mut *self.late.lock().unwrap());
        if !late.is_empty() {
            self.inner.append(room, &late).await?;
        }
        if fail {
            if self.write_anyway {
                self.inner.append(room, records).await?;
            }
            if self.land_late {
                self.late.lock().unwrap().extend(records.iter().cloned());
            }
            return Err(StoreError::Unavailable {
                store: "test",
                message: "timed out".into(),
            });
        }
        self.inner.append(room, records).await
    }

    async fn read_from(
        &self,
        room: &str,
        from: LogPosition,
        max: usize,
    ) -> StoreResult<Vec<(LogPosition, LogRecord)>> {
        self.inner.read_from(room, from, max).await
    }
}

struct Fixture {
    rooms: ActorRef<RoomSupervisorMsg>,
}

/// History that is down for writes: everything stays in the log.
struct HistoryDown;

#[async_trait]
impl crate::store::History for HistoryDown {
    async fn write(&self, _: &[ChatMessage]) -> StoreResult<()> {
        Err(StoreError::Unavailable {
            store: "test",
            message: "down".into(),
        })
    }
    async fn page(&self, _: &str, _: HistoryQuery, _: usize) -> StoreResult<Vec<ChatMessage>> {
        Ok(Vec::new())
    }
    async fn views(&self, _: &str, _: &[u64]) -> StoreResult<Vec<crate::life::MessageView>> {
        Ok(Vec::new())
    }
    async fn pinned(&self, _: &str) -> StoreResult<Vec<u64>> {
        Ok(Vec::new())
    }
    async fn replies(&self, _: &str, _: u64, _: u64, _: usize) -> StoreResult<Vec<u64>> {
        Ok(Vec::new())
    }
    async fn unread(&self, _: &str, _: &str, _: u64) -> StoreResult<u64> {
        Ok(0)
    }
}

async fn fixture(log: Arc<dyn MessageLog>) -> Fixture {
    fixture_with(log, false).await
}

async fn fixture_with(log: Arc<dyn MessageLog>, history_down: bool) -> Fixture {
    fixture_full(log, history_down, None).await
}

async fn fixture_full(
    log: Arc<dyn MessageLog>,
    history_down: bool,
    leases: Option<Arc<dyn LeaseStore>>,
) -> Fixture {
    let mut stores = Stores::in_memory();
    stores.log = log;
    stores.leases = leases;
    if history_down {
        stores.history = Arc::new(HistoryDown);
    }
    stores.directory.create_user("ann", "x").await.unwrap();
    let args = crate::presence::PresenceArgs {
        node: "test".into(),
        stores: stores.clone(),
        ttl: Duration::from_secs(15),
    };
    let (presence, _) = Actor::spawn(None, Presence, args).await.unwrap();
    let ctx = RoomContext {
        node: "test".into(),
        stores: stores.clone(),
        limits: Limits::default(),
        tuning: RoomTuning::default(),
        admins: Arc::new(Vec::new()),
        presence,
        router: None,
    };
    let (rooms, _) = Actor::spawn(None, RoomSupervisor, ctx).await.unwrap();
    Fixture { rooms }
}

impl Fixture {
    async fn room(&self, name: &str) -> ActorRef<RoomMsg> {
        let create = CreateSpec {
            private: false,
            creator: "ann".into(),
            members: vec!["ann".into()],
        };
        let name = name.to_string();
        crate::ask(&self.rooms, |reply| RoomSupervisorMsg::Get {
            name,
            create: Some(create),
            reply,
        })
        .await
        .unwrap()
        .unwrap()
    }
}

async fn next_frame(rx: &mut OutboxReceiver) -> Value {
    let frame = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a frame in time")
        .expect("the outbox is open");
    match frame {
        Outbound::Text(t) => serde_json::from_str(&t).unwrap(),
        Outbound::Batch(frames) => {
            panic!("a message batch where an answer was expected: {frames:?}")
        }
        Outbound::Close(code, _) => panic!("closed {code}"),
    }
}

/// The room's newest 50 messages, as ann sees them.
async fn history(room: &ActorRef<RoomMsg>) -> Vec<ChatMessage> {
    crate::ask(room, |reply| RoomMsg::History {
        user: "ann".into(),
        query: HistoryQuery::default(),
        limit: 50,
        reply,
    })
    .await
    .unwrap()
    .unwrap()
}

fn send(outbox: &Outbox, client_id: &str) -> RoomMsg {
    RoomMsg::Send(SendRequest {
        user: "ann".into(),
        client_id: client_id.into(),
        body: format!("body of {client_id}"),
        reply_to: None,
        attachments: Vec::new(),
        event: None,
        session_id: 1,
        outbox: outbox.clone(),
    })
}

#[tokio::test]
async fn an_append_that_failed_after_writing_is_acked_once_not_duplicated() {
    let log = Arc::new(FlakyLog::new(1, true, false));
    let f = fixture(log.clone()).await;
    let room = f.room("lobby").await;
    let (outbox, mut rx) = Outbox::channel(16, usize::MAX);
    room.cast(send(&outbox, "a")).unwrap();
    let ack = next_frame(&mut rx).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["seq"], 1);
    room.cast(send(&outbox, "b")).unwrap();
    let ack = next_frame(&mut rx).await;
    assert_eq!(ack["seq"], 2, "{ack}");
    let records = log.read_from("lobby", 0, 100).await.unwrap();
    let seqs: Vec<u64> = records.iter().map(|(_, r)| r.seq).collect();
    assert_eq!(seqs, [1, 2]);
}

#[tokio::test]
async fn an_append_that_wrote_nothing_answers_unavailable_and_a_retry_succeeds() {
    let log = Arc::new(FlakyLog::new(1, false, false));
    let f = fixture(log.clone()).await;
    let room = f.room("lobby").await;
    let (outbox, mut rx) = Outbox::channel(16, usize::MAX);
    room.cast(send(&outbox, "a")).unwrap();
    let e = next_frame(&mut rx).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["ref"].as_str()),
        (Some("error"), Some("unavailable"), Some("a"))
    );
    room.cast(send(&outbox, "a")).unwrap();
    let ack = next_frame(&mut rx).await;
    assert_eq!(
        (ack["type"].as_str(), ack["seq"].as_u64()),
        (Some("ack"), Some(1))
    );
    assert_eq!(log.read_from("lobby", 0, 100).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_restarted_room_restores_seq_dedupe_and_history_from_the_stores() {
    let log: Arc<dyn MessageLog> = Arc::new(MemoryLog::default());
    let f = fixture(log).await;
    let room = f.room("lobby").await;
    let (outbox, mut rx) = Outbox::channel(64, usize::MAX);
    for i in 0..10 {
        room.cast(send(&outbox, &format!("c{i}"))).unwrap();
    }
    for _ in 0..10 {
        assert_eq!(next_frame(&mut rx).await["type"], "ack");
    }
    // Stop it without a goodbye, as a crash would.
    room.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let room = f.room("lobby").await;
    room.cast(send(&outbox, "c3")).unwrap();
    let ack = next_frame(&mut rx).await;
    assert_eq!(
        ack["seq"], 4,
        "a retry after the restart answers the first ack: {ack}"
    );
    room.cast(send(&outbox, "c10")).unwrap();
    assert_eq!(next_frame(&mut rx).await["seq"], 11);
    let page = history(&room).await;
    assert_eq!(
        page.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=11).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_late_landing_append_never_replaces_an_acked_message_on_replay() {
    let log = Arc::new(FlakyLog::new(1, false, true));
    // With history down, a restart has only the log to go by.
    let f = fixture_with(log.clone(), true).await;
    let room = f.room("lobby").await;
    let (outbox, mut rx) = Outbox::channel(16, usize::MAX);
    room.cast(send(&outbox, "lost")).unwrap();
    assert_eq!(next_frame(&mut rx).await["code"], "unavailable");
    // The failed record lands now, just before this one: both claim seq 1.
    room.cast(send(&outbox, "kept")).unwrap();
    let ack = next_frame(&mut rx).await;
    assert_eq!(
        (ack["client_id"].as_str(), ack["seq"].as_u64()),
        (Some("kept"), Some(1))
    );
    let seqs: Vec<u64> = log
        .read_from("lobby", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|(_, r)| r.seq)
        .collect();
    assert_eq!(seqs, [1, 1]);
    // A crash before history was written: the replay must pick the acked one.
    room.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let room = f.room("lobby").await;
    let page = history(&room).await;
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].client_id, "kept");
}

#[tokio::test]
async fn a_room_whose_lease_another_node_took_acks_nothing_more_and_stops() {
    let leases = Arc::new(MemoryLeases::default());
    let log: Arc<dyn MessageLog> = Arc::new(MemoryLog::default());
    let f = fixture_full(log.clone(), false, Some(leases.clone())).await;
    let room = f.room("lobby").await;
    let (outbox, mut rx) = Outbox::channel(16, usize::MAX);
    room.cast(send(&outbox, "a")).unwrap();
    let ack = next_frame(&mut rx).await;
    assert_eq!(
        (ack["type"].as_str(), ack["seq"].as_u64()),
        (Some("ack"), Some(1))
    );
    // Another node takes the room over (a partition: this one did not notice).
    let theirs = leases.acquire("lobby", "other", 1).await.unwrap();
    room.cast(send(&outbox, "b")).unwrap();
    let answer = next_frame(&mut rx).await;
    assert_eq!(answer["type"], "error", "fenced room acked: {answer}");
    assert_eq!(answer["code"], "unavailable");
    assert_eq!(answer["ref"], "b");
    for _ in 0..100 {
        if room.get_status() == ractor::ActorStatus::Stopped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(room.get_status(), ractor::ActorStatus::Stopped);
    // The fenced room never wrote a checkpoint or a lease of the new epoch.
    assert!(leases.holds("lobby", "other", theirs).await.unwrap());
}

/// Holds the next append until released: what queues behind it forms one batch.
#[derive(Default)]
struct GateLog {
    inner: MemoryLog,
    hold: std::sync::atomic::AtomicBool,
    gate: tokio::sync::Notify,
}

#[async_trait]
impl MessageLog for GateLog {
    async fn append(&self, room: &str, records: &[LogRecord]) -> StoreResult<Vec<LogPosition>> {
        if self.hold.swap(false, Ordering::SeqCst) {
            self.gate.notified().await;
        }
        self.inner.append(room, records).await
    }

    async fn read_from(
        &self,
        room: &str,
        from: LogPosition,
        max: usize,
    ) -> StoreResult<Vec<(LogPosition, LogRecord)>> {
        self.inner.read_from(room, from, max).await
    }
}

fn event(outbox: &Outbox, client_id: &str, event: MessageEvent) -> RoomMsg {
    RoomMsg::Send(SendRequest {
        user: "ann".into(),
        client_id: client_id.into(),
        body: String::new(),
        reply_to: None,
        attachments: Vec::new(),
        event: Some(event),
        session_id: 1,
        outbox: outbox.clone(),
    })
}

#[tokio::test]
async fn events_of_one_batch_are_checked_in_order_against_each_other() {
    let log = Arc::new(GateLog::default());
    let f = fixture(log.clone()).await;
    let room = f.room("lobby").await;
    let (outbox, mut rx) = Outbox::channel(64, usize::MAX);
    room.cast(send(&outbox, "a")).unwrap();
    assert_eq!(next_frame(&mut rx).await["seq"], 1);
    // "b" holds the log; two deletes and an edit of message 1 queue behind it.
    log.hold.store(true, Ordering::SeqCst);
    room.cast(send(&outbox, "b")).unwrap();
    room.cast(event(&outbox, "d1", MessageEvent::Delete { target: 1 }))
        .unwrap();
    room.cast(event(&outbox, "d2", MessageEvent::Delete { target: 1 }))
        .unwrap();
    let edit = MessageEvent::Edit {
        target: 1,
        body: "too late".into(),
    };
    room.cast(event(&outbox, "e1", edit)).unwrap();
    // Once it answers, the room has queued all three.
    crate::ask(&room, |reply| RoomMsg::Info {
        user: "ann".into(),
        reply,
    })
    .await
    .unwrap()
    .unwrap();
    log.gate.notify_one();
    let mut answers = BTreeMap::new();
    while answers.len() < 4 {
        let f = next_frame(&mut rx).await;
        let id = f["client_id"]
            .as_str()
            .or(f["ref"].as_str())
            .unwrap()
            .to_string();
        answers.insert(id, f);
    }
    assert_eq!(answers["b"]["seq"], 2);
    assert_eq!(answers["d1"]["type"], "ack", "{}", answers["d1"]);
    assert_eq!(answers["d1"]["seq"], 3);
    for refused in ["d2", "e1"] {
        let f = &answers[refused];
        assert_eq!(
            (f["type"].as_str(), f["code"].as_str()),
            (Some("error"), Some("not_found")),
            "{f}"
        );
    }
    // Nothing refused reached the log: seqs stay gapless.
    let seqs: Vec<u64> = log
        .read_from("lobby", 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|(_, r)| r.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
}

/// A log whose reads of room `slow` wait until the test opens the gate: a
/// restore that takes as long as the test wants.
struct GatedLog {
    inner: MemoryLog,
    entered: tokio::sync::Notify,
    gate: tokio::sync::Semaphore,
}

#[async_trait]
impl MessageLog for GatedLog {
    async fn append(&self, room: &str, records: &[LogRecord]) -> StoreResult<Vec<LogPosition>> {
        self.inner.append(room, records).await
    }

    async fn read_from(
        &self,
        room: &str,
        from: LogPosition,
        max: usize,
    ) -> StoreResult<Vec<(LogPosition, LogRecord)>> {
        if room == "slow" {
            self.entered.notify_one();
            let _pass = self.gate.acquire().await.expect("the gate stays open");
        }
        self.inner.read_from(room, from, max).await
    }
}

#[tokio::test]
async fn a_slow_restore_holds_up_its_own_callers_only() {
    let log = Arc::new(GatedLog {
        inner: MemoryLog::default(),
        entered: tokio::sync::Notify::new(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let f = Arc::new(fixture(log.clone()).await);
    let first = tokio::spawn({
        let f = f.clone();
        async move { f.room("slow").await }
    });
    log.entered.notified().await;
    // A second caller of the restoring room waits with the first.
    let second = tokio::spawn({
        let f = f.clone();
        async move { f.room("slow").await }
    });
    // Every other room starts meanwhile (the supervisor is not inside the
    // slow restore): this used to wait for it, and time out.
    let fast = f.room("fast").await;
    assert_ne!(fast.get_status(), ractor::ActorStatus::Stopped);
    let count = crate::ask(&f.rooms, |reply| RoomSupervisorMsg::Count { reply })
        .await
        .unwrap();
    assert_eq!(count, 1, "only `fast` runs; `slow` is still restoring");
    assert!(!first.is_finished() && !second.is_finished());

    log.gate.add_permits(1_000);
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(
        first.get_id(),
        second.get_id(),
        "both callers got the one room that restored"
    );
    let count = crate::ask(&f.rooms, |reply| RoomSupervisorMsg::Count { reply })
        .await
        .unwrap();
    assert_eq!(count, 2);
}

#[tokio::test]
async fn a_room_that_does_not_exist_is_created_for_the_caller_that_asked_to() {
    let f = fixture(Arc::new(MemoryLog::default())).await;
    // Without `create`: not found, and nothing starts.
    let missing = crate::ask(&f.rooms, |reply| RoomSupervisorMsg::Get {
        name: "later".into(),
        create: None,
        reply,
    })
    .await
    .unwrap();
    assert_eq!(
        missing.expect_err("no such room").code,
        crate::frames::ErrorCode::NotFound
    );
    let room = f.room("later").await;
    assert_ne!(room.get_status(), ractor::ActorStatus::Stopped);
}
