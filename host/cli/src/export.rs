//! Moving a marsh node back to Tahoe-LAFS (`marsh export-tahoe`): a Tahoe 1.20 storage node
//! directory a stock `tahoe run` serves, with the node's identity (so the NURL, server id and
//! tub id its clients know stay the same), its settings in `tahoe.cfg`, and every share in a
//! schema-2 container with its leases (secrets hashed as Tahoe keeps them) and, for a mutable
//! share, its write enabler. The node is only read; the Tahoe directory is written beside its
//! final name and renamed into place last, so it exists complete or not at all.
//!
//! What cannot go back whole is counted and said: a lease recorded before marsh kept Tahoe's
//! hash (schema 6) is written with its expiry and a secret no client holds (the share lives as
//! long as it would have; its holder's next renewal adds a lease of its own), a mutable share
//! whose raw write enabler was not kept (`storage.keep-write-enablers` off when it was made)
//! gets one no client holds (readable, but its writers cannot change it), and named accounts
//! have no Tahoe counterpart (their shares go back; their NURLs are not served).

use std::io::Write;
use std::path::{Path, PathBuf};

use marsh_accountant::{Accountant, LeaseHash};
use marsh_core::{Backend, ShareId, ShareKind, ShareNumber, StorageIndex};
use marsh_node::{ExpireMode, ListenOn};
use marsh_tahoe::Lease;
use marsh_tahoe::cfg::{self, ExportCfg};
use marsh_tahoe::container;

use crate::{Error, Node};

/// Storage indexes listed per backend call.
const PAGE: u32 = 1000;

/// What [`export`] wrote.
#[derive(Debug, Clone, Default)]
pub struct Exported {
    /// Shares written: immutable, mutable.
    pub shares: (u64, u64),
    /// Bytes of share data.
    pub bytes: u64,
    /// Leases written.
    pub leases: u64,
    /// Leases recorded under SHA-256, written with a secret no client holds.
    pub legacy_leases: u64,
    /// Mutable shares whose raw write enabler was not kept, written with one no client holds.
    pub unwritable: Vec<(StorageIndex, ShareNumber)>,
    /// Corruption advisories written.
    pub advisories: u64,
    /// Named accounts (not served by Tahoe).
    pub named_accounts: u64,
    /// Settings with no Tahoe counterpart: (marsh key, value).
    pub not_carried: Vec<(String, String)>,
}

fn random32() -> Result<[u8; 32], Error> {
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| Error::Moving(format!("no randomness: {e}")))?;
    Ok(b)
}

/// The node's settings as `tahoe.cfg` says them, and the ones it cannot say.
fn tahoe_cfg(node: &Node) -> Result<(ExportCfg, Vec<(String, String)>), Error> {
    let c = node.config();
    let mut not_carried = Vec::new();
    let tcp: Vec<std::net::SocketAddr> = c
        .listen
        .iter()
        .filter_map(|l| match l {
            ListenOn::Tcp(a) => Some(*a),
            ListenOn::Unix(_) => None,
        })
        .collect();
    let Some(first) = tcp.first() else {
        return Err(Error::Moving("node.listen has no TCP address: a Tahoe node listens on TCP".into()));
    };
    if c.listen.len() > 1 {
        not_carried.push((
            "node.listen".into(),
            format!("{} listeners; tub.port takes the first TCP one ({first})", c.listen.len()),
        ));
    }
    let ip = match first.ip() {
        std::net::IpAddr::V6(v6) => v6.to_string().replace(':', "\\:"),
        v4 => v4.to_string(),
    };
    let mut storage = vec![
        ("readonly".to_owned(), c.capacity.readonly.to_string()),
        ("reserved_space".to_owned(), c.reserved_space.to_string()),
        ("expire.enabled".to_owned(), c.expire.enabled.to_string()),
        ("expire.immutable".to_owned(), c.expire.immutable.to_string()),
        ("expire.mutable".to_owned(), c.expire.mutable.to_string()),
    ];
    match c.expire.mode {
        ExpireMode::Age { override_seconds } => {
            storage.push(("expire.mode".into(), "age".into()));
            if let Some(s) = override_seconds {
                // Tahoe takes whole days (or months, years): rounded up, so nothing expires sooner.
                let days = s.div_ceil(86_400).max(1);
                if days * 86_400 != s {
                    not_carried.push((
                        "expire.override-lease-duration".into(),
                        format!("{s} s is not whole days: written as {days} days"),
                    ));
                }
                storage.push(("expire.override_lease_duration".into(), format!("{days} days")));
            }
        }
        ExpireMode::CutoffDate(_) => {
            storage.push(("expire.mode".into(), "cutoff-date".into()));
            storage.push(("expire.cutoff_date".into(), node.dir().get("expire.cutoff-date")?));
        }
    }
    if let Some(max) = c.capacity.max_bytes {
        not_carried.push(("storage.max-bytes".into(), format!("{max} bytes: Tahoe has no cap on bytes held")));
    }
    if c.stores.values().any(|s| !matches!(s, marsh_node::StoreSpec::Dir(_))) {
        not_carried.push((
            "store.*".into(),
            "shares on S3 or in memory are copied to the Tahoe node's disk (Tahoe keeps shares on local disk only)"
                .into(),
        ));
    }
    let grid_manager_certificates = (0..c.grid_manager_certificates.len())
        .map(|i| (format!("marsh{i}"), format!("grid-manager-{i}.cert")))
        .collect();
    Ok((
        ExportCfg {
            nickname: c.nickname.clone(),
            tub_port: format!("tcp:{}:interface={ip}", first.port()),
            tub_location: format!("tcp:{}:{}", c.public_host, c.public_port),
            storage,
            grid_manager_certificates,
        },
        not_carried,
    ))
}

