//! Safetensors weights, single-file or sharded with `model.safetensors.index.json`.
//!
//! Tensors are read by row ranges with positioned reads rather than mapped,
//! so converting a model keeps only the rows in flight in memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use rayon::prelude::*;
use serde_json::Value;

use super::read_json;
use crate::error::{ConvertError, Result};

/// Element types the converter reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    BF16,
    F16,
    F32,
}

impl Dtype {
    fn parse(s: &str) -> Option<Dtype> {
        match s {
            "BF16" => Some(Dtype::BF16),
            "F16" => Some(Dtype::F16),
            "F32" => Some(Dtype::F32),
            _ => None,
        }
    }

    pub fn size(self) -> u64 {
        match self {
            Dtype::BF16 | Dtype::F16 => 2,
            Dtype::F32 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::BF16 => "BF16",
            Dtype::F16 => "F16",
            Dtype::F32 => "F32",
        }
    }
}

/// Where one tensor's bytes are.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    pub dtype: Dtype,
    /// Row-major shape as stored (`[out, in]` for matrices).
    pub shape: Vec<u64>,
    file: usize,
    /// Absolute offset of the first byte in its file.
    offset: u64,
}

impl TensorEntry {
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Length of the last dimension: the row that quantization works on.
    pub fn row_len(&self) -> u64 {
        self.shape.last().copied().unwrap_or(1)
    }

    pub fn n_rows(&self) -> u64 {
        self.n_elements() / self.row_len().max(1)
    }
}

/// All tensors of a checkpoint directory.
pub struct Checkpoint {
    files: Vec<(PathBuf, File)>,
    tensors: BTreeMap<String, TensorEntry>,
}

/// Largest safetensors JSON header we accept; real ones are well under 1 MB.
const MAX_HEADER: u64 = 100 << 20;

impl Checkpoint {
    /// Opens `model.safetensors`, or the shards listed by
    /// `model.safetensors.index.json`, in `dir`.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let weight_map = if index.exists() {
            Some(read_weight_map(&index)?)
        } else {
            None
        };
        let shard_names: Vec<String> = if let Some(map) = &weight_map {
            shard_names(&index, map)?
        } else if single.exists() {
            vec!["model.safetensors".into()]
        } else {
            return Err(ConvertError::bad_file(
                dir,
                "no model.safetensors or model.safetensors.index.json in this directory",
            ));
        };
        let mut ck = Checkpoint {
            files: Vec::new(),
            tensors: BTreeMap::new(),
        };
        for name in shard_names {
            ck.add_file(&dir.join(&name))?;
        }
        if let Some(map) = &weight_map {
            ck.check_index(&index, map)?;
        }
        Ok(ck)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let file = crate::files::open_regular(path)?;
        let file_len = file
            .metadata()
            .map_err(|e| ConvertError::io(path, e))?
            .len();
        let bad = |msg: String| ConvertError::bad_file(path, msg);
        let mut len_bytes = [0u8; 8];
        read_at(&file, 0, &mut len_bytes).map_err(|_| {
            bad(format!(
                "file of {file_len} bytes is too short for a safetensors header"
            ))
        })?;
        let header_len = header_len(len_bytes, file_len).map_err(bad)?;
        let mut header = vec![0u8; header_len as usize];
        read_at(&file, 8, &mut header).map_err(|e| ConvertError::io(path, e))?;
        let file_index = self.files.len();
        for (name, entry) in parse_header(&header, file_len).map_err(bad)? {
            if self
                .tensors
                .insert(
                    name.clone(),
                    TensorEntry {
                        file: file_index,
                        ..entry
                    },
                )
                .is_some()
            {
                return Err(bad(format!("tensor {name} appears in more than one shard")));
            }
        }
        self.files.push((path.to_path_buf(), file));
        Ok(())
    }

    /// The index must name exactly the tensors the shards hold, each in its shard.
    fn check_index(&self, index: &Path, map: &serde_json::Map<String, Value>) -> Result<()> {
        for (name, file) in map {
            let entry = self.tensors.get(name).ok_or_else(|| {
                ConvertError::bad_file(index, format!("lists tensor {name} but no shard holds it"))
            })?;
            let holder = self.files[entry.file]
                .0
                .file_name()
                .and_then(|f| f.to_str());
            if holder != file.as_str() {
                return Err(ConvertError::bad_file(
                    index,
                    format!(
                        "says {name} is in {file}, but it is in {}",
                        holder.unwrap_or("?")
                    ),
                ));
            }
        }
        if let Some(name) = self.tensors.keys().find(|n| !map.contains_key(*n)) {
            return Err(ConvertError::bad_file(
                index,
                format!("does not list tensor {name}, which a shard holds"),
            ));
        }
        Ok(())
    }

    /// The paths of the weight files.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|(p, _)| p.clone()).collect()
    }

    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Reads rows `first..first + count` of `name` as raw bytes in its dtype,
    /// replacing the contents of `out`.
    pub fn read_rows_raw(
        &self,
        name: &str,
        first: u64,
        count: u64,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| ConvertError::tensor(name, "not in the checkpoint"))?;
        let row_bytes = t.row_len() * t.dtype.size();
        debug_assert!(first + count <= t.n_rows());
        out.resize((count * row_bytes) as usize, 0);
        let (path, file) = &self.files[t.file];
        read_at(file, t.offset + first * row_bytes, out).map_err(|e| ConvertError::io(path, e))
    }

    /// Reads rows `first..first + count` of `name` converted exactly to f32.
    pub fn read_rows_f32(
        &self,
        name: &str,
        first: u64,
        count: u64,
        raw: &mut Vec<u8>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.read_rows_raw(name, first, count, raw)?;
        let dtype = self.tensors[name].dtype;
        to_f32(dtype, raw, out);
        Ok(())
    }
}

