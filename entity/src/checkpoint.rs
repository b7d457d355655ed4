use sea_orm::entity::prelude::*;

/// A room's checkpoint: what a restarting owner restores from.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "checkpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub room: String,
    pub epoch: i64,
    pub last_seq: i64,
    pub log_position: i64,
    pub history_seq: i64,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
