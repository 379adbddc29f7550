//! `orthrus-server`: serve one Orthrus (or Qwen3) GGUF model over HTTP.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use orthrus_engine::options::{llama_style_args, ModelArgs};
use orthrus_engine::template_process;
use orthrus_server::guard::Limits;
use orthrus_server::http::Server;
use orthrus_server::metrics::Metrics;
use orthrus_server::worker;

#[derive(Parser)]
#[command(
    name = "orthrus-server",
    version,
    about = "An OpenAI-compatible (and llama-server-style) HTTP endpoint for one Orthrus model"
)]
struct Cli {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long = "api-key")]
    api_key: Option<String>,
    /// The model name clients use (default: the file name without .gguf).
    #[arg(long)]
    alias: Option<String>,
    /// Requests that may wait for the model; beyond that the answer is 503.
    #[arg(long = "queue-size", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=65536))]
    queue_size: u32,
    /// Largest request body in bytes (larger ones get 413).
    #[arg(long = "max-body", default_value_t = 4 << 20)]
    max_body: usize,
    #[command(flatten)]
    guard: GuardArgs,
}

/// Per-client bounds and request policy.
#[derive(clap::Args)]
struct GuardArgs {
    /// Seconds a connection has to send a whole request head, from its
    /// opening or its previous answer; idle keep-alive connections close
    /// after it too.
    #[arg(long = "header-timeout", default_value_t = 10.0, value_parser = seconds)]
    header_timeout: f64,
    /// Seconds a request body has to arrive in whole (else 408).
    #[arg(long = "body-timeout", default_value_t = 30.0, value_parser = seconds)]
    body_timeout: f64,
    /// Seconds a client may read nothing of its answer before it is dropped.
    #[arg(long = "send-timeout", default_value_t = 60.0, value_parser = seconds)]
    send_timeout: f64,
    /// Open connections at most; more are answered 503 and closed.
    #[arg(long = "max-connections", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_connections: u32,
    /// Requests tokenized or templated at once (on their own threads).
    #[arg(long = "cpu-threads", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    cpu_threads: u32,
    /// Allow browsers on this origin (`https://app.example`, or `*` for any)
    /// to call the API; without it no CORS headers are sent.
    #[arg(long)]
    cors: Option<String>,
    /// Read special-token strings (`<|im_start|>`) in chat message content
    /// as special tokens, as the raw prompt would; by default they are text,
    /// so message content cannot open a turn of another role.
    #[arg(long = "parse-special")]
    parse_special: bool,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86400.0 => Ok(v),
        _ => Err(format!(
            "{s:?}: give seconds, more than 0 and at most 86400"
        )),
    }
}

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == template_process::WORKER_ARG)
    {
        return template_process::serve();
    }
    let cli = Cli::parse_from(llama_style_args());
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orthrus-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let addr: SocketAddr = format!("{}:{}", cli.host, cli.port)
        .parse()
        .or_else(|_| {
            use std::net::ToSocketAddrs;
            (cli.host.as_str(), cli.port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| std::io::Error::other("no address"))
        })
        .with_context(|| format!("--host {}: not an address to listen on", cli.host))?;
    let file_name = cli
        .model
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let alias = cli
        .alias
        .clone()
        .unwrap_or_else(|| file_name.trim_end_matches(".gguf").to_string());
    let metrics = Arc::new(Metrics::default());
    let (info, jobs, stopped) =
        worker::start(cli.model.clone(), cli.queue_size as usize, metrics.clone())?;
    let g = &cli.guard;
    let limits = Limits {
        header_timeout: Duration::from_secs_f64(g.header_timeout),
        body_timeout: Duration::from_secs_f64(g.body_timeout),
        send_timeout: Duration::from_secs_f64(g.send_timeout),
        max_connections: g.max_connections as usize,
        cpu_threads: g.cpu_threads as usize,
        cors: g.cors.clone(),
        ..Limits::new(cli.max_body)
    };
    let server = Arc::new(Server::new(
        info,
        alias,
        file_name,
        cli.api_key,
        jobs,
        metrics,
        limits,
        g.parse_special,
        // Chat templates render in this binary, started as their worker.
        std::env::current_exe().context("finding this binary to render chat templates")?,
    )?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let i = &server.info;
        eprintln!(
            "orthrus-server: model {:?} ({} layers, {}, context {}, {} cache{}) on {}; listening on http://{local}",
            server.alias,
            i.hparams.n_layer,
            if i.is_orthrus { "orthrus" } else { "ar only" },
            i.n_ctx,
            i.cache_type,
            if i.exact { ", exact" } else { "" },
            i.devices.join("+"),
        );
        tokio::select! {
            r = server.serve(listener) => r.context("serving"),
            _ = shutdown() => {
                eprintln!("orthrus-server: shutting down");
                Ok(())
            }
        }
    });
    // The model thread frees its GPU buffers once the connections' tasks,
    // which hold the jobs' sender, are gone; it must finish before the
    // process exits, or the CUDA runtime, torn down at exit, fails those
    // frees and ggml aborts.
    rt.shutdown_timeout(Duration::from_secs(5));
    if stopped.wait(Duration::from_secs(30)) {
        eprintln!("orthrus-server: stopped");
    } else {
        eprintln!("orthrus-server: the model thread did not stop within 30 s; exiting without it");
    }
    served
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        let argv = ["orthrus-server", "-m", "m.gguf"].iter().chain(args);
        Cli::try_parse_from(argv).map_err(|e| e.to_string())
    }

    #[test]
    fn counts_beyond_their_range_are_refused() {
        // A queue of usize::MAX reached tokio's channel assert (a panic).
        for bad in ["0", "65537", "18446744073709551615"] {
            let e = parse(&["--queue-size", bad]).err().unwrap();
            assert!(e.contains("--queue-size"), "{bad}: {e}");
        }
        assert_eq!(parse(&["--queue-size", "1"]).unwrap().queue_size, 1);
        for (arg, bad) in [
            ("--max-connections", "0"),
            ("--cpu-threads", "100000"),
            ("--body-timeout", "nan"),
        ] {
            let e = parse(&[arg, bad]).err().unwrap();
            assert!(e.contains(arg), "{arg} {bad}: {e}");
        }
    }
}
