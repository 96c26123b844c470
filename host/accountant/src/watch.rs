//! Knowing, without asking SQLite, whether the database may have changed: an inotify watch on
//! the database's directory. Another process's commit writes the WAL file, and the kernel
//! queues the event inside that write, before the writer's `marsh account ...` returns; so a
//! request that starts afterwards finds it queued, and a cached caller is never stale. Looking
//! costs one non-blocking `read` instead of a SQLite read transaction (locks, `fcntl`).
//!
//! Any event counts as a change (our own writes too), an overflowing queue counts as a change,
//! and a watch the kernel dropped (the directory deleted or moved) makes [`ChangeWatch::changed`]
//! answer `None` from then on, so the caller falls back to asking SQLite.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::inotify::{self, CreateFlags, WatchFlags};

/// `inotify_event.mask` bits after which no more events will come for the watch.
const WATCH_GONE: u32 = 0x0000_8000 /* IN_IGNORED */ | 0x0000_0400 /* IN_DELETE_SELF */
    | 0x0000_0800 /* IN_MOVE_SELF */ | 0x0000_2000 /* IN_UNMOUNT */;

/// A watch on the directory holding the database.
#[derive(Debug)]
pub(crate) struct ChangeWatch {
    fd: OwnedFd,
    gone: AtomicBool,
}

impl ChangeWatch {
    /// Watch the directory of `db`; `None` if the kernel will not (then ask SQLite instead).
    pub(crate) fn new(db: &Path) -> Option<Self> {
        let dir = db.parent()?;
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).ok()?;
        let flags = WatchFlags::MODIFY
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF;
        inotify::add_watch(&fd, dir, flags).ok()?;
        Some(ChangeWatch { fd, gone: AtomicBool::new(false) })
    }

    /// Whether anything in the directory changed since the last call (`Some(true)` if so),
    /// or `None` once the watch cannot tell any more.
    pub(crate) fn changed(&self) -> Option<bool> {
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
