//! Compact JSON for bulk's output lines, byte for byte what `serde_json::to_writer` writes
//! (the tests compare the two), from the same `Serialize` impls.
//!
//! Why not serde_json itself: it checks every byte of every string and key against its escape
//! table one at a time, which was the largest single item of a bulk run's own work (a route
//! line is about 1 KB of keys, names and addresses, none of which needs escaping). This writer
//! checks eight bytes at a time and copies clean runs whole. Only what serde_json would write
//! for our types is supported; a map key that is not a string, an integer, a bool or a unit
//! variant is refused with an error, as serde_json refuses most of them.

use std::fmt;

use serde::ser::{self, Serialize};

/// A value that cannot be written as JSON (a map key of an unsupported kind, or a custom
/// `Serialize` impl's own error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError(String);

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JsonError {}

impl ser::Error for JsonError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        JsonError(msg.to_string())
    }
}

/// Appends `value` as compact JSON to `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), JsonError> {
    value.serialize(&mut Writer { out })
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

/// Bytes JSON strings must escape: '"', '\\' and the controls below 0x20 (not 0x7f).
fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// Whether any of the eight bytes of `word` needs escaping (exact, no false answers: the
/// classic "has a zero byte" and "has a byte below n" tests, n = 0x20 <= 128).
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    (below_space | has_zero(word ^ (ONES * u64::from(b'"'))) | has_zero(word ^ (ONES * 0x5c))) != 0
}

fn write_escaped(out: &mut Vec<u8>, text: &str) {
    // Room for the usual case, a string with nothing to escape: no check per push.
    out.reserve(text.len() + 2);
    out.push(b'"');
    let mut rest = text.as_bytes();
    while let Some(at) = first_to_escape(rest) {
        out.extend_from_slice(&rest[..at]);
        write_escape(out, rest[at]);
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// Where the first byte to escape is, a word at a time: eight bytes, then the last eight
/// (overlapping what was checked); a string shorter than that as two overlapping halves.
/// Only a word that has something to escape is looked at byte by byte.
fn first_to_escape(bytes: &[u8]) -> Option<usize> {
    let word_at = |at: usize| -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let half_at = |at: usize| -> u64 {
        let mut half = [0u8; 4];
        half.copy_from_slice(&bytes[at..at + 4]);
        // The upper half is letters, which need no escape.
        u64::from(u32::from_le_bytes(half)) | 0x6161_6161_0000_0000
    };
    let scan = |from: usize| {
        bytes[from..]
            .iter()
            .position(|b| needs_escape(*b))
            .map(|at| from + at)
    };
    let len = bytes.len();
    if len < 4 {
        return scan(0);
    }
    if len < 8 {
        let clean = !word_needs_escape(half_at(0)) && !word_needs_escape(half_at(len - 4));
        return if clean { None } else { scan(0) };
    }
    let mut offset = 0;
    while offset + 8 <= len {
        if word_needs_escape(word_at(offset)) {
            return scan(offset);
        }
        offset += 8;
    }
    if offset < len && word_needs_escape(word_at(len - 8)) {
        return scan(offset);
    }
    None
}

fn write_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match byte {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        0x08 => out.extend_from_slice(b"\\b"),
        b'\t' => out.extend_from_slice(b"\\t"),
        b'\n' => out.extend_from_slice(b"\\n"),
        0x0c => out.extend_from_slice(b"\\f"),
        b'\r' => out.extend_from_slice(b"\\r"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]),
    }
}

fn write_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

fn write_i64(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    write_u64(out, value.unsigned_abs());
}

/// Numbers whose text serde_json's own formatting decides (floats, 128-bit integers): rare
/// in our output, and delegated so that they cannot differ.
fn write_with_serde_json<T: Serialize>(out: &mut Vec<u8>, value: T) -> Result<(), JsonError> {
    serde_json::to_writer(out, &value).map_err(|e| JsonError(e.to_string()))
}

/// The narrower integers, written as their 64-bit selves.
macro_rules! widened_integers {
    () => {
        fn serialize_i8(self, v: i8) -> Result<(), JsonError> {
            self.serialize_i64(i64::from(v))
        }
        fn serialize_i16(self, v: i16) -> Result<(), JsonError> {
            self.serialize_i64(i64::from(v))
        }
        fn serialize_i32(self, v: i32) -> Result<(), JsonError> {
            self.serialize_i64(i64::from(v))
        }
        fn serialize_u8(self, v: u8) -> Result<(), JsonError> {
            self.serialize_u64(u64::from(v))
        }
        fn serialize_u16(self, v: u16) -> Result<(), JsonError> {
            self.serialize_u64(u64::from(v))
        }
        fn serialize_u32(self, v: u32) -> Result<(), JsonError> {
            self.serialize_u64(u64::from(v))
        }
    };
}

