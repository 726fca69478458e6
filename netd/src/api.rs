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
        let n = reader.read_until(b'\n', &mut head).await?;
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
