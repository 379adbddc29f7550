//! GGUF metadata values: the 13 wire types and an owned value tree.

use std::borrow::Cow;
use std::fmt;

/// A GGUF metadata value type, with its on-disk id (`enum gguf_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgufType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl GgufType {
    /// Every type, in id order.
    pub const ALL: &'static [GgufType] = &[
        GgufType::U8,
        GgufType::I8,
        GgufType::U16,
        GgufType::I16,
        GgufType::U32,
        GgufType::I32,
        GgufType::F32,
        GgufType::Bool,
        GgufType::String,
        GgufType::Array,
        GgufType::U64,
        GgufType::I64,
        GgufType::F64,
    ];

    /// The id stored in the file.
    pub const fn id(self) -> u32 {
        match self {
            GgufType::U8 => 0,
            GgufType::I8 => 1,
            GgufType::U16 => 2,
            GgufType::I16 => 3,
            GgufType::U32 => 4,
            GgufType::I32 => 5,
            GgufType::F32 => 6,
            GgufType::Bool => 7,
            GgufType::String => 8,
            GgufType::Array => 9,
            GgufType::U64 => 10,
            GgufType::I64 => 11,
            GgufType::F64 => 12,
        }
    }

    /// Inverse of [`GgufType::id`]; `None` for ids outside the format.
    pub const fn from_id(id: u32) -> Option<GgufType> {
        Some(match id {
            0 => GgufType::U8,
            1 => GgufType::I8,
            2 => GgufType::U16,
            3 => GgufType::I16,
            4 => GgufType::U32,
            5 => GgufType::I32,
            6 => GgufType::F32,
            7 => GgufType::Bool,
            8 => GgufType::String,
            9 => GgufType::Array,
            10 => GgufType::U64,
            11 => GgufType::I64,
            12 => GgufType::F64,
            _ => return None,
        })
    }

    /// Short lower-case name, as used in messages (`u32`, `string`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            GgufType::U8 => "u8",
            GgufType::I8 => "i8",
            GgufType::U16 => "u16",
            GgufType::I16 => "i16",
            GgufType::U32 => "u32",
            GgufType::I32 => "i32",
            GgufType::F32 => "f32",
            GgufType::Bool => "bool",
            GgufType::String => "string",
            GgufType::Array => "array",
            GgufType::U64 => "u64",
            GgufType::I64 => "i64",
            GgufType::F64 => "f64",
        }
    }

    /// Bytes a value of this type takes on disk when it has a fixed size;
    /// `None` for strings and arrays.
    pub const fn fixed_size(self) -> Option<u64> {
        match self {
            GgufType::U8 | GgufType::I8 | GgufType::Bool => Some(1),
            GgufType::U16 | GgufType::I16 => Some(2),
            GgufType::U32 | GgufType::I32 | GgufType::F32 => Some(4),
            GgufType::U64 | GgufType::I64 | GgufType::F64 => Some(8),
            GgufType::String | GgufType::Array => None,
        }
    }

    /// The fewest bytes a value of this type can take on disk: what lets a
    /// reader refuse an absurd array count before allocating anything.
    pub const fn min_size(self) -> u64 {
        match self.fixed_size() {
            Some(n) => n,
            None => match self {
                // u64 length
                GgufType::String => 8,
                // u32 element type + u64 count
                _ => 12,
            },
        }
    }
}

impl fmt::Display for GgufType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One GGUF metadata value.
///
/// `Array` carries its element type so that an empty array keeps it; every
/// item of `Array(t, items)` has `value_type() == t` (the writer checks).
/// An array of fixed-size numbers or bools is held as `Packed`: its items'
/// little-endian bytes, as in the file (a u8 item takes a byte, not a whole
/// `GgufValue`); [`GgufValue::as_array`] gives the items either way, and the
/// two forms of the same items are equal.
#[derive(Clone, Debug)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(GgufType, Vec<GgufValue>),
    /// Items of a fixed-size type, `fixed_size()` bytes each.
    Packed(GgufType, Vec<u8>),
}

impl PartialEq for GgufValue {
    fn eq(&self, other: &GgufValue) -> bool {
        use GgufValue::*;
        match (self, other) {
            (U8(a), U8(b)) => a == b,
            (I8(a), I8(b)) => a == b,
            (U16(a), U16(b)) => a == b,
            (I16(a), I16(b)) => a == b,
            (U32(a), U32(b)) => a == b,
            (I32(a), I32(b)) => a == b,
            (F32(a), F32(b)) => a == b,
            (Bool(a), Bool(b)) => a == b,
            (String(a), String(b)) => a == b,
            (U64(a), U64(b)) => a == b,
            (I64(a), I64(b)) => a == b,
            (F64(a), F64(b)) => a == b,
            (Packed(t, a), Packed(u, b)) if t == u && *t != GgufType::Bool => a == b,
            (a, b) => match (a.array_type(), b.array_type()) {
                (Some(t), Some(u)) => t == u && a.as_array() == b.as_array(),
                _ => false,
            },
        }
    }
}

