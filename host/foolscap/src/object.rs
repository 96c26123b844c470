//! Banana objects: the tree of values a token stream spells, both ways. A sequence (OPEN ...
//! CLOSE) is a [`Value::Seq`] whose first item is its open type (`"call"`, `"answer"`,
//! `"unicode"`, `"my-reference"`, ...), exactly as Foolscap writes it; the meaning of a type is
//! its caller's business ([`crate::session`]).
//!
//! [`Assembler`] turns tokens into top-level objects and keeps the incoming vocabulary table
//! (`set-vocab`, `add-vocab`, VOCAB tokens). It bounds what one object may cost before it is
//! complete: nesting depth, token count, bytes held, vocabulary size. [`Encoder`] writes values
//! with the OPEN counter Foolscap checks.

use std::collections::HashMap;

use crate::banana::{self, Token};

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A non-negative integer.
    Int(u64),
    /// A negative integer: minus this.
    Neg(u64),
    /// A byte string (a STRING, or a VOCAB resolved through the table).
    Bytes(Vec<u8>),
    /// A float.
    Float(f64),
    /// A big integer: negative or not, and its big-endian magnitude.
    Big(bool, Vec<u8>),
    /// A sequence: its open type first, then its items.
    Seq(Vec<Value>),
}

impl Value {
    /// A byte string from text.
    pub fn bytes(s: impl AsRef<[u8]>) -> Value {
        Value::Bytes(s.as_ref().to_vec())
    }

    /// A sequence of open type `kind` holding `items`.
    pub fn seq(kind: &str, items: impl IntoIterator<Item = Value>) -> Value {
        Value::Seq(std::iter::once(Value::bytes(kind)).chain(items).collect())
    }

    /// Python's `None`.
    pub fn none() -> Value {
        Value::seq("none", [])
    }

    /// A Python `str`: a `unicode` sequence around its UTF-8.
    pub fn text(s: &str) -> Value {
        Value::seq("unicode", [Value::bytes(s)])
    }

    /// A tuple.
    pub fn tuple(items: impl IntoIterator<Item = Value>) -> Value {
        Value::seq("tuple", items)
    }

    /// This sequence's open type and items, if it is a sequence with a byte-string type.
    pub fn as_seq(&self) -> Option<(&[u8], &[Value])> {
        match self {
            Value::Seq(items) => match items.split_first() {
                Some((Value::Bytes(kind), rest)) => Some((kind, rest)),
                _ => None,
            },
            _ => None,
        }
    }

    /// The integer, if this is a non-negative one.
    pub fn as_int(&self) -> Option<u64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The bytes of a byte string or of a `unicode` sequence.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => match self.as_seq() {
                Some((b"unicode", [Value::Bytes(b)])) => Some(b),
                _ => None,
            },
        }
    }

    /// A short, printable rendering for logs: at most `limit` characters.
    pub fn describe(&self, limit: usize) -> String {
        let mut out = String::new();
        self.render(&mut out, limit);
        if out.len() > limit {
            let mut cut = limit;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push('…');
        }
        out
    }

    fn render(&self, out: &mut String, limit: usize) {
        if out.len() > limit {
            return;
        }
        match self {
            Value::Int(n) => out.push_str(&n.to_string()),
            Value::Neg(n) => out.push_str(&format!("-{n}")),
            Value::Float(f) => out.push_str(&f.to_string()),
            Value::Big(neg, b) => {
                out.push_str(&format!("{}0x{}", if *neg { "-" } else { "" }, data_encoding::HEXLOWER.encode(b)))
            }
            Value::Bytes(b) => out.push_str(&format!("{:?}", String::from_utf8_lossy(b))),
            Value::Seq(items) => {
                out.push('(');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    item.render(out, limit);
                }
                out.push(')');
            }
        }
    }
}

/// What one object, or the vocabulary, may cost before it is refused.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest STRING token.
    pub max_string: usize,
    /// Deepest nesting of sequences.
    pub max_depth: usize,
    /// Most tokens in one top-level object.
    pub max_tokens: usize,
    /// Most bytes of strings held for one top-level object.
    pub max_bytes: usize,
    /// Most entries in the incoming vocabulary table.
    pub max_vocab: usize,
}

