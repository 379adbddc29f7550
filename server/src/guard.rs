//! What bounds a client: timeouts, the connection cap, the memory held by
//! request bodies, CPU work kept off the async threads, and the request
//! checks that are not about the API itself (API key, content type, CORS).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The server's per-client bounds and request policy.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// A whole request head must arrive within this long of the connection
    /// opening or of its previous answer (so idle keep-alive connections
    /// are closed after it too).
    pub header_timeout: Duration,
    /// A whole request body must arrive within this long of its head.
    pub body_timeout: Duration,
    /// A client that reads nothing of its answer for this long is dropped.
    pub send_timeout: Duration,
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
    /// Bytes of request bodies held at once over all connections.
    pub body_budget: usize,
    /// CPU jobs (tokenizing, templates) running at once, and waiting at most.
    pub cpu_threads: usize,
    pub cpu_queue: usize,
    /// The one origin browsers may call from (`*`: any); none: no CORS.
    pub cors: Option<String>,
}

impl Limits {
    /// The defaults for a body limit of `max_body` bytes.
    pub fn new(max_body: usize) -> Limits {
        Limits {
            max_body,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            max_connections: 128,
            body_budget: max_body.saturating_mul(8),
            cpu_threads: 2,
            cpu_queue: 8,
            cors: None,
        }
    }
}

/// Shared counters behind the limits.
pub struct Gates {
    pub connections: Arc<Semaphore>,
    body_bytes: Arc<Semaphore>,
    body_budget: usize,
    cpu_running: Arc<Semaphore>,
    cpu_admitted: Arc<Semaphore>,
}

impl Gates {
    pub fn new(l: &Limits) -> Gates {
        // A semaphore holds at most `Semaphore::MAX_PERMITS`; a budget of u32
        // bytes is also the most one `acquire_many` can take.
        let budget = l.body_budget.max(l.max_body).min(u32::MAX as usize);
        Gates {
            connections: Arc::new(Semaphore::new(l.max_connections.max(1))),
            body_bytes: Arc::new(Semaphore::new(budget)),
            body_budget: budget,
            cpu_running: Arc::new(Semaphore::new(l.cpu_threads.max(1))),
            cpu_admitted: Arc::new(Semaphore::new(l.cpu_threads.max(1) + l.cpu_queue)),
        }
    }

    /// Room for `n` more body bytes, waiting while other bodies hold the
    /// budget (the caller bounds the wait by the body timeout).
    pub async fn body_room(&self, n: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let n = n.min(self.body_budget) as u32;
        self.body_bytes
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| busy("the server is shutting down"))
    }

    /// Runs `f` on a blocking thread, at most `cpu_threads` at once; when
    /// `cpu_queue` more already wait, the answer is 503 at once.
    pub async fn cpu<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let admitted = self
            .cpu_admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy("too many requests are being prepared; retry later"))?;
        let running = self
            .cpu_running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| busy("the server is shutting down"))?;
        tokio::task::spawn_blocking(move || {
            let _held = (admitted, running);
            f()
        })
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "preparing the request failed (internal error)",
            )
        })
    }
}

fn busy(message: &str) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_busy", message)
        .with_header("retry-after", "1")
}

/// Whether `given` is `key`, in a time that depends on the key's length
/// only, not on where the first differing byte is.
pub fn same_key(given: &[u8], key: &[u8]) -> bool {
    let mut diff = (given.len() != key.len()) as u8;
    for (i, &k) in key.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!k);
        diff |= std::hint::black_box(g ^ k);
    }
    diff == 0
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme's case
/// does not matter, as RFC 9110 says).
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(AUTHORIZATION)?.as_bytes();
    let space = v.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = v.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    Some(rest.trim_ascii())
}

/// Every route but /health answers this one error without the key, so a
/// client without it learns nothing about the routes.
pub fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
        "invalid or missing API key (send Authorization: Bearer KEY)",
    )
    .with_header("www-authenticate", "Bearer")
}

/// Whether the request says its body is JSON (`application/json`, any
/// parameters). Anything else, or none, is refused: a browser can send a
/// form or `text/plain` across origins without asking first, JSON it cannot.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(v) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = v.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

pub fn unsupported_media_type(headers: &HeaderMap) -> ApiError {
    let given = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        match given {
            Some(t) => format!("Content-Type {t:?} is not JSON; send application/json"),
            None => "no Content-Type; send Content-Type: application/json".into(),
        },
    )
}

/// The `Access-Control-Allow-Origin` value for a request from `origin`,
/// if `--cors` allows it.
pub fn cors_origin<'a>(allowed: Option<&'a str>, origin: Option<&'a str>) -> Option<&'a str> {
    match (allowed?, origin) {
        ("*", _) => Some("*"),
        (a, Some(o)) if a.eq_ignore_ascii_case(o) => Some(o),
        _ => None,
    }
}

/// A connection's socket, with a deadline on writes that make no progress:
/// a client that stops reading its answer is dropped after `timeout`
/// instead of holding the connection (and its generation) forever.
pub struct SendDeadline<S> {
    io: S,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> SendDeadline<S> {
    pub fn new(io: S, timeout: Duration) -> SendDeadline<S> {
        SendDeadline {
            io,
            timeout,
            stalled: None,
        }
    }

    /// Passes a write's result on; a write still pending once the deadline
    /// has passed becomes a timeout error, which closes the connection.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of its answer in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendDeadline<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, b);
        this.watch(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.watch(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.watch(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn same_key_needs_every_byte_and_the_length() {
        assert!(same_key(b"sk-abc", b"sk-abc"));
        for wrong in [
            &b"sk-abd"[..],
            b"sk-ab",
            b"sk-abcd",
            b"",
            b"xk-abc",
            b"sk-abc\0",
        ] {
            assert!(!same_key(wrong, b"sk-abc"), "{wrong:?}");
        }
        // A byte equal to the complement of the key's is no wildcard.
        assert!(!same_key(&[!b'a'], b"ab"));
    }

    fn headers(name: hyper::header::HeaderName, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer k1", "bearer k1", "BEARER  k1 "] {
            assert_eq!(bearer(&headers(AUTHORIZATION, v)), Some(&b"k1"[..]), "{v}");
        }
        for v in ["Basic k1", "k1", "Bearerk1"] {
            assert_eq!(bearer(&headers(AUTHORIZATION, v)), None, "{v}");
        }
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn only_json_is_json() {
        for v in ["application/json", "Application/JSON; charset=utf-8"] {
            assert!(is_json(&headers(CONTENT_TYPE, v)), "{v}");
        }
        for v in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
        ] {
            assert!(!is_json(&headers(CONTENT_TYPE, v)), "{v}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn cors_allows_the_one_origin_only() {
        let o = Some("http://a.example");
        assert_eq!(cors_origin(None, o), None);
        assert_eq!(cors_origin(Some("http://a.example"), o), o);
        assert_eq!(cors_origin(Some("http://b.example"), o), None);
        assert_eq!(cors_origin(Some("http://a.example"), None), None);
        assert_eq!(cors_origin(Some("*"), o), Some("*"));
    }
}
