//! `contrib/systemd/marsh.service` as systemd reads it: `systemd-analyze verify` finds nothing
//! to say (no unknown or misspelt directive, an executable `ExecStart`), and the unit keeps the
//! hardening it promises.

use std::process::Command;

use crate::common::text;

#[test]
fn the_systemd_unit_verifies_clean_and_stays_hardened() {
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../contrib/systemd/marsh.service"))
        .expect("contrib/systemd/marsh.service");
    // Where `make install` puts the binary with the default PREFIX, as ExecStart says.
    assert!(unit.contains("\nExecStart=/usr/local/bin/marsh run --dir /var/lib/marsh/node\n"));
    for line in [
        "User=marsh",
        "StateDirectory=marsh",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "LimitNOFILE=65536",
        "RestartPreventExitStatus=3",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
    // Verified against the binary this build made (verify wants ExecStart to exist).
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("marsh.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/marsh", crate::common::BINARY)).expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd) runs");
    assert!(out.status.success() && out.stderr.is_empty(), "{}{}", text(&out.stdout), text(&out.stderr));
}
