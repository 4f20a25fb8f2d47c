//! Fault injection: the fault list, and the transport tricks faults need (a connection that can
//! be reset mid-request, a body that ends before its `Content-Length`).
//!
//! Faults match a substring of the request path + query (raw or percent-decoded) and are
//! consumed one per matching request, `times` times. Only the first matching fault applies.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FaultDto", into = "FaultDto")]
pub struct Fault {
    /// Substring of the request path + query, e.g. `"/members"`, a group id, `"oauth2"`.
    pub path_contains: String,
    pub kind: FaultKind,
    /// How many matching requests it hits before it is used up.
    pub times: u32,
}

/// What happens to a request a fault hits.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Answer this status with Graph's error body (`TooManyRequests` for 429, ...) and, if
    /// given, a `Retry-After` header (may be fractional, e.g. `"0.2"`). On the token endpoint
    /// the body is an AADSTS error instead.
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// Wait, then answer normally.
    Delay(Duration),
    /// Close the connection (TCP RST) without any HTTP answer.
    Reset,
    /// Send the headers and half the body, then close the connection.
    TruncatedBody,
    /// Answer 200 with a body that is not valid JSON.
    InvalidJson,
    /// Answer normally, but users, devices and contacts carry only `id` and `@odata.type`,
    /// every other property `null` (as with too narrow a permission).
    NullProperties,
    /// Answer normally with every `find` in the body replaced by `replace`: a hostile or
    /// corrupted answer (a `nextLink` to another host, an id that is not a GUID).
    Tamper { find: String, replace: String },
}

impl Fault {
    pub fn new(path_contains: impl Into<String>, kind: FaultKind, times: u32) -> Self {
        Fault {
            path_contains: path_contains.into(),
            kind,
            times,
        }
    }

    /// `times` answers of `429 Too Many Requests` with `Retry-After: retry_after`.
    pub fn throttle(path_contains: impl Into<String>, retry_after: &str, times: u32) -> Self {
        Fault::status(path_contains, 429, Some(retry_after), times)
    }

    pub fn status(
        path_contains: impl Into<String>,
        status: u16,
        retry_after: Option<&str>,
        times: u32,
    ) -> Self {
        Fault::new(
            path_contains,
            FaultKind::Status {
                status,
                retry_after: retry_after.map(str::to_owned),
            },
            times,
        )
    }
}

/// JSON form used by the control API:
/// `{"path_contains":"/members","times":2,"kind":"status","status":429,"retry_after":"0.2"}`,
/// `{"kind":"delay","seconds":1.5}`, `{"kind":"reset"}`, `"truncated_body"`, `"invalid_json"`,
/// `"null_properties"`, `{"kind":"tamper","find":"…","replace":"…"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FaultDto {
    path_contains: String,
    #[serde(default = "one")]
    times: u32,
    #[serde(flatten)]
    kind: KindDto,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum KindDto {
    Status {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<String>,
    },
    Delay {
        seconds: f64,
    },
    Reset,
    TruncatedBody,
    InvalidJson,
    NullProperties,
    Tamper {
        find: String,
        replace: String,
    },
}

impl TryFrom<FaultDto> for Fault {
    type Error = String;

    fn try_from(d: FaultDto) -> Result<Self, String> {
        let kind = match d.kind {
            KindDto::Status {
                status,
                retry_after,
            } => {
                if !(100..=599).contains(&status) {
                    return Err(format!("status {status} is not an HTTP status"));
                }
                FaultKind::Status {
                    status,
                    retry_after,
                }
            }
            KindDto::Delay { seconds } => FaultKind::Delay(
                Duration::try_from_secs_f64(seconds).map_err(|e| format!("seconds: {e}"))?,
            ),
            KindDto::Reset => FaultKind::Reset,
            KindDto::TruncatedBody => FaultKind::TruncatedBody,
            KindDto::InvalidJson => FaultKind::InvalidJson,
            KindDto::NullProperties => FaultKind::NullProperties,
            KindDto::Tamper { find, replace } => {
                if find.is_empty() {
                    return Err("tamper: find must not be empty".into());
                }
                FaultKind::Tamper { find, replace }
            }
        };
        Ok(Fault {
            path_contains: d.path_contains,
            kind,
            times: d.times,
        })
    }
}

