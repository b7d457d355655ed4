use sea_orm::entity::prelude::*;

/// A room: a group, a DM (`dm:<a>:<b>`) or private group.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "rooms")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub private: bool,
    pub created_by: String,
    pub created_at: i64,
    #[sea_orm(column_type = "Text", nullable)]
    pub topic: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
