//! A chat template rendered in a child process, so that a hostile template
//! can use neither the caller's memory nor its time.
//!
//! [`crate::template`] bounds a template's instructions and output, but
//! minijinja has no bound on the strings a template builds in between: a
//! loop of twenty `{% set ns.s = ns.s ~ ns.s %}` makes 1 KiB a GiB, and a
//! failed allocation aborts the process. Here the template runs in a copy
//! of the calling binary (started with [`WORKER_ARG`]), which is killed
//! when its resident memory or its time passes [`Limits`]; the caller gets
//! an error and the next render starts a new child.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::template::{ChatTemplate, Message, RenderChat, TemplateError};

/// The first argument that makes a binary serve renders ([`serve`]) rather
/// than run as itself. Each binary that uses [`TemplateProcess`] with its
/// own executable checks for it first thing in `main`.
pub const WORKER_ARG: &str = "--chat-template-worker";

/// What one render may use before its child is killed.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Resident memory of the child, in bytes (checked where the OS tells
    /// it: Linux's /proc). A child that cannot allocate dies on its own.
    pub memory: u64,
    pub time: Duration,
}

impl Default for Limits {
    /// Memory for a prompt at the output bound several times over, and
    /// time well beyond what the instruction bound lets a template run.
    fn default() -> Limits {
        Limits {
            memory: 512 << 20,
            time: Duration::from_secs(10),
        }
    }
}

/// How often a running render's memory is looked at. A template that
/// doubles a string needs ~100 ms per doubling near the limit, so it is
/// stopped within one doubling of it.
const POLL: Duration = Duration::from_millis(2);

#[derive(Serialize, Deserialize)]
struct Request {
    messages: Vec<Message>,
    add_generation_prompt: bool,
    enable_thinking: bool,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    Text(String),
    Error(String),
}

/// A template whose renders run in a child process (see the module).
pub struct TemplateProcess {
    source: String,
    exe: PathBuf,
    limits: Limits,
    child: Mutex<Option<Worker>>,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<String>,
}

impl TemplateProcess {
    /// `source` compiled here (so a broken template is refused now) and a
    /// child started from `exe`, a binary that calls [`serve`] when given
    /// [`WORKER_ARG`].
    pub fn new(source: &str, exe: PathBuf, limits: Limits) -> Result<Self, TemplateError> {
        ChatTemplate::new(source)?;
        let process = TemplateProcess {
            source: source.to_string(),
            exe,
            limits,
            child: Mutex::new(None),
        };
        *process.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(process.start()?);
        Ok(process)
    }

    fn start(&self) -> Result<Worker, TemplateError> {
        let failed = |e: std::io::Error| {
            TemplateError(format!(
                "cannot start the template renderer {}: {e}",
                self.exe.display()
            ))
        };
        let mut child = Command::new(&self.exe)
            .arg(WORKER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // An allocation failure's message would only confuse a log.
            .stderr(Stdio::null())
            .spawn()
            .map_err(failed)?;
        let (mut stdin, stdout) = match (child.stdin.take(), child.stdout.take()) {
            (Some(i), Some(o)) => (i, o),
            _ => return Err(failed(std::io::Error::other("no pipes"))),
        };
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if line.ok().is_none_or(|l| tx.send(l).is_err()) {
                    break;
                }
            }
        });
        let first = serde_json::to_string(&self.source).map_err(std::io::Error::other);
        first.and_then(|s| writeln!(stdin, "{s}")).map_err(failed)?;
        Ok(Worker {
            child,
            stdin,
            replies,
        })
    }

    fn stop(worker: &mut Option<Worker>) {
        if let Some(mut w) = worker.take() {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
    }
}

impl RenderChat for TemplateProcess {
    fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        enable_thinking: bool,
    ) -> Result<String, TemplateError> {
        let request = serde_json::to_string(&Request {
            messages: messages.to_vec(),
            add_generation_prompt,
            enable_thinking,
        })
        .map_err(|e| TemplateError(e.to_string()))?;
        // One render at a time: a render takes well under a millisecond.
        let mut slot = self.child.lock().unwrap_or_else(|p| p.into_inner());
        // A child that died since (killed, or out of memory) is replaced.
        let sent = |w: &mut Worker| writeln!(w.stdin, "{request}").and_then(|_| w.stdin.flush());
        let ok = slot.as_mut().is_some_and(|w| sent(w).is_ok());
        if !ok {
            Self::stop(&mut slot);
            let mut w = self.start()?;
            sent(&mut w).map_err(|e| TemplateError(format!("the template renderer: {e}")))?;
            *slot = Some(w);
        }
        let worker = slot.as_mut().expect("started above");
        let start = Instant::now();
        let failure = loop {
            match worker.replies.recv_timeout(POLL) {
                Ok(line) => {
                    return match serde_json::from_str(&line) {
                        Ok(Reply::Text(t)) => Ok(t),
                        Ok(Reply::Error(e)) => Err(TemplateError(e)),
                        Err(e) => Err(TemplateError(format!("the template renderer: {e}"))),
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = worker.child.wait().map(|s| s.to_string());
                    break format!(
                        "the template's renderer died ({}): out of memory, or of stack (a value that holds itself)",
                        status.unwrap_or_else(|e| e.to_string())
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if start.elapsed() > self.limits.time {
                break format!("the template ran over {:?}", self.limits.time);
            }
            if resident_bytes(worker.child.id()).is_some_and(|b| b > self.limits.memory) {
                break format!(
                    "the template used over {} MiB of memory",
                    self.limits.memory >> 20
                );
            }
        };
        Self::stop(&mut slot);
        Err(TemplateError(failure))
    }
}

impl Drop for TemplateProcess {
    fn drop(&mut self) {
        Self::stop(self.child.get_mut().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A process's resident memory, where the OS shows it (Linux).
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// The child's side: the template source (a JSON string) on the first line
/// of stdin, then one request per line, each answered with one line.
pub fn serve() -> ExitCode {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let Some(Ok(first)) = lines.next() else {
        return ExitCode::FAILURE;
    };
    let template = serde_json::from_str::<String>(&first)
        .map_err(|e| TemplateError(e.to_string()))
        .and_then(|s| ChatTemplate::new(&s));
    let mut out = std::io::stdout().lock();
    for line in lines {
        let Ok(line) = line else {
            return ExitCode::FAILURE;
        };
        let reply = match (&template, serde_json::from_str::<Request>(&line)) {
            (Ok(t), Ok(r)) => {
                match t.render(&r.messages, r.add_generation_prompt, r.enable_thinking) {
                    Ok(text) => Reply::Text(text),
                    Err(e) => Reply::Error(e.0),
                }
            }
            (Err(e), _) => Reply::Error(e.0.clone()),
            (_, Err(e)) => Reply::Error(format!("a malformed request: {e}")),
        };
        let written = serde_json::to_string(&reply)
            .map_err(std::io::Error::other)
            .and_then(|s| writeln!(out, "{s}"))
            .and_then(|_| out.flush());
        if written.is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
