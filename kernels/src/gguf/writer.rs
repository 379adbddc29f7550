//! Streaming GGUF writer: header first, then tensor data as it is produced,
//! into a temporary file that is renamed over the destination only once
//! complete, so a crash or an error never leaves a half-written model behind.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::value::{GgufType, GgufValue};
use super::{
    align_up, GgufError, TensorInfo, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH,
    MAX_TENSOR_NAME, VERSION,
};
use crate::types::GgmlType;

/// A tensor the writer will hold: its data comes later through
/// [`GgufWriter::write_data`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    /// Shape in ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

/// The spec of a tensor read from a file, to write it again (rewritten files).
impl From<&TensorInfo> for TensorSpec {
    fn from(t: &TensorInfo) -> TensorSpec {
        TensorSpec {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
        }
    }
}

/// Big enough that writes of small quantized rows reach the disk in large
/// chunks; larger writes bypass the buffer anyway.
const BUFFER_BYTES: usize = 1 << 20;

/// A GGUF file being written. See [`GgufWriter::create`].
pub struct GgufWriter {
    // Declared before `temp` so the file is closed before the guard removes it.
    out: BufWriter<File>,
    temp: TempFile,
    path: PathBuf,
    alignment: u64,
    tensors: Vec<(String, u64)>,
    /// Index of the tensor the next data bytes belong to.
    current: usize,
    /// Bytes of `tensors[current]` written so far.
    current_written: u64,
    bytes_written: u64,
    total_bytes: u64,
    /// Set by an I/O error: the file's state is unknown, so nothing more may be written.
    failed: bool,
}

impl GgufWriter {
    /// Validates (unique names, unique keys, sizes computable, 1..=4 dims) and
    /// writes the whole header into a hidden temporary file next to `path`.
    /// Tensor data follows with [`write_data`](Self::write_data); `path` is
    /// only created or replaced by [`finish`](Self::finish).
    pub fn create(
        path: &Path,
        metadata: &[(String, GgufValue)],
        tensors: &[TensorSpec],
    ) -> Result<GgufWriter, GgufError> {
        let alignment = check_metadata(metadata)?;
        let sizes = tensor_sizes(tensors)?;
        let (header, data_start, total_bytes) =
            encode_header(metadata, tensors, &sizes, alignment)?;

        let (temp, file) = TempFile::create(path)?;
        let mut writer = GgufWriter {
            out: BufWriter::with_capacity(BUFFER_BYTES, file),
            temp,
            path: path.to_path_buf(),
            alignment,
            tensors: tensors.iter().map(|t| t.name.clone()).zip(sizes).collect(),
            current: 0,
            current_written: 0,
            bytes_written: 0,
            total_bytes,
            failed: false,
        };
        writer.write_raw(&header)?;
        writer.write_zeros(data_start - header.len() as u64)?;
        Ok(writer)
    }

    /// Streams the next bytes of tensor data, in the order the tensors were
    /// given. A call holds bytes of the current tensor only (several calls
    /// per tensor are fine); once a tensor is complete the writer pads it to
    /// the alignment and moves on to the next.
    pub fn write_data(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        self.check_not_failed()?;
        if bytes.is_empty() {
            return Ok(());
        }
        let Some((name, size)) = self.tensors.get(self.current) else {
            return Err(GgufError::Invalid(format!(
                "{}: all {} tensors are complete, {} more data bytes given",
                self.path.display(),
                self.tensors.len(),
                bytes.len()
            )));
        };
        let size = *size;
        let left = size - self.current_written;
        if bytes.len() as u64 > left {
            return Err(GgufError::Invalid(format!(
                "tensor {name}: {} more bytes exceed its size of {size} bytes \
                 ({} already written)",
                bytes.len(),
                self.current_written
            )));
        }
        self.write_raw(bytes)?;
        self.current_written += bytes.len() as u64;
        if self.current_written == size {
            let padding = align_up(size, self.alignment).expect("checked at create") - size;
            self.write_zeros(padding)?;
            self.current += 1;
            self.current_written = 0;
        }
        Ok(())
    }

    /// Name of the tensor the next `write_data` bytes belong to; `None` once
    /// every tensor is complete.
    pub fn current_tensor(&self) -> Option<&str> {
        self.tensors
            .get(self.current)
            .map(|(name, _)| name.as_str())
    }

