//! Tahoe-LAFS share containers, as `allmydata/storage/{immutable,mutable}.py` of 1.20 lay
//! them out (big-endian throughout):
//!
//! - immutable, schema 1 or 2: a 12-byte header `>LLL` (version, an unused size, the lease
//!   count N), the share data, then N lease records of 72 bytes `>L32s32sL` (owner, renew
//!   secret, cancel secret, expiry) at the end of the file. The data's length is not stored:
//!   it is the file's size less the header and the leases.
//! - mutable, schema 1 or 2: a 32-byte magic, the 20-byte nodeid of the server that made it,
//!   the 32-byte write enabler (raw in both schemas), the data length DL `>Q` and the offset E
//!   of the extra leases `>Q`, four lease slots of 92 bytes `>LL32s32s20s` (owner, expiry,
//!   renew, cancel, nodeid; owner 0 is an empty slot), the data at 468, and at E the count X
//!   `>L` of further leases and X more records.
//!
//! Schema 1 keeps lease secrets as they are; schema 2 keeps their BLAKE2b-256 hashes (no key,
//! no personalisation), as [`LeaseSecrets`] says.
//!
//! Every container is hostile input: each length and offset is checked against the file's
//! size before anything is read from it, a lease count that points past the end or an offset
//! before the data is an error naming what is wrong, and nothing is allocated from a number the
//! file claims beyond what the file holds. Reading a container ([`read`]) reads its header and
//! leases only; the data is left to the caller, as a range of the file ([`Container::data`]).

use std::io::{Read, Seek, SeekFrom, Write};

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

/// The 32-byte magic of a mutable container of schema 1.
pub const MUTABLE_MAGIC_V1: [u8; 32] = *b"Tahoe mutable container v1\n\x75\x09\x44\x03\x8e";
/// The 32-byte magic of a mutable container of schema 2.
pub const MUTABLE_MAGIC_V2: [u8; 32] = *b"Tahoe mutable container v2\n\xc3\x55\x21\x99\x25";

/// Bytes of an immutable container's header.
pub const IMMUTABLE_HEADER: u64 = 12;
/// Bytes of one immutable lease record.
pub const IMMUTABLE_LEASE: u64 = 72;
/// Where a mutable container's data begins (header and the four lease slots before it).
pub const MUTABLE_DATA: u64 = 468;
/// Bytes of one mutable lease record.
pub const MUTABLE_LEASE: u64 = 92;
/// Lease seconds a Tahoe lease runs for (its grant time is its expiry less this).
pub const LEASE_SECONDS: u64 = 31 * 24 * 60 * 60;
/// The most leases one container may carry here: far past what any grid puts on a share, and a
/// bound on what a hostile file can make the reader hold.
pub const MAX_LEASES: u64 = 100_000;

/// BLAKE2b-256 of a lease secret, as schema 2 keeps it.
pub fn blake2b(secret: &[u8]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(secret);
    h.finalize().into()
}

/// Which share kind a container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An immutable share.
    Immutable,
    /// A mutable share (a slot).
    Mutable,
}

/// How a container keeps its leases' secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseSecrets {
    /// Schema 1: the secrets themselves.
    Raw,
    /// Schema 2: their BLAKE2b-256 hashes.
    Blake2b,
}

/// One lease, as the container holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Tahoe's owner number (0 for leases made at upload; 1 for those added later).
    pub owner: u32,
    /// The renew secret, or its hash ([`Container::secrets`]).
    pub renew: [u8; 32],
    /// The cancel secret, or its hash.
    pub cancel: [u8; 32],
    /// When it expires, seconds since the epoch.
    pub expires: u32,
}

impl Lease {
    /// Its secrets as schema 2 keeps them: hashed now if the container kept them raw.
    pub fn hashed(&self, secrets: LeaseSecrets) -> ([u8; 32], [u8; 32]) {
        match secrets {
            LeaseSecrets::Raw => (blake2b(&self.renew), blake2b(&self.cancel)),
            LeaseSecrets::Blake2b => (self.renew, self.cancel),
        }
    }
}

