//! What the `dir` driver can answer from the kernel's caches, on the calling thread.
//!
//! Handing a file operation to tokio's blocking pool and back costs two thread wake-ups; for
//! a lease renewal (two listings of one directory) and for a download (a read of pages the
//! upload left in the page cache) that was most of the work: perf put 45% of a renewal-bound
//! server's samples in futex waits, wake-ups and context switches, and a download's
//! `finish_task_switch` at 4.3% of its samples against 1.5% for a server reading in place.
//!
//! So [`DirStore`](crate::DirStore) first tries here, in place, and only what cannot be done
//! without waiting on the disk goes to the pool: paths are opened with `openat2`'s
//! `RESOLVE_CACHED` (the open fails with `EAGAIN` unless every component is in the dentry
//! cache) and data is read with `preadv2`'s `RWF_NOWAIT` (a page not in the page cache ends
//! the read with `EAGAIN`). Reading a directory's entries has no such flag: a directory whose
//! path was just resolved from the dentry cache has, nearly always, its blocks cached too.
//!
//! Every function answers `None` when it cannot answer this way, or meets anything unusual (a
//! symlink, a reserved or `..` component, a subdirectory where files were expected, an error
//! of any kind): the caller then does the same work on the blocking pool, whose answer is the
//! canonical one. What is answered here is only ever what that path would answer. The
//! resolution stays beneath the store's root (`RESOLVE_BENEATH`, no symlinks followed).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use cap_std::fs::Dir;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::key::reserved_component;

/// How a path is opened here.
#[derive(Clone, Copy)]
enum Open {
    /// To read a file's bytes.
    Read,
    /// To read a directory's entries.
    Directory,
    /// To `fstat` only (`O_PATH`): a size needs no descriptor for reading, and the close of
    /// one is the file's release, where ext4 may start writing back a file truncated earlier
    /// (`auto_da_alloc`); an upload's size is asked before each of its writes.
    Stat,
}

/// Open `path` under `root` if that takes no disk access; `Err(true)` when `path` (or a
/// directory on it) certainly does not exist, `Err(false)` when this cannot say.
fn open(root: &Dir, path: &str, how_for: Open) -> Result<OwnedFd, bool> {
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::CACHED;
    let flags = OFlags::CLOEXEC
        | OFlags::NOFOLLOW
        | match how_for {
            Open::Read => OFlags::RDONLY,
            Open::Directory => OFlags::RDONLY | OFlags::DIRECTORY,
            Open::Stat => OFlags::PATH,
        };
    match rustix::fs::openat2(root.as_fd(), path, flags, Mode::empty(), how) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT) => Err(true),
        Err(_) => Err(false),
    }
}

/// Up to `len` bytes of the regular file `key` from `offset` (fewer at its end), or `None`.
/// `key` is a validated [`BlobKey`](crate::BlobKey)'s text.
pub(crate) fn read_range(root: &Dir, key: &str, offset: u64, len: u64) -> Option<Vec<u8>> {
    let fd = open(root, key, Open::Read).ok()?;
    let stat = rustix::fs::fstat(&fd).ok()?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return None;
    }
    let size = u64::try_from(stat.st_size).ok()?;
    let start = offset.min(size);
    let n = usize::try_from(len.min(size - start)).ok()?;
    let mut buf: Vec<u8> = Vec::with_capacity(n);
    while buf.len() < n {
        let at = start + buf.len() as u64;
        match read_nowait(&fd, &mut buf, at) {
            Ok(0) => break, // the file shrank: the blocking path would stop here too
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    Some(buf)
}

/// One `preadv2(RWF_NOWAIT)` at `at` into `buf`'s spare capacity, appended: the bytes read,
/// or `EAGAIN` when the next page is not in the page cache. rustix's `preadv2` takes
/// initialised buffers only, and zeroing a 1 MiB buffer before every read costs a tenth of a
/// download's CPU; so libc's, on the spare capacity.
#[allow(unsafe_code)]
fn read_nowait(fd: &OwnedFd, buf: &mut Vec<u8>, at: u64) -> std::io::Result<usize> {
    let offset = libc::off_t::try_from(at).map_err(std::io::Error::other)?;
    let spare = buf.spare_capacity_mut();
    let iov = libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: spare.len() };
    // SAFETY: one iovec over `spare`, valid for writes of its length for the whole call; the
    // descriptor is open (borrowed from `fd`).
    let got = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    let got = usize::try_from(got).map_err(|_| std::io::Error::last_os_error())?;
    let len = buf.len() + got;
    assert!(len <= buf.capacity(), "preadv2 read past its buffer");
    // SAFETY: the kernel wrote `got` bytes at `buf.len()..len`, within the capacity.
    unsafe { buf.set_len(len) };
    Ok(got)
}

