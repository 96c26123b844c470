//! The share tree of a Tahoe storage directory, walked in order without holding it:
//! `shares/<first two characters of the storage index>/<storage index>/<share number>`, the
//! prefixes, storage indexes and share numbers each in sorted order, one storage index's
//! entries in memory at a time. `shares/incoming/` holds uploads that never finished: counted,
//! never taken.
//!
//! Whatever does not belong (a name that is not a storage index or a share number, a prefix
//! that is not its storage index's, a symbolic link, a device, a directory that cannot be
//! read) is an [`Entry::Problem`] naming its path and why, and the walk goes on.

use std::path::{Path, PathBuf};

use marsh_core::StorageIndex;

/// One thing the walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A share file.
    Share {
        /// Its storage index.
        si: StorageIndex,
        /// Its share number.
        shnum: u16,
        /// The file.
        path: PathBuf,
        /// Its size, bytes.
        size: u64,
    },
    /// An unfinished upload under `incoming/`.
    Incoming {
        /// The file.
        path: PathBuf,
        /// Its size, bytes.
        size: u64,
    },
    /// Something that is not a share.
    Problem {
        /// Where.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The walk: an iterator of [`Entry`].
#[derive(Debug)]
pub struct Shares {
    /// Prefix directories (and `incoming`) not yet entered, in reverse order.
    prefixes: Vec<PathBuf>,
    /// Storage-index directories of the prefix being walked, not yet entered, in reverse order.
    indexes: Vec<PathBuf>,
    /// Entries of the storage index being walked, ready, in reverse order.
    ready: Vec<Entry>,
}

fn problem(path: &Path, why: impl Into<String>) -> Entry {
    Entry::Problem { path: path.to_owned(), why: why.into() }
}

/// The names in `dir`, sorted; or why they cannot be read.
fn sorted(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .map(|e| e.map(|e| e.path()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names)
}

fn name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// What `path` is, without following a symbolic link.
fn kind(path: &Path) -> Result<std::fs::Metadata, String> {
    std::fs::symlink_metadata(path).map_err(|e| e.to_string())
}

impl Shares {
    /// Walk `storage_dir/shares`.
    pub fn walk(storage_dir: &Path) -> Result<Shares, std::io::Error> {
        let root = storage_dir.join("shares");
        let mut prefixes = sorted(&root).map_err(std::io::Error::other)?;
        prefixes.reverse();
        Ok(Shares { prefixes, indexes: Vec::new(), ready: Vec::new() })
    }

    /// Enter the prefix directory `dir`: its storage-index directories, or a problem.
    fn enter_prefix(&mut self, dir: &Path) -> Option<Entry> {
        match kind(dir) {
            Err(e) => return Some(problem(dir, e)),
            Ok(m) if !m.is_dir() => return Some(problem(dir, "not a directory (a prefix directory was expected)")),
            Ok(_) => {}
        }
        if name(dir) == "incoming" {
            self.ready = incoming(dir);
            self.ready.reverse();
            return None;
        }
        let n = name(dir);
        if n.len() != 2 || !n.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)) {
            return Some(problem(dir, "not a prefix directory (two base32 characters)"));
        }
        match sorted(dir) {
            Ok(mut indexes) => {
                indexes.reverse();
                self.indexes = indexes;
                None
            }
            Err(e) => Some(problem(dir, format!("cannot be listed: {e}"))),
        }
    }

    /// The entries of the storage-index directory `dir`.
    fn enter_index(dir: &Path) -> Vec<Entry> {
        let n = name(dir);
        let prefix = dir.parent().map(name).unwrap_or_default();
        let si: StorageIndex = match n.parse() {
            Ok(si) => si,
            Err(_) => return vec![problem(dir, "not a storage index (26 base32 characters)")],
        };
        if !n.starts_with(&prefix) {
            return vec![problem(dir, format!("its prefix directory is `{prefix}`, not `{}`", &n[..2]))];
        }
        match kind(dir) {
            Err(e) => return vec![problem(dir, e)],
            Ok(m) if !m.is_dir() => return vec![problem(dir, "not a directory")],
            Ok(_) => {}
        }
        let files = match sorted(dir) {
            Ok(f) => f,
            Err(e) => return vec![problem(dir, format!("cannot be listed: {e}"))],
        };
        let mut out: Vec<Entry> = files
            .iter()
            .map(|path| {
                let file = name(path);
                let shnum = file.parse::<u16>().ok().filter(|_| file.bytes().all(|b| b.is_ascii_digit()));
                let Some(shnum) = shnum else {
                    return problem(path, "not a share number (0 to 65535)");
                };
                match kind(path) {
                    Err(e) => problem(path, e),
                    Ok(m) if m.file_type().is_symlink() => problem(path, "a symbolic link, not a share file"),
                    Ok(m) if !m.is_file() => problem(path, "not a regular file"),
                    Ok(m) => Entry::Share { si, shnum, path: path.clone(), size: m.len() },
                }
            })
            .collect();
        // Share numbers in numeric order (`10` after `9`).
        out.sort_by_key(|e| match e {
            Entry::Share { shnum, .. } => (0, *shnum),
            _ => (1, 0),
        });
        out
    }
}