/// Item `bytes` of a packed array of `ty` (`bytes` is `ty.fixed_size()` long).
fn unpack(ty: GgufType, b: &[u8]) -> GgufValue {
    let a2 = || [b[0], b[1]];
    let a4 = || [b[0], b[1], b[2], b[3]];
    let a8 = || [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
    match ty {
        GgufType::U8 => GgufValue::U8(b[0]),
        GgufType::I8 => GgufValue::I8(b[0] as i8),
        // Any non-zero byte is true, as in ggml.
        GgufType::Bool => GgufValue::Bool(b[0] != 0),
        GgufType::U16 => GgufValue::U16(u16::from_le_bytes(a2())),
        GgufType::I16 => GgufValue::I16(i16::from_le_bytes(a2())),
        GgufType::U32 => GgufValue::U32(u32::from_le_bytes(a4())),
        GgufType::I32 => GgufValue::I32(i32::from_le_bytes(a4())),
        GgufType::F32 => GgufValue::F32(f32::from_le_bytes(a4())),
        GgufType::U64 => GgufValue::U64(u64::from_le_bytes(a8())),
        GgufType::I64 => GgufValue::I64(i64::from_le_bytes(a8())),
        GgufType::F64 => GgufValue::F64(f64::from_le_bytes(a8())),
        GgufType::String | GgufType::Array => unreachable!("only fixed-size items are packed"),
    }
}

impl GgufValue {
    /// The wire type of this value (`Array` for arrays, whatever their items).
    pub fn value_type(&self) -> GgufType {
        match self {
            GgufValue::U8(_) => GgufType::U8,
            GgufValue::I8(_) => GgufType::I8,
            GgufValue::U16(_) => GgufType::U16,
            GgufValue::I16(_) => GgufType::I16,
            GgufValue::U32(_) => GgufType::U32,
            GgufValue::I32(_) => GgufType::I32,
            GgufValue::F32(_) => GgufType::F32,
            GgufValue::Bool(_) => GgufType::Bool,
            GgufValue::String(_) => GgufType::String,
            GgufValue::U64(_) => GgufType::U64,
            GgufValue::I64(_) => GgufType::I64,
            GgufValue::F64(_) => GgufType::F64,
            GgufValue::Array(..) | GgufValue::Packed(..) => GgufType::Array,
        }
    }

    /// Any integer that is non-negative, widened to `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            _ => self.signed().and_then(|v| u64::try_from(v).ok()),
        }
    }

    /// Any integer that fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            _ => self.signed(),
        }
    }

    fn signed(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Floats, and integers converted (large 64-bit ones lose precision).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            GgufValue::U64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The items of an array: borrowed, or made from a packed array's bytes
    /// (so take a large one only when its items are wanted).
    pub fn as_array(&self) -> Option<Cow<'_, [GgufValue]>> {
        match self {
            GgufValue::Array(_, items) => Some(Cow::Borrowed(items)),
            GgufValue::Packed(t, bytes) => {
                let size = t.fixed_size().unwrap_or(1) as usize;
                Some(Cow::Owned(
                    bytes.chunks_exact(size).map(|b| unpack(*t, b)).collect(),
                ))
            }
            _ => None,
        }
    }

    /// Items in an array (`None` for a scalar).
    pub fn array_len(&self) -> Option<usize> {
        match self {
            GgufValue::Array(_, items) => Some(items.len()),
            GgufValue::Packed(t, bytes) => Some(bytes.len() / t.fixed_size().unwrap_or(1) as usize),
            _ => None,
        }
    }

    /// The element type of an array, `None` for a scalar.
    pub fn array_type(&self) -> Option<GgufType> {
        match self {
            GgufValue::Array(t, _) | GgufValue::Packed(t, _) => Some(*t),
            _ => None,
        }
    }

    /// A packed array of `ty` items from their little-endian bytes; `None`
    /// when `ty` is not fixed-size or `bytes` is not a whole number of items.
    pub fn packed(ty: GgufType, bytes: Vec<u8>) -> Option<GgufValue> {
        let size = ty.fixed_size()? as usize;
        bytes
            .len()
            .is_multiple_of(size)
            .then_some(GgufValue::Packed(ty, bytes))
    }

    pub fn string_array<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Self {
        let items = items
            .into_iter()
            .map(|s| GgufValue::String(s.into()))
            .collect();
        GgufValue::Array(GgufType::String, items)
    }

    pub fn u32_array(items: impl IntoIterator<Item = u32>) -> Self {
        let bytes = items.into_iter().flat_map(u32::to_le_bytes).collect();
        GgufValue::Packed(GgufType::U32, bytes)
    }

    pub fn i32_array(items: impl IntoIterator<Item = i32>) -> Self {
        let bytes = items.into_iter().flat_map(i32::to_le_bytes).collect();
        GgufValue::Packed(GgufType::I32, bytes)
    }

    /// Depth of array nesting: 0 for a scalar, 1 for an array of scalars.
    pub fn depth(&self) -> usize {
        match self {
            GgufValue::Array(_, items) => 1 + items.iter().map(GgufValue::depth).max().unwrap_or(0),
            GgufValue::Packed(..) => 1,
            _ => 0,
        }
    }
}

