//! Criterion micro-benchmarks of troupe's message path, with troupe's own
//! code (no copies):
//!
//! - `frames`: decoding a client `send` frame ([`ClientFrame::decode`]) and
//!   encoding a server `message` frame ([`ServerFrame::encode`]), which a room
//!   does once per message, whatever its number of subscribers;
//! - `outbox`: one encoded frame pushed into 1,000 local outboxes and drained:
//!   the per-subscriber part of a fan-out, without the room;
//! - `room_fanout`: a real Room actor (in-memory stores) with 1,000 subscribed
//!   local sessions: one `send` (or a burst of 100) until the sender has its
//!   acks and every subscriber's outbox has every message;
//! - `log_append`: a batch of records appended to the embedded default's log,
//!   SQLite through troupe's own `SqlStore` and its group-committing writer
//!   (compiled here from the server's sources, `src/db.rs` and
//!   `src/stores/{sql,sqlite_writer}.rs`, with the server's connection
//!   settings), with `synchronous = FULL` (the default: one fsync per commit)
//!   and `NORMAL`; and the in-memory log of the unit tests for scale.
//!
//! `cargo bench -p troupe-bench --bench hot_paths` measures;
//! `... -- --test` runs each benchmark once (what `benches/smoke.sh` does).
//! Figures and what they mean: `benches/RESULTS.md`, "Micro-benchmarks".

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::runtime::Runtime;
use troupe_actors::frames::{ChatMessage, ClientFrame, ServerFrame};
use troupe_actors::limits::Limits;
use troupe_actors::outbox::{Outbound, Outbox, OutboxReceiver};
use troupe_actors::presence::{Presence, PresenceArgs};
use troupe_actors::room::supervisor::{RoomSupervisor, RoomSupervisorMsg};
use troupe_actors::room::{CreateSpec, RoomContext, RoomMsg, RoomTuning, SendRequest};
use troupe_actors::session::{SessionActor, SessionHandle, SessionMsg};
use troupe_actors::store::memory::MemoryLog;
use troupe_actors::store::{LogRecord, MessageLog, Stores};

// The server's own SQLite code. The `troupe` package is a binary (no library
// to depend on), so its store modules are compiled into this bench as they
// are: they only use sea-orm, troupe-entity, troupe-migration and
// troupe-actors. If one of them starts using more of the binary, give the
// binary a library target and depend on it instead.
#[allow(dead_code)]
#[path = "../../src/db.rs"]
mod db;
#[allow(dead_code)]
#[path = "../../src/stores/sql.rs"]
mod sql;
#[allow(dead_code)]
#[path = "../../src/stores/sqlite_writer.rs"]
mod sqlite_writer;

// sql.rs indexes history for search in the same transaction. (Its tests
// compile here but run with the server's.)
#[allow(dead_code, unused_imports)]
#[path = "../../src/stores/search.rs"]
mod search;
// ... and applies room events to their targets (messages that live).
#[path = "../../src/stores/message_life.rs"]
mod message_life;

/// A message body as the load generator writes it (`room:publisher:n:nanos`).
const BODY: &str = "0:0:123456:98765432101";

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frames");
    for (name, body) in [("small", BODY.to_string()), ("1KiB", "x".repeat(1024))] {
        let text = format!(
            r#"{{"type":"send","room":"bench-room","body":"{body}","client_id":"c123456"}}"#
        );
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(format!("decode_send/{name}"), |b| {
            b.iter(|| ClientFrame::decode(black_box(&text)).expect("a send frame"))
        });
        let frame = ServerFrame::Message(ChatMessage {
            room: "bench-room".into(),
            seq: 123_456,
            from: "user-0042".into(),
            body: body.clone(),
            ts: 1_790_000_000_000,
            client_id: "c123456".into(),
            ..Default::default()
        });
        g.throughput(Throughput::Bytes(frame.encode().len() as u64));
        g.bench_function(format!("encode_message/{name}"), |b| {
            b.iter(|| black_box(&frame).encode())
        });
    }
    g.finish();
}

const SUBSCRIBERS: usize = 1_000;

/// Counts the frames of one item of an outbox.
fn frames_in(item: Outbound) -> usize {
    match item {
        Outbound::Text(_) => 1,
        Outbound::Batch(frames) => frames.len(),
        Outbound::Close(code, reason) => panic!("outbox closed: {code} {reason}"),
    }
}

