//! Attachments in an S3-compatible object store through `object_store`:
//! an upload is a multipart upload in 5 MiB parts (S3's smallest) with at
//! most one part in flight, so a node holds about two parts of each upload;
//! an abandoned one is aborted, so the store keeps no parts of it.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};

use super::{BlobError, BlobStore, BlobStream, BlobWriter};
use crate::config::S3Section;

/// S3's smallest part (but the last).
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts uploading at once while the next one fills.
const PARTS_IN_FLIGHT: usize = 1;

pub struct S3Store {
    store: Arc<AmazonS3>,
    prefix: String,
}

fn failed(e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound,
        e => BlobError::Failed {
            store: "s3",
            message: e.to_string(),
        },
    }
}

impl S3Store {
    pub fn new(config: &S3Section) -> anyhow::Result<S3Store> {
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http);
        if let Some(endpoint) = &config.endpoint {
            // Path-style requests (`endpoint/bucket/key`): what MinIO and
            // most self-hosted stores expect.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let (Some(key), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
        }
        let store = builder
            .build()
            .map_err(|e| anyhow::anyhow!("invalid attachments.s3 settings: {e}"))?;
        Ok(S3Store {
            store: Arc::new(store),
            prefix: config.prefix.clone(),
        })
    }

    fn path(&self, key: &str) -> Path {
        Path::from(format!("{}{key}", self.prefix))
    }
}

#[async_trait]
impl BlobStore for S3Store {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn create(&self, key: &str) -> Result<Box<dyn BlobWriter>, BlobError> {
        let upload = self
            .store
            .put_multipart(&self.path(key))
            .await
            .map_err(failed)?;
        Ok(Box::new(S3Writer {
            upload: Some(WriteMultipart::new_with_chunk_size(upload, PART_BYTES)),
        }))
    }

    async fn read(&self, key: &str, range: Range<u64>) -> Result<BlobStream, BlobError> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..Default::default()
        };
        let got = self
            .store
            .get_opts(&self.path(key), options)
            .await
            .map_err(failed)?;
        Ok(got.into_stream().map(|c| c.map_err(failed)).boxed())
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(failed(e)),
        }
    }
}

struct S3Writer {
    /// None once finished or aborted.
    upload: Option<WriteMultipart>,
}

#[async_trait]
impl BlobWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        let upload = self.upload.as_mut().expect("written before finish");
        // Back pressure: the body is read no faster than parts upload.
        upload
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(failed)?;
        upload.put(chunk);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(), BlobError> {
        let upload = self.upload.take().expect("finished once");
        // On an error `finish` aborts the multipart upload itself.
        upload.finish().await.map(|_| ()).map_err(failed)
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(upload) = self.upload.take() {
            if let Err(e) = upload.abort().await {
                tracing::warn!(error = %e, "aborting a multipart upload failed; its parts stay in the bucket until a lifecycle rule removes them");
            }
        }
    }
}
