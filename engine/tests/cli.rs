//! The `orthrus` command line: JSON output, stop strings, and one-line errors.

use std::path::{Path, PathBuf};
use std::process::Command;

fn model(dir: &Path) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/tiny-tied-bf16");
    convert(&fixture, &dir.join("tiny-f32.gguf"))
}

/// The fixture with `template` as its chat template.
fn model_with_template(dir: &Path, template: &str) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/tiny-tied-bf16");
    let ck = dir.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    for f in std::fs::read_dir(&fixture).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, ck.join(f.file_name().unwrap())).unwrap();
    }
    let cfg_path = ck.join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["chat_template"] = template.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    convert(&ck, &dir.join("templated.gguf"))
}

fn convert(input: &Path, out: &Path) -> PathBuf {
    let opts = orthrus_convert::convert::Options {
        input: input.to_path_buf(),
        output: out.to_path_buf(),
        file_type: orthrus_convert::FileType::F32,
        head_type: None,
        split: false,
        name: None,
    };
    orthrus_convert::convert::convert(&opts, &mut |_, _| {}).unwrap();
    out.to_path_buf()
}

fn orthrus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_orthrus"))
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn json_output_and_stop_strings() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path());
    let m = m.to_str().unwrap();
    let base = [
        "run",
        "-m",
        m,
        "--device",
        "CPU",
        "-t",
        "1",
        "--prompt-ids",
        "9707,11,1879",
        // llama.cpp's spellings: -n is the tokens to predict, -ngl the GPU layers.
        "-n",
        "16",
        "-ngl",
        "0",
        "--ignore-eos",
        "--json",
    ];
    let full = json(&orthrus(&base));
    let tokens = full["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 16);
    assert_eq!(full["finish"], "length");
    let steps = full["steps"].as_array().unwrap();
    let committed: u64 = steps
        .iter()
        .map(|s| s["accepted"].as_u64().unwrap() + 1)
        .sum();
    // The first token comes from the prompt pass; each step then commits its
    // pending token plus the accepted drafts, and emits the next pending one.
    assert!(
        (15..=16).contains(&committed),
        "{committed} tokens committed by the steps"
    );
    assert_eq!(full["stats"]["generated_tokens"], 16);
    // Exact decoding (its f32 cache by default): orthrus, auto and ar agree.
    let exact = |mode| {
        let mut args = base.to_vec();
        args.extend(["--exact", "--mode", mode]);
        json(&orthrus(&args))["tokens"].clone()
    };
    let (or, ar) = (exact("orthrus"), exact("ar"));
    assert_eq!(or.as_array().unwrap().len(), 16);
    assert_eq!(or, ar);
    assert_eq!(exact("auto"), ar);
    // --draft-max: every orthrus step drafts that many; the fixture's block
    // is 8, so 7 at most.
    let mut args = base.to_vec();
    args.extend(["--mode", "orthrus", "--draft-max", "3"]);
    let three = json(&orthrus(&args));
    assert_eq!(three["tokens"], full["tokens"]);
    let drafted: Vec<usize> = three["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["drafts"].as_array().unwrap().len())
        .collect();
    // Only the last steps draft fewer, as the 16 tokens run out.
    let whole = drafted.iter().take_while(|&&d| d == 3).count();
    assert!(
        whole + 3 >= drafted.len() && drafted.windows(2).all(|w| w[1] <= w[0]),
        "{drafted:?}"
    );
    let stats = &three["stats"];
    assert_eq!(stats["draft_tokens"], drafted.iter().sum::<usize>());
    assert_eq!(stats["draft_steps"], drafted.len());
    assert_eq!(stats["draft_tokens_per_pos"][0], drafted.len());
    // Stop at a piece of the text: output ends right before it.
    let text = full["text"].as_str().unwrap();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 4, "{text:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let mut args = base.to_vec();
    args.extend(["--stop", &stop]);
    let stopped = json(&orthrus(&args));
    let want = &text[..text.find(&stop).unwrap()];
    assert_eq!(stopped["text"], want);
    assert_eq!(stopped["finish"], "stopped");
    // Text mode streams the same text to stdout.
    let plain = orthrus(&base[..base.len() - 1]);
    assert!(plain.status.success());
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout).trim_end_matches('\n'),
        text
    );
    assert!(String::from_utf8_lossy(&plain.stderr).contains("mean accepted"));
    // ... and with a stop string, nothing of it (text held back until it cannot be one).
    let mut args = base[..base.len() - 1].to_vec();
    args.extend(["--stop", &stop]);
    let plain = orthrus(&args);
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout).trim_end_matches('\n'),
        want
    );
}

