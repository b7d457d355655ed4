use sea_orm::entity::prelude::*;

/// A friendship or a pending friend request between two users, one row per
/// pair: `user_low < user_high`; `accepted_at` is null while `requested_by`
/// waits for the other one.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "friendships")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_low: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_high: String,
    pub requested_by: String,
    pub created_at: i64,
    pub accepted_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