/// What a container holds, but its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Immutable or mutable.
    pub kind: Kind,
    /// Its schema: 1 or 2.
    pub schema: u8,
    /// Where its data begins in the file.
    pub data_offset: u64,
    /// How many bytes of data.
    pub data_len: u64,
    /// Its leases (empty mutable slots left out).
    pub leases: Vec<Lease>,
    /// A mutable share's write enabler (raw, as Tahoe keeps it).
    pub write_enabler: Option<[u8; 32]>,
    /// A mutable share's write-enabler nodeid: the tub id of the server that made it.
    pub nodeid: Option<[u8; 20]>,
}

impl Container {
    /// How its leases' secrets are kept.
    pub fn secrets(&self) -> LeaseSecrets {
        if self.schema == 1 { LeaseSecrets::Raw } else { LeaseSecrets::Blake2b }
    }

    /// The data, as `(offset, length)` of the file.
    pub fn data(&self) -> (u64, u64) {
        (self.data_offset, self.data_len)
    }
}

/// Why a file is not a container this reader takes.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Reading the file failed.
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
    /// Too short for any container.
    #[error("{0} bytes: shorter than any share container")]
    TooShort(u64),
    /// Neither a mutable magic nor an immutable version 1 or 2.
    #[error(
        "not a share container: it starts with {0}, neither a mutable container's magic nor immutable version 1 or 2"
    )]
    UnknownVersion(String),
    /// The header's numbers do not fit the file.
    #[error("{0}")]
    Inconsistent(String),
}

fn inconsistent(what: String) -> ContainerError {
    ContainerError::Inconsistent(what)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Read the container in `file` (of `size` bytes): its kind, schema, where its data lies, and
/// its leases.
pub fn read<F: Source>(file: &mut F, size: u64) -> Result<Container, ContainerError> {
    if size < IMMUTABLE_HEADER {
        return Err(ContainerError::TooShort(size));
    }
    let mut head = [0u8; 32];
    let n = read_at(file, 0, &mut head[..size.min(32) as usize])?;
    let head = &head[..n];
    if head.len() == 32 && (head == MUTABLE_MAGIC_V1 || head == MUTABLE_MAGIC_V2) {
        return read_mutable(file, size, if head == MUTABLE_MAGIC_V1 { 1 } else { 2 });
    }
    match be32(head) {
        v @ (1 | 2) => read_immutable(file, size, v as u8),
        _ => Err(ContainerError::UnknownVersion(data_encoding::HEXLOWER.encode(&head[..head.len().min(8)]))),
    }
}

/// Where a container is read from: a file (by `pread`, one system call a read) or, in tests,
/// anything that reads and seeks.
pub trait Source {
    /// Read up to `buf.len()` bytes at `offset`; fewer only at the end.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize>;
}

impl Source for std::fs::File {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match std::os::unix::fs::FileExt::read_at(self, &mut buf[filled..], offset + filled as u64)? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }
}

impl<T: AsRef<[u8]>> Source for std::io::Cursor<T> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        self.seek(SeekFrom::Start(offset))?;
        let mut filled = 0;
        while filled < buf.len() {
            match self.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }
}

/// Read exactly `buf.len()` bytes at `offset` (short only at the end of the file).
fn read_at<F: Source>(file: &mut F, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
    file.read_at(offset, buf)
}

fn read_immutable<F: Source>(file: &mut F, size: u64, schema: u8) -> Result<Container, ContainerError> {
    let mut header = [0u8; 12];
    read_at(file, 0, &mut header)?;
    let count = u64::from(be32(&header[8..12]));
    if count > MAX_LEASES {
        return Err(inconsistent(format!("{count} leases claimed; at most {MAX_LEASES} are read")));
    }
    let leases_bytes = count * IMMUTABLE_LEASE;
    let Some(data_len) = size.checked_sub(IMMUTABLE_HEADER + leases_bytes) else {
        return Err(inconsistent(format!(
            "the lease count ({count}) points past the end: {leases_bytes} bytes of leases in a file of {size}"
        )));
    };
    let mut raw = vec![0u8; leases_bytes as usize];
    if read_at(file, IMMUTABLE_HEADER + data_len, &mut raw)? != raw.len() {
        return Err(inconsistent("the file ended inside its leases".into()));
    }
    let leases = raw
        .chunks_exact(IMMUTABLE_LEASE as usize)
        .map(|r| Lease {
            owner: be32(&r[0..4]),
            renew: r[4..36].try_into().unwrap_or([0; 32]),
            cancel: r[36..68].try_into().unwrap_or([0; 32]),
            expires: be32(&r[68..72]),
        })
        .collect();
    Ok(Container {
        kind: Kind::Immutable,
        schema,
        data_offset: IMMUTABLE_HEADER,
        data_len,
        leases,
        write_enabler: None,
        nodeid: None,
    })
}