#[test]
fn errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path());
    let m = m.to_str().unwrap();
    let dir_s = dir.path().to_str().unwrap();
    for (args, expect) in [
        (
            vec!["run", "-m", "/nonexistent.gguf", "-p", "x"],
            "No such file",
        ),
        (
            vec![
                "run",
                "-m",
                m,
                "--device",
                "CPU",
                "--prompt-ids",
                "1,2",
                "-c",
                "2",
            ],
            "raise -c",
        ),
        (
            vec!["run", "-m", m, "--device", "Vulkan9", "-p", "x"],
            "Vulkan9",
        ),
        (
            vec![
                "run",
                "-m",
                m,
                "--device",
                "CPU",
                "-p",
                "x",
                "--cache-type",
                "q4_0",
            ],
            "--cache-type",
        ),
        (
            vec!["run", "-m", m, "--device", "CPU", "-p", "x", "--top-p", "0"],
            "top-p",
        ),
        (vec!["run", "-m", m, "--device", "CPU"], "prompt"),
        (
            vec![
                "run",
                "-m",
                m,
                "--device",
                "CPU",
                "-p",
                "x",
                "--exact",
                "--cache-type",
                "f16",
            ],
            "--exact needs --cache-type f32",
        ),
        (
            vec![
                "run",
                "-m",
                m,
                "--device",
                "CPU",
                "-p",
                "x",
                "--draft-max",
                "8",
            ],
            "draft-max 8 is beyond this model's block of 8 tokens (at most 7)",
        ),
        // Arguments (issue 24, classes 7 and 8).
        (vec!["run", "-m", dir_s, "-p", "x"], "is a directory"),
        (
            vec!["run", "-m", m, "--device", "CPU", "-p", "x", "-t", "0"],
            "-t 0: use 1 to",
        ),
        (
            vec![
                "run",
                "-m",
                m,
                "--device",
                "CPU",
                "-p",
                "x",
                "--block-size",
                "0",
            ],
            "--block-size must be at least 1",
        ),
        (
            vec![
                "bench",
                "-m",
                m,
                "--device",
                "CPU",
                "--random-prompt-len",
                "100000000000",
            ],
            "--random-prompt-len 100000000000 does not fit the context",
        ),
        (
            vec![
                "bench",
                "-m",
                m,
                "--device",
                "CPU",
                "--random-prompt-len",
                "4",
                "--random-prompts",
                "1000000000",
            ],
            "at most 1000",
        ),
        (
            vec!["bench", "-m", m, "--device", "CPU", "-r", "0"],
            "--repetitions 0: from 1 to 1000",
        ),
    ] {
        let out = orthrus(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        let line = err.lines().last().unwrap_or("");
        assert!(
            line.starts_with("orthrus: ") && line.contains(expect),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_malformed_switch_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(dir.path());
    for (name, value) in [("ORTHRUS_CUDA_KERNELS", "0"), ("ORTHRUS_ATTN", "flash")] {
        let out = Command::new(env!("CARGO_BIN_EXE_orthrus"))
            .args(["run", "-m", m.to_str().unwrap(), "-p", "hi", "-n", "2"])
            .env(name, value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}={value}: {err}");
        assert!(err.contains(name) && err.contains("not a setting"), "{err}");
    }
}

#[test]
fn a_chat_template_that_grows_memory_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    // Each would grow to terabytes: strings doubled by `~` and by a
    // captured block (neither is output), and one grown by `replace`.
    let double = "{% set ns = namespace(s='0123456789abcdef') %}{% for i in range(40) %}";
    for (i, template) in [
        format!("{double}{{% set ns.s = ns.s ~ ns.s %}}{{% endfor %}}{{{{ ns.s|length }}}}"),
        format!("{double}{{% set ns.s %}}{{{{ ns.s }}}}{{{{ ns.s }}}}{{% endset %}}{{% endfor %}}"),
        "{{ ('x' * 100000)|replace('x', 'y' * 100000)|length }}".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let d = dir.path().join(i.to_string());
        let m = model_with_template(&d, template);
        let start = std::time::Instant::now();
        let out = orthrus(&[
            "run",
            "-m",
            m.to_str().unwrap(),
            "--chat",
            "-p",
            "hi",
            "-n",
            "1",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        // A clear error from the CLI itself, not a process killed or aborted.
        assert_eq!(out.status.code(), Some(1), "{template}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("orthrus: chat template: ")
                && err.contains("used over 512 MiB of memory"),
            "{template}: {err}"
        );
        assert!(
            start.elapsed().as_secs() < 30,
            "{template}: {:?}",
            start.elapsed()
        );
    }
    // The fixture's own template renders through the same child process.
    let m = model(dir.path());
    let out = orthrus(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "--chat",
        "-p",
        "hi",
        "-n",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `orthrus bench --json --steps-out` on the bundled model on the CPU with
/// `args`: its JSON and the steps file's.
fn bench_with_steps(args: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let m =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny-orthrus/tiny-orthrus-q8_0.gguf");
    let steps = dir.path().join("steps.json");
    let mut all = vec!["bench", "-m", m.to_str().unwrap(), "--device", "CPU"];
    all.extend(args);
    all.extend(["--json", "--steps-out", steps.to_str().unwrap()]);
    let j = json(&orthrus(&all));
    let log = serde_json::from_str(&std::fs::read_to_string(&steps).unwrap()).unwrap();
    (j, log)
}

#[test]
fn bench_steps_out_has_every_step_and_the_tokens() {
    let n = 24;
    let (_, log) = bench_with_steps(&["-p", "def add(a, b):", "-n", &n.to_string()]);
    for mode in ["ar", "orthrus", "auto"] {
        let tokens = log["tokens"][mode].as_array().unwrap();
        assert_eq!(tokens.len(), 1, "{mode}: one prompt");
        assert_eq!(tokens[0].as_array().unwrap().len(), n, "{mode}");
    }
    for mode in ["orthrus", "auto"] {
        let gens = log[mode].as_array().unwrap();
        assert_eq!(gens.len(), 1, "{mode}");
        let mut committed = 0;
        for s in gens[0].as_array().unwrap() {
            let s: Vec<u64> = s.as_array().unwrap()[..5]
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let (drafts, rows, accepted) = (s[1], s[2], s[3]);
            assert!(accepted <= drafts && drafts < rows, "{mode}: {s:?}");
            committed += accepted + 1;
        }
        // The first token comes from the prompt's pass; the last step may
        // commit past the limit.
        assert!(committed + 1 >= n as u64, "{mode}: {committed} committed");
    }
    assert!(log.get("ar").is_none(), "AR steps are not logged");
}

#[test]
fn bench_repetitions_run_every_prompt_in_every_mode_again() {
    let (n, reps, prompts) = (6, 3, 2);
    let (j, log) = bench_with_steps(&[
        "-p",
        "def add(a, b):",
        "-p",
        "The capital of France",
        "-n",
        &n.to_string(),
        "-r",
        &reps.to_string(),
        "--check",
    ]);
    assert_eq!(j["repetitions"], reps);
    let each = j["auto_vs_best_each"].as_array().unwrap();
    assert_eq!(each.len(), reps, "{each:?}");
    assert!(each.iter().all(|x| x.as_f64().unwrap() > 0.0), "{each:?}");
    // The check compares one repetition's outputs, each prompt once.
    assert_eq!(j["check"]["compared"], 2 * prompts, "{}", j["check"]);
    for r in j["results"].as_array().unwrap() {
        let steps = (r["ar_steps"].as_u64().unwrap() + r["draft_steps"].as_u64().unwrap()) as usize;
        assert!(steps >= reps * prompts, "{r}");
    }
    for mode in ["ar", "orthrus", "auto"] {
        let tokens = log["tokens"][mode].as_array().unwrap();
        assert_eq!(tokens.len(), reps * prompts, "{mode}");
        // Greedy: every repetition of a prompt writes the same tokens.
        for (i, t) in tokens.iter().enumerate() {
            assert_eq!(t.as_array().unwrap().len(), n, "{mode}");
            assert_eq!(t, &tokens[i % prompts], "{mode}: generation {i}");
        }
    }
}
