//! Banana, Foolscap's serialization: a stream of tokens, each a header (a non-negative integer
//! in base-128 digits, least significant first, each byte below 0x80, at most 64 of them), a
//! type byte (0x80 and up), and for some types a body whose length the header gives.
//!
//! | type | byte | header | body |
//! |---|---|---|---|
//! | LIST (old) | 0x80 | count | - |
//! | INT | 0x81 | the value | - |
//! | STRING | 0x82 | length | the bytes |
//! | NEG | 0x83 | minus the value | - |
//! | FLOAT | 0x84 | - | 8 bytes, big-endian IEEE 754 |
//! | LONGINT, LONGNEG | 0x85, 0x86 | length | big-endian magnitude |
//! | VOCAB | 0x87 | index into the vocabulary table | - |
//! | OPEN, CLOSE, ABORT | 0x88, 0x89, 0x8A | the sequence's open count | - |
//! | ERROR | 0x8D | length (at most 1000) | a message |
//! | PING, PONG | 0x8E, 0x8F | a number echoed back | - |
//!
//! [`Decoder`] refuses, before buffering a body: a header longer than 64 digits or larger than
//! 64 bits, an unknown type byte, an ERROR longer than 1000 bytes, and a STRING or long integer
//! longer than its configured limit. Foolscap hangs up on all of these; so does its caller.

use std::fmt;

/// The longest header, in base-128 digits, as Foolscap allows.
pub const MAX_HEADER_DIGITS: usize = 64;
/// The longest ERROR body, as Foolscap allows.
pub const MAX_ERROR: usize = 1000;

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    /// An old-style list of this many items.
    List(u64),
    /// A non-negative integer.
    Int(u64),
    /// A negative integer: minus this.
    Neg(u64),
    /// A byte string.
    String(Vec<u8>),
    /// A float.
    Float(f64),
    /// A big non-negative integer, big-endian magnitude.
    LongInt(Vec<u8>),
    /// A big negative integer, big-endian magnitude.
    LongNeg(Vec<u8>),
    /// A string by its index in the vocabulary table.
    Vocab(u64),
    /// Begin sequence number `n`.
    Open(u64),
    /// End sequence number `n`.
    Close(u64),
    /// Abandon sequence number `n`.
    Abort(u64),
    /// The peer's complaint, after which it hangs up.
    Error(Vec<u8>),
    /// Answer with [`Token::Pong`] of the same number.
    Ping(u64),
    /// The answer to a [`Token::Ping`].
    Pong(u64),
}

/// Why a stream is not Banana, or not Banana this side accepts. The connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BananaError {
    /// More than 64 header digits.
    #[error("a token header longer than {MAX_HEADER_DIGITS} digits")]
    LongHeader,
    /// A header that does not fit 64 bits.
    #[error("a token header past 2^64")]
    HugeHeader,
    /// A type byte Banana does not define.
    #[error("unknown token type 0x{0:02x}")]
    UnknownType(u8),
    /// A body longer than this side takes.
    #[error("a {kind} of {length} bytes; at most {limit}")]
    TooLong {
        /// STRING, LONGINT, ERROR, ...
        kind: &'static str,
        /// What the header said.
        length: u64,
        /// What this side takes.
        limit: usize,
    },
}

fn type_byte(t: &Token) -> u8 {
    match t {
        Token::List(_) => 0x80,
        Token::Int(_) => 0x81,
        Token::String(_) => 0x82,
        Token::Neg(_) => 0x83,
        Token::Float(_) => 0x84,
        Token::LongInt(_) => 0x85,
        Token::LongNeg(_) => 0x86,
        Token::Vocab(_) => 0x87,
        Token::Open(_) => 0x88,
        Token::Close(_) => 0x89,
        Token::Abort(_) => 0x8A,
        Token::Error(_) => 0x8D,
        Token::Ping(_) => 0x8E,
        Token::Pong(_) => 0x8F,
    }
}

fn header(mut n: u64, out: &mut Vec<u8>) {
    // Zero is written as one zero digit, as Foolscap writes it.
    loop {
        out.push((n & 0x7f) as u8);
        n >>= 7;
        if n == 0 {
            return;
        }
    }
}