impl<'a, 'w> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = JsonError;
    type SerializeSeq = Compound<'a, 'w>;
    type SerializeTuple = Compound<'a, 'w>;
    type SerializeTupleStruct = Compound<'a, 'w>;
    type SerializeTupleVariant = Compound<'a, 'w>;
    type SerializeMap = Compound<'a, 'w>;
    type SerializeStruct = Compound<'a, 'w>;
    type SerializeStructVariant = Compound<'a, 'w>;

    widened_integers!();

    fn serialize_bool(self, v: bool) -> Result<(), JsonError> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Result<(), JsonError> {
        write_i64(self.out, v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), JsonError> {
        write_with_serde_json(self.out, v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), JsonError> {
        write_u64(self.out, v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), JsonError> {
        write_with_serde_json(self.out, v)
    }
    fn serialize_f32(self, v: f32) -> Result<(), JsonError> {
        write_with_serde_json(self.out, v)
    }
    fn serialize_f64(self, v: f64) -> Result<(), JsonError> {
        write_with_serde_json(self.out, v)
    }
    fn serialize_char(self, v: char) -> Result<(), JsonError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> Result<(), JsonError> {
        write_escaped(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), JsonError> {
        use ser::SerializeSeq;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for byte in v {
            seq.serialize_element(byte)?;
        }
        seq.end()
    }
    fn serialize_none(self) -> Result<(), JsonError> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), JsonError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), JsonError> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), JsonError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), JsonError> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        self.out.push(b'{');
        write_escaped(self.out, variant);
        self.out.push(b':');
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'a, 'w>, JsonError> {
        Ok(Compound::open(self, b'[', b']', len, None))
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'a, 'w>, JsonError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a, 'w>, JsonError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a, 'w>, JsonError> {
        Ok(Compound::open(self, b'[', b']', Some(len), Some(variant)))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'a, 'w>, JsonError> {
        Ok(Compound::open(self, b'{', b'}', len, None))
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a, 'w>, JsonError> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'a, 'w>, JsonError> {
        Ok(Compound::open(self, b'{', b'}', Some(len), Some(variant)))
    }
}

/// An array or object being written. As serde_json does, a container announced empty is
/// closed at once; one inside a variant (`{"Variant":[...]}`) closes its wrapper too.
pub struct Compound<'a, 'w> {
    writer: &'w mut Writer<'a>,
    close: u8,
    /// Nothing written in it yet (the next element or key needs no comma).
    first: bool,
    /// Announced empty and already closed.
    closed: bool,
    in_variant: bool,
}

impl<'a, 'w> Compound<'a, 'w> {
    fn open(
        writer: &'w mut Writer<'a>,
        open: u8,
        close: u8,
        len: Option<usize>,
        variant: Option<&'static str>,
    ) -> Self {
        if let Some(variant) = variant {
            writer.out.push(b'{');
            write_escaped(writer.out, variant);
            writer.out.push(b':');
        }
        writer.out.push(open);
        let closed = len == Some(0);
        if closed {
            writer.out.push(close);
        }
        Compound {
            writer,
            close,
            first: true,
            closed,
            in_variant: variant.is_some(),
        }
    }

    fn separate(&mut self) {
        if !self.first {
            self.writer.out.push(b',');
        }
        self.first = false;
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        self.separate();
        value.serialize(&mut *self.writer)
    }

    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        self.separate();
        write_escaped(self.writer.out, key);
        self.writer.out.push(b':');
        value.serialize(&mut *self.writer)
    }

    fn close(self) -> Result<(), JsonError> {
        if !self.closed {
            self.writer.out.push(self.close);
        }
        if self.in_variant {
            self.writer.out.push(b'}');
        }
        Ok(())
    }
}

/// serde's four ways of writing elements one after the other, all [`Compound::element`].
macro_rules! elements {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = JsonError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
                self.element(value)
            }
            fn end(self) -> Result<(), JsonError> {
                self.close()
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = JsonError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), JsonError> {
        self.separate();
        key.serialize(KeyWriter {
            out: self.writer.out,
        })
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), JsonError> {
        self.writer.out.push(b':');
        value.serialize(&mut *self.writer)
    }
    fn end(self) -> Result<(), JsonError> {
        self.close()
    }
}

/// A struct's fields and a struct variant's, both [`Compound::field`].
macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = JsonError;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), JsonError> {
                self.field(key, value)
            }
            fn end(self) -> Result<(), JsonError> {
                self.close()
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

/// A map key: JSON keys are strings, so integers and bools are written quoted, as serde_json
/// writes them.
struct KeyWriter<'o> {
    out: &'o mut Vec<u8>,
}

fn key_must_be_a_string() -> JsonError {
    JsonError("key must be a string".into())
}

