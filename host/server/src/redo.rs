//! The redo record of a mutable read-test-write: what is written to the accountant, made
//! durable, before the backend applies any byte of the writes, and applied again to settle a
//! slot whose write was interrupted. Its encoding (CBOR `[1, enabler_hash, shares]`) is written
//! and read directly, so a record's data is never copied into a `Value` tree; applying it twice
//! gives the same bytes as applying it once.

use ciborium::value::Value;
use marsh_core::{Backend, BackendError, ShareNumber, StorageIndex, WriteVector};

/// One share's writes as the redo record keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedoShare {
    pub(crate) shnum: ShareNumber,
    pub(crate) writes: Vec<WriteVector>,
    /// `Some(0)` removes the share.
    pub(crate) new_length: Option<u64>,
}

/// A read-test-write as recorded before it is applied: the SHA-256 of its write enabler (put
/// back for the shares it writes if their enabler row went missing) and its writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedoRecord {
    pub(crate) enabler_hash: [u8; 32],
    pub(crate) shares: Vec<RedoShare>,
}

/// CBOR heads, written directly so a record's data is never copied into a `Value` tree.
fn cbor_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend(n.to_be_bytes());
        }
    }
}

/// The redo record: `[1, enabler-hash, [[shnum, new-length or null, [[offset, data], ...]], ...]]`.
pub(crate) fn encode_redo(record: &RedoRecord) -> Vec<u8> {
    let (array, uint, bytes) = (4, 0, 2);
    let size: usize = record.shares.iter().flat_map(|s| &s.writes).map(|w| w.data.len() + 20).sum();
    let mut out = Vec::with_capacity(size + 64);
    cbor_head(&mut out, array, 3);
    cbor_head(&mut out, uint, 1);
    cbor_head(&mut out, bytes, 32);
    out.extend(record.enabler_hash);
    cbor_head(&mut out, array, record.shares.len() as u64);
    for s in &record.shares {
        cbor_head(&mut out, array, 3);
        cbor_head(&mut out, uint, u64::from(s.shnum.0));
        match s.new_length {
            Some(n) => cbor_head(&mut out, uint, n),
            None => out.push(0xf6),
        }
        cbor_head(&mut out, array, s.writes.len() as u64);
        for w in &s.writes {
            cbor_head(&mut out, array, 2);
            cbor_head(&mut out, uint, w.offset);
            cbor_head(&mut out, bytes, w.data.len() as u64);
            out.extend_from_slice(&w.data);
        }
    }
    out
}

/// Read a redo record back.
pub(crate) fn decode_redo(bytes: &[u8]) -> Result<RedoRecord, String> {
    let value: Value = ciborium::de::from_reader(bytes).map_err(|e| format!("not CBOR: {e}"))?;
    let num = |v: &Value| v.as_integer().and_then(|i| u64::try_from(i).ok()).ok_or("expected a number");
    let Value::Array(top) = value else { return Err("not an array".into()) };
    let [version, Value::Bytes(hash), Value::Array(shares)] = top.as_slice() else {
        return Err("not a redo record".into());
    };
    if num(version)? != 1 {
        return Err("unknown redo record version".into());
    }
    let enabler_hash: [u8; 32] = hash.as_slice().try_into().map_err(|_| "enabler hash")?;
    let shares = shares
        .iter()
        .map(|s| {
            let Value::Array(s) = s else { return Err("share: not an array".into()) };
            let [n, len, Value::Array(writes)] = s.as_slice() else { return Err("share: bad shape".into()) };
            let shnum = u16::try_from(num(n)?).map(ShareNumber).map_err(|_| "share number")?;
            let new_length = if len.is_null() { None } else { Some(num(len)?) };
            let writes = writes
                .iter()
                .map(|w| match w {
                    Value::Array(w) => match w.as_slice() {
                        [o, Value::Bytes(d)] => Ok(WriteVector { offset: num(o)?, data: d.clone() }),
                        _ => Err("write: bad shape".to_string()),
                    },
                    _ => Err("write: not an array".to_string()),
                })
                .collect::<Result<_, _>>()?;
            Ok(RedoShare { shnum, writes, new_length })
        })
        .collect::<Result<_, String>>()?;
    Ok(RedoRecord { enabler_hash, shares })
}

