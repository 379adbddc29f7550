//! GGUF reader and writer: round trips, hostile and truncated files, the
//! writer's atomicity, and interoperability with ggml's own gguf code.

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};

use llama_cpp_sys_2 as sys;
use orthrus_kernels::gguf::{
    GgufError, GgufFile, GgufType, GgufValue, GgufWriter, TensorSpec, DEFAULT_ALIGNMENT,
};
use orthrus_kernels::GgmlType;

// ---------------------------------------------------------------------------
// Sample content.

fn kv(key: &str, value: GgufValue) -> (String, GgufValue) {
    (key.to_string(), value)
}

/// Every value type, with ggml-readable values only (no nested arrays).
fn flat_metadata() -> Vec<(String, GgufValue)> {
    vec![
        kv("general.architecture", GgufValue::String("qwen3".into())),
        kv(
            "general.name",
            GgufValue::String("tiny ünïcødé 模型 🦀".into()),
        ),
        kv("general.empty", GgufValue::String(String::new())),
        kv("ünïcødé.κλειδί", GgufValue::Bool(true)),
        kv("t.u8", GgufValue::U8(255)),
        kv("t.i8", GgufValue::I8(-128)),
        kv("t.u16", GgufValue::U16(65535)),
        kv("t.i16", GgufValue::I16(-32768)),
        kv("t.u32", GgufValue::U32(4_000_000_000)),
        kv("t.i32", GgufValue::I32(-2_000_000_000)),
        kv("t.f32", GgufValue::F32(1.5e-7)),
        kv("t.bool", GgufValue::Bool(false)),
        kv("t.u64", GgufValue::U64(u64::MAX)),
        kv("t.i64", GgufValue::I64(i64::MIN)),
        kv("t.f64", GgufValue::F64(std::f64::consts::PI)),
        kv(
            "tokenizer.ggml.tokens",
            GgufValue::string_array(["<s>", "", "é", "a b", "\n"]),
        ),
        kv(
            "tokenizer.ggml.token_type",
            GgufValue::i32_array([1, -1, 3, 0, 6]),
        ),
        kv("t.u32s", GgufValue::u32_array([7, 8, 9])),
        kv(
            "t.f32s",
            GgufValue::Array(
                GgufType::F32,
                vec![GgufValue::F32(0.25), GgufValue::F32(-1.0)],
            ),
        ),
        kv(
            "t.bools",
            GgufValue::Array(
                GgufType::Bool,
                vec![GgufValue::Bool(true), GgufValue::Bool(false)],
            ),
        ),
        kv("t.empty_u8s", GgufValue::Array(GgufType::U8, vec![])),
    ]
}

/// `flat_metadata` plus nested arrays, which only our reader accepts.
fn full_metadata() -> Vec<(String, GgufValue)> {
    let mut md = flat_metadata();
    let nested = GgufValue::Array(
        GgufType::Array,
        vec![
            GgufValue::u32_array([1, 2]),
            GgufValue::string_array(["x"]),
            GgufValue::Array(GgufType::Array, vec![GgufValue::i32_array([-5])]),
            GgufValue::Array(GgufType::String, vec![]),
        ],
    );
    md.push(kv("t.nested", nested));
    md.push(kv(
        "t.empty_arrays",
        GgufValue::Array(GgufType::Array, vec![]),
    ));
    md
}

fn spec(name: &str, dims: &[u64], ty: GgmlType) -> TensorSpec {
    TensorSpec {
        name: name.to_string(),
        dims: dims.to_vec(),
        ty,
    }
}

/// Sizes chosen so that most tensors need padding after them.
fn sample_specs() -> Vec<TensorSpec> {
    vec![
        spec("token_embd.weight", &[5, 3], GgmlType::F32),
        spec("blk.0.attn_norm.weight", &[7], GgmlType::F16),
        spec("blk.0.attn_q.weight", &[64, 2], GgmlType::Q8_0),
        spec("blk.0.ffn_down.weight", &[256, 3], GgmlType::Q4_K),
        spec("blk.0.4d", &[2, 3, 2, 2], GgmlType::BF16),
    ]
}

/// Deterministic bytes that differ from tensor to tensor.
fn pattern(seed: u64, len: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn tensor_bytes(specs: &[TensorSpec]) -> Vec<Vec<u8>> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| pattern(i as u64 + 1, s.ty.tensor_bytes(&s.dims).unwrap()))
        .collect()
}

/// Streams each tensor's bytes in odd-sized chunks, checking progress.
fn stream_data(w: &mut GgufWriter, specs: &[TensorSpec], data: &[Vec<u8>]) {
    const CHUNKS: [usize; 7] = [1, 3, 7, 13, 31, 64, 5];
    let mut k = 0;
    for (s, bytes) in specs.iter().zip(data) {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            assert_eq!(w.current_tensor(), Some(s.name.as_str()));
            let n = CHUNKS[k % CHUNKS.len()].min(rest.len());
            k += 1;
            let before = w.bytes_written();
            w.write_data(&rest[..n]).unwrap();
            assert!(w.bytes_written() >= before + n as u64);
            rest = &rest[n..];
        }
    }
    assert_eq!(w.current_tensor(), None);
    assert_eq!(w.bytes_written(), w.total_bytes());
}

