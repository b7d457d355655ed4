//! Friends and blocks on SQL (the `friendships` and `blocks` tables; see
//! `FriendStore` in the actors for the rules).
//!
//! A request is an insert that does nothing when the pair's row exists; the
//! answer to a pending request is an update that only matches a row the
//! *other* user asked for. So two users asking each other at the same time
//! end up friends, whichever insert wins, on SQLite and on Postgres alike.

use async_trait::async_trait;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter,
    QueryOrder, TransactionTrait,
};
use troupe_actors::store::friends::{pair, FriendLists, FriendStore, RequestOutcome};
use troupe_actors::store::StoreResult;
use troupe_entity::{block, friendship};

use super::sql::{unavailable, SqlStore};

/// The row of the pair, if any.
async fn pair_row(
    db: &impl ConnectionTrait,
    a: &str,
    b: &str,
) -> Result<Option<friendship::Model>, DbErr> {
    let (low, high) = pair(a, b);
    friendship::Entity::find_by_id((low.to_string(), high.to_string()))
        .one(db)
        .await
}

async fn blocked_between(db: &impl ConnectionTrait, a: &str, b: &str) -> Result<bool, DbErr> {
    let either = Condition::any()
        .add(
            Condition::all()
                .add(block::Column::Blocker.eq(a))
                .add(block::Column::Blocked.eq(b)),
        )
        .add(
            Condition::all()
                .add(block::Column::Blocker.eq(b))
                .add(block::Column::Blocked.eq(a)),
        );
    Ok(block::Entity::find()
        .filter(either)
        .one(db)
        .await?
        .is_some())
}

async fn delete_pair(db: &impl ConnectionTrait, a: &str, b: &str) -> Result<bool, DbErr> {
    let (low, high) = pair(a, b);
    let deleted = friendship::Entity::delete_many()
        .filter(friendship::Column::UserLow.eq(low))
        .filter(friendship::Column::UserHigh.eq(high))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected > 0)
}

#[async_trait]
impl FriendStore for SqlStore {
    async fn request(&self, from: &str, to: &str, now: i64) -> StoreResult<RequestOutcome> {
        let _turn = self.write_turn().await;
        let txn = self.db().begin().await.map_err(unavailable)?;
        if blocked_between(&txn, from, to).await.map_err(unavailable)? {
            return Ok(RequestOutcome::Blocked);
        }
        let (low, high) = pair(from, to);
        let inserted = friendship::Entity::insert(friendship::ActiveModel {
            user_low: Set(low.to_string()),
            user_high: Set(high.to_string()),
            requested_by: Set(from.to_string()),
            created_at: Set(now),
            accepted_at: Set(None),
        })
        .on_conflict(
            OnConflict::columns([friendship::Column::UserLow, friendship::Column::UserHigh])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await;
        let outcome = match inserted {
            Ok(n) if n > 0 => RequestOutcome::Requested,
            Ok(_) | Err(DbErr::RecordNotInserted) => {
                // The pair exists: accept the other's request, if that is what it is.
                let accepted = friendship::Entity::update_many()
                    .col_expr(friendship::Column::AcceptedAt, Expr::value(now))
                    .filter(friendship::Column::UserLow.eq(low))
                    .filter(friendship::Column::UserHigh.eq(high))
                    .filter(friendship::Column::AcceptedAt.is_null())
                    .filter(friendship::Column::RequestedBy.ne(from))
                    .exec(&txn)
                    .await
                    .map_err(unavailable)?;
                if accepted.rows_affected > 0 {
                    RequestOutcome::Accepted
                } else {
                    match pair_row(&txn, from, to).await.map_err(unavailable)? {
                        Some(row) if row.accepted_at.is_some() => RequestOutcome::AlreadyFriends,
                        _ => RequestOutcome::AlreadyRequested,
                    }
                }
            }
            Err(e) => return Err(unavailable(e)),
        };
        txn.commit().await.map_err(unavailable)?;
        Ok(outcome)
    }

    async fn remove(&self, a: &str, b: &str) -> StoreResult<bool> {
        let _turn = self.write_turn().await;
        delete_pair(self.db(), a, b).await.map_err(unavailable)
    }

    async fn lists(&self, user: &str) -> StoreResult<FriendLists> {
        let rows = friendship::Entity::find()
            .filter(
                Condition::any()
                    .add(friendship::Column::UserLow.eq(user))
                    .add(friendship::Column::UserHigh.eq(user)),
            )
            .all(self.db())
            .await
            .map_err(unavailable)?;
        let mut lists = FriendLists::default();
        for row in rows {
            let other = if row.user_low == user {
                row.user_high
            } else {
                row.user_low
            };
            let list = match (row.accepted_at.is_some(), row.requested_by == user) {
                (true, _) => &mut lists.friends,
                (false, true) => &mut lists.outgoing,
                (false, false) => &mut lists.incoming,
            };
            list.push(other);
        }
        lists.friends.sort();
        lists.incoming.sort();
        lists.outgoing.sort();
        Ok(lists)
    }

    async fn friends_of(&self, user: &str) -> StoreResult<Vec<String>> {
        Ok(self.lists(user).await?.friends)
    }

    async fn block(&self, blocker: &str, blocked: &str, now: i64) -> StoreResult<bool> {
        let _turn = self.write_turn().await;
        let txn = self.db().begin().await.map_err(unavailable)?;
        delete_pair(&txn, blocker, blocked)
            .await
            .map_err(unavailable)?;
        let inserted = block::Entity::insert(block::ActiveModel {
            blocker: Set(blocker.to_string()),
            blocked: Set(blocked.to_string()),
            created_at: Set(now),
        })
        .on_conflict(
            OnConflict::columns([block::Column::Blocker, block::Column::Blocked])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await;
        let new = match inserted {
            Ok(n) => n > 0,
            Err(DbErr::RecordNotInserted) => false,
            Err(e) => return Err(unavailable(e)),
        };
        txn.commit().await.map_err(unavailable)?;
        Ok(new)
    }

    async fn unblock(&self, blocker: &str, blocked: &str) -> StoreResult<bool> {
        let _turn = self.write_turn().await;
        let deleted = block::Entity::delete_many()
            .filter(block::Column::Blocker.eq(blocker))
            .filter(block::Column::Blocked.eq(blocked))
            .exec(self.db())
            .await
            .map_err(unavailable)?;
        Ok(deleted.rows_affected > 0)
    }

    async fn blocked_by(&self, blocker: &str) -> StoreResult<Vec<String>> {
        let rows = block::Entity::find()
            .filter(block::Column::Blocker.eq(blocker))
            .order_by_asc(block::Column::Blocked)
            .all(self.db())
            .await
            .map_err(unavailable)?;
        Ok(rows.into_iter().map(|r| r.blocked).collect())
    }

    async fn blocked_between(&self, a: &str, b: &str) -> StoreResult<bool> {
        blocked_between(self.db(), a, b).await.map_err(unavailable)
    }
}
