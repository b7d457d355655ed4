//! The outbox of offline notifications on SQL (the `notifications` table;
//! see `crate::notifications` for who is notified and the delivery worker).
//!
//! Every state change is one conditional statement, so the delivery workers
//! of several nodes can share the table without a lock service: an insert
//! that does nothing when (user, room, seq) exists; a claim that only
//! matches a row nobody holds (or whose claim ran out); a delivery or retry
//! mark that only matches the claimer's own row.

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use troupe_actors::store::StoreResult;
use troupe_entity::notification;

use super::sql::{unavailable, SqlStore};

/// One notification to write to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub user: String,
    pub room: String,
    pub seq: u64,
    /// The JSON body POSTed to the webhook.
    pub body: String,
}

/// A notification a worker has claimed and must deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub user: String,
    pub room: String,
    pub seq: u64,
    pub body: String,
    /// Attempts so far, this one included.
    pub attempts: u32,
}

fn key(user: &str, room: &str, seq: u64) -> Condition {
    Condition::all()
        .add(notification::Column::User.eq(user))
        .add(notification::Column::Room.eq(room))
        .add(notification::Column::Seq.eq(seq as i64))
}

/// Nobody holds it, or the holder's claim ran out.
fn unclaimed(now: i64) -> Condition {
    Condition::any()
        .add(notification::Column::ClaimedUntil.is_null())
        .add(notification::Column::ClaimedUntil.lt(now))
}

impl SqlStore {
    /// Adds these notifications; one that exists (same user, room, seq) is
    /// left as it is, delivered or not.
    pub async fn add_notifications(&self, rows: &[NewNotification], now: i64) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let models = rows.iter().map(|n| notification::ActiveModel {
            user: Set(n.user.clone()),
            room: Set(n.room.clone()),
            seq: Set(n.seq as i64),
            body: Set(n.body.clone()),
            created_at: Set(now),
            attempts: Set(0),
            next_attempt_at: Set(now),
            claimed_by: Set(None),
            claimed_until: Set(None),
            delivered_at: Set(None),
            gave_up_at: Set(None),
            last_error: Set(None),
        });
        let _turn = self.write_turn().await;
        let result = notification::Entity::insert_many(models)
            .on_conflict(
                OnConflict::columns([
                    notification::Column::User,
                    notification::Column::Room,
                    notification::Column::Seq,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(self.db())
            .await;
        match result {
            Ok(_) | Err(DbErr::RecordNotInserted) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Claims up to `limit` due notifications for `node` until `until`:
    /// those this call won (another node may win some of the candidates).
    pub async fn claim_notifications(
        &self,
        node: &str,
        now: i64,
        until: i64,
        limit: u64,
    ) -> StoreResult<Vec<Claimed>> {
        let due = notification::Entity::find()
            .filter(notification::Column::DeliveredAt.is_null())
            .filter(notification::Column::GaveUpAt.is_null())
            .filter(notification::Column::NextAttemptAt.lte(now))
            .filter(unclaimed(now))
            .order_by_asc(notification::Column::NextAttemptAt)
            .limit(limit)
            .all(self.db())
            .await
            .map_err(unavailable)?;
        let mut claimed = Vec::new();
        for row in due {
            let won = {
                let _turn = self.write_turn().await;
                notification::Entity::update_many()
                    .col_expr(notification::Column::ClaimedBy, Expr::value(node))
                    .col_expr(notification::Column::ClaimedUntil, Expr::value(until))
                    .col_expr(
                        notification::Column::Attempts,
                        Expr::col(notification::Column::Attempts).add(1),
                    )
                    .filter(key(&row.user, &row.room, row.seq as u64))
                    .filter(notification::Column::DeliveredAt.is_null())
                    .filter(notification::Column::GaveUpAt.is_null())
                    .filter(unclaimed(now))
                    .exec(self.db())
                    .await
                    .map_err(unavailable)?
                    .rows_affected
                    == 1
            };
            if won {
                claimed.push(Claimed {
                    user: row.user,
                    room: row.room,
                    seq: row.seq as u64,
                    body: row.body,
                    attempts: u32::try_from(row.attempts).unwrap_or(0) + 1,
                });
            }
        }
        Ok(claimed)
    }

    /// The webhook took it: done for good.
    pub async fn notification_delivered(
        &self,
        n: &Claimed,
        node: &str,
        now: i64,
    ) -> StoreResult<()> {
        let _turn = self.write_turn().await;
        notification::Entity::update_many()
            .col_expr(notification::Column::DeliveredAt, Expr::value(now))
            .col_expr(notification::Column::ClaimedUntil, Expr::value(None::<i64>))
            .filter(key(&n.user, &n.room, n.seq))
            .filter(notification::Column::ClaimedBy.eq(node))
            .exec(self.db())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The attempt failed: try again at `retry_at`, or never (`None`: the
    /// attempts are used up).
    pub async fn notification_failed(
        &self,
        n: &Claimed,
        node: &str,
        now: i64,
        retry_at: Option<i64>,
        error: &str,
    ) -> StoreResult<()> {
        let mut update = notification::Entity::update_many()
            .col_expr(notification::Column::ClaimedUntil, Expr::value(None::<i64>))
            .col_expr(notification::Column::LastError, Expr::value(error));
        update = match retry_at {
            Some(at) => update.col_expr(notification::Column::NextAttemptAt, Expr::value(at)),
            None => update.col_expr(notification::Column::GaveUpAt, Expr::value(now)),
        };
        let _turn = self.write_turn().await;
        update
            .filter(key(&n.user, &n.room, n.seq))
            .filter(notification::Column::ClaimedBy.eq(node))
            .filter(notification::Column::DeliveredAt.is_null())
            .exec(self.db())
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