/// One mutable lease record; `None` for an empty slot (owner 0).
fn mutable_lease(r: &[u8]) -> Option<Lease> {
    let owner = be32(&r[0..4]);
    (owner != 0).then(|| Lease {
        owner,
        expires: be32(&r[4..8]),
        renew: r[8..40].try_into().unwrap_or([0; 32]),
        cancel: r[40..72].try_into().unwrap_or([0; 32]),
    })
}

fn read_mutable<F: Source>(file: &mut F, size: u64, schema: u8) -> Result<Container, ContainerError> {
    if size < MUTABLE_DATA + 4 {
        return Err(ContainerError::TooShort(size));
    }
    let mut header = vec![0u8; MUTABLE_DATA as usize];
    read_at(file, 0, &mut header)?;
    let nodeid: [u8; 20] = header[32..52].try_into().unwrap_or([0; 20]);
    let enabler: [u8; 32] = header[52..84].try_into().unwrap_or([0; 32]);
    let data_len = be64(&header[84..92]);
    let extra = be64(&header[92..100]);
    let data_end = MUTABLE_DATA.checked_add(data_len).filter(|e| *e <= size).ok_or_else(|| {
        inconsistent(format!("its data length ({data_len}) points past the end of a file of {size} bytes"))
    })?;
    if extra < data_end || extra.checked_add(4).is_none_or(|e| e > size) {
        return Err(inconsistent(format!(
            "its extra leases' offset ({extra}) lies before the end of its data ({data_end}) or past the end of the file ({size})"
        )));
    }
    let mut count = [0u8; 4];
    read_at(file, extra, &mut count)?;
    let count = u64::from(be32(&count));
    if count > MAX_LEASES {
        return Err(inconsistent(format!("{count} extra leases claimed; at most {MAX_LEASES} are read")));
    }
    let extra_bytes = count * MUTABLE_LEASE;
    if extra + 4 + extra_bytes > size {
        return Err(inconsistent(format!(
            "the extra lease count ({count}) points past the end: {extra_bytes} bytes at {} in a file of {size}",
            extra + 4
        )));
    }
    let mut raw = vec![0u8; extra_bytes as usize];
    read_at(file, extra + 4, &mut raw)?;
    let leases = header[100..MUTABLE_DATA as usize]
        .chunks_exact(MUTABLE_LEASE as usize)
        .chain(raw.chunks_exact(MUTABLE_LEASE as usize))
        .filter_map(mutable_lease)
        .collect();
    Ok(Container {
        kind: Kind::Mutable,
        schema,
        data_offset: MUTABLE_DATA,
        data_len,
        leases,
        write_enabler: Some(enabler),
        nodeid: Some(nodeid),
    })
}

/// An immutable container of schema 2 for `data_len` bytes of data with `leases` (secrets
/// hashed, as schema 2 keeps them): its header, then (after the caller writes the data) its
/// leases ([`immutable_leases`]).
pub fn immutable_header(data_len: u64, leases: usize) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0..4].copy_from_slice(&2u32.to_be_bytes());
    h[4..8].copy_from_slice(&u32::try_from(data_len).unwrap_or(u32::MAX).to_be_bytes());
    h[8..12].copy_from_slice(&u32::try_from(leases).unwrap_or(u32::MAX).to_be_bytes());
    h
}

/// The lease records that end an immutable container.
pub fn immutable_leases(leases: &[Lease]) -> Vec<u8> {
    let mut out = Vec::with_capacity(leases.len() * IMMUTABLE_LEASE as usize);
    for l in leases {
        out.extend(l.owner.to_be_bytes());
        out.extend(l.renew);
        out.extend(l.cancel);
        out.extend(l.expires.to_be_bytes());
    }
    out
}