fn write_file(path: &Path, md: &[(String, GgufValue)], specs: &[TensorSpec], data: &[Vec<u8>]) {
    let mut w = GgufWriter::create(path, md, specs).unwrap();
    stream_data(&mut w, specs, data);
    w.finish().unwrap();
}

/// The full sample file's bytes.
fn sample_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.gguf");
    let specs = sample_specs();
    write_file(&path, &full_metadata(), &specs, &tensor_bytes(&specs));
    std::fs::read(path).unwrap()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------
// Round trip.

fn check_round_trip(md: &[(String, GgufValue)], alignment: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    let specs = sample_specs();
    let data = tensor_bytes(&specs);
    let mut w = GgufWriter::create(&path, md, &specs).unwrap();
    let total = w.total_bytes();
    stream_data(&mut w, &specs, &data);
    w.finish().unwrap();
    assert_eq!(dir_entries(dir.path()), ["model.gguf"]);

    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), alignment);
    assert_eq!(f.file_size(), total);
    assert_eq!(f.data_offset() % alignment, 0);
    assert_eq!(f.metadata(), md);
    for (k, v) in md {
        assert_eq!(f.get(k), Some(v), "{k}");
    }
    assert_eq!(f.get("no.such.key"), None);

    assert_eq!(f.tensors().len(), specs.len());
    for ((t, s), bytes) in f.tensors().iter().zip(&specs).zip(&data) {
        assert_eq!((&t.name, &t.dims, t.ty), (&s.name, &s.dims, s.ty));
        assert_eq!(t.size, bytes.len() as u64);
        assert_eq!(t.offset % alignment, 0, "{} offset {}", t.name, t.offset);
        assert!(t.offset >= f.data_offset());
        assert_eq!(f.tensor_data(t), &bytes[..], "{}", t.name);
        assert_eq!(f.tensor(&s.name), Some(t));
        assert_eq!(t.row_len(), s.dims[0]);
        assert_eq!(t.n_rows(), s.dims[1..].iter().product::<u64>());
        assert_eq!(t.n_elements(), s.dims.iter().product::<u64>());
    }
    assert_eq!(f.tensor("missing"), None);

    // The same bytes through from_bytes give the same view.
    let g = GgufFile::from_bytes(std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(g.metadata(), f.metadata());
    assert_eq!(g.tensors(), f.tensors());
}

#[test]
fn round_trip_every_value_type_and_tensor_type() {
    check_round_trip(&full_metadata(), DEFAULT_ALIGNMENT);
}

#[test]
fn round_trip_custom_alignments() {
    for a in [1u32, 8, 64, 4096] {
        let mut md = full_metadata();
        md.insert(1, kv("general.alignment", GgufValue::U32(a)));
        check_round_trip(&md, a.into());
    }
}

#[test]
fn metadata_only_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.gguf");
    let md = flat_metadata();
    let w = GgufWriter::create(&path, &md, &[]).unwrap();
    assert_eq!(w.current_tensor(), None);
    w.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.metadata(), &md[..]);
    assert!(f.tensors().is_empty());
    assert!(f.data_offset() <= f.file_size());
}

