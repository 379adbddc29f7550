//! The HTTP side: routing, the API key, body limits, JSON errors, and
//! server-sent events, on hyper 1.x.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN,
    VARY,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use orthrus_engine::chat::{encode_chat, TemplateProcess};
use orthrus_engine::tokenizer::Tokenizer;
use orthrus_engine::EngineError;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::api::{
    engine_failure, ChatRequest, CompletionRequest, DetokenizeRequest, Endpoint, Prompt, Reply,
    Settings, TokenizeRequest,
};
use crate::error::ApiError;
use crate::guard::{
    bearer, cors_origin, is_json, same_key, unauthorized, unsupported_media_type, Gates, Limits,
    SendDeadline,
};
use crate::metrics::Metrics;
use crate::worker::{Event, Job, ModelInfo, Outcome};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Everything a request handler needs; shared by all connections.
pub struct Server {
    pub info: ModelInfo,
    /// The chat template, or why it cannot be used (only chat requests fail).
    pub template: Option<Result<Arc<TemplateProcess>, String>>,
    /// The tokenizer for chat message content, which reads special-token
    /// strings as text; `None` with `--parse-special`.
    text_tokenizer: Option<Arc<Tokenizer>>,
    /// The model name clients use (`model` in requests must be this or the file name).
    pub alias: String,
    pub file_name: String,
    pub api_key: Option<String>,
    pub jobs: mpsc::Sender<Job>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    gates: Gates,
    pub started: u64,
    requests: AtomicU64,
}

type Handled = Result<(Response<Body>, String), ApiError>;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn json_response(v: &Value) -> Response<Body> {
    full(StatusCode::OK, "application/json", v.to_string())
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = full(e.status, "application/json", e.body().to_string());
    if let Some((name, value)) = &e.header {
        if let Ok(v) = HeaderValue::from_str(value) {
            r.headers_mut().insert(*name, v);
        }
    }
    r
}

/// The answer to a connection over `--max-connections`.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 113\r\n\r\n{\"error\":{\"message\":\"too many open connections; retry later\",\"type\":\"server_busy\",\"code\":\"too_many_connections\"}}";

