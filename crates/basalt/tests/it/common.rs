//! Helpers shared by the end-to-end tests: a real `basalt serve` on a temp data dir, the `basalt` binary run against
//! it over the socket (or HTTP), and checks of the one-line failure rule.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const ADMIN_PASSWORD: &str = "cli-test-secret-1";

/// A running `basalt serve`, stopped with SIGTERM on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) data: tempfile::TempDir,
    /// Server log and a HOME for the CLI, outside the store.
    scratch: tempfile::TempDir,
    port: u16,
}

pub(crate) fn free_port() -> u16 {
    // Bind to an ephemeral port and release it: the server then binds it by number.
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("local address").port()
}

impl Server {
    pub(crate) fn start() -> Server {
        Server::start_with_env(&[])
    }

    /// Starts a server with extra environment variables (for example shorter background intervals).
    pub(crate) fn start_with_env(env: &[(&str, &str)]) -> Server {
        let data = tempfile::tempdir().expect("temp dir");
        let scratch = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = spawn_serve(data.path(), scratch.path(), port, env);
        let mut server = Server { child, data, scratch, port };
        server.wait_ready_on_free_ports(env, true);
        server
    }

    /// Stops the server (SIGTERM, as an operator would) and starts it again on the same data directory.
    pub(crate) fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.stop();
        self.start_again(env);
    }

    /// Starts the server again on the same data directory after [`Server::stop`].
    pub(crate) fn start_again(&mut self, env: &[(&str, &str)]) {
        self.child = spawn_serve(self.data.path(), self.scratch.path(), self.port, env);
        self.wait_ready_on_free_ports(env, false);
    }

    /// Waits for the server; if it could not listen because another test's process took a port between
    /// [`free_port`] releasing it and the server binding it, starts it again on fresh ports (the NBD port always,
    /// the API port only when `new_api_port`).
    fn wait_ready_on_free_ports(&mut self, env: &[(&str, &str)], new_api_port: bool) {
        for _ in 0..4 {
            let logged = self.log().len();
            if self.wait_ready() {
                return;
            }
            assert!(self.log()[logged..].contains("Address already in use"), "basalt serve exited: {}", self.log());
            if new_api_port {
                self.port = free_port();
            }
            self.child = spawn_serve(self.data.path(), self.scratch.path(), self.port, env);
        }
        assert!(self.wait_ready(), "basalt serve found its ports taken five times: {}", self.log());
    }

    /// Waits until the server answers; false if it exited first.
    fn wait_ready(&mut self) -> bool {
        let socket = self.data.path().join("api.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if socket.exists() && self.try_run(&["pool", "ls"]).status.success() {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            assert!(Instant::now() < deadline, "api.sock did not appear within 20 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub(crate) fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the pid of our own child, which has not been waited for yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path().join("server.log")).unwrap_or_default()
    }

    pub(crate) fn home(&self) -> PathBuf {
        self.scratch.path().join("home")
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_basalt"));
        cmd.env("BASALT_DATA_DIR", self.data.path())
            .env("HOME", self.home())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("BASALT_URL")
            .env_remove("BASALT_TOKEN")
            .env_remove("BASALT_PASSWORD")
            .stdin(Stdio::null());
        cmd
    }

    pub(crate) fn try_run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run basalt")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.try_run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "basalt {args:?} failed ({}): {stderr}{stdout}", out.status);
        stdout
    }

    /// Runs a command that must fail with `code` and one stderr line `basalt: ...` containing `needle`.
    pub(crate) fn fails(&self, args: &[&str], code: i32, needle: &str) -> String {
        check_failure(&self.try_run(args), args, code, needle)
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("basalt {args:?} printed no JSON ({e}): {out}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_serve(data: &std::path::Path, scratch: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(scratch.join("server.log")).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_basalt"));
    cmd.args(["serve", "--data-dir"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--nbd-listen", &format!("127.0.0.1:{}", free_port())])
        .env("BASALT_ADMIN_PASSWORD", ADMIN_PASSWORD)
        // The embedded engine, even when the environment names a Ceph cluster for the Ceph tests.
        .env_remove("BASALT_CEPH_CONF")
        .env_remove("BASALT_CEPH_ID")
        .env("BASALT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.spawn().expect("start basalt serve")
}

pub(crate) fn check_failure(out: &Output, args: &[&str], code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "basalt {args:?}: {stderr}{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.lines().count(), 1, "basalt {args:?}: not one line: {stderr}");
    assert!(stderr.starts_with("basalt: "), "basalt {args:?}: {stderr}");
    assert!(stderr.contains(needle), "basalt {args:?}: expected '{needle}' in: {stderr}");
    stderr
}

/// The id of the trash entry named `name` in `trash ls` output (`ID NAME` lines).
pub(crate) fn trash_id(listing: &str, name: &str) -> String {
    listing
        .lines()
        .find_map(|l| l.split_once(' ').filter(|(_, n)| *n == name).map(|(id, _)| id.to_owned()))
        .unwrap_or_else(|| panic!("'{name}' not in trash listing: {listing}"))
}

pub(crate) fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

impl Server {
    /// Runs a command with `input` on its stdin; stdout and stderr are captured.
    pub(crate) fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run basalt");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        // A writer thread, so a command that stops reading early cannot dead-lock the test on a full pipe.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("wait for basalt");
        let _ = writer.join();
        out
    }

    /// Logs in over HTTP as the administrator and returns the token.
    pub(crate) fn admin_token(&self) -> String {
        let url = self.url();
        let token = self.ok(&["login", "--server", &url, "--user", "admin", "--password", ADMIN_PASSWORD, "--print"]);
        token.trim().to_owned()
    }

    /// One raw HTTP/1.1 call to the REST API; returns the status and the JSON body (Null when empty).
    pub(crate) fn http(&self, method: &str, path: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
        let addr = format!("127.0.0.1:{}", self.port);
        let mut stream = TcpStream::connect(&addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("answer");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let payload = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(rest)
        } else {
            rest.to_owned()
        };
        let json = if payload.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&payload).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {payload}"))
        };
        (status, json)
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}