#[test]
fn display_is_short() {
    let f = GgufFile::from_bytes(sample_file()).unwrap();
    let shown = |k: &str| f.get(k).unwrap().to_string();
    assert_eq!(
        shown("tokenizer.ggml.tokens"),
        r#"[string; 5] ["<s>", "", "é", "a b", …]"#
    );
    assert_eq!(shown("t.u64"), u64::MAX.to_string());
    assert_eq!(shown("general.empty"), r#""""#);
    assert_eq!(shown("t.empty_u8s"), "[u8; 0] []");
}

// ---------------------------------------------------------------------------
// Truncation: a walker independent of the reader marks which field each byte
// belongs to, and every prefix of the file must fail naming that field.

struct Walker<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Walker<'_> {
    fn u32(&mut self) -> u32 {
        self.pos += 4;
        u32::from_le_bytes(self.b[self.pos - 4..self.pos].try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        self.pos += 8;
        u64::from_le_bytes(self.b[self.pos - 8..self.pos].try_into().unwrap())
    }
    fn str(&mut self) -> String {
        let n = self.u64() as usize;
        self.pos += n;
        String::from_utf8(self.b[self.pos - n..self.pos].to_vec()).unwrap()
    }
    fn skip_value(&mut self, ty: u32) {
        match ty {
            0 | 1 | 7 => self.pos += 1,
            2 | 3 => self.pos += 2,
            4..=6 => self.pos += 4,
            10..=12 => self.pos += 8,
            8 => {
                self.str();
            }
            9 => {
                let elem = self.u32();
                for _ in 0..self.u64() {
                    self.skip_value(elem);
                }
            }
            _ => panic!("walker: type {ty}"),
        }
    }
}

/// `(start, end, what the error must mention, section)` for each header field.
fn header_regions(bytes: &[u8]) -> (Vec<(usize, usize, String, &'static str)>, usize) {
    let mut w = Walker { b: bytes, pos: 24 };
    let mut regions = vec![
        (0, 4, "magic".to_string(), ""),
        (4, 8, "version".to_string(), ""),
        (8, 16, "tensor count".to_string(), ""),
        (16, 24, "metadata count".to_string(), ""),
    ];
    let n_tensors = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    let n_kv = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    for i in 0..n_kv {
        let start = w.pos;
        let key = w.str();
        regions.push((start, w.pos, format!("metadata key {i}"), "metadata count"));
        let start = w.pos;
        let ty = w.u32();
        w.skip_value(ty);
        regions.push((
            start,
            w.pos,
            format!("'{}'", key.escape_debug()),
            "metadata count",
        ));
    }
    for i in 0..n_tensors {
        let start = w.pos;
        let name = w.str();
        regions.push((start, w.pos, format!("tensor {i} name"), "tensor count"));
        let start = w.pos;
        let n_dims = w.u32();
        for _ in 0..n_dims {
            w.u64();
        }
        w.u32();
        w.u64();
        regions.push((start, w.pos, name, "tensor count"));
    }
    (regions, w.pos)
}

#[test]
fn every_truncation_is_an_error_naming_the_field() {
    let bytes = sample_file();
    let full = GgufFile::from_bytes(bytes.clone()).unwrap();
    let (regions, header_end) = header_regions(&bytes);
    assert!(full.data_offset() >= header_end as u64);
    let last_end = full
        .tensors()
        .iter()
        .map(|t| t.offset + t.size)
        .max()
        .unwrap() as usize;
    let mut checked_boundaries = 0;

    for cut in 0..bytes.len() {
        let result = GgufFile::from_bytes(bytes[..cut].to_vec());
        if cut >= last_end {
            // Only the padding after the last tensor is missing: still valid.
            assert!(result.is_ok(), "cut at {cut}: {:?}", result.err());
            continue;
        }
        let msg = match result {
            Ok(_) => panic!("truncated at {cut} of {} bytes, yet accepted", bytes.len()),
            Err(GgufError::Malformed(m)) => m,
            Err(e) => panic!("cut at {cut}: not Malformed: {e}"),
        };
        let expect: Vec<String> = if let Some((start, _, what, section)) =
            regions.iter().find(|r| (r.0..r.1).contains(&cut))
        {
            checked_boundaries += usize::from(cut == *start);
            // A count that cannot fit in what is left is refused up front.
            vec![what.clone(), section.to_string()]
        } else if cut < full.data_offset() as usize {
            vec!["padding".into()]
        } else {
            let t = full
                .tensors()
                .iter()
                .find(|t| (t.offset + t.size) as usize > cut)
                .unwrap();
            vec![format!("tensor {}: data ends at byte", t.name)]
        };
        assert!(
            expect
                .iter()
                .any(|e| !e.is_empty() && msg.contains(e.as_str())),
            "cut at {cut}: {msg:?} mentions none of {expect:?}"
        );
    }
    assert_eq!(checked_boundaries, regions.len());
}

#[test]
fn truncated_file_on_disk_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    let bytes = sample_file();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let msg = GgufFile::open(&path).unwrap_err().to_string();
    assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
    assert!(msg.contains("data ends at byte"), "{msg}");

    std::fs::write(&path, b"").unwrap();
    let msg = GgufFile::open(&path).unwrap_err().to_string();
    assert!(msg.contains("truncated: magic"), "{msg}");

    let missing = dir.path().join("missing.gguf");
    match GgufFile::open(&missing) {
        Err(GgufError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Hand-crafted hostile headers. Each starts from a valid file and changes one
// thing, so an error can only come from that change.

struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        Raw(b"GGUF".to_vec()).u32(version).u64(n_tensors).u64(n_kv)
    }
    fn u32(mut self, v: u32) -> Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Raw {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Raw {
        self.0.extend_from_slice(b);
        self
    }
    fn str(self, s: &str) -> Raw {
        self.raw_str(s.as_bytes())
    }
    fn raw_str(self, b: &[u8]) -> Raw {
        self.u64(b.len() as u64).bytes(b)
    }
    fn kv_u32(self, key: &str, v: u32) -> Raw {
        self.str(key).u32(4).u32(v)
    }
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Raw {
        let mut r = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    /// Pads to `align` and appends `data` zero bytes.
    fn data(mut self, align: usize, data: usize) -> Raw {
        let padded = self.0.len().div_ceil(align) * align;
        self.0.resize(padded + data, 0);
        self
    }
}

fn reject(r: Raw, needle: &str) {
    match GgufFile::from_bytes(r.0) {
        Ok(_) => panic!("accepted a file that should fail with {needle:?}"),
        Err(GgufError::Malformed(msg)) => {
            assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}")
        }
        Err(e) => panic!("{e}"),
    }
}

/// A valid file: one key, one F32 [8] tensor.
fn base() -> Raw {
    Raw::header(3, 1, 1)
        .kv_u32("k", 1)
        .tensor("w", &[8], 0, 0)
        .data(32, 32)
}

#[test]
fn hostile_base_is_valid() {
    let f = GgufFile::from_bytes(base().0).unwrap();
    assert_eq!(f.tensors()[0].size, 32);
    assert_eq!(f.data_offset(), 96);
    // Version 2 has the same layout.
    let v2 = Raw::header(2, 1, 1)
        .kv_u32("k", 1)
        .tensor("w", &[8], 0, 0)
        .data(32, 32);
    assert_eq!(GgufFile::from_bytes(v2.0).unwrap().version(), 2);
}

#[test]
fn hostile_magic_and_version() {
    reject(
        Raw(b"GGML".to_vec()).u32(3).u64(0).u64(0),
        "not a GGUF file",
    );
    reject(Raw::header(4, 0, 0), "unsupported GGUF version 4");
    reject(Raw::header(0, 0, 0), "unsupported GGUF version 0");
    reject(Raw::header(1, 0, 0), "version 1");
    reject(Raw::header(3u32.swap_bytes(), 0, 0), "big-endian");
}

#[test]
fn hostile_counts() {
    reject(Raw::header(3, 0, u64::MAX).kv_u32("k", 1), "metadata count");
    reject(
        Raw::header(3, u64::MAX, 0).tensor("w", &[8], 0, 0),
        "tensor count",
    );
    reject(Raw::header(3, 1 << 40, 1 << 40), "count");
}

#[test]
fn hostile_strings() {
    reject(
        Raw::header(3, 0, 1).u64(u64::MAX).bytes(&[0; 64]),
        "truncated: metadata key 0",
    );
    reject(
        Raw::header(3, 0, 1)
            .str("s")
            .u32(8)
            .u64(u64::MAX)
            .bytes(&[0; 64]),
        "metadata key 0 ('s')",
    );
    reject(
        Raw::header(3, 0, 1).raw_str(&[b'k', 0xff]).u32(4).u32(0),
        "UTF-8",
    );
    reject(
        Raw::header(3, 0, 1).str("s").u32(8).raw_str(&[0xc3, 0x28]),
        "'s'",
    );
    reject(
        Raw::header(3, 1, 0)
            .raw_str(&[0xe2, 0x82])
            .u32(1)
            .u64(8)
            .u32(0)
            .u64(0)
            .data(32, 32),
        "tensor 0 name",
    );
    reject(Raw::header(3, 0, 1).str("").u32(4).u32(0), "empty");
}

#[test]
fn hostile_arrays() {
    // 2^61 items of 1, 8 and 12 bytes: refused before any allocation.
    for elem in [0u32, 8, 9] {
        let r = Raw::header(3, 0, 1)
            .str("arr")
            .u32(9)
            .u32(elem)
            .u64(1 << 61)
            .bytes(&[0; 64]);
        reject(r, "'arr'");
    }
    let r = Raw::header(3, 0, 1).str("arr").u32(9).u32(4).u64(u64::MAX);
    reject(r, "truncated or corrupt");
    reject(
        Raw::header(3, 0, 1).str("x").u32(13).u32(0),
        "unknown value type 13",
    );
    reject(
        Raw::header(3, 0, 1).str("x").u32(9).u32(99).u64(1).u32(0),
        "unknown value type 99",
    );
}

/// Resident memory of this process, from /proc (Linux), in bytes.
fn rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn large_number_arrays_are_held_compactly() {
    // 32 MiB of u8, then of u16: as one GgufValue per item they took 32
    // bytes each (1 GiB and 512 MiB).
    const N: u64 = 32 << 20;
    for (elem, size) in [(GgufType::U8, 1u64), (GgufType::U16, 2), (GgufType::I8, 1)] {
        let r = Raw::header(3, 0, 1)
            .str("big")
            .u32(9)
            .u32(elem.id())
            .u64(N / size)
            .bytes(&vec![7; N as usize]);
        let before = rss();
        let f = GgufFile::from_bytes(r.0).unwrap();
        let grew = rss().zip(before).map(|(a, b)| a.saturating_sub(b));
        let v = f.get("big").unwrap();
        assert!(
            matches!(v, GgufValue::Packed(t, b) if *t == elem && b.len() as u64 == N),
            "{elem}: {v}"
        );
        assert_eq!(v.array_len(), Some((N / size) as usize));
        assert_eq!(v.array_type(), Some(elem));
        // Printed only: other tests share this process's memory.
        if let Some(grew) = grew {
            println!(
                "{elem}: RSS grew {} MiB for a {} MiB array",
                grew >> 20,
                N >> 20
            );
        }
    }
    // Items read back as values of their type.
    let r = Raw::header(3, 0, 1)
        .str("a")
        .u32(9)
        .u32(GgufType::I16.id())
        .u64(2)
        .bytes(&(-2i16).to_le_bytes())
        .bytes(&300i16.to_le_bytes());
    let f = GgufFile::from_bytes(r.0).unwrap();
    assert_eq!(
        f.get("a").unwrap().as_array().unwrap().to_vec(),
        vec![GgufValue::I16(-2), GgufValue::I16(300)]
    );
}

fn nested_arrays(depth: usize) -> Raw {
    let mut r = Raw::header(3, 0, 1).str("deep").u32(9);
    for _ in 1..depth {
        r = r.u32(9).u64(1);
    }
    r.u32(4).u64(1).u32(7)
}

#[test]
fn hostile_nesting() {
    let f = GgufFile::from_bytes(nested_arrays(8).0).unwrap();
    assert_eq!(f.get("deep").unwrap().depth(), 8);
    reject(nested_arrays(9), "nested");
    reject(nested_arrays(100_000), "nested");
}

#[test]
fn hostile_keys_and_alignment() {
    reject(
        Raw::header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2),
        "('k') appears twice",
    );
    for bad in [0u32, 3, 48, u32::MAX] {
        let r = Raw::header(3, 1, 1)
            .kv_u32("general.alignment", bad)
            .tensor("w", &[8], 0, 0)
            .data(32, 32);
        reject(r, "not a power of two");
    }
    let r = Raw::header(3, 0, 1)
        .str("general.alignment")
        .u32(10)
        .u64(32);
    reject(r, "expected u32");
    // A valid unusual alignment is honoured.
    let ok = Raw::header(3, 1, 1)
        .kv_u32("general.alignment", 16)
        .tensor("w", &[8], 0, 16)
        .data(16, 48);
    let f = GgufFile::from_bytes(ok.0).unwrap();
    assert_eq!((f.alignment(), f.tensors()[0].offset % 16), (16, 0));
}

fn one_tensor(dims: &[u64], ty: u32, offset: u64) -> Raw {
    Raw::header(3, 1, 0)
        .tensor("blk.3.attn_q.weight", dims, ty, offset)
        .data(32, 64)
}

#[test]
fn hostile_tensor_shapes_and_types() {
    reject(one_tensor(&[], 0, 0), "0 dimensions");
    reject(one_tensor(&[1; 5], 0, 0), "5 dimensions");
    reject(one_tensor(&[1; 9], 0, 0), "9 dimensions");
    reject(
        Raw::header(3, 1, 0).str("w").u32(u32::MAX).bytes(&[0; 64]),
        "dimensions",
    );
    reject(one_tensor(&[8, 0], 0, 0), "dimension 1");
    reject(one_tensor(&[1 << 32, 1 << 32, 2], 0, 0), "2^63");
    reject(one_tensor(&[u64::MAX], 0, 0), "2^63");
    reject(one_tensor(&[1 << 62], 0, 0), "overflows");
    for ty in [4u32, 29, 99, u32::MAX] {
        reject(
            one_tensor(&[8], ty, 0),
            &format!("unknown ggml type id {ty}"),
        );
    }
    reject(
        one_tensor(&[100], GgmlType::Q4_K.id(), 0),
        "not a multiple of the q4_K block size 256",
    );
}

#[test]
fn hostile_tensor_offsets() {
    reject(
        one_tensor(&[8], 0, 8),
        "offset 8 is not a multiple of the alignment 32",
    );
    reject(
        one_tensor(&[8], 0, 1 << 40),
        "tensor blk.3.attn_q.weight: data ends at byte",
    );
    reject(
        one_tensor(&[32], 0, 0),
        "data ends at byte 224, file has 160",
    );
    reject(one_tensor(&[8], 0, u64::MAX - 31), "overflows");
    // Header fine, but the file stops inside the padding before the data.
    let mut r = one_tensor(&[8], 0, 0);
    r.0.truncate(r.0.len() - 64 - 1);
    reject(r, "padding");
}

#[test]
fn hostile_tensor_pairs() {
    let two = |a: &str, b: &str, off_b: u64| {
        Raw::header(3, 2, 0)
            .tensor(a, &[16], 0, 0)
            .tensor(b, &[8], 0, off_b)
            .data(32, 128)
    };
    assert!(GgufFile::from_bytes(two("a", "b", 64).0).is_ok());
    reject(two("a", "a", 64), "tensor a appears twice");
    reject(two("a", "b", 0), "tensors a and b overlap");
    reject(two("a", "b", 32), "overlap");
}

// ---------------------------------------------------------------------------
// Writer behaviour.

fn writer_fixture() -> (tempfile::TempDir, PathBuf, Vec<TensorSpec>, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.gguf");
    let specs = sample_specs();
    let data = tensor_bytes(&specs);
    (dir, path, specs, data)
}

#[test]
fn dropped_writer_leaves_nothing() {
    let (dir, path, specs, data) = writer_fixture();
    let mut w = GgufWriter::create(&path, &flat_metadata(), &specs).unwrap();
    w.write_data(&data[0][..10]).unwrap();
    assert_eq!(
        dir_entries(dir.path()).len(),
        1,
        "the temporary file exists while writing"
    );
    drop(w);
    assert_eq!(dir_entries(dir.path()), Vec::<String>::new());

    // Even with all data written, only finish publishes the file.
    let mut w = GgufWriter::create(&path, &flat_metadata(), &specs).unwrap();
    stream_data(&mut w, &specs, &data);
    drop(w);
    assert_eq!(dir_entries(dir.path()), Vec::<String>::new());
}

#[test]
fn finish_replaces_an_existing_file_only_at_the_end() {
    let (dir, path, specs, data) = writer_fixture();
    std::fs::write(&path, b"old model").unwrap();
    let mut w = GgufWriter::create(&path, &flat_metadata(), &specs).unwrap();
    stream_data(&mut w, &specs, &data);
    assert_eq!(std::fs::read(&path).unwrap(), b"old model");
    assert_eq!(dir_entries(dir.path()).len(), 2);
    w.finish().unwrap();
    assert_eq!(dir_entries(dir.path()), ["out.gguf"]);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.tensor_data(&f.tensors()[3]), &data[3][..]);
}

#[test]
fn too_many_bytes_is_an_error_naming_the_tensor() {
    let (dir, path, specs, data) = writer_fixture();
    std::fs::write(&path, b"old model").unwrap();
    let mut w = GgufWriter::create(&path, &flat_metadata(), &specs).unwrap();
    w.write_data(&data[0][..50]).unwrap();
    let msg = w.write_data(&[0; 11]).unwrap_err().to_string();
    assert!(
        msg.contains("token_embd.weight") && msg.contains("60 bytes"),
        "{msg}"
    );
    // The failed call wrote nothing: the stream can go on.
    assert_eq!(w.current_tensor(), Some("token_embd.weight"));
    w.write_data(&data[0][50..]).unwrap();
    assert_eq!(w.current_tensor(), Some("blk.0.attn_norm.weight"));
    drop(w);
    assert_eq!(std::fs::read(&path).unwrap(), b"old model");
    assert_eq!(dir_entries(dir.path()), ["out.gguf"]);

    // Bytes beyond the last tensor.
    let mut w = GgufWriter::create(&path, &flat_metadata(), &specs).unwrap();
    stream_data(&mut w, &specs, &data);
    let msg = w.write_data(&[1]).unwrap_err().to_string();
    assert!(msg.contains("all 5 tensors are complete"), "{msg}");
}

#[test]
fn too_few_bytes_fail_at_finish_and_leave_the_destination() {
    let (dir, path, specs, data) = writer_fixture();
    std::fs::write(&path, b"old model").unwrap();
    let mut w = GgufWriter::create(&path, &flat_metadata(), &specs).unwrap();
    for bytes in &data[..3] {
        w.write_data(bytes).unwrap();
    }
    w.write_data(&data[3][..100]).unwrap();
    let msg = w.finish().unwrap_err().to_string();
    assert!(
        msg.contains("blk.0.ffn_down.weight is incomplete: 100 of 432 bytes"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"old model");
    assert_eq!(dir_entries(dir.path()), ["out.gguf"]);
}

#[test]
fn writer_refuses_invalid_contents_before_creating_anything() {
    let (dir, path, specs, _) = writer_fixture();
    let md = flat_metadata();
    let with = |extra: TensorSpec| {
        let mut s = specs.clone();
        s.push(extra);
        s
    };
    type Case = (Vec<(String, GgufValue)>, Vec<TensorSpec>, &'static str);
    let cases: Vec<Case> = vec![
        (
            md.clone(),
            with(spec("token_embd.weight", &[4], GgmlType::F32)),
            "appears twice",
        ),
        (
            md.clone(),
            with(spec("z", &[4, 0], GgmlType::F32)),
            "non-zero",
        ),
        (md.clone(), with(spec("z", &[], GgmlType::F32)), "1 to 4"),
        (
            md.clone(),
            with(spec("z", &[1; 5], GgmlType::F32)),
            "1 to 4",
        ),
        (md.clone(), with(spec("z", &[100], GgmlType::Q4_K)), "q4_K"),
        (
            md.clone(),
            with(spec("z", &[1 << 62, 4], GgmlType::F32)),
            "too large",
        ),
        (
            md.clone(),
            with(spec(&"n".repeat(64), &[4], GgmlType::F32)),
            "ggml's limit",
        ),
        (md.clone(), with(spec("", &[4], GgmlType::F32)), "1 to 63"),
        (
            [md.clone(), vec![kv("t.u8", GgufValue::U8(1))]].concat(),
            specs.clone(),
            "'t.u8' appears twice",
        ),
        (
            [md.clone(), vec![kv("", GgufValue::U8(1))]].concat(),
            specs.clone(),
            "empty",
        ),
        (
            vec![kv(
                "mixed",
                GgufValue::Array(GgufType::U32, vec![GgufValue::U32(1), GgufValue::I32(2)]),
            )],
            specs.clone(),
            "array of u32 holds a i32 at index 1",
        ),
        (
            vec![kv("general.alignment", GgufValue::U64(32))],
            specs.clone(),
            "power of two",
        ),
        (
            vec![kv("general.alignment", GgufValue::U32(24))],
            specs.clone(),
            "power of two",
        ),
    ];
    for (md, specs, needle) in cases {
        let msg = match GgufWriter::create(&path, &md, &specs) {
            Err(GgufError::Invalid(m)) => m,
            Err(e) => panic!("{needle}: {e}"),
            Ok(_) => panic!("accepted: {needle}"),
        };
        assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}");
    }
    let mut deep = GgufValue::u32_array([1]);
    for _ in 0..8 {
        deep = GgufValue::Array(GgufType::Array, vec![deep]);
    }
    assert!(GgufWriter::create(&path, &[kv("deep", deep)], &[]).is_err());
    assert_eq!(dir_entries(dir.path()), Vec::<String>::new());
}

#[test]
fn writer_io_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/out.gguf");
    match GgufWriter::create(&path, &[], &[]) {
        Err(GgufError::Io { path: p, .. }) => assert_eq!(p, path),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("created a file in a missing directory"),
    }
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mount<'a>(&'a Path);

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0).status();
    }
}