/// Widens little-endian `dtype` values to f32 (exact for every source type),
/// split across rayon's threads: on a few cores this is a visible share of a
/// conversion.
pub fn to_f32(dtype: Dtype, raw: &[u8], out: &mut Vec<f32>) {
    const PER_TASK: usize = 1 << 16;
    let size = dtype.size() as usize;
    out.clear();
    out.resize(raw.len() / size, 0.0);
    out.par_chunks_mut(PER_TASK)
        .zip(raw.par_chunks(PER_TASK * size))
        .for_each(|(dst, src)| decode_into(dtype, src, dst));
}

/// Widens the first `out.len()` values of `raw` (little-endian `dtype`) into
/// `out`, exactly, on the calling thread.
pub fn decode_into(dtype: Dtype, raw: &[u8], out: &mut [f32]) {
    let pairs = out.iter_mut().zip(raw.chunks_exact(dtype.size() as usize));
    match dtype {
        Dtype::BF16 => pairs.for_each(|(d, b)| *d = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        Dtype::F16 => pairs.for_each(|(d, b)| *d = f16::from_le_bytes([b[0], b[1]]).to_f32()),
        Dtype::F32 => pairs.for_each(|(d, b)| *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    }
}

fn read_weight_map(index: &Path) -> Result<serde_json::Map<String, Value>> {
    match read_json(index)? {
        Value::Object(mut top) => match top.remove("weight_map") {
            Some(Value::Object(map)) => Ok(map),
            _ => Err(ConvertError::bad_file(index, "missing `weight_map` object")),
        },
        _ => Err(ConvertError::bad_file(index, "missing `weight_map` object")),
    }
}

/// The distinct shard files the index names, each checked to be a plain file beside it.
fn shard_names(index: &Path, map: &serde_json::Map<String, Value>) -> Result<Vec<String>> {
    let mut shards: Vec<String> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| {
            ConvertError::bad_file(
                index,
                format!("weight_map entry for {name} is not a file name"),
            )
        })?;
        // A shard name is a plain file beside the index, never a path elsewhere.
        if file.is_empty() || file.contains(['/', '\\']) || file.starts_with('.') {
            return Err(ConvertError::bad_file(
                index,
                format!("shard name {file:?} for {name} is not a plain file name"),
            ));
        }
        if !shards.iter().any(|s| s == file) {
            shards.push(file.to_string());
        }
    }
    shards.sort();
    Ok(shards)
}

/// The header length a safetensors file of `file_len` bytes starts with
/// (`len_bytes`), checked to fit the file and [`MAX_HEADER`].
pub fn header_len(len_bytes: [u8; 8], file_len: u64) -> Result<u64, String> {
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER || header_len > file_len.saturating_sub(8) {
        return Err(format!(
            "header length {header_len} does not fit a file of {file_len} bytes"
        ));
    }
    Ok(header_len)
}