fn write_file(path: &Path, data: &[u8], private: bool) -> Result<(), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    let mut f = options.open(path).map_err(Error::io(format!("creating {}", path.display())))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(Error::io(format!("writing {}", path.display())))
}

fn mkdir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(Error::io(format!("creating {}", path.display())))
}

/// The identity files: `private/node.pem`, `node.privkey`, `storage.furl`, `permutation-seed`.
fn write_identity(node: &Node, to: &Path) -> Result<(), Error> {
    let id = node.identity();
    let c = node.config();
    let private = to.join("private");
    mkdir(&private)?;
    std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(Error::io(format!("setting the mode of {}", private.display())))?;
    write_file(&private.join("node.pem"), marsh_tahoe::node::node_pem(&id.cert_der, &id.key_der).as_bytes(), true)?;
    let key = id.signing_key.as_ref().ok_or_else(|| {
        Error::Moving(format!(
            "this node has no signing key (made by an earlier marsh): run `marsh upgrade --dir {}` first",
            node.dir().root().display()
        ))
    })?;
    write_file(&private.join("node.privkey"), format!("{}\n", key.encode()).as_bytes(), true)?;
    let furl = format!("pb://{}@tcp:{}:{}/{}\n", id.tub_id, c.public_host, c.public_port, id.swissnum);
    write_file(&private.join("storage.furl"), furl.as_bytes(), true)?;
    write_file(&to.join("permutation-seed"), format!("{}\n", id.permutation_seed).as_bytes(), false)?;
    // As written: a `Furl` shows itself with its swissnum elided.
    let furls = marsh_node::kinds::furl_texts(&node.dir().get("introducer.furls")?);
    if !furls.is_empty() {
        write_file(&private.join("introducers.yaml"), cfg::introducers_yaml(&furls).as_bytes(), false)?;
    }
    for (i, cert) in c.grid_manager_certificates.iter().enumerate() {
        write_file(&to.join(format!("grid-manager-{i}.cert")), cert.to_string().as_bytes(), false)?;
    }
    Ok(())
}

/// A share's leases as a Tahoe container keeps them.
fn leases_of(accountant: &Accountant, share: &ShareId, done: &mut Exported) -> Result<Vec<Lease>, Error> {
    let mut out = Vec::new();
    for l in accountant.leases(share)? {
        let expires = u32::try_from(l.expires).unwrap_or(u32::MAX);
        let (renew, cancel) = match l.hash {
            LeaseHash::Blake2b => (l.renew_hash, l.cancel_hash),
            LeaseHash::Sha256 => {
                done.legacy_leases += 1;
                (container::blake2b(&random32()?), container::blake2b(&random32()?))
            }
        };
        out.push(Lease { owner: 0, renew, cancel, expires });
    }
    done.leases += out.len() as u64;
    Ok(out)
}

/// Write one share's container under `shares/`: header, data read through the backend chunk
/// by chunk, leases.
async fn write_share(ctx: &Context<'_>, share: ShareId, len: u64, done: &mut Exported) -> Result<(), Error> {
    let leases = leases_of(ctx.accountant, &share, done)?;
    let si = share.si.to_base32();
    let dir = ctx.to.join("storage/shares").join(&si[..2]).join(&si);
    mkdir(&dir)?;
    let path = dir.join(share.shnum.0.to_string());
    let failed = |e| Error::io(format!("writing {}", path.display()))(e);
    let file = std::fs::File::create(&path).map_err(Error::io(format!("creating {}", path.display())))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let (header, trailer) = match share.kind {
        ShareKind::Immutable => {
            (container::immutable_header(len, leases.len()).to_vec(), container::immutable_leases(&leases))
        }
        ShareKind::Mutable => {
            let kept = ctx
                .accountant
                .raw_write_enabler(&share.si, share.shnum)?
                .and_then(|raw| <[u8; 32]>::try_from(raw).ok());
            let enabler = match kept {
                Some(e) => e,
                None => {
                    done.unwritable.push((share.si, share.shnum));
                    random32()?
                }
            };
            (
                container::mutable_header(len, ctx.nodeid, &enabler, &leases),
                container::mutable_trailer(ctx.nodeid, &leases),
            )
        }
    };
    out.write_all(&header).map_err(failed)?;
    let chunk = ctx.backend.max_chunk().max(1) as u64;
    let (si, n) = (share.si, share.shnum);
    let mut offset = 0;
    while offset < len {
        let want = chunk.min(len - offset);
        let data = match share.kind {
            ShareKind::Immutable => ctx.backend.read(&si, n, offset, want).await?,
            ShareKind::Mutable => ctx.backend.mutable_read(&si, n, offset, want).await?,
        };
        if data.is_empty() {
            return Err(Error::Moving(format!(
                "share {si}/{} ended at {offset} bytes of {len} while it was read",
                n.0
            )));
        }
        out.write_all(&data).map_err(failed)?;
        offset += data.len() as u64;
    }
    out.write_all(&trailer).map_err(failed)?;
    out.into_inner().map_err(|e| e.into_error()).and_then(|f| f.sync_all()).map_err(failed)?;
    match share.kind {
        ShareKind::Immutable => done.shares.0 += 1,
        ShareKind::Mutable => done.shares.1 += 1,
    }
    done.bytes += len;
    Ok(())
}

