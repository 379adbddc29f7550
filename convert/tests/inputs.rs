//! The converter never destroys its inputs: outputs that are one of the
//! checkpoint's files, its directory or not a regular file are refused, and
//! side files that are not regular files, or are too large, are refused
//! without hanging or reading for ever.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use orthrus_convert::convert::{convert, head_path, Options};
use orthrus_convert::FileType;

/// The conversion's error, failing the test if it succeeds or takes over
/// 60 s (a FIFO that blocks an open hangs for ever).
fn error_of(opts: Options) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(convert(&opts, &mut |_, _| {}).map(|_| ()));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(())) => panic!("the conversion succeeded"),
        Err(_) => panic!("the conversion hung"),
    }
}

fn checkpoint(tmp: &Path) -> std::path::PathBuf {
    let dir = tmp.join("ck");
    copy_checkpoint(&fixture("tiny-tied-bf16"), &dir);
    dir
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

fn mkfifo(p: &Path) {
    let ok = Command::new("mkfifo").arg(p).status().unwrap().success();
    assert!(ok, "mkfifo {}", p.display());
}

#[test]
fn an_output_that_is_an_input_is_refused_and_the_input_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = checkpoint(tmp.path());
    for name in ["model.safetensors", "config.json", "tokenizer.json"] {
        let input = ck.join(name);
        let before = bytes(&input);
        let e = error_of(options(&ck, &input, FileType::Q8_0));
        assert!(e.contains("checkpoint's own file"), "{name}: {e}");
        assert_eq!(bytes(&input), before, "{name} was changed");
    }
    // The same file under another name: a symlink and a hard link.
    std::os::unix::fs::symlink(ck.join("model.safetensors"), tmp.path().join("link.gguf")).unwrap();
    std::fs::hard_link(ck.join("config.json"), tmp.path().join("hard.gguf")).unwrap();
    for out in ["link.gguf", "hard.gguf"] {
        let e = error_of(options(&ck, &tmp.path().join(out), FileType::Q8_0));
        assert!(e.contains("checkpoint's own file"), "{out}: {e}");
    }
    // --split's head file is checked too.
    let base = tmp.path().join("split.gguf");
    std::os::unix::fs::symlink(ck.join("model.safetensors"), head_path(&base)).unwrap();
    let mut opts = options(&ck, &base, FileType::Q8_0);
    opts.split = true;
    let e = error_of(opts);
    assert!(e.contains("checkpoint's own file"), "split: {e}");
    assert!(!base.exists());
    // A normal output beside the inputs still works.
    run(&options(&ck, &ck.join("out.gguf"), FileType::Q8_0));
    assert!(ck.join("out.gguf").is_file());
    run(&options(&ck, &ck.join("out.gguf"), FileType::Q8_0));
}

#[test]
fn an_output_that_is_no_regular_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = checkpoint(tmp.path());
    let e = error_of(options(&ck, &ck, FileType::Q8_0));
    assert!(e.contains("is a directory"), "{e}");
    let fifo = tmp.path().join("fifo.gguf");
    mkfifo(&fifo);
    let e = error_of(options(&ck, &fifo, FileType::Q8_0));
    assert!(e.contains("not a regular file"), "{e}");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

#[test]
fn side_files_must_be_regular_and_small() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.gguf");
    // A FIFO would block the open for ever; /dev/zero would be read until
    // memory runs out; a directory is no file.
    for name in ["config.json", "tokenizer.json", "generation_config.json"] {
        for kind in ["fifo", "zero", "dir"] {
            let ck = tmp.path().join(format!("{name}-{kind}"));
            copy_checkpoint(&fixture("tiny-tied-bf16"), &ck);
            let p = ck.join(name);
            std::fs::remove_file(&p).unwrap();
            match kind {
                "fifo" => mkfifo(&p),
                "zero" => std::os::unix::fs::symlink("/dev/zero", &p).unwrap(),
                _ => std::fs::create_dir(&p).unwrap(),
            }
            let e = error_of(options(&ck, &out, FileType::Q8_0));
            assert!(
                e.contains(name) && (e.contains("not a regular file") || e.contains("a directory")),
                "{name} as {kind}: {e}"
            );
        }
    }
    // A weight file that is a FIFO.
    let ck = tmp.path().join("weights-fifo");
    copy_checkpoint(&fixture("tiny-tied-bf16"), &ck);
    std::fs::remove_file(ck.join("model.safetensors")).unwrap();
    mkfifo(&ck.join("model.safetensors"));
    let e = error_of(options(&ck, &out, FileType::Q8_0));
    assert!(e.contains("not a regular file"), "{e}");
    // A config.json over the side-file limit (sparse, so cheap to make).
    let ck = tmp.path().join("big-config");
    copy_checkpoint(&fixture("tiny-tied-bf16"), &ck);
    let f = std::fs::File::create(ck.join("config.json")).unwrap();
    f.set_len(orthrus_convert::files::MAX_SIDE_FILE + 1)
        .unwrap();
    let e = error_of(options(&ck, &out, FileType::Q8_0));
    assert!(
        e.contains("config.json") && e.contains("larger than"),
        "{e}"
    );
    assert!(!out.exists());
}

/// A missing side file is named once with its OS error, not twice: the
/// command line prints the error with its chain of sources.
#[test]
fn a_missing_side_file_is_reported_once() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = checkpoint(tmp.path());
    std::fs::remove_file(ck.join("tokenizer.json")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orthrus-convert"))
        .arg(&ck)
        .arg("-o")
        .arg(tmp.path().join("out.gguf"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("tokenizer.json"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}
