use sea_orm::entity::prelude::*;

/// The embedded default's message log: the database stands in for Kafka.
/// `position` orders records like a partition offset.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "log_records")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub position: i64,
    pub room: String,
    pub seq: i64,
    pub epoch: i64,
    pub sender: String,
    pub client_id: String,
    #[sea_orm(column_type = "Text")]
    pub body: String,
    pub ts: i64,
    pub reply_to: Option<i64>,
    /// JSON array of attachment ids.
    #[sea_orm(column_type = "Text")]
    pub attachments: String,
    /// A room event's JSON (`MessageEvent`).
    #[sea_orm(column_type = "Text", nullable)]
    pub event: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