/// A full disk must surface as an Io error naming the destination. Needs a
/// tiny filesystem, so it runs only where tmpfs can be mounted (root).
#[test]
fn writer_disk_full_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(dir.path())
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here");
        return;
    }
    let mount = Mount(dir.path());
    let path = dir.path().join("big.gguf");
    let specs = [spec("big", &[1 << 20], GgmlType::F32)];
    let result = (|| {
        let mut w = GgufWriter::create(&path, &[], &specs)?;
        let chunk = vec![0u8; 1 << 16];
        for _ in 0..64 {
            w.write_data(&chunk)?;
        }
        w.finish()
    })();
    let entries = dir_entries(dir.path());
    drop(mount);
    match result {
        Err(GgufError::Io { path: p, source }) => {
            assert_eq!(p, path);
            assert_eq!(source.raw_os_error(), Some(28), "{source}"); // ENOSPC
        }
        other => panic!("{other:?}"),
    }
    assert!(entries.is_empty(), "{entries:?}");
}

// ---------------------------------------------------------------------------
// Interoperability with ggml's own gguf implementation.

fn c_path(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

unsafe fn c_str<'a>(p: *const c_char) -> &'a str {
    unsafe { CStr::from_ptr(p) }.to_str().unwrap()
}

struct GgmlTensorDesc {
    name: &'static CStr,
    ty: GgmlType,
    ne: Vec<i64>,
}

#[test]
fn we_read_what_ggml_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ggml.gguf");
    let descs = [
        GgmlTensorDesc {
            name: c"a.f32",
            ty: GgmlType::F32,
            ne: vec![8, 3],
        },
        GgmlTensorDesc {
            name: c"b.f16",
            ty: GgmlType::F16,
            ne: vec![5],
        },
        GgmlTensorDesc {
            name: c"c.q8_0",
            ty: GgmlType::Q8_0,
            ne: vec![64, 2, 1, 2],
        },
    ];
    let mut expected_data = Vec::new();
    unsafe {
        let g = sys::gguf_init_empty();
        // Not general.alignment: ggml's writer keeps padding to 32 whatever
        // that key says (the file would then contradict itself, and our
        // reader rightly refuses it).
        sys::gguf_set_val_u32(g, c"general.file_type".as_ptr(), 7);
        sys::gguf_set_val_str(g, c"general.name".as_ptr(), c"ggml ünï".as_ptr());
        sys::gguf_set_val_f32(g, c"x.f32".as_ptr(), 0.5);
        sys::gguf_set_val_bool(g, c"x.bool".as_ptr(), true);
        sys::gguf_set_val_i64(g, c"x.i64".as_ptr(), -7);
        sys::gguf_set_val_u64(g, c"x.u64".as_ptr(), 1 << 40);
        let mut strs = [c"<s>".as_ptr(), c"".as_ptr(), c"é".as_ptr()];
        sys::gguf_set_arr_str(g, c"tok".as_ptr(), strs.as_mut_ptr(), strs.len());
        let ints = [1i32, -2, 3];
        sys::gguf_set_arr_data(
            g,
            c"ints".as_ptr(),
            sys::GGUF_TYPE_INT32,
            ints.as_ptr().cast(),
            ints.len(),
        );

        let params = sys::ggml_init_params {
            mem_size: 1 << 20,
            mem_buffer: std::ptr::null_mut(),
            no_alloc: false,
        };
        let ctx = sys::ggml_init(params);
        assert!(!ctx.is_null());
        for (i, d) in descs.iter().enumerate() {
            let t = sys::ggml_new_tensor(ctx, d.ty.id(), d.ne.len() as i32, d.ne.as_ptr());
            sys::ggml_set_name(t, d.name.as_ptr());
            let bytes = pattern(i as u64 + 10, sys::ggml_nbytes(t) as u64);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), (*t).data.cast::<u8>(), bytes.len());
            expected_data.push(bytes);
            sys::gguf_add_tensor(g, t);
        }
        assert!(sys::gguf_write_to_file(g, c_path(&path).as_ptr(), false));
        sys::gguf_free(g);
        sys::ggml_free(ctx);
    }

    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.alignment(), 32);
    let keys: Vec<&str> = f.metadata().iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "general.file_type",
            "general.name",
            "x.f32",
            "x.bool",
            "x.i64",
            "x.u64",
            "tok",
            "ints"
        ]
    );
    assert_eq!(
        f.get("general.name").and_then(GgufValue::as_str),
        Some("ggml ünï")
    );
    assert_eq!(f.get("x.f32"), Some(&GgufValue::F32(0.5)));
    assert_eq!(f.get("x.bool"), Some(&GgufValue::Bool(true)));
    assert_eq!(f.get("x.i64"), Some(&GgufValue::I64(-7)));
    assert_eq!(f.get("x.u64").and_then(GgufValue::as_u64), Some(1 << 40));
    assert_eq!(
        f.get("tok"),
        Some(&GgufValue::string_array(["<s>", "", "é"]))
    );
    assert_eq!(f.get("ints"), Some(&GgufValue::i32_array([1, -2, 3])));
    assert_eq!(f.tensors().len(), descs.len());
    for ((t, d), bytes) in f.tensors().iter().zip(&descs).zip(&expected_data) {
        assert_eq!(t.name, d.name.to_str().unwrap());
        assert_eq!(t.ty, d.ty);
        let dims: Vec<u64> = d.ne.iter().map(|&n| n as u64).collect();
        // ggml drops trailing dimensions of 1 when it writes.
        let n = dims.iter().rposition(|&n| n != 1).map_or(1, |i| i + 1);
        assert_eq!(t.dims, &dims[..n]);
        assert_eq!(f.tensor_data(t), &bytes[..]);
        assert_eq!(t.offset % 32, 0);
    }
}