/// The tensors a safetensors JSON `header` (of a file of `file_len` bytes)
/// describes, each checked to lie within the file.
pub fn parse_header(header: &[u8], file_len: u64) -> Result<Vec<(String, TensorEntry)>, String> {
    let json: Value =
        serde_json::from_slice(header).map_err(|e| format!("invalid header JSON: {e}"))?;
    let map = json.as_object().ok_or("header is not a JSON object")?;
    let data_start = 8 + header.len() as u64;
    let mut tensors = Vec::with_capacity(map.len());
    for (name, info) in map {
        if name == "__metadata__" {
            continue;
        }
        let entry =
            parse_entry(info, data_start, file_len).map_err(|m| format!("tensor {name}: {m}"))?;
        tensors.push((name.clone(), entry));
    }
    Ok(tensors)
}

fn parse_entry(info: &Value, data_start: u64, file_len: u64) -> Result<TensorEntry, String> {
    let dtype_str = info
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("missing dtype")?;
    let dtype = Dtype::parse(dtype_str)
        .ok_or_else(|| format!("dtype {dtype_str} is not supported (BF16, F16 and F32 are)"))?;
    let shape: Vec<u64> = info
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("missing shape")?
        .iter()
        .map(|d| d.as_u64().ok_or("shape holds a non-integer"))
        .collect::<Result<_, _>>()?;
    let offsets: Vec<u64> = info
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .ok_or("data_offsets must be [begin, end]")?
        .iter()
        .map(|d| d.as_u64().ok_or("data_offsets holds a non-integer"))
        .collect::<Result<_, _>>()?;
    let (begin, end) = (offsets[0], offsets[1]);
    let bytes = shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or("shape is too large")?;
    if end < begin || end - begin != bytes {
        return Err(format!(
            "data_offsets [{begin}, {end}] do not hold shape {shape:?} of {}",
            dtype.name()
        ));
    }
    let offset = data_start.checked_add(begin).ok_or("offset overflows")?;
    match offset.checked_add(bytes) {
        Some(data_end) if data_end <= file_len => {}
        Some(data_end) => return Err(format!("data ends at byte {data_end}, file has {file_len}")),
        None => return Err("data_offsets overflow".into()),
    }
    Ok(TensorEntry {
        dtype,
        shape,
        file: 0,
        offset,
    })
}

#[cfg(unix)]
fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(entry: &str) -> Vec<u8> {
        format!(r#"{{"__metadata__": {{"format": "pt"}}, "w": {entry}}}"#).into_bytes()
    }

    #[test]
    fn headers_are_checked_against_the_file() {
        let h = header(r#"{"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}"#);
        let len = 8 + h.len() as u64;
        let t = parse_header(&h, len + 8).unwrap();
        assert_eq!((t[0].0.as_str(), t[0].1.n_elements()), ("w", 2));
        let e = parse_header(&h, len + 7).unwrap_err();
        assert!(e.contains("tensor w: data ends at byte"), "{e}");
        // An end near u64::MAX: `offset + bytes` wrapped to a small number.
        // (Both offsets have 20 digits, so the header's length is known.)
        let entry = |begin: u64| {
            header(&format!(
                r#"{{"dtype": "F32", "shape": [2], "data_offsets": [{begin}, {}]}}"#,
                begin + 8
            ))
        };
        let data_start = 8 + entry(u64::MAX - 1000).len() as u64;
        let h = entry(u64::MAX - data_start - 4);
        assert_eq!(8 + h.len() as u64, data_start);
        let e = parse_header(&h, 1 << 20).unwrap_err();
        assert!(e.contains("data_offsets overflow"), "{e}");
        for (bad, want) in [
            (
                r#"{"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}"#,
                "I64",
            ),
            (
                r#"{"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}"#,
                "do not hold",
            ),
            (
                r#"{"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}"#,
                "non-integer",
            ),
        ] {
            let e = parse_header(&header(bad), 1 << 20).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        assert!(header_len(u64::MAX.to_le_bytes(), 100).is_err());
        assert!(header_len(92u64.to_le_bytes(), 100).is_ok());
        assert!(header_len(93u64.to_le_bytes(), 100).is_err());
    }

    /// The fuzz target's seed is a valid file, so fuzzing starts from one.
    #[test]
    fn the_fuzz_seed_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../kernels/fuzz/seeds/checkpoint_reader/small.safetensors");
        let data = std::fs::read(path).unwrap();
        let n = header_len(data[..8].try_into().unwrap(), data.len() as u64).unwrap();
        let t = parse_header(&data[8..8 + n as usize], data.len() as u64).unwrap();
        let shapes: Vec<_> = t
            .iter()
            .map(|(n, e)| (n.as_str(), e.shape.clone()))
            .collect();
        assert_eq!(shapes, [("a.weight", vec![2, 2]), ("b.weight", vec![3])]);
    }
}