/// Append `token`'s encoding to `out`.
pub fn encode(token: &Token, out: &mut Vec<u8>) {
    let (n, body): (u64, &[u8]) = match token {
        Token::List(n)
        | Token::Int(n)
        | Token::Neg(n)
        | Token::Vocab(n)
        | Token::Open(n)
        | Token::Close(n)
        | Token::Abort(n)
        | Token::Ping(n)
        | Token::Pong(n) => (*n, &[]),
        Token::String(b) | Token::LongInt(b) | Token::LongNeg(b) | Token::Error(b) => (b.len() as u64, b),
        Token::Float(f) => {
            out.push(type_byte(token));
            out.extend_from_slice(&f.to_be_bytes());
            return;
        }
    };
    header(n, out);
    out.push(type_byte(token));
    out.extend_from_slice(body);
}

/// A streaming decoder: feed it bytes as they arrive, take tokens as they complete.
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    max_string: usize,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder").field("buffered", &(self.buf.len() - self.start)).finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder taking STRING and long-integer bodies of up to `max_string` bytes.
    pub fn new(max_string: usize) -> Decoder {
        Decoder { buf: Vec::new(), start: 0, max_string }
    }

    /// Bytes received and not yet taken as tokens.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Add received bytes. The caller bounds how much it feeds before taking tokens: what is
    /// buffered is one partial token at most once [`Decoder::next_token`] returns `None`.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete token, `None` when more bytes are needed, or why the stream is bad.
    pub fn next_token(&mut self) -> Result<Option<Token>, BananaError> {
        let rest = &self.buf[self.start..];
        let Some(pos) = rest.iter().take(MAX_HEADER_DIGITS + 1).position(|b| *b >= 0x80) else {
            return if rest.len() > MAX_HEADER_DIGITS { Err(BananaError::LongHeader) } else { Ok(None) };
        };
        let mut n: u64 = 0;
        for (i, digit) in rest[..pos].iter().enumerate() {
            let digit = u64::from(*digit);
            if digit == 0 {
                continue;
            }
            let shift = 7 * i as u32;
            if shift >= 64 || (digit << shift) >> shift != digit {
                return Err(BananaError::HugeHeader);
            }
            n |= digit << shift;
        }
        let kind = rest[pos];
        let body_at = pos + 1;
        let sized = |kind: &'static str, limit: usize| -> Result<Option<usize>, BananaError> {
            match usize::try_from(n) {
                Ok(len) if len <= limit => Ok((rest.len() >= body_at + len).then_some(len)),
                _ => Err(BananaError::TooLong { kind, length: n, limit }),
            }
        };
        let (token, used) = match kind {
            0x80 => (Token::List(n), 0),
            0x81 => (Token::Int(n), 0),
            0x83 => (Token::Neg(n), 0),
            0x87 => (Token::Vocab(n), 0),
            0x88 => (Token::Open(n), 0),
            0x89 => (Token::Close(n), 0),
            0x8A => (Token::Abort(n), 0),
            0x8E => (Token::Ping(n), 0),
            0x8F => (Token::Pong(n), 0),
            0x84 => match rest.get(body_at..body_at + 8) {
                Some(b) => (Token::Float(f64::from_be_bytes(b.try_into().unwrap_or_default())), 8),
                None => return Ok(None),
            },
            0x82 | 0x85 | 0x86 | 0x8D => {
                let (name, limit) = match kind {
                    0x82 => ("STRING", self.max_string),
                    0x8D => ("ERROR", MAX_ERROR),
                    _ => ("long integer", self.max_string),
                };
                let Some(len) = sized(name, limit)? else { return Ok(None) };
                let body = rest[body_at..body_at + len].to_vec();
                let token = match kind {
                    0x82 => Token::String(body),
                    0x85 => Token::LongInt(body),
                    0x86 => Token::LongNeg(body),
                    _ => Token::Error(body),
                };
                (token, len)
            }
            other => return Err(BananaError::UnknownType(other)),
        };
        self.start += body_at + used;
        Ok(Some(token))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn encoded(tokens: &[Token]) -> Vec<u8> {
        let mut out = Vec::new();
        tokens.iter().for_each(|t| encode(t, &mut out));
        out
    }

    fn decode_all(bytes: &[u8], chunk: usize) -> Result<Vec<Token>, BananaError> {
        let mut d = Decoder::new(1 << 16);
        let mut out = Vec::new();
        for piece in bytes.chunks(chunk.max(1)) {
            d.feed(piece);
            while let Some(t) = d.next_token()? {
                out.push(t);
            }
        }
        Ok(out)
    }

    #[test]
    fn the_bytes_are_foolscaps() {
        // As Foolscap 24.9's int2b128 writes them (checked against it: 300 is 2c02, 0 is 00).
        assert_eq!(encoded(&[Token::Int(0)]), [0x00, 0x81]);
        assert_eq!(encoded(&[Token::Int(300)]), [0x2c, 0x02, 0x81]);
        assert_eq!(encoded(&[Token::Neg(5)]), [0x05, 0x83]);
        assert_eq!(encoded(&[Token::String(b"hi".to_vec())]), [0x02, 0x82, b'h', b'i']);
        assert_eq!(encoded(&[Token::Open(1), Token::Vocab(3), Token::Close(1)]), [1, 0x88, 3, 0x87, 1, 0x89]);
        assert_eq!(encoded(&[Token::Ping(7), Token::Pong(7)]), [7, 0x8E, 7, 0x8F]);
        // Foolscap 24.9 writes 1.5 as FLOAT and struct.pack("!d", 1.5): 3ff8000000000000.
        assert_eq!(encoded(&[Token::Float(1.5)]), [0x84, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
        // A header may be written with more (zero) digits than needed; it means the same.
        assert_eq!(decode_all(&[0x2c, 0x02, 0x00, 0x00, 0x81], 1), Ok(vec![Token::Int(300)]));
        assert_eq!(decode_all(&[0x81], 1), Ok(vec![Token::Int(0)]), "no digits is zero");
    }

    #[test]
    fn hostile_headers_and_bodies_are_refused_before_they_are_buffered() {
        assert_eq!(decode_all(&[0x01; 65], 7), Err(BananaError::LongHeader));
        assert_eq!(decode_all(&[0x01; 64], 7), Ok(vec![]), "64 digits may still end in a type byte");
        let mut huge = vec![0x7f; 10];
        huge.push(0x81);
        assert_eq!(decode_all(&huge, 3), Err(BananaError::HugeHeader));
        assert_eq!(decode_all(&[0x01, 0x90], 1), Err(BananaError::UnknownType(0x90)));
        // A string claiming 2^40 bytes is refused from its header alone.
        let mut claim = Vec::new();
        header(1 << 40, &mut claim);
        claim.push(0x82);
        let mut d = Decoder::new(1 << 16);
        d.feed(&claim);
        assert!(matches!(d.next_token(), Err(BananaError::TooLong { kind: "STRING", .. })));
        let mut long_error = Vec::new();
        encode(&Token::Error(vec![b'x'; 1001]), &mut long_error);
        assert!(matches!(decode_all(&long_error, 100), Err(BananaError::TooLong { kind: "ERROR", .. })));
    }

    fn token() -> impl Strategy<Value = Token> {
        prop_oneof![
            any::<u64>().prop_map(Token::List),
            any::<u64>().prop_map(Token::Int),
            any::<u64>().prop_map(Token::Neg),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Token::String),
            any::<u64>().prop_map(|b| Token::Float(f64::from_bits(b & !0x7ff8_0000_0000_0000 | 1))),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Token::LongInt),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Token::LongNeg),
            any::<u64>().prop_map(Token::Vocab),
            any::<u64>().prop_map(Token::Open),
            any::<u64>().prop_map(Token::Close),
            any::<u64>().prop_map(Token::Abort),
            proptest::collection::vec(any::<u8>(), 0..1000).prop_map(Token::Error),
            any::<u64>().prop_map(Token::Ping),
            any::<u64>().prop_map(Token::Pong),
        ]
    }

    proptest! {
        #[test]
        fn every_token_stream_round_trips_in_any_chunking(tokens in proptest::collection::vec(token(), 0..40), chunk in 1usize..70) {
            prop_assert_eq!(decode_all(&encoded(&tokens), chunk), Ok(tokens));
        }

        #[test]
        fn any_bytes_decode_or_fail_without_panic_or_unbounded_buffering(bytes in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..300) {
            let mut d = Decoder::new(256);
            for piece in bytes.chunks(chunk) {
                d.feed(piece);
                loop {
                    match d.next_token() {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            // What stays is one partial token: a header and at most a body's worth.
                            prop_assert!(d.buffered() <= MAX_HEADER_DIGITS + 1 + MAX_ERROR.max(256) + 8);
                            break;
                        }
                        Err(_) => return Ok(()),
                    }
                }
            }
        }
    }
}