/// Apply a redo record's writes (again): idempotent.
pub(crate) async fn apply(backend: &dyn Backend, si: &StorageIndex, shares: &[RedoShare]) -> Result<(), BackendError> {
    for s in shares {
        if s.new_length == Some(0) {
            backend.mutable_delete(si, s.shnum).await?;
        } else {
            backend.mutable_write(si, s.shnum, &s.writes, s.new_length).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;
    use marsh_conformance::reference::ReferenceBackend;

    fn si() -> StorageIndex {
        StorageIndex::from_bytes([4; 16])
    }

    #[test]
    fn a_redo_record_reads_back_and_junk_does_not() {
        let record = RedoRecord {
            enabler_hash: [5; 32],
            shares: vec![
                RedoShare {
                    shnum: ShareNumber(3),
                    writes: vec![
                        WriteVector { offset: 5, data: b"abc".to_vec() },
                        WriteVector { offset: 1 << 40, data: vec![7; 70_000] },
                    ],
                    new_length: Some(300),
                },
                RedoShare { shnum: ShareNumber(9), writes: vec![], new_length: Some(0) },
                RedoShare { shnum: ShareNumber(700), writes: vec![], new_length: None },
            ],
        };
        let bytes = encode_redo(&record);
        assert_eq!(decode_redo(&bytes).unwrap(), record);
        // The hand-written heads are canonical CBOR: a generic encoder agrees byte for byte.
        let int = |n: u64| Value::Integer(n.into());
        let generic = Value::Array(vec![
            int(1),
            Value::Bytes(vec![5; 32]),
            Value::Array(
                record
                    .shares
                    .iter()
                    .map(|s| {
                        Value::Array(vec![
                            int(u64::from(s.shnum.0)),
                            s.new_length.map_or(Value::Null, int),
                            Value::Array(
                                s.writes
                                    .iter()
                                    .map(|w| Value::Array(vec![int(w.offset), Value::Bytes(w.data.clone())]))
                                    .collect(),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ]);
        assert_eq!(bytes, wire::encode(&generic));
        for junk in [&b""[..], b"\x80", &bytes[..9]] {
            assert!(decode_redo(junk).is_err());
        }
    }

    /// Applying a record again over any partial application of it gives the same bytes.
    #[tokio::test]
    async fn applying_a_redo_record_twice_or_after_a_partial_apply_gives_the_new_content() {
        let backend = ReferenceBackend::default();
        let n = ShareNumber(0);
        let old = WriteVector { offset: 0, data: b"0123456789".to_vec() };
        backend.mutable_write(&si(), n, &[old], None).await.unwrap();
        let redo = vec![
            RedoShare {
                shnum: n,
                writes: vec![
                    WriteVector { offset: 2, data: b"AB".to_vec() },
                    WriteVector { offset: 14, data: b"Z".to_vec() },
                    WriteVector { offset: 3, data: b"C".to_vec() },
                ],
                new_length: Some(12),
            },
            RedoShare {
                shnum: ShareNumber(1),
                writes: vec![WriteVector { offset: 0, data: b"x".to_vec() }],
                new_length: None,
            },
        ];
        // A partial application: the first write only.
        backend.mutable_write(&si(), n, &redo[0].writes[..1], None).await.unwrap();
        apply(&backend, &si(), &redo).await.unwrap();
        let once = backend.mutable_read(&si(), n, 0, 100).await.unwrap();
        assert_eq!(once, b"01AC456789\0\0");
        apply(&backend, &si(), &redo).await.unwrap();
        assert_eq!(backend.mutable_read(&si(), n, 0, 100).await.unwrap(), once);
        assert_eq!(backend.mutable_read(&si(), ShareNumber(1), 0, 9).await.unwrap(), b"x");
    }
}
