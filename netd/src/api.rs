//! The daemon's API: HTTP/1.1 + JSON over a unix socket (root-only), shaped like Docker's Engine
//! API where Docker has an equivalent. One request per connection; bodies are capped at
//! [`MAX_BODY`]; errors are `{"message": "..."}` with Docker's status codes (400 bad parameter,
//! 404 no such object, 409 conflict, 500 server error).
//!
//! The transport is written here (a few dozen lines) rather than pulled from an HTTP stack: the
//! daemon needs only request/response and one streaming response (`logs?follow=1`).
use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::UnixStream,
};

/// Largest request body the daemon accepts (Docker has no small limit; 1 MiB is plenty here).
pub const MAX_BODY: usize = 1 << 20;
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
    pub mac_address: Option<String>,
    pub network_aliases: Vec<String>,
    pub auto_remove: bool,
    pub workdir: Option<String>,
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
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, rename_all = "PascalCase")]
pub struct NetworkConnectRequest {
    pub container: String,
    pub aliases: Vec<String>,
    pub ip: Option<String>,
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

/// Read one request from a connection.
pub async fn read_request(stream: &mut UnixStream) -> Result<Request, HttpError> {
    let mut reader = BufReader::new(stream);
    let mut head = Vec::new();
    loop {
        // Bounded: a line that never ends must not be buffered past MAX_HEAD.
        let room = (MAX_HEAD + 1 - head.len()) as u64;
        let n = (&mut reader).take(room).read_until(b'\n', &mut head).await?;
        if n == 0 {
            return Err(HttpError::Malformed("connection closed in headers".into()));
        }
        if head.len() > MAX_HEAD {
            return Err(HttpError::Malformed("headers too large".into()));
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
    }
    let head = String::from_utf8(head).map_err(|_| HttpError::Malformed("non-UTF-8 headers".into()))?;
    let mut lines = head.lines();
    let start = lines.next().unwrap_or_default();
    let mut parts = start.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(HttpError::Malformed(format!("bad request line {start:?}")));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!("unsupported version {version:?}")));
    }
    let mut content_length = 0usize;
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            content_length = v.trim().parse().map_err(|_| HttpError::Malformed(format!("bad Content-Length {v:?}")))?;
        }
    }
    if content_length > MAX_BODY {
        return Err(HttpError::TooLarge);
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body).await?;
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(Request { method: method.to_string(), path: percent_decode(path), query, body })
}

/// Decode a JSON request body into a request struct. The body must be a JSON object, as for
/// Docker (serde alone would also take an array of the fields in order).
pub fn decode_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    T::deserialize(serde_json::Value::Object(map)).map_err(|e| format!("invalid JSON: {e}"))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// Write a complete JSON response.
pub async fn write_response<W: AsyncWrite + Unpin>(w: &mut W, status: u16, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

/// Start a streamed response (raw bytes until the connection closes).
pub async fn write_stream_head<W: AsyncWrite + Unpin>(w: &mut W) -> std::io::Result<()> {
    w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.netd.raw-stream\r\nConnection: close\r\n\r\n")
        .await?;
    w.flush().await
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

    async fn send(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<UnixStream, ClientError> {
        let mut s = UnixStream::connect(&self.socket)
            .await
            .map_err(|_| ClientError::Connect(self.socket.display().to_string()))?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: netd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        s.write_all(body).await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(s)
    }

    /// Read status line and headers; returns the status and the reader positioned at the body.
    async fn read_head(s: UnixStream) -> Result<(u16, BufReader<UnixStream>), ClientError> {
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClientError::Protocol(format!("bad status line {line:?}")))?;
        loop {
            line.clear();
            let n = r.read_line(&mut line).await.map_err(|e| ClientError::Protocol(e.to_string()))?;
            if n == 0 || line == "\r\n" || line == "\n" {
                break;
            }
        }
        Ok((status, r))
    }

    /// One request; returns the raw body of a 2xx response, or the API error.
    pub async fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Vec<u8>, ClientError> {
        let s = self.send(method, path, body).await?;
        let (status, mut r) = Self::read_head(s).await?;
        let mut buf = Vec::new();
        r.read_to_end(&mut buf).await.map_err(|e| ClientError::Protocol(e.to_string()))?;
        if (200..300).contains(&status) {
            Ok(buf)
        } else {
            let message = serde_json::from_slice::<ErrorResponse>(&buf)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&buf).into_owned());
            Err(ClientError::Api { status, message })
        }
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
        let s = self.send(method, path, None).await?;
        let (status, mut r) = Self::read_head(s).await?;
        if !(200..300).contains(&status) {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf).await;
            let message = serde_json::from_slice::<ErrorResponse>(&buf)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&buf).into_owned());
            return Err(ClientError::Api { status, message });
        }
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = r.read(&mut buf).await.map_err(|e| ClientError::Protocol(e.to_string()))?;
            if n == 0 {
                return Ok(());
            }
            on_chunk(&buf[..n]);
        }
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

    #[tokio::test]
    async fn request_parsing_limits_and_query() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        tokio::spawn(async move {
            b.write_all(b"POST /containers/abc/stop?t=3&force=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
                .await
                .unwrap();
        });
        let r = read_request(&mut a).await.unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/containers/abc/stop");
        assert_eq!(r.query["t"], "3");
        assert!(r.flag("force"));
        assert_eq!(r.body, b"{}");

        let (mut a, mut b) = UnixStream::pair().unwrap();
        tokio::spawn(async move {
            let _ =
                b.write_all(format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1).as_bytes()).await;
        });
        assert!(matches!(read_request(&mut a).await, Err(HttpError::TooLarge)));

        let (mut a, mut b) = UnixStream::pair().unwrap();
        tokio::spawn(async move {
            let _ = b.write_all(b"garbage\r\n\r\n").await;
        });
        assert!(matches!(read_request(&mut a).await, Err(HttpError::Malformed(_))));
    }
}