impl ser::Serializer for KeyWriter<'_> {
    type Ok = ();
    type Error = JsonError;
    type SerializeSeq = ser::Impossible<(), JsonError>;
    type SerializeTuple = ser::Impossible<(), JsonError>;
    type SerializeTupleStruct = ser::Impossible<(), JsonError>;
    type SerializeTupleVariant = ser::Impossible<(), JsonError>;
    type SerializeMap = ser::Impossible<(), JsonError>;
    type SerializeStruct = ser::Impossible<(), JsonError>;
    type SerializeStructVariant = ser::Impossible<(), JsonError>;

    widened_integers!();

    fn serialize_str(self, v: &str) -> Result<(), JsonError> {
        write_escaped(self.out, v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), JsonError> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_bool(self, v: bool) -> Result<(), JsonError> {
        self.serialize_str(if v { "true" } else { "false" })
    }
    fn serialize_i64(self, v: i64) -> Result<(), JsonError> {
        self.out.push(b'"');
        write_i64(self.out, v);
        self.out.push(b'"');
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), JsonError> {
        self.out.push(b'"');
        write_u64(self.out, v);
        self.out.push(b'"');
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), JsonError> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), JsonError> {
        value.serialize(self)
    }

    fn serialize_f32(self, _v: f32) -> Result<(), JsonError> {
        Err(key_must_be_a_string())
    }
    fn serialize_f64(self, _v: f64) -> Result<(), JsonError> {
        Err(key_must_be_a_string())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<(), JsonError> {
        Err(key_must_be_a_string())
    }
    fn serialize_none(self) -> Result<(), JsonError> {
        Err(key_must_be_a_string())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), JsonError> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit(self) -> Result<(), JsonError> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), JsonError> {
        Err(key_must_be_a_string())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), JsonError> {
        Err(key_must_be_a_string())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, JsonError> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, JsonError> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, JsonError> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, JsonError> {
        Err(key_must_be_a_string())
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, JsonError> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, JsonError> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, JsonError> {
        Err(key_must_be_a_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;
    use std::collections::BTreeMap;

    fn ours<T: Serialize + ?Sized>(value: &T) -> String {
        let mut out = Vec::new();
        write(&mut out, value).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[derive(serde::Serialize)]
    enum Shapes {
        Unit,
        Newtype(u8),
        Tuple(i32, String),
        EmptyTuple(),
        Struct { a: Option<bool>, b: Vec<u16> },
        EmptyStruct {},
    }

    #[derive(serde::Serialize)]
    struct Everything {
        shapes: Vec<Shapes>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        unit: (),
        bytes: &'static [u8],
        chars: [char; 3],
        float: f64,
        not_a_number: f64,
        big: u128,
        negative: i64,
        numbered: BTreeMap<u32, &'static str>,
        flags: BTreeMap<bool, i8>,
        #[serde(flatten)]
        flat: BTreeMap<String, String>,
    }

    #[test]
    fn every_shape_as_serde_json_writes_it() {
        let value = Everything {
            shapes: vec![
                Shapes::Unit,
                Shapes::Newtype(7),
                Shapes::Tuple(-3, "t".into()),
                Shapes::EmptyTuple(),
                Shapes::Struct {
                    a: None,
                    b: vec![1, 2],
                },
                Shapes::EmptyStruct {},
            ],
            skipped: None,
            unit: (),
            bytes: b"\x00\xff",
            chars: ['"', '\u{1}', 'é'],
            float: 0.1,
            not_a_number: f64::NAN,
            big: u128::MAX,
            negative: i64::MIN,
            numbered: BTreeMap::from([(1, "one"), (20, "twenty")]),
            flags: BTreeMap::from([(false, -1), (true, 1)]),
            flat: BTreeMap::from([("k\n".into(), "v\\".into())]),
        };
        assert_eq!(ours(&value), serde_json::to_string(&value).unwrap());
    }

    #[test]
    fn refuses_what_cannot_be_a_key() {
        let map = BTreeMap::from([(vec![1u8], 1)]);
        assert!(write(&mut Vec::new(), &map).is_err());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é]{0,20}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_value_as_serde_json_writes_it(value in json_value()) {
            prop_assert_eq!(ours(&value), serde_json::to_string(&value).unwrap());
        }

        #[test]
        fn finds_the_first_byte_to_escape(
            bytes in proptest::collection::vec(
                prop_oneof![8 => b'a'..=b'z', 1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20, 1 => any::<u8>()],
                0..40,
            ),
        ) {
            prop_assert_eq!(first_to_escape(&bytes), bytes.iter().position(|b| needs_escape(*b)));
        }

        #[test]
        fn the_word_test_agrees_with_the_byte_test(bytes in any::<[u8; 8]>()) {
            let word = u64::from_le_bytes(bytes);
            prop_assert_eq!(word_needs_escape(word), bytes.iter().any(|b| needs_escape(*b)));
        }
    }
}
