use sea_orm::entity::prelude::*;

/// A user's membership of a room, with their read receipt.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "memberships")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub room: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub username: String,
    pub read_seq: i64,
    pub joined_at: i64,
    /// `owner`, `admin` or `member`.
    pub role: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
