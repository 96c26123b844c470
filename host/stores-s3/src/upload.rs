//! Streamed uploads: bytes are buffered up to one part; a small object becomes one `PutObject`,
//! a larger one a multipart upload whose parts go out as they fill, so memory stays at one part.
//! Nothing is visible before `finish`; `abort` (or an error) aborts the multipart upload.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use marsh_stores::{BlobKey, BlobStore, BlobUpload, PutMode, StoreError};

use crate::S3Store;
use crate::errors::{Classified, classify};

pub(crate) struct S3Upload {
    store: S3Store,
    key: BlobKey,
    mode: PutMode,
    buffer: Vec<u8>,
    /// Set once the first part goes out.
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
}

impl S3Upload {
    pub(crate) fn new(store: S3Store, key: BlobKey, mode: PutMode) -> Self {
        S3Upload { store, key, mode, buffer: Vec::new(), upload_id: None, parts: Vec::new() }
    }

    fn fail(&self, op: &str, c: Classified) -> StoreError {
        c.into_store_error(&self.store.inner.name, op, self.key.as_str())
    }

    async fn send_part(&mut self, data: Vec<u8>) -> Result<(), StoreError> {
        let i = &self.store.inner;
        let full = self.store.full(&self.key);
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                if self.mode == PutMode::CreateOnly && self.store.head(&self.key).await?.is_some() {
                    return Err(StoreError::Exists);
                }
                let _permit = i.permits.acquire().await;
                let out = i
                    .client
                    .create_multipart_upload()
                    .bucket(&i.bucket)
                    .key(&full)
                    .send()
                    .await
                    .map_err(|e| self.fail("begin-upload", classify(&e)))?;
                let id = out.upload_id().ok_or_else(|| {
                    StoreError::Io(format!("store `{}` begin-upload {}: no upload id in the answer", i.name, self.key))
                })?;
                self.upload_id = Some(id.to_owned());
                id.to_owned()
            }
        };
        let number = i32::try_from(self.parts.len() + 1).map_err(|_| StoreError::TooLarge(u64::MAX))?;
        let len = data.len() as u64;
        let _permit = i.permits.acquire().await;
        let out = i
            .client
            .upload_part()
            .bucket(&i.bucket)
            .key(&full)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.fail("upload-part", classify(&e)))?;
        i.stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
        self.parts.push(CompletedPart::builder().set_e_tag(out.e_tag().map(str::to_owned)).part_number(number).build());
        Ok(())
    }

    async fn abort_multipart(&mut self) {
        let Some(id) = self.upload_id.take() else { return };
        let i = &self.store.inner;
        let _permit = i.permits.acquire().await;
        let full = self.store.full(&self.key);
        if let Err(e) = i.client.abort_multipart_upload().bucket(&i.bucket).key(&full).upload_id(&id).send().await {
            // The bucket's lifecycle rule for incomplete uploads, if any, cleans up after this.
            tracing::warn!(store = %i.name, key = %self.key, "could not abort multipart upload: {}", self.fail("abort", classify(&e)));
        }
    }

    async fn complete(&mut self) -> Result<(), StoreError> {
        let i = &self.store.inner;
        let id = self.upload_id.clone().unwrap_or_default();
        let parts = CompletedMultipartUpload::builder().set_parts(Some(std::mem::take(&mut self.parts))).build();
        let _permit = i.permits.acquire().await;
        let mut req = i
            .client
            .complete_multipart_upload()
            .bucket(&i.bucket)
            .key(self.store.full(&self.key))
            .upload_id(&id)
            .multipart_upload(parts);
        if self.mode == PutMode::CreateOnly {
            req = req.if_none_match("*");
        }
        match req.send().await {
            Ok(_) => {
                self.upload_id = None;
                Ok(())
            }
            Err(e) => Err(match classify(&e) {
                Classified::PreconditionFailed if self.mode == PutMode::CreateOnly => StoreError::Exists,
                c => self.fail("finish-upload", c),
            }),
        }
    }
}

#[async_trait]
impl BlobUpload for S3Upload {
    async fn append(&mut self, data: Vec<u8>) -> Result<(), StoreError> {
        let part = self.store.inner.part_size;
        if self.buffer.is_empty() && data.len() >= part {
            self.buffer = data;
        } else {
            self.buffer.extend_from_slice(&data);
        }
        while self.buffer.len() >= part {
            let rest = self.buffer.split_off(part);
            let full = std::mem::replace(&mut self.buffer, rest);
            if let Err(e) = self.send_part(full).await {
                self.abort_multipart().await;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        let data = std::mem::take(&mut self.buffer);
        if self.upload_id.is_none() {
            return self.store.put_object(&self.key, data, self.mode, "finish-upload").await;
        }
        let result = async {
            if !data.is_empty() {
                self.send_part(data).await?;
            }
            self.complete().await
        }
        .await;
        if result.is_err() {
            self.abort_multipart().await;
        }
        result
    }

    async fn abort(mut self: Box<Self>) {
        self.abort_multipart().await;
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if let Some(id) = self.upload_id.take() {
            // Dropped without finish or abort (a plugin instance discarded mid-upload): abort in
            // the background so the parts do not linger.
            let i = self.store.inner.clone();
            let full = self.store.full(&self.key);
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = i.client.abort_multipart_upload().bucket(&i.bucket).key(&full).upload_id(&id).send().await;
                });
            }
        }
    }
}
