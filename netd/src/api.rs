//! The daemon's API: HTTP/1.1 + JSON over a unix socket (root-only), shaped like Docker's Engine
//! API where Docker has an equivalent. The transport is hyper: keep-alive, chunked or sized
//! bodies, a header timeout and size limit; bodies are capped at [`MAX_BODY`]; errors are
//! `{"message": "..."}` with Docker's status codes (400 bad parameter, 404 no such object or
//! path, 405 wrong method, 409 conflict, 413 body too large, 500 server error).
use std::{collections::BTreeMap, path::Path, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;

/// Largest request body the daemon accepts (Docker has no small limit; 1 MiB is plenty here).
pub const MAX_BODY: usize = 1 << 20;
/// Largest request head (hyper answers 431 beyond it).
const MAX_HEAD: usize = 16 << 10;

/// What `netd run`/`create` sends.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "PascalCase")]
pub struct CreateRequest {
    pub name: Option<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    /// `bridge` (default), `host`, `none`, `container:NAME`, or a user network name.
    pub network_mode: String,
    /// `-p` specs exactly as typed.
    pub publish: Vec<String>,
    pub publish_all: bool,
    pub expose: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    pub extra_hosts: Vec<String>,
    pub links: Vec<String>,
    pub ip: Option<String>,
    /// `--ip6`.
    #[serde(rename = "IP6")]
    pub ip6: Option<String>,
    pub mac_address: Option<String>,
    pub network_aliases: Vec<String>,
    pub auto_remove: bool,
    pub workdir: Option<String>,
    /// Docker 28's `--network name=NET,gw-priority=N`: the sandbox's default gateway is the
    /// network with the highest priority (then by name, see `attach::gateway_pick`).
    #[serde(skip_serializing_if = "is_zero")]
    pub gw_priority: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateResponse {
    pub id: String,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitResponse {
    pub status_code: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub message: String,
}

/// `docker network create` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "PascalCase")]
pub struct NetworkCreateRequest {
    pub name: String,
    pub driver: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    /// `--ipv6`: a dual-stack network.
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// `--ipv4=false`: Docker 28's IPv6-only networks (with `--ipv6`).
    #[serde(rename = "EnableIPv4")]
    pub enable_ipv4: Option<bool>,
    /// The IPv6 `--subnet`, `--gateway`, `--ip-range` (the v4 ones stay in the fields above).
    #[serde(rename = "SubnetV6")]
    pub subnet_v6: Option<String>,
    #[serde(rename = "GatewayV6")]
    pub gateway_v6: Option<String>,
    #[serde(rename = "IPRangeV6")]
    pub ip_range_v6: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "PascalCase")]
pub struct NetworkConnectRequest {
    pub container: String,
    pub aliases: Vec<String>,
    pub ip: Option<String>,
    #[serde(rename = "IP6")]
    pub ip6: Option<String>,
    /// `network connect --gw-priority N` (Docker 28).
    #[serde(skip_serializing_if = "is_zero")]
    pub gw_priority: i64,
}

/// An HTTP request as the daemon sees it.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.query.get(key).map(String::as_str), Some("1" | "true" | "True"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    #[error("request body too large (limit {MAX_BODY} bytes)")]
    TooLarge,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How long a client may take to send a request's headers, then its body.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A response body: complete, or streamed (`logs?follow=1`).
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Serve HTTP/1.1 on one connection (keep-alive, chunked bodies, header timeout and size limit
/// from hyper); `handle` answers each request.
pub async fn serve_connection<I, F, Fut>(io: I, handle: F)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn(hyper::Request<Incoming>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = hyper::Response<Body>> + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let f = handle(req);
        async move { Ok::<_, std::convert::Infallible>(f.await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        // A client may shut down its write side and wait for the answer.
        .half_close(true)
        .serve_connection(TokioIo::new(io), svc);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "API connection");
    }
}

/// Read a request's body (bounded in size and time) and decode its target.
pub async fn read_request(req: hyper::Request<Incoming>) -> Result<Request, HttpError> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(HttpError::TooLarge);
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
        Err(_) => return Err(HttpError::Malformed("timeout reading the request body".into())),
        Ok(Err(e)) if e.is::<LengthLimitError>() => return Err(HttpError::TooLarge),
        Ok(Err(e)) => return Err(HttpError::Malformed(format!("reading the request body: {e}"))),
        Ok(Ok(b)) => b.to_bytes().to_vec(),
    };
    let target = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(Request { method: parts.method.as_str().to_string(), path: percent_decode(path), query, body })
}

/// Decode a JSON request body into a request struct. The body must be a JSON object, as for
/// Docker (serde alone would also take an array of the fields in order).
pub fn decode_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    T::deserialize(serde_json::Value::Object(map)).map_err(|e| format!("invalid JSON: {e}"))
}

