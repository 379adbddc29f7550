//! How many drafts an Orthrus model's diffusion view gets right at every
//! position of its own greedy continuations: for each prompt of a prompts
//! file, the greedy AR continuation of N tokens and, at each of its
//! positions n, how many of the D drafts of a block starting there equal
//! the continuation's next tokens. A step of d <= D drafts at n then accepts
//! min(that, d) (greedy decoding commits the AR continuation whatever the
//! draft lengths), which lets auto mode's replays
//! (engine/src/draft_policy.rs) price any sequence of draft lengths.
//!
//! Beside it, the AR view's probability of its own greedy token at each
//! position (`confidence_at`): how sure the model was of the token a step
//! at n starts from, a signal a draft policy could read before drafting.
//!
//! `acceptance_oracle MODEL.gguf PROMPTS.json [N] [D] [CONTINUATIONS.json]`
//! prints JSON. CONTINUATIONS.json (a JSON array of token-id arrays, one
//! per prompt, such as a mode's entry under "tokens" in `bench
//! --steps-out`) scores those continuations instead of this machine's own:
//! greedy text parts between devices at near-ties, so an oracle for a GPU
//! run is computed on the text that run wrote.

use orthrus_engine::{generate, GenerateParams, KvCache, LoadOptions, Mode, Model, Session, View};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: acceptance_oracle MODEL.gguf PROMPTS.json [N] [D] [CONTINUATIONS.json]");
        std::process::exit(2);
    }
    let n_gen: usize = args.get(3).map_or(256, |s| s.parse().expect("N: a number"));
    // The device ORTHRUS_DEVICE names (CPU, CUDA0, ...), else the first GPU.
    let opts = LoadOptions {
        device: std::env::var("ORTHRUS_DEVICE").ok(),
        ..Default::default()
    };
    let model = Model::load(args[1].as_ref(), &opts).expect("model");
    let block = model.hparams.orthrus.expect("an Orthrus model").block_size;
    let d_max: usize = args
        .get(4)
        .map_or(block - 1, |s| s.parse().expect("D: a number"));
    let mask = model.hparams.orthrus.unwrap().mask_token;
    let tok = model.tokenizer().expect("tokenizer");
    let text = std::fs::read_to_string(&args[2]).expect("prompts file");
    let prompts: Vec<String> = serde_json::from_str(&text).expect("a JSON array of strings");
    let given: Option<Vec<Vec<u32>>> = args.get(5).map(|f| {
        let text = std::fs::read_to_string(f).expect("continuations file");
        let seqs: Vec<Vec<u32>> =
            serde_json::from_str(&text).expect("a JSON array of token-id arrays");
        assert_eq!(seqs.len(), prompts.len(), "one continuation per prompt");
        seqs
    });
    let cache = KvCache::new(&model, 4096, orthrus_kernels::GgmlType::F16).expect("cache");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut session = Session::new(&model, &cache, threads, 512).expect("session");
    let mut out = Vec::new();
    let mut confidences = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let prompt = tok.encode(p).expect("tokenize");
        let seq = match &given {
            // The AR view over the prompt and the continuation fills the
            // cache as generating it would have.
            Some(seqs) => {
                let seq = seqs[i].clone();
                let all: Vec<u32> = prompt.iter().chain(&seq).copied().collect();
                session.prefill(&all, 0, false).expect("AR pass");
                seq
            }
            None => {
                let params = GenerateParams {
                    mode: Mode::Ar,
                    max_tokens: n_gen,
                    ignore_eos: true,
                    ..Default::default()
                };
                generate(&mut session, &prompt, &params, &mut |_| true)
                    .expect("generate")
                    .tokens
            }
        };
        // The cache holds the prompt and seq[..n - 1]; a block at n reads
        // the slots before it and writes its own as scratch, so from the
        // last position back every block finds its context intact.
        let mut accepted = vec![0usize; seq.len()];
        let mut confidence = vec![0f32; seq.len()];
        for n in (0..seq.len()).rev() {
            // The pass that chose seq[n] (the prompt's last token's, for n =
            // 0) again: the same K/V as in the cache, and its logits.
            let at = prompt.len() + n - 1;
            let from = if n == 0 {
                prompt[prompt.len() - 1]
            } else {
                seq[n - 1]
            };
            let ar = session
                .forward(View::Ar, &[from], at, 1, true)
                .expect("AR pass");
            let top = ar.logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let sum: f32 = ar.logits.iter().map(|&l| (l - top).exp()).sum();
            confidence[n] = 1.0 / sum;
            let d = d_max.min(seq.len() - 1 - n);
            if d == 0 {
                continue;
            }
            let mut blk = vec![mask; d + 1];
            blk[0] = seq[n];
            let pass = session
                .forward(View::Diffusion, &blk, prompt.len() + n, d + 1, false)
                .expect("diffusion pass");
            accepted[n] = pass.argmax[..d]
                .iter()
                .zip(&seq[n + 1..])
                .take_while(|(a, b)| a == b)
                .count();
        }
        eprintln!(
            "prompt of {} tokens: mean {:.2} drafts right",
            prompt.len(),
            accepted.iter().sum::<usize>() as f64 / accepted.len() as f64
        );
        out.push(accepted);
        confidences.push(confidence);
    }
    let what = format!(
        "Per prompt of {}, at each position n of the greedy continuation ({n_gen} tokens), the drafts of a block of {} starting there that equal the continuation (acceptance_oracle).",
        args[2],
        d_max + 1
    );
    println!(
        "{}",
        serde_json::json!({ "what": what, "accepted_at": out, "confidence_at": confidences })
    );
}
