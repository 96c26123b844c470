//! `backend-s3`: shares as write-once objects, for stores without random access (S3 and its
//! kin). Nothing is ever modified in place, and a share is visible only once the small object
//! that describes it exists, so a crash at any point leaves nothing that reads as a share.
//!
//! Layout inside the granted store (config `store`, default `shares`):
//! - `incoming/<si>/<shnum>`: the upload record of an immutable share in progress (sealed:
//!   declared size and upload id). Re-beginning an upload gives it a new id.
//! - `chunks/<si>/<shnum>/<upload id>/<offset:020>-<len>`: the bytes of one write, raw (share
//!   bytes are already ciphertext). Zero-padded offsets make keys list in offset order.
//! - `shares/<si>/<shnum>`: the manifest of a complete immutable share (sealed: size, upload id,
//!   the chunks that cover it in order). Written last, create-only: the share exists exactly
//!   when its manifest does.
//! - `slots/<si>/<shnum>`: the pointer of a mutable share (sealed: size and extents, each a
//!   range of the share held by a range of a data object).
//! - `slotdata/<si>/<shnum>/<object>`: data objects of mutable shares, raw, written once.
//!
//! Mutable writes never expose a torn write: the bytes of one `mutable-write` go into one new
//! data object, then the pointer is replaced whole (one PUT: readers see the old pointer or the
//! new one), then data objects no pointer refers to any more are deleted. A reader that finds a
//! data object gone re-reads the pointer. When a slot has gathered many extents the write
//! rewrites it into one object.
//!
//! Upload ids and data object names start with their creation time, so `sweep` removes chunks
//! of uploads that never finished and data objects no pointer refers to, once they are older
//! than the grace period, and never touches work in progress.
//!
//! Instances keep only a cache of immutable manifests (a manifest never changes while its share
//! exists; a stale entry shows as a missing chunk and is dropped), so the host may pool them.
//!
//! One file past 500 lines on purpose: a plugin is read top to bottom by whoever writes the next
//! object-store backend, and the layout below is the contract every function keeps.

use std::collections::HashMap;
use std::hash::BuildHasher;

use marsh_plugin_sdk::{
    Backend, BackendError, BackendResult, BlobError, Concurrency, Config, Host, IndexPage, InitError, Payload,
    PluginInfo, PutMode, SealError, ShareNumber, StorageIndex, Store, SweepReport, Usage, WriteVector,
};

const UPLOAD_PURPOSE: &str = "s3-upload";
const MANIFEST_PURPOSE: &str = "s3-manifest";
const SLOT_PURPOSE: &str = "s3-slot";
/// A slot with more extents than this is rewritten into one data object on its next write.
const MAX_EXTENTS: usize = 64;
/// Cached manifests per instance.
const CACHE_ENTRIES: usize = 4096;

/// The S3 backend.
#[derive(Debug)]
pub struct S3Backend {
    host: Host,
    store: Store,
    manifests: HashMap<(String, ShareNumber), Manifest>,
}

/// An immutable share: its size and the chunks covering it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Manifest {
    size: u64,
    upload: String,
    /// `(offset, len)`, ascending, covering `0..size` without gaps; may overlap.
    chunks: Vec<(u64, u64)>,
}

/// A mutable share: its size and extents.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Slot {
    size: u64,
    /// Ascending, disjoint. Gaps read as zeros.
    extents: Vec<Extent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Extent {
    at: u64,
    len: u64,
    object: String,
    object_offset: u64,
}

fn corrupt(what: &str) -> BackendError {
    BackendError::Corrupt(format!("backend-s3: {what}"))
}

/// A seal purpose bound to the object it is stored under.
fn bound(purpose: &str, key: &str) -> String {
    format!("{purpose}:{key}")
}

fn seal_error(what: &str, e: impl std::fmt::Display) -> BackendError {
    corrupt(&format!("{what} did not unseal: {e}"))
}

