//! `marsh-bench-cipher`: what the TLS record cipher alone costs on this CPU, in seconds of one
//! core per GiB, for the TLS 1.3 suites marsh's rustls (on `ring`) offers: the figure the
//! floor's user-space CPU per GiB is compared with (`make bench`).
//!
//! Each suite's AEAD seals and opens full-size records (16 KiB of plaintext, the largest TLS
//! allows) with `ring`, the provider marsh's TLS runs on, over 1 GiB (`MARSH_CIPHER_GIB`
//! changes it), on one thread; the time is wall time of that thread on an otherwise idle core.
//! A server pays "open" for an upload and "seal" for a download.
//!
//! Usage: `marsh-bench-cipher` (prints a table, then a `RESULT {json}` line).

#![allow(clippy::print_stdout, reason = "a benchmark prints its results")]

use std::time::Instant;

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, Algorithm, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

/// Plaintext bytes per TLS record at most.
const RECORD: usize = 16 << 10;

fn nonce(i: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&i.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Seconds per GiB to seal, then to open, `gib` GiB in full records with `alg`.
fn measure(alg: &'static Algorithm, gib: u64) -> anyhow::Result<(f64, f64)> {
    let key_bytes = vec![7u8; alg.key_len()];
    let key = LessSafeKey::new(UnboundKey::new(alg, &key_bytes).map_err(|_| anyhow::anyhow!("key"))?);
    let records = gib * (1 << 30) / RECORD as u64;
    let mut buf = vec![0x5au8; RECORD];
    let aad = [0x17u8, 3, 3, 0x40, 0x11];
    // One sealed record to open again and again (opening checks the tag, so it must be real).
    let mut sealed = buf.clone();
    let tag =
        key.seal_in_place_separate_tag(nonce(0), Aad::from(aad), &mut sealed).map_err(|_| anyhow::anyhow!("seal"))?;
    sealed.extend_from_slice(tag.as_ref());

    let started = Instant::now();
    for i in 0..records {
        let tag =
            key.seal_in_place_separate_tag(nonce(i), Aad::from(aad), &mut buf).map_err(|_| anyhow::anyhow!("seal"))?;
        let _ = std::hint::black_box(tag);
    }
    let seal = started.elapsed().as_secs_f64() / gib as f64;

    // Opening decrypts in place, so each round starts from a fresh copy of the sealed record;
    // the copies alone are timed too and taken off.
    let mut work = sealed.clone();
    let started = Instant::now();
    for _ in 0..records {
        work.copy_from_slice(std::hint::black_box(&sealed));
        std::hint::black_box(&mut work);
    }
    let copies = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for _ in 0..records {
        work.copy_from_slice(&sealed);
        let plain = key.open_in_place(nonce(0), Aad::from(aad), &mut work).map_err(|_| anyhow::anyhow!("open"))?;
        std::hint::black_box(plain);
    }
    let open = (started.elapsed().as_secs_f64() - copies).max(0.0) / gib as f64;
    Ok((seal, open))
}

fn main() -> anyhow::Result<()> {
    let gib: u64 = std::env::var("MARSH_CIPHER_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let suites: [(&str, &'static Algorithm); 3] = [
        ("TLS13_AES_256_GCM_SHA384", &AES_256_GCM),
        ("TLS13_AES_128_GCM_SHA256", &AES_128_GCM),
        ("TLS13_CHACHA20_POLY1305_SHA256", &CHACHA20_POLY1305),
    ];
    println!("TLS record cipher alone, ring, 16 KiB records, {gib} GiB each way, one thread");
    println!("| suite | seal (download) s/GiB | open (upload) s/GiB |");
    println!("|---|---|---|");
    let mut json = Vec::new();
    for (name, alg) in suites {
        let (seal, open) = measure(alg, gib)?;
        println!("| {name} | {seal:.3} | {open:.3} |");
        json.push(format!("\"{name}\":{{\"seal_s_per_gib\":{seal:.4},\"open_s_per_gib\":{open:.4}}}"));
    }
    println!("RESULT {{{}}}", json.join(","));
    Ok(())
}
