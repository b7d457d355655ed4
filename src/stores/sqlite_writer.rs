//! SQLite takes one writer at a time, and a writer that finds the database
//! locked sleeps in steps of up to 100 ms. So on SQLite every write of the
//! node queues here for one async lock instead, and the hot writes (log
//! appends, history, checkpoints) of all rooms that arrive together share one
//! transaction: one fsync covers them all.

use std::sync::Arc;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};
use tokio::sync::{mpsc, oneshot, Mutex, MutexGuard};
use troupe_entity::{checkpoint, log_record, message};

use super::sql::{insert_history, insert_log, upsert_checkpoint};

/// A write of the message path, and where its answer goes.
enum Job {
    /// One room's log batch; answers its positions in row order.
    Append {
        rows: Vec<log_record::ActiveModel>,
        reply: oneshot::Sender<Result<Vec<i64>, DbErr>>,
    },
    /// History rows, idempotent on (room, seq).
    History {
        rows: Vec<message::ActiveModel>,
        reply: oneshot::Sender<Result<Vec<i64>, DbErr>>,
    },
    Checkpoint {
        row: checkpoint::ActiveModel,
        reply: oneshot::Sender<Result<Vec<i64>, DbErr>>,
    },
}

impl Job {
    fn rows(&self) -> usize {
        match self {
            Job::Append { rows, .. } => rows.len(),
            Job::History { rows, .. } => rows.len(),
            Job::Checkpoint { .. } => 1,
        }
    }

    fn reply(self, answer: Result<Vec<i64>, DbErr>) {
        let (Job::Append { reply, .. }
        | Job::History { reply, .. }
        | Job::Checkpoint { reply, .. }) = self;
        let _ = reply.send(answer);
    }
}

/// The write side of a SQLite database.
#[derive(Clone)]
pub struct SqliteWriter {
    lock: Arc<Mutex<()>>,
    jobs: mpsc::Sender<Job>,
}

/// Most log rows committed together.
const ROWS_PER_COMMIT: usize = 8_000;

impl SqliteWriter {
    pub fn start(db: DatabaseConnection) -> SqliteWriter {
        let lock = Arc::new(Mutex::new(()));
        let (jobs, queue) = mpsc::channel(4096);
        tokio::spawn(checkpoint_wal(db.clone()));
        tokio::spawn(write_loop(db, lock.clone(), queue));
        SqliteWriter { lock, jobs }
    }

    /// Held by every other write, so none of them meets a locked database.
    pub async fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    async fn submit(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<Vec<i64>, DbErr>>) -> Job,
    ) -> Result<Vec<i64>, DbErr> {
        let stopped = || DbErr::Custom("the SQLite writer stopped".into());
        let (reply, answer) = oneshot::channel();
        self.jobs.send(job(reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Appends log rows; their positions, in row order, once committed.
    pub async fn append(&self, rows: Vec<log_record::ActiveModel>) -> Result<Vec<i64>, DbErr> {
        self.submit(|reply| Job::Append { rows, reply }).await
    }

    /// Writes history rows (existing (room, seq) rows stay as they are).
    pub async fn history(&self, rows: Vec<message::ActiveModel>) -> Result<(), DbErr> {
        self.submit(|reply| Job::History { rows, reply })
            .await
            .map(|_| ())
    }

    /// Saves a room checkpoint.
    pub async fn checkpoint(&self, row: checkpoint::ActiveModel) -> Result<(), DbErr> {
        self.submit(|reply| Job::Checkpoint { row, reply })
            .await
            .map(|_| ())
    }
}

async fn write_loop(db: DatabaseConnection, lock: Arc<Mutex<()>>, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.recv().await {
        // Everything that queued while the last commit ran goes in this one.
        let mut rows = first.rows();
        let mut batch = vec![first];
        while rows < ROWS_PER_COMMIT {
            match queue.try_recv() {
                Ok(job) => {
                    rows += job.rows();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let _guard = lock.lock().await;
        match commit(&db, &mut batch).await {
            Ok(answers) => {
                for (job, answer) in batch.into_iter().zip(answers) {
                    job.reply(Ok(answer));
                }
            }
            Err(e) => {
                for job in batch {
                    job.reply(Err(DbErr::Custom(e.to_string())));
                }
            }
        }
    }
}

/// One transaction for the whole batch; each job's answer (log positions).
async fn commit(db: &DatabaseConnection, batch: &mut [Job]) -> Result<Vec<Vec<i64>>, DbErr> {
    let txn = db.begin().await?;
    let mut answers = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        let answer = match job {
            Job::Append { rows, .. } => insert_log(&txn, std::mem::take(rows)).await?,
            Job::History { rows, .. } => insert_history(&txn, std::mem::take(rows))
                .await
                .map(|()| Vec::new())?,
            Job::Checkpoint { row, .. } => upsert_checkpoint(&txn, row.clone())
                .await
                .map(|()| Vec::new())?,
        };
        answers.push(answer);
    }
    txn.commit().await?;
    Ok(answers)
}

/// Copies the write-ahead log into the database file now and then, beside the
/// writer rather than inside one of its commits (PASSIVE: it never blocks it).
async fn checkpoint_wal(db: DatabaseConnection) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        every.tick().await;
        if let Err(e) = db
            .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
            .await
        {
            tracing::debug!(error = %e, "WAL checkpoint");
        }
    }
}

/// Whether `db` is SQLite.
pub fn is_sqlite(db: &DatabaseConnection) -> bool {
    db.get_database_backend() == sea_orm::DbBackend::Sqlite
}
