//! What a message's `attachments: [id]` needs from the attachment service
//! of the binary (`src/attachments`): a check on send, a delete with the
//! message. The actors know only this trait.

use async_trait::async_trait;

use crate::frames::ChatError;
use crate::store::StoreResult;

/// Most attachments one message may reference.
pub const MAX_PER_MESSAGE: usize = 10;

#[async_trait]
pub trait AttachmentIndex: Send + Sync + 'static {
    /// Ok when every id names an attachment uploaded to `room` by `sender`
    /// (at most [`MAX_PER_MESSAGE`], no repeats). `bad_request` for a
    /// malformed list, `not_found` for an id that is not an attachment of
    /// this room, `forbidden` for another user's upload, `unavailable` when
    /// the database does not answer.
    async fn check(&self, ids: &[String], room: &str, sender: &str) -> Result<(), ChatError>;

    /// Deletes these attachments of `room`: their rows, then their bytes.
    /// Ids that are unknown or of another room are skipped.
    async fn delete(&self, ids: &[String], room: &str) -> StoreResult<()>;

    /// Deletes every attachment of `room` (a deleted room); how many.
    async fn delete_room(&self, room: &str) -> StoreResult<usize>;
}

/// For stores without attachments (the actors' unit tests): every
/// reference is refused, nothing is deleted.
pub struct NoAttachments;

#[async_trait]
impl AttachmentIndex for NoAttachments {
    async fn check(&self, ids: &[String], _room: &str, _sender: &str) -> Result<(), ChatError> {
        match ids.first() {
            None => Ok(()),
            Some(id) => Err(ChatError::not_found(format!("no attachment {id}"))),
        }
    }

    async fn delete(&self, _ids: &[String], _room: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn delete_room(&self, _room: &str) -> StoreResult<usize> {
        Ok(0)
    }
}
