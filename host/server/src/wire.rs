//! CBOR on the wire: the request schemas the server accepts and the responses it sends,
//! shaped exactly as the Tahoe-LAFS 1.20 client validates them (closed maps, sets as tag 258,
//! byte-string keys in the version answer).
//!
//! Decoding is strict: unknown or missing keys, wrong types, oversized arrays and trailing
//! bytes are errors whose text becomes the 400 body. Wire types stop here; handlers get
//! plain Rust values.

use std::collections::BTreeMap;

use ciborium::value::{Integer, Value};

/// CBOR tag for a set.
const SET_TAG: u64 = 258;

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, SchemaError> {
    Err(SchemaError(msg.into()))
}

/// The most data items one request body may hold (every key, value, array element and tag
/// counts), unless the node's config says otherwise: a read-test-write of a thousand segment
/// writes is about 5,000.
pub const MAX_ITEMS: usize = 100_000;
/// The deepest nesting of arrays, maps and tags a body may have (the schemas need 5).
pub const MAX_DEPTH: usize = 16;

/// Walk the CBOR item that must fill `body` without building it: at most `max_items` data
/// items, nested at most [`MAX_DEPTH`] deep, definite lengths only (Tahoe's client sends
/// nothing else), and no item claiming more bytes than the body holds. Run before decoding, so
/// a body of millions of tiny items is refused having allocated nothing.
pub fn scan(body: &[u8], max_items: usize) -> Result<(), SchemaError> {
    let mut pos = 0usize;
    let mut items = 0usize;
    // Items still to read at each open level of nesting.
    let mut pending: Vec<u64> = vec![1];
    while let Some(left) = pending.last_mut() {
        if *left == 0 {
            pending.pop();
            continue;
        }
        *left -= 1;
        items += 1;
        if items > max_items {
            return err(format!("more than {max_items} CBOR data items in one body"));
        }
        let head = *body.get(pos).ok_or_else(|| SchemaError("truncated CBOR".into()))?;
        pos += 1;
        let (major, info) = (head >> 5, head & 0x1f);
        let argument = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let n = 1usize << (info - 24);
                let bytes = body.get(pos..pos + n).ok_or_else(|| SchemaError("truncated CBOR".into()))?;
                pos += n;
                bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
            }
            31 => return err("indefinite-length CBOR items are not accepted"),
            _ => return err("malformed CBOR head"),
        };
        let nested = match major {
            // Integers, simple values and floats: the head is the whole item.
            0 | 1 | 7 => 0,
            // Byte and text strings: their bytes follow.
            2 | 3 => {
                let len = usize::try_from(argument).ok().filter(|l| *l <= body.len() - pos);
                pos += len.ok_or_else(|| SchemaError("a CBOR string longer than the body".into()))?;
                0
            }
            // An array of n items, a map of n pairs, a tag over one item; none can have more
            // items than the body has bytes left.
            4 => argument,
            5 => argument.checked_mul(2).ok_or_else(|| SchemaError("a CBOR map too large".into()))?,
            6 => 1,
            _ => unreachable!("a major type has three bits"),
        };
        if nested > (body.len() - pos) as u64 {
            return err("a CBOR array or map with more items than the body has bytes");
        }
        if nested > 0 {
            if pending.len() > MAX_DEPTH {
                return err(format!("CBOR nested more than {MAX_DEPTH} deep"));
            }
            pending.push(nested);
        }
    }
    if pos != body.len() {
        return err("trailing bytes after the CBOR item");
    }
    Ok(())
}

/// Decode one CBOR item that must fill the whole body, scanning it first ([`scan`]) with
/// `max_items`.
pub fn decode_limited(body: &[u8], max_items: usize) -> Result<Value, SchemaError> {
    scan(body, max_items)?;
    decode(body)
}

/// Decode one CBOR item that must fill the whole body.
pub fn decode(body: &[u8]) -> Result<Value, SchemaError> {
    let mut cursor = std::io::Cursor::new(body);
    let value: Value =
        ciborium::de::from_reader(&mut cursor).map_err(|e| SchemaError(format!("malformed CBOR: {e}")))?;
    if cursor.position() as usize != body.len() {
        return err("trailing bytes after the CBOR item");
    }
    Ok(value)
}

/// Encode a value.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail for the values built in this module.
    let _ = ciborium::ser::into_writer(value, &mut out);
    out
}

