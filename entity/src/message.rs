use sea_orm::entity::prelude::*;

/// Message history, written behind the log; one row per (room, seq).
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
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