impl Default for Limits {
    /// Generous for anything an introducer says (its largest message is an announcement of a few
    /// KiB) and small next to a node's memory.
    fn default() -> Limits {
        Limits { max_string: 64 << 10, max_depth: 32, max_tokens: 65_536, max_bytes: 1 << 20, max_vocab: 4096 }
    }
}

/// Why the incoming objects cannot be followed any more. The connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The token stream is not Banana.
    #[error(transparent)]
    Banana(#[from] banana::BananaError),
    /// A CLOSE that does not close the innermost OPEN, or a CLOSE with nothing open.
    #[error("lost sync: CLOSE({got}) while {expected:?} is open")]
    LostSync {
        /// The CLOSE's count.
        got: u64,
        /// The innermost open count, if any.
        expected: Option<u64>,
    },
    /// The peer abandoned a sequence.
    #[error("the peer aborted sequence {0}")]
    Aborted(u64),
    /// A bound of [`Limits`] was passed.
    #[error("an object past the limit on {0}")]
    TooBig(&'static str),
    /// A VOCAB token with no entry.
    #[error("VOCAB {0} is not in the table")]
    UnknownVocab(u64),
    /// A malformed `set-vocab` or `add-vocab`.
    #[error("a malformed vocabulary update")]
    BadVocab,
    /// An old-style LIST token, which Foolscap has not sent for decades.
    #[error("an old-style LIST token")]
    OldList,
}

/// One thing the peer said, at the top level.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A complete top-level object.
    Object(Value),
    /// Answer with PONG of this number.
    Ping(u64),
    /// The answer to our PING.
    Pong(u64),
    /// The peer's last word before it hangs up.
    Error(String),
}

/// Builds top-level objects from tokens. See the module docs.
#[derive(Debug)]
pub struct Assembler {
    limits: Limits,
    stack: Vec<(u64, Vec<Value>)>,
    vocab: HashMap<u64, Vec<u8>>,
    vocab_bytes: usize,
    tokens: usize,
    bytes: usize,
}

impl Assembler {
    /// An assembler with an empty vocabulary (table index 0, as negotiated).
    pub fn new(limits: Limits) -> Assembler {
        Assembler { limits, stack: Vec::new(), vocab: HashMap::new(), vocab_bytes: 0, tokens: 0, bytes: 0 }
    }

    /// The limits, for the token decoder's string bound.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Take one token; an [`Event`] when it completes one.
    pub fn push(&mut self, token: Token) -> Result<Option<Event>, ObjectError> {
        if !self.stack.is_empty() {
            self.tokens += 1;
            if self.tokens > self.limits.max_tokens {
                return Err(ObjectError::TooBig("tokens"));
            }
        }
        let leaf = match token {
            Token::Ping(n) => return self.top_level(Event::Ping(n)),
            Token::Pong(n) => return self.top_level(Event::Pong(n)),
            Token::Error(msg) => return Ok(Some(Event::Error(String::from_utf8_lossy(&msg).into_owned()))),
            Token::List(_) => return Err(ObjectError::OldList),
            Token::Abort(n) => return Err(ObjectError::Aborted(n)),
            Token::Open(n) => {
                if self.stack.len() >= self.limits.max_depth {
                    return Err(ObjectError::TooBig("depth"));
                }
                if self.stack.is_empty() {
                    (self.tokens, self.bytes) = (0, 0);
                }
                self.stack.push((n, Vec::new()));
                return Ok(None);
            }
            Token::Close(n) => {
                let expected = self.stack.last().map(|(open, _)| *open);
                if expected != Some(n) {
                    return Err(ObjectError::LostSync { got: n, expected });
                }
                let (_, items) = self.stack.pop().unwrap_or_default();
                Value::Seq(items)
            }
            Token::Int(n) => Value::Int(n),
            Token::Neg(n) => Value::Neg(n),
            Token::Float(f) => Value::Float(f),
            Token::String(b) => {
                self.bytes += b.len();
                Value::Bytes(b)
            }
            Token::LongInt(b) => {
                self.bytes += b.len();
                Value::Big(false, b)
            }
            Token::LongNeg(b) => {
                self.bytes += b.len();
                Value::Big(true, b)
            }
            Token::Vocab(i) => {
                let b = self.vocab.get(&i).ok_or(ObjectError::UnknownVocab(i))?.clone();
                self.bytes += b.len();
                Value::Bytes(b)
            }
        };
        if self.bytes > self.limits.max_bytes {
            return Err(ObjectError::TooBig("bytes"));
        }
        match self.stack.last_mut() {
            Some((_, items)) => {
                items.push(leaf);
                Ok(None)
            }
            None => self.complete(leaf),
        }
    }

