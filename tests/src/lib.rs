//! End-to-end tests live in tests/tests/; this is what they share.

use std::path::{Path, PathBuf};

use orthrus_convert::convert::{convert, Options};
use orthrus_convert::FileType;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A fixture made when first asked for (once per test process) rather than
/// committed: tiny-tied-bf16's shapes with the published models' block size,
/// 32, and their mask token, sharded, with the eos list.
pub const BLOCK32: &str = "tiny-block32-bf16";

/// A committed checkpoint under models/fixtures, or [`BLOCK32`].
pub fn fixture(name: &str) -> PathBuf {
    if name == BLOCK32 {
        return block32().join(name);
    }
    repo().join("models/fixtures").join(name)
}

fn block32() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let args = [
            "custom",
            "--hidden",
            "32",
            "--heads",
            "4",
            "--kv-heads",
            "2",
            "--head-dim",
            "16",
            "--inter",
            "64",
            "--layers",
            "2",
            "--block-size",
            "32",
            "--shards",
            "2",
            "--eos-list",
            "--seed",
            "4",
        ];
        let out = std::process::Command::new("python3")
            .arg(repo().join("models/make_fixtures.py"))
            .args(&args[..1])
            .arg(dir.path().join(BLOCK32))
            .args(&args[1..])
            .output()
            .expect("python3 with numpy is needed (scripts/setup-debian.sh)");
        assert!(
            out.status.success(),
            "make_fixtures.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .path()
}

/// Converts fixture `name` to `out` as `ft` (with `split`, the base goes to
/// `out` and the head beside it), panicking on failure.
pub fn convert_fixture(name: &str, out: &Path, ft: FileType, split: bool) {
    let opts = Options {
        input: fixture(name),
        output: out.to_path_buf(),
        file_type: ft,
        head_type: None,
        split,
        name: None,
    };
    convert(&opts, &mut |_, _| {}).unwrap();
}
