//! Just enough of the Docker Engine API for a build script: ping, inspect an image, build one
//! from a tar context. Blocking HTTP/1.1 over the engine's Unix socket (or `tcp://` from
//! `DOCKER_HOST`), one request per connection, so a build script needs no async runtime and no
//! HTTP client crate. Paths are unversioned: the engine answers with its own API version.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Where the engine listens.
#[derive(Debug, Clone)]
pub(crate) enum Engine {
    Unix(String),
    Tcp(String),
}

/// An answer: status code and body (de-chunked).
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Engine {
    /// The engine named by `DOCKER_HOST`, default `unix:///var/run/docker.sock`.
    pub(crate) fn from_env() -> Result<Self, String> {
        let host =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        Self::from_host(&host)
    }

    fn from_host(host: &str) -> Result<Self, String> {
        if let Some(path) = host.strip_prefix("unix://") {
            Ok(Engine::Unix(path.to_owned()))
        } else if let Some(addr) = host.strip_prefix("tcp://") {
            Ok(Engine::Tcp(addr.trim_end_matches('/').to_owned()))
        } else {
            Err(format!(
                "DOCKER_HOST `{host}` is neither `unix://PATH` nor `tcp://HOST:PORT`"
            ))
        }
    }

    /// Whether the engine answers; the error says why not, in a user's words.
    pub(crate) fn ping(&self) -> Result<(), String> {
        let answer = self
            .request("GET", "/_ping", None, Duration::from_secs(10))
            .map_err(|e| self.unreachable(&e))?;
        if answer.status == 200 {
            Ok(())
        } else {
            Err(format!(
                "the Docker Engine at {self} answers `/_ping` with status {}",
                answer.status
            ))
        }
    }

    fn unreachable(&self, e: &std::io::Error) -> String {
        match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("no Docker Engine socket at {self} (start `dockerd`, or set DOCKER_HOST)")
            }
            std::io::ErrorKind::PermissionDenied => format!(
                "permission denied on the Docker Engine socket {self} (add your user to the \
                 `docker` group, or set DOCKER_HOST)"
            ),
            std::io::ErrorKind::ConnectionRefused => {
                format!("the Docker Engine at {self} refuses connections (is `dockerd` running?)")
            }
            _ => format!("the Docker Engine at {self} does not answer: {e}"),
        }
    }

    /// The size in bytes of image `tag`, or `None` when the engine does not have it.
    pub(crate) fn image_size(&self, tag: &str) -> Result<Option<u64>, String> {
        let path = format!("/images/{}/json", encode(tag));
        let answer = self
            .request("GET", &path, None, Duration::from_secs(30))
            .map_err(|e| self.unreachable(&e))?;
        match answer.status {
            200 => {
                let v: serde_json::Value = serde_json::from_slice(&answer.body)
                    .map_err(|e| format!("the engine's description of `{tag}` is not JSON: {e}"))?;
                Ok(Some(v["Size"].as_u64().unwrap_or(0)))
            }
            404 => Ok(None),
            status => Err(format!(
                "inspecting image `{tag}`: status {status}: {}",
                message(&answer.body)
            )),
        }
    }

    /// Builds image `tag` from a tar build context holding a `Dockerfile`.
    pub(crate) fn build(&self, tag: &str, context: &[u8]) -> Result<(), String> {
        let path = format!("/build?t={}&rm=1&forcerm=1&pull=0", encode(tag));
        let answer = self
            .request(
                "POST",
                &path,
                Some(("application/x-tar", context)),
                Duration::from_secs(600),
            )
            .map_err(|e| format!("building image `{tag}`: {}", self.unreachable(&e)))?;
        if answer.status != 200 {
            return Err(format!(
                "building image `{tag}`: status {}: {}",
                answer.status,
                message(&answer.body)
            ));
        }
        // A stream of JSON objects; a failed step reports `error` (and `errorDetail`).
        let text = String::from_utf8_lossy(&answer.body);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if let Some(error) = v["error"].as_str() {
                    return Err(format!("building image `{tag}`: {}", error.trim()));
                }
            }
        }
        Ok(())
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        timeout: Duration,
    ) -> std::io::Result<Answer> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n");
        if let Some((kind, bytes)) = body {
            head.push_str(&format!(
                "Content-Type: {kind}\r\nContent-Length: {}\r\n",
                bytes.len()
            ));
        }
        head.push_str("\r\n");
        let payload = body.map(|b| b.1).unwrap_or_default();
        let raw = match self {
            Engine::Unix(path) => {
                let mut s = UnixStream::connect(path)?;
                s.set_read_timeout(Some(timeout))?;
                exchange(&mut s, head.as_bytes(), payload)?
            }
            Engine::Tcp(addr) => {
                let target = std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())?
                    .next()
                    .ok_or_else(|| std::io::Error::other(format!("`{addr}` has no address")))?;
                let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
                s.set_read_timeout(Some(timeout))?;
                exchange(&mut s, head.as_bytes(), payload)?
            }
        };
        parse(&raw)
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Engine::Unix(path) => write!(f, "unix://{path}"),
            Engine::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

fn exchange<S: Read + Write>(s: &mut S, head: &[u8], body: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(head)?;
    s.write_all(body)?;
    s.flush()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    Ok(raw)
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// Splits an HTTP/1.1 response into status and body, undoing chunked transfer encoding.
fn parse(raw: &[u8]) -> std::io::Result<Answer> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("the engine's answer has no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("the engine's answer has no status"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("a chunk has no size line"))?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid("a chunk size is not hexadecimal"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err(invalid("the engine's answer ends inside a chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// The `message` of an engine error body, or the body itself.
fn message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}

/// Percent-encodes an image reference for a path segment or query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_answers_are_joined() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let answer = parse(raw).unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, b"abcde");
    }

    #[test]
    fn plain_answers_keep_their_body() {
        let raw =
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 23\r\n\r\n{\"message\":\"no such\"}\n";
        let answer = parse(raw).unwrap();
        assert_eq!(answer.status, 404);
        assert_eq!(message(&answer.body), "no such");
    }

    #[test]
    fn image_references_are_encoded() {
        assert_eq!(encode("nanoflow/shop:0a1b"), "nanoflow%2Fshop%3A0a1b");
    }

    #[test]
    fn a_missing_socket_is_named() {
        let engine = Engine::Unix("/nonexistent/nanoflow/docker.sock".into());
        let error = engine.ping().unwrap_err();
        assert!(error.contains("no Docker Engine socket"), "{error}");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_named() {
        let path =
            std::env::temp_dir().join(format!("nanoflow-refused-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let engine = Engine::Unix(path.to_string_lossy().into_owned());
        let error = engine.ping().unwrap_err();
        assert!(error.contains("refuses connections"), "{error}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn docker_host_must_be_unix_or_tcp() {
        assert!(matches!(
            Engine::from_host("tcp://127.0.0.1:2375/"),
            Ok(Engine::Tcp(a)) if a == "127.0.0.1:2375"
        ));
        let error = Engine::from_host("ssh://host").unwrap_err();
        assert!(error.contains("neither"), "{error}");
    }
}
