//! The node directory a stock Tahoe-LAFS 1.20 made (`tests/fixtures/node-made-by-1.20`: `tahoe
//! create-node`, then a stock client stored an immutable file, an SDMF and an MDMF mutable file
//! on it and added leases with `tahoe check --add-lease`), read as `marsh adopt` reads it.

use std::path::{Path, PathBuf};

use marsh_tahoe::container::{self, Kind, LeaseSecrets};
use marsh_tahoe::{Entry, Shares, TahoeNode};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node-made-by-1.20")
}

#[test]
fn its_identity_reads_and_holds_together() {
    let node = TahoeNode::open(&fixture()).expect("a storage node");
    assert_eq!(node.storage_dir, fixture().join("storage"));
    assert_eq!(node.running(), None);
    let id = node.identity().expect("its identity");
    let my_nodeid = std::fs::read_to_string(fixture().join("my_nodeid")).expect("my_nodeid");
    assert_eq!(id.tub_id, my_nodeid.trim(), "the tub id is the certificate's SHA-1, as Tahoe wrote it");
    assert_eq!(id.hints, ["tcp:127.0.0.1:54523"]);
    assert_eq!(id.swissnum.len(), 32);
    assert!(id.node_key.starts_with("priv-v0-"));
    // An RSA key in PKCS#8 (`rsaEncryption`), as Foolscap writes it.
    assert!(id.key_pkcs8.windows(9).any(|w| w == [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]));
    assert_eq!(node.introducers().len(), 1);
    assert_eq!(node.cfg.get("node", "tub.port"), Some("tcp:54523:interface=127.0.0.1"));
}

#[test]
fn its_shares_read_with_their_leases() {
    let node = TahoeNode::open(&fixture()).expect("a storage node");
    let tub: Vec<u8> = data_encoding::BASE32_NOPAD
        .decode(node.identity().expect("identity").tub_id.to_ascii_uppercase().as_bytes())
        .expect("base32");
    let mut kinds = Vec::new();
    for entry in Shares::walk(&node.storage_dir).expect("walk") {
        let Entry::Share { path, size, shnum, .. } = entry else { panic!("only shares in the fixture: {entry:?}") };
        assert_eq!(shnum, 0);
        let mut file = std::fs::File::open(&path).expect("open");
        let c = container::read(&mut file, size).expect("a container");
        assert_eq!((c.schema, c.secrets()), (2, LeaseSecrets::Blake2b), "1.20 writes schema 2");
        assert_eq!(c.leases.len(), 1, "the client's lease, renewed by `check --add-lease`, not doubled");
        assert!(c.leases[0].expires > 1_796_000_000, "a 31-day lease from when the fixture was made");
        match c.kind {
            Kind::Immutable => {
                assert_eq!(c.data_len, size - 12 - 72);
            }
            Kind::Mutable => {
                assert_eq!(
                    c.nodeid.map(|n| n.to_vec()),
                    Some(tub.clone()),
                    "the write enabler's node id is this tub's"
                );
                assert_eq!(c.data_len + 468 + 4, size, "no extra leases");
            }
        }
        kinds.push(c.kind);
    }
    kinds.sort_by_key(|k| *k == Kind::Mutable);
    assert_eq!(kinds, [Kind::Immutable, Kind::Mutable, Kind::Mutable]);
}
