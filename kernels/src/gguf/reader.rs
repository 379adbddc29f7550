//! GGUF reader over an mmap (or an owned buffer), validating everything at open.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use super::value::{GgufType, GgufValue};
use super::{align_up, GgufError, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH};
use crate::types::GgmlType;

/// Where one tensor's data lies, and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Shape in ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute file offset of the first data byte.
    pub offset: u64,
    /// Data bytes (without the padding that follows).
    pub size: u64,
}

impl TensorInfo {
    /// Elements in the tensor (the reader has checked this fits in an i64;
    /// saturates for a hand-built info that does not).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Rows: the product of every dimension but the first.
    pub fn n_rows(&self) -> u64 {
        self.dims
            .iter()
            .skip(1)
            .fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Elements per row (`dims[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(0)
    }
}

enum Storage {
    Mmap(Mmap),
    Bytes(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Bytes(v) => v,
        }
    }
}

/// A validated GGUF file: header parsed, every tensor's data range checked to
/// lie inside the file and not to overlap another.
pub struct GgufFile {
    storage: Storage,
    header: Header,
}

/// Everything parsed from the bytes before the data section.
struct Header {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, GgufValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    data_offset: u64,
}

impl GgufFile {
    /// Maps `path` read-only and validates it. Errors name the path.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        // Opening a FIFO would block and a directory cannot be mapped
        // (ENODEV, which says nothing); say what the path is instead.
        let meta = std::fs::metadata(path).map_err(|e| GgufError::io(path, e))?;
        if !meta.is_file() {
            let what = if meta.is_dir() {
                "is a directory, not a GGUF file (pass the .gguf file in it)"
            } else {
                "is not a regular file"
            };
            return Err(GgufError::io(path, std::io::Error::other(what)));
        }
        let file = File::open(path).map_err(|e| GgufError::io(path, e))?;
        let len = file.metadata().map_err(|e| GgufError::io(path, e))?.len();
        let storage = if len == 0 {
            // Mapping an empty file fails on some platforms; an empty buffer
            // gives the proper "truncated" message instead.
            Storage::Bytes(Vec::new())
        } else {
            // SAFETY: the map is read-only. Another process truncating or
            // rewriting the file while it is mapped would break the slices we
            // hand out; that is the accepted cost of mmapping model files.
            // This crate's writer never modifies a file in place (it renames a
            // complete new file over the old one), so it cannot cause this.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io(path, e))?;
            Storage::Mmap(map)
        };
        GgufFile::new(storage).map_err(|e| match e {
            GgufError::Malformed(msg) => GgufError::Malformed(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Validates a GGUF file held in memory (tests, fuzzing).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::new(Storage::Bytes(bytes))
    }

    fn new(storage: Storage) -> Result<GgufFile, GgufError> {
        let header = parse(storage.bytes())?;
        Ok(GgufFile { storage, header })
    }

    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Alignment of tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Metadata pairs, in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.header.metadata
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        let &i = self.header.key_index.get(key)?;
        Some(&self.header.metadata[i].1)
    }

    /// Tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let &i = self.header.tensor_index.get(name)?;
        Some(&self.header.tensors[i])
    }

    /// The data bytes of `t`, which must come from this file's
    /// [`tensors`](Self::tensors) (its range was checked at open).
    ///
    /// # Panics
    /// If `t` describes a range outside this file (an info from another file).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let bytes = self.storage.bytes();
        usize::try_from(t.offset)
            .ok()
            .zip(usize::try_from(t.size).ok())
            .and_then(|(start, len)| bytes.get(start..start.checked_add(len)?))
            .unwrap_or_else(|| {
                panic!(
                    "tensor {}: bytes [{}, +{}) are outside this {}-byte GGUF file; \
                     the TensorInfo comes from another file",
                    t.name,
                    t.offset,
                    t.size,
                    bytes.len()
                )
            })
    }

    /// Absolute offset of the data section (tensor offsets are relative to it
    /// on disk). For a file without tensors, at most the file size.
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    pub fn file_size(&self) -> u64 {
        self.storage.bytes().len() as u64
    }
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.header.version)
            .field("file_size", &self.file_size())
            .field("alignment", &self.header.alignment)
            .field("metadata", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Low-level cursor. Its faults carry no context; callers add it with `ctx`,
// so that a message reads "truncated: metadata key 12 ('x') needs 8 bytes ...".

enum Fault {
    Truncated { need: u64, at: usize, len: usize },
    Bad(String),
}

trait Context<T> {
    /// Turns a fault into a message about `what` was being read.
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, GgufError>;
}

impl<T> Context<T> for Result<T, Fault> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, GgufError> {
        self.map_err(|fault| {
            GgufError::Malformed(match fault {
                Fault::Truncated { need, at, len } => {
                    format!(
                        "truncated: {} needs {need} bytes at offset {at}, file has {len}",
                        what()
                    )
                }
                Fault::Bad(msg) => format!("{}: {msg}", what()),
            })
        })
    }
}

fn malformed<T>(msg: String) -> Result<T, GgufError> {
    Err(GgufError::Malformed(msg))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], Fault> {
        if n > self.remaining() {
            return Err(Fault::Truncated {
                need: n,
                at: self.pos,
                len: self.buf.len(),
            });
        }
        // n <= remaining, which fits in usize.
        let bytes = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Fault> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, Fault> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, Fault> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, Fault> {
        self.array().map(u64::from_le_bytes)
    }

    fn string(&mut self) -> Result<String, Fault> {
        let len = self.u64()?;
        let at = self.pos;
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(Fault::Bad(format!(
                "string at offset {at} is not valid UTF-8 (bad byte at offset {})",
                at + e.valid_up_to()
            ))),
        }
    }

    fn value_type(&mut self) -> Result<GgufType, Fault> {
        let at = self.pos;
        let id = self.u32()?;
        GgufType::from_id(id)
            .ok_or_else(|| Fault::Bad(format!("unknown value type {id} at offset {at}")))
    }

    /// Refuses `count` items of at least `min_size` bytes each when they
    /// cannot fit in what remains, before anything is allocated for them.
    fn check_count(&self, count: u64, min_size: u64, items: &str) -> Result<(), Fault> {
        if count <= self.remaining() / min_size {
            return Ok(());
        }
        Err(Fault::Bad(format!(
            "truncated or corrupt: {count} {items} need at least {} bytes at offset {}, file has {}",
            count.saturating_mul(min_size),
            self.pos,
            self.buf.len()
        )))
    }
}

// ---------------------------------------------------------------------------
// Values.

/// `depth` counts the arrays enclosing this value.
fn read_value(cur: &mut Cursor, ty: GgufType, depth: usize) -> Result<GgufValue, Fault> {
    Ok(match ty {
        GgufType::U8 => GgufValue::U8(cur.u8()?),
        GgufType::I8 => GgufValue::I8(i8::from_le_bytes(cur.array()?)),
        GgufType::U16 => GgufValue::U16(u16::from_le_bytes(cur.array()?)),
        GgufType::I16 => GgufValue::I16(i16::from_le_bytes(cur.array()?)),
        GgufType::U32 => GgufValue::U32(cur.u32()?),
        GgufType::I32 => GgufValue::I32(i32::from_le_bytes(cur.array()?)),
        GgufType::F32 => GgufValue::F32(f32::from_le_bytes(cur.array()?)),
        // Any non-zero byte is true, as in ggml.
        GgufType::Bool => GgufValue::Bool(cur.u8()? != 0),
        GgufType::String => GgufValue::String(cur.string()?),
        GgufType::U64 => GgufValue::U64(cur.u64()?),
        GgufType::I64 => GgufValue::I64(i64::from_le_bytes(cur.array()?)),
        GgufType::F64 => GgufValue::F64(f64::from_le_bytes(cur.array()?)),
        GgufType::Array => read_array(cur, depth + 1)?,
    })
}

fn read_array(cur: &mut Cursor, depth: usize) -> Result<GgufValue, Fault> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(Fault::Bad(format!(
            "arrays nested more than {MAX_ARRAY_DEPTH} deep at offset {}",
            cur.pos
        )));
    }
    let elem = cur.value_type()?;
    let count = cur.u64()?;
    cur.check_count(count, elem.min_size(), &format!("{elem} array items"))?;
    // Numbers stay as the file's bytes, one byte per u8 rather than a
    // whole GgufValue (32 bytes) per item.
    if let Some(size) = elem.fixed_size() {
        let bytes = cur.take(count * size)?.to_vec();
        return Ok(GgufValue::Packed(elem, bytes));
    }
    // check_count bounds count by the file size, so this cannot over-allocate.
    let mut items = Vec::with_capacity(count as usize);
    for _ in 0..count {
        items.push(read_value(cur, elem, depth)?);
    }
    Ok(GgufValue::Array(elem, items))
}

// ---------------------------------------------------------------------------
// Header.

/// Fewest bytes a metadata pair takes: key length, value type, a 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Fewest bytes a tensor info takes: name length, n_dims, one ne, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

fn parse(buf: &[u8]) -> Result<Header, GgufError> {
    let mut cur = Cursor { buf, pos: 0 };
    let magic = cur.take(4).ctx(|| "magic".into())?;
    if magic != MAGIC {
        return malformed(format!(
            "not a GGUF file: starts with {:?}, expected \"GGUF\"",
            String::from_utf8_lossy(magic)
        ));
    }
    let version = cur.u32().ctx(|| "version".into())?;
    check_version(version)?;
    let n_tensors = cur.u64().ctx(|| "tensor count".into())?;
    let n_kv = cur.u64().ctx(|| "metadata count".into())?;

    let (metadata, key_index) = read_metadata(&mut cur, n_kv)?;
    let alignment = alignment_of(&metadata, &key_index)?;
    let (raw, tensor_index) = read_tensor_infos(&mut cur, n_tensors, alignment)?;

    let header_end = cur.pos as u64;
    let file_len = buf.len() as u64;
    // The padding exists only when there is data after it (ggml writes it
    // always, other writers may not for a file without tensors).
    let data_offset = align_up(header_end, alignment)
        .filter(|&d| d <= file_len || raw.is_empty())
        .ok_or_else(|| {
            GgufError::Malformed(format!(
                "truncated: padding to alignment {alignment} after the header (ends at byte \
                 {header_end}) goes past the end of the file, which has {file_len} bytes"
            ))
        })?
        .min(file_len);
    let tensors = place_tensors(raw, data_offset, file_len)?;
    Ok(Header {
        version,
        alignment,
        metadata,
        key_index,
        tensors,
        tensor_index,
        data_offset,
    })
}

fn check_version(version: u32) -> Result<(), GgufError> {
    match version {
        2 | 3 => Ok(()),
        1 => malformed(
            "GGUF version 1 is not supported (it predates 64-bit counts); \
                        convert the model again"
                .into(),
        ),
        v if v & 0xFFFF == 0 && matches!(v.swap_bytes(), 1..=3) => malformed(format!(
            "version field reads {v:#010x}: this is a big-endian GGUF file, which is not supported"
        )),
        v => malformed(format!(
            "unsupported GGUF version {v} (this reader reads versions 2 and 3)"
        )),
    }
}

type Metadata = (Vec<(String, GgufValue)>, HashMap<String, usize>);

fn read_metadata(cur: &mut Cursor, n_kv: u64) -> Result<Metadata, GgufError> {
    cur.check_count(n_kv, MIN_KV_BYTES, "metadata pairs")
        .ctx(|| "metadata count".into())?;
    let mut pairs = Vec::with_capacity(n_kv as usize);
    let mut index = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = cur.string().ctx(|| format!("metadata key {i}"))?;
        let what = || format!("metadata key {i} ('{}')", key.escape_debug());
        if key.is_empty() {
            return malformed(format!("metadata key {i} is empty"));
        }
        if let Some(first) = index.get(&key) {
            return malformed(format!("{} appears twice (first as key {first})", what()));
        }
        let ty = cur.value_type().ctx(what)?;
        let value = read_value(cur, ty, 0).ctx(what)?;
        index.insert(key.clone(), pairs.len());
        pairs.push((key, value));
    }
    Ok((pairs, index))
}

fn alignment_of(
    metadata: &[(String, GgufValue)],
    index: &HashMap<String, usize>,
) -> Result<u64, GgufError> {
    let Some(&i) = index.get(ALIGNMENT_KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match metadata[i].1 {
        GgufValue::U32(a) if a.is_power_of_two() => Ok(a.into()),
        GgufValue::U32(a) => malformed(format!(
            "{ALIGNMENT_KEY} is {a}, which is not a power of two"
        )),
        ref v => malformed(format!(
            "{ALIGNMENT_KEY} has type {}, expected u32",
            v.value_type()
        )),
    }
}

/// A tensor info as read, with its offset still relative to the data section.
struct RawTensor {
    info: TensorInfo,
    rel_offset: u64,
}

type TensorInfos = (Vec<RawTensor>, HashMap<String, usize>);

fn read_tensor_infos(
    cur: &mut Cursor,
    n_tensors: u64,
    alignment: u64,
) -> Result<TensorInfos, GgufError> {
    cur.check_count(n_tensors, MIN_TENSOR_INFO_BYTES, "tensor infos")
        .ctx(|| "tensor count".into())?;
    let mut raw = Vec::with_capacity(n_tensors as usize);
    let mut index = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let t = read_tensor_info(cur, i, alignment)?;
        if let Some(first) = index.get(&t.info.name) {
            return malformed(format!(
                "tensor {} appears twice (as tensors {first} and {i})",
                t.info.name.escape_debug()
            ));
        }
        index.insert(t.info.name.clone(), raw.len());
        raw.push(t);
    }
    Ok((raw, index))
}

fn read_tensor_info(cur: &mut Cursor, i: u64, alignment: u64) -> Result<RawTensor, GgufError> {
    let name = cur.string().ctx(|| format!("tensor {i} name"))?;
    let shown = name.escape_debug().to_string();
    let field = |f: &str| format!("tensor {i} ({shown}) {f}");

    let n_dims = cur.u32().ctx(|| field("n_dims"))?;
    if !(1..=4).contains(&n_dims) {
        return malformed(format!(
            "tensor {shown}: {n_dims} dimensions, expected 1 to 4"
        ));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        dims.push(cur.u64().ctx(|| field(&format!("dimension {d}")))?);
    }
    check_shape(&shown, &dims)?;

    let type_id = cur.u32().ctx(|| field("type"))?;
    let Some(ty) = GgmlType::from_id(type_id) else {
        return malformed(format!("tensor {shown}: unknown ggml type id {type_id}"));
    };
    if dims[0] % ty.block_size() != 0 {
        return malformed(format!(
            "tensor {shown}: row length {} is not a multiple of the {ty} block size {}",
            dims[0],
            ty.block_size()
        ));
    }
    let Some(size) = ty.tensor_bytes(&dims) else {
        return malformed(format!(
            "tensor {shown}: size of {ty} tensor {dims:?} overflows"
        ));
    };

    let rel_offset = cur.u64().ctx(|| field("offset"))?;
    if rel_offset % alignment != 0 {
        return malformed(format!(
            "tensor {shown}: offset {rel_offset} is not a multiple of the alignment {alignment}"
        ));
    }
    let info = TensorInfo {
        name,
        dims,
        ty,
        offset: 0,
        size,
    };
    Ok(RawTensor { info, rel_offset })
}

/// Every dimension non-zero and the element count within ggml's `int64_t`.
fn check_shape(name: &str, dims: &[u64]) -> Result<(), GgufError> {
    if let Some(d) = dims.iter().position(|&n| n == 0) {
        return malformed(format!("tensor {name}: dimension {d} of {dims:?} is 0"));
    }
    let elements = dims.iter().try_fold(1u64, |acc, &n| acc.checked_mul(n));
    match elements {
        Some(n) if n <= i64::MAX as u64 => Ok(()),
        _ => malformed(format!(
            "tensor {name}: shape {dims:?} has more than 2^63 - 1 elements"
        )),
    }
}

/// Turns relative offsets into absolute ones, checking every tensor lies in
/// the file and no two share a byte.
fn place_tensors(
    raw: Vec<RawTensor>,
    data_offset: u64,
    file_len: u64,
) -> Result<Vec<TensorInfo>, GgufError> {
    let mut tensors = Vec::with_capacity(raw.len());
    for RawTensor {
        mut info,
        rel_offset,
    } in raw
    {
        let name = info.name.escape_debug().to_string();
        let end = data_offset
            .checked_add(rel_offset)
            .and_then(|start| Some((start, start.checked_add(info.size)?)));
        match end {
            Some((start, end)) if end <= file_len => info.offset = start,
            Some((_, end)) => {
                return malformed(format!(
                    "tensor {name}: data ends at byte {end}, file has {file_len}"
                ))
            }
            None => {
                return malformed(format!(
                    "tensor {name}: offset {rel_offset} + size {} overflows",
                    info.size
                ))
            }
        }
        tensors.push(info);
    }
    check_overlaps(&tensors)?;
    Ok(tensors)
}

fn check_overlaps(tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // Both ranges were checked to end inside the file: no overflow.
        let a_end = a.offset + a.size;
        if a_end > b.offset {
            return malformed(format!(
                "tensors {} and {} overlap: {} holds bytes {}..{}, {} starts at {}",
                a.name.escape_debug(),
                b.name.escape_debug(),
                a.name.escape_debug(),
                a.offset,
                a_end,
                b.name.escape_debug(),
                b.offset
            ));
        }
    }
    Ok(())
}
