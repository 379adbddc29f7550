//! The HTTP side: routing, the API key, body limits, JSON errors, and
//! server-sent events, on hyper 1.x.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use orthrus_engine::chat::ChatTemplate;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::api::{
    engine_failure, ChatRequest, CompletionRequest, DetokenizeRequest, Endpoint, Prompt, Reply,
    Settings, TokenizeRequest,
};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::worker::{Event, Job, ModelInfo, Outcome};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Everything a request handler needs; shared by all connections.
pub struct Server {
    pub info: ModelInfo,
    pub template: Option<ChatTemplate>,
    /// The model name clients use (`model` in requests must be this or the file name).
    pub alias: String,
    pub file_name: String,
    pub api_key: Option<String>,
    pub jobs: mpsc::Sender<Job>,
    pub metrics: Arc<Metrics>,
    /// Largest request body, in bytes.
    pub max_body: usize,
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

/// Paths that answer without the API key.
const PUBLIC: [&str; 2] = ["/health", "/v1/health"];

impl Server {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        info: ModelInfo,
        alias: String,
        file_name: String,
        api_key: Option<String>,
        jobs: mpsc::Sender<Job>,
        metrics: Arc<Metrics>,
        max_body: usize,
    ) -> anyhow::Result<Server> {
        let template = info
            .chat_template
            .as_deref()
            .map(ChatTemplate::new)
            .transpose()?;
        Ok(Server {
            info,
            template,
            alias,
            file_name,
            api_key,
            jobs,
            metrics,
            max_body,
            started: unix_now(),
            requests: AtomicU64::new(0),
        })
    }

    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
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
            let server = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(peer, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    /// Answers one request and logs one line for it.
    pub async fn handle(&self, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let (resp, note) = match self.route(req).await {
            Ok(r) => r,
            Err(e) => (error_response(&e), e.message.clone()),
        };
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
        if !PUBLIC.contains(&path.as_str()) {
            self.authorize(&req)?;
        }
        if req.method() != allowed {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{path} takes {allowed}, not {}", req.method()),
            )
            .with_header("allow", allowed.as_str()));
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
                ok(self.tokenize(&r)?)
            }
            "/detokenize" => {
                let r: DetokenizeRequest = self.json(req).await?;
                ok(self.detokenize(&r)?)
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
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if g.as_bytes() == key.as_bytes() => Ok(()),
            Some(_) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "invalid API key",
            )),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "missing API key (send Authorization: Bearer KEY)",
            )),
        }
    }

    /// The body as JSON of type `T`, at most `max_body` bytes.
    async fn json<T: DeserializeOwned>(&self, req: Request<Incoming>) -> Result<T, ApiError> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!("the request body is over {} bytes", self.max_body),
            )
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = req.into_body();
        if declared.is_some_and(|n| n > self.max_body as u64) {
            drain(&mut body, self.max_body).await;
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::invalid("bad_body", format!("could not read the request body: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > self.max_body {
                    drain(&mut body, self.max_body).await;
                    return Err(too_large());
                }
                bytes.extend_from_slice(&data);
            }
        }
        let body = bytes;
        serde_json::from_slice(&body).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Syntax | Category::Eof => {
                    ApiError::invalid("invalid_json", format!("malformed JSON: {e}"))
                }
                _ => ApiError::invalid("invalid_request", format!("invalid request: {e}")),
            }
        })
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

    fn tokenize(&self, r: &TokenizeRequest) -> Result<Value, ApiError> {
        let ids = self
            .info
            .tokenizer
            .encode(&r.content)
            .map_err(|e| ApiError::invalid("tokenize_failed", e.to_string()))?;
        if !r.with_pieces {
            return Ok(json!({ "tokens": ids }));
        }
        let pieces = ids
            .iter()
            .map(|&id| {
                let piece = self.info.tokenizer.decode(&[id]).unwrap_or_default();
                json!({ "id": id, "piece": piece })
            })
            .collect::<Vec<_>>();
        Ok(json!({ "tokens": pieces }))
    }

    fn detokenize(&self, r: &DetokenizeRequest) -> Result<Value, ApiError> {
        self.check_ids(&r.tokens)?;
        let text = self
            .info
            .tokenizer
            .decode(&r.tokens)
            .map_err(|e| ApiError::invalid("detokenize_failed", e.to_string()))?;
        Ok(json!({ "content": text }))
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

    fn encode(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        self.info
            .tokenizer
            .encode(text)
            .map_err(|e| ApiError::invalid("tokenize_failed", e.to_string()))
    }

    /// A completion prompt: BOS first when the model's file asks for it.
    fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        self.info
            .tokenizer
            .encode_prompt(text)
            .map_err(|e| ApiError::invalid("tokenize_failed", e.to_string()))
    }

    async fn chat(&self, r: ChatRequest) -> Handled {
        self.check_model(r.model.as_deref())?;
        let messages = r.messages()?;
        let template = self.template.as_ref().ok_or_else(|| {
            ApiError::invalid(
                "no_chat_template",
                "the model has no chat template; use /v1/completions",
            )
        })?;
        let thinking = r
            .chat_template_kwargs
            .as_ref()
            .and_then(|k| k.enable_thinking)
            .unwrap_or(true);
        let text = template
            .render(&messages, true, thinking)
            .map_err(|e| ApiError::invalid("chat_template_failed", e.to_string()))?;
        let prompt = self.encode(&text)?;
        let settings = r.gen.check(prompt.len(), &self.info)?;
        self.generate(Endpoint::Chat, prompt, settings).await
    }

    async fn completion(&self, r: CompletionRequest, endpoint: Endpoint) -> Handled {
        self.check_model(r.model.as_deref())?;
        let prompt = match r.prompt {
            None => return Err(ApiError::invalid("missing_prompt", "prompt is required")),
            Some(Prompt::Text(t)) => self.encode_prompt(&t)?,
            Some(Prompt::Ids(ids)) => {
                self.check_ids(&ids)?;
                ids
            }
            Some(Prompt::Texts(t)) if t.len() == 1 => self.encode_prompt(&t[0])?,
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

/// Reads and drops what is left of a body that is too large (up to 16 times
/// `limit`), so that a client still sending it reads the 413 instead of a
/// broken connection.
async fn drain(body: &mut Incoming, limit: usize) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, |d| d.len());
        if seen > limit.saturating_mul(16) {
            break;
        }
    }
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