/// Array items shown by `Display` before the summary gives up.
const DISPLAY_ITEMS: usize = 4;
/// Characters of a string shown by `Display`; vocabularies hold long merges.
const DISPLAY_CHARS: usize = 64;

fn fmt_str(s: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match s.char_indices().nth(DISPLAY_CHARS) {
        // Debug escaping keeps control characters (and token bytes) off the terminal.
        None => write!(f, "{s:?}"),
        Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

/// Short human form: scalars as themselves, strings quoted and cut, arrays as
/// `[string; 151936] ["!", "\"", "#", "$", …]`.
impl fmt::Display for GgufValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufValue::U8(v) => write!(f, "{v}"),
            GgufValue::I8(v) => write!(f, "{v}"),
            GgufValue::U16(v) => write!(f, "{v}"),
            GgufValue::I16(v) => write!(f, "{v}"),
            GgufValue::U32(v) => write!(f, "{v}"),
            GgufValue::I32(v) => write!(f, "{v}"),
            GgufValue::F32(v) => write!(f, "{v}"),
            GgufValue::Bool(v) => write!(f, "{v}"),
            GgufValue::String(s) => fmt_str(s, f),
            GgufValue::U64(v) => write!(f, "{v}"),
            GgufValue::I64(v) => write!(f, "{v}"),
            GgufValue::F64(v) => write!(f, "{v}"),
            GgufValue::Array(t, _) | GgufValue::Packed(t, _) => {
                let n = self.array_len().unwrap_or(0);
                write!(f, "[{t}; {n}] [")?;
                let shown: Vec<GgufValue> = match self {
                    GgufValue::Packed(t, bytes) => {
                        let size = t.fixed_size().unwrap_or(1) as usize;
                        let end = bytes.len().min(DISPLAY_ITEMS * size);
                        bytes[..end]
                            .chunks_exact(size)
                            .map(|b| unpack(*t, b))
                            .collect()
                    }
                    GgufValue::Array(_, items) => {
                        items.iter().take(DISPLAY_ITEMS).cloned().collect()
                    }
                    _ => Vec::new(),
                };
                for (i, item) in shown.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                if n > DISPLAY_ITEMS {
                    f.write_str(", …")?;
                }
                f.write_str("]")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_ids_round_trip() {
        for (i, t) in GgufType::ALL.iter().enumerate() {
            assert_eq!(t.id() as usize, i);
            assert_eq!(GgufType::from_id(t.id()), Some(*t));
        }
        assert_eq!(GgufType::from_id(13), None);
    }

    #[test]
    fn conversions() {
        assert_eq!(GgufValue::I32(-1).as_u64(), None);
        assert_eq!(GgufValue::I32(7).as_u64(), Some(7));
        assert_eq!(GgufValue::U64(u64::MAX).as_i64(), None);
        assert_eq!(GgufValue::U16(3).as_f64(), Some(3.0));
        assert_eq!(GgufValue::F32(0.5).as_u64(), None);
        assert_eq!(GgufValue::Bool(true).as_u64(), None);
    }

    #[test]
    fn packed_arrays_equal_their_items() {
        let packed = GgufValue::u32_array([1, 70000]);
        let items = GgufValue::Array(
            GgufType::U32,
            vec![GgufValue::U32(1), GgufValue::U32(70000)],
        );
        assert_eq!(packed, items);
        assert_eq!(items, packed);
        assert_ne!(packed, GgufValue::i32_array([1, 70000]));
        assert_ne!(packed, GgufValue::u32_array([1]));
        assert_eq!(packed.array_len(), Some(2));
        assert_eq!(packed.as_array().unwrap()[1].as_u64(), Some(70000));
        assert_eq!(packed.to_string(), "[u32; 2] [1, 70000]");
        let bools = GgufValue::packed(GgufType::Bool, vec![0, 2]).unwrap();
        assert_eq!(
            bools,
            GgufValue::Array(
                GgufType::Bool,
                vec![GgufValue::Bool(false), GgufValue::Bool(true)]
            )
        );
        assert_eq!(GgufValue::packed(GgufType::U16, vec![1, 2, 3]), None);
        assert_eq!(GgufValue::packed(GgufType::String, vec![]), None);
        assert_eq!(std::mem::size_of::<GgufValue>(), 32);
    }

    #[test]
    fn display_summarises_arrays() {
        let v = GgufValue::string_array(["a", "b", "c", "d", "e"]);
        assert_eq!(v.to_string(), r#"[string; 5] ["a", "b", "c", "d", …]"#);
        let long = "x".repeat(100);
        assert!(GgufValue::String(long)
            .to_string()
            .ends_with("… (100 bytes)"));
        let nested = GgufValue::Array(GgufType::Array, vec![GgufValue::u32_array([1])]);
        assert_eq!(nested.to_string(), "[array; 1] [[u32; 1] [1]]");
    }
}