/// Property tests of the transport and the JSON request bodies: no input panics, oversized or
/// endless heads and bodies are refused without being buffered, valid requests round-trip.
#[cfg(test)]
mod fuzz {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    /// Feed `bytes` to `read_request` (closing the writer afterwards unless `keep_open`), with a
    /// deadline: a hang is a failure like a panic.
    fn feed(bytes: Vec<u8>, keep_open: bool) -> Result<Request, HttpError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let (mut a, mut b) = UnixStream::pair().unwrap();
            let w = tokio::spawn(async move {
                let _ = b.write_all(&bytes).await;
                if keep_open {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                drop(b);
            });
            let r = tokio::time::timeout(Duration::from_secs(10), read_request(&mut a))
                .await
                .expect("read_request did not return within 10 s");
            w.abort();
            r
        })
    }

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
            if let Ok(r) = feed(bytes, false) {
                prop_assert!(r.body.len() <= MAX_BODY);
                prop_assert!(!r.method.is_empty());
            }
        }

        #[test]
        fn bodies_above_max_body_are_refused(n in (MAX_BODY as u64 + 1)..=u64::MAX, huge in "[1-9][0-9]{20,40}") {
            let head = format!("POST /containers/create HTTP/1.1\r\nContent-Length: {n}\r\n\r\n{{}}");
            let r = feed(head.into_bytes(), true);
            prop_assert!(matches!(r, Err(HttpError::TooLarge)), "{n}: {r:?}");
            // Beyond usize: refused as malformed, and nothing is allocated either.
            let r = feed(format!("POST / HTTP/1.1\r\nContent-Length: {huge}\r\n\r\n").into_bytes(), true);
            prop_assert!(matches!(r, Err(HttpError::Malformed(_))), "{huge}: {r:?}");
        }

        #[test]
        fn heads_without_end_are_refused(len in (MAX_HEAD + 1)..(4 * MAX_HEAD), newline in any::<bool>()) {
            // One endless header line, or endless short lines, and the client never closes.
            let mut b = b"GET /_ping HTTP/1.1\r\nX: ".to_vec();
            b.extend(std::iter::repeat_n(b'a', len));
            if newline {
                b = b"GET /_ping HTTP/1.1\r\n".iter().copied().chain(b"X: y\r\n".repeat(len / 6)).collect();
            }
            let r = feed(b, true);
            prop_assert!(matches!(&r, Err(HttpError::Malformed(m)) if m == "headers too large"), "{r:?}");
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
            prop_assert!(matches!(feed(b, false), Err(HttpError::Io(_))));
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
            let r = feed(b, true).unwrap();
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