fn incoming(si: &StorageIndex, n: ShareNumber) -> String {
    format!("incoming/{si}/{n}")
}

fn chunks(si: &StorageIndex, n: ShareNumber, upload: &str) -> String {
    format!("chunks/{si}/{n}/{upload}/")
}

fn chunk_key(si: &StorageIndex, n: ShareNumber, upload: &str, offset: u64, len: u64) -> String {
    format!("chunks/{si}/{n}/{upload}/{offset:020}-{len}")
}

fn manifest_key(si: &StorageIndex, n: ShareNumber) -> String {
    format!("shares/{si}/{n}")
}

fn slot_key(si: &StorageIndex, n: ShareNumber) -> String {
    format!("slots/{si}/{n}")
}

fn slot_data(si: &StorageIndex, n: ShareNumber) -> String {
    format!("slotdata/{si}/{n}/")
}

/// `(offset, len)` from a chunk key's last component.
fn chunk_span(key: &str) -> Option<(u64, u64)> {
    let (offset, len) = key.rsplit('/').next()?.split_once('-')?;
    Some((offset.parse().ok()?, len.parse().ok()?))
}

/// The creation time at the start of an upload id or object name.
fn created(name: &str) -> Option<u64> {
    name.split_once('-')?.0.parse().ok()
}

fn share_numbers(keys: &[String]) -> Vec<ShareNumber> {
    let mut out: Vec<ShareNumber> = keys.iter().filter_map(|k| k.rsplit('/').next()?.parse().ok()).collect();
    out.sort_unstable();
    out
}

impl Manifest {
    fn encode(&self) -> Vec<u8> {
        let mut s = format!("marsh-s3-manifest 1\n{}\n{}\n", self.size, self.upload);
        for (offset, len) in &self.chunks {
            s.push_str(&format!("{offset} {len}\n"));
        }
        s.into_bytes()
    }

    fn decode(bytes: &[u8]) -> BackendResult<Self> {
        let text = std::str::from_utf8(bytes).map_err(|_| corrupt("manifest is not text"))?;
        let mut lines = text.lines();
        if lines.next() != Some("marsh-s3-manifest 1") {
            return Err(corrupt("manifest of an unknown version"));
        }
        let size = lines.next().and_then(|l| l.parse().ok()).ok_or_else(|| corrupt("manifest size"))?;
        let upload = lines.next().ok_or_else(|| corrupt("manifest upload id"))?.to_owned();
        let mut chunks = Vec::new();
        for line in lines {
            let (o, l) = line.split_once(' ').ok_or_else(|| corrupt("manifest chunk line"))?;
            chunks
                .push((o.parse().map_err(|_| corrupt("chunk offset"))?, l.parse().map_err(|_| corrupt("chunk len"))?));
        }
        Ok(Manifest { size, upload, chunks })
    }
}

impl Slot {
    fn encode(&self) -> Vec<u8> {
        let mut s = format!("marsh-s3-slot 1\n{}\n", self.size);
        for e in &self.extents {
            s.push_str(&format!("{} {} {} {}\n", e.at, e.len, e.object, e.object_offset));
        }
        s.into_bytes()
    }

    fn decode(bytes: &[u8]) -> BackendResult<Self> {
        let text = std::str::from_utf8(bytes).map_err(|_| corrupt("slot pointer is not text"))?;
        let mut lines = text.lines();
        if lines.next() != Some("marsh-s3-slot 1") {
            return Err(corrupt("slot pointer of an unknown version"));
        }
        let size = lines.next().and_then(|l| l.parse().ok()).ok_or_else(|| corrupt("slot size"))?;
        let mut extents = Vec::new();
        for line in lines {
            let f: Vec<&str> = line.split(' ').collect();
            let [at, len, object, object_offset] = f[..] else { return Err(corrupt("slot extent line")) };
            let num = |s: &str| s.parse::<u64>().map_err(|_| corrupt("slot extent number"));
            extents.push(Extent {
                at: num(at)?,
                len: num(len)?,
                object: object.to_owned(),
                object_offset: num(object_offset)?,
            });
        }
        Ok(Slot { size, extents })
    }