/// The answer to a CORS preflight (`OPTIONS`) when `--cors` is set; it
/// allows the request only if the origin is the one allowed.
fn preflight(allow_origin: Option<&str>) -> Response<Body> {
    let mut r = full(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
    if allow_origin.is_some() {
        let h = r.headers_mut();
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    r
}

/// Bodies up to this size are parsed on the async thread.
const INLINE_PARSE: usize = 64 << 10;

/// Paths that answer without the API key.
const PUBLIC: [&str; 2] = ["/health", "/v1/health"];

impl Server {
    /// `template_worker` is a binary that serves chat template renders when
    /// started with `template_process::WORKER_ARG`: the server's own.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        info: ModelInfo,
        alias: String,
        file_name: String,
        api_key: Option<String>,
        jobs: mpsc::Sender<Job>,
        metrics: Arc<Metrics>,
        limits: Limits,
        parse_special: bool,
        template_worker: std::path::PathBuf,
    ) -> anyhow::Result<Server> {
        let template = info.chat_template.as_deref().map(|t| {
            let limits = Default::default();
            TemplateProcess::new(t, template_worker, limits)
                .map(Arc::new)
                .map_err(|e| {
                    eprintln!("orthrus-server: {e}; chat requests will be refused");
                    e.to_string()
                })
        });
        let text_tokenizer = (!parse_special).then(|| Arc::new(info.tokenizer.text_only()));
        Ok(Server {
            info,
            template,
            text_tokenizer,
            alias,
            file_name,
            api_key,
            jobs,
            metrics,
            gates: Gates::new(&limits),
            limits,
            started: unix_now(),
            requests: AtomicU64::new(0),
        })
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        let mut refused_note = Instant::now() - Duration::from_secs(60);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                // Out of file descriptors and the like: wait, do not die.
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.gates.connections.clone().try_acquire_owned() else {
                // Over the cap: a short answer if the socket takes it now, then close.
                let _ = stream.try_write(TOO_MANY_CONNECTIONS);
                if refused_note.elapsed() > Duration::from_secs(10) {
                    refused_note = Instant::now();
                    eprintln!(
                        "connections: {} open, the most --max-connections allows; refusing more",
                        self.limits.max_connections
                    );
                }
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let io = SendDeadline::new(stream, server.limits.send_timeout);
                let header_timeout = server.limits.header_timeout;
                let svc = service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(peer, req).await) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(io), svc)
                    .await;
            });
        }
    }

    /// Answers one request and logs one line for it.
    pub async fn handle(&self, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let origin = req
            .headers()
            .get(ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let allow_origin = cors_origin(self.limits.cors.as_deref(), origin.as_deref());
        let (mut resp, note) = if method == Method::OPTIONS && self.limits.cors.is_some() {
            (preflight(allow_origin), String::new())
        } else {
            match self.route(req).await {
                Ok(r) => r,
                Err(e) => (error_response(&e), e.message.clone()),
            }
        };
        if let Some(o) = allow_origin.and_then(|o| HeaderValue::from_str(o).ok()) {
            let h = resp.headers_mut();
            h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.insert(VARY, HeaderValue::from_static("origin"));
        }
        let status = resp.status().as_u16();
        self.metrics.response(status);
        eprintln!(
            "request: {method} {path} {peer} {status} {:.1} ms {note}",
            start.elapsed().as_secs_f64() * 1000.0
        );
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> Handled {
        let path = req.uri().path().to_string();
        // Before anything else, so that without the key every route, known
        // or not, answers the same 401.
        if !PUBLIC.contains(&path.as_str()) {
            self.authorize(&req)?;
        }
        let allowed = match path.as_str() {
            "/health" | "/v1/health" | "/metrics" | "/models" | "/v1/models" => Method::GET,
            "/v1/chat/completions"
            | "/chat/completions"
            | "/v1/completions"
            | "/completions"
            | "/completion"
            | "/tokenize"
            | "/detokenize" => Method::POST,
            _ => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no route {path}"),
                ))
            }
        };
        if req.method() != allowed {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{path} takes {allowed}, not {}", req.method()),
            )
            .with_header("allow", allowed.as_str()));
        }
        if allowed == Method::POST && !is_json(req.headers()) {
            return Err(unsupported_media_type(req.headers()));
        }
        let ok = |v: Value| Ok((json_response(&v), String::new()));
        match path.as_str() {
            "/health" | "/v1/health" => {
                if self.jobs.is_closed() {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "model_unavailable",
                        "the model thread has stopped",
                    ));
                }
                ok(json!({ "status": "ok" }))
            }
            "/metrics" => Ok((
                full(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                ),
                String::new(),
            )),
            "/models" | "/v1/models" => ok(self.models()),
            "/tokenize" => {
                let r: TokenizeRequest = self.json(req).await?;
                ok(self.tokenize(r).await?)
            }
            "/detokenize" => {
                let r: DetokenizeRequest = self.json(req).await?;
                ok(self.detokenize(r).await?)
            }
            "/v1/chat/completions" | "/chat/completions" => {
                let r: ChatRequest = self.json(req).await?;
                self.chat(r).await
            }
            "/completion" => {
                let r: CompletionRequest = self.json(req).await?;
                self.completion(r, Endpoint::Native).await
            }
            _ => {
                let r: CompletionRequest = self.json(req).await?;
                self.completion(r, Endpoint::Completions).await
            }
        }
    }

    fn authorize(&self, req: &Request<Incoming>) -> Result<(), ApiError> {
        let Some(key) = &self.api_key else {
            return Ok(());
        };
        match bearer(req.headers()) {
            Some(given) if same_key(given, key.as_bytes()) => Ok(()),
            _ => Err(unauthorized()),
        }
    }

    /// The body as JSON of type `T`: at most `max_body` bytes, read within
    /// the body timeout, and held within the server's body budget.
    async fn json<T: DeserializeOwned + Send + 'static>(
        &self,
        req: Request<Incoming>,
    ) -> Result<T, ApiError> {
        let max = self.limits.max_body;
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!("the request body is over {max} bytes"),
            )
            // The rest of the body is not read: the connection cannot go on.
            .with_header("connection", "close")
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = req.into_body();
        if declared.is_some_and(|n| n > max as u64) {
            // Answered at once; the body is read and dropped for a short
            // while so that a client still sending reads the 413 rather
            // than a reset connection.
            tokio::spawn(linger(body, max));
            return Err(too_large());
        }
        let read = async {
            let mut bytes = Vec::new();
            let mut held = self.gates.body_room(declared.unwrap_or(0) as usize).await?;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| {
                    ApiError::invalid("bad_body", format!("could not read the request body: {e}"))
                })?;
                if let Ok(data) = frame.into_data() {
                    if bytes.len() + data.len() > max {
                        tokio::spawn(linger(body, max));
                        return Err(too_large());
                    }
                    let need = (bytes.len() + data.len()).saturating_sub(held.num_permits());
                    if need > 0 {
                        held.merge(self.gates.body_room(need).await?);
                    }
                    bytes.extend_from_slice(&data);
                }
            }
            Ok((bytes, held))
        };
        let (bytes, held) = tokio::time::timeout(self.limits.body_timeout, read)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request body did not arrive within {} s",
                        self.limits.body_timeout.as_secs_f64()
                    ),
                )
                .with_header("connection", "close")
            })??;
        let bytes_len = bytes.len();
        let parse = move || {
            let _held = held;
            serde_json::from_slice(&bytes).map_err(|e| {
                use serde_json::error::Category;
                match e.classify() {
                    Category::Syntax | Category::Eof => {
                        ApiError::invalid("invalid_json", format!("malformed JSON: {e}"))
                    }
                    _ => ApiError::invalid("invalid_request", format!("invalid request: {e}")),
                }
            })
        };
        // Parsing a large body is CPU work (4 MB of small numbers is a
        // million values); a small one is quicker than a thread hop.
        if bytes_len <= INLINE_PARSE {
            parse()
        } else {
            self.gates.cpu(parse).await?
        }
    }

    fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            None => Ok(()),
            Some(m) if m == self.alias || m == self.file_name => Ok(()),
            Some(m) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!(
                    "model {m:?} is not served here (this server has {:?})",
                    self.alias
                ),
            )),
        }
    }

    fn models(&self) -> Value {
        let hp = &self.info.hparams;
        json!({
            "object": "list",
            "data": [{
                "id": self.alias, "object": "model", "created": self.started, "owned_by": "orthrus",
                "meta": {
                    "file": self.file_name, "n_ctx": self.info.n_ctx, "n_ctx_train": hp.context_length,
                    "n_vocab": hp.n_vocab, "n_embd": hp.n_embd, "n_layer": hp.n_layer,
                    "orthrus": self.info.is_orthrus, "block_size": hp.orthrus.map(|o| o.block_size),
                    "devices": self.info.devices, "cache_type": self.info.cache_type, "exact": self.info.exact,
                    "exact_matmul": self.info.exact_matmul,
                }
            }]
        })
    }

    async fn tokenize(&self, r: TokenizeRequest) -> Result<Value, ApiError> {
        let tok = self.info.tokenizer.clone();
        self.gates
            .cpu(move || {
                let ids = tok
                    .encode_long(&r.content)
                    .map_err(|e| ApiError::invalid("tokenize_failed", e.to_string()))?;
                if !r.with_pieces {
                    return Ok(json!({ "tokens": ids }));
                }
                let pieces = ids
                    .iter()
                    .map(|&id| {
                        let piece = tok.decode(&[id]).unwrap_or_default();
                        json!({ "id": id, "piece": piece })
                    })
                    .collect::<Vec<_>>();
                Ok(json!({ "tokens": pieces }))
            })
            .await?
    }

    async fn detokenize(&self, r: DetokenizeRequest) -> Result<Value, ApiError> {
        self.check_ids(&r.tokens)?;
        let tok = self.info.tokenizer.clone();
        self.gates
            .cpu(move || {
                let text = tok
                    .decode(&r.tokens)
                    .map_err(|e| ApiError::invalid("detokenize_failed", e.to_string()))?;
                Ok(json!({ "content": text }))
            })
            .await?
    }

    fn check_ids(&self, ids: &[u32]) -> Result<(), ApiError> {
        let n = self.info.hparams.n_vocab;
        match ids.iter().find(|&&id| id as usize >= n) {
            Some(id) => Err(ApiError::invalid(
                "invalid_token",
                format!("token id {id} is outside the vocabulary (size {n})"),
            )),
            None => Ok(()),
        }
    }

    /// Tokenizes a completion prompt on a CPU thread: BOS first when the
    /// model's file asks for it.
    async fn encode_prompt(&self, text: String) -> Result<Vec<u32>, ApiError> {
        let tok = self.info.tokenizer.clone();
        self.gates
            .cpu(move || {
                tok.encode_prompt(&text)
                    .map_err(|e| ApiError::invalid("tokenize_failed", e.to_string()))
            })
            .await?
    }

    async fn chat(&self, r: ChatRequest) -> Handled {
        self.check_model(r.model.as_deref())?;
        let messages = r.messages()?;
        let template = match &self.template {
            Some(Ok(t)) => t.clone(),
            Some(Err(e)) => {
                return Err(ApiError::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "chat_template_unusable",
                    format!("the model's chat template cannot be used ({e}); use /v1/completions"),
                ))
            }
            None => {
                return Err(ApiError::invalid(
                    "no_chat_template",
                    "the model has no chat template; use /v1/completions",
                ))
            }
        };
        let thinking = r
            .chat_template_kwargs
            .as_ref()
            .and_then(|k| k.enable_thinking)
            .unwrap_or(true);
        let (tok, text_tok) = (self.info.tokenizer.clone(), self.text_tokenizer.clone());
        // Rendering runs a program from the model file: off the async threads.
        let prompt = self
            .gates
            .cpu(move || {
                encode_chat(
                    &*template,
                    &tok,
                    text_tok.as_deref(),
                    &messages,
                    true,
                    thinking,
                )
                .map_err(|e| match e {
                    EngineError::Template(_) => {
                        ApiError::invalid("chat_template_failed", e.to_string())
                    }
                    _ => ApiError::invalid("tokenize_failed", e.to_string()),
                })
            })
            .await??;
        let settings = r.gen.check(prompt.len(), &self.info)?;
        self.generate(Endpoint::Chat, prompt, settings).await
    }

    async fn completion(&self, r: CompletionRequest, endpoint: Endpoint) -> Handled {
        self.check_model(r.model.as_deref())?;
        let prompt = match r.prompt {
            None => return Err(ApiError::invalid("missing_prompt", "prompt is required")),
            Some(Prompt::Text(t)) => self.encode_prompt(t).await?,
            Some(Prompt::Ids(ids)) => {
                self.check_ids(&ids)?;
                ids
            }
            Some(Prompt::Texts(mut t)) if t.len() == 1 => self.encode_prompt(t.remove(0)).await?,
            Some(Prompt::Texts(_)) => {
                return Err(ApiError::invalid(
                    "unsupported_prompt",
                    "give one prompt (a string or an array of token ids)",
                ))
            }
        };
        let settings = r.gen.check(prompt.len(), &self.info)?;
        self.generate(endpoint, prompt, settings).await
    }

    /// Queues the generation and answers with its result, or streams it.
    async fn generate(&self, endpoint: Endpoint, prompt: Vec<u32>, s: Settings) -> Handled {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            _ => "cmpl",
        };
        let reply = Reply {
            endpoint,
            id: format!("{prefix}-{:x}-{n}", self.started),
            created: unix_now(),
            model: self.alias.clone(),
            include_usage: s.include_usage,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let job = Job {
            prompt,
            params: s.params,
            stops: s.stops,
            stream: s.stream,
            events: tx,
        };
        self.metrics.enqueued();
        if let Err(e) = self.jobs.try_send(job) {
            self.metrics.dequeued();
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_busy",
                    "the request queue is full; retry later",
                )
                .with_header("retry-after", "1"),
                mpsc::error::TrySendError::Closed(_) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "model_unavailable",
                    "the model thread has stopped",
                ),
            });
        }
        if s.stream {
            let body = SseBody {
                pending: reply.stream_start(),
                events: rx,
                reply,
                done: false,
            };
            let mut r = Response::new(body.boxed_unsync());
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert("cache-control", HeaderValue::from_static("no-cache"));
            return Ok((r, "stream".into()));
        }
        loop {
            match rx.recv().await {
                Some(Event::Text(_)) => continue,
                Some(Event::Done(o)) => return Ok((json_response(&reply.full(&o)), note(&o))),
                Some(Event::Failed(m)) => return Err(engine_failure(m)),
                None => return Err(engine_failure("the model thread has stopped".into())),
            }
        }
    }
}

