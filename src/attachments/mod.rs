//! Attachments: files uploaded to a room, their metadata in the database
//! (`attachments` table) and their bytes in a [`BlobStore`]: the local disk
//! ([`local`], the embedded default) or an S3-compatible object store
//! ([`s3`]). An upload streams through an [`Upload`] chunk by chunk: its
//! bytes are hashed and counted on the way and never held whole; the row is
//! written only once the store holds every byte, and an upload that does
//! not finish (client gone, over the limit, store error) leaves nothing.

pub mod local;
pub mod s3;

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use sha2::{Digest, Sha256};
use troupe_actors::frames::ChatError;
use troupe_actors::limits::now_ms;
use troupe_actors::store::attachments::{AttachmentIndex, MAX_PER_MESSAGE};
use troupe_actors::store::{StoreError, StoreResult};
use troupe_entity::attachment;

use crate::config::{AttachmentStoreKind, AttachmentsSection, Config};
use crate::stores::sql::SqlStore;

/// A blob store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no such object")]
    NotFound,
    #[error("{store} attachment store: {message}")]
    Failed {
        store: &'static str,
        message: String,
    },
}

/// Bytes read back from a store.
pub type BlobStream = BoxStream<'static, Result<Bytes, BlobError>>;

/// Where attachments' bytes live, by key (the attachment's id).
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// `local` or `s3`, for logs.
    fn kind(&self) -> &'static str;
    /// Starts writing `key`; it exists for readers only after `finish`.
    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>, BlobError>;
    /// The bytes of `range` (within the object, not empty).
    async fn read(&self, key: &str, range: Range<u64>) -> Result<BlobStream, BlobError>;
    /// Removes `key`; a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), BlobError>;
}

/// One object being written.
#[async_trait]
pub trait BlobWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError>;
    /// Makes the object durable and visible under its key.
    async fn finish(self: Box<Self>) -> Result<(), BlobError>;
    /// Throws away what was written.
    async fn abort(self: Box<Self>);
}

/// Why an upload or a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("the file is over the size limit ({0} bytes)")]
    TooLarge(u64),
    #[error("the file is empty")]
    Empty,
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
}

/// Is `pattern` a `type/subtype` or `type/*` of `attachments.allowed_types`?
pub fn is_valid_type_pattern(pattern: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match pattern.split_once('/') {
        Some((ty, sub)) => token(ty) && (sub == "*" || token(sub)),
        None => false,
    }
}

/// Is `id` the shape of an attachment id (32 lowercase hex characters)?
/// Anything else is never looked up, nor used as a file name.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The attachment service: the store, the metadata, the rules.
#[derive(Clone)]
pub struct Attachments {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn BlobStore>,
    sql: SqlStore,
    config: AttachmentsSection,
}

impl Attachments {
    /// Opens the configured store (the local directory is created, and
    /// what a crash left half-written in it removed).
    pub async fn open(config: &Config, sql: SqlStore) -> anyhow::Result<Attachments> {
        let a = &config.attachments;
        let store: Arc<dyn BlobStore> = match a.store {
            AttachmentStoreKind::Local => {
                Arc::new(local::LocalStore::open(a.local_dir(&config.data_dir)).await?)
            }
            AttachmentStoreKind::S3 => Arc::new(s3::S3Store::new(&a.s3)?),
        };
        if config.clustered() && a.store == AttachmentStoreKind::Local {
            tracing::warn!(
                "attachments.store = \"local\" on a clustered node: files uploaded here cannot \
                 be downloaded through other nodes; set attachments.store = \"s3\""
            );
        }
        tracing::info!(store = store.kind(), "attachment store open");
        Ok(Self::with_store(store, sql, a.clone()))
    }

    pub fn with_store(
        store: Arc<dyn BlobStore>,
        sql: SqlStore,
        config: AttachmentsSection,
    ) -> Attachments {
        Attachments {
            inner: Arc::new(Inner { store, sql, config }),
        }
    }

    pub fn config(&self) -> &AttachmentsSection {
        &self.inner.config
    }