    /// File bytes written so far (header, data and padding).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// File bytes the finished file will have.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Checks every tensor is complete, flushes, fsyncs and renames the
    /// temporary file over `path`: only then does `path` exist or change.
    pub fn finish(self) -> Result<(), GgufError> {
        self.check_not_failed()?;
        if let Some((name, size)) = self.tensors.get(self.current) {
            return Err(GgufError::Invalid(format!(
                "tensor {name} is incomplete: {} of {size} bytes written \
                 ({} of {} tensors not complete); {} left unchanged",
                self.current_written,
                self.tensors.len() - self.current,
                self.tensors.len(),
                self.path.display()
            )));
        }
        debug_assert_eq!(self.bytes_written, self.total_bytes);
        let GgufWriter {
            out,
            mut temp,
            path,
            ..
        } = self;
        let file = out
            .into_inner()
            .map_err(|e| GgufError::io(&path, e.into_error()))?;
        // The data must be on disk before the rename makes it the model:
        // otherwise a crash could leave a renamed but empty file.
        file.sync_all().map_err(|e| GgufError::io(&path, e))?;
        drop(file);
        fs::rename(&temp.path, &path).map_err(|e| GgufError::io(&path, e))?;
        temp.armed = false;
        sync_parent_dir(&path);
        Ok(())
    }

    fn check_not_failed(&self) -> Result<(), GgufError> {
        if self.failed {
            return Err(GgufError::Invalid(format!(
                "{}: an earlier write failed; the writer cannot continue",
                self.path.display()
            )));
        }
        Ok(())
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        if let Err(e) = self.out.write_all(bytes) {
            self.failed = true;
            return Err(GgufError::io(&self.path, e));
        }
        self.bytes_written += bytes.len() as u64;
        Ok(())
    }

    fn write_zeros(&mut self, mut n: u64) -> Result<(), GgufError> {
        const ZEROS: [u8; 4096] = [0; 4096];
        while n > 0 {
            let chunk = n.min(ZEROS.len() as u64);
            self.write_raw(&ZEROS[..chunk as usize])?;
            n -= chunk;
        }
        Ok(())
    }
}

