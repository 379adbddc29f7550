//! The ggml tensor types this project reads and writes, with their block layout.
//!
//! The table is plain Rust so that GGUF parsing needs no FFI call; a test checks
//! every row against ggml's own `ggml_blck_size` / `ggml_type_size`.

use std::fmt;

macro_rules! ggml_types {
    ($($variant:ident = $id:literal, $name:literal, $block:literal, $bytes:literal;)*) => {
        /// A ggml tensor element type (`enum ggml_type`), limited to the types
        /// whose layout this project knows.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types)]
        pub enum GgmlType { $($variant,)* }

        impl GgmlType {
            /// Every known type, in ggml id order.
            pub const ALL: &'static [GgmlType] = &[$(GgmlType::$variant,)*];

            /// ggml's numeric id, as stored in GGUF tensor infos.
            pub const fn id(self) -> u32 {
                match self { $(GgmlType::$variant => $id,)* }
            }

            /// Inverse of [`GgmlType::id`]; `None` for ids this project does not know.
            pub const fn from_id(id: u32) -> Option<GgmlType> {
                match id { $($id => Some(GgmlType::$variant),)* _ => None }
            }

            /// ggml's lower-case name (`q4_K`, `bf16`, ...).
            pub const fn name(self) -> &'static str {
                match self { $(GgmlType::$variant => $name,)* }
            }

            /// Elements per quantization block (1 for plain types).
            pub const fn block_size(self) -> u64 {
                match self { $(GgmlType::$variant => $block,)* }
            }

            /// Bytes per block.
            pub const fn block_bytes(self) -> u64 {
                match self { $(GgmlType::$variant => $bytes,)* }
            }
        }
    };
}

ggml_types! {
    F32 = 0, "f32", 1, 4;
    F16 = 1, "f16", 1, 2;
    Q4_0 = 2, "q4_0", 32, 18;
    Q4_1 = 3, "q4_1", 32, 20;
    Q5_0 = 6, "q5_0", 32, 22;
    Q5_1 = 7, "q5_1", 32, 24;
    Q8_0 = 8, "q8_0", 32, 34;
    Q8_1 = 9, "q8_1", 32, 36;
    Q2_K = 10, "q2_K", 256, 84;
    Q3_K = 11, "q3_K", 256, 110;
    Q4_K = 12, "q4_K", 256, 144;
    Q5_K = 13, "q5_K", 256, 176;
    Q6_K = 14, "q6_K", 256, 210;
    Q8_K = 15, "q8_K", 256, 292;
    IQ4_NL = 20, "iq4_nl", 32, 18;
    IQ4_XS = 23, "iq4_xs", 256, 136;
    I8 = 24, "i8", 1, 1;
    I16 = 25, "i16", 1, 2;
    I32 = 26, "i32", 1, 4;
    I64 = 27, "i64", 1, 8;
    F64 = 28, "f64", 1, 8;
    BF16 = 30, "bf16", 1, 2;
}

impl GgmlType {
    /// Bytes taken by one row of `n` elements, or `None` when `n` is not a
    /// whole number of blocks or the size overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        if !n.is_multiple_of(self.block_size()) {
            return None;
        }
        (n / self.block_size()).checked_mul(self.block_bytes())
    }

    /// Bytes taken by a tensor of shape `dims` (ggml order: `dims[0]` is the row
    /// length), or `None` on a partial block or overflow.
    pub fn tensor_bytes(self, dims: &[u64]) -> Option<u64> {
        let (&row, rest) = dims.split_first()?;
        rest.iter()
            .try_fold(self.row_bytes(row)?, |acc, &d| acc.checked_mul(d))
    }

    /// Whether the type is a block-quantized format (not a plain float/int).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Parses ggml's name, case-insensitively (`q4_k` and `q4_K` both work).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GgmlType::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
