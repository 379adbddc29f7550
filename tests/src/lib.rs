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

/// A committed checkpoint under models/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("models/fixtures").join(name)
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