/// The rename is durable only once the directory entry is; best effort,
/// because some filesystems refuse to fsync a directory and the data itself
/// is already safe.
fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    if let Ok(dir) = File::open(parent_dir(path)) {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A hidden `.<name>.tmp-<pid>-<n>` file next to the destination (so the
/// final rename stays on one filesystem), removed on drop unless disarmed.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn create(dest: &Path) -> Result<(TempFile, File), GgufError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let Some(name) = dest.file_name() else {
            return Err(GgufError::Invalid(format!(
                "{}: destination has no file name",
                dest.display()
            )));
        };
        let dir = parent_dir(dest);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut temp_name = std::ffi::OsString::from(".");
            temp_name.push(name);
            temp_name.push(format!(".tmp-{}-{n}", std::process::id()));
            let path = dir.join(temp_name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((TempFile { path, armed: true }, file)),
                // Left over by a crashed process that had our pid: try the next name.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(GgufError::io(dest, e)),
            }
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------
// Validation: refuse anything our reader (or llama.cpp's) would refuse.

fn invalid<T>(msg: String) -> Result<T, GgufError> {
    Err(GgufError::Invalid(msg))
}

/// Checks keys and values; returns the alignment the file will use.
fn check_metadata(metadata: &[(String, GgufValue)]) -> Result<u64, GgufError> {
    let mut seen = HashSet::with_capacity(metadata.len());
    let mut alignment = DEFAULT_ALIGNMENT;
    for (key, value) in metadata {
        if key.is_empty() {
            return invalid("metadata key is empty".into());
        }
        if !seen.insert(key.as_str()) {
            return invalid(format!("metadata key '{key}' appears twice"));
        }
        check_value(value)
            .map_err(|msg| GgufError::Invalid(format!("metadata key '{key}': {msg}")))?;
        if key == ALIGNMENT_KEY {
            alignment = match *value {
                GgufValue::U32(a) if a.is_power_of_two() => a.into(),
                _ => {
                    return invalid(format!(
                        "{ALIGNMENT_KEY} must be a u32 power of two, not {value}"
                    ))
                }
            };
        }
    }
    Ok(alignment)
}

fn check_value(value: &GgufValue) -> Result<(), String> {
    if value.depth() > MAX_ARRAY_DEPTH {
        return Err(format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"));
    }
    if let GgufValue::Packed(elem, bytes) = value {
        return match elem.fixed_size() {
            Some(n) if (bytes.len() as u64).is_multiple_of(n) => Ok(()),
            _ => Err(format!(
                "packed array of {elem} holds {} bytes, not a whole number of items",
                bytes.len()
            )),
        };
    }
    let GgufValue::Array(elem, items) = value else {
        return Ok(());
    };
    for (i, item) in items.iter().enumerate() {
        if item.value_type() != *elem {
            return Err(format!(
                "array of {elem} holds a {} at index {i}",
                item.value_type()
            ));
        }
        check_value(item)?;
    }
    Ok(())
}

/// Data bytes of each tensor, after checking names and shapes.
fn tensor_sizes(tensors: &[TensorSpec]) -> Result<Vec<u64>, GgufError> {
    let mut seen = HashSet::with_capacity(tensors.len());
    let mut sizes = Vec::with_capacity(tensors.len());
    for t in tensors {
        let name = &t.name;
        if name.is_empty() || name.len() > MAX_TENSOR_NAME {
            return invalid(format!(
                "tensor name '{name}' must have 1 to {MAX_TENSOR_NAME} bytes (ggml's limit)"
            ));
        }
        if !seen.insert(name.as_str()) {
            return invalid(format!("tensor {name} appears twice"));
        }
        if !(1..=4).contains(&t.dims.len()) || t.dims.contains(&0) {
            return invalid(format!(
                "tensor {name}: shape {:?} must have 1 to 4 non-zero dimensions",
                t.dims
            ));
        }
        let elements = t.dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let size =
            t.ty.tensor_bytes(&t.dims)
                .filter(|_| elements <= Some(i64::MAX as u64));
        let Some(size) = size else {
            return invalid(format!(
                "tensor {name}: shape {:?} is not a whole number of {} blocks of {} or is too large",
                t.dims,
                t.ty,
                t.ty.block_size()
            ));
        };
        sizes.push(size);
    }
    Ok(sizes)
}

// ---------------------------------------------------------------------------
// Encoding.

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_u64(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, value: &GgufValue) {
    match value {
        GgufValue::U8(v) => buf.push(*v),
        GgufValue::I8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::I16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::U32(v) => put_u32(buf, *v),
        GgufValue::I32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::Bool(v) => buf.push(u8::from(*v)),
        GgufValue::String(s) => put_str(buf, s),
        GgufValue::U64(v) => put_u64(buf, *v),
        GgufValue::I64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::F64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        GgufValue::Array(elem, items) => {
            put_u32(buf, elem.id());
            put_u64(buf, items.len() as u64);
            for item in items {
                put_value(buf, item);
            }
        }
        GgufValue::Packed(elem, bytes) => {
            put_u32(buf, elem.id());
            put_u64(buf, value.array_len().unwrap_or(0) as u64);
            match elem {
                GgufType::Bool => buf.extend(bytes.iter().map(|&b| u8::from(b != 0))),
                _ => buf.extend_from_slice(bytes),
            }
        }
    }
}

/// The header (built in memory: it holds only the metadata, already in
/// memory itself, and the tensor infos), where the data section starts after
/// its padding, and the size of the whole file.
fn encode_header(
    metadata: &[(String, GgufValue)],
    tensors: &[TensorSpec],
    sizes: &[u64],
    alignment: u64,
) -> Result<(Vec<u8>, u64, u64), GgufError> {
    let too_large = || GgufError::Invalid("tensor data adds up to more than 2^64 bytes".into());
    let mut buf = Vec::new();
    buf.extend_from_slice(&MAGIC);
    put_u32(&mut buf, VERSION);
    put_u64(&mut buf, tensors.len() as u64);
    put_u64(&mut buf, metadata.len() as u64);
    for (key, value) in metadata {
        put_str(&mut buf, key);
        put_u32(&mut buf, value.value_type().id());
        put_value(&mut buf, value);
    }
    let mut data_len = 0u64;
    for (t, &size) in tensors.iter().zip(sizes) {
        put_str(&mut buf, &t.name);
        put_u32(&mut buf, t.dims.len() as u32);
        for &d in &t.dims {
            put_u64(&mut buf, d);
        }
        put_u32(&mut buf, t.ty.id());
        put_u64(&mut buf, data_len);
        let padded = align_up(size, alignment).ok_or_else(too_large)?;
        data_len = data_len.checked_add(padded).ok_or_else(too_large)?;
    }
    let data_start = align_up(buf.len() as u64, alignment).ok_or_else(too_large)?;
    let total = data_start.checked_add(data_len).ok_or_else(too_large)?;
    Ok((buf, data_start, total))
}