/// A complete response with a body of `content_type`.
pub fn response(status: u16, content_type: &str, body: impl Into<Bytes>) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(Full::new(body.into()).map_err(|never| match never {}).boxed_unsync());
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A complete JSON response.
pub fn json_response(status: u16, body: impl Into<Bytes>) -> hyper::Response<Body> {
    response(status, "application/json", body)
}

/// A streamed response: raw bytes as `chunks` yields them, until it ends.
pub fn stream_response(mut chunks: tokio::sync::mpsc::Receiver<Bytes>) -> hyper::Response<Body> {
    let stream = futures::stream::poll_fn(move |cx| chunks.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))));
    let mut r = hyper::Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/vnd.netd.raw-stream"),
    );
    r
}

/// Client side errors: the daemon is unreachable, or it answered with an error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("Cannot connect to the netd daemon at unix://{0}. Is the daemon running?")]
    Connect(String),
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("error talking to the daemon: {0}")]
    Protocol(String),
}

/// A client of the daemon's socket.
#[derive(Debug, Clone)]
pub struct Client {
    pub socket: std::path::PathBuf,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Self { socket: socket.as_ref().to_path_buf() }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let s = UnixStream::connect(&self.socket)
            .await
            .map_err(|_| ClientError::Connect(self.socket.display().to_string()))?;
        let proto = |e: hyper::Error| ClientError::Protocol(e.to_string());
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.map_err(proto)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "netd")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        tx.send_request(req).await.map_err(proto)
    }

    /// The API error an unsuccessful response carries.
    async fn error(resp: hyper::Response<Incoming>) -> ClientError {
        let status = resp.status().as_u16();
        let buf = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let message = serde_json::from_slice::<ErrorResponse>(&buf)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&buf).into_owned());
        ClientError::Api { status, message }
    }

    /// One request; returns the raw body of a 2xx response, or the API error.
    pub async fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Vec<u8>, ClientError> {
        let resp = self.send(method, path, body).await?;
        if !resp.status().is_success() {
            return Err(Self::error(resp).await);
        }
        let b = resp.into_body().collect().await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(b.to_bytes().to_vec())
    }

    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("serializable request"));
        let out = self.call(method, path, body.as_deref()).await?;
        serde_json::from_slice(&out).map_err(|e| ClientError::Protocol(format!("decoding response: {e}")))
    }

    /// A streamed response: `on_chunk` gets the raw bytes as they arrive.
    pub async fn stream(&self, method: &str, path: &str, mut on_chunk: impl FnMut(&[u8])) -> Result<(), ClientError> {
        let resp = self.send(method, path, None).await?;
        if !resp.status().is_success() {
            return Err(Self::error(resp).await);
        }
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Protocol(e.to_string()))?;
            if let Some(d) = frame.data_ref() {
                on_chunk(d);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        assert_eq!(percent_decode(&percent_encode("a b/c:d")), "a b/c:d");
        assert_eq!(percent_decode("%2Fweb"), "/web");
        assert_eq!(percent_decode("100%"), "100%");
    }

    /// What the server made of `bytes` (writer closed afterwards unless `keep_open`): the first
    /// response's status and head, and what the handler got, if hyper passed a request on. With a
    /// deadline: a hang is a failure like a panic.
    pub(super) fn feed(bytes: Vec<u8>, keep_open: bool) -> (Option<u16>, String, Option<Result<Request, HttpError>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let (a, mut b) = UnixStream::pair().unwrap();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let server = tokio::spawn(serve_connection(a, move |req| {
                let tx = tx.clone();
                async move {
                    let r = read_request(req).await;
                    let status = match &r {
                        Ok(_) => 200,
                        Err(HttpError::TooLarge) => 413,
                        Err(_) => 400,
                    };
                    let _ = tx.send(r);
                    json_response(status, "{}")
                }
            }));
            let (mut rd, mut wr) = b.split();
            let write = async {
                let _ = wr.write_all(&bytes).await;
                if keep_open {
                    std::future::pending::<()>().await;
                }
                let _ = wr.shutdown().await;
                std::future::pending::<()>().await;
            };
            let read = async {
                let mut out = Vec::new();
                let mut buf = [0u8; 4096];
                while !out.windows(4).any(|w| w == b"\r\n\r\n") {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => out.extend_from_slice(&buf[..n]),
                    }
                }
                out
            };
            let out = tokio::select! {
                o = read => o,
                _ = write => unreachable!(),
                _ = tokio::time::sleep(Duration::from_secs(12)) => panic!("no answer and no close within 12 s"),
            };
            server.abort();
            let head = String::from_utf8_lossy(&out).into_owned();
            let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
            (status, head, rx.try_recv().ok())
        })
    }

    #[test]
    fn request_parsing_limits_and_query() {
        let (st, _, r) =
            feed(b"POST /containers/abc/stop?t=3&force=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_vec(), false);
        let r = r.unwrap().unwrap();
        assert_eq!(st, Some(200));
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/containers/abc/stop");
        assert_eq!(r.query["t"], "3");
        assert!(r.flag("force"));
        assert_eq!(r.body, b"{}");

        let (st, _, r) =
            feed(format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1).into_bytes(), true);
        assert_eq!(st, Some(413));
        assert!(matches!(r, Some(Err(HttpError::TooLarge))));

        let (st, _, r) = feed(b"garbage\r\n\r\n".to_vec(), false);
        assert_eq!(st, Some(400));
        assert!(r.is_none());
    }

    /// A chunked body (what curl and most clients send for a streamed body) is read whole.
    #[test]
    fn chunked_bodies() {
        let (st, _, r) = feed(
            b"POST /networks/create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"Nam\r\n9\r\ne\": \"n1\"}\r\n0\r\n\r\n"
                .to_vec(),
            true,
        );
        assert_eq!(st, Some(200));
        assert_eq!(r.unwrap().unwrap().body, br#"{"Name": "n1"}"#);
        // A chunked body above the limit is refused without being buffered whole.
        let mut b = b"POST /containers/create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..(MAX_BODY / 4096 + 2) {
            b.extend_from_slice(b"1000\r\n");
            b.extend(std::iter::repeat_n(b'a', 4096));
            b.extend_from_slice(b"\r\n");
        }
        let (st, _, r) = feed(b, true);
        assert_eq!(st, Some(413));
        assert!(matches!(r, Some(Err(HttpError::TooLarge))));
    }
}

