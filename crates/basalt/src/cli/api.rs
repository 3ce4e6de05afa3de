//! The CLI's view of the REST API (docs/API.md): JSON calls with errors turned into one-line failures, background
//! tasks polled to the end with a progress line, and the answer shapes the commands read.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::Failure;
use super::http::{self, Endpoint, HttpError};

/// A connection to the server: where it is, the token to present, and whether to draw progress.
#[derive(Debug, Clone)]
pub struct Api {
    endpoint: Endpoint,
    token: Option<String>,
    progress: bool,
}

/// A successful answer: status and parsed JSON (`Value::Null` for an empty body).
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body as JSON.
    pub json: Value,
}

impl Api {
    /// A client for `endpoint`; `token` is sent as a bearer token when present.
    pub fn new(endpoint: Endpoint, token: Option<String>, progress: bool) -> Api {
        Api { endpoint, token, progress }
    }

    /// Sends a request and returns the answer when its status is 2xx; any other status becomes a [`Failure`] with
    /// the API's `detail` and an exit code from its `code`.
    pub fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Reply> {
        let payload = body.map(serde_json::to_vec).transpose().context("encoding the request")?;
        let auth = self.auth_header();
        let mut headers: Vec<(&str, &str)> = vec![("Accept", "application/json")];
        if payload.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        let response = http::request(&self.endpoint, method, path, &headers, payload.as_deref())
            .map_err(|e| self.transport_failure(e))?;
        if !(200..300).contains(&response.status) {
            return Err(self.status_failure(response.status, &response.body).into());
        }
        let json = if response.body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).map_err(|e| {
                let kind = response.header("content-type").unwrap_or("no content type");
                Failure::new(1, format!("the server's answer to {method} {path} is not JSON ({kind}): {e}"))
            })?
        };
        Ok(Reply { status: response.status, json })
    }

    /// GET and decode.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let reply = self.send("GET", path, None)?;
        decode(reply.json, path)
    }

    /// GET as raw JSON (for `--format json`, which prints the API's objects unchanged).
    pub fn get_value(&self, path: &str) -> Result<Value> {
        Ok(self.send("GET", path, None)?.json)
    }

    /// The Authorization header value, when there is a token.
    fn auth_header(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// A progress line for a transfer, drawn only when progress is wanted and stderr is a terminal.
    pub fn progress(&self, label: &str) -> Progress {
        Progress::new(label, self.progress && std::io::stderr().is_terminal())
    }

    /// A GET whose body is read as it arrives (image exports). A non-2xx answer becomes a [`Failure`] as in
    /// [`Api::send`], before any of the body is handed out.
    pub fn download(&self, path: &str) -> Result<http::StreamingResponse> {
        let auth = self.auth_header();
        let mut headers: Vec<(&str, &str)> = vec![("Accept", "application/octet-stream, application/json")];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        let response =
            http::open(&self.endpoint, "GET", path, &headers, None).map_err(|e| self.transport_failure(e))?;
        if !(200..300).contains(&response.status) {
            let status = response.status;
            let body = response.into_body().map_err(|e| self.transport_failure(e))?;
            return Err(self.status_failure(status, &body).into());
        }
        // A server without this call may answer with its web page instead (200, text/html).
        let kind = response.header("content-type").unwrap_or_default();
        if !kind.starts_with("application/octet-stream") {
            let kind = if kind.is_empty() { "no content type" } else { kind };
            return Err(
                Failure::new(1, format!("the server's answer to GET {path} is not a data stream ({kind})")).into()
            );
        }
        Ok(response)
    }

    /// A POST whose body `write_body` produces as it goes (image imports); `length` is the body's exact size when
    /// known. Returns the JSON answer. When the server refuses part way, its answer is the failure, not the broken
    /// write that followed; when `write_body` fails on its own side (a file that cannot be read), the request is
    /// abandoned unfinished, so the server never takes the partial body for a complete one.
    pub fn upload(
        &self,
        path: &str,
        length: Option<u64>,
        write_body: impl FnOnce(&mut http::Upload) -> Result<()>,
    ) -> Result<Value> {
        let auth = self.auth_header();
        let mut headers: Vec<(&str, &str)> =
            vec![("Accept", "application/json"), ("Content-Type", "application/octet-stream")];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        let mut upload =
            http::upload(&self.endpoint, "POST", path, &headers, length).map_err(|e| self.transport_failure(e))?;
        let produced = write_body(&mut upload);
        let broken = upload.broken();
        let answer = upload.finish(produced.is_ok());
        let response = match (produced, answer) {
            (Ok(()), answer) => answer.map_err(|e| self.transport_failure(e))?,
            // The server's refusal explains the broken connection.
            (Err(_), Ok(response)) if broken && !(200..300).contains(&response.status) => response,
            (Err(e), _) => {
                // A write refused by the connection reads best as a transport failure; anything else is ours.
                return Err(if broken && e.downcast_ref::<Failure>().is_none() {
                    Failure::new(1, format!("talking to the basalt server at {}: {e:#}", self.endpoint)).into()
                } else {
                    e
                });
            }
        };
        if !(200..300).contains(&response.status) {
            return Err(self.status_failure(response.status, &response.body).into());
        }
        if response.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&response.body)
            .map_err(|e| Failure::new(1, format!("the server's answer to POST {path} is not JSON: {e}")).into())
    }

    /// A call without a progress line; should it answer 202 with a task, the task is still waited for.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        self.run(method, path, body, None)
    }

    /// A call that may run as a background task: a 202 answer is polled on `/api/task` until the task ends, with
    /// `label` as the progress line (`Image flatten: 42% complete...`). Returns the synchronous answer, or the
    /// finished task object.
    pub fn long_call(&self, method: &str, path: &str, body: Option<&Value>, label: &str) -> Result<Value> {
        self.run(method, path, body, Some(label))
    }

    fn run(&self, method: &str, path: &str, body: Option<&Value>, label: Option<&str>) -> Result<Value> {
        let enabled = label.is_some() && self.progress && std::io::stderr().is_terminal();
        let mut progress = Progress::new(label.unwrap_or_default(), enabled);
        progress.update(0);
        let reply = match self.send(method, path, body) {
            Ok(reply) => reply,
            Err(e) => {
                progress.clear();
                return Err(e);
            }
        };
        let is_task = reply.status == 202 && (reply.json.get("id").is_some() || reply.json.get("name").is_some());
        if !is_task {
            progress.done();
            return Ok(reply.json);
        }
        match self.wait_task(&reply.json, &mut progress) {
            Ok(task) => {
                progress.done();
                Ok(task)
            }
            Err(e) => {
                progress.clear();
                Err(e)
            }
        }
    }

    fn wait_task(&self, accepted: &Value, progress: &mut Progress) -> Result<Value> {
        let id = accepted.get("id").and_then(Value::as_str).map(str::to_owned);
        let name = accepted.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let metadata = accepted.get("metadata").cloned().unwrap_or(Value::Null);
        // docs/API.md promises an id; without one, fall back to the dashboard's way of naming a task.
        let matches = |task: &&Value| match &id {
            Some(id) => task.get("id").and_then(Value::as_str) == Some(id),
            None => task.get("name").and_then(Value::as_str) == Some(&name) && task.get("metadata") == Some(&metadata),
        };
        let mut delay = Duration::from_millis(100);
        let mut last_seen = Instant::now();
        loop {
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(500));
            let tasks = self.get_value("/api/task")?;
            let list = |key: &str| tasks.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
            if let Some(task) = list("executing_tasks").iter().find(matches) {
                last_seen = Instant::now();
                progress.update(task.get("progress").and_then(Value::as_f64).unwrap_or(0.0) as u64);
                continue;
            }
            if let Some(task) = list("finished_tasks").iter().find(matches) {
                if task.get("success").and_then(Value::as_bool) == Some(true) {
                    return Ok(task.clone());
                }
                let exception = task.get("exception").cloned().unwrap_or(Value::Null);
                let detail = exception.get("detail").and_then(Value::as_str).unwrap_or("the task failed");
                let code = exception.get("code").map(code_text).unwrap_or_default();
                return Err(Failure::from_code(&code, detail).into());
            }
            // A task may be briefly in neither list while it moves from one to the other; give it some time.
            if last_seen.elapsed() > Duration::from_secs(30) {
                let what = id.unwrap_or(name);
                return Err(Failure::new(1, format!("task {what} disappeared from the server's task list")).into());
            }
        }
    }

    fn transport_failure(&self, err: HttpError) -> anyhow::Error {
        let failure = match (&err, &self.endpoint) {
            (HttpError::Connect(e), _)
                if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) =>
            {
                Failure::new(
                    1,
                    format!("cannot reach the basalt server at {} (is 'basalt serve' running?)", self.endpoint),
                )
            }
            (HttpError::Connect(e), Endpoint::Unix(_)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Failure::new(
                    13,
                    format!(
                        "cannot reach the basalt server at {}: permission denied (the socket is its owner's only; \
                         use --server with a login instead)",
                        self.endpoint
                    ),
                )
            }
            (HttpError::Connect(e), _) => {
                Failure::new(1, format!("cannot reach the basalt server at {}: {e}", self.endpoint))
            }
            _ => Failure::new(1, format!("talking to the basalt server at {}: {err}", self.endpoint)),
        };
        failure.into()
    }

    fn status_failure(&self, status: u16, body: &[u8]) -> Failure {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let detail = parsed.as_ref().and_then(|v| v.get("detail")).and_then(Value::as_str).map(str::to_owned);
        let code = parsed.as_ref().and_then(|v| v.get("code")).map(code_text);
        match (detail, code) {
            (Some(detail), code) => {
                let mut failure = Failure::from_code(code.as_deref().unwrap_or_default(), detail);
                if status == 404 {
                    // Ceph's 404 bodies (a missing image read or deleted) carry the status as their code.
                    failure.exit_code = 2;
                }
                if status == 401 {
                    failure.message.push_str(" (log in with 'basalt login --server URL', or set BASALT_TOKEN)");
                    failure.exit_code = 13;
                }
                failure
            }
            (None, _) => {
                let text = String::from_utf8_lossy(body);
                let first = text.lines().next().unwrap_or_default().trim();
                let exit_code = match status {
                    401 | 403 => 13,
                    404 => 2,
                    _ => 1,
                };
                if first.is_empty() {
                    Failure::new(exit_code, format!("the server answered HTTP {status}"))
                } else {
                    Failure::new(exit_code, format!("the server answered HTTP {status}: {first}"))
                }
            }
        }
    }
}