impl From<Fault> for FaultDto {
    fn from(f: Fault) -> Self {
        FaultDto {
            path_contains: f.path_contains,
            times: f.times,
            kind: match f.kind {
                FaultKind::Status {
                    status,
                    retry_after,
                } => KindDto::Status {
                    status,
                    retry_after,
                },
                FaultKind::Delay(d) => KindDto::Delay {
                    seconds: d.as_secs_f64(),
                },
                FaultKind::Reset => KindDto::Reset,
                FaultKind::TruncatedBody => KindDto::TruncatedBody,
                FaultKind::InvalidJson => KindDto::InvalidJson,
                FaultKind::NullProperties => KindDto::NullProperties,
                FaultKind::Tamper { find, replace } => KindDto::Tamper { find, replace },
            },
        }
    }
}

/// The pending faults.
#[derive(Debug, Default)]
pub(crate) struct FaultList {
    faults: Vec<Fault>,
}

impl FaultList {
    pub(crate) fn push(&mut self, f: Fault) {
        if f.times > 0 {
            self.faults.push(f);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.faults.clear();
    }

    pub(crate) fn list(&self) -> Vec<Fault> {
        self.faults.clone()
    }

    /// Consumes one use of the first fault matching `path_and_query`.
    pub(crate) fn take(&mut self, path_and_query: &str) -> Option<FaultKind> {
        if self.faults.is_empty() {
            return None;
        }
        let decoded = percent_encoding::percent_decode_str(path_and_query).decode_utf8_lossy();
        let i = self.faults.iter().position(|f| {
            path_and_query.contains(&f.path_contains) || decoded.contains(&f.path_contains)
        })?;
        let kind = self.faults[i].kind.clone();
        self.faults[i].times -= 1;
        if self.faults[i].times == 0 {
            self.faults.remove(i);
        }
        Some(kind)
    }
}

// ---------------------------------------------------------------------------------------------
// Transport

/// Per-connection switch a handler flips to have the connection reset instead of answered.
#[derive(Debug, Default)]
pub(crate) struct ConnCtl {
    kill: AtomicBool,
}

/// A TCP listener whose connections can be reset by the request handler.
pub(crate) struct SimListener {
    pub inner: TcpListener,
}

pub(crate) struct SimStream {
    stream: TcpStream,
    ctl: Arc<ConnCtl>,
}

impl Listener for SimListener {
    type Io = SimStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        SimStream {
                            stream,
                            ctl: Arc::new(ConnCtl::default()),
                        },
                        addr,
                    );
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Handed to handlers through `ConnectInfo`.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo(pub Arc<ConnCtl>);

impl ConnInfo {
    /// The response being produced is never written; the peer sees a TCP reset.
    pub(crate) fn reset(&self) {
        self.0.kill.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, SimListener>> for ConnInfo {
    fn connect_info(target: IncomingStream<'_, SimListener>) -> Self {
        ConnInfo(target.io().ctl.clone())
    }
}

impl SimStream {
    fn killed(&self) -> bool {
        self.ctl.kill.load(Ordering::SeqCst)
    }

    fn abort(&self) -> io::Error {
        let _ = self.stream.set_zero_linger();
        io::Error::from(io::ErrorKind::ConnectionReset)
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Err(self.abort()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.killed() {
            return Poll::Ready(Err(self.abort()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.killed() {
            return Poll::Ready(Err(self.abort()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.killed() {
            return Poll::Ready(Err(self.abort()));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A body that yields its bytes and then fails, so hyper closes the connection short of the
/// `Content-Length` it announced. It pauses before failing so the part is flushed first.
pub(crate) struct TruncatedBody {
    data: Option<Bytes>,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl TruncatedBody {
    pub(crate) fn body(first_part: Vec<u8>) -> Body {
        Body::new(TruncatedBody {
            data: Some(Bytes::from(first_part)),
            pause: Box::pin(tokio::time::sleep(Duration::from_millis(50))),
        })
    }
}

impl HttpBody for TruncatedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(d))));
        }
        match self.pause.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "simulated truncation",
            )))),
        }
    }
}