/// Waits until `rx` has had `n` frames.
async fn drain(rx: &mut OutboxReceiver, n: usize) {
    let mut got = 0;
    while got < n {
        let item = rx.recv().await.expect("the outbox is open");
        got += frames_in(item);
    }
}

fn outbox(c: &mut Criterion) {
    let frame = ServerFrame::Message(ChatMessage {
        room: "bench-room".into(),
        seq: 1,
        from: "user-0042".into(),
        body: BODY.into(),
        ts: 1_790_000_000_000,
        client_id: "c1".into(),
        ..Default::default()
    })
    .encode();
    let (outboxes, mut receivers): (Vec<Outbox>, Vec<OutboxReceiver>) = (0..SUBSCRIBERS)
        .map(|_| Outbox::channel(Limits::default().outbound_queue, usize::MAX))
        .unzip();
    let mut g = c.benchmark_group("outbox");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    g.bench_function("push_1000_and_drain", |b| {
        b.iter(|| {
            for o in &outboxes {
                assert!(o.push(frame.clone()));
            }
            for rx in &mut receivers {
                black_box(rx.try_recv().expect("a frame"));
            }
        })
    });
    g.finish();
}

/// A session actor that ignores everything: the rooms only tell sessions
/// about presence and moves, which this benchmark does not exercise.
struct NullSession;

