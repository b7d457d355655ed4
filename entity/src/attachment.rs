use sea_orm::entity::prelude::*;

/// An uploaded file's metadata; its bytes live in the attachment store
/// (local disk or S3) under its id.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "attachments")]
pub struct Model {
    /// 32 lowercase hex characters (128 random bits).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub room: String,
    pub uploader: String,
    pub size: i64,
    pub content_type: String,
    /// Lowercase hex of the SHA-256 of the bytes.
    pub sha256: String,
    /// The sanitised name it was uploaded under, if any.
    pub filename: Option<String>,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
