//! The engine against the float64 numpy reference (models/reference.py, and
//! its generations committed in tests/golden/):
//! logits of both views, greedy Orthrus == greedy AR, sampling distributions,
//! tokenizer and chat template against Hugging Face, and the errors users see.

use std::path::{Path, PathBuf};
use std::process::Command;

use orthrus_convert::FileType;
use orthrus_engine::draft_policy::StepCosts;
use orthrus_engine::{
    generate, GenerateParams, KvCache, LoadOptions, Logits, Mode, Model, SamplingParams, Session,
    View,
};
use orthrus_kernels::GgmlType;
use orthrus_tests::{convert_fixture, fixture, repo, BLOCK32};

const FIXTURES: [&str; 2] = ["tiny-tied-bf16", "tiny-untied-f16-sharded"];

/// Converts a fixture to `ft` (cached per test process in a temp dir).
fn gguf(dir: &Path, name: &str, ft: FileType, split: bool) -> PathBuf {
    let out = dir.join(format!(
        "{name}-{ft:?}{}.gguf",
        if split { "-split" } else { "" }
    ));
    if !out.exists() {
        convert_fixture(name, &out, ft, split);
    }
    out
}

fn cpu() -> LoadOptions {
    LoadOptions {
        device: Some("CPU".into()),
        ..Default::default()
    }
}

/// On the CPU, for exact decoding: weights in ggml's plain layout.
fn cpu_exact() -> LoadOptions {
    LoadOptions {
        exact: true,
        ..cpu()
    }
}

