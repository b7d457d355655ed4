//! SQLite takes one writer at a time, and a writer that finds the database
//! locked sleeps in steps of up to 100 ms. So on SQLite every write of the
//! node queues here for one async lock instead, and log appends of all rooms
//! that arrive together share one transaction: one fsync acks them all.

use std::sync::Arc;

use sea_orm::{DatabaseConnection, DbErr, EntityTrait, TransactionTrait};
use tokio::sync::{mpsc, oneshot, Mutex, MutexGuard};
use troupe_entity::log_record;

/// Log rows of one room's batch, and where its positions go.
struct AppendJob {
    rows: Vec<log_record::ActiveModel>,
    reply: oneshot::Sender<Result<Vec<i64>, DbErr>>,
}

/// The write side of a SQLite database.
#[derive(Clone)]
pub struct SqliteWriter {
    lock: Arc<Mutex<()>>,
    appends: mpsc::Sender<AppendJob>,
}

/// Most rows in one INSERT (SQLite allows 32,766 bound variables; 8 a row).
const ROWS_PER_STATEMENT: usize = 2_000;
/// Most log rows committed together.
const ROWS_PER_COMMIT: usize = 8_000;

impl SqliteWriter {
    pub fn start(db: DatabaseConnection) -> SqliteWriter {
        let lock = Arc::new(Mutex::new(()));
        let (appends, jobs) = mpsc::channel(4096);
        tokio::spawn(append_loop(db, lock.clone(), jobs));
        SqliteWriter { lock, appends }
    }

    /// Held by every other write, so none of them meets a locked database.
    pub async fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// Appends log rows; their positions, in row order, once committed.
    pub async fn append(&self, rows: Vec<log_record::ActiveModel>) -> Result<Vec<i64>, DbErr> {
        let (reply, answer) = oneshot::channel();
        self.appends
            .send(AppendJob { rows, reply })
            .await
            .map_err(|_| DbErr::Custom("the SQLite writer stopped".into()))?;
        answer
            .await
            .map_err(|_| DbErr::Custom("the SQLite writer stopped".into()))?
    }
}

async fn append_loop(
    db: DatabaseConnection,
    lock: Arc<Mutex<()>>,
    mut jobs: mpsc::Receiver<AppendJob>,
) {
    while let Some(first) = jobs.recv().await {
        // Everything that queued while the last commit ran goes in this one.
        let mut batch = vec![first];
        let mut rows = batch[0].rows.len();
        while rows < ROWS_PER_COMMIT {
            match jobs.try_recv() {
                Ok(job) => {
                    rows += job.rows.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let _guard = lock.lock().await;
        match commit(&db, &mut batch).await {
            Ok(positions) => {
                for (job, positions) in batch.into_iter().zip(positions) {
                    let _ = job.reply.send(Ok(positions));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(DbErr::Custom(e.to_string())));
                }
            }
        }
    }
}

/// One transaction for the whole batch; each job's positions, sorted.
async fn commit(db: &DatabaseConnection, batch: &mut [AppendJob]) -> Result<Vec<Vec<i64>>, DbErr> {
    let txn = db.begin().await?;
    let mut all = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        let mut positions = Vec::with_capacity(job.rows.len());
        let rows = std::mem::take(&mut job.rows);
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<_> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
            positions.extend(
                log_record::Entity::insert_many(chunk)
                    .exec_with_returning_keys(&txn)
                    .await?,
            );
        }
        positions.sort_unstable();
        all.push(positions);
    }
    txn.commit().await?;
    Ok(all)
}

/// Whether `db` is SQLite.
pub fn is_sqlite(db: &DatabaseConnection) -> bool {
    db.get_database_backend() == sea_orm::DbBackend::Sqlite
}
