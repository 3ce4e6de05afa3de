//! A small blocking HTTP/1.1 client over a Unix socket or TCP, enough to talk to basalt's REST API.
//!
//! One connection per request (`Connection: close`): the CLI makes a handful of calls, so keeping connections alive
//! is not worth the complexity. Responses are read by Content-Length, chunked transfer encoding, or until the
//! server closes the connection.
//!
//! Image transfers do not fit in memory, so besides [`request`] there are streaming forms: [`open`] hands back a
//! response whose body is read as it arrives ([`StreamingResponse`]), and [`upload`] sends a body as it is
//! produced ([`Upload`]), framed by Content-Length when the size is known and chunked otherwise.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a single request may wait for the server. Long operations answer after at most a few seconds with a
/// task to poll, so only a stuck server gets anywhere near this.
const IO_TIMEOUT: Duration = Duration::from_secs(600);

/// The largest response accepted, so a confused peer cannot make the CLI allocate without bound.
const BODY_MAX_BYTES: usize = 256 << 20;

/// How much of an upload is gathered before it goes out as one write (and one chunk when chunked): large enough
/// that framing costs nothing, small enough to stay out of the way of memory.
const UPLOAD_CHUNK_BYTES: usize = 256 << 10;

/// How often the thread waiting for an upload's answer wakes to check whether the upload is over; the answer may
/// legitimately take as long as the upload itself, so the idle limit only starts counting when the body is sent.
const ANSWER_POLL: Duration = Duration::from_secs(1);

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
        /// HTTPS: the server's certificate is checked against these roots.
        tls: Option<TlsRoots>,
    },
}

/// Whom an HTTPS client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsRoots {
    /// The system's CA bundle (`/etc/ssl/certs/ca-certificates.crt`).
    System,
    /// The CA certificates in this PEM file (a private CA, or the server's own self-signed certificate).
    File(PathBuf),
}

/// Where Debian and its derivatives keep the system's trusted CAs as one PEM bundle.
pub(crate) const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Endpoint {
    /// Parses `http[s]://host[:port][/prefix]`; a URL without a scheme is taken as http. An https URL trusts the
    /// system's CAs until [`Endpoint::trusting`] names a CA file.
    pub fn from_url(url: &str) -> Result<Endpoint, String> {
        let (rest, tls) = if let Some(rest) = url.strip_prefix("http://") {
            (rest, None)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (rest, Some(TlsRoots::System))
        } else if url.contains("://") {
            return Err(format!("cannot use '{url}': only http:// and https:// URLs are supported"));
        } else {
            (url, None)
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
            None if tls.is_some() => 443,
            None => 80,
        };
        Ok(Endpoint::Tcp { host, port, base_path: path.to_owned(), tls })
    }

    /// Trusts the CA certificates of `ca` (PEM) instead of the system's for an https endpoint; refuses a CA file
    /// with a plain http URL, where it would silently do nothing.
    pub fn trusting(self, ca: Option<PathBuf>) -> Result<Endpoint, String> {
        match (self, ca) {
            (endpoint, None) => Ok(endpoint),
            (Endpoint::Tcp { host, port, base_path, tls: Some(_) }, Some(ca)) => {
                Ok(Endpoint::Tcp { host, port, base_path, tls: Some(TlsRoots::File(ca)) })
            }
            (endpoint, Some(ca)) => {
                Err(format!("--ca-cert {} applies to https:// servers only, not to {endpoint}", ca.display()))
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp { host, port, base_path, tls } => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                if host.contains(':') {
                    write!(f, "{scheme}://[{host}]:{port}{base_path}")
                } else {
                    write!(f, "{scheme}://{host}:{port}{base_path}")
                }
            }
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

/// A connection to the server, over either transport.
#[derive(Debug)]
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        match self {
            Conn::Unix(s) => s.try_clone().map(Conn::Unix),
            Conn::Tcp(s) => s.try_clone().map(Conn::Tcp),
        }
    }

    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(Some(timeout)),
            Conn::Tcp(s) => s.set_read_timeout(Some(timeout)),
        }
    }

    fn shutdown(&self) {
        // Best effort: it only serves to wake a thread blocked on the other half.
        let _ = match self {
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
        }
    }
}