#[test]
fn ggml_reads_what_we_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.gguf");
    let mut md = flat_metadata();
    md.insert(0, kv("general.alignment", GgufValue::U32(64)));
    let specs = sample_specs();
    let data = tensor_bytes(&specs);
    write_file(&path, &md, &specs, &data);
    let ours = GgufFile::open(&path).unwrap();

    unsafe {
        let mut ctx: *mut sys::ggml_context = std::ptr::null_mut();
        let params = sys::gguf_init_params {
            no_alloc: false,
            ctx: &mut ctx,
        };
        let g = sys::gguf_init_from_file(c_path(&path).as_ptr(), params);
        assert!(!g.is_null(), "ggml refused our file");
        assert_eq!(sys::gguf_get_version(g), 3);
        assert_eq!(sys::gguf_get_alignment(g), 64);
        assert_eq!(sys::gguf_get_data_offset(g) as u64, ours.data_offset());

        assert_eq!(sys::gguf_get_n_kv(g), md.len() as i64);
        for (i, (key, value)) in md.iter().enumerate() {
            let i = i as i64;
            assert_eq!(c_str(sys::gguf_get_key(g, i)), key);
            assert_eq!(
                sys::gguf_get_kv_type(g, i),
                value.value_type().id(),
                "{key}"
            );
            if let GgufValue::Array(elem, items) = value {
                assert_eq!(sys::gguf_get_arr_type(g, i), elem.id(), "{key}");
                assert_eq!(sys::gguf_get_arr_n(g, i), items.len(), "{key}");
            }
        }
        let name_id = sys::gguf_find_key(g, c"general.name".as_ptr());
        assert_eq!(
            c_str(sys::gguf_get_val_str(g, name_id)),
            "tiny ünïcødé 模型 🦀"
        );
        let tok_id = sys::gguf_find_key(g, c"tokenizer.ggml.tokens".as_ptr());
        assert_eq!(c_str(sys::gguf_get_arr_str(g, tok_id, 2)), "é");
        assert_eq!(
            sys::gguf_get_val_u64(g, sys::gguf_find_key(g, c"t.u64".as_ptr())),
            u64::MAX
        );
        assert_eq!(
            sys::gguf_get_val_f64(g, sys::gguf_find_key(g, c"t.f64".as_ptr())),
            std::f64::consts::PI
        );

        assert_eq!(sys::gguf_get_n_tensors(g), specs.len() as i64);
        for (i, t) in ours.tensors().iter().enumerate() {
            let i = i as i64;
            assert_eq!(c_str(sys::gguf_get_tensor_name(g, i)), t.name);
            assert_eq!(sys::gguf_get_tensor_type(g, i), t.ty.id());
            assert_eq!(
                sys::gguf_get_tensor_offset(g, i) as u64,
                t.offset - ours.data_offset()
            );
            assert_eq!(sys::gguf_get_tensor_size(g, i) as u64, t.size);
            let ne = std::slice::from_raw_parts(sys::gguf_get_tensor_ne(g, i), 4);
            for (d, &n) in ne.iter().enumerate() {
                assert_eq!(
                    n as u64,
                    t.dims.get(d).copied().unwrap_or(1),
                    "{} ne[{d}]",
                    t.name
                );
            }
            // ggml loaded the data itself: it must be the bytes we streamed.
            let name = CString::new(t.name.as_str()).unwrap();
            let gt = sys::ggml_get_tensor(ctx, name.as_ptr());
            assert!(!gt.is_null());
            let loaded = std::slice::from_raw_parts((*gt).data.cast::<u8>(), sys::ggml_nbytes(gt));
            assert_eq!(loaded, ours.tensor_data(t), "{}", t.name);
        }
        sys::gguf_free(g);
        sys::ggml_free(ctx);
    }
}

