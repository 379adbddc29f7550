//! Shared helpers for the converter's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use orthrus_convert::convert::{convert, FileSummary, Options};
use orthrus_convert::FileType;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A committed fixture checkpoint under models/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    let dir = repo().join("models/fixtures").join(name);
    assert!(
        dir.join("config.json").exists(),
        "missing fixture {}",
        dir.display()
    );
    dir
}

/// Writes a checkpoint with models/make_fixtures.py `custom` into `out`.
pub fn make_checkpoint(out: &Path, args: &[&str]) {
    let status = Command::new("python3")
        .arg(repo().join("models/make_fixtures.py"))
        .arg("custom")
        .arg(out)
        .args(args)
        .status()
        .expect("python3 must be installed to run the converter tests");
    assert!(status.success(), "make_fixtures.py custom {args:?} failed");
}

pub fn options(input: &Path, output: &Path, ft: FileType) -> Options {
    Options {
        input: input.into(),
        output: output.into(),
        file_type: ft,
        head_type: None,
        split: false,
        name: None,
    }
}

pub fn run(opts: &Options) -> Vec<FileSummary> {
    convert(opts, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("converting {}: {e}", opts.input.display()))
}

/// Copies a checkpoint directory (following symlinks) so a test may break it.
pub fn copy_checkpoint(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dst.join(path.file_name().unwrap())).unwrap();
    }
}

pub fn rel_rms(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Files in `dir` other than `keep`: a failed conversion must leave none.
pub fn stray_files(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}