/// Reads and drops what is left of a refused body, for at most 2 s and
/// 4 times `limit` bytes, after its 413 has been sent.
async fn linger(mut body: Incoming, limit: usize) {
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > limit.saturating_mul(4) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// The log note of a finished generation.
fn note(o: &Outcome) -> String {
    format!(
        "{} prompt + {} generated tokens, {}, {:.2} tokens/step, {:.1} tok/s",
        o.stats.prompt_tokens,
        o.tokens.len(),
        o.mode.name(),
        o.stats.mean_accepted,
        o.stats.generation_tokens_per_second
    )
}

/// A streamed answer: each event of the generation becomes an SSE chunk as
/// it arrives. Dropping it (the client went away) drops the receiver, which
/// stops the generation.
struct SseBody {
    pending: Option<Bytes>,
    events: mpsc::UnboundedReceiver<Event>,
    reply: Reply,
    done: bool,
}

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(b) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let bytes = match std::task::ready!(this.events.poll_recv(cx)) {
            Some(Event::Text(t)) => this.reply.stream_text(&t),
            Some(Event::Done(o)) => {
                this.done = true;
                this.reply.stream_end(&o)
            }
            Some(Event::Failed(m)) => {
                this.done = true;
                this.reply.stream_error(&engine_failure(m))
            }
            None => return Poll::Ready(None),
        };
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }
}