/// Connects and returns the connection, the Host header and the full request path.
fn connect(endpoint: &Endpoint, path: &str) -> Result<(Conn, String, String), HttpError> {
    match endpoint {
        Endpoint::Unix(socket) => {
            let stream = UnixStream::connect(socket).map_err(HttpError::Connect)?;
            stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(HttpError::Io)?;
            stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(HttpError::Io)?;
            Ok((Conn::Unix(stream), "localhost".to_owned(), path.to_owned()))
        }
        Endpoint::Tcp { host, port, base_path, tls } => {
            let stream = TcpStream::connect((host.as_str(), *port)).map_err(HttpError::Connect)?;
            stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(HttpError::Io)?;
            stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(HttpError::Io)?;
            let _ = stream.set_nodelay(true);
            let host_header = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
            let conn = match tls {
                None => Conn::Tcp(stream),
                Some(roots) => {
                    let plain = super::tls::connect(stream, host, roots).map_err(HttpError::Connect)?;
                    plain.set_read_timeout(Some(IO_TIMEOUT)).map_err(HttpError::Io)?;
                    plain.set_write_timeout(Some(IO_TIMEOUT)).map_err(HttpError::Io)?;
                    Conn::Unix(plain)
                }
            };
            Ok((conn, host_header, format!("{base_path}{path}")))
        }
    }
}

/// How a request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`, possibly zero.
    Length(u64),
    /// `Transfer-Encoding: chunked`, for bodies whose size is not known in advance.
    Chunked,
}

fn request_head(host: &str, method: &str, path: &str, headers: &[(&str, &str)], framing: Framing) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match framing {
        // Always send a length, even zero, so servers never wait for a body on POST/PUT/DELETE.
        Framing::Length(length) => head.push_str(&format!("Content-Length: {length}\r\n\r\n")),
        Framing::Chunked => head.push_str("Transfer-Encoding: chunked\r\n\r\n"),
    }
    head
}

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
    let (conn, host, full_path) = connect(endpoint, path)?;
    exchange(conn, &host, method, &full_path, headers, body)
}

fn exchange<S: Read + Write>(
    mut stream: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    let body = body.unwrap_or_default();
    let head = request_head(host, method, path, headers, Framing::Length(body.len() as u64));
    stream.write_all(head.as_bytes()).map_err(HttpError::Io)?;
    stream.write_all(body).map_err(HttpError::Io)?;
    stream.flush().map_err(HttpError::Io)?;
    read_response(BufReader::new(stream), method == "HEAD")
}

/// A response whose body is read as it arrives, through [`Read`].
#[derive(Debug)]
pub struct StreamingResponse {
    /// HTTP status code.
    pub status: u16,
    /// Headers in the order received, names lower-cased.
    pub headers: Vec<(String, String)>,
    body: BodyReader<BufReader<Conn>>,
}

impl StreamingResponse {
    /// Returns the first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Reads the rest of the body into memory, up to the same bound as [`request`] (for error answers).
    pub fn into_body(mut self) -> Result<Vec<u8>, HttpError> {
        read_bounded(&mut self.body)
    }
}

impl Read for StreamingResponse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf)
    }
}