fn mutable_record(l: &Lease, nodeid: &[u8; 20]) -> Vec<u8> {
    let mut r = Vec::with_capacity(MUTABLE_LEASE as usize);
    r.extend(l.owner.max(1).to_be_bytes());
    r.extend(l.expires.to_be_bytes());
    r.extend(l.renew);
    r.extend(l.cancel);
    r.extend(nodeid);
    r
}

/// A mutable container of schema 2 for `data_len` bytes: the 468 bytes before its data, with
/// the first four `leases` (secrets hashed) in the header's slots.
pub fn mutable_header(data_len: u64, nodeid: &[u8; 20], write_enabler: &[u8; 32], leases: &[Lease]) -> Vec<u8> {
    let mut h = Vec::with_capacity(MUTABLE_DATA as usize);
    h.extend(MUTABLE_MAGIC_V2);
    h.extend(nodeid);
    h.extend(write_enabler);
    h.extend(data_len.to_be_bytes());
    h.extend((MUTABLE_DATA + data_len).to_be_bytes());
    for i in 0..4 {
        match leases.get(i) {
            Some(l) => h.extend(mutable_record(l, nodeid)),
            None => h.extend([0u8; MUTABLE_LEASE as usize]),
        }
    }
    h
}

/// What follows a mutable container's data: the count of leases past the first four, and
/// theirs.
pub fn mutable_trailer(nodeid: &[u8; 20], leases: &[Lease]) -> Vec<u8> {
    let extra = leases.get(4..).unwrap_or(&[]);
    let mut t = Vec::with_capacity(4 + extra.len() * MUTABLE_LEASE as usize);
    t.extend(u32::try_from(extra.len()).unwrap_or(u32::MAX).to_be_bytes());
    for l in extra {
        t.extend(mutable_record(l, nodeid));
    }
    t
}