// ---------------------------------------------------------------------------
// Fuzz seeds (kernels/fuzz/seeds) come from this file's writer.

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

/// Regenerates the committed fuzz seeds:
/// `cargo test -p orthrus-kernels --test gguf -- --ignored write_fuzz_seeds`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = seeds_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let specs = sample_specs();
    write_file(
        &dir.join("sample.gguf"),
        &full_metadata(),
        &specs,
        &tensor_bytes(&specs),
    );
    let tiny = [
        spec("w", &[4], GgmlType::F32),
        spec("q", &[32], GgmlType::Q8_0),
    ];
    let md = [
        kv("general.alignment", GgufValue::U32(8)),
        kv("general.architecture", GgufValue::String("tiny".into())),
        kv(
            "a",
            GgufValue::Array(
                GgufType::Array,
                vec![GgufValue::u32_array([1]), GgufValue::string_array(["s"])],
            ),
        ),
    ];
    write_file(&dir.join("tiny.gguf"), &md, &tiny, &tensor_bytes(&tiny));
}

/// Also a third-party check: `gguf_py.gguf` was written by llama.cpp's
/// Python `gguf` package (see fuzz/seeds/README.md).
#[test]
fn fuzz_seeds_are_valid() {
    let Ok(entries) = std::fs::read_dir(seeds_dir()) else {
        return;
    };
    let mut n = 0;
    for e in entries {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "gguf") {
            continue;
        }
        n += 1;
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!f.tensors().is_empty(), "{}", path.display());
        if path.ends_with("gguf_py.gguf") {
            let t = f.tensor("a.weight").unwrap();
            assert_eq!((t.dims.as_slice(), t.ty), (&[4, 3][..], GgmlType::F32));
            let floats: Vec<f32> = f
                .tensor_data(t)
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(floats, (0..12).map(|i| i as f32).collect::<Vec<_>>());
            assert_eq!(
                f.get("t.strs"),
                Some(&GgufValue::string_array(["a", "é", ""]))
            );
        }
    }
    assert!(
        n >= 3,
        "expected the committed seeds in {}",
        seeds_dir().display()
    );
}
