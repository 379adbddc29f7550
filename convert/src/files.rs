//! What the converter opens and what it may replace: only regular files are
//! read, side files with a size limit, and an output never replaces one of
//! the checkpoint's own files, its directory, or anything but a regular file.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{ConvertError, Result};

/// Largest `config.json`, `generation_config.json`, `tokenizer_config.json`
/// or safetensors index we read (real ones are kilobytes).
pub const MAX_SIDE_FILE: u64 = 16 << 20;

/// Largest `tokenizer.json` we read (Qwen3's is about 11 MB).
pub const MAX_TOKENIZER_FILE: u64 = 256 << 20;

/// Opens `path` for reading if it is a regular file (after symlinks). A FIFO
/// would block the open, a device could be read for ever: both are refused.
pub fn open_regular(path: &Path) -> Result<File> {
    let meta = std::fs::metadata(path).map_err(|e| ConvertError::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    let mut opts = OpenOptions::new();
    opts.read(true);
    nonblocking(&mut opts);
    let file = opts.open(path).map_err(|e| ConvertError::io(path, e))?;
    // The path may have been swapped since the check; the open file is what counts.
    let meta = file.metadata().map_err(|e| ConvertError::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(path, &meta));
    }
    Ok(file)
}

/// Non-blocking open, so that a FIFO put in place after the check does not
/// hang the open (reads of regular files are not affected by the flag).
#[cfg(target_os = "linux")]
fn nonblocking(opts: &mut OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    const O_NONBLOCK: i32 = 0o4000;
    opts.custom_flags(O_NONBLOCK);
}

#[cfg(all(unix, not(target_os = "linux")))]
fn nonblocking(opts: &mut OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    const O_NONBLOCK: i32 = 0x0004;
    opts.custom_flags(O_NONBLOCK);
}

#[cfg(not(unix))]
fn nonblocking(_: &mut OpenOptions) {}

fn not_regular(path: &Path, meta: &std::fs::Metadata) -> ConvertError {
    let what = if meta.is_dir() {
        "a directory"
    } else {
        "not a regular file (a device, FIFO or socket)"
    };
    ConvertError::bad_file(path, format!("{what}; expected a file"))
}

/// The text of the regular file `path`, at most `limit` bytes.
pub fn read_text(path: &Path, limit: u64) -> Result<String> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ConvertError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(ConvertError::bad_file(
            path,
            format!("larger than {limit} bytes; this is not a checkpoint's side file"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| ConvertError::bad_file(path, "not UTF-8 text"))
}

/// The files a conversion of `dir` reads: the side files by name, and the
/// shards `shards` (full paths).
fn inputs(dir: &Path, shards: &[PathBuf]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors.index.json",
    ]
    .iter()
    .map(|n| dir.join(n))
    .collect();
    v.extend(shards.iter().cloned());
    v
}

/// Refuses an output `out` for a conversion of checkpoint `dir` (whose
/// weights are `shards`) that would replace an input, the directory, or
/// something other than a regular file.
pub fn check_output(dir: &Path, shards: &[PathBuf], out: &Path) -> Result<()> {
    let refuse = |msg: &str| Err(ConvertError::Usage(format!("{}: {msg}", out.display())));
    let Ok(meta) = std::fs::metadata(out) else {
        // Nothing there yet (or a dangling link, which the rename replaces).
        return Ok(());
    };
    if meta.is_dir() {
        return refuse("output is a directory; give a file name");
    }
    if !meta.is_file() {
        return refuse(
            "output is not a regular file (a device, FIFO or socket); refusing to replace it",
        );
    }
    if same_file(out, dir) {
        return refuse("output is the checkpoint directory");
    }
    if let Some(input) = inputs(dir, shards).iter().find(|p| same_file(out, p)) {
        return Err(ConvertError::Usage(format!(
            "{}: output is the checkpoint's own file {}; writing it would destroy the input",
            out.display(),
            input.display()
        )));
    }
    Ok(())
}

/// Whether `a` and `b` name the same file (after symlinks and hard links).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(x), Ok(y)) => {
            use std::os::unix::fs::MetadataExt;
            x.dev() == y.dev() && x.ino() == y.ino()
        }
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        },
        _ => false,
    }
}
