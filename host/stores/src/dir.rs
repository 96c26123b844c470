//! The `dir` driver: objects as files under one root directory.
//!
//! Every path is resolved through a cap-std [`Dir`] opened on the root, so no key, `..`,
//! absolute path or symlink can reach outside it (cap-std refuses the escape; validated
//! [`BlobKey`]s refuse most of them earlier). Whole-object writes go to a temporary file under
//! `.marsh-tmp/`, are fsynced, then linked (create-only) or renamed (overwrite) into place, and
//! the parent directory is fsynced: a reader sees the old object or the new one, never half.
//! Blocking file work runs on tokio's blocking pool, except what the kernel can answer from its
//! caches (a read of cached pages, a listing of one directory, a size): that is answered in
//! place ([`cached`](crate::cached)).

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use cap_fs_ext::OpenOptionsMaybeDirExt;
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};

use crate::cached;
use crate::key::reserved_component;
use crate::{BlobKey, BlobStore, BlobUpload, MAX_PAGE, Page, PutMode, StoreError, page_of};

const TMP_DIR: &str = ".marsh-tmp";

/// A store rooted at one directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    name: String,
    root_path: PathBuf,
    root: Arc<Dir>,
}

impl DirStore {
    /// Open (creating if needed) the directory `root` as the store `name`.
    pub fn open(name: &str, root: &Path) -> Result<Self, StoreError> {
        let io = |e: std::io::Error| StoreError::Io(format!("store `{name}`: cannot open {}: {e}", root.display()));
        std::fs::create_dir_all(root).map_err(io)?;
        let dir = Dir::open_ambient_dir(root, ambient_authority()).map_err(io)?;
        dir.create_dir_all(TMP_DIR).map_err(io)?;
        remove_stale_temporaries(&dir, STALE_TEMPORARY);
        Ok(DirStore { name: name.to_owned(), root_path: root.to_owned(), root: Arc::new(dir) })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &str,
        f: impl FnOnce(&Dir) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let root = self.root.clone();
        let result = tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|e| StoreError::Io(format!("store `{}` {op}: worker failed: {e}", self.name)))?;
        result.map_err(|e| StoreError::from_io(&self.name, op, key, &e))
    }
}

/// A temporary file untouched this long belongs to no write in progress: a whole-object write
/// finishes in far less, and a streamed upload touches its file with every append.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Remove temporary files (of whole-object writes and streamed uploads) not modified for
/// `age`: what writes interrupted by a crash left behind. Returns how many went; a file that
/// cannot be read or removed is left for the next open.
fn remove_stale_temporaries(root: &Dir, age: std::time::Duration) -> u64 {
    let Ok(entries) = root.read_dir(TMP_DIR) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.into_std().elapsed().ok())
            .is_some_and(|elapsed| elapsed >= age);
        if stale && entry.remove_file().is_ok() {
            removed += 1;
        }
    }
    removed
}