/// Property tests of the transport and the JSON request bodies: no input panics, oversized or
/// endless heads and bodies are refused without being buffered, valid requests round-trip.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::{tests::feed, *};

    fn http_ish() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b"GET ".to_vec()),
                Just(b"POST /containers/create".to_vec()),
                Just(b" HTTP/1.1".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"Content-Length: ".to_vec()),
                Just(b"content-length:".to_vec()),
                Just(b"18446744073709551616".to_vec()),
                Just(b"-1".to_vec()),
                Just(b"2".to_vec()),
                Just(b"1048577".to_vec()),
                Just(b"?a=%zz&b=%2&=&&".to_vec()),
                Just(b"{}".to_vec()),
                Just(vec![0xff, 0xfe, 0]),
                proptest::collection::vec(any::<u8>(), 0..16),
            ],
            0..24,
        )
        .prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..4096), http_ish()],
        ) {
            if let (_, _, Some(Ok(r))) = feed(bytes, false) {
                prop_assert!(r.body.len() <= MAX_BODY);
                prop_assert!(!r.method.is_empty());
            }
        }

        #[test]
        fn bodies_above_max_body_are_refused(n in (MAX_BODY as u64 + 1)..=u64::MAX, huge in "[1-9][0-9]{20,40}") {
            let head = format!("POST /containers/create HTTP/1.1\r\nContent-Length: {n}\r\n\r\n{{}}");
            let (st, head, r) = feed(head.into_bytes(), true);
            prop_assert!(st == Some(413) && matches!(r, Some(Err(HttpError::TooLarge))), "{n}: {head} {r:?}");
            // Beyond u64: refused by hyper as malformed, and nothing is allocated either.
            let (st, head, r) = feed(format!("POST / HTTP/1.1\r\nContent-Length: {huge}\r\n\r\n").into_bytes(), true);
            prop_assert!(st == Some(400) && r.is_none(), "{huge}: {head} {r:?}");
        }

        #[test]
        fn heads_without_end_are_refused(len in (MAX_HEAD + 1)..(4 * MAX_HEAD), newline in any::<bool>()) {
            // One endless header line, or endless short lines, and the client never closes.
            let mut b = b"GET /_ping HTTP/1.1\r\nX: ".to_vec();
            b.extend(std::iter::repeat_n(b'a', len));
            if newline {
                b = b"GET /_ping HTTP/1.1\r\n".iter().copied().chain(b"X: y\r\n".repeat(len / 6)).collect();
            }
            let (st, head, r) = feed(b, true);
            prop_assert!(st == Some(431) && r.is_none(), "{head} {r:?}");
        }

        #[test]
        fn truncated_bodies_are_errors(
            body in proptest::collection::vec(any::<u8>(), 1..2048),
            cut in any::<prop::sample::Index>(),
        ) {
            let cut = cut.index(body.len());
            let mut b =
                format!("POST /networks/create HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            b.extend_from_slice(&body[..cut]);
            let (_, head, r) = feed(b, false);
            prop_assert!(matches!(r, None | Some(Err(HttpError::Malformed(_)))), "{head} {r:?}");
        }

        #[test]
        fn valid_requests_round_trip(
            method in prop_oneof![Just("GET"), Just("POST"), Just("DELETE")],
            path in "(/[a-zA-Z0-9_.-]{1,12}){1,4}",
            query in proptest::collection::btree_map("[a-z]{1,6}", any::<String>(), 0..4),
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            lf_only in any::<bool>(),
        ) {
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
            let target = if q.is_empty() { path.clone() } else { format!("{path}?{}", q.join("&")) };
            let nl = if lf_only { "\n" } else { "\r\n" };
            let head = format!("{method} {target} HTTP/1.1{nl}Host: netd{nl}CONTENT-LENGTH: {}{nl}{nl}", body.len());
            let mut b = head.into_bytes();
            b.extend_from_slice(&body);
            let (st, _, r) = feed(b, true);
            prop_assert_eq!(st, Some(200));
            let r = r.unwrap().unwrap();
            prop_assert_eq!(r.method, method);
            prop_assert_eq!(r.path, path);
            prop_assert_eq!(r.query, query);
            prop_assert_eq!(r.body, body);
        }

        #[test]
        fn percent_coding_round_trips(s in any::<String>()) {
            prop_assert_eq!(percent_decode(&percent_encode(&s)), s.clone());
            let _ = percent_decode(&s);
        }

        #[test]
        fn json_bodies_never_panic(bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            concat!(
                "\\{\"(Name|Cmd|Publish|NetworkMode|Subnet|Options|Container|Aliases)\": ?",
                "(null|1|-1|true|\"x\"|\\[\\]|\\[1\\]|\\{\\}|\\[\"a\"\\]|\\{\"a\":1\\})\\}",
            )
                .prop_map(String::into_bytes),
        ]) {
            let _ = decode_json::<CreateRequest>(&bytes);
            let _ = decode_json::<NetworkCreateRequest>(&bytes);
            let _ = decode_json::<NetworkConnectRequest>(&bytes);
            let _ = decode_json::<serde_json::Value>(&bytes);
        }

        #[test]
        fn create_requests_round_trip(
            name in proptest::option::of(any::<String>()),
            cmd in proptest::collection::vec(any::<String>(), 0..4),
            publish in proptest::collection::vec("[0-9:/a-z.-]{0,16}", 0..4),
            network_mode in any::<String>(),
            dns in proptest::collection::vec(any::<String>(), 0..3),
            publish_all in any::<bool>(),
        ) {
            let r = CreateRequest { name, cmd, publish, network_mode, dns, publish_all, ..Default::default() };
            let json = serde_json::to_vec(&r).unwrap();
            prop_assert_eq!(decode_json::<CreateRequest>(&json).unwrap(), r);
        }

        #[test]
        fn network_requests_round_trip(
            name in any::<String>(),
            subnet in proptest::option::of(any::<String>()),
            gateway in proptest::option::of(any::<String>()),
            options in proptest::collection::btree_map(any::<String>(), any::<String>(), 0..4),
            internal in any::<bool>(),
        ) {
            let r = NetworkCreateRequest { name, subnet, gateway, options, internal, ..Default::default() };
            let json = serde_json::to_vec(&r).unwrap();
            prop_assert_eq!(decode_json::<NetworkCreateRequest>(&json).unwrap(), r);
        }
    }

    /// Fields of the wrong JSON type are errors, not defaults.
    #[test]
    fn wrong_json_types_are_rejected() {
        for body in [
            r#"{"Name": 5}"#,
            r#"{"Cmd": "sh"}"#,
            r#"{"Publish": [80]}"#,
            r#"{"PublishAll": "yes"}"#,
            r#"{"NetworkMode": {}}"#,
            r#"[]"#,
            r#""x""#,
            r#"{"Cmd": ["sh"]"#,
            r#"["web", ["sh"]]"#,
            "null",
            "",
        ] {
            let e = decode_json::<CreateRequest>(body.as_bytes()).unwrap_err();
            assert!(e.starts_with("invalid JSON: "), "{body}: {e}");
        }
        for body in
            [r#"{"Name": []}"#, r#"{"Options": {"a": 1}}"#, r#"{"Internal": "true"}"#, r#"{"Subnet": 10}"#, "[]"]
        {
            assert!(decode_json::<NetworkCreateRequest>(body.as_bytes()).is_err(), "{body}");
        }
        assert!(decode_json::<NetworkConnectRequest>(br#"{"Container": null, "Aliases": "a"}"#).is_err());
        assert!(decode_json::<NetworkConnectRequest>(br#"["c1"]"#).is_err());
        // Unknown fields are ignored (as Docker does), missing ones default.
        let r: CreateRequest = decode_json(br#"{"Cmd": ["sh"], "Bogus": 1}"#).unwrap();
        assert_eq!(r.cmd, ["sh"]);
    }
}