impl Actor for NullSession {
    type Msg = SessionMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// A room with `SUBSCRIBERS` live local sessions, as `actors/src/room/tests.rs` starts one.
struct FanoutRoom {
    room: ActorRef<RoomMsg>,
    sender: Outbox,
    acks: OutboxReceiver,
    receivers: Vec<OutboxReceiver>,
    next_id: u64,
}

async fn fanout_room() -> FanoutRoom {
    let stores = Stores::in_memory();
    stores
        .directory
        .create_user("ann", "x")
        .await
        .expect("a user");
    let (presence, _) = Actor::spawn(
        None,
        Presence,
        PresenceArgs {
            node: "bench".into(),
            stores: stores.clone(),
            ttl: Duration::from_secs(15),
        },
    )
    .await
    .expect("presence starts");
    let ctx = RoomContext {
        node: "bench".into(),
        stores,
        limits: Limits::default(),
        tuning: RoomTuning::default(),
        admins: Arc::new(Vec::new()),
        presence,
        router: None,
    };
    let (rooms, _) = Actor::spawn(None, RoomSupervisor, ctx)
        .await
        .expect("rooms start");
    let create = CreateSpec {
        private: false,
        creator: "ann".into(),
        members: vec!["ann".into()],
    };
    let room = troupe_actors::ask(&rooms, |reply| RoomSupervisorMsg::Get {
        name: "bench-room".into(),
        create: Some(create),
        reply,
    })
    .await
    .expect("the supervisor answers")
    .expect("the room starts");
    let (session, _) = Actor::spawn(None, NullSession, ())
        .await
        .expect("a session actor");
    let queue = Limits::default().outbound_queue;
    let mut receivers = Vec::with_capacity(SUBSCRIBERS);
    for id in 0..SUBSCRIBERS as u64 {
        let (outbox, rx) = Outbox::channel(queue, usize::MAX);
        let handle = SessionHandle {
            id: 1_000 + id,
            user: "ann".into(),
            actor: SessionActor::Local(session.clone()),
            outbox,
        };
        room.cast(RoomMsg::Subscribe {
            session: handle,
            pending: false,
        })
        .expect("the room is up");
        receivers.push(rx);
    }
    // The room handles its messages in order: once it answers, all are subscribed.
    let info = troupe_actors::ask(&room, |reply| RoomMsg::Info {
        user: "ann".into(),
        reply,
    })
    .await
    .expect("the room answers")
    .expect("ann may read");
    assert_eq!(info.name, "bench-room");
    let (sender, acks) = Outbox::channel(queue, usize::MAX);
    FanoutRoom {
        room,
        sender,
        acks,
        receivers,
        next_id: 0,
    }
}

impl FanoutRoom {
    /// Sends `n` messages at once; returns when every ack and every delivery arrived.
    async fn round(&mut self, n: usize) {
        for _ in 0..n {
            self.next_id += 1;
            self.room
                .cast(RoomMsg::Send(SendRequest {
                    user: "ann".into(),
                    client_id: format!("c{}", self.next_id),
                    body: BODY.into(),
                    reply_to: None,
                    attachments: Vec::new(),
                    event: None,
                    session_id: 1,
                    outbox: self.sender.clone(),
                }))
                .expect("the room is up");
        }
        drain(&mut self.acks, n).await;
        for rx in &mut self.receivers {
            drain(rx, n).await;
        }
    }
}

fn room_fanout(c: &mut Criterion) {
    // One thread, as the server has under `taskset -c 0` (tokio sizes its
    // pool to the CPUs it may use); the room, its append task and this
    // benchmark's receivers share it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut room = rt.block_on(fanout_room());
    let mut g = c.benchmark_group("room_fanout_1000");
    for burst in [1usize, 100] {
        g.throughput(Throughput::Elements((burst * SUBSCRIBERS) as u64));
        g.bench_function(format!("sends_{burst}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        room.round(burst).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

fn records(n: usize, first_seq: u64) -> Vec<LogRecord> {
    (0..n as u64)
        .map(|i| LogRecord {
            room: "bench-room".into(),
            seq: first_seq + i,
            epoch: 1,
            sender: "user-0042".into(),
            client_id: format!("c{}", first_seq + i),
            body: BODY.into(),
            ts: 1_790_000_000_000,
            reply_to: None,
            attachments: Vec::new(),
            event: None,
        })
        .collect()
}

/// troupe's SQLite store on a fresh file in a temporary directory (the
/// server's connection settings and schema).
fn sqlite_log(
    rt: &Runtime,
    durability: db::SqliteDurability,
) -> (tempfile::TempDir, Arc<dyn MessageLog>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("troupe.db").display()
    );
    let log = rt.block_on(async {
        let conn = db::connect(&url, durability).await.expect("SQLite opens");
        db::migrate(&conn, &url).await.expect("the schema");
        Arc::new(sql::SqlStore::new(conn)) as Arc<dyn MessageLog>
    });
    (dir, log)
}

fn log_append(c: &mut Criterion) {
    // The server's runtime is multi-threaded; sqlx runs each SQLite
    // connection on a thread of its own.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut g = c.benchmark_group("log_append");
    let mut seq = 1u64;
    for (name, durability) in [
        ("sqlite_full", db::SqliteDurability::Full),
        ("sqlite_normal", db::SqliteDurability::Normal),
    ] {
        let (_dir, log) = sqlite_log(&rt, durability);
        for batch in [1usize, 64, 512] {
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_function(format!("{name}/{batch}"), |b| {
                b.iter_batched(
                    || {
                        seq += batch as u64;
                        records(batch, seq - batch as u64)
                    },
                    |recs| {
                        let positions = rt
                            .block_on(log.append("bench-room", &recs))
                            .expect("appended");
                        (recs, positions)
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        // Eight rooms appending 64 records each at the same moment: the
        // writer commits them together (one transaction, one fsync).
        g.throughput(Throughput::Elements(8 * 64));
        g.bench_function(format!("{name}/8_rooms_x_64"), |b| {
            b.iter_batched(
                || {
                    (0..8)
                        .map(|r| {
                            seq += 64;
                            let mut recs = records(64, seq - 64);
                            for rec in &mut recs {
                                rec.room = format!("bench-room-{r}");
                            }
                            recs
                        })
                        .collect::<Vec<_>>()
                },
                |rooms| {
                    rt.block_on(async {
                        let appends = rooms.iter().map(|recs| {
                            let log = log.clone();
                            async move { log.append(&recs[0].room, recs).await }
                        });
                        for result in futures_util::future::join_all(appends).await {
                            result.expect("appended");
                        }
                    });
                    rooms
                },
                BatchSize::SmallInput,
            )
        });
    }
    // The unit tests' in-memory log, for scale (a fresh one per batch, so it
    // does not grow without bound).
    for batch in [64usize, 512] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("memory/{batch}"), |b| {
            b.iter_batched(
                || (MemoryLog::default(), records(batch, 1)),
                |(log, recs)| {
                    let positions = rt
                        .block_on(log.append("bench-room", &recs))
                        .expect("appended");
                    (log, recs, positions)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = hot_paths;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = frames, outbox, room_fanout, log_append
}
criterion_main!(hot_paths);