/// Sends a request with a small body (or none) and returns as soon as the response head has arrived; the body is
/// then read from the returned value as the server sends it.
pub fn open(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<StreamingResponse, HttpError> {
    let (mut conn, host, full_path) = connect(endpoint, path)?;
    let body = body.unwrap_or_default();
    let head = request_head(&host, method, &full_path, headers, Framing::Length(body.len() as u64));
    conn.write_all(head.as_bytes()).map_err(HttpError::Io)?;
    conn.write_all(body).map_err(HttpError::Io)?;
    conn.flush().map_err(HttpError::Io)?;
    let mut reader = BufReader::with_capacity(1 << 20, conn);
    let (status, headers) = read_head(&mut reader)?;
    let framing = body_framing(status, &headers, method == "HEAD")?;
    Ok(StreamingResponse { status, headers, body: BodyReader::new(reader, framing) })
}

/// A request whose body is written as it is produced. Its answer is read on another thread from the moment the
/// request starts, so that a server refusing the body part way (a bad stream, a missing image) is heard even
/// though it closes the connection before the body has all been sent.
#[derive(Debug)]
pub struct Upload {
    conn: Conn,
    framing: Framing,
    /// Bytes still owed under Content-Length framing.
    remaining: u64,
    buf: Vec<u8>,
    /// Set when a write to the server failed or was refused; the answer, if any, tells why.
    broken: bool,
    writing_done: Arc<AtomicBool>,
    answer: Option<JoinHandle<Result<Response, HttpError>>>,
}

/// Starts a request whose body is then written to the returned [`Upload`]; `length` is the exact body size when
/// known (Content-Length), `None` for chunked transfer encoding.
pub fn upload(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    length: Option<u64>,
) -> Result<Upload, HttpError> {
    let (mut conn, host, full_path) = connect(endpoint, path)?;
    let framing = length.map_or(Framing::Chunked, Framing::Length);
    conn.write_all(request_head(&host, method, &full_path, headers, framing).as_bytes()).map_err(HttpError::Io)?;
    let reader = conn.try_clone().map_err(HttpError::Io)?;
    // Wake up regularly instead of failing on a long silence while the body is still being produced.
    reader.set_read_timeout(ANSWER_POLL).map_err(HttpError::Io)?;
    let writing_done = Arc::new(AtomicBool::new(false));
    let patient = PatientReader { inner: reader, writing_done: Arc::clone(&writing_done), idle_since: None };
    let answer = std::thread::Builder::new()
        .name("http-answer".into())
        .spawn(move || read_response(BufReader::new(patient), false))
        .map_err(HttpError::Io)?;
    Ok(Upload {
        conn,
        framing,
        remaining: length.unwrap_or(0),
        buf: Vec::with_capacity(UPLOAD_CHUNK_BYTES),
        broken: false,
        writing_done,
        answer: Some(answer),
    })
}

impl Upload {
    /// True once the server has answered; before the body is complete that means it refused the request.
    pub fn answered(&self) -> bool {
        self.answer.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// True when a write to the server failed (or was refused because the server had already answered): the
    /// answer from [`Upload::finish`] then explains the failure better than the write error does.
    pub fn broken(&self) -> bool {
        self.broken
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.answered() {
            self.broken = true;
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the server answered before the end of the request",
            ));
        }
        let result = match self.framing {
            Framing::Length(_) => self.conn.write_all(&self.buf),
            Framing::Chunked => {
                let size = format!("{:x}\r\n", self.buf.len());
                self.conn
                    .write_all(size.as_bytes())
                    .and_then(|()| self.conn.write_all(&self.buf))
                    .and_then(|()| self.conn.write_all(b"\r\n"))
            }
        };
        self.buf.clear();
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// Ends the body and waits for the answer. With `complete` false the body is abandoned instead: nothing more
    /// is sent (no final chunk), so the server sees a request cut short rather than a complete one.
    pub fn finish(mut self, complete: bool) -> Result<Response, HttpError> {
        let sent = if complete && !self.broken { self.end_body() } else { Ok(()) };
        if (!complete || sent.is_err()) && !self.broken {
            // The server may still be waiting for the rest of the body: close so it stops, and so the answer
            // thread wakes up. (A broken connection needs nothing: the server has ended it already.)
            self.conn.shutdown();
        }
        self.writing_done.store(true, Ordering::Release);
        let answer = match self.answer.take() {
            Some(handle) => {
                handle.join().unwrap_or_else(|_| Err(HttpError::Protocol("the answer reader panicked".into())))
            }
            None => Err(HttpError::Protocol("no answer".into())),
        };
        match (sent, answer) {
            // An answer that came while sending explains the failed write.
            (_, Ok(response)) => Ok(response),
            (Err(e), Err(_)) => Err(e),
            (Ok(()), Err(e)) => Err(e),
        }
    }

    fn end_body(&mut self) -> Result<(), HttpError> {
        if let Framing::Length(length) = self.framing
            && self.remaining > 0
        {
            let sent = length - self.remaining;
            return Err(HttpError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the body ended after {sent} of the {length} bytes announced"),
            )));
        }
        self.send_buffered().map_err(HttpError::Io)?;
        if self.framing == Framing::Chunked {
            self.conn.write_all(b"0\r\n\r\n").map_err(|e| {
                self.broken = true;
                HttpError::Io(e)
            })?;
        }
        self.conn.flush().map_err(HttpError::Io)
    }
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.broken {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the connection to the server is broken"));
        }
        if let Framing::Length(_) = self.framing {
            if data.len() as u64 > self.remaining {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "more body than the announced length"));
            }
            self.remaining -= data.len() as u64;
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= UPLOAD_CHUNK_BYTES {
            self.send_buffered()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Deliberately a no-op: small writes are gathered into large ones, and the body ends in `finish`.
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // An upload dropped without `finish` (an early return) must not leave the answer thread waiting forever.
        if self.answer.is_some() {
            self.writing_done.store(true, Ordering::Release);
            self.conn.shutdown();
        }
    }
}

