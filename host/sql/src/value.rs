//! What crosses between marsh and either engine: [`Value`] (NULL, a 64-bit integer, text,
//! bytes), its conversions to and from Rust types ([`FromValue`], `From` impls), and [`Row`].
//!
//! The four kinds are what SQLite stores (a REAL is refused when read) and what the PostgreSQL
//! columns marsh uses hold: BIGINT, INTEGER, SMALLINT and BOOLEAN come back as integers (a
//! boolean as 0 or 1), TEXT and VARCHAR as text, BYTEA as bytes. A `u64` above `i64::MAX`
//! (which neither engine stores as an integer) is bound as `i64::MAX`: marsh's integers are
//! sizes, times and counts, far below it.

use crate::SqlError;

/// One value in a statement's parameters or a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "integer",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::Int(v.into())
            }
        }
    )*};
}
from_int!(i64, u32, i32, u16, u8, bool);

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::from(u64::try_from(v).unwrap_or(u64::MAX))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(v.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

impl<const N: usize> From<[u8; N]> for Value {
    fn from(v: [u8; N]) -> Self {
        Value::Blob(v.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for Value {
    fn from(v: &[u8; N]) -> Self {
        Value::Blob(v.to_vec())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Parameters for a statement: `params![a, b, c]` is `[Value::from(a), ...]`.
#[macro_export]
macro_rules! params {
    () => { [] as [$crate::Value; 0] };
    ($($v:expr),+ $(,)?) => { [$($crate::Value::from($v)),+] };
}

/// A Rust type a column's [`Value`] reads as.
pub trait FromValue: Sized {
    /// Read `value`; `None` if it is not of this type (the caller names the column).
    fn from_value(value: Value) -> Option<Self>;
    /// What this type is, for the error.
    const EXPECTED: &'static str;
}

impl FromValue for Value {
    fn from_value(value: Value) -> Option<Self> {
        Some(value)
    }
    const EXPECTED: &'static str = "any value";
}

impl FromValue for i64 {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Int(v) => Some(v),
            _ => None,
        }
    }
    const EXPECTED: &'static str = "an integer";
}

macro_rules! read_int {
    ($($t:ty: $what:literal),*) => {$(
        impl FromValue for $t {
            fn from_value(value: Value) -> Option<Self> {
                i64::from_value(value).and_then(|v| <$t>::try_from(v).ok())
            }
            const EXPECTED: &'static str = $what;
        }
    )*};
}
read_int!(u64: "a non-negative integer", u32: "an integer in u32's range", i32: "an integer in i32's range",
          u16: "an integer in u16's range", u8: "an integer in u8's range", usize: "a non-negative integer");

impl FromValue for bool {
    fn from_value(value: Value) -> Option<Self> {
        i64::from_value(value).map(|v| v != 0)
    }
    const EXPECTED: &'static str = "a boolean (integer)";
}

impl FromValue for String {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Text(v) => Some(v),
            _ => None,
        }
    }
    const EXPECTED: &'static str = "text";
}

impl FromValue for Vec<u8> {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Blob(v) => Some(v),
            _ => None,
        }
    }
    const EXPECTED: &'static str = "bytes";
}

impl<const N: usize> FromValue for [u8; N] {
    fn from_value(value: Value) -> Option<Self> {
        Vec::<u8>::from_value(value).and_then(|v| v.try_into().ok())
    }
    const EXPECTED: &'static str = "bytes of a fixed length";
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> Option<Self> {
        match value {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
    const EXPECTED: &'static str = T::EXPECTED;
}

/// One row of a query's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub(crate) values: Vec<Value>,
}

impl Row {
    /// Column `i` as a `T`.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, SqlError> {
        let value = self.values.get(i).cloned().ok_or(SqlError::NoColumn { index: i, columns: self.values.len() })?;
        let found = value.kind();
        T::from_value(value).ok_or(SqlError::Type { index: i, expected: T::EXPECTED, found })
    }

    /// How many columns.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether it has no columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// A Rust type a whole row reads as: tuples of [`FromValue`] types, one per column.
pub trait FromRow: Sized {
    /// Read `row`.
    fn from_row(row: Row) -> Result<Self, SqlError>;
}

macro_rules! tuple_from_row {
    ($($name:ident $i:tt),+) => {
        impl<$($name: FromValue),+> FromRow for ($($name,)+) {
            fn from_row(row: Row) -> Result<Self, SqlError> {
                Ok(($(row.get::<$name>($i)?,)+))
            }
        }
    };
}
tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_as_what_they_were_and_refuse_what_they_were_not() {
        let row = Row { values: params![7_u64, -1_i64, "t", [1_u8; 32], None::<i64>, true].to_vec() };
        assert_eq!(row.get::<u64>(0).unwrap(), 7);
        assert!(matches!(row.get::<u64>(1), Err(SqlError::Type { index: 1, .. })), "negative is no u64");
        assert_eq!(row.get::<String>(2).unwrap(), "t");
        assert_eq!(row.get::<[u8; 32]>(3).unwrap(), [1; 32]);
        assert!(row.get::<[u8; 16]>(3).is_err(), "wrong length");
        assert_eq!(row.get::<Option<i64>>(4).unwrap(), None);
        assert!(row.get::<i64>(4).is_err(), "NULL is no integer");
        assert!(row.get::<bool>(5).unwrap());
        assert!(matches!(row.get::<i64>(6), Err(SqlError::NoColumn { index: 6, columns: 6 })));
        assert_eq!(Value::from(u64::MAX), Value::Int(i64::MAX), "saturates");
    }
}