fn ids_arg(ids: &[u32]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads a float32 .npy file written by numpy (C order).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY");
    let (hlen, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    assert!(
        header.contains("'<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let shape_txt = &header[header.find("'shape': (").unwrap() + 10..];
    let shape: Vec<usize> = shape_txt[..shape_txt.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data = b[start + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (shape, data)
}

fn reference(args: &[String]) -> std::process::Output {
    let out = Command::new("python3")
        .arg(repo().join("models/reference.py"))
        .args(args)
        .output()
        .expect("python3 with numpy is needed (scripts/setup-debian.sh)");
    assert!(
        out.status.success(),
        "reference.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `--gguf-weights FILE` when the reference should use a file's (dequantized) weights.
fn weights_arg(gguf: Option<&Path>) -> Vec<String> {
    gguf.map(|g| vec!["--gguf-weights".to_string(), g.display().to_string()])
        .unwrap_or_default()
}

/// The reference's AR logits of every position of `ids` (`[T, vocab]`), and
/// its diffusion logits of the block `[last, M, ...]` of length `block` after
/// them, from one process (one load of the weights).
fn reference_logits(
    dir: &Path,
    name: &str,
    ids: &[u32],
    last: u32,
    block: usize,
    gguf: Option<&Path>,
) -> (Vec<usize>, Vec<f32>, Vec<f32>) {
    let ar = dir.join(format!("{name}-ar.npy"));
    let diff = dir.join(format!("{name}-diff.npy"));
    let mut args = vec![
        "logits".into(),
        fixture(name).display().to_string(),
        "--ids".into(),
        ids_arg(ids),
        "--out".into(),
        ar.display().to_string(),
        "--diffusion-last".into(),
        last.to_string(),
        "--diffusion-block".into(),
        block.to_string(),
        "--diffusion-out".into(),
        diff.display().to_string(),
    ];
    args.extend(weights_arg(gguf));
    reference(&args);
    let (shape, ar) = read_npy(&ar);
    let (diff_shape, diff) = read_npy(&diff);
    assert_eq!(diff_shape, [block, shape[1]]);
    (shape, ar, diff)
}

/// Largest relative L2 error over the rows of `got` against `want`.
fn rel_err(got: &[f32], want: &[f32], n_vocab: usize) -> f64 {
    assert_eq!(got.len(), want.len());
    got.chunks(n_vocab)
        .zip(want.chunks(n_vocab))
        .map(|(g, w)| {
            let num: f64 = g
                .iter()
                .zip(w)
                .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                .sum();
            let den: f64 = w.iter().map(|&b| (b as f64).powi(2)).sum();
            (num / den).sqrt()
        })
        .fold(0.0, f64::max)
}

const PROMPT: [u32; 7] = [9707, 11, 1879, 0, 151644, 77, 30];

/// F32 files are compared with the checkpoint's own weights. Quantized files
/// are compared with the reference computing on the file's dequantized
/// weights, so the bound measures the engine (including ggml's quantization
/// of activations for quantized matmuls), not the file format's rounding.
#[test]
fn logits_of_both_views_match_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for name in FIXTURES {
        let last = 3u32;
        let block = 5;
        // The reference's logits per file type (F32 twice: with and without exact).
        let mut want = std::collections::HashMap::new();
        // exact: the AR view's decoding passes (here all but the prompt of
        // the diffusion check) through the exact attention path.
        for (ft, cache_ty, tol, exact) in [
            (FileType::F32, GgmlType::F32, 1e-4, false),
            (FileType::F32, GgmlType::F32, 1e-4, true),
            (FileType::F16, GgmlType::F16, 5e-3, false),
            // ggml quantizes activations to q8_0 for these matmuls. In
            // tiny-tied-bf16 every row is 32 wide, one q8_0 block, so that
            // rounding weighs most there: measured 2.1e-2 (prefill) and 3.1e-2
            // (diffusion) against 0.9e-2 and 1.2e-2 on the 16-wide-head untied
            // fixture, whose bound is the 2e-2.
            (
                FileType::Q8_0,
                GgmlType::F16,
                if name == "tiny-tied-bf16" { 4e-2 } else { 2e-2 },
                false,
            ),
        ] {
            let path = gguf(dir.path(), name, ft, false);
            let weights = (ft != FileType::F32).then_some(path.as_path());
            let (shape, want_ar, want_diff) = want
                .entry(format!("{ft:?}"))
                .or_insert_with(|| {
                    reference_logits(dir.path(), name, &PROMPT, last, block, weights)
                })
                .clone();
            let n_vocab = shape[1];
            let model = Model::load(&path, &cpu()).unwrap();
            assert_eq!(model.hparams.n_vocab, n_vocab);
            let cache = KvCache::new(&model, 64, cache_ty).unwrap();
            let mut s = Session::new(&model, &cache, 1, 512).unwrap();
            s.set_exact(exact).unwrap();
            let t = PROMPT.len();
            // Prefill: every row.
            let prefill = s.forward(View::Ar, &PROMPT, 0, t, true).unwrap();
            let mut check = |what: &str, e: f64| {
                eprintln!("{name} {ft:?} cache {cache_ty:?} exact {exact}: {what} relative error {e:.2e} (limit {tol:.0e})");
                if e >= tol {
                    failures.push(format!(
                        "{name} {ft:?} exact {exact}: {what} logits off by {e:.2e} (limit {tol:.0e})"
                    ));
                }
            };
            check("prefill", rel_err(&prefill.logits, &want_ar, n_vocab));
            // Decode: the prompt but its last token, then the last token alone.
            s.forward(View::Ar, &PROMPT[..t - 1], 0, 1, false).unwrap();
            let dec = s
                .forward(View::Ar, &PROMPT[t - 1..], t - 1, 1, true)
                .unwrap();
            check(
                "decode",
                rel_err(&dec.logits, &want_ar[(t - 1) * n_vocab..], n_vocab),
            );
            // Diffusion view on [last, M, M, ...] after the prompt.
            s.forward(View::Ar, &PROMPT, 0, 1, false).unwrap();
            let mask = model.hparams.orthrus.unwrap().mask_token;
            let mut blk = vec![mask; block];
            blk[0] = last;
            let diff = s.forward(View::Diffusion, &blk, t, block, true).unwrap();
            check("diffusion", rel_err(&diff.logits, &want_diff, n_vocab));
            // The argmax computed on the backend agrees with the logits.
            for (row, &am) in diff.logits.chunks(n_vocab).zip(&diff.argmax) {
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0;
                assert_eq!(am as usize, best);
            }
            // The diffusion pass left the committed cache as it was: decoding
            // the last prompt token again gives the reference's logits.
            let again = s
                .forward(View::Ar, &PROMPT[t - 1..], t - 1, 1, true)
                .unwrap();
            check(
                "decode after a diffusion pass",
                rel_err(&again.logits, &want_ar[(t - 1) * n_vocab..], n_vocab),
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn run(
    model: &Model,
    cache_ty: GgmlType,
    prompt: &[u32],
    params: &GenerateParams,
) -> orthrus_engine::Generation {
    let cache = KvCache::new(model, 256, cache_ty).unwrap();
    let mut s = Session::new(model, &cache, 1, 512).unwrap();
    s.set_exact(model.exact).unwrap();
    generate(&mut s, prompt, params, &mut |_| true).unwrap()
}

/// tests/golden/reference-generate.json, the reference's greedy Orthrus
/// generations on the fixtures, written by scripts/make-golden.py.
fn golden_generations() -> Vec<serde_json::Value> {
    let path = repo().join("tests/golden/reference-generate.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The committed golden file is what scripts/make-golden.py computes now,
/// checked on one case (the whole script loads both fixtures and runs six).
#[test]
fn golden_generations_are_what_the_script_writes() {
    let case = 4;
    let out = Command::new("python3")
        .arg(repo().join("scripts/make-golden.py"))
        .args(["--case", &case.to_string()])
        .output()
        .expect("python3 with numpy is needed (scripts/setup-debian.sh)");
    assert!(
        out.status.success(),
        "make-golden.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        now,
        golden_generations()[case],
        "tests/golden/reference-generate.json is stale: run scripts/make-golden.py"
    );
}

/// The reference's greedy Orthrus generation of 40 tokens after `ids`, as
/// the golden file holds it.
fn reference_generation(name: &str, ids: &[u32]) -> serde_json::Value {
    let out = reference(&[
        "generate".into(),
        fixture(name).display().to_string(),
        "--ids".into(),
        ids_arg(ids),
        "-n".into(),
        "40".into(),
        "--mode".into(),
        "orthrus".into(),
        "--ignore-eos".into(),
    ]);
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["ids"] = serde_json::json!(ids);
    v["max_new"] = serde_json::json!(40);
    v
}

#[test]
fn greedy_orthrus_equals_greedy_ar_and_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let golden = golden_generations();
    assert_eq!(golden.len(), 6);
    // Blocks of 8, 16 and 32 (the published models'): 40 tokens end in a
    // padded block, every pass after the first reuses its shape's graph.
    for name in FIXTURES.into_iter().chain([BLOCK32]) {
        let cases: Vec<serde_json::Value> = if name == BLOCK32 {
            // Made at test time, so its reference generations are too.
            let prompts: [&[u32]; 3] = [
                &PROMPT,
                &[1, 2, 3, 4, 5],
                &[151644, 872, 198, 9707, 30, 151645, 198],
            ];
            prompts
                .iter()
                .map(|p| reference_generation(name, p))
                .collect()
        } else {
            golden
                .iter()
                .filter(|c| c["fixture"] == name)
                .cloned()
                .collect()
        };
        assert_eq!(cases.len(), 3, "{name}");
        for ft in [
            FileType::F32,
            FileType::F16,
            FileType::Q8_0,
            FileType::Q4_K_M,
        ] {
            let model = Model::load(&gguf(dir.path(), name, ft, false), &cpu_exact()).unwrap();
            let cache_ty = if ft == FileType::F32 {
                GgmlType::F32
            } else {
                GgmlType::F16
            };
            for case in &cases {
                let prompt: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
                let prompt = prompt.as_slice();
                assert_eq!(case["max_new"], 40);
                let p = GenerateParams {
                    mode: Mode::Orthrus,
                    max_tokens: 40,
                    ignore_eos: true,
                    ..Default::default()
                };
                let ar = run(
                    &model,
                    cache_ty,
                    prompt,
                    &GenerateParams {
                        mode: Mode::Ar,
                        ..p.clone()
                    },
                );
                let or = run(&model, cache_ty, prompt, &p);
                assert_eq!(ar.tokens.len(), 40);
                assert_eq!(or.tokens, ar.tokens, "{name} {ft:?} prompt {prompt:?}");
                let auto = run(
                    &model,
                    cache_ty,
                    prompt,
                    &GenerateParams {
                        mode: Mode::Auto,
                        ..p.clone()
                    },
                );
                assert_eq!(
                    auto.tokens, ar.tokens,
                    "auto: {name} {ft:?} prompt {prompt:?}"
                );
                let committed: usize = or.steps.iter().map(|s| s.accepted + 1).sum();
                assert!(committed >= 39 && or.steps.iter().all(|s| s.accepted <= s.drafts.len()));
                if ft == FileType::F32 {
                    let v = case;
                    let want: Vec<u32> = serde_json::from_value(v["tokens"].clone()).unwrap();
                    assert_eq!(or.tokens, want, "{name}: engine vs reference");
                    // Same drafts and acceptances, step by step (the reference
                    // may take one more step to commit the last token).
                    let want_steps = v["steps"].as_array().unwrap();
                    for (got, want) in or.steps.iter().zip(want_steps) {
                        assert_eq!(
                            serde_json::to_value(got).unwrap(),
                            *want,
                            "{name}: steps differ"
                        );
                    }
                    assert!(want_steps.len() - or.steps.len() <= 1);
                }
            }
        }
    }
}

/// The bundled trained model, loaded for exact decoding, and its held-out
/// prompts, tokenized.
fn trained_model() -> (Model, Vec<Vec<u32>>) {
    trained_model_with(&cpu_exact())
}

fn trained_model_with(opts: &LoadOptions) -> (Model, Vec<Vec<u32>>) {
    trained_model_file(
        &repo().join("models/tiny-orthrus/tiny-orthrus-q8_0.gguf"),
        opts,
    )
}

/// The trained model as Q4_0, whose weights ggml repacks on CPUs with AVX2
/// (not its Q8_0 ones on x86-64), converted into `dir`.
fn trained_model_q4_0(dir: &Path) -> PathBuf {
    let out = dir.join("tiny-orthrus-q4_0.gguf");
    let opts = orthrus_convert::convert::Options {
        input: repo().join("models/tiny-orthrus/hf"),
        output: out.clone(),
        file_type: FileType::Q4_0,
        head_type: None,
        split: false,
        name: None,
    };
    orthrus_convert::convert::convert(&opts, &mut |_, _| {}).unwrap();
    out
}

fn trained_model_file(path: &Path, opts: &LoadOptions) -> (Model, Vec<Vec<u32>>) {
    let dir = repo().join("models/tiny-orthrus");
    let model = Model::load(path, opts).unwrap();
    let text = std::fs::read_to_string(dir.join("heldout-prompts.json")).unwrap();
    let prompts: Vec<String> = serde_json::from_str(&text).unwrap();
    let tok = model.tokenizer().unwrap();
    let ids = prompts.iter().map(|p| tok.encode(p).unwrap()).collect();
    (model, ids)
}

/// Sessions of more than one thread compute on a pool of kept threads
/// (ggml would otherwise start threads for every graph); the pool splits the
/// work as fresh threads did, so the logits are those of one thread bit for
/// bit: a prompt, AR steps and diffusion and verify passes, run twice.
#[test]
fn passes_on_kept_threads_equal_one_threads() {
    assert!(orthrus_kernels::ggml::ThreadPool::new(2).is_some());
    let (model, prompts) = trained_model_with(&cpu());
    let prompt = &prompts[0];
    let mask = model.hparams.orthrus.unwrap().mask_token;
    let passes = |threads: usize| {
        let cache = KvCache::new(&model, 512, GgmlType::F16).unwrap();
        let mut s = Session::new(&model, &cache, threads, 512).unwrap();
        let mut out = Vec::new();
        for _ in 0..2 {
            let n = prompt.len();
            out.push(s.forward(View::Ar, prompt, 0, 1, true).unwrap().logits);
            let x = *prompt.last().unwrap();
            out.push(s.forward(View::Ar, &[x], n, 1, true).unwrap().logits);
            let mut blk = vec![mask; 8];
            blk[0] = x;
            out.push(s.forward(View::Diffusion, &blk, n, 8, true).unwrap().logits);
            out.push(s.forward(View::Ar, &[x; 8], n, 8, true).unwrap().logits);
        }
        out
    };
    let one = passes(1);
    let kept = passes(2);
    for (i, (a, b)) in one.iter().zip(&kept).enumerate() {
        assert!(!a.is_empty());
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "pass {i}: two threads' logits differ from one's"
        );
    }
}

/// A greedy step in one graph (the drafts staying on the device between the
/// diffusion and the verify pass) returns what its two passes return as two
/// graphs, and leaves the cache as they do: on a tied model (drafts looked up
/// in the LM head) and an untied one (in the token embedding), padded to a
/// larger graph, past a KV window, bit for bit on the CPU.
#[test]
fn a_step_in_one_graph_equals_its_two_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (trained, prompts) = trained_model();
    let untied = Model::load(
        &gguf(dir.path(), "tiny-untied-f16-sharded", FileType::Q8_0, false),
        &cpu(),
    )
    .unwrap();
    for model in [&trained, &untied] {
        let mask = model.hparams.orthrus.unwrap().mask_token;
        let prompt: Vec<u32> = prompts[0]
            .iter()
            .map(|&t| t % model.hparams.n_vocab as u32)
            .collect();
        let (fused_cache, apart_cache) = (
            KvCache::new(model, 1024, GgmlType::F16).unwrap(),
            KvCache::new(model, 1024, GgmlType::F16).unwrap(),
        );
        let mut fused = Session::new(model, &fused_cache, 1, 512).unwrap();
        let mut apart = Session::new(model, &apart_cache, 1, 512).unwrap();
        apart.set_steps_apart(true);
        assert!(fused.fuses_steps(false) && !apart.fuses_steps(false));
        // Sampling needs both passes' logits on the host.
        assert!(!fused.fuses_steps(true));
        let long: Vec<u32> = prompt.iter().cycle().take(300).copied().collect();
        for (p, l, rows) in [
            (&prompt, 8, 8),
            (&prompt, 5, 16),
            (&long, 16, 16),
            (&long, 2, 2),
        ] {
            let mut outs = Vec::new();
            for s in [&mut fused, &mut apart] {
                let n = p.len();
                let x = s.prefill(p, 0, false).unwrap().argmax[0];
                let mut blk = vec![mask; l];
                blk[0] = x;
                let (drafts, verify) = if s.fuses_steps(false) {
                    let o = s.step(&blk, n, rows).unwrap();
                    (o.drafts, o.argmax)
                } else {
                    let d = s
                        .forward_padded(View::Diffusion, &blk, n, l, false, rows)
                        .unwrap();
                    let mut v = vec![x];
                    v.extend(&d.argmax[..l - 1]);
                    let o = s.forward_padded(View::Ar, &v, n, l, false, rows).unwrap();
                    (d.argmax[..l - 1].to_vec(), o.argmax)
                };
                assert_eq!((drafts.len(), verify.len()), (l - 1, l));
                // What the verify pass cached: a one-token pass after the
                // block reads all of it.
                let next = s
                    .forward(View::Ar, &[verify[0]], n + l, 1, true)
                    .unwrap()
                    .logits;
                outs.push((drafts, verify, next));
            }
            let what = format!("{} tokens cached, {l} of {rows} rows", p.len());
            assert_eq!(outs[0].0, outs[1].0, "{what}: drafts differ");
            assert_eq!(outs[0].1, outs[1].1, "{what}: verify rows differ");
            assert!(
                outs[0]
                    .2
                    .iter()
                    .zip(&outs[1].2)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{what}: the caches differ"
            );
        }
    }
}

/// A mask made in the graph from each row's visible slots is the mask the
/// host writes: a prompt, one-token, diffusion, verify passes and a whole
/// step give the same logits and argmax rows bit for bit, with an f16 cache
/// (ggml's fused attention), an f32 one (softmax on an f32 mask) and in
/// exact mode.
#[test]
fn masks_made_in_the_graph_equal_the_hosts() {
    let (model, prompts) = trained_model_with(&cpu_exact());
    let mask = model.hparams.orthrus.unwrap().mask_token;
    let prompt = &prompts[1];
    for (cache_ty, exact) in [
        (GgmlType::F16, false),
        (GgmlType::F32, false),
        (GgmlType::F32, true),
    ] {
        let passes = |min: usize| {
            let cache = KvCache::new(&model, 512, cache_ty).unwrap();
            let mut s = Session::new(&model, &cache, 1, 64).unwrap();
            s.set_exact(exact).unwrap();
            s.set_device_mask_min(min);
            s.set_steps_apart(false);
            let n = prompt.len();
            let mut out = vec![s.prefill(prompt, 0, true).unwrap()];
            let x = *prompt.last().unwrap();
            out.push(s.forward(View::Ar, &[x], n, 1, true).unwrap());
            let mut blk = vec![mask; 8];
            blk[0] = x;
            out.push(
                s.forward_padded(View::Diffusion, &blk[..5], n, 5, true, 8)
                    .unwrap(),
            );
            out.push(s.forward(View::Ar, &blk, n, 8, true).unwrap());
            if s.fuses_steps(false) {
                out.push(s.step(&blk[..6], n, 8).unwrap());
            }
            out
        };
        let (host, device) = (passes(usize::MAX), passes(0));
        assert_eq!(host.len(), device.len());
        for (i, (h, d)) in host.iter().zip(&device).enumerate() {
            let what = format!("{cache_ty:?} cache, exact {exact}, pass {i}");
            assert_eq!((&h.argmax, &h.drafts), (&d.argmax, &d.drafts), "{what}");
            assert!(
                h.logits
                    .iter()
                    .zip(&d.logits)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{what}: logits differ"
            );
        }
    }
}

/// Sampling from a pass's top logits, as the backend picks them
/// (`Logits::Top`), is sampling from all of them: every row's distribution is
/// the same, whatever top-p and min-p then cut, for a prompt, a one-token, a
/// padded diffusion and a verify pass.
#[test]
fn top_logits_from_the_backend_give_the_distributions_of_all_of_them() {
    let (model, prompts) = trained_model();
    let mask = model.hparams.orthrus.unwrap().mask_token;
    let prompt = &prompts[2];
    let cache = KvCache::new(&model, 512, GgmlType::F16).unwrap();
    let mut s = Session::new(&model, &cache, 1, 64).unwrap();
    let n = prompt.len();
    let x = *prompt.last().unwrap();
    let mut blk = vec![mask; 8];
    blk[0] = x;
    for k in [1, 7, 40] {
        let mut passes = |logits: Logits| {
            vec![
                s.prefill(prompt, 0, logits).unwrap(),
                s.forward(View::Ar, &[x], n, 1, logits).unwrap(),
                s.forward_padded(View::Diffusion, &blk[..5], n, 5, logits, 8)
                    .unwrap(),
                s.forward(View::Ar, &blk, n, 8, logits).unwrap(),
            ]
        };
        let (all, top) = (passes(Logits::All), passes(Logits::Top(k)));
        for (i, (a, t)) in all.iter().zip(&top).enumerate() {
            assert_eq!(t.top.len(), k * a.argmax.len(), "pass {i}: top {k}");
            assert!(t.logits.is_empty(), "pass {i}: all logits copied too");
            for (top_p, min_p) in [(1.0, 0.0), (0.8, 0.0), (1.0, 0.2)] {
                let p = SamplingParams {
                    temperature: 0.7,
                    top_k: k,
                    top_p,
                    min_p,
                    seed: 0,
                };
                for row in 0..a.argmax.len() {
                    assert_eq!(
                        a.distribution(row, &p),
                        t.distribution(row, &p),
                        "pass {i}, row {row}, top {k}, top-p {top_p}, min-p {min_p}"
                    );
                }
            }
        }
    }
}

/// In exact mode a decoding pass over a block computes each row exactly as a
/// one-token pass over the same cache does (the trained model's Q8_0 matmuls
/// round their inputs to 8 bits, which turns the last-bit differences of
/// batch-dependent kernels into logit differences of tenths).
#[test]
fn a_block_pass_row_is_bit_identical_to_a_one_token_pass() {
    let (model, prompts) = trained_model();
    // col_group 8: the batch's weight matmuls as a stack of 8-column
    // matrices, as on a GPU; the values must not move. An f32 cache takes
    // the batch-invariant attention path of a GPU's exact mode.
    for (cache_ty, col_group) in [
        (GgmlType::F16, 0),
        (GgmlType::Q8_0, 0),
        (GgmlType::F16, 8),
        (GgmlType::F32, 0),
    ] {
        let cache = KvCache::new(&model, 2048, cache_ty).unwrap();
        let mut s = Session::new(&model, &cache, 1, 512).unwrap();
        s.set_col_group(col_group);
        s.set_exact(true).unwrap();
        // No GPU: ggml's own matmuls, on the reference kernels.
        assert!(!s.exact_matmul());
        for prompt in prompts.iter().take(4) {
            // Past 256 cached positions too, where the fast kernels split
            // one-token attention over the cache, and across 1024, where the
            // exact path's one-token passes read 1024 slots, then 2048, and
            // the block's passes all 2048.
            let block: Vec<u32> = prompt.iter().cycle().skip(3).take(16).copied().collect();
            for pos0 in [prompt.len(), 300, 1020] {
                s.prefill(
                    &prompt
                        .iter()
                        .cycle()
                        .take(pos0)
                        .copied()
                        .collect::<Vec<_>>(),
                    0,
                    false,
                )
                .unwrap();
                let batched = s.forward(View::Ar, &block, pos0, 16, true).unwrap().logits;
                let n_vocab = model.hparams.n_vocab;
                for (j, &t) in block.iter().enumerate() {
                    let single = s.forward(View::Ar, &[t], pos0 + j, 1, true).unwrap().logits;
                    assert!(
                        single == batched[j * n_vocab..(j + 1) * n_vocab],
                        "{cache_ty:?} cache, col_group {col_group}, row {j} at position {}: batched and one-token logits differ",
                        pos0 + j
                    );
                }
            }
        }
    }
}

/// Step costs under which auto mode's choice moves between AR steps and
/// every graph size of a 16-token block as the acceptance estimates move (a
/// step of rows 1, 2, 4, 8, 16 costs 1, 1.4, 1.8, 2.0, 2.2: a GPU's shape,
/// which the timed steps then move towards this machine's), so that a test
/// covers steps of many draft lengths whatever this machine measures.
fn varied_costs() -> StepCosts {
    StepCosts::from_samples(&[
        (1, 0, 1.0),
        (2, 0, 1.4),
        (4, 0, 1.8),
        (8, 0, 2.0),
        (16, 0, 2.2),
    ])
}

/// Sampled steps (with a GPU) have costs of their own: measured as sampling runs them
/// (two graphs, logits to the host), and refined by sampled generations
/// only, so that sampling does not move what greedy steps are taken to cost.
#[test]
fn sampled_steps_have_costs_of_their_own() {
    let (model, prompts) = trained_model();
    let cache = KvCache::new(&model, 1024, GgmlType::F16).unwrap();
    let mut s = Session::new(&model, &cache, 1, 512).unwrap();
    let sampling = SamplingParams {
        temperature: 0.8,
        top_k: 40,
        ..Default::default()
    };
    // On a CPU they share the greedy costs unless told otherwise.
    s.set_step_costs(varied_costs());
    let greedy = s.step_costs().unwrap().table(0);
    assert_eq!(s.step_costs_for(&sampling).unwrap().table(0), greedy);
    s.set_sampled_costs_apart(true);
    s.set_step_costs(varied_costs());
    // Calibrated on first use; then what the generation leaves them.
    let measured = s.step_costs_for(&sampling).unwrap().table(0);
    assert_ne!(measured, greedy);
    let p = GenerateParams {
        mode: Mode::Auto,
        max_tokens: 48,
        ignore_eos: true,
        sampling,
        draft_max: Some(7),
    };
    generate(&mut s, &prompts[0], &p, &mut |_| true).unwrap();
    assert_eq!(s.step_costs().unwrap().table(0), greedy);
    let refined = s.step_costs_for(&sampling).unwrap().table(0);
    assert_ne!(
        refined, measured,
        "the sampled generation's steps were not timed into its costs"
    );
    // Greedy decoding keeps to the greedy costs.
    let greedy_costs = s.step_costs_for(&SamplingParams::default()).unwrap();
    assert_eq!(greedy_costs.table(0), greedy);
}

/// `--draft-max` bounds auto mode's drafts as it does orthrus mode's (on the
/// H200 auto drafted 31 of a 32-token block under `--draft-max 15`, and its
/// per-position counts, sized by the limit, went out of range).
#[test]
fn auto_mode_keeps_to_the_draft_limit() {
    let (model, prompts) = trained_model();
    let cache = KvCache::new(&model, 1024, GgmlType::F16).unwrap();
    let mut s = Session::new(&model, &cache, 1, 512).unwrap();
    s.set_step_costs(varied_costs());
    s.set_history(Default::default());
    let p = GenerateParams {
        mode: Mode::Auto,
        max_tokens: 64,
        ignore_eos: true,
        draft_max: Some(3),
        ..Default::default()
    };
    let g = generate(&mut s, &prompts[0], &p, &mut |_| true).unwrap();
    let longest = g.steps.iter().map(|st| st.drafts.len()).max();
    assert_eq!(longest, Some(3), "{:?}", g.steps);
    assert_eq!(g.stats.draft_tokens_per_pos.len(), 3);
}

/// Decoding graphs whose attention spans larger KV windows than the
/// default (as a GPU's calibration sets them where building graphs costs
/// many steps) read the same cache slots unmasked, so they decode the same
/// tokens with the same steps, windows of 512 crossed as those of 256 are,
/// and one spanning the whole cache; and they build fewer graphs.
#[test]
fn larger_kv_windows_decode_the_same() {
    let (model, prompts) = trained_model();
    let cache = KvCache::new(&model, 2048, GgmlType::F16).unwrap();
    // Costs timed at 0 and 2000 positions, per position `slope` more, and
    // `fresh` to build a size's graphs.
    let windowed = |slope: f64, fresh: f64| {
        let at_start = [(1, 1.0), (2, 1.4), (4, 1.8), (8, 2.0), (16, 2.2)];
        let mut samples: Vec<(usize, usize, f64)> =
            at_start.iter().map(|&(r, c)| (r, 0, c)).collect();
        samples.extend(at_start.iter().map(|&(r, c)| (r, 2000, c + 2000.0 * slope)));
        let mut costs = StepCosts::from_samples(&samples);
        for (rows, _) in at_start {
            costs.set_fresh(rows, fresh);
        }
        costs.set_windows(2048);
        costs
    };
    let (w512, whole) = (windowed(1e-6, 0.131), windowed(0.0, 1.0));
    assert_eq!((w512.window(1), w512.window(16)), (512, 512));
    assert_eq!((whole.window(1), whole.window(16)), (2048, 2048));
    for prompt in prompts.iter().take(2) {
        for (mode, draft_max) in [(Mode::Ar, None), (Mode::Orthrus, Some(15))] {
            let p = GenerateParams {
                mode,
                max_tokens: 600,
                ignore_eos: true,
                draft_max,
                ..Default::default()
            };
            let run = |costs: Option<StepCosts>| {
                let mut s = Session::new(&model, &cache, 1, 512).unwrap();
                if let Some(c) = costs {
                    s.set_step_costs(c);
                }
                let g = generate(&mut s, prompt, &p, &mut |_| true).unwrap();
                let steps: Vec<(usize, usize)> = g
                    .steps
                    .iter()
                    .map(|st| (st.position, st.accepted))
                    .collect();
                (g.tokens, steps, s.graphs_built())
            };
            let (tokens, steps, built) = run(None);
            for (what, costs) in [("512", &w512), ("whole cache", &whole)] {
                let (wide_tokens, wide_steps, wide_built) = run(Some(costs.clone()));
                assert_eq!(tokens, wide_tokens, "{mode:?}, windows {what}");
                assert_eq!(steps, wide_steps, "{mode:?}, windows {what}");
                assert!(
                    wide_built < built,
                    "{mode:?}: {wide_built} graphs built in windows of {what}, {built} in the default ones"
                );
            }
        }
    }
}

/// Greedy Orthrus == greedy AR on a model whose drafts are accepted (the
/// random fixtures' mostly are not), over its held-out prompts, with draft
/// lengths 15 and 1 and in auto mode (with the costs measured here, and
/// with [`varied_costs`]): bit for bit in exact mode, on both attention
/// paths (f16 cache: fused; f32: plain); with the default fast kernels
/// (its Q8_0 file, and a Q4_0 conversion whose weights ggml repacks),
/// parting only where the AR top-2 logits are closer than a batched and a
/// one-token pass disagree.
#[test]
fn greedy_orthrus_equals_greedy_ar_on_the_trained_model() {
    let dir = tempfile::tempdir().unwrap();
    let q8_0 = repo().join("models/tiny-orthrus/tiny-orthrus-q8_0.gguf");
    let q4_0 = trained_model_q4_0(dir.path());
    let mut failures = Vec::new();
    let (mut accepted, mut runs) = (0.0, 0.0);
    let mut lengths = std::collections::BTreeMap::<usize, usize>::new();
    for (file, exact, cache_ty, n_prompts) in [
        (&q8_0, true, GgmlType::F16, 8),
        (&q8_0, true, GgmlType::F32, 8),
        (&q8_0, false, GgmlType::F16, 5),
        (&q4_0, false, GgmlType::F16, 5),
    ] {
        let opts = if exact { cpu_exact() } else { cpu() };
        let (model, prompts) = trained_model_file(file, &opts);
        let cache = KvCache::new(&model, 1024, cache_ty).unwrap();
        let mut s = Session::new(&model, &cache, 1, 512).unwrap();
        s.set_exact(exact).unwrap();
        let modes: &[_] = if exact {
            &[
                (Mode::Orthrus, 15, None),
                (Mode::Orthrus, 1, None),
                (Mode::Auto, 15, None),
                (Mode::Auto, 15, Some(varied_costs())),
            ]
        } else {
            &[
                (Mode::Orthrus, 15, None),
                (Mode::Auto, 15, Some(varied_costs())),
            ]
        };
        for (i, prompt) in prompts.iter().enumerate().take(n_prompts) {
            let p = GenerateParams {
                mode: Mode::Orthrus,
                max_tokens: 256,
                ignore_eos: true,
                ..Default::default()
            };
            let ar = generate(
                &mut s,
                prompt,
                &GenerateParams {
                    mode: Mode::Ar,
                    ..p.clone()
                },
                &mut |_| true,
            )
            .unwrap()
            .tokens;
            for (mode, draft_max, costs) in modes.iter().cloned() {
                let p = GenerateParams {
                    mode,
                    draft_max: Some(draft_max),
                    ..p.clone()
                };
                if let Some(c) = &costs {
                    // From the prior, as a first generation: the estimates
                    // then move through every draft length.
                    s.set_step_costs(c.clone());
                    s.set_history(Default::default());
                }
                let or = generate(&mut s, prompt, &p, &mut |_| true).unwrap();
                if mode == Mode::Orthrus && draft_max == 15 {
                    accepted += or.stats.mean_accepted;
                    runs += 1.0;
                }
                if costs.is_some() {
                    for st in &or.steps {
                        *lengths.entry(st.drafts.len()).or_default() += 1;
                    }
                }
                let Some(at) = ar.iter().zip(&or.tokens).position(|(a, o)| a != o) else {
                    continue;
                };
                let what = format!(
                    "{}, exact {exact}, {cache_ty:?} cache, {mode:?} draft-max {draft_max}, prompt {i} ({} tokens): parts from ar at token {at}",
                    file.display(),
                    prompt.len()
                );
                if exact {
                    failures.push(what);
                    continue;
                }
                let mut prefix = prompt.clone();
                prefix.extend(&ar[..at]);
                let (gap, disagreement) = near_tie(&mut s, &prefix);
                if gap > disagreement {
                    failures.push(format!(
                        "{what}, top-2 gap {gap} above the batched/one-token disagreement {disagreement}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The drafts are really accepted, so the comparison covered multi-token commits.
    assert!(accepted / runs > 1.5, "mean accepted {}", accepted / runs);
    // Auto mode ran AR steps and steps of every graph size.
    for n in [0, 1, 3, 7, 15] {
        assert!(
            lengths.contains_key(&n),
            "no step of {n} drafts in auto mode: {lengths:?}"
        );
    }
}

/// At the next token after `prefix`: the gap between the AR view's top two
/// logits, and the largest difference between those logits computed by a
/// one-token pass and as the last row of a 16-token pass.
fn near_tie(s: &mut Session<'_>, prefix: &[u32]) -> (f32, f32) {
    let m = prefix.len();
    s.prefill(&prefix[..m - 1], 0, false).unwrap();
    let single = s
        .forward(View::Ar, &prefix[m - 1..], m - 1, 1, true)
        .unwrap()
        .logits;
    let b = 16.min(m);
    s.prefill(&prefix[..m - b], 0, false).unwrap();
    let batched = s
        .forward(View::Ar, &prefix[m - b..], m - b, 1, true)
        .unwrap()
        .logits;
    let mut top = single.clone();
    top.sort_by(|x, y| y.total_cmp(x));
    let disagreement = single
        .iter()
        .zip(&batched)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    (top[0] - top[1], disagreement)
}

#[test]
fn eos_ends_generation_and_is_emitted() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::load(
        &gguf(dir.path(), "tiny-tied-bf16", FileType::F32, false),
        &cpu(),
    )
    .unwrap();
    let free = run(
        &model,
        GgmlType::F32,
        &PROMPT,
        &GenerateParams {
            max_tokens: 12,
            ignore_eos: true,
            ..Default::default()
        },
    );
    // Pretend the 5th generated token is an end-of-sequence token.
    let mut m = model;
    m.hparams.eos_ids = vec![free.tokens[4]];
    for mode in [Mode::Ar, Mode::Orthrus, Mode::Auto] {
        let g = run(
            &m,
            GgmlType::F32,
            &PROMPT,
            &GenerateParams {
                mode,
                max_tokens: 12,
                ..Default::default()
            },
        );
        let first = free
            .tokens
            .iter()
            .position(|&t| t == free.tokens[4])
            .unwrap();
        assert_eq!(g.tokens, free.tokens[..=first], "{mode:?}");
        assert_eq!(g.finish, orthrus_engine::Finish::Eos);
    }
}

/// Two-sample chi-square statistic and degrees of freedom over count maps.
fn chi_square(
    a: &std::collections::HashMap<Vec<u32>, usize>,
    b: &std::collections::HashMap<Vec<u32>, usize>,
) -> (f64, usize) {
    let keys: std::collections::HashSet<&Vec<u32>> = a.keys().chain(b.keys()).collect();
    let mut stat = 0.0;
    for k in &keys {
        let (x, y) = (
            *a.get(*k).unwrap_or(&0) as f64,
            *b.get(*k).unwrap_or(&0) as f64,
        );
        stat += (x - y).powi(2) / (x + y);
    }
    (stat, keys.len() - 1)
}

/// Upper 0.1% point of chi-square with `df` degrees of freedom (Wilson-Hilferty).
fn chi_square_limit(df: usize) -> f64 {
    let k = df as f64;
    let z = 3.09;
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

#[test]
fn sampled_orthrus_has_the_ar_distribution() {
    // Blocks of 8 and 32: 3-token generations draft padded blocks.
    for name in ["tiny-tied-bf16", BLOCK32] {
        sampled_orthrus_has_the_ar_distribution_on(name);
    }
}

fn sampled_orthrus_has_the_ar_distribution_on(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::load(&gguf(dir.path(), name, FileType::F32, false), &cpu()).unwrap();
    let cache = KvCache::new(&model, 64, GgmlType::F32).unwrap();
    let mut s = Session::new(&model, &cache, 1, 512).unwrap();
    // The acceptance rule itself is tested on synthetic distributions with
    // 200,000 steps (decode::tests); this checks the engine's wiring of it.
    let n = 300;
    let mut hist = |mode: Mode, temperature: f32, seed0: u64, costs: Option<StepCosts>| {
        let (mut h, mut drafted) = (std::collections::HashMap::new(), 0);
        for seed in 0..n {
            let sampling = SamplingParams {
                temperature,
                top_k: 4,
                top_p: 0.95,
                min_p: 0.0,
                seed: seed0 + seed,
            };
            let p = GenerateParams {
                mode,
                max_tokens: 3,
                ignore_eos: true,
                sampling,
                draft_max: None,
            };
            if let Some(c) = &costs {
                s.set_step_costs_for(&sampling, c.clone());
            }
            let g = generate(&mut s, &[1, 2, 3], &p, &mut |_| true).unwrap();
            drafted += g.stats.draft_tokens;
            *h.entry(g.tokens).or_insert(0) += 1;
        }
        (h, drafted)
    };
    let (ar, _) = hist(Mode::Ar, 1.5, 0, None);
    let (or, _) = hist(Mode::Orthrus, 1.5, 1_000_000, None);
    let (stat, df) = chi_square(&ar, &or);
    assert!(df >= 5, "too few outcomes ({df}) to test anything");
    assert!(
        stat < chi_square_limit(df),
        "{name}: orthrus vs ar: chi2 {stat:.1} with {df} df"
    );
    // Auto mode, with costs under which drafts pay (as measured here they
    // may not, and auto would run AR steps only): it drafts 1 or 2 tokens a
    // step through graphs of 2 or 4 rows, or runs an AR step, by what the
    // generation's earlier steps accepted.
    let cheap = StepCosts::from_samples(&[(1, 0, 1.0), (2, 0, 1.1), (4, 0, 1.2), (8, 0, 1.3)]);
    let (auto, drafted) = hist(Mode::Auto, 1.5, 3_000_000, Some(cheap));
    assert!(drafted > n as usize, "auto drafted only {drafted} tokens");
    let (stat, df) = chi_square(&ar, &auto);
    assert!(
        stat < chi_square_limit(df),
        "auto vs ar: chi2 {stat:.1} with {df} df"
    );
    // The test has power: a different temperature is detected.
    let (cold, _) = hist(Mode::Ar, 0.5, 2_000_000, None);
    let (stat, df) = chi_square(&ar, &cold);
    assert!(
        stat > chi_square_limit(df),
        "{name}: temperature 1.5 vs 0.5 not told apart: chi2 {stat:.1} ({df} df)"
    );
}

#[test]
fn split_base_plus_head_runs_like_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let whole = Model::load(
        &gguf(dir.path(), "tiny-untied-f16-sharded", FileType::F16, false),
        &cpu_exact(),
    )
    .unwrap();
    let base = gguf(dir.path(), "tiny-untied-f16-sharded", FileType::F16, true);
    let head = orthrus_convert::convert::head_path(&base);
    let paired = Model::load(
        &base,
        &LoadOptions {
            head: Some(head.clone()),
            ..cpu_exact()
        },
    )
    .unwrap();
    let p = GenerateParams {
        max_tokens: 24,
        ignore_eos: true,
        ..Default::default()
    };
    assert_eq!(
        run(&whole, GgmlType::F16, &PROMPT, &p).tokens,
        run(&paired, GgmlType::F16, &PROMPT, &p).tokens
    );
    // The base alone is plain Qwen3: AR works (auto mode runs AR steps),
    // Orthrus mode says what is missing.
    let plain = Model::load(&base, &cpu_exact()).unwrap();
    assert!(!plain.is_orthrus());
    let cache = KvCache::new(&plain, 64, GgmlType::F16).unwrap();
    let mut s = Session::new(&plain, &cache, 1, 512).unwrap();
    s.set_exact(true).unwrap();
    let auto = generate(&mut s, &PROMPT, &p, &mut |_| true).unwrap();
    assert_eq!(auto.tokens, run(&whole, GgmlType::F16, &PROMPT, &p).tokens);
    assert_eq!(auto.stats.draft_tokens, 0);
    let orthrus = GenerateParams {
        mode: Mode::Orthrus,
        ..p.clone()
    };
    let err = generate(&mut s, &PROMPT, &orthrus, &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--head"), "{err}");
    // A head of another model is refused.
    let other = gguf(dir.path(), "tiny-tied-bf16", FileType::F16, true);
    let err = Model::load(
        &base,
        &LoadOptions {
            head: Some(orthrus_convert::convert::head_path(&other)),
            ..cpu_exact()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("does not match"), "{err}");
    // A head file given as the model is refused with a hint.
    let err = Model::load(&head, &cpu_exact()).err().unwrap().to_string();
    assert!(err.contains("--head"), "{err}");
}

/// `tests/python/write_gguf.py`: fixture `name` as a `layout` file (or
/// `"<layout> head"`: its head file) of type `ty` (f32, q8_0), written by the
/// `gguf` package as other tools write it.
fn gguf_py(dir: &Path, name: &str, layout: &str, ty: &str) -> PathBuf {
    let head = layout.strip_suffix(" head");
    let out = dir.join(format!("{name}-{layout}-{ty}.gguf").replace(' ', "-"));
    let run = Command::new("python3")
        .arg(repo().join("tests/python/write_gguf.py"))
        .arg(fixture(name))
        .arg(&out)
        .args(["--layout", head.unwrap_or(layout), "--type", ty])
        .args(head.map(|_| "--head"))
        .output()
        .expect("python3 with numpy and gguf is needed (scripts/setup-debian.sh)");
    assert!(
        run.status.success(),
        "write_gguf.py failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

/// One checkpoint in every layout decodes alike: our conversion (the
/// community layout), the community layout as the llama.cpp Orthrus fork's
/// converter writes it, our earlier layout, and a Qwen3 base as llama.cpp's
/// converter writes it paired with our head file and with a head file of our
/// earlier layout: the same greedy tokens, and the same drafts step by step.
#[test]
fn every_layout_gives_the_same_greedy_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let arch = |m: &Path| {
        orthrus_kernels::gguf::GgufFile::open(m)
            .unwrap()
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap()
    };
    // Orthrus mode: auto's draft lengths follow measured times, so its steps
    // are not the same from run to run.
    let p = GenerateParams {
        mode: Mode::Orthrus,
        max_tokens: 24,
        ignore_eos: true,
        ..Default::default()
    };
    for name in FIXTURES {
        for (ft, ty) in [(FileType::F32, "f32"), (FileType::Q8_0, "q8_0")] {
            let cache_ty = GgmlType::F32;
            let ours_path = gguf(dir.path(), name, ft, false);
            assert_eq!(arch(&ours_path), "orthrus");
            let ours = Model::load(&ours_path, &cpu()).unwrap();
            let want = run(&ours, cache_ty, &PROMPT, &p);
            let steps = |g: &orthrus_engine::Generation| serde_json::to_value(&g.steps).unwrap();
            let head = orthrus_convert::convert::head_path(&gguf(dir.path(), name, ft, true));
            let cases = [
                ("orthrus", gguf_py(dir.path(), name, "orthrus", ty), None),
                ("earlier", gguf_py(dir.path(), name, "earlier", ty), None),
                (
                    "qwen3 + head",
                    gguf_py(dir.path(), name, "qwen3", ty),
                    Some(head),
                ),
                (
                    "qwen3 + earlier head",
                    gguf_py(dir.path(), name, "qwen3", ty),
                    Some(gguf_py(dir.path(), name, "earlier head", ty)),
                ),
            ];
            for (layout, path, head) in cases {
                let expect_arch = if layout == "orthrus" {
                    "orthrus"
                } else {
                    "qwen3"
                };
                assert_eq!(arch(&path), expect_arch, "{layout}");
                let model = Model::load(&path, &LoadOptions { head, ..cpu() })
                    .unwrap_or_else(|e| panic!("{name} {ty} {layout}: {e}"));
                let (a, b) = (&model.hparams, &ours.hparams);
                assert_eq!(
                    (
                        a.n_vocab,
                        a.n_embd,
                        a.n_layer,
                        a.n_head,
                        a.n_head_kv,
                        a.head_dim,
                        a.n_ff
                    ),
                    (
                        b.n_vocab,
                        b.n_embd,
                        b.n_layer,
                        b.n_head,
                        b.n_head_kv,
                        b.head_dim,
                        b.n_ff
                    ),
                    "{name} {ty} {layout}"
                );
                assert_eq!(
                    (a.rms_eps, a.rope_base, a.context_length, a.orthrus),
                    (b.rms_eps, b.rope_base, b.context_length, b.orthrus),
                    "{name} {ty} {layout}"
                );
                // The fork's file lists no end ids: llama.cpp's rule finds
                // Qwen3's two; the others carry generation_config's list.
                if layout == "orthrus" {
                    assert_eq!(a.eos_ids, vec![151645, 151643], "{name} {ty} {layout}");
                } else {
                    assert_eq!(a.eos_ids, b.eos_ids, "{name} {ty} {layout}");
                }
                let got = run(&model, cache_ty, &PROMPT, &p);
                assert_eq!(got.tokens, want.tokens, "{name} {ty} {layout}: tokens");
                assert_eq!(steps(&got), steps(&want), "{name} {ty} {layout}: steps");
            }
        }
    }
}

/// `make_fixtures.py published NAME`: a published model's config.json (block
/// 32, mask 151669, sharded bf16, tied but on the 8B) with 2 layers, narrow.
fn published(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let run = Command::new("python3")
        .arg(repo().join("models/make_fixtures.py"))
        .args(["published", name])
        .arg(&out)
        .args(["--layers", "2", "--narrow"])
        .output()
        .expect("python3 with numpy is needed (scripts/setup-debian.sh)");
    assert!(
        run.status.success(),
        "make_fixtures.py failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

/// The published configurations convert to every type and load: block 32.
/// Each type also runs on one of them (a third of the types each, in turn),
/// greedy Orthrus equal to greedy AR: every pass of these 12-token
/// generations pads its block to 32 and reuses the graph of the first. The
/// types' passes are compared on the fixtures too
/// (`greedy_orthrus_equals_greedy_ar_*`), so every type on every
/// configuration would mostly repeat them, at CI's expense.
#[test]
fn published_configurations_convert_to_every_type_and_run() {
    let dir = tempfile::tempdir().unwrap();
    for (config, (name, tied)) in [
        ("Orthrus-Qwen3-1.7B", true),
        ("Orthrus-Qwen3-4B", true),
        ("Orthrus-Qwen3-8B", false),
    ]
    .into_iter()
    .enumerate()
    {
        let hf = published(dir.path(), name);
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(
            (
                &cfg["model_type"],
                &cfg["architectures"][0],
                &cfg["torch_dtype"]
            ),
            (&"orthrus".into(), &"OrthrusLM".into(), &"bfloat16".into())
        );
        assert!(hf.join("model.safetensors.index.json").exists());
        for (i, ft) in FileType::ALL.into_iter().enumerate() {
            let path = dir.path().join(format!("{name}-{ft:?}.gguf"));
            let opts = orthrus_convert::Options {
                input: hf.clone(),
                output: path.clone(),
                file_type: ft,
                head_type: None,
                split: false,
                name: None,
            };
            orthrus_convert::convert(&opts, &mut |_, _| {}).unwrap();
            let file = orthrus_kernels::gguf::GgufFile::open(&path).unwrap();
            assert_eq!(file.tensor("output.weight").is_none(), tied, "{name}");
            drop(file);
            let model = Model::load(&path, &cpu_exact()).unwrap();
            let o = model.hparams.orthrus.unwrap();
            assert_eq!((o.block_size, o.mask_token), (32, 151669), "{name}");
            std::fs::remove_file(&path).unwrap();
            if i % 3 != config {
                continue;
            }
            let cache_ty = if ft == FileType::F32 {
                GgmlType::F32
            } else {
                GgmlType::F16
            };
            let p = GenerateParams {
                mode: Mode::Orthrus,
                max_tokens: 12,
                ignore_eos: true,
                ..Default::default()
            };
            let ar = run(
                &model,
                cache_ty,
                &PROMPT,
                &GenerateParams {
                    mode: Mode::Ar,
                    ..p.clone()
                },
            );
            let or = run(&model, cache_ty, &PROMPT, &p);
            assert_eq!(ar.tokens.len(), 12);
            assert_eq!(or.tokens, ar.tokens, "{name} {ft:?}");
        }
    }
}

#[test]
fn user_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = gguf(dir.path(), "tiny-tied-bf16", FileType::F32, false);
    let err = |r: Result<Model, orthrus_engine::EngineError>| r.err().unwrap().to_string();
    let e = err(Model::load(
        &path,
        &LoadOptions {
            device: Some("CUDA7".into()),
            ..Default::default()
        },
    ));
    assert!(e.contains("CUDA7") && e.contains("CPU"), "{e}");
    let e = err(Model::load(
        &path,
        &LoadOptions {
            n_gpu_layers: Some(4),
            ..cpu()
        },
    ));
    assert!(e.contains("-ngl 4") && e.contains("2 layers"), "{e}");
    // Not a Qwen3 file: a GGUF with another architecture.
    let llama = dir.path().join("llama.gguf");
    let meta = vec![(
        "general.architecture".to_string(),
        orthrus_kernels::gguf::GgufValue::String("llama".into()),
    )];
    orthrus_kernels::gguf::GgufWriter::create(&llama, &meta, &[])
        .unwrap()
        .finish()
        .unwrap();
    let e = err(Model::load(&llama, &cpu()));
    assert!(
        e.contains("neither Orthrus nor Qwen3") && e.contains("\"orthrus\""),
        "{e}"
    );
    let model = Model::load(&path, &cpu()).unwrap();
    let cache = KvCache::new(&model, 8, GgmlType::F32).unwrap();
    let mut s = Session::new(&model, &cache, 1, 512).unwrap();
    let e = generate(&mut s, &[1; 8], &GenerateParams::default(), &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("raise -c"), "{e}");
    let e = s
        .forward(View::Ar, &[200_000], 0, 1, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("200000"), "{e}");
    // Exact decoding needs the weights in ggml's plain layout; on an x86-64
    // CPU with AVX2, ggml repacks Q4_0 weights by default.
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        let (model, _) = trained_model_file(&trained_model_q4_0(dir.path()), &cpu());
        assert!(model.repacked);
        let cache = KvCache::new(&model, 8, GgmlType::F32).unwrap();
        let mut s = Session::new(&model, &cache, 1, 512).unwrap();
        let e = s.set_exact(true).unwrap_err().to_string();
        assert!(e.contains("exact") && e.contains("layout"), "{e}");
    }
}

/// Exact mode on a GPU multiplies whole blocks only where our batch-invariant
/// matmul takes every weight product: Q4_K, Q6_K or Q8_0, rows of whole
/// 256-value units. The trained model (Q8_0, width 256) is such a model; the
/// same checkpoint as F16 is not, nor a Q8_0 fixture 64 wide.
#[test]
fn our_matmul_takes_the_models_of_its_types_and_widths() {
    let (model, _) = trained_model();
    assert!(model.matmuls_batch_invariant());
    let dir = tempfile::tempdir().unwrap();
    let f16 = dir.path().join("tiny-orthrus-f16.gguf");
    let opts = orthrus_convert::Options {
        input: repo().join("models/tiny-orthrus/hf"),
        output: f16.clone(),
        file_type: FileType::F16,
        head_type: None,
        split: false,
        name: None,
    };
    orthrus_convert::convert(&opts, &mut |_, _| {}).unwrap();
    let narrow = gguf(dir.path(), FIXTURES[0], FileType::Q8_0, false);
    for path in [f16, narrow] {
        let m = Model::load(&path, &cpu()).unwrap();
        assert!(!m.matmuls_batch_invariant(), "{}", path.display());
    }
}

/// The graph's node order lets ggml-cuda fuse what it can (it fuses only
/// consecutive nodes): in every layer the K norm, RoPE and cache write
/// (RMS_NORM, MUL, ROPE, VIEW, SET_ROWS), and in a one-token pass of Q8_0
/// weights the two halves of the gate/up stack with their SwiGLU (MUL_MAT,
/// MUL_MAT, GLU); a block's pass, and an exact one, multiply the whole stack
/// (MUL_MAT, GLU).
#[test]
fn graphs_put_fusable_nodes_next_to_each_other() {
    use orthrus_engine::backend_layout::Attention;
    use orthrus_engine::graph::{self, Shape};
    let (model, _) = trained_model();
    let cache = KvCache::new(&model, 512, GgmlType::F16).unwrap();
    let count = |ops: &[String], pattern: &[&str]| {
        ops.windows(pattern.len())
            .filter(|w| w.iter().zip(pattern).all(|(a, b)| a == b))
            .count()
    };
    let n_layer = model.hparams.n_layer;
    // A step is a diffusion pass and a verify pass in one graph.
    for (view, n_tokens, step) in [
        (View::Ar, 1, false),
        (View::Ar, 16, false),
        (View::Diffusion, 16, false),
        (View::Diffusion, 16, true),
    ] {
        let passes = if step { 2 } else { 1 };
        let shape = Shape {
            view,
            step,
            n_tokens,
            n_kv: 256,
            n_out: n_tokens,
            logits: Logits::None,
            col_group: 0,
            attention: Attention::Fused,
            mask_on_device: false,
        };
        let g = graph::build(&model, &cache, shape);
        // Named as llama.cpp names them, so that graphs can be compared.
        for il in [0, n_layer - 1] {
            for what in [
                "attn_norm",
                "Qcur",
                "Kcur",
                "Vcur",
                "kqv_out",
                "ffn_inp",
                "ffn_out",
                "l_out",
            ] {
                let name = format!("{what}-{il}");
                assert!(g.has_tensor(&name), "no {name}");
            }
        }
        assert!(g.has_tensor("result_norm"));
        assert!(g.has_tensor(if step { "out_drafts" } else { "result_output" }));
        let ops = g.ops();
        let what = format!("{view:?} pass of {n_tokens}, step {step}");
        assert_eq!(
            count(&ops, &["RMS_NORM", "MUL", "ROPE", "VIEW", "SET_ROWS"]),
            passes * n_layer,
            "{what}: {ops:?}"
        );
        assert_eq!(count(&ops, &["GET_ROWS"]), passes, "{what}: {ops:?}");
        let (stack_apart, stack_whole) = if n_tokens == 1 {
            (n_layer, 0)
        } else {
            (0, passes * n_layer)
        };
        assert_eq!(
            count(&ops, &["MUL_MAT", "MUL_MAT", "GLU"]),
            stack_apart,
            "{what}: {ops:?}"
        );
        assert_eq!(
            count(&ops, &["MUL_MAT", "GLU"]) - stack_apart,
            stack_whole,
            "{what}: {ops:?}"
        );
    }
    // An exact one-token pass keeps the stack whole, as its verify pass does
    // (on a GPU our batch-invariant matmul's sums depend on a product's rows).
    let cache = KvCache::new(&model, 1024, GgmlType::F32).unwrap();
    let shape = Shape {
        view: View::Ar,
        step: false,
        n_tokens: 1,
        n_kv: orthrus_engine::kv_cache::SLOT_ALIGN,
        n_out: 1,
        logits: Logits::None,
        col_group: 0,
        attention: Attention::Exact,
        mask_on_device: false,
    };
    let ops = graph::build(&model, &cache, shape).ops();
    assert_eq!(
        count(&ops, &["MUL_MAT", "MUL_MAT", "GLU"]),
        0,
        "exact: {ops:?}"
    );
    assert_eq!(count(&ops, &["MUL_MAT", "GLU"]), n_layer, "exact: {ops:?}");
}

/// In Q4_K_M files some layers' V is Q6_K while Q and K are Q4_K: on a GPU
/// the attention norm's kernel then quantizes its result for the V product
/// too, found among the 32 nodes after the Q and K product
/// (`kernels/cuda/ggml-hook.cu`, `prequantized_for`). The V product must stay
/// that close to the norm.
#[test]
fn a_v_product_of_its_own_type_follows_the_attention_norm_closely() {
    use orthrus_engine::backend_layout::Attention;
    use orthrus_engine::graph::{self, Shape};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q4_k_m.gguf");
    let opts = orthrus_convert::Options {
        input: published(dir.path(), "Orthrus-Qwen3-1.7B"),
        output: path.clone(),
        file_type: FileType::Q4_K_M,
        head_type: None,
        split: false,
        name: None,
    };
    orthrus_convert::convert(&opts, &mut |_, _| {}).unwrap();
    let model = Model::load(&path, &cpu()).unwrap();
    let cache = KvCache::new(&model, 512, GgmlType::F16).unwrap();
    let mut apart = 0;
    for view in [View::Ar, View::Diffusion] {
        let shape = Shape {
            view,
            step: false,
            n_tokens: 16,
            n_kv: 256,
            n_out: 16,
            logits: Logits::None,
            col_group: 0,
            attention: Attention::Fused,
            mask_on_device: false,
        };
        let nodes = graph::build(&model, &cache, shape).nodes();
        let at = |name: &str| nodes.iter().position(|(_, n)| n == name);
        for il in 0..model.hparams.n_layer {
            // Vcur is a view of the stacked product, or a product of its own.
            let v = at(&format!("Vcur-{il}")).expect("named");
            if nodes[v].0 != "MUL_MAT" {
                continue;
            }
            apart += 1;
            let norm = at(&format!("attn_norm-{il}")).expect("named");
            assert_eq!(nodes[norm - 1].0, "RMS_NORM", "{view:?} layer {il}");
            assert_eq!(nodes[norm + 1].0, "MUL_MAT", "{view:?} layer {il}");
            // The norm is node i, the Q and K product i + 2, V from i + 3 to i + 34.
            assert!(
                v > norm + 1 && v <= norm + 33,
                "{view:?} layer {il}: the norm at {norm}, V at {v}"
            );
        }
    }
    // The 2-layer model's last layer gets more bits (Q6_K V) in both views.
    assert_eq!(apart, 2);
}

/// Prompts of many lengths (a graph each) between two generations do not
/// push out the graphs that decoding cycles through: the second generation
/// builds only what its prompt does.
#[test]
fn prompts_do_not_push_out_decoding_graphs() {
    let (model, prompts) = trained_model();
    let cache = KvCache::new(&model, 1024, GgmlType::F16).unwrap();
    let mut s = Session::new(&model, &cache, 1, 512).unwrap();
    let p = GenerateParams {
        mode: Mode::Orthrus,
        max_tokens: 48,
        ignore_eos: true,
        draft_max: Some(7),
        ..Default::default()
    };
    // In one KV window: a graph of the next would be built the second time too.
    assert!(prompts[0].len() + 48 + 8 <= 256);
    let first = generate(&mut s, &prompts[0], &p, &mut |_| true).unwrap();
    let ids = |len: usize| -> Vec<u32> {
        prompts
            .iter()
            .flatten()
            .copied()
            .cycle()
            .take(len)
            .collect()
    };
    // What a prompt of a new length builds.
    let built = s.graphs_built();
    s.prefill(&ids(41), 0, false).unwrap();
    let one_prompt = s.graphs_built() - built;
    assert!(one_prompt > 0);
    for len in 1..=40 {
        s.prefill(&ids(len), 0, false).unwrap();
    }
    let built = s.graphs_built();
    let again = generate(&mut s, &prompts[0], &p, &mut |_| true).unwrap();
    assert_eq!(first.tokens, again.tokens);
    let rebuilt = s.graphs_built() - built;
    assert!(
        rebuilt <= one_prompt,
        "{rebuilt} graphs built again, {one_prompt} for a new prompt"
    );
}