    fn top_level(&self, event: Event) -> Result<Option<Event>, ObjectError> {
        // PING and PONG are only meaningful between objects; inside one they are noise, which
        // Foolscap never sends, so treat them as the peer being out of step.
        if let Some((open, _)) = self.stack.last() {
            return Err(ObjectError::LostSync { got: *open, expected: Some(*open) });
        }
        Ok(Some(event))
    }

    fn complete(&mut self, value: Value) -> Result<Option<Event>, ObjectError> {
        match value.as_seq() {
            Some((b"set-vocab", items)) => {
                self.vocab.clear();
                self.vocab_bytes = 0;
                if items.len() % 2 != 0 {
                    return Err(ObjectError::BadVocab);
                }
                for pair in items.chunks(2) {
                    self.add_vocab(&pair[0], &pair[1])?;
                }
                Ok(None)
            }
            Some((b"add-vocab", [index, string])) => {
                self.add_vocab(index, string)?;
                Ok(None)
            }
            Some((b"add-vocab", _)) => Err(ObjectError::BadVocab),
            _ => Ok(Some(Event::Object(value))),
        }
    }

    fn add_vocab(&mut self, index: &Value, string: &Value) -> Result<(), ObjectError> {
        let (Value::Int(i), Value::Bytes(s)) = (index, string) else { return Err(ObjectError::BadVocab) };
        if self.vocab.len() >= self.limits.max_vocab || self.vocab_bytes + s.len() > self.limits.max_bytes {
            return Err(ObjectError::TooBig("vocabulary"));
        }
        self.vocab_bytes += s.len();
        if let Some(old) = self.vocab.insert(*i, s.clone()) {
            self.vocab_bytes -= old.len();
        }
        Ok(())
    }
}

/// Writes values as tokens, numbering OPENs as Foolscap expects (0, 1, 2, ... per connection).
#[derive(Debug, Default)]
pub struct Encoder {
    open_count: u64,
}