/// An error code may come as a string (`"ENOENT"`) or, from Ceph-style servers, as a number.
fn code_text(code: &Value) -> String {
    match code {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Decodes an answer into the shape a command reads; a mismatch means the server deviates from docs/API.md.
pub fn decode<T: DeserializeOwned>(json: Value, what: &str) -> Result<T> {
    serde_json::from_value(json)
        .map_err(|e| Failure::new(1, format!("unexpected answer from the server for {what}: {e}")).into())
}

/// A `\r`-redrawn progress line on stderr, like rbd's; silent unless stderr is a terminal.
#[derive(Debug)]
pub struct Progress {
    label: String,
    enabled: bool,
    last: Option<u64>,
}

impl Progress {
    /// A progress line labelled `label`; silent when not `enabled`.
    pub fn new(label: &str, enabled: bool) -> Progress {
        Progress { label: label.to_owned(), enabled, last: None }
    }

    /// Shows `done` of `total` as a percentage (nothing is known of an empty total: it shows 0%).
    pub fn update_bytes(&mut self, done: u64, total: u64) {
        let percent = if total == 0 { 0 } else { u128::from(done) * 100 / u128::from(total) };
        self.update(u64::try_from(percent).unwrap_or(100));
    }

    fn update(&mut self, percent: u64) {
        let percent = percent.min(100);
        if self.enabled && self.last != Some(percent) {
            self.last = Some(percent);
            let mut err = std::io::stderr();
            let _ = write!(err, "\r{}: {percent}% complete...", self.label);
            let _ = err.flush();
        }
    }

    /// Ends the line with `done.`, as rbd does on success.
    pub fn done(&mut self) {
        if self.enabled {
            eprintln!("\r{}: 100% complete...done.", self.label);
        }
    }

    /// Erases the line so a failure prints as the only line.
    pub fn clear(&mut self) {
        if self.enabled {
            let mut err = std::io::stderr();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

/// An image as `GET /api/block/image/{spec}` returns it (the fields the CLI prints).
#[derive(Debug, Clone, Deserialize)]
pub struct Image {
    /// Image id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Virtual size in bytes.
    #[serde(default, deserialize_with = "null_as_default")]
    pub size: u64,
    /// Object size in bytes.
    #[serde(default, deserialize_with = "null_as_default")]
    pub obj_size: u64,
    /// Number of objects.
    #[serde(default, deserialize_with = "null_as_default")]
    pub num_objs: u64,
    /// Object order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub order: u8,
    /// Prefix of data object names.
    #[serde(default, deserialize_with = "null_as_default")]
    pub block_name_prefix: String,
    /// Feature bits.
    #[serde(default, deserialize_with = "null_as_default")]
    pub features: u64,
    /// Stripe unit in bytes.
    #[serde(default)]
    pub stripe_unit: Option<u64>,
    /// Stripe count.
    #[serde(default)]
    pub stripe_count: Option<u64>,
    /// Separate data pool.
    #[serde(default)]
    pub data_pool: Option<String>,
    /// Image format (2).
    #[serde(default)]
    pub image_format: Option<u64>,
    /// The parent, for clones.
    #[serde(default)]
    pub parent: Option<Parent>,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Last modification (RFC 3339).
    #[serde(default)]
    pub modify_timestamp: Option<String>,
    /// Number of snapshots.
    #[serde(default)]
    pub snapshot_count: Option<u64>,
    /// Snapshots.
    #[serde(default)]
    pub snapshots: Vec<Snapshot>,
    /// Clients that have the image open.
    #[serde(default)]
    pub watchers: Vec<Watcher>,
    /// OK, degraded or migrating (older servers: absent).
    #[serde(default)]
    pub status: Option<String>,
    /// Why the status is not OK.
    #[serde(default)]
    pub status_detail: Option<String>,
}

/// A field an unreadable image (status degraded) has as null reads as its default.
fn null_as_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A clone's parent.
#[derive(Debug, Clone, Deserialize)]
pub struct Parent {
    /// Pool of the parent.
    pub pool_name: String,
    /// Namespace of the parent.
    #[serde(default)]
    pub pool_namespace: Option<String>,
    /// Name of the parent image.
    pub image_name: String,
    /// The parent snapshot.
    pub snap_name: String,
    /// Bytes still read through to the parent.
    #[serde(default)]
    pub overlap: Option<u64>,
    /// True when the parent image is in the trash.
    #[serde(default)]
    pub in_trash: bool,
}

impl Parent {
    /// `pool[/ns]/image@snap`.
    pub fn spec(&self) -> String {
        format!(
            "{}@{}",
            join_spec(&self.pool_name, self.pool_namespace.as_deref().unwrap_or_default(), &self.image_name),
            self.snap_name
        )
    }
}

/// A snapshot of an image.
#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    /// Snapshot id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Image size at the snapshot.
    pub size: u64,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Protected from removal, clonable.
    #[serde(default)]
    pub is_protected: Option<bool>,
}

/// A client with the image open.
#[derive(Debug, Clone, Deserialize)]
pub struct Watcher {
    /// True when it may write.
    #[serde(default)]
    pub writable: bool,
}

/// A clone of a snapshot.
#[derive(Debug, Clone, Deserialize)]
pub struct Child {
    /// Pool.
    pub pool_name: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Name.
    pub image_name: String,
    /// Id.
    #[serde(default)]
    pub image_id: Option<String>,
    /// True when the clone is in the trash.
    #[serde(default)]
    pub in_trash: bool,
}

/// One `du` row.
#[derive(Debug, Clone, Deserialize)]
pub struct DuEntry {
    /// Snapshot name, or null for the image head.
    pub snapshot: Option<String>,
    /// Virtual size.
    pub provisioned_bytes: u64,
    /// Bytes stored.
    pub used_bytes: u64,
}

/// One changed extent.
#[derive(Debug, Clone, Deserialize)]
pub struct DiffExtent {
    /// Offset.
    pub offset: u64,
    /// Length.
    pub length: u64,
    /// Data (true) or zeroed (false).
    pub exists: bool,
}

/// One image in the trash.
#[derive(Debug, Clone, Deserialize)]
pub struct TrashEntry {
    /// Image id.
    pub id: String,
    /// Original name.
    pub name: String,
    /// `USER`, `REMOVING`.
    #[serde(default)]
    pub source: Option<String>,
    /// `normal` or `purging`.
    #[serde(default)]
    pub status: Option<String>,
    /// When it was trashed (RFC 3339).
    #[serde(default)]
    pub deletion_time: Option<String>,
    /// When it may be removed (RFC 3339).
    #[serde(default)]
    pub deferment_end_time: Option<String>,
}

/// A namespace with its image count.
#[derive(Debug, Clone, Deserialize)]
pub struct NamespaceEntry {
    /// Name.
    pub namespace: String,
    /// Images in it.
    #[serde(default)]
    pub num_images: Option<u64>,
}

/// A pool.
#[derive(Debug, Clone, Deserialize)]
pub struct Pool {
    /// Name.
    pub pool_name: String,
    /// Numeric id.
    #[serde(default)]
    pub pool: Option<u64>,
    /// Application tags.
    #[serde(default)]
    pub application_metadata: Vec<String>,
    /// `OK` or not.
    #[serde(default)]
    pub health: Option<String>,
    /// Usage.
    #[serde(default)]
    pub stats: Option<PoolStats>,
    /// Quota in bytes (0: none).
    #[serde(default)]
    pub quota_max_bytes: u64,
    /// Quota in objects (0: none).
    #[serde(default)]
    pub quota_max_objects: u64,
}

/// A pool's usage.
#[derive(Debug, Clone, Deserialize)]
pub struct PoolStats {
    /// Images in the pool.
    #[serde(default)]
    pub image_count: Option<u64>,
    /// Sum of virtual sizes.
    #[serde(default)]
    pub provisioned_bytes: Option<u64>,
    /// Bytes stored.
    #[serde(default)]
    pub used_bytes: Option<u64>,
}

/// One configuration value with its source.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigEntry {
    /// Option name.
    pub name: String,
    /// Value (a string, number, boolean or null).
    pub value: Value,
    /// Where it comes from: `global`/`pool`/`image`, or 0/1/2 in image objects.
    pub source: Value,
}

impl ConfigEntry {
    /// The value as text.
    pub fn value_text(&self) -> String {
        match &self.value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    /// The source as a word: `global`, `pool` or `image`.
    pub fn source_text(&self) -> String {
        match &self.source {
            Value::String(s) => s.clone(),
            Value::Number(n) => match n.as_u64() {
                Some(0) => "global".into(),
                Some(1) => "pool".into(),
                Some(2) => "image".into(),
                _ => n.to_string(),
            },
            other => other.to_string(),
        }
    }
}

/// The API path of an image: `/api/block/image/{url-encoded spec}`.
pub fn image_path(spec: &basalt_core::ImageSpec) -> String {
    format!("/api/block/image/{}", http::encode_segment(&spec.to_string()))
}

/// `pool[/ns]/name`.
pub fn join_spec(pool: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() { format!("{pool}/{name}") } else { format!("{pool}/{namespace}/{name}") }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::net::UnixListener;
    use std::thread::JoinHandle;

    use super::*;

    /// A fake server on a Unix socket answering `connections` requests with `respond(request line)`; returns the
    /// request lines it saw.
    fn fake_server(
        connections: usize,
        mut respond: impl FnMut(&str) -> (u16, String) + Send + 'static,
    ) -> (tempfile::TempDir, Api, JoinHandle<Vec<String>>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..connections {
                let (mut stream, _) = listener.accept().expect("accept");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut request_line = String::new();
                reader.read_line(&mut request_line).expect("request line");
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).expect("header");
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().expect("length");
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).expect("body");
                let (status, answer) = respond(request_line.trim());
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                stream.write_all(response.as_bytes()).expect("answer");
                seen.push(request_line.trim().to_owned());
            }
            seen
        });
        let api = Api::new(Endpoint::Unix(path), None, true);
        (dir, api, handle)
    }

    fn failure_of(err: &anyhow::Error) -> Failure {
        err.downcast_ref::<Failure>().cloned().expect("a Failure")
    }

    #[test]
    fn a_202_task_is_polled_to_its_result() {
        let mut polls = 0;
        let (_dir, api, server) = fake_server(3, move |line| {
            if line.starts_with("POST") {
                return (202, r#"{"name":"rbd/flatten","metadata":{"image_spec":"rbd/c"},"id":"t1"}"#.into());
            }
            polls += 1;
            if polls == 1 {
                let running = r#"{"id":"t1","name":"rbd/flatten","progress":50,"success":null}"#;
                (200, format!(r#"{{"executing_tasks":[{running}],"finished_tasks":[]}}"#))
            } else {
                let other = r#"{"id":"t0","success":false,"exception":{"detail":"old","code":"EIO"}}"#;
                let done = r#"{"id":"t1","progress":100,"success":true,"exception":null,"ret_value":{"ok":1}}"#;
                (200, format!(r#"{{"executing_tasks":[],"finished_tasks":[{other},{done}]}}"#))
            }
        });
        let task = api.long_call("POST", "/api/block/image/rbd%2Fc/flatten", None, "Image flatten").expect("done");
        assert_eq!(task["ret_value"]["ok"], 1);
        let seen = server.join().expect("server");
        assert_eq!(
            seen,
            ["POST /api/block/image/rbd%2Fc/flatten HTTP/1.1", "GET /api/task HTTP/1.1", "GET /api/task HTTP/1.1"]
        );
    }

    #[test]
    fn a_failed_task_fails_with_its_exception() {
        let (_dir, api, server) = fake_server(2, |line| {
            if line.starts_with("DELETE") {
                return (202, r#"{"name":"rbd/delete","metadata":{},"id":"t9"}"#.into());
            }
            let failed = r#"{"id":"t9","success":false,"exception":{"detail":"image is busy","code":"EBUSY"}}"#;
            (200, format!(r#"{{"executing_tasks":[],"finished_tasks":[{failed}]}}"#))
        });
        let err = api.call("DELETE", "/api/block/image/rbd%2Fvm", None).expect_err("the task failed");
        assert_eq!(failure_of(&err), Failure::new(16, "image is busy"));
        server.join().expect("server");
    }

    #[test]
    fn error_answers_become_failures_with_errno_exit_codes() {
        let (_dir, api, server) = fake_server(4, |line| match line {
            l if l.contains("/a ") => {
                (409, r#"{"detail":"image has snapshots","code":"ENOTEMPTY","status":409}"#.into())
            }
            l if l.contains("/b ") => (401, r#"{"detail":"no token","code":"EACCES"}"#.into()),
            l if l.contains("/c ") => (502, "Bad Gateway\nmore".into()),
            _ => (200, "not json".into()),
        });
        let fail = |path: &str| failure_of(&api.call("GET", path, None).expect_err(path));
        assert_eq!(fail("/a"), Failure::new(39, "image has snapshots"));
        let unauthorized = fail("/b");
        assert_eq!(unauthorized.exit_code, 13);
        assert!(unauthorized.message.starts_with("no token (log in with 'basalt login"), "{}", unauthorized.message);
        assert_eq!(fail("/c"), Failure::new(1, "the server answered HTTP 502: Bad Gateway"));
        assert!(fail("/d").message.contains("is not JSON"));
        server.join().expect("server");
    }
}