/// A map with text keys, checked to have exactly `keys`.
fn closed_map<'a>(v: &'a Value, keys: &[&str], what: &str) -> Result<BTreeMap<&'a str, &'a Value>, SchemaError> {
    let Value::Map(entries) = v else { return err(format!("{what}: expected a map")) };
    let mut out = BTreeMap::new();
    for (k, val) in entries {
        let Value::Text(k) = k else { return err(format!("{what}: keys must be text")) };
        if !keys.contains(&k.as_str()) {
            return err(format!("{what}: unexpected key {k:?}"));
        }
        if out.insert(k.as_str(), val).is_some() {
            return err(format!("{what}: duplicate key {k:?}"));
        }
    }
    for k in keys {
        if !out.contains_key(k) {
            return err(format!("{what}: missing key {k:?}"));
        }
    }
    Ok(out)
}

fn uint(v: &Value, what: &str) -> Result<u64, SchemaError> {
    match v {
        Value::Integer(i) => {
            u64::try_from(*i).map_err(|_| SchemaError(format!("{what}: expected an unsigned integer")))
        }
        _ => err(format!("{what}: expected an unsigned integer")),
    }
}

fn bytes<'a>(v: &'a Value, what: &str) -> Result<&'a [u8], SchemaError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => err(format!("{what}: expected a byte string")),
    }
}

fn array<'a>(v: &'a Value, max: usize, what: &str) -> Result<&'a [Value], SchemaError> {
    match v {
        Value::Array(a) if a.len() <= max => Ok(a),
        Value::Array(a) => err(format!("{what}: {} entries, at most {max}", a.len())),
        _ => err(format!("{what}: expected an array")),
    }
}

/// A set: tag 258 around an array (accepted without the tag too).
fn set(v: &Value, max: usize, what: &str) -> Result<Vec<u64>, SchemaError> {
    let inner = match v {
        Value::Tag(SET_TAG, inner) => inner.as_ref(),
        Value::Tag(t, _) => return err(format!("{what}: unexpected tag {t}")),
        other => other,
    };
    array(inner, max, what)?.iter().map(|x| uint(x, what)).collect()
}

/// `POST /immutable/:si` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateRequest {
    /// Requested share numbers.
    pub share_numbers: Vec<u64>,
    /// Size of each share.
    pub allocated_size: u64,
}

/// Parse an allocate body.
pub fn allocate_request(v: &Value) -> Result<AllocateRequest, SchemaError> {
    let m = closed_map(v, &["share-numbers", "allocated-size"], "allocate")?;
    Ok(AllocateRequest {
        share_numbers: set(m["share-numbers"], 256, "share-numbers")?,
        allocated_size: uint(m["allocated-size"], "allocated-size")?,
    })
}

/// One test vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestVector {
    /// Where to read.
    pub offset: u64,
    /// How much.
    pub size: u64,
    /// What must be there.
    pub specimen: Vec<u8>,
}

/// One share's part of a read-test-write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareTestWrite {
    /// Tests, all must pass.
    pub test: Vec<TestVector>,
    /// Writes `(offset, data)`.
    pub write: Vec<(u64, Vec<u8>)>,
    /// Truncation, if any.
    pub new_length: Option<u64>,
}

/// `POST /mutable/:si/read-test-write` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadTestWriteRequest {
    /// Per share number.
    pub test_write_vectors: BTreeMap<u64, ShareTestWrite>,
    /// `(offset, size)` reads applied to every existing share.
    pub read_vector: Vec<(u64, u64)>,
}

/// Parse a read-test-write body.
pub fn read_test_write_request(v: &Value) -> Result<ReadTestWriteRequest, SchemaError> {
    let m = closed_map(v, &["test-write-vectors", "read-vector"], "read-test-write")?;
    let Value::Map(twv) = m["test-write-vectors"] else { return err("test-write-vectors: expected a map") };
    if twv.len() > 256 {
        return err("test-write-vectors: more than 256 shares");
    }
    let mut test_write_vectors = BTreeMap::new();
    for (k, v) in twv {
        let shnum = uint(k, "test-write-vectors key")?;
        let s = closed_map(v, &["test", "write", "new-length"], "share test-write vector")?;
        let test = array(s["test"], 30, "test")?
            .iter()
            .map(|t| {
                let t = closed_map(t, &["offset", "size", "specimen"], "test vector")?;
                Ok(TestVector {
                    offset: uint(t["offset"], "offset")?,
                    size: uint(t["size"], "size")?,
                    specimen: bytes(t["specimen"], "specimen")?.to_vec(),
                })
            })
            .collect::<Result<Vec<_>, SchemaError>>()?;
        let write = array(s["write"], usize::MAX, "write")?
            .iter()
            .map(|w| {
                let w = closed_map(w, &["offset", "data"], "write vector")?;
                Ok((uint(w["offset"], "offset")?, bytes(w["data"], "data")?.to_vec()))
            })
            .collect::<Result<Vec<_>, SchemaError>>()?;
        let new_length = match s["new-length"] {
            Value::Null => None,
            other => Some(uint(other, "new-length")?),
        };
        if test_write_vectors.insert(shnum, ShareTestWrite { test, write, new_length }).is_some() {
            return err("test-write-vectors: duplicate share number");
        }
    }
    let read_vector = array(m["read-vector"], 30, "read-vector")?
        .iter()
        .map(|r| {
            let r = closed_map(r, &["offset", "size"], "read vector")?;
            Ok((uint(r["offset"], "offset")?, uint(r["size"], "size")?))
        })
        .collect::<Result<Vec<_>, SchemaError>>()?;
    Ok(ReadTestWriteRequest { test_write_vectors, read_vector })
}