fn random_name() -> std::io::Result<String> {
    let mut bytes = [0u8; 12];
    getrandom::getrandom(&mut bytes).map_err(std::io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn ensure_parent(root: &Dir, key: &str) -> std::io::Result<()> {
    match key.rsplit_once('/') {
        Some((parent, _)) => root.create_dir_all(parent),
        None => Ok(()),
    }
}

/// How often an operation under `key` is tried again when a directory on its path vanished.
const PARENT_RETRIES: usize = 16;

/// Run `op`, which creates something under `key`, making `key`'s parent directories when it
/// finds them missing (tried first without: they are there for most operations, and making
/// them is a system call per level). Another writer's pruning (`prune_empty_parents`, after
/// it removed the last entry of a directory) may remove a directory between its creation here
/// and `op` (`op` fails with `NotFound`), or while the path is being made (making it fails with
/// `NotFound`, or with `AlreadyExists` when a directory another writer made is gone again by
/// the time it is looked at); then the two steps are taken again.
fn in_parent<T>(root: &Dir, key: &str, mut op: impl FnMut(&Dir) -> std::io::Result<T>) -> std::io::Result<T> {
    use std::io::ErrorKind::{AlreadyExists, NotFound};
    let mut tries = 0;
    loop {
        match op(root) {
            Err(e) if e.kind() == NotFound && tries < PARENT_RETRIES => tries += 1,
            other => return other,
        }
        match ensure_parent(root, key) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), NotFound | AlreadyExists) && tries < PARENT_RETRIES => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

fn sync_parent(root: &Dir, key: &str) -> std::io::Result<()> {
    let parent = key.rsplit_once('/').map_or(".", |(p, _)| p);
    // An O_PATH handle (what `open_dir` gives) cannot be fsynced; open the directory for reading.
    root.open_with(parent, OpenOptions::new().read(true).maybe_dir(true))?.sync_all()
}

/// Remove empty directories from `key`'s parent up towards the root, leaving the top-level
/// ones (`shares/`, `incoming/`, ...): they empty and fill again all the time, and making and
/// removing a directory per upload is work for nothing.
fn prune_empty_parents(root: &Dir, key: &str) {
    let mut path = key;
    while let Some((parent, _)) = path.rsplit_once('/') {
        if !parent.contains('/') || root.remove_dir(parent).is_err() {
            break;
        }
        path = parent;
    }
}

/// Move a finished temporary file into place under `key`, durably.
fn install(root: &Dir, tmp: &str, key: &str, mode: PutMode) -> std::io::Result<()> {
    match mode {
        PutMode::Overwrite => {
            if root.symlink_metadata(key).is_ok_and(|m| m.is_dir()) {
                let _ = root.remove_file(tmp);
                return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a directory is in the way"));
            }
            in_parent(root, key, |root| root.rename(tmp, root, key))?
        }
        PutMode::CreateOnly => {
            // link(2) fails if the target exists, which makes create-only atomic.
            let linked = in_parent(root, key, |root| root.hard_link(tmp, root, key));
            let _ = root.remove_file(tmp);
            linked?
        }
    }
    sync_parent(root, key)
}

fn write_tmp(root: &Dir, data: &[u8]) -> std::io::Result<String> {
    let tmp = format!("{TMP_DIR}/{}", random_name()?);
    let mut file = root.open_with(&tmp, OpenOptions::new().write(true).create_new(true))?;
    let written = file.write_all(data).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = root.remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

fn is_file(root: &Dir, key: &str) -> std::io::Result<Option<u64>> {
    match root.metadata(key) {
        Ok(m) if m.is_file() => Ok(Some(m.len())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(20) => Ok(None), // ENOTDIR: a file where a directory was expected
        Err(e) => Err(e),
    }
}

/// Whether every key in the subtree `dir/` (with its trailing slash) sorts at or before
/// `start_after`, so a listing resuming there can skip it.
fn wholly_before(dir: &str, start_after: Option<&str>) -> bool {
    start_after.is_some_and(|a| !a.starts_with(dir) && a > dir)
}

/// Walk the tree in key order, collecting file keys that start with `prefix` and sort after
/// `start_after`, stopping once `want` keys are found. Directories sort as `name/`, which
/// makes depth-first order equal to the byte order of full keys.
fn walk(
    root: &Dir,
    dir: &str,
    prefix: &str,
    start_after: Option<&str>,
    want: usize,
    out: &mut Vec<String>,
) -> std::io::Result<()> {
    // When the prefix names this directory's next component in full (`slots/ab/<si>/` at the
    // top), only that subtree can match: go straight into it rather than reading and sorting
    // the whole level. A lease renewal lists two such prefixes; with 2,000 slots stored the
    // level reads made it cost about 1 ms of CPU.
    let here = if dir.is_empty() { String::new() } else { format!("{dir}/") };
    if let Some((component, _)) = prefix.strip_prefix(&here).and_then(|rest| rest.split_once('/'))
        && !component.is_empty()
    {
        // The same rules as the listing below: no key has a host-reserved, `.` or `..`
        // component, and only a real directory (not a symlink) is entered.
        if reserved_component(component) || component == "." || component == ".." {
            return Ok(());
        }
        let full = format!("{here}{component}");
        let real_dir = match root.symlink_metadata(&full) {
            Ok(m) => m.is_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => false,
            Err(e) => return Err(e),
        };
        if !real_dir || wholly_before(&format!("{full}/"), start_after) {
            return Ok(());
        }
        return walk(root, &full, prefix, start_after, want, out);
    }
    let entries = match if dir.is_empty() { root.read_dir(".") } else { root.read_dir(dir) } {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut names: Vec<(String, bool)> = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if reserved_component(&name) {
            continue;
        }
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            names.push((format!("{name}/"), true));
        } else if file_type.is_file() {
            names.push((name, false));
        }
    }
    names.sort();
    for (name, is_dir) in names {
        if out.len() >= want {
            return Ok(());
        }
        let full = if dir.is_empty() { name.clone() } else { format!("{dir}/{name}") };
        if is_dir {
            // Skip subtrees that cannot hold a matching key.
            if !(full.starts_with(prefix) || prefix.starts_with(&full)) {
                continue;
            }
            if wholly_before(&full, start_after) {
                continue;
            }
            walk(root, full.trim_end_matches('/'), prefix, start_after, want, out)?;
        } else if full.starts_with(prefix) && start_after.is_none_or(|a| full.as_str() > a) {
            out.push(full);
        }
    }
    Ok(())
}

/// Up to `n` bytes of `k` from `offset`. Read through std's `File`: cap-std's `File` does not
/// forward `read_buf`, so `Take<cap_std::fs::File>` zero-fills the buffer before every read
/// (7.6% of a download's CPU in perf before this).
fn read_range(root: &Dir, k: &str, offset: u64, n: u64) -> std::io::Result<Vec<u8>> {
    let mut file = root.open(k)?.into_std();
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    file.take(n).read_to_end(&mut buf)?;
    Ok(buf)
}

#[async_trait]
impl BlobStore for DirStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn get(&self, key: &BlobKey) -> Result<Option<Vec<u8>>, StoreError> {
        let k = key.as_str().to_owned();
        self.blocking("get", key.as_str(), move |root| match is_file(root, &k)? {
            Some(_) => root.read(&k).map(Some),
            None => Ok(None),
        })
        .await
    }

    async fn get_range(&self, key: &BlobKey, offset: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(data) = cached::read_range(&self.root, key.as_str(), offset, len) {
            return Ok(Some(data));
        }
        let k = key.as_str().to_owned();
        self.blocking("get-range", key.as_str(), move |root| {
            let Some(size) = is_file(root, &k)? else {
                return Ok(None);
            };
            let start = offset.min(size);
            let n = len.min(size - start);
            read_range(root, &k, start, n).map(Some)
        })
        .await
    }

    async fn head(&self, key: &BlobKey) -> Result<Option<u64>, StoreError> {
        if let Some(size) = cached::size(&self.root, key.as_str()) {
            return Ok(size);
        }
        let k = key.as_str().to_owned();
        self.blocking("head", key.as_str(), move |root| is_file(root, &k)).await
    }

    async fn put(&self, key: &BlobKey, data: Vec<u8>, mode: PutMode) -> Result<(), StoreError> {
        let k = key.as_str().to_owned();
        self.blocking("put", key.as_str(), move |root| {
            let tmp = write_tmp(root, &data)?;
            install(root, &tmp, &k, mode)
        })
        .await
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool, StoreError> {
        let k = key.as_str().to_owned();
        self.blocking("delete", key.as_str(), move |root| {
            if is_file(root, &k)?.is_none() {
                return Ok(false);
            }
            root.remove_file(&k)?;
            prune_empty_parents(root, &k);
            Ok(true)
        })
        .await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        if let Some(keys) = cached::list_files(&self.root, prefix) {
            return Ok(page_of(keys.iter().map(String::as_str), prefix, start_after, limit));
        }
        let (prefix, after) = (prefix.to_owned(), start_after.map(str::to_owned));
        let p = prefix.clone();
        let found = self
            .blocking("list", &prefix, move |root| {
                let mut out = Vec::new();
                walk(root, "", &p, after.as_deref(), limit + 1, &mut out)?;
                Ok(out)
            })
            .await?;
        Ok(page_of(found.iter().map(String::as_str), &prefix, None, limit))
    }

    async fn begin_upload(&self, key: &BlobKey, mode: PutMode) -> Result<Box<dyn BlobUpload>, StoreError> {
        let tmp = self
            .blocking("begin-upload", key.as_str(), |root| {
                let tmp = format!("{TMP_DIR}/{}", random_name()?);
                root.open_with(&tmp, OpenOptions::new().write(true).create_new(true))?;
                Ok(tmp)
            })
            .await?;
        Ok(Box::new(DirUpload { store: self.clone(), key: key.clone(), mode, tmp, offset: 0 }))
    }

    async fn available(&self) -> Result<Option<u64>, StoreError> {
        self.blocking("available", "", |root| {
            let st = rustix::fs::fstatvfs(root).map_err(std::io::Error::from)?;
            Ok(Some(st.f_bavail.saturating_mul(st.f_frsize)))
        })
        .await
    }

    fn random_access(&self) -> bool {
        true
    }

    async fn write_at(&self, key: &BlobKey, offset: u64, data: Vec<u8>) -> Result<(), StoreError> {
        let k = key.as_str().to_owned();
        self.blocking("write-at", key.as_str(), move |root| {
            let file = in_parent(root, &k, |root| root.open_with(&k, OpenOptions::new().write(true).create(true)))?;
            file.into_std().write_all_at(&data, offset)
        })
        .await
    }

    async fn set_len(&self, key: &BlobKey, len: u64) -> Result<(), StoreError> {
        let k = key.as_str().to_owned();
        self.blocking("set-len", key.as_str(), move |root| {
            in_parent(root, &k, |root| root.open_with(&k, OpenOptions::new().write(true).create(true)))?.set_len(len)
        })
        .await
    }

    async fn sync(&self, key: &BlobKey) -> Result<(), StoreError> {
        let k = key.as_str().to_owned();
        self.blocking("sync", key.as_str(), move |root| {
            root.open_with(&k, OpenOptions::new().write(true))?.sync_all()?;
            sync_parent(root, &k)
        })
        .await
    }

    async fn rename(&self, from: &BlobKey, to: &BlobKey, mode: PutMode) -> Result<(), StoreError> {
        let (f, t) = (from.as_str().to_owned(), to.as_str().to_owned());
        self.blocking("rename", from.as_str(), move |root| {
            if is_file(root, &f)?.is_none() {
                return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such object"));
            }
            root.open_with(&f, OpenOptions::new().write(true))?.sync_all()?;
            match mode {
                PutMode::Overwrite => in_parent(root, &t, |root| root.rename(&f, root, &t))?,
                PutMode::CreateOnly => {
                    in_parent(root, &t, |root| root.hard_link(&f, root, &t))?;
                    root.remove_file(&f)?;
                }
            }
            sync_parent(root, &t)?;
            prune_empty_parents(root, &f);
            Ok(())
        })
        .await
    }
}

struct DirUpload {
    store: DirStore,
    key: BlobKey,
    mode: PutMode,
    tmp: String,
    offset: u64,
}

#[async_trait]
impl BlobUpload for DirUpload {
    async fn append(&mut self, data: Vec<u8>) -> Result<(), StoreError> {
        let (tmp, offset) = (self.tmp.clone(), self.offset);
        let n = data.len() as u64;
        self.store
            .blocking("upload-append", self.key.as_str(), move |root| {
                root.open_with(&tmp, OpenOptions::new().write(true))?.into_std().write_all_at(&data, offset)
            })
            .await?;
        self.offset += n;
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<(), StoreError> {
        let (tmp, key, mode) = (self.tmp.clone(), self.key.as_str().to_owned(), self.mode);
        self.store
            .blocking("upload-finish", self.key.as_str(), move |root| {
                root.open_with(&tmp, OpenOptions::new().write(true))?.sync_all()?;
                install(root, &tmp, &key, mode)
            })
            .await
    }

    async fn abort(self: Box<Self>) {
        let tmp = self.tmp.clone();
        let _ = self.store.blocking("upload-abort", self.key.as_str(), move |root| root.remove_file(&tmp)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> BlobKey {
        BlobKey::new(k).unwrap()
    }

    #[test]
    fn opening_removes_temporaries_that_no_write_touches_any_more() {
        let tmp = tempfile::tempdir().unwrap();
        drop(DirStore::open("t", tmp.path()).unwrap());
        let (stale, fresh) = (tmp.path().join(TMP_DIR).join("stale"), tmp.path().join(TMP_DIR).join("fresh"));
        std::fs::write(&stale, b"half a put").unwrap();
        std::fs::write(&fresh, b"a put in progress").unwrap();
        let old = std::time::SystemTime::now() - STALE_TEMPORARY - std::time::Duration::from_secs(60);
        std::fs::File::options().write(true).open(&stale).unwrap().set_modified(old).unwrap();
        drop(DirStore::open("t", tmp.path()).unwrap());
        assert!(!stale.exists(), "left by a crash");
        assert!(fresh.exists(), "may belong to a write in progress");
    }

    /// Writers under sibling keys race the empty-directory pruning of each other's finished
    /// work (an upload staged under `incoming/PREFIX/SI/N` and renamed into `shares/`, as
    /// backend-disk does): a directory one of them just made, or is about to make, may be
    /// removed by another that found it empty. Every operation still succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_survive_each_others_directory_pruning() {
        let tmp = tempfile::tempdir().unwrap();
        let s = DirStore::open("t", tmp.path()).unwrap();
        let mut tasks = Vec::new();
        for w in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..400 {
                    // Few prefixes, so the writers keep emptying and refilling the same ones.
                    let name = format!("{}/{w}-{i}/0", i % 3);
                    let (incoming, complete) = (key(&format!("incoming/{name}")), key(&format!("shares/{name}")));
                    s.set_len(&incoming, 64).await?;
                    s.write_at(&incoming, 0, b"data".to_vec()).await?;
                    s.rename(&incoming, &complete, PutMode::CreateOnly).await?;
                    s.delete(&complete).await?;
                }
                Ok::<_, StoreError>(())
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn objects_round_trip_and_list_in_key_order() {
        let tmp = tempfile::tempdir().unwrap();
        let s = DirStore::open("t", tmp.path()).unwrap();
        for k in ["a-c", "a/b", "a/a/z", "b", "a.x"] {
            s.put(&key(k), k.as_bytes().to_vec(), PutMode::CreateOnly).await.unwrap();
        }
        assert_eq!(s.put(&key("b"), b"2".to_vec(), PutMode::CreateOnly).await, Err(StoreError::Exists));
        assert_eq!(s.get(&key("b")).await.unwrap().unwrap(), b"b");
        s.put(&key("b"), b"22".to_vec(), PutMode::Overwrite).await.unwrap();
        assert_eq!(s.head(&key("b")).await.unwrap(), Some(2));
        let all = s.list("", None, 100).await.unwrap();
        let mut sorted = all.keys.clone();
        sorted.sort();
        assert_eq!(all.keys, sorted);
        assert_eq!(all.keys.len(), 5);
        let page = s.list("a", None, 2).await.unwrap();
        assert_eq!(page.keys, vec!["a-c", "a.x"]);
        let rest = s.list("a", page.next.as_deref(), 2).await.unwrap();
        assert_eq!(rest.keys, vec!["a/a/z", "a/b"]);
        assert_eq!(rest.next, None);
        assert_eq!(s.get_range(&key("a/a/z"), 2, 10).await.unwrap().unwrap(), b"a/z");
        assert_eq!(s.get_range(&key("a/a/z"), 10, 10).await.unwrap().unwrap(), b"");
        assert!(s.delete(&key("a/a/z")).await.unwrap());
        assert!(!tmp.path().join("a/a").exists(), "empty parents are pruned");
        assert!(!s.delete(&key("a/a/z")).await.unwrap());
    }

    #[tokio::test]
    async fn a_prefix_naming_directories_lists_what_a_full_walk_would() {
        let tmp = tempfile::tempdir().unwrap();
        let s = DirStore::open("t", tmp.path()).unwrap();
        let keys = ["slots/ab/abc/0", "slots/ab/abc/1", "slots/ab/abd/0", "slots/ac/acx/2", "slots/ab/abc-x/3"];
        for k in keys {
            s.put(&key(k), b"x".to_vec(), PutMode::CreateOnly).await.unwrap();
        }
        // A symlinked directory and a host-reserved one are never entered by either path.
        std::os::unix::fs::symlink(tmp.path().join("slots/ab/abc"), tmp.path().join("slots/ab/abz")).unwrap();
        std::fs::create_dir_all(tmp.path().join("slots/ab/.marsh-x")).unwrap();
        std::fs::write(tmp.path().join("slots/ab/.marsh-x/9"), b"hidden").unwrap();
        let everything = s.list("", None, 100).await.unwrap().keys;
        for prefix in
            ["slots/ab/abc/", "slots/ab/abc", "slots/ab/", "slots/ab/abz/", "slots/ab/.marsh-x/", "slots/zz/q/"]
        {
            let expected: Vec<String> = everything.iter().filter(|k| k.starts_with(prefix)).cloned().collect();
            assert_eq!(s.list(prefix, None, 100).await.unwrap().keys, expected, "prefix {prefix}");
        }
        assert_eq!(s.list("slots/ab/abc/", None, 100).await.unwrap().keys, vec!["slots/ab/abc/0", "slots/ab/abc/1"]);
        let after = s.list("slots/ab/abc/", Some("slots/ab/abc/0"), 100).await.unwrap();
        assert_eq!(after.keys, vec!["slots/ab/abc/1"]);
        assert!(s.list("slots/ab/abc/", Some("slots/ab/abd"), 100).await.unwrap().keys.is_empty());
        assert!(s.list("slots/ab/../ab/abc/", None, 100).await.unwrap().keys.is_empty());
    }

    #[tokio::test]
    async fn nothing_reaches_outside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"do not read").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("escape")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), tmp.path().join("link")).unwrap();
        let s = DirStore::open("t", tmp.path()).unwrap();
        for k in ["escape/secret", "link"] {
            let got = s.get(&key(k)).await;
            assert!(!matches!(got, Ok(Some(_))), "{k} was read: {got:?}");
            assert!(s.write_at(&key(k), 0, b"pwned".to_vec()).await.is_err(), "{k} written");
        }
        assert_eq!(std::fs::read(outside.path().join("secret")).unwrap(), b"do not read");
        assert!(s.put(&key("escape/new"), b"x".to_vec(), PutMode::Overwrite).await.is_err());
        assert!(!outside.path().join("new").exists());
    }

    #[tokio::test]
    async fn random_access_and_uploads() {
        let tmp = tempfile::tempdir().unwrap();
        let s = DirStore::open("t", tmp.path()).unwrap();
        s.write_at(&key("in/x"), 4, b"cd".to_vec()).await.unwrap();
        s.write_at(&key("in/x"), 0, b"ab".to_vec()).await.unwrap();
        assert_eq!(s.get(&key("in/x")).await.unwrap().unwrap(), b"ab\0\0cd");
        s.set_len(&key("in/x"), 3).await.unwrap();
        s.sync(&key("in/x")).await.unwrap();
        s.put(&key("out/x"), b"old".to_vec(), PutMode::Overwrite).await.unwrap();
        assert_eq!(s.rename(&key("in/x"), &key("out/x"), PutMode::CreateOnly).await, Err(StoreError::Exists));
        s.rename(&key("in/x"), &key("out/y"), PutMode::CreateOnly).await.unwrap();
        assert_eq!(s.get(&key("out/y")).await.unwrap().unwrap(), b"ab\0");
        let mut u = s.begin_upload(&key("big"), PutMode::CreateOnly).await.unwrap();
        u.append(b"hello ".to_vec()).await.unwrap();
        assert_eq!(s.head(&key("big")).await.unwrap(), None, "invisible until finished");
        u.append(b"world".to_vec()).await.unwrap();
        u.finish().await.unwrap();
        assert_eq!(s.get(&key("big")).await.unwrap().unwrap(), b"hello world");
        let u = s.begin_upload(&key("gone"), PutMode::CreateOnly).await.unwrap();
        u.abort().await;
        assert_eq!(std::fs::read_dir(tmp.path().join(".marsh-tmp")).unwrap().count(), 0);
        assert!(s.available().await.unwrap().unwrap() > 0);
    }
}
