//! A node's entry in a Tahoe-LAFS 1.20 client's `servers.yaml` (`NODEDIR/private/servers.yaml`,
//! under `storage:`), as `marsh announce` prints one node's and `marsh account servers` every
//! node's of a fleet.

use std::io::Write;

/// One node's entry under `storage:` in a client's `servers.yaml`.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Its server id.
    pub server_id: &'a str,
    /// `node.nickname`.
    pub nickname: &'a str,
    /// The placeholder fURL.
    pub furl: &'a str,
    /// The NURL the client is to use.
    pub nurl: &'a str,
    /// Its permutation seed.
    pub permutation_seed: &'a str,
}

impl Entry<'_> {
    /// Write it, indented to go under `storage:`.
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out, "  {}:", self.server_id)?;
        writeln!(out, "    ann:")?;
        writeln!(out, "      nickname: {}", self.nickname)?;
        writeln!(out, "      anonymous-storage-FURL: {}", self.furl)?;
        writeln!(out, "      anonymous-storage-NURLs:")?;
        writeln!(out, "        - {}", self.nurl)?;
        writeln!(out, "      permutation-seed-base32: {}", self.permutation_seed)
    }
}
