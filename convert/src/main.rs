#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use orthrus_convert::convert::{convert, FileSummary, Options};
use orthrus_convert::FileType;
use orthrus_kernels::gguf::GgufFile;
use orthrus_kernels::GgmlType;

/// Convert a Hugging Face Orthrus (or plain Qwen3) checkpoint to GGUF.
#[derive(Parser, Debug)]
#[command(name = "orthrus-convert", version, about)]
struct Cli {
    /// Checkpoint directory (config.json, safetensors, tokenizer.json).
    #[arg(required_unless_present = "info", conflicts_with = "info")]
    input: Option<PathBuf>,
    /// Output file [default: <input>/<name>-<type>.gguf].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// File type: f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k.
    #[arg(short = 't', long = "type", default_value = "f16", value_parser = parse_file_type)]
    file_type: FileType,
    /// Type of the diffusion view's matrices [default: as the attention tensors].
    #[arg(long, value_parser = parse_ggml_type)]
    head_type: Option<GgmlType>,
    /// Write a plain Qwen3 base file (loads in llama.cpp) and a separate <output>.head.gguf.
    #[arg(long)]
    split: bool,
    /// general.name [default: the checkpoint directory's name].
    #[arg(long)]
    name: Option<String>,
    /// Print a GGUF file's metadata and tensor table, then exit.
    #[arg(long, value_name = "FILE.gguf")]
    info: Option<PathBuf>,
}

fn parse_file_type(s: &str) -> Result<FileType, String> {
    s.parse()
}

fn parse_ggml_type(s: &str) -> Result<GgmlType, String> {
    const HEAD_TYPES: [GgmlType; 9] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q5_0,
    ];
    GgmlType::from_name(s)
        .filter(|t| HEAD_TYPES.contains(t))
        .ok_or_else(|| {
            let names: Vec<_> = HEAD_TYPES.iter().map(|t| t.name()).collect();
            format!(
                "unknown head type {s:?}; expected one of {}",
                names.join(", ")
            )
        })
}

/// Ctrl-C and SIGTERM stop the conversion at its next chunk, so the
/// temporary output is removed instead of left behind.
fn stop_cleanly_on_signals() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(
            sig,
            std::sync::Arc::clone(orthrus_convert::convert::interrupt_flag()),
        )?;
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = stop_cleanly_on_signals() {
        eprintln!("orthrus-convert: cannot watch for Ctrl-C ({e}); an interrupted run may leave a temporary file");
    }
    let result = match &cli.info {
        Some(path) => print_info(path),
        None => run(&cli),
    };
    if let Err(e) = result {
        eprintln!("orthrus-convert: {e:#}");
        let interrupted = matches!(
            e.downcast_ref::<orthrus_convert::ConvertError>(),
            Some(orthrus_convert::ConvertError::Interrupted)
        );
        std::process::exit(if interrupted { 130 } else { 1 });
    }
}

fn run(cli: &Cli) -> Result<()> {
    let input = cli
        .input
        .clone()
        .expect("clap requires input without --info");
    if !input.is_dir() {
        bail!("{}: not a checkpoint directory", input.display());
    }
    let output = match &cli.output {
        Some(o) => o.clone(),
        None => {
            let name = std::fs::canonicalize(&input)?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into());
            input.join(format!(
                "{name}-{}.gguf",
                cli.file_type.name().to_uppercase()
            ))
        }
    };
    if output.is_dir() {
        bail!(
            "{}: output is a directory; give a file name",
            output.display()
        );
    }
    let opts = Options {
        input,
        output,
        file_type: cli.file_type,
        head_type: cli.head_type,
        split: cli.split,
        name: cli.name.clone(),
    };
    let start = Instant::now();
    let mut bar = ProgressBar::new(std::io::stderr().is_terminal());
    let summaries = convert(&opts, &mut |done, total| bar.update(done, total))?;
    bar.clear();
    for s in &summaries {
        print_summary(s);
    }
    eprintln!("done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn print_summary(s: &FileSummary) {
    let types: Vec<String> = s.types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    eprintln!(
        "wrote {} ({:?}): {} tensors [{}], {}, {:.2} bits per weight",
        s.path.display(),
        s.role,
        s.types.values().sum::<usize>(),
        types.join(", "),
        human_bytes(s.bytes),
        s.bits_per_weight()
    );
}

fn print_info(path: &Path) -> Result<()> {
    let file = GgufFile::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: GGUF v{}, {}, alignment {}",
        path.display(),
        file.version(),
        human_bytes(file.file_size()),
        file.alignment()
    )?;
    writeln!(out, "\n{} metadata keys:", file.metadata().len())?;
    for (k, v) in file.metadata() {
        writeln!(out, "  {k:<44} = {v}")?;
    }
    writeln!(out, "\n{} tensors:", file.tensors().len())?;
    writeln!(
        out,
        "  {:<36} {:<7} {:<22} {:>12} {:>12}",
        "name", "type", "shape", "offset", "bytes"
    )?;
    for t in file.tensors() {
        let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
        writeln!(
            out,
            "  {:<36} {:<7} {:<22} {:>12} {:>12}",
            t.name,
            t.ty.name(),
            dims.join(" x "),
            t.offset,
            t.size
        )?;
    }
    let params: u64 = file.tensors().iter().map(|t| t.n_elements()).sum();
    let bytes: u64 = file.tensors().iter().map(|t| t.size).sum();
    writeln!(
        out,
        "\n{params} parameters, {}, {:.2} bits per weight",
        human_bytes(bytes),
        bytes as f64 * 8.0 / params.max(1) as f64
    )?;
    Ok(())
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// A one-line bar on stderr: bytes done, total, rate. Silent when stderr is not a terminal.
struct ProgressBar {
    enabled: bool,
    start: Instant,
    last: Option<Instant>,
}

impl ProgressBar {
    fn new(enabled: bool) -> Self {
        ProgressBar {
            enabled,
            start: Instant::now(),
            last: None,
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        let now = Instant::now();
        if !self.enabled
            || self
                .last
                .is_some_and(|l| now.duration_since(l).as_millis() < 100 && done < total)
        {
            return;
        }
        self.last = Some(now);
        const WIDTH: usize = 30;
        let frac = if total == 0 {
            1.0
        } else {
            done as f64 / total as f64
        };
        let filled = (frac * WIDTH as f64) as usize;
        let rate = done as f64 / now.duration_since(self.start).as_secs_f64().max(1e-3);
        eprint!(
            "\r[{}{}] {:>5.1}%  {} / {}  {}/s   ",
            "=".repeat(filled),
            " ".repeat(WIDTH - filled),
            frac * 100.0,
            human_bytes(done),
            human_bytes(total),
            human_bytes(rate as u64)
        );
    }

    fn clear(&self) {
        if self.enabled {
            eprint!("\r{}\r", " ".repeat(90));
        }
    }
}
