use sea_orm::entity::prelude::*;

/// `blocker` blocked `blocked`: no DMs and no friend requests between them.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "blocks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub blocker: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub blocked: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