/// Parse an advise-corrupt body: `{reason: tstr .size (1..32765)}`.
pub fn corrupt_request(v: &Value) -> Result<String, SchemaError> {
    let m = closed_map(v, &["reason"], "advise-corrupt")?;
    match m["reason"] {
        Value::Text(t) if !t.is_empty() && t.len() <= 32_765 => Ok(t.clone()),
        Value::Text(_) => err("reason: 1 to 32765 bytes"),
        _ => err("reason: expected text"),
    }
}

fn int(n: u64) -> Value {
    Value::Integer(Integer::from(n))
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn bstr(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

/// A set of share numbers, tagged.
pub fn share_set(numbers: impl IntoIterator<Item = u64>) -> Value {
    Value::Tag(SET_TAG, Box::new(Value::Array(numbers.into_iter().map(int).collect())))
}

/// The version answer; every key and the application version are byte strings.
pub fn version(available: u64, max_immutable: u64, max_mutable: u64, application_version: &str) -> Value {
    Value::Map(vec![
        (
            bstr("http://allmydata.org/tahoe/protocols/storage/v1"),
            Value::Map(vec![
                (bstr("maximum-immutable-share-size"), int(max_immutable.min(available))),
                (bstr("maximum-mutable-share-size"), int(max_mutable)),
                (bstr("available-space"), int(available)),
            ]),
        ),
        (bstr("application-version"), bstr(application_version)),
    ])
}

/// The allocate answer.
pub fn allocate_response(already_have: &[u64], allocated: &[u64]) -> Value {
    Value::Map(vec![
        (text("already-have"), share_set(already_have.iter().copied())),
        (text("allocated"), share_set(allocated.iter().copied())),
    ])
}

/// The PATCH answer: ranges still required.
pub fn required(ranges: &[(u64, u64)]) -> Value {
    Value::Map(vec![(
        text("required"),
        Value::Array(
            ranges.iter().map(|(b, e)| Value::Map(vec![(text("begin"), int(*b)), (text("end"), int(*e))])).collect(),
        ),
    )])
}

/// The read-test-write answer.
pub fn read_test_write_response(success: bool, data: &BTreeMap<u64, Vec<Vec<u8>>>) -> Value {
    Value::Map(vec![
        (text("success"), Value::Bool(success)),
        (
            text("data"),
            Value::Map(
                data.iter()
                    .map(|(n, reads)| (int(*n), Value::Array(reads.iter().map(|r| Value::Bytes(r.clone())).collect())))
                    .collect(),
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_counts_items_before_anything_is_built() {
        let body =
            encode(&Value::Map(vec![(Value::Text("a".into()), Value::Array(vec![Value::Integer(1.into()); 10]))]));
        assert!(scan(&body, 13).is_ok(), "map, key, array and ten integers");
        assert!(scan(&body, 12).unwrap_err().0.contains("more than 12"));
        // Eight million tiny items in 8 MB: refused at the limit, having allocated nothing.
        let mut many = vec![0x9a, 0x00, 0x7a, 0x12, 0x00];
        many.extend(std::iter::repeat_n(0x00, 8_000_000));
        assert!(scan(&many, MAX_ITEMS).unwrap_err().0.contains("more than"));
        for (bad, why) in [
            (vec![0x9f, 0x01, 0xff], "indefinite"),
            (vec![0x5a, 0xff, 0xff, 0xff, 0xff, 0x00], "longer than the body"),
            (vec![0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], "more items than the body"),
            (vec![0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], "too large"),
            (vec![0x18], "truncated"),
            (vec![0x81], "more items than the body"),
            (vec![0x01, 0x02], "trailing"),
            (vec![0x1c], "malformed"),
            (vec![0x81; 40].into_iter().chain([0x00]).collect(), "nested"),
        ] {
            let e = scan(&bad, MAX_ITEMS).expect_err(why);
            assert!(e.0.contains(why), "{why}: {e}");
        }
        for ok in [vec![0xf6], vec![0xc2, 0x41, 0x00], vec![0xa0], vec![0xfb, 0, 0, 0, 0, 0, 0, 0, 0]] {
            assert!(scan(&ok, MAX_ITEMS).is_ok(), "{ok:?}");
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
    }

    #[test]
    fn encodings_match_the_reference_vectors() {
        // shared/GBS.md section 8.
        assert_eq!(
            encode(&allocate_response(&[1], &[7])),
            hex("a26c616c72656164792d68617665d90102810169616c6c6f6361746564d901028107")
        );
        assert_eq!(encode(&required(&[(16, 48)])), hex("a168726571756972656481a265626567696e1063656e641830"));
        assert_eq!(encode(&required(&[])), hex("a168726571756972656480"));
        assert_eq!(encode(&share_set([1, 5])), hex("d90102820105"));
        let data = BTreeMap::from([(0, vec![b"foo".to_vec()]), (5, vec![b"bar".to_vec()])]);
        assert_eq!(
            encode(&read_test_write_response(true, &data)),
            hex("a26773756363657373f56464617461a2008143666f6f058143626172")
        );
        assert_eq!(
            encode(&version(1_000_000, u64::MAX, 69_105_000_000_000_000, "tahoe-lafs/1.20.0")),
            hex(
                "a2582f687474703a2f2f616c6c6d79646174612e6f72672f7461686f652f70726f746f636f6c732f73746f726167652f7631a3581c6d6178696d756d2d696d6d757461626c652d73686172652d73697a651a000f4240581a6d6178696d756d2d6d757461626c652d73686172652d73697a651b00f582a1a13410004f617661696c61626c652d73706163651a000f4240536170706c69636174696f6e2d76657273696f6e517461686f652d6c6166732f312e32302e30"
            )
        );
    }

    #[test]
    fn requests_decode_from_the_reference_vectors() {
        let a = allocate_request(
            &decode(&hex("a26d73686172652d6e756d62657273d901028201076e616c6c6f63617465642d73697a651830")).unwrap(),
        )
        .unwrap();
        assert_eq!(a, AllocateRequest { share_numbers: vec![1, 7], allocated_size: 48 });
        let r = read_test_write_request(&decode(&hex("a272746573742d77726974652d766563746f7273a103a3647465737481a3666f6666736574006473697a65016873706563696d656e4065777269746581a2666f66667365740064646174614a787878787878787878786a6e65772d6c656e677468f66b726561642d766563746f7280")).unwrap()).unwrap();
        let share = &r.test_write_vectors[&3];
        assert_eq!(share.test, vec![TestVector { offset: 0, size: 1, specimen: vec![] }]);
        assert_eq!(share.write, vec![(0, b"xxxxxxxxxx".to_vec())]);
        assert_eq!(share.new_length, None);
        assert!(r.read_vector.is_empty());
        assert_eq!(
            corrupt_request(
                &decode(&hex("a166726561736f6e78216578706563746564206861736820616263642c20676f7420686173682065666768"))
                    .unwrap()
            )
            .unwrap(),
            "expected hash abcd, got hash efgh"
        );
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        assert!(decode(b"\xff\xff").is_err());
        assert!(decode(&hex("a0a0")).is_err(), "trailing item");
        let bad = Value::Map(vec![(text("bad-message"), int(1))]);
        assert!(allocate_request(&bad).unwrap_err().0.contains("bad-message"));
        let missing = Value::Map(vec![(text("allocated-size"), int(1))]);
        assert!(allocate_request(&missing).unwrap_err().0.contains("share-numbers"));
        let too_many = Value::Map(vec![(text("share-numbers"), share_set(0..300)), (text("allocated-size"), int(1))]);
        assert!(allocate_request(&too_many).is_err());
        let negative = Value::Map(vec![
            (text("share-numbers"), share_set([1])),
            (text("allocated-size"), Value::Integer((-1).into())),
        ]);
        assert!(allocate_request(&negative).is_err());
    }
}
