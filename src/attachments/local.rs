//! Attachments on the local disk: `DIR/ab/abcdef…` for id `abcdef…`. An
//! upload is written to `DIR/tmp/ID.part`, fsynced, then renamed into place,
//! so a reader never sees half a file; what a crash leaves in `tmp/` is
//! removed at the next start.

use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

use super::{BlobError, BlobStore, BlobStream, BlobWriter};

/// Bytes buffered before a write to the file.
const WRITE_BUFFER: usize = 256 * 1024;
/// Bytes of one chunk read back.
const READ_CHUNK: usize = 64 * 1024;

pub struct LocalStore {
    root: PathBuf,
}

fn failed(e: std::io::Error) -> BlobError {
    if e.kind() == std::io::ErrorKind::NotFound {
        BlobError::NotFound
    } else {
        BlobError::Failed {
            store: "local",
            message: e.to_string(),
        }
    }
}

impl LocalStore {
    pub async fn open(root: PathBuf) -> anyhow::Result<LocalStore> {
        use anyhow::Context;
        let tmp = root.join("tmp");
        // Half-written uploads of a previous run: nobody will finish them.
        match tokio::fs::remove_dir_all(&tmp).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot clean {}", tmp.display()));
            }
        }
        tokio::fs::create_dir_all(&tmp)
            .await
            .with_context(|| format!("cannot create attachments dir {}", tmp.display()))?;
        Ok(LocalStore { root })
    }

    /// Only ever called with a checked id (hex), never a client's string.
    fn path(&self, key: &str) -> PathBuf {
        self.root.join(&key[..2]).join(key)
    }
}

#[async_trait]
impl BlobStore for LocalStore {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>, BlobError> {
        let part = self.root.join("tmp").join(format!("{key}.part"));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .await
            .map_err(failed)?;
        Ok(Box::new(LocalWriter {
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            part,
            target: self.path(key),
            settled: false,
        }))
    }

    async fn read(&self, key: &str, range: Range<u64>) -> Result<BlobStream, BlobError> {
        let mut file = File::open(self.path(key)).await.map_err(failed)?;
        file.seek(SeekFrom::Start(range.start))
            .await
            .map_err(failed)?;
        let taken = file.take(range.end - range.start);
        Ok(ReaderStream::with_capacity(taken, READ_CHUNK)
            .map(|chunk| chunk.map_err(failed))
            .boxed())
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.path(key)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(failed(e)),
            _ => Ok(()),
        }
    }
}

struct LocalWriter {
    /// None once finished or aborted.
    file: Option<BufWriter<File>>,
    part: PathBuf,
    target: PathBuf,
    /// The part file became the object, or was removed.
    settled: bool,
}

async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir).await?.sync_all().await
}

#[async_trait]
impl BlobWriter for LocalWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        let file = self.file.as_mut().expect("written before finish");
        file.write_all(&chunk).await.map_err(failed)
    }

    async fn finish(mut self: Box<Self>) -> Result<(), BlobError> {
        let mut file = self.file.take().expect("finished once");
        file.flush().await.map_err(failed)?;
        let file = file.into_inner();
        file.sync_all().await.map_err(failed)?;
        drop(file);
        let dir = self.target.parent().expect("a fan-out dir");
        tokio::fs::create_dir_all(dir).await.map_err(failed)?;
        tokio::fs::rename(&self.part, &self.target)
            .await
            .map_err(failed)?;
        self.settled = true;
        // The rename itself must survive a crash once the upload is acked.
        sync_dir(dir).await.map_err(failed)?;
        Ok(())
    }

    async fn abort(mut self: Box<Self>) {
        self.file.take();
        let _ = tokio::fs::remove_file(&self.part).await;
        self.settled = true;
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        // Unfinished, failed, or dropped without an abort: the part file
        // must not stay.
        if !self.settled {
            self.file.take();
            let _ = std::fs::remove_file(&self.part);
        }
    }
}