impl Encoder {
    /// Append `value`'s tokens to `out`.
    pub fn encode(&mut self, value: &Value, out: &mut Vec<u8>) {
        let token = match value {
            Value::Int(n) => Token::Int(*n),
            Value::Neg(n) => Token::Neg(*n),
            Value::Float(f) => Token::Float(*f),
            Value::Bytes(b) => Token::String(b.clone()),
            Value::Big(false, b) => Token::LongInt(b.clone()),
            Value::Big(true, b) => Token::LongNeg(b.clone()),
            Value::Seq(items) => {
                let n = self.open_count;
                self.open_count += 1;
                banana::encode(&Token::Open(n), out);
                for item in items {
                    self.encode(item, out);
                }
                Token::Close(n)
            }
        };
        banana::encode(&token, out);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::banana::Decoder;

    fn assemble(bytes: &[u8], limits: Limits) -> Result<Vec<Event>, ObjectError> {
        let mut d = Decoder::new(limits.max_string);
        let mut a = Assembler::new(limits);
        d.feed(bytes);
        let mut out = Vec::new();
        while let Some(t) = d.next_token()? {
            out.extend(a.push(t)?);
        }
        Ok(out)
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<u64>().prop_map(Value::Int),
            (1..u64::MAX).prop_map(Value::Neg),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(6, 200, 8, |inner| {
            (proptest::collection::vec(inner, 0..8), "[a-z-]{1,12}").prop_map(|(items, kind)| Value::seq(&kind, items))
        })
    }

    #[test]
    fn a_call_is_written_as_foolscap_writes_it() {
        let call = Value::seq(
            "call",
            [
                Value::Int(1),
                Value::Int(0),
                Value::bytes("getReferenceByName"),
                Value::seq("arguments", [Value::Int(0)]),
            ],
        );
        let mut out = Vec::new();
        Encoder::default().encode(&call, &mut out);
        let mut expect = vec![0, 0x88, 4, 0x82];
        expect.extend_from_slice(b"call");
        expect.extend_from_slice(&[1, 0x81, 0, 0x81, 18, 0x82]);
        expect.extend_from_slice(b"getReferenceByName");
        expect.extend_from_slice(&[1, 0x88, 9, 0x82]);
        expect.extend_from_slice(b"arguments");
        expect.extend_from_slice(&[0, 0x81, 1, 0x89, 0, 0x89]);
        assert_eq!(out, expect);
    }

    #[test]
    fn vocabulary_updates_name_strings_and_unknown_indices_are_refused() {
        let mut out = Vec::new();
        let mut e = Encoder::default();
        e.encode(
            &Value::seq("set-vocab", [Value::Int(0), Value::bytes("answer"), Value::Int(1), Value::bytes("none")]),
            &mut out,
        );
        e.encode(&Value::seq("add-vocab", [Value::Int(2), Value::bytes("call")]), &mut out);
        banana::encode(&Token::Open(9), &mut out);
        banana::encode(&Token::Vocab(0), &mut out);
        banana::encode(&Token::Int(3), &mut out);
        banana::encode(&Token::Close(9), &mut out);
        let events = assemble(&out, Limits::default()).unwrap();
        assert_eq!(events, vec![Event::Object(Value::seq("answer", [Value::Int(3)]))]);
        banana::encode(&Token::Vocab(7), &mut out);
        assert_eq!(assemble(&out, Limits::default()), Err(ObjectError::UnknownVocab(7)));
    }

    #[test]
    fn out_of_step_and_oversized_objects_are_refused() {
        let tokens = |ts: &[Token]| {
            let mut out = Vec::new();
            ts.iter().for_each(|t| banana::encode(t, &mut out));
            out
        };
        let lost = tokens(&[Token::Open(0), Token::Close(1)]);
        assert_eq!(assemble(&lost, Limits::default()), Err(ObjectError::LostSync { got: 1, expected: Some(0) }));
        let deep: Vec<Token> = (0..40).map(Token::Open).collect();
        assert_eq!(assemble(&tokens(&deep), Limits::default()), Err(ObjectError::TooBig("depth")));
        let mut wide = vec![Token::Open(0)];
        wide.extend((0..70_000).map(Token::Int));
        assert_eq!(assemble(&tokens(&wide), Limits::default()), Err(ObjectError::TooBig("tokens")));
        let big = Limits { max_bytes: 100, ..Limits::default() };
        let mut heavy = vec![Token::Open(0)];
        heavy.extend((0..3).map(|_| Token::String(vec![b'x'; 40])));
        assert_eq!(assemble(&tokens(&heavy), big), Err(ObjectError::TooBig("bytes")));
        let noisy = tokens(&[Token::Open(0), Token::Ping(1)]);
        assert!(matches!(assemble(&noisy, Limits::default()), Err(ObjectError::LostSync { .. })));
        assert_eq!(assemble(&tokens(&[Token::Ping(4)]), Limits::default()), Ok(vec![Event::Ping(4)]));
    }

    proptest! {
        #[test]
        fn values_round_trip(v in value()) {
            let mut out = Vec::new();
            Encoder::default().encode(&v, &mut out);
            prop_assert_eq!(assemble(&out, Limits::default()), Ok(vec![Event::Object(v)]));
        }

        #[test]
        fn hostile_bytes_never_panic_and_stay_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let limits = Limits { max_string: 512, max_depth: 8, max_tokens: 256, max_bytes: 1024, max_vocab: 16 };
            let mut d = Decoder::new(limits.max_string);
            let mut a = Assembler::new(limits);
            d.feed(&bytes);
            let mut held = 0usize;
            while let Ok(Some(t)) = d.next_token() {
                match a.push(t) {
                    Ok(Some(Event::Object(v))) => held += v.describe(1 << 20).len(),
                    Ok(_) => {}
                    Err(_) => break,
                }
                prop_assert!(a.stack.len() <= limits.max_depth);
                prop_assert!(a.tokens <= limits.max_tokens + 1);
                prop_assert!(a.vocab.len() <= limits.max_vocab);
            }
            prop_assert!(held <= 64 * bytes.len() + 64);
        }
    }
}