/// Write a whole container to `out`: the header, `data` (copied from the reader), the leases.
pub fn write<W: Write, R: Read>(
    out: &mut W,
    kind: Kind,
    data: &mut R,
    data_len: u64,
    leases: &[Lease],
    mutable: Option<(&[u8; 20], &[u8; 32])>,
) -> std::io::Result<()> {
    match (kind, mutable) {
        (Kind::Immutable, _) => out.write_all(&immutable_header(data_len, leases.len()))?,
        (Kind::Mutable, Some((nodeid, enabler))) => {
            out.write_all(&mutable_header(data_len, nodeid, enabler, leases))?
        }
        (Kind::Mutable, None) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a mutable container needs its write enabler",
            ));
        }
    }
    let copied = std::io::copy(&mut data.take(data_len), out)?;
    if copied != data_len {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the share data ended early"));
    }
    match (kind, mutable) {
        (Kind::Immutable, _) => out.write_all(&immutable_leases(leases)),
        (Kind::Mutable, Some((nodeid, _))) => out.write_all(&mutable_trailer(nodeid, leases)),
        (Kind::Mutable, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.replace(' ', "").as_bytes()).unwrap()
    }

    /// The immutable v2 container Tahoe 1.20 writes for ten bytes and two leases (§9.1 of the
    /// research notes: clock 1700000000.75, renew `R`x32 / cancel `C`x32, then owner 1 `r`/`c`).
    #[test]
    fn an_immutable_v2_container_reads_as_tahoe_wrote_it_and_writes_back_the_same() {
        let mut file = hex("00000002 0000000a 00000002");
        file.extend(b"0123456789");
        for (owner, r, c) in [(0u32, b'R', b'C'), (1, b'r', b'c')] {
            file.extend(owner.to_be_bytes());
            file.extend(blake2b(&[r; 32]));
            file.extend(blake2b(&[c; 32]));
            file.extend(1_702_678_400u32.to_be_bytes());
        }
        assert_eq!(&file[22..26], &hex("00000000")[..], "owner 0");
        assert_eq!(&blake2b(&[b'R'; 32])[..2], &hex("0666")[..], "as Tahoe's nacl blake2b");
        let c = read(&mut Cursor::new(&file), file.len() as u64).unwrap();
        assert_eq!((c.kind, c.schema, c.data()), (Kind::Immutable, 2, (12, 10)));
        assert_eq!(c.leases.len(), 2);
        assert_eq!((c.leases[0].owner, c.leases[0].expires), (0, 1_702_678_400));
        assert_eq!(c.leases[1].renew, blake2b(&[b'r'; 32]));
        let mut out = Vec::new();
        write(&mut out, Kind::Immutable, &mut &file[12..22], 10, &c.leases, None).unwrap();
        assert_eq!(out, file, "written back byte for byte");
    }

    #[test]
    fn a_v1_container_keeps_raw_secrets_which_hash_into_v2s() {
        let mut file = hex("00000001 00000004 00000001");
        file.extend(b"abcd");
        file.extend(0u32.to_be_bytes());
        file.extend([b'R'; 32]);
        file.extend([b'C'; 32]);
        file.extend(1_234_567_890u32.to_be_bytes());
        let c = read(&mut Cursor::new(&file), file.len() as u64).unwrap();
        assert_eq!((c.schema, c.secrets(), c.data_len), (1, LeaseSecrets::Raw, 4));
        assert_eq!(c.leases[0].hashed(c.secrets()), (blake2b(&[b'R'; 32]), blake2b(&[b'C'; 32])));
    }

    fn mutable_v2(data: &[u8], leases: usize) -> Vec<u8> {
        let nodeid: [u8; 20] = std::array::from_fn(|i| i as u8);
        let lease = |i: usize| Lease {
            owner: 1,
            renew: blake2b(&[i as u8; 32]),
            cancel: blake2b(&[!(i as u8); 32]),
            expires: 1_702_678_400,
        };
        let leases: Vec<Lease> = (0..leases).map(lease).collect();
        let mut out = Vec::new();
        write(&mut out, Kind::Mutable, &mut &data[..], data.len() as u64, &leases, Some((&nodeid, &[b'W'; 32])))
            .unwrap();
        out
    }

    /// The mutable v2 container of §9.3: 13 bytes, six leases (four in the header, two after).
    #[test]
    fn a_mutable_v2_container_with_leases_past_the_header_slots() {
        let file = mutable_v2(b"hello mutable", 6);
        assert_eq!(file.len(), 669, "468 + 13 + 4 + 2 x 92");
        assert_eq!(&file[..32], &MUTABLE_MAGIC_V2);
        assert_eq!(be64(&file[84..92]), 13);
        assert_eq!(be64(&file[92..100]), 481);
        let c = read(&mut Cursor::new(&file), file.len() as u64).unwrap();
        assert_eq!((c.kind, c.schema, c.data()), (Kind::Mutable, 2, (468, 13)));
        assert_eq!(c.write_enabler, Some([b'W'; 32]));
        assert_eq!(c.leases.len(), 6);
        assert_eq!(c.leases[5].renew, blake2b(&[5; 32]));
        // An empty slot (owner 0) is not a lease.
        let mut one_empty = file.clone();
        one_empty[100..104].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(read(&mut Cursor::new(&one_empty), 669).unwrap().leases.len(), 5);
    }

    #[test]
    fn hostile_containers_are_refused_with_what_is_wrong_and_nothing_claimed_is_allocated() {
        let ok = mutable_v2(b"data", 1);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("empty", Vec::new(), "shorter than any"),
            (
                "a lease count past the end",
                {
                    let mut f = hex("00000002 00000004 00000009");
                    f.extend(b"abcd");
                    f
                },
                "points past the end",
            ),
            ("a huge lease count", hex("00000002 00000004 ffffffff"), "at most"),
            ("unknown version", hex("00000003 00000000 00000000"), "neither"),
            (
                "mutable data past the end",
                {
                    let mut f = ok.clone();
                    f[84..92].copy_from_slice(&u64::MAX.to_be_bytes());
                    f
                },
                "data length",
            ),
            (
                "extra leases before the data's end",
                {
                    let mut f = ok.clone();
                    f[92..100].copy_from_slice(&100u64.to_be_bytes());
                    f
                },
                "extra leases' offset",
            ),
            (
                "extra lease count past the end",
                {
                    let mut f = ok.clone();
                    let e = be64(&f[92..100]) as usize;
                    f[e..e + 4].copy_from_slice(&7u32.to_be_bytes());
                    f
                },
                "extra lease count",
            ),
            ("truncated mutable", ok[..300].to_vec(), "shorter than any"),
        ];
        for (what, file, says) in cases {
            let e = read(&mut Cursor::new(&file), file.len() as u64).expect_err(what);
            assert!(e.to_string().contains(says), "{what}: {e}");
        }
    }
}