    /// Whether a file of `essence` (`type/subtype`, lowercase) may be uploaded.
    pub fn allows(&self, essence: &str) -> bool {
        self.inner.config.allowed_types.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_suffix("/*") {
                Some(ty) => essence.split_once('/').is_some_and(|(t, _)| t == ty),
                None => pattern == essence,
            }
        })
    }

    /// Starts an upload to `room` by `uploader`.
    pub async fn begin(
        &self,
        room: &str,
        uploader: &str,
        content_type: String,
        filename: Option<String>,
    ) -> Result<Upload, AttachmentError> {
        let id = new_id();
        let writer = self.inner.store.create(&id).await?;
        Ok(Upload {
            service: self.clone(),
            id,
            room: room.to_string(),
            uploader: uploader.to_string(),
            content_type,
            filename,
            writer: Some(writer),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    pub async fn find(&self, id: &str) -> Result<Option<attachment::Model>, AttachmentError> {
        if !is_valid_id(id) {
            return Ok(None);
        }
        Ok(attachment::Entity::find_by_id(id.to_string())
            .one(self.inner.sql.db())
            .await?)
    }

    /// The bytes of `range` of an attachment (the whole file: `0..size`).
    pub async fn read(
        &self,
        meta: &attachment::Model,
        range: Range<u64>,
    ) -> Result<BlobStream, AttachmentError> {
        if range.is_empty() {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        Ok(self.inner.store.read(&meta.id, range).await?)
    }

    /// Deletes one attachment: its row (from then on it is gone for
    /// readers), then its bytes. False when there was no such attachment.
    pub async fn delete(&self, id: &str) -> Result<bool, AttachmentError> {
        if !is_valid_id(id) {
            return Ok(false);
        }
        let deleted = {
            let _turn = self.inner.sql.write_turn().await;
            attachment::Entity::delete_by_id(id.to_string())
                .exec(self.inner.sql.db())
                .await?
                .rows_affected
        };
        if deleted == 0 {
            return Ok(false);
        }
        self.delete_bytes(id).await;
        Ok(true)
    }

    /// Deletes every attachment of `room` (for a deleted room); how many.
    pub async fn delete_all_of(&self, room: &str) -> Result<usize, AttachmentError> {
        let rows = attachment::Entity::find()
            .filter(attachment::Column::Room.eq(room))
            .all(self.inner.sql.db())
            .await?;
        let ids: Vec<String> = rows.into_iter().map(|r| r.id).collect();
        self.delete_rows_and_bytes(&ids, room).await?;
        Ok(ids.len())
    }

    async fn delete_rows_and_bytes(
        &self,
        ids: &[String],
        room: &str,
    ) -> Result<(), AttachmentError> {
        let ids: Vec<String> = ids.iter().filter(|id| is_valid_id(id)).cloned().collect();
        if ids.is_empty() {
            return Ok(());
        }
        let found: Vec<String> = attachment::Entity::find()
            .filter(attachment::Column::Id.is_in(ids.clone()))
            .filter(attachment::Column::Room.eq(room))
            .all(self.inner.sql.db())
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        if found.is_empty() {
            return Ok(());
        }
        {
            let _turn = self.inner.sql.write_turn().await;
            attachment::Entity::delete_many()
                .filter(attachment::Column::Id.is_in(found.clone()))
                .exec(self.inner.sql.db())
                .await?;
        }
        for id in &found {
            self.delete_bytes(id).await;
        }
        Ok(())
    }

    /// A failure here leaves an orphaned object, never a row without bytes.
    async fn delete_bytes(&self, id: &str) {
        if let Err(e) = self.inner.store.delete(id).await {
            tracing::warn!(attachment = id, error = %e, "the attachment's bytes were not deleted");
        }
    }

    async fn insert(&self, row: attachment::Model) -> Result<(), AttachmentError> {
        let active = attachment::ActiveModel {
            id: Set(row.id),
            room: Set(row.room),
            uploader: Set(row.uploader),
            size: Set(row.size),
            content_type: Set(row.content_type),
            sha256: Set(row.sha256),
            filename: Set(row.filename),
            created_at: Set(row.created_at),
        };
        let _turn = self.inner.sql.write_turn().await;
        attachment::Entity::insert(active)
            .exec(self.inner.sql.db())
            .await?;
        Ok(())
    }
}

/// An upload in progress. Dropped before [`Upload::finish`] (an error, the
/// client gone, the request cancelled), it throws its bytes away.
pub struct Upload {
    service: Attachments,
    id: String,
    room: String,
    uploader: String,
    content_type: String,
    filename: Option<String>,
    writer: Option<Box<dyn BlobWriter>>,
    hasher: Sha256,
    size: u64,
}

impl Upload {
    /// Takes the next chunk; `TooLarge` as soon as the file passes the limit.
    pub async fn push(&mut self, chunk: Bytes) -> Result<(), AttachmentError> {
        let max = self.service.inner.config.max_bytes;
        self.size += chunk.len() as u64;
        if self.size > max {
            return Err(AttachmentError::TooLarge(max));
        }
        self.hasher.update(&chunk);
        let writer = self
            .writer
            .as_mut()
            .expect("an upload is written until finished");
        writer.write(chunk).await?;
        Ok(())
    }

    /// Makes the bytes durable, then records the attachment.
    pub async fn finish(mut self) -> Result<attachment::Model, AttachmentError> {
        if self.size == 0 {
            return Err(AttachmentError::Empty);
        }
        let writer = self.writer.take().expect("finished once");
        writer.finish().await?;
        let row = attachment::Model {
            id: self.id.clone(),
            room: self.room.clone(),
            uploader: self.uploader.clone(),
            size: self.size as i64,
            content_type: self.content_type.clone(),
            sha256: hex(&self.hasher.clone().finalize()),
            filename: self.filename.clone(),
            created_at: now_ms(),
        };
        if let Err(e) = self.service.insert(row.clone()).await {
            // The bytes are complete but unrecorded: nobody can reach them.
            self.service.delete_bytes(&self.id).await;
            return Err(e);
        }
        Ok(row)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            tracing::debug!(attachment = %self.id, bytes = self.size, "upload abandoned");
            // Drop may run outside a runtime only at process exit.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(writer.abort());
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unavailable(e: AttachmentError) -> StoreError {
    StoreError::Unavailable {
        store: "attachments",
        message: e.to_string(),
    }
}

#[async_trait]
impl AttachmentIndex for Attachments {
    async fn check(&self, ids: &[String], room: &str, sender: &str) -> Result<(), ChatError> {
        if ids.is_empty() {
            return Ok(());
        }
        if ids.len() > MAX_PER_MESSAGE {
            return Err(ChatError::bad_request(format!(
                "a message has at most {MAX_PER_MESSAGE} attachments"
            )));
        }
        let mut unique = ids.to_vec();
        unique.sort();
        unique.dedup();
        if unique.len() != ids.len() {
            return Err(ChatError::bad_request("an attachment is listed twice"));
        }
        let valid: Vec<String> = unique
            .iter()
            .filter(|id| is_valid_id(id))
            .cloned()
            .collect();
        let rows = attachment::Entity::find()
            .filter(attachment::Column::Id.is_in(valid))
            .all(self.inner.sql.db())
            .await
            .map_err(|e| ChatError::unavailable(format!("attachments: {e}")))?;
        for id in ids {
            match rows.iter().find(|r| &r.id == id) {
                Some(row) if row.room != room => {
                    return Err(ChatError::not_found(format!(
                        "no attachment {id} in room {room}"
                    )))
                }
                Some(row) if row.uploader != sender => {
                    return Err(ChatError::forbidden(format!(
                        "attachment {id} was uploaded by another user"
                    )))
                }
                Some(_) => {}
                None => return Err(ChatError::not_found(format!("no attachment {id}"))),
            }
        }
        Ok(())
    }

    async fn delete(&self, ids: &[String], room: &str) -> StoreResult<()> {
        self.delete_rows_and_bytes(ids, room)
            .await
            .map_err(unavailable)
    }

    async fn delete_room(&self, room: &str) -> StoreResult<usize> {
        self.delete_all_of(room).await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_patterns() {
        assert!(is_valid_type_pattern("image/png"));
        assert!(is_valid_type_pattern("image/*"));
        assert!(is_valid_type_pattern("application/vnd.ms-excel"));
        assert!(!is_valid_type_pattern("image"));
        assert!(!is_valid_type_pattern("*/*x"));
        assert!(!is_valid_type_pattern("image/png; charset=x"));
    }

    async fn service(dir: &std::path::Path) -> Attachments {
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let db = crate::db::connect(&url, crate::db::SqliteDurability::Normal)
            .await
            .unwrap();
        crate::db::migrate(&db, &url).await.unwrap();
        let store = local::LocalStore::open(dir.join("files")).await.unwrap();
        Attachments::with_store(
            Arc::new(store),
            SqlStore::new(db),
            AttachmentsSection::default(),
        )
    }

    async fn put(a: &Attachments, room: &str, user: &str, bytes: &'static [u8]) -> String {
        let mut upload = a
            .begin(room, user, "text/plain".into(), None)
            .await
            .unwrap();
        upload.push(Bytes::from_static(bytes)).await.unwrap();
        upload.finish().await.unwrap().id
    }

    #[tokio::test]
    async fn a_message_references_its_sender_s_uploads_to_its_room() {
        let dir = tempfile::tempdir().unwrap();
        let a = service(dir.path()).await;
        let mine = put(&a, "club", "ann", b"one").await;
        let also_mine = put(&a, "club", "ann", b"two").await;
        let bobs = put(&a, "club", "bob", b"three").await;
        let elsewhere = put(&a, "other", "ann", b"four").await;

        let ids = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(a.check(&[], "club", "ann").await, Ok(()));
        assert_eq!(
            a.check(&ids(&[&mine, &also_mine]), "club", "ann").await,
            Ok(())
        );
        let code = |r: Result<(), ChatError>| r.unwrap_err().code;
        use troupe_actors::frames::ErrorCode;
        assert_eq!(
            code(a.check(&ids(&[&mine, &bobs]), "club", "ann").await),
            ErrorCode::Forbidden
        );
        assert_eq!(
            code(a.check(&ids(&[&elsewhere]), "club", "ann").await),
            ErrorCode::NotFound
        );
        assert_eq!(
            code(a.check(&["../x".to_string()], "club", "ann").await),
            ErrorCode::NotFound
        );
        assert_eq!(
            code(a.check(&ids(&[&mine, &mine]), "club", "ann").await),
            ErrorCode::BadRequest
        );
        let many = vec![mine.clone(); MAX_PER_MESSAGE + 1];
        assert_eq!(
            code(a.check(&many, "club", "ann").await),
            ErrorCode::BadRequest
        );

        // Deleted with their message: rows and bytes; other rooms' ids are skipped.
        AttachmentIndex::delete(&a, &ids(&[&mine, &elsewhere]), "club")
            .await
            .unwrap();
        assert!(a.find(&mine).await.unwrap().is_none());
        assert!(a.find(&elsewhere).await.unwrap().is_some());
        assert!(!dir
            .path()
            .join("files")
            .join(&mine[..2])
            .join(&mine)
            .exists());
        assert_eq!(
            code(a.check(&ids(&[&mine]), "club", "ann").await),
            ErrorCode::NotFound
        );
        assert_eq!(AttachmentIndex::delete_room(&a, "club").await.unwrap(), 2);
        assert!(a.find(&bobs).await.unwrap().is_none());
        assert!(a.find(&elsewhere).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn an_empty_or_oversized_upload_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = service(dir.path()).await;
        Arc::get_mut(&mut a.inner).unwrap().config.max_bytes = 4;
        let upload = a
            .begin("club", "ann", "text/plain".into(), None)
            .await
            .unwrap();
        assert!(matches!(upload.finish().await, Err(AttachmentError::Empty)));
        let mut upload = a
            .begin("club", "ann", "text/plain".into(), None)
            .await
            .unwrap();
        upload.push(Bytes::from_static(b"abc")).await.unwrap();
        assert!(matches!(
            upload.push(Bytes::from_static(b"de")).await,
            Err(AttachmentError::TooLarge(4))
        ));
        drop(upload);
        // The abort runs on the runtime.
        for _ in 0..100 {
            if std::fs::read_dir(dir.path().join("files/tmp"))
                .unwrap()
                .count()
                == 0
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            std::fs::read_dir(dir.path().join("files/tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn ids() {
        let id = new_id();
        assert!(is_valid_id(&id), "{id}");
        assert!(!is_valid_id("../../etc/passwd"));
        assert!(!is_valid_id(&id.to_uppercase()));
        assert!(!is_valid_id(&id[1..]));
    }
}