/// The size of the regular file `key`; `Some(None)` when certainly there is none.
pub(crate) fn size(root: &Dir, key: &str) -> Option<Option<u64>> {
    let fd = match open(root, key, Open::Stat) {
        Ok(fd) => fd,
        Err(true) => return Some(None),
        Err(false) => return None,
    };
    let stat = rustix::fs::fstat(&fd).ok()?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return None;
    }
    u64::try_from(stat.st_size).ok().map(Some)
}

/// The most entries a directory listed here may have: the whole directory is read to sort
/// it, and a larger one (a strategy's flat directory of records, say) is read on the pool.
const MOST_ENTRIES: usize = 1024;

/// Every key under `prefix` in key order, when `prefix` names one directory (`a/b/`) holding
/// regular files only, at most [`MOST_ENTRIES`]; an empty list when that directory certainly
/// does not exist.
pub(crate) fn list_files(root: &Dir, prefix: &str) -> Option<Vec<String>> {
    let dir = prefix.strip_suffix('/')?;
    let sound = |c: &str| !c.is_empty() && c != "." && c != ".." && !reserved_component(c);
    if !dir.split('/').all(sound) {
        return None;
    }
    let fd = match open(root, dir, Open::Directory) {
        Ok(fd) => fd,
        Err(true) => return Some(Vec::new()),
        Err(false) => return None,
    };
    let mut keys = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd).ok()? {
        let entry = entry.ok()?;
        let Ok(name) = entry.file_name().to_str() else { continue };
        if name == "." || name == ".." || reserved_component(name) {
            continue;
        }
        if keys.len() == MOST_ENTRIES {
            return None;
        }
        match entry.file_type() {
            FileType::RegularFile => keys.push(format!("{prefix}{name}")),
            FileType::Directory | FileType::Unknown => return None,
            _ => {} // symlinks and the rest are no objects, as the blocking path has it
        }
    }
    keys.sort_unstable();
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;

    fn root() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).unwrap();
        (tmp, dir)
    }

    #[test]
    fn reads_what_the_page_cache_holds() {
        let (_tmp, root) = root();
        root.create_dir_all("a/b").unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        root.write("a/b/0", &data).unwrap();
        // Just written: in the page cache, and the path in the dentry cache.
        assert_eq!(read_range(&root, "a/b/0", 10, 1000).unwrap(), &data[10..1010]);
        assert_eq!(read_range(&root, "a/b/0", 99_990, 1000).unwrap(), &data[99_990..]);
        assert_eq!(read_range(&root, "a/b/0", 200_000, 10).unwrap(), b"");
        assert_eq!(size(&root, "a/b/0"), Some(Some(100_000)));
        // Looked up once, a missing name is in the dentry cache too (a negative entry).
        assert!(!root.exists("a/b/1"));
        assert_eq!(size(&root, "a/b/1"), Some(None));
        assert_eq!(read_range(&root, "a/b/1", 0, 10), None, "a missing file is for the blocking path to say");
    }

    #[test]
    fn lists_one_directory_of_files_and_leaves_the_rest() {
        let (_tmp, root) = root();
        root.create_dir_all("t/ab/si").unwrap();
        for n in ["9", "10", "2"] {
            root.write(format!("t/ab/si/{n}"), b"x").unwrap();
        }
        root.write("t/ab/si/.marsh-x", b"x").unwrap();
        assert_eq!(list_files(&root, "t/ab/si/").unwrap(), ["t/ab/si/10", "t/ab/si/2", "t/ab/si/9"]);
        assert!(!root.exists("t/ab/none"));
        assert_eq!(list_files(&root, "t/ab/none/"), Some(vec![]), "a missing directory holds nothing");
        assert_eq!(list_files(&root, "t/ab/"), None, "a subdirectory is for the blocking path");
        assert_eq!(list_files(&root, "t/ab/si"), None, "not a directory's prefix");
        assert_eq!(list_files(&root, "t/../t/ab/si/"), None);
        assert_eq!(list_files(&root, ".marsh-tmp/"), None);
    }

    #[test]
    fn a_large_directory_is_left_to_the_blocking_path() {
        let (_tmp, root) = root();
        root.create_dir_all("d").unwrap();
        for n in 0..MOST_ENTRIES {
            root.write(format!("d/{n}"), b"").unwrap();
        }
        assert_eq!(list_files(&root, "d/").map(|k| k.len()), Some(MOST_ENTRIES));
        root.write("d/one-more", b"").unwrap();
        assert_eq!(list_files(&root, "d/"), None);
    }

    #[test]
    fn symlinks_and_escapes_are_left_to_the_blocking_path() {
        let (tmp, root) = root();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), tmp.path().join("link")).unwrap();
        assert_eq!(read_range(&root, "out/secret", 0, 1), None);
        assert_eq!(read_range(&root, "link", 0, 1), None);
        assert_eq!(size(&root, "link"), None);
        assert_eq!(list_files(&root, "out/"), None);
        assert_eq!(read_range(&root, "../x", 0, 1), None);
    }
}