struct Context<'a> {
    backend: &'a dyn Backend,
    accountant: &'a Accountant,
    to: &'a Path,
    nodeid: &'a [u8; 20],
}

/// How far an export is: shares written.
pub type Progress = dyn Fn(u64) + Send + Sync;

/// Write the node as a Tahoe-LAFS 1.20 storage node directory at `to` (which must not exist).
/// Holds the node's serving lock throughout.
pub async fn export(node: &Node, to: &Path, progress: &Progress) -> Result<Exported, Error> {
    let _serving = crate::node::not_while_served(
        node.dir(),
        "a node is exported while nothing serves it (a client's write during the copy would be lost); stop it first",
    )?;
    let id = node.identity();
    if marsh_foolscap::tls::tub_id_of(&id.cert_der) != id.tub_id {
        return Err(Error::Moving(format!(
            "this node's tub id ({}) is not its certificate's hash, as a Tahoe node's is: marsh made it, and a Tahoe \
             node with this certificate would present another tub id, from which clients derive lease secrets and \
             write enablers, so leases would not renew and mutable files could not be written. Only a node adopted \
             from Tahoe (`marsh adopt`) moves back",
            id.tub_id
        )));
    }
    let nodeid: [u8; 20] = data_encoding::BASE32_NOPAD
        .decode(id.tub_id.to_ascii_uppercase().as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Moving(format!("the tub id {} is not 20 bytes of base32", id.tub_id)))?;
    if to.exists() {
        return Err(Error::Moving(format!("{} exists: name a directory that does not", to.display())));
    }
    let partial = PathBuf::from(format!("{}.partial", to.display()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(Error::io(format!("removing {}", partial.display())))?;
    }
    let (cfg, not_carried) = tahoe_cfg(node)?;
    mkdir(&partial.join("storage/shares"))?;
    write_file(&partial.join("tahoe.cfg"), cfg::write_tahoe_cfg(&cfg).as_bytes(), false)?;
    write_file(&partial.join("tahoe-client.tac"), marsh_tahoe::node::CLIENT_TAC.as_bytes(), false)?;
    write_identity(node, &partial)?;

    let started = node.start_backend(&node.runtime()?).await?;
    let accountant = crate::persistence::open_accountant(node.dir())?;
    let mut done = Exported { not_carried, ..Exported::default() };
    let ctx = Context { backend: &*started.backend, accountant: &accountant, to: &partial, nodeid: &nodeid };
    let mut after: Option<StorageIndex> = None;
    loop {
        let page = ctx.backend.list_indexes(after.as_ref(), PAGE).await?;
        for si in &page.indexes {
            for n in ctx.backend.list_shares(si).await? {
                if let Some(len) = ctx.backend.size(si, n).await? {
                    write_share(&ctx, ShareId::immutable(*si, n), len, &mut done).await?;
                }
            }
            for n in ctx.backend.mutable_list(si).await? {
                if let Some(len) = ctx.backend.mutable_size(si, n).await? {
                    write_share(&ctx, ShareId::mutable(*si, n), len, &mut done).await?;
                }
            }
            progress(done.shares.0 + done.shares.1);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let advisories = partial.join("storage/corruption-advisories");
    mkdir(&advisories)?;
    for a in accountant.corruption_advisories()? {
        let (name, body) = marsh_tahoe::advisories::write(&marsh_tahoe::advisories::Advisory {
            at: a.at,
            mutable: a.share.kind == ShareKind::Mutable,
            si: a.share.si,
            shnum: a.share.shnum.0,
            reason: a.reason,
        });
        // Two advisories about one share in one second: the later ones get a fraction of a
        // second, as Tahoe's own names carry.
        let mut path = advisories.join(&name);
        let mut i = 1;
        while path.exists() {
            let (time, rest) = name.split_once("--").unwrap_or((&name, ""));
            path = advisories.join(format!("{time}.{i:06}--{rest}"));
            i += 1;
        }
        write_file(&path, body.as_bytes(), false)?;
        done.advisories += 1;
    }
    done.named_accounts = accountant.accounts()?.len().saturating_sub(1) as u64;
    std::fs::rename(&partial, to).map_err(Error::io(format!("renaming {} to {}", partial.display(), to.display())))?;
    Ok(done)
}