/// Reads the answer of an upload, sitting out read timeouts while the body is still being sent and for up to
/// [`IO_TIMEOUT`] of silence after that.
struct PatientReader {
    inner: Conn,
    writing_done: Arc<AtomicBool>,
    idle_since: Option<Instant>,
}

impl Read for PatientReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.idle_since = None;
                    return Ok(n);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if !self.writing_done.load(Ordering::Acquire) {
                        continue;
                    }
                    let since = *self.idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= IO_TIMEOUT {
                        return Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
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

/// Reads the status line and headers, skipping interim (1xx) answers.
fn read_head<R: BufRead>(reader: &mut R) -> Result<(u16, Vec<(String, String)>), HttpError> {
    loop {
        let status_line = read_line(reader)?;
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
            let line = read_line(reader)?;
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
        return Ok((status, headers));
    }
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    /// No body (HEAD, 204, 304).
    Empty,
    /// Exactly this many bytes remain.
    Length(u64),
    /// Chunked: bytes left in the current chunk, and whether the last chunk has been read.
    Chunked { left: u64, done: bool },
    /// Until the server closes the connection.
    UntilClose,
}

fn body_framing(status: u16, headers: &[(String, String)], head_only: bool) -> Result<BodyFraming, HttpError> {
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    if head_only || status == 204 || status == 304 {
        return Ok(BodyFraming::Empty);
    }
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Ok(BodyFraming::Chunked { left: 0, done: false });
    }
    match header("content-length") {
        Some(length) => length
            .parse()
            .map(BodyFraming::Length)
            .map_err(|_| HttpError::Protocol(format!("bad Content-Length '{length}'"))),
        None => Ok(BodyFraming::UntilClose),
    }
}

fn protocol_error(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// A connection that ends before the body does: the server gave up part way (it logs why).
fn cut_short() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the server broke off its answer before the end")
}

/// Reads one response body, de-chunked, and reports a body cut short as an error rather than as its end.
#[derive(Debug)]
struct BodyReader<R> {
    inner: R,
    framing: BodyFraming,
}

impl<R: BufRead> BodyReader<R> {
    fn new(inner: R, framing: BodyFraming) -> Self {
        BodyReader { inner, framing }
    }

    fn line(&mut self) -> io::Result<String> {
        read_line(&mut self.inner).map_err(|e| match e {
            HttpError::Io(e) => e,
            HttpError::Protocol(what) if what.contains("closed") => cut_short(),
            other => protocol_error(other.to_string()),
        })
    }
}

impl<R: BufRead> Read for BodyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.framing {
            BodyFraming::Empty | BodyFraming::Length(0) | BodyFraming::Chunked { done: true, .. } => Ok(0),
            BodyFraming::UntilClose => self.inner.read(buf),
            BodyFraming::Length(left) => {
                let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(cut_short());
                }
                self.framing = BodyFraming::Length(left - n as u64);
                Ok(n)
            }
            BodyFraming::Chunked { mut left, .. } => {
                if left == 0 {
                    let line = self.line()?;
                    // Chunk extensions (`;name=value`) are allowed and ignored.
                    let size_text = line.split(';').next().unwrap_or_default().trim();
                    left = u64::from_str_radix(size_text, 16)
                        .map_err(|_| protocol_error(format!("bad chunk size '{size_text}'")))?;
                    if left == 0 {
                        // Trailers, then the empty line that ends the message.
                        while !self.line()?.is_empty() {}
                        self.framing = BodyFraming::Chunked { left: 0, done: true };
                        return Ok(0);
                    }
                }
                let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(cut_short());
                }
                left -= n as u64;
                if left == 0 && !self.line()?.is_empty() {
                    return Err(protocol_error("a chunk is longer than its announced size"));
                }
                self.framing = BodyFraming::Chunked { left, done: false };
                Ok(n)
            }
        }
    }
}

