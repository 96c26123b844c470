//! Knowing, without asking SQLite, that the database has *not* changed: an inotify watch on the
//! database's directory. Another process's commit writes the WAL file, and the kernel queues
//! the event inside that write, before the writer's `marsh account ...` returns. The commit
//! becomes visible to readers a moment later, when the writer updates the WAL index in shared
//! memory, which raises no event; so an event only says "a change is under way". Once the
//! directory has been quiet for [`QUIET`] no commit is in flight, and what SQLite
//! (`data_version`) said *after that point* stays true until the next event: the caller asks
//! SQLite once past [`ChangeWatch::quiet_since`], and from then on cached callers stand
//! without a SQLite read (locks, `fcntl`), at the cost of one non-blocking `read` per request,
//! for [`REASK`] at a time.
//!
//! Any event counts (our own writes too), an overflowing queue counts, and a watch the kernel
//! dropped (the directory deleted or moved) answers `None` from then on, so the caller asks
//! SQLite every time.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};

/// `inotify_event.mask` bits after which no more events will come for the watch.
const WATCH_GONE: u32 = 0x0000_8000 /* IN_IGNORED */ | 0x0000_0400 /* IN_DELETE_SELF */
    | 0x0000_0800 /* IN_MOVE_SELF */ | 0x0000_2000 /* IN_UNMOUNT */;

/// How long after the last event the directory must stay quiet before the watch vouches for
/// the database again: longer than a commit takes from its WAL write to its index update,
/// save one stalled in its sync on a saturated disk; for that one the accountant asks SQLite
/// again at least every [`REASK`] anyway. While the directory is not quiet every request asks
/// SQLite (a read transaction: locks, `fcntl`), so this is what a node pays after each of its
/// own writes: 10 s put such checks under nearly all of the 1,000-client idle phase of `make
/// bench`, which follows phases that write.
pub(crate) const QUIET: Duration = Duration::from_secs(2);

/// How long what SQLite said stands, even with the directory quiet: a commit whose WAL write
/// and index update were further apart than [`QUIET`] is seen within this.
pub(crate) const REASK: Duration = Duration::from_secs(1);

/// A watch on the directory holding the database.
#[derive(Debug)]
pub(crate) struct ChangeWatch {
    fd: OwnedFd,
    gone: AtomicBool,
    last_event: Mutex<Option<Instant>>,
}

impl ChangeWatch {
    /// Watch the directory of `db`; `None` if the kernel will not (then ask SQLite instead).
    pub(crate) fn new(db: &Path) -> Option<Self> {
        // SQLite keeps the WAL beside the file a symbolic link leads to.
        let dir = match std::fs::canonicalize(db) {
            Ok(file) => file.parent()?.to_path_buf(),
            Err(_) => std::fs::canonicalize(db.parent()?).ok()?,
        };
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).ok()?;
        let flags = WatchFlags::MODIFY
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF;
        inotify::add_watch(&fd, &dir, flags).ok()?;
        // Until it has been quiet for a while, it vouches for nothing.
        Some(ChangeWatch { fd, gone: AtomicBool::new(false), last_event: Mutex::new(Some(Instant::now())) })
    }

    /// Since when the directory has been quiet, no commit in flight: [`QUIET`] after the last
    /// event, if that has passed. What SQLite said after that instant holds until an event.
    pub(crate) fn quiet_since(&self) -> Option<Instant> {
        let mut last = self.last_event.lock().unwrap_or_else(|p| p.into_inner());
        match self.changed()? {
            true => {
                *last = Some(Instant::now());
                None
            }
            false => {
                let since = last.map_or_else(Instant::now, |at| at + QUIET);
                (since <= Instant::now()).then_some(since)
            }
        }
    }

    /// Whether anything in the directory changed since the last look (`Some(true)` if so),
    /// or `None` once the watch cannot tell any more.
    fn changed(&self) -> Option<bool> {
        if self.gone.load(Ordering::Acquire) {
            return None;
        }
        let mut changed = false;
        let mut buf = [0u8; 4096];
        loop {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    changed = true;
                    if events_end_the_watch(&buf[..n]) {
                        self.gone.store(true, Ordering::Release);
                        return None;
                    }
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => {
                    self.gone.store(true, Ordering::Release);
                    return None;
                }
            }
        }
        Some(changed)
    }
}

/// Whether a buffer of `inotify_event`s holds one after which the watch is gone.
fn events_end_the_watch(mut events: &[u8]) -> bool {
    let field = |b: &[u8], at: usize| b.get(at..at + 4).map(|f| u32::from_ne_bytes([f[0], f[1], f[2], f[3]]));
    while let (Some(mask), Some(len)) = (field(events, 4), field(events, 12)) {
        if mask & WATCH_GONE != 0 {
            return true;
        }
        events = events.get(16 + len as usize..).unwrap_or_default();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_vouches_only_after_a_quiet_spell() {
        let tmp = tempfile::tempdir().unwrap();
        let watch = ChangeWatch::new(&tmp.path().join("accountant.sqlite")).unwrap();
        assert_eq!(watch.quiet_since(), None, "a new watch vouches for nothing yet");
        let event = Instant::now() - QUIET - Duration::from_secs(1);
        *watch.last_event.lock().unwrap() = Some(event);
        assert_eq!(watch.quiet_since(), Some(event + QUIET), "quiet for long enough");
        std::fs::write(tmp.path().join("accountant.sqlite-wal"), b"frames").unwrap();
        assert_eq!(watch.quiet_since(), None, "a commit may be under way");
        assert_eq!(watch.quiet_since(), None, "and still may be, for a while");
    }

    #[test]
    fn writes_in_the_directory_are_seen_and_a_removed_directory_gives_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        let watch = ChangeWatch::new(&dir.join("accountant.sqlite")).unwrap();
        assert_eq!(watch.changed(), Some(false));
        std::fs::write(dir.join("accountant.sqlite-wal"), b"frames").unwrap();
        assert_eq!(watch.changed(), Some(true), "seen as soon as the write returned");
        assert_eq!(watch.changed(), Some(false), "and only once");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(watch.changed(), None, "a watch the kernel dropped cannot vouch for anything");
        assert_eq!(watch.changed(), None);
    }
}
