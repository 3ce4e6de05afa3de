//! A small blocking HTTP/1.1 client over a Unix socket or TCP, enough to talk to basalt's REST API.
//!
//! One connection per request (`Connection: close`): the CLI makes a handful of calls, so keeping connections alive
//! is not worth the complexity. Responses are read by Content-Length, chunked transfer encoding, or until the
//! server closes the connection.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// How long a single request may wait for the server. Long operations answer after at most a few seconds with a
/// task to poll, so only a stuck server gets anywhere near this.
const IO_TIMEOUT: Duration = Duration::from_secs(600);

/// The largest response accepted, so a confused peer cannot make the CLI allocate without bound.
const BODY_MAX_BYTES: usize = 256 << 20;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The local administrator socket `DATA_DIR/api.sock`.
    Unix(PathBuf),
    /// An HTTP server: `host:port`, with an optional path prefix in front of `/api`.
    Tcp {
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// TCP port.
        port: u16,
        /// Path prefix without a trailing slash (usually empty).
        base_path: String,
    },
}

impl Endpoint {
    /// Parses `http://host[:port][/prefix]`; a URL without a scheme is taken as http.
    pub fn from_url(url: &str) -> Result<Endpoint, String> {
        let rest = if let Some(rest) = url.strip_prefix("http://") {
            rest
        } else if url.starts_with("https://") {
            return Err(format!(
                "cannot use '{url}': this client speaks plain http only (put basalt behind a TLS proxy on the \
                 client's side, or use an http:// URL on a trusted network)"
            ));
        } else if url.contains("://") {
            return Err(format!("cannot use '{url}': only http:// URLs are supported"));
        } else {
            url
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            // An IPv6 literal: `[::1]:8080`.
            let (host, after) =
                bracketed.split_once(']').ok_or_else(|| format!("invalid server URL '{url}': unclosed '['"))?;
            (host.to_owned(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() {
            return Err(format!("invalid server URL '{url}': no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| format!("invalid server URL '{url}': bad port '{p}'"))?,
            None => 80,
        };
        Ok(Endpoint::Tcp { host, port, base_path: path.to_owned() })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp { host, port, base_path } if host.contains(':') => {
                write!(f, "http://[{host}]:{port}{base_path}")
            }
            Endpoint::Tcp { host, port, base_path } => write!(f, "http://{host}:{port}{base_path}"),
        }
    }
}

/// A response: status, headers (names lower-cased) and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Headers in the order received, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// Returns the first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why a request failed below the level of HTTP statuses.
#[derive(Debug)]
pub enum HttpError {
    /// The connection could not be made: the server is not running or not reachable.
    Connect(io::Error),
    /// The connection broke or timed out during the exchange.
    Io(io::Error),
    /// The peer answered something that is not HTTP/1.x as expected.
    Protocol(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "cannot connect: {e}"),
            HttpError::Io(e) => write!(f, "connection failed: {e}"),
            HttpError::Protocol(what) => write!(f, "bad answer from the server: {what}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Sends one request and reads the whole response.
///
/// `path` is the absolute path with its query string, already percent-encoded (see [`encode_segment`]).
pub fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    match endpoint {
        Endpoint::Unix(socket) => {
            let stream = UnixStream::connect(socket).map_err(HttpError::Connect)?;
            stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(HttpError::Io)?;
            stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(HttpError::Io)?;
            exchange(stream, "localhost", method, path, headers, body)
        }
        Endpoint::Tcp { host, port, base_path } => {
            let stream = TcpStream::connect((host.as_str(), *port)).map_err(HttpError::Connect)?;
            stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(HttpError::Io)?;
            stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(HttpError::Io)?;
            let _ = stream.set_nodelay(true);
            let host_header = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
            let full_path = format!("{base_path}{path}");
            exchange(stream, &host_header, method, &full_path, headers, body)
        }
    }
}

fn exchange<S: Read + Write>(
    mut stream: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or_default();
    // Always send a length, even zero, so servers never wait for a body on POST/PUT/DELETE.
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).map_err(HttpError::Io)?;
    stream.write_all(body).map_err(HttpError::Io)?;
    stream.flush().map_err(HttpError::Io)?;
    read_response(BufReader::new(stream), method == "HEAD")
}

fn read_line<R: BufRead>(reader: &mut R) -> Result<String, HttpError> {
    let mut line = Vec::new();
    // Bounded so a peer that never sends a newline cannot grow the line forever.
    reader.take(64 * 1024).read_until(b'\n', &mut line).map_err(HttpError::Io)?;
    if !line.ends_with(b"\n") {
        return Err(HttpError::Protocol("the connection closed in the middle of a line".into()));
    }
    String::from_utf8(line)
        .map(|l| l.trim_end_matches(['\r', '\n']).to_owned())
        .map_err(|_| HttpError::Protocol("a header line is not UTF-8".into()))
}

fn read_response<R: BufRead>(mut reader: R, head_only: bool) -> Result<Response, HttpError> {
    loop {
        let status_line = read_line(&mut reader)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(HttpError::Protocol(format!("unexpected status line '{status_line}'")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| HttpError::Protocol(format!("unexpected status line '{status_line}'")))?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(&mut reader)?;
            if line.is_empty() {
                break;
            }
            let (name, value) =
                line.split_once(':').ok_or_else(|| HttpError::Protocol(format!("malformed header '{line}'")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        // Interim answers (100 Continue) carry no body; the real answer follows.
        if (100..200).contains(&status) {
            continue;
        }
        let mut response = Response { status, headers, body: Vec::new() };
        if head_only || status == 204 || status == 304 {
            return Ok(response);
        }
        let chunked = response.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            response.body = read_chunked(&mut reader)?;
        } else if let Some(length) = response.header("content-length") {
            let length: usize =
                length.parse().map_err(|_| HttpError::Protocol(format!("bad Content-Length '{length}'")))?;
            if length > BODY_MAX_BYTES {
                return Err(HttpError::Protocol(format!("the answer is too large ({length} bytes)")));
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).map_err(HttpError::Io)?;
            response.body = body;
        } else {
            reader.take(BODY_MAX_BYTES as u64).read_to_end(&mut response.body).map_err(HttpError::Io)?;
        }
        return Ok(response);
    }
}

fn read_chunked<R: BufRead>(reader: &mut R) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        // Chunk extensions (`;name=value`) are allowed and ignored.
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| HttpError::Protocol(format!("bad chunk size '{size_text}'")))?;
        if size == 0 {
            // Trailers, then the empty line that ends the message.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        if body.len().saturating_add(size) > BODY_MAX_BYTES {
            return Err(HttpError::Protocol("the answer is too large".into()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).map_err(HttpError::Io)?;
        if !read_line(reader)?.is_empty() {
            return Err(HttpError::Protocol("a chunk is longer than its announced size".into()));
        }
    }
}

/// Percent-encodes one path segment or query value: everything but RFC 3986's unreserved characters, so `/` in an
/// image spec becomes `%2F` as the API wants.
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Builds a query string (`?a=1&b=x`) from pairs, encoding the values; empty when there are none.
pub fn query(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", encode_segment(v))).collect();
    format!("?{}", joined.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Response {
        read_response(BufReader::new(raw.as_bytes()), false).expect("valid response")
    }

    #[test]
    fn reads_content_length_bodies() {
        let r = parse("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}extra");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"{}");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }

    #[test]
    fn reads_chunked_bodies_and_skips_interim_answers() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
                   3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let r = parse(raw);
        assert_eq!(r.status, 201);
        assert_eq!(r.body, b"abcde");
    }

    #[test]
    fn reads_until_close_without_a_length() {
        let r = parse("HTTP/1.0 500 Oops\r\n\r\nbroken");
        assert_eq!(r.status, 500);
        assert_eq!(r.body, b"broken");
        assert!(parse("HTTP/1.1 204 No Content\r\n\r\n").body.is_empty());
    }

    #[test]
    fn refuses_garbage() {
        for raw in ["SSH-2.0-x\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", "HTTP/1.1 200"] {
            assert!(read_response(BufReader::new(raw.as_bytes()), false).is_err(), "{raw}");
        }
    }

    #[test]
    fn encodes_specs_as_one_segment() {
        assert_eq!(encode_segment("rbd/tenant/vm1"), "rbd%2Ftenant%2Fvm1");
        assert_eq!(encode_segment("a b@c"), "a%20b%40c");
        assert_eq!(encode_segment("é"), "%C3%A9");
        assert_eq!(query(&[("pool_name", "rbd"), ("namespace", "a/b")]), "?pool_name=rbd&namespace=a%2Fb");
        assert_eq!(query(&[]), "");
    }

    #[test]
    fn parses_server_urls() {
        let tcp = |host: &str, port, base: &str| Endpoint::Tcp { host: host.into(), port, base_path: base.into() };
        assert_eq!(Endpoint::from_url("http://127.0.0.1:8080"), Ok(tcp("127.0.0.1", 8080, "")));
        assert_eq!(Endpoint::from_url("http://[::1]:9000/basalt/"), Ok(tcp("::1", 9000, "/basalt")));
        assert_eq!(Endpoint::from_url("localhost:1"), Ok(tcp("localhost", 1, "")));
        assert_eq!(Endpoint::from_url("http://h"), Ok(tcp("h", 80, "")));
        assert!(Endpoint::from_url("https://h").is_err());
        assert!(Endpoint::from_url("http://h:x").is_err());
        assert!(Endpoint::from_url("http://:80").is_err());
        assert_eq!(tcp("::1", 9000, "/b").to_string(), "http://[::1]:9000/b");
    }
}