/// The files under `incoming/`, at any depth (bounded by the walk's own depth of three).
fn incoming(dir: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut pending = vec![(dir.to_owned(), 0)];
    while let Some((d, depth)) = pending.pop() {
        let Ok(entries) = sorted(&d) else { continue };
        for path in entries {
            match kind(&path) {
                Ok(m) if m.is_dir() && depth < 3 => pending.push((path, depth + 1)),
                Ok(m) if m.is_file() => out.push(Entry::Incoming { path, size: m.len() }),
                _ => {}
            }
        }
    }
    out
}

impl Iterator for Shares {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        loop {
            if let Some(entry) = self.ready.pop() {
                return Some(entry);
            }
            if let Some(dir) = self.indexes.pop() {
                self.ready = Shares::enter_index(&dir);
                self.ready.reverse();
                continue;
            }
            let dir = self.prefixes.pop()?;
            if let Some(p) = self.enter_prefix(&dir) {
                return Some(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_come_in_order_and_what_does_not_belong_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let shares = tmp.path().join("shares");
        let si_a = "aeaqcaibaeaqcaibaeaqcaibae";
        let si_b = "bibaeaqcaibaeaqcaibaeaqcai";
        for (dir, file, body) in [
            (format!("ae/{si_a}"), "10", "ten"),
            (format!("ae/{si_a}"), "9", "nine"),
            (format!("bi/{si_b}"), "0", "zero"),
            (format!("bi/{si_b}"), "x", "junk"),
            (format!("ae/{si_b}"), "0", "misplaced"),
            ("ae/notanindex".to_owned(), "0", "junk"),
            (format!("incoming/ae/{si_a}"), "3", "partial"),
        ] {
            std::fs::create_dir_all(shares.join(&dir)).unwrap();
            std::fs::write(shares.join(&dir).join(file), body).unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", shares.join(format!("bi/{si_b}/1"))).unwrap();
        let all: Vec<Entry> = Shares::walk(tmp.path()).unwrap().collect();
        let found: Vec<(String, u16, u64)> = all
            .iter()
            .filter_map(|e| match e {
                Entry::Share { si, shnum, size, .. } => Some((si.to_base32(), *shnum, *size)),
                _ => None,
            })
            .collect();
        assert_eq!(found, [(si_a.to_owned(), 9, 4), (si_a.to_owned(), 10, 3), (si_b.to_owned(), 0, 4)]);
        let problems: Vec<String> = all
            .iter()
            .filter_map(|e| match e {
                Entry::Problem { path, why } => {
                    Some(format!("{}: {why}", path.strip_prefix(&shares).unwrap().display()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("notanindex: not a storage index")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("its prefix directory is `ae`")), "{problems:?}");
        assert!(problems.iter().any(|p| p.ends_with("/x: not a share number (0 to 65535)")), "{problems:?}");
        assert!(problems.iter().any(|p| p.ends_with("/1: a symbolic link, not a share file")), "{problems:?}");
        assert_eq!(all.iter().filter(|e| matches!(e, Entry::Incoming { size: 7, .. })).count(), 1);
    }
}