    /// Put `len` bytes at `at` from `object` at `object_offset` over whatever was there.
    fn overlay(&mut self, at: u64, len: u64, object: &str, object_offset: u64) {
        let end = at + len;
        let mut out = Vec::with_capacity(self.extents.len() + 2);
        for e in self.extents.drain(..) {
            let e_end = e.at + e.len;
            if e_end <= at || e.at >= end {
                out.push(e);
                continue;
            }
            if e.at < at {
                out.push(Extent { len: at - e.at, ..e.clone() });
            }
            if e_end > end {
                out.push(Extent { at: end, len: e_end - end, object_offset: e.object_offset + (end - e.at), ..e });
            }
        }
        out.push(Extent { at, len, object: object.to_owned(), object_offset });
        out.sort_by_key(|e| e.at);
        self.extents = out;
        self.size = self.size.max(end);
    }

    fn truncate(&mut self, len: u64) {
        self.extents.retain(|e| e.at < len);
        for e in &mut self.extents {
            e.len = e.len.min(len - e.at);
        }
        self.size = self.size.min(len);
    }

    fn objects(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.extents.iter().map(|e| e.object.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

impl S3Backend {
    /// A name no other upload or object will have: creation time, then 128 random bits
    /// (std's hasher keys come from the host's random source).
    fn unique(&self) -> String {
        let now = self.host.now();
        let a = std::hash::RandomState::new().hash_one(now);
        let b = std::hash::RandomState::new().hash_one(a);
        format!("{now:012}-{a:016x}{b:016x}")
    }

    /// The blob at `key`, unsealed. It must have been sealed for this very key
    /// ([`bound`]), so a store operator cannot move a pointer, manifest or upload record
    /// from one share to another. Blobs written before that binding (bare purpose) still read.
    fn sealed_get(&self, key: &str, purpose: &str) -> BackendResult<Option<Vec<u8>>> {
        let Some(blob) = self.store.get(key)? else { return Ok(None) };
        match self.host.unseal(&bound(purpose, key), &blob) {
            Err(SealError::Tampered) => self.host.unseal(purpose, &blob).map(Some).map_err(|e| seal_error(key, e)),
            other => other.map(Some).map_err(|e| seal_error(key, e)),
        }
    }

    fn sealed_put(&self, key: &str, purpose: &str, plain: &[u8], mode: PutMode) -> BackendResult<()> {
        let blob =
            self.host.seal(&bound(purpose, key), plain).map_err(|e| BackendError::Io(format!("sealing {key}: {e}")))?;
        Ok(self.store.put(key, &blob, mode)?)
    }

    /// The in-progress upload: declared size and id.
    fn upload(&self, si: &StorageIndex, n: ShareNumber) -> BackendResult<Option<(u64, String)>> {
        let Some(plain) = self.sealed_get(&incoming(si, n), UPLOAD_PURPOSE)? else { return Ok(None) };
        let text = String::from_utf8(plain).map_err(|_| corrupt("upload record is not text"))?;
        let (size, id) = text.split_once(' ').ok_or_else(|| corrupt("upload record"))?;
        Ok(Some((size.parse().map_err(|_| corrupt("upload record size"))?, id.to_owned())))
    }

    /// Delete every object under `prefix`; how many there were and their bytes (where the
    /// key tells).
    fn delete_all(&self, prefix: &str) -> BackendResult<(u64, u64)> {
        let (mut count, mut bytes) = (0, 0);
        for key in self.store.list_all(prefix)? {
            if self.store.delete(&key)? {
                count += 1;
                bytes += chunk_span(&key).map_or(0, |(_, len)| len);
            }
        }
        Ok((count, bytes))
    }

    /// Remove an upload in progress: its record, then its chunks. Returns what was removed.
    fn discard_upload(&self, si: &StorageIndex, n: ShareNumber) -> BackendResult<(u64, u64)> {
        let Some((_, id)) = self.upload(si, n)? else { return Ok((0, 0)) };
        // Record first: chunks without a record are leftovers that the sweep removes.
        self.store.delete(&incoming(si, n))?;
        let (count, bytes) = self.delete_all(&chunks(si, n, &id))?;
        Ok((count + 1, bytes))
    }

    fn manifest(&mut self, si: &StorageIndex, n: ShareNumber, fresh: bool) -> BackendResult<Option<Manifest>> {
        if !fresh && let Some(m) = self.manifests.get(&(si.as_str().to_owned(), n)) {
            return Ok(Some(m.clone()));
        }
        self.manifests.remove(&(si.as_str().to_owned(), n));
        let Some(plain) = self.sealed_get(&manifest_key(si, n), MANIFEST_PURPOSE)? else { return Ok(None) };
        let m = Manifest::decode(&plain)?;
        if self.manifests.len() >= CACHE_ENTRIES {
            self.manifests.clear();
        }
        self.manifests.insert((si.as_str().to_owned(), n), m.clone());
        Ok(Some(m))
    }

    /// A read through the manifest the store holds now, not the cached one.
    fn read_fresh(&mut self, si: &StorageIndex, n: ShareNumber, offset: u64, len: u64) -> BackendResult<Payload> {
        let m = self.manifest(si, n, true)?.ok_or(BackendError::NotFound)?;
        self.read_manifest(si, n, &m, offset, len)
    }

    fn read_manifest(
        &self,
        si: &StorageIndex,
        n: ShareNumber,
        m: &Manifest,
        offset: u64,
        len: u64,
    ) -> BackendResult<Payload> {
        let end = offset.saturating_add(len).min(m.size);
        // The chunk ranges the read covers, in order: (key, offset in the chunk, length).
        let mut pieces = Vec::new();
        let mut pos = offset;
        for &(at, clen) in &m.chunks {
            if pos >= end {
                break;
            }
            let c_end = at + clen;
            if c_end <= pos || at > pos {
                continue;
            }
            let take = c_end.min(end) - pos;
            pieces.push((chunk_key(si, n, &m.upload, at, clen), pos - at, take));
            pos += take;
        }
        if pos < end {
            return Err(corrupt("manifest does not cover the share"));
        }
        let short = |key: &str| corrupt(&format!("chunk {key} is shorter than its name says"));
        if let [(key, at, take)] = pieces.as_slice() {
            // Within one chunk (the usual read): the bytes go from the store to the answer
            // without entering this plugin.
            let part = self.store.get_range_payload(key, *at, *take)?.ok_or(BackendError::NotFound)?;
            return if part.len() == *take { Ok(part) } else { Err(short(key)) };
        }
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        for (key, at, take) in pieces {
            let part = self.store.get_range(&key, at, take)?.ok_or(BackendError::NotFound)?;
            if part.len() as u64 != take {
                return Err(short(&key));
            }
            out.extend_from_slice(&part);
        }
        Ok(out.into())
    }

    fn slot(&self, si: &StorageIndex, n: ShareNumber) -> BackendResult<Option<Slot>> {
        match self.sealed_get(&slot_key(si, n), SLOT_PURPOSE)? {
            None => Ok(None),
            Some(plain) => Slot::decode(&plain).map(Some),
        }
    }

    fn read_slot(
        &self,
        si: &StorageIndex,
        n: ShareNumber,
        slot: &Slot,
        offset: u64,
        len: u64,
    ) -> BackendResult<Vec<u8>> {
        let end = offset.saturating_add(len).min(slot.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        for e in &slot.extents {
            let (lo, hi) = (e.at.max(offset), (e.at + e.len).min(end));
            if lo >= hi {
                continue;
            }
            let key = format!("{}{}", slot_data(si, n), e.object);
            let part =
                self.store.get_range(&key, e.object_offset + (lo - e.at), hi - lo)?.ok_or(BackendError::NotFound)?;
            if part.len() as u64 != hi - lo {
                return Err(corrupt(&format!("data object {key} is shorter than its extent")));
            }
            out[(lo - offset) as usize..(hi - offset) as usize].copy_from_slice(&part);
        }
        Ok(out)
    }

    /// Distinct storage indexes of one tree after `after`, up to `want`.
    fn indexes_of(&self, tree: &str, after: Option<&StorageIndex>, want: usize) -> BackendResult<Vec<StorageIndex>> {
        // `<tree>/<si>0` sorts after every key of `si` ('/' < '0') and before the next index.
        let mut start = after.map(|si| format!("{tree}/{si}0"));
        let mut out: Vec<StorageIndex> = Vec::new();
        loop {
            let page = self.store.list_keys(&format!("{tree}/"), start.as_deref(), 1000)?;
            for k in &page.keys {
                let Some(si) = k.split('/').nth(1).and_then(|s| s.parse::<StorageIndex>().ok()) else { continue };
                if out.last() != Some(&si) {
                    out.push(si);
                }
            }
            match page.next {
                Some(next) if out.len() < want => start = Some(next),
                _ => return Ok(out),
            }
        }
    }

    /// Remove chunks of uploads that are neither in progress nor part of a share.
    fn sweep_chunks(&mut self, cutoff: u64, report: &mut SweepReport) -> BackendResult<()> {
        let mut start: Option<String> = None;
        let mut group: Option<(String, Vec<(String, u64)>)> = None;
        loop {
            let page = self.store.list_keys("chunks/", start.as_deref(), 1000)?;
            for key in page.keys {
                report.examined += 1;
                let Some((prefix, _)) = key.rsplit_once('/') else { continue };
                let len = chunk_span(&key).map_or(0, |(_, l)| l);
                match &mut group {
                    Some((p, keys)) if p == prefix => keys.push((key.clone(), len)),
                    _ => {
                        if let Some((p, keys)) = group.take() {
                            self.sweep_group(&p, keys, cutoff, report)?;
                        }
                        group = Some((prefix.to_owned(), vec![(key.clone(), len)]));
                    }
                }
            }
            match page.next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        if let Some((p, keys)) = group {
            self.sweep_group(&p, keys, cutoff, report)?;
        }
        Ok(())
    }

    fn sweep_group(
        &mut self,
        prefix: &str,
        keys: Vec<(String, u64)>,
        cutoff: u64,
        r: &mut SweepReport,
    ) -> BackendResult<()> {
        // chunks/<si>/<n>/<upload>
        let parts: Vec<&str> = prefix.split('/').collect();
        let [_, si, n, upload] = parts[..] else { return Ok(()) };
        let (Ok(si), Ok(n)) = (si.parse::<StorageIndex>(), n.parse::<ShareNumber>()) else { return Ok(()) };
        if created(upload).is_none_or(|t| t > cutoff) {
            return Ok(());
        }
        // Record before manifest: `finish` writes the manifest before it removes the record.
        if self.upload(&si, n)?.is_some_and(|(_, id)| id == upload) {
            return Ok(());
        }
        if self.manifest(&si, n, true)?.is_some_and(|m| m.upload == upload) {
            return Ok(());
        }
        for (key, len) in keys {
            if self.store.delete(&key)? {
                r.removed += 1;
                r.removed_bytes += len;
            }
        }
        Ok(())
    }

    /// Remove upload records older than the cutoff (the host forgot those uploads long ago).
    fn sweep_records(&mut self, cutoff: u64, report: &mut SweepReport) -> BackendResult<()> {
        for key in self.store.list_all("incoming/")? {
            report.examined += 1;
            let parts: Vec<&str> = key.split('/').collect();
            let [_, si, n] = parts[..] else { continue };
            let (Ok(si), Ok(n)) = (si.parse::<StorageIndex>(), n.parse::<ShareNumber>()) else { continue };
            if self.upload(&si, n)?.is_some_and(|(_, id)| created(&id).is_some_and(|t| t <= cutoff)) {
                let (count, bytes) = self.discard_upload(&si, n)?;
                report.removed += count;
                report.removed_bytes += bytes;
            }
        }
        Ok(())
    }

    /// Remove mutable data objects no pointer refers to.
    fn sweep_slot_data(&mut self, cutoff: u64, report: &mut SweepReport) -> BackendResult<()> {
        let mut current: Option<((StorageIndex, ShareNumber), Vec<String>)> = None;
        for key in self.store.list_all("slotdata/")? {
            report.examined += 1;
            let parts: Vec<&str> = key.split('/').collect();
            let [_, si, n, object] = parts[..] else { continue };
            let (Ok(si), Ok(n)) = (si.parse::<StorageIndex>(), n.parse::<ShareNumber>()) else { continue };
            if created(object).is_none_or(|t| t > cutoff) {
                continue;
            }
            if current.as_ref().is_none_or(|(id, _)| id.0 != si || id.1 != n) {
                let live = self.slot(&si, n)?.map(|s| s.objects().into_iter().map(str::to_owned).collect());
                current = Some(((si, n), live.unwrap_or_default()));
            }
            let live = current.as_ref().map(|(_, l)| l.as_slice()).unwrap_or_default();
            if !live.iter().any(|o| o == object) {
                let len = self.store.head(&key)?.unwrap_or(0);
                if self.store.delete(&key)? {
                    report.removed += 1;
                    report.removed_bytes += len;
                }
            }
        }
        Ok(())
    }
}

impl Backend for S3Backend {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "backend-s3",
            env!("CARGO_PKG_VERSION"),
            "shares as write-once objects (chunks, then a sealed manifest) for S3-like stores",
            Concurrency::Pooled,
        )
    }

    fn init(host: Host, config: Config) -> Result<Self, InitError> {
        config.only_keys(&["store"])?;
        let store = host.open_store(config.get("store").unwrap_or("shares"))?;
        Ok(S3Backend { host, store, manifests: HashMap::new() })
    }

    fn begin(&mut self, si: &StorageIndex, n: ShareNumber, size: u64) -> BackendResult<()> {
        if self.store.head(&manifest_key(si, n))?.is_some() {
            return Err(BackendError::Exists);
        }
        self.discard_upload(si, n)?;
        let record = format!("{size} {}", self.unique());
        self.sealed_put(&incoming(si, n), UPLOAD_PURPOSE, record.as_bytes(), PutMode::Overwrite)
    }

    fn write(&mut self, si: &StorageIndex, n: ShareNumber, offset: u64, data: Payload) -> BackendResult<()> {
        let (size, id) = self.upload(si, n)?.ok_or(BackendError::NotFound)?;
        let len = data.len();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(BackendError::OutOfRange(format!("write at {offset} past the declared size {size}")));
        }
        if len > 0 {
            // The chunk goes from the request to the bucket without entering this plugin.
            self.store.put_payload(&chunk_key(si, n, &id, offset, len), data, PutMode::Overwrite)?;
        }
        Ok(())
    }

    fn read_incoming(&mut self, si: &StorageIndex, n: ShareNumber, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        let (size, id) = self.upload(si, n)?.ok_or(BackendError::NotFound)?;
        let end = offset.saturating_add(len).min(size);
        let mut out = vec![0u8; end.saturating_sub(offset) as usize];
        // Rewrites of a range must match what is there (the host checks), so overlaps agree.
        for key in self.store.list_all(&chunks(si, n, &id))? {
            let Some((at, clen)) = chunk_span(&key) else { continue };
            let (lo, hi) = (at.max(offset), (at + clen).min(end));
            if lo < hi {
                let part = self.store.get_range(&key, lo - at, hi - lo)?.unwrap_or_default();
                let start = (lo - offset) as usize;
                out[start..start + part.len()].copy_from_slice(&part);
            }
        }
        Ok(out)
    }

    fn finish(&mut self, si: &StorageIndex, n: ShareNumber) -> BackendResult<()> {
        let (size, id) = self.upload(si, n)?.ok_or(BackendError::NotFound)?;
        let mut spans: Vec<(u64, u64)> =
            self.store.list_all(&chunks(si, n, &id))?.iter().filter_map(|k| chunk_span(k)).collect();
        spans.sort_unstable();
        // Greedy cover of 0..size: at each point take the chunk reaching furthest.
        let (mut pos, mut used, mut i) = (0u64, Vec::new(), 0);
        while pos < size {
            let mut best: Option<(u64, u64)> = None;
            while i < spans.len() && spans[i].0 <= pos {
                if best.is_none_or(|(o, l)| spans[i].0 + spans[i].1 > o + l) {
                    best = Some(spans[i]);
                }
                i += 1;
            }
            match best {
                Some((o, l)) if o + l > pos => {
                    used.push((o, l));
                    pos = o + l;
                }
                _ => return Err(BackendError::OutOfRange(format!("bytes from {pos} of {size} were never written"))),
            }
        }
        let manifest = Manifest { size, upload: id.clone(), chunks: used };
        let sealed = self
            .host
            .seal(&bound(MANIFEST_PURPOSE, &manifest_key(si, n)), &manifest.encode())
            .map_err(|e| BackendError::Io(format!("sealing a manifest: {e}")))?;
        match self.store.put(&manifest_key(si, n), &sealed, PutMode::CreateOnly) {
            Err(BlobError::Exists) => return Err(BackendError::Exists),
            other => other?,
        }
        self.store.delete(&incoming(si, n))?;
        for (o, l) in spans {
            if !manifest.chunks.contains(&(o, l)) {
                self.store.delete(&chunk_key(si, n, &id, o, l))?;
            }
        }
        self.manifests.insert((si.as_str().to_owned(), n), manifest);
        Ok(())
    }

    fn abort(&mut self, si: &StorageIndex, n: ShareNumber) -> BackendResult<()> {
        self.discard_upload(si, n).map(drop)
    }

    fn read(&mut self, si: &StorageIndex, n: ShareNumber, offset: u64, len: u64) -> BackendResult<Payload> {
        let m = self.manifest(si, n, false)?.ok_or(BackendError::NotFound)?;
        match self.read_manifest(si, n, &m, offset, len) {
            // A cached manifest of a share deleted (and perhaps uploaded again) since: its
            // chunks are gone, or, for a read at or past its end (which touches no chunk), its
            // size is all it knows, and the server takes an empty read for the share's end.
            Err(BackendError::NotFound) => self.read_fresh(si, n, offset, len),
            Ok(part) if part.is_empty() && len > 0 => self.read_fresh(si, n, offset, len),
            other => other,
        }
    }

    fn size(&mut self, si: &StorageIndex, n: ShareNumber) -> BackendResult<Option<u64>> {
        Ok(self.manifest(si, n, true)?.map(|m| m.size))
    }

    fn list_shares(&mut self, si: &StorageIndex) -> BackendResult<Vec<ShareNumber>> {
        Ok(share_numbers(&self.store.list_all(&format!("shares/{si}/"))?))
    }

    fn delete(&mut self, si: &StorageIndex, n: ShareNumber) -> BackendResult<bool> {
        let Some(m) = self.manifest(si, n, true)? else { return Ok(false) };
        self.manifests.remove(&(si.as_str().to_owned(), n));
        // Manifest first: the share is gone at once; chunks left by a crash here are swept.
        self.store.delete(&manifest_key(si, n))?;
        self.delete_all(&chunks(si, n, &m.upload))?;
        Ok(true)
    }

    fn mutable_read(&mut self, si: &StorageIndex, n: ShareNumber, offset: u64, len: u64) -> BackendResult<Vec<u8>> {
        // A writer may replace the pointer and delete what the old one named between our two
        // reads; then the new pointer has the data.
        let mut tries = 0;
        loop {
            let Some(slot) = self.slot(si, n)? else { return Ok(Vec::new()) };
            match self.read_slot(si, n, &slot, offset, len) {
                Err(BackendError::NotFound) if tries < 3 => tries += 1,
                other => return other,
            }
        }
    }

    fn mutable_write(
        &mut self,
        si: &StorageIndex,
        n: ShareNumber,
        writes: &[WriteVector],
        new_length: Option<u64>,
    ) -> BackendResult<()> {
        if new_length == Some(0) {
            self.mutable_delete(si, n)?;
            return Ok(());
        }
        let mut slot = self.slot(si, n)?.unwrap_or_default();
        let before: Vec<String> = slot.objects().into_iter().map(str::to_owned).collect();
        let bytes: usize = writes.iter().map(|w| w.data.len()).sum();
        if bytes > 0 {
            let object = self.unique();
            let mut data = Vec::with_capacity(bytes);
            for w in writes.iter().filter(|w| !w.data.is_empty()) {
                let end = w.offset.checked_add(w.data.len() as u64).ok_or(BackendError::NoSpace)?;
                slot.overlay(w.offset, end - w.offset, &object, data.len() as u64);
                data.extend_from_slice(&w.data);
            }
            self.store.put(&format!("{}{object}", slot_data(si, n)), &data, PutMode::CreateOnly)?;
        }
        if let Some(len) = new_length {
            slot.truncate(len);
        }
        if slot.extents.len() > MAX_EXTENTS {
            let whole = self.read_slot(si, n, &slot, 0, slot.size)?;
            let object = self.unique();
            self.store.put(&format!("{}{object}", slot_data(si, n)), &whole, PutMode::CreateOnly)?;
            slot.extents = vec![Extent { at: 0, len: slot.size, object, object_offset: 0 }];
        }
        self.sealed_put(&slot_key(si, n), SLOT_PURPOSE, &slot.encode(), PutMode::Overwrite)?;
        let live = slot.objects();
        for old in before.iter().filter(|o| !live.contains(&o.as_str())) {
            self.store.delete(&format!("{}{old}", slot_data(si, n)))?;
        }
        Ok(())
    }

    fn mutable_size(&mut self, si: &StorageIndex, n: ShareNumber) -> BackendResult<Option<u64>> {
        Ok(self.slot(si, n)?.map(|s| s.size))
    }

    fn mutable_list(&mut self, si: &StorageIndex) -> BackendResult<Vec<ShareNumber>> {
        Ok(share_numbers(&self.store.list_all(&format!("slots/{si}/"))?))
    }

    fn mutable_delete(&mut self, si: &StorageIndex, n: ShareNumber) -> BackendResult<bool> {
        let existed = self.store.delete(&slot_key(si, n))?;
        self.delete_all(&slot_data(si, n))?;
        Ok(existed)
    }

    fn list_indexes(&mut self, start_after: Option<&StorageIndex>, limit: u32) -> BackendResult<IndexPage> {
        let want = limit.clamp(1, 1000) as usize + 1;
        let mut all = self.indexes_of("shares", start_after, want)?;
        all.extend(self.indexes_of("slots", start_after, want)?);
        all.sort();
        Ok(IndexPage::from_sorted(all, start_after, limit))
    }

    fn usage(&mut self) -> BackendResult<Usage> {
        Ok(Usage { available: self.store.available()?, used: None })
    }

    fn sweep(&mut self, grace_seconds: u64) -> BackendResult<SweepReport> {
        let cutoff = self.host.now().saturating_sub(grace_seconds);
        let mut report = SweepReport::default();
        self.sweep_records(cutoff, &mut report)?;
        self.sweep_chunks(cutoff, &mut report)?;
        self.sweep_slot_data(cutoff, &mut report)?;
        Ok(report)
    }
}

marsh_plugin_sdk::export_backend!(S3Backend);