/// Reads a whole body, refusing one larger than [`BODY_MAX_BYTES`].
fn read_bounded(body: &mut impl Read) -> Result<Vec<u8>, HttpError> {
    let mut out = Vec::new();
    body.take(BODY_MAX_BYTES as u64 + 1).read_to_end(&mut out).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => HttpError::Protocol(e.to_string()),
        _ => HttpError::Io(e),
    })?;
    if out.len() > BODY_MAX_BYTES {
        return Err(HttpError::Protocol(format!("the answer is larger than {BODY_MAX_BYTES} bytes")));
    }
    Ok(out)
}

fn read_response<R: BufRead>(mut reader: R, head_only: bool) -> Result<Response, HttpError> {
    let (status, headers) = read_head(&mut reader)?;
    let framing = body_framing(status, &headers, head_only)?;
    if let BodyFraming::Length(length) = framing
        && length > BODY_MAX_BYTES as u64
    {
        return Err(HttpError::Protocol(format!("the answer is too large ({length} bytes)")));
    }
    let body = read_bounded(&mut BodyReader::new(reader, framing))?;
    Ok(Response { status, headers, body })
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
    use std::io::Write;

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
    fn a_body_cut_short_is_an_error_not_its_end() {
        for raw in ["5\r\nabcde\r\n", "5\r\nab", "HTTP"] {
            let framing = BodyFraming::Chunked { left: 0, done: false };
            let mut body = BodyReader::new(BufReader::new(raw.as_bytes()), framing);
            let err = body.read_to_end(&mut Vec::new()).expect_err(raw);
            assert!(
                matches!(err.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::InvalidData),
                "{raw}: {err}"
            );
        }
        let mut body = BodyReader::new(BufReader::new(&b"abc"[..]), BodyFraming::Length(5));
        let err = body.read_to_end(&mut Vec::new()).expect_err("short");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert!(err.to_string().contains("broke off"), "{err}");
    }

    /// A server on a Unix socket for one request: `handle` gets the request head (lower-cased header names) and
    /// the connection positioned at the body, and writes the answer.
    fn serve_once(
        handle: impl FnOnce(Vec<(String, String)>, &mut BufReader<UnixStream>, &mut UnixStream) + Send + 'static,
    ) -> (tempfile::TempDir, Endpoint, JoinHandle<()>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("api.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            read_line(&mut reader).expect("request line");
            let mut headers = Vec::new();
            loop {
                let line = read_line(&mut reader).expect("header");
                let Some((name, value)) = line.split_once(':') else { break };
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
            handle(headers, &mut reader, &mut stream);
        });
        (dir, Endpoint::Unix(path), server)
    }

    fn request_body(headers: &[(String, String)], reader: &mut BufReader<UnixStream>) -> Vec<u8> {
        let framing = body_framing(200, headers, false).expect("framing");
        assert_ne!(framing, BodyFraming::UntilClose, "a request body must be delimited");
        let mut body = Vec::new();
        BodyReader::new(reader, framing).read_to_end(&mut body).expect("request body");
        body
    }

    fn answer(stream: &mut UnixStream, status: u16, json: &str) {
        let text = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{json}", json.len());
        stream.write_all(text.as_bytes()).expect("answer");
    }

    #[test]
    fn uploads_are_framed_by_length_or_chunks() {
        let data: Vec<u8> = (0..UPLOAD_CHUNK_BYTES * 2 + 77).map(|i| (i % 251) as u8).collect();
        for length in [None, Some(data.len() as u64)] {
            let expected = data.clone();
            let (_dir, endpoint, server) = serve_once(move |headers, reader, stream| {
                let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v == "chunked");
                assert_eq!(chunked, length.is_none(), "{headers:?}");
                assert!(request_body(&headers, reader) == expected, "the body arrived changed");
                answer(stream, 200, r#"{"ok":true}"#);
            });
            let mut upload = upload(&endpoint, "POST", "/x", &[], length).expect("start");
            // Writes of odd sizes, so chunk boundaries fall anywhere.
            for piece in data.chunks(1000 + 7) {
                upload.write_all(piece).expect("write");
            }
            let response = upload.finish(true).expect("answer");
            assert_eq!((response.status, response.body.as_slice()), (200, &br#"{"ok":true}"#[..]));
            server.join().expect("server");
        }
    }

    #[test]
    fn an_early_answer_explains_a_broken_upload() {
        let (_dir, endpoint, server) = serve_once(|_, _, stream| {
            // Refuse at once, without reading the body, and close, as a server rejecting a bad stream does.
            answer(stream, 400, r#"{"detail":"bad stream"}"#);
        });
        let mut upload = upload(&endpoint, "POST", "/x", &[], None).expect("start");
        let chunk = vec![7u8; 1 << 20];
        let mut failed = false;
        for _ in 0..256 {
            if upload.write_all(&chunk).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed && upload.broken(), "writes kept succeeding after the server had answered");
        let response = upload.finish(false).expect("the early answer");
        assert_eq!((response.status, response.body.as_slice()), (400, &br#"{"detail":"bad stream"}"#[..]));
        server.join().expect("server");
    }

    #[test]
    fn an_upload_short_of_its_length_fails_without_hanging() {
        let (_dir, endpoint, server) = serve_once(|_, reader, _| {
            // The server waits for the announced body; the client must give up and close instead of waiting too.
            let _ = reader.read_to_end(&mut Vec::new());
        });
        let mut upload = upload(&endpoint, "POST", "/x", &[], Some(10)).expect("start");
        upload.write_all(b"12345").expect("write");
        let err = upload.finish(true).expect_err("short body");
        assert!(err.to_string().contains("5 of the 10 bytes"), "{err}");
        server.join().expect("server");
    }

    #[test]
    fn streaming_responses_are_read_as_they_come() {
        let (_dir, endpoint, server) = serve_once(|headers, reader, stream| {
            assert!(request_body(&headers, reader).is_empty());
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
            stream.write_all(head.as_bytes()).expect("head");
            for part in ["hello ", "streaming ", "world"] {
                stream.write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes()).expect("chunk");
            }
            stream.write_all(b"0\r\n\r\n").expect("end");
        });
        let mut response = open(&endpoint, "GET", "/x", &[], None).expect("open");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("application/octet-stream"));
        let mut body = String::new();
        response.read_to_string(&mut body).expect("body");
        assert_eq!(body, "hello streaming world");
        server.join().expect("server");
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
        let tcp =
            |host: &str, port, base: &str| Endpoint::Tcp { host: host.into(), port, base_path: base.into(), tls: None };
        assert_eq!(Endpoint::from_url("http://127.0.0.1:8080"), Ok(tcp("127.0.0.1", 8080, "")));
        assert_eq!(Endpoint::from_url("http://[::1]:9000/basalt/"), Ok(tcp("::1", 9000, "/basalt")));
        assert_eq!(Endpoint::from_url("localhost:1"), Ok(tcp("localhost", 1, "")));
        assert_eq!(Endpoint::from_url("http://h"), Ok(tcp("h", 80, "")));
        let https = Endpoint::from_url("https://h").expect("https");
        assert_eq!(
            https,
            Endpoint::Tcp { host: "h".into(), port: 443, base_path: String::new(), tls: Some(TlsRoots::System) }
        );
        assert_eq!(https.to_string(), "https://h:443");
        let ca = PathBuf::from("/ca.pem");
        let private = Endpoint::from_url("https://h:8443").and_then(|e| e.trusting(Some(ca.clone()))).expect("ca");
        assert!(matches!(private, Endpoint::Tcp { port: 8443, tls: Some(TlsRoots::File(ref f)), .. } if *f == ca));
        assert!(Endpoint::from_url("http://h").and_then(|e| e.trusting(Some(ca))).is_err());
        assert!(Endpoint::from_url("ftp://h").is_err());
        assert!(Endpoint::from_url("http://h:x").is_err());
        assert!(Endpoint::from_url("http://:80").is_err());
        assert_eq!(tcp("::1", 9000, "/b").to_string(), "http://[::1]:9000/b");
    }
}
