use sea_orm::entity::prelude::*;

/// Message history, written behind the log; one row per (room, seq): a
/// message with its current state, or a room event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub room: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub sender: String,
    pub client_id: String,
    #[sea_orm(column_type = "Text")]
    pub body: String,
    pub ts: i64,
    /// `message`, or the kind of room event (`edit`, `delete`, ...).
    pub kind: String,
    /// A room event's JSON (`MessageEvent`); None for a message.
    #[sea_orm(column_type = "Text", nullable)]
    pub event: Option<String>,
    // The message's current state (see `troupe_actors::life`).
    pub version: i32,
    pub edited_at: Option<i64>,
    pub deleted: bool,
    pub reply_to: Option<i64>,
    pub reply_count: i64,
    pub pinned: bool,
    /// JSON array of attachment ids.
    #[sea_orm(column_type = "Text")]
    pub attachments: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
