//! Choosing the transport (the local socket, or HTTP with a token) and `login`/`logout`, which keep the token in
//! `~/.config/basalt/token` (mode 0600).

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;

use super::api::Api;
use super::error::Failure;
use super::http::Endpoint;
use super::{Global, LoginArgs};

/// The server `login` uses when neither --server nor BASALT_URL says otherwise.
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// The socket name inside the data directory (the server's `API_SOCKET`).
const API_SOCKET: &str = "api.sock";

/// Where the saved token lives: `$XDG_CONFIG_HOME/basalt/token`, else `~/.config/basalt/token`.
fn token_path() -> Result<PathBuf> {
    let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Failure::new(1, "HOME is not set: cannot find ~/.config/basalt/token"))?;
            PathBuf::from(home).join(".config")
        }
    };
    Ok(config.join("basalt").join("token"))
}

fn saved_token() -> Option<String> {
    let path = token_path().ok()?;
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// The endpoint of a `--server` URL, trusting `--ca-cert` for https.
fn endpoint_of(global: &Global, url: &str) -> Result<Endpoint> {
    Ok(Endpoint::from_url(url).and_then(|e| e.trusting(global.ca_cert.clone())).map_err(Failure::invalid)?)
}

/// The API client for a command: `--server`/`BASALT_URL` with a token from `BASALT_TOKEN` or the saved login, or
/// else the local socket, where the server treats the caller as its administrator.
pub fn connect(global: &Global) -> Result<Api> {
    let progress = !global.no_progress;
    match global.server.as_deref().filter(|s| !s.is_empty()) {
        Some(url) => {
            let endpoint = endpoint_of(global, url)?;
            let token = std::env::var("BASALT_TOKEN").ok().filter(|t| !t.trim().is_empty()).or_else(saved_token);
            Ok(Api::new(endpoint, token.map(|t| t.trim().to_owned()), progress))
        }
        None => Ok(Api::new(Endpoint::Unix(global.data_dir.join(API_SOCKET)), None, progress)),
    }
}

fn read_password() -> Result<String> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
    }
    let echo = interactive.then(EchoOff::new).flatten();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    drop(echo);
    if interactive {
        eprintln!();
    }
    read.context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(Failure::invalid("no password given (use --password, BASALT_PASSWORD, or type it on stdin)").into());
    }
    Ok(password)
}

/// Turns terminal echo off while the password is typed, and back on when dropped.
struct EchoOff {
    saved: libc::termios,
}

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: termios is plain old data; an all-zero value is valid and is overwritten by tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is stdin, checked to be a terminal; `saved` is a valid, writable termios.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return None;
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: `quiet` is a valid termios derived from the current settings.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) } != 0 {
            return None;
        }
        Some(EchoOff { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new` on the same descriptor.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}

fn save_token(token: &str) -> Result<PathBuf> {
    let path = token_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    // Write a fresh file with mode 0600 from the start, then rename, so the token is never readable by others.
    let temp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .with_context(|| format!("creating {}", temp.display()))?;
    file.write_all(format!("{token}\n").as_bytes()).with_context(|| format!("writing {}", temp.display()))?;
    file.sync_all().with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, &path).with_context(|| format!("saving {}", path.display()))?;
    Ok(path)
}

/// `basalt login`: asks the server for a token and saves it (or prints it with `--print`).
pub fn login(global: &Global, args: &LoginArgs) -> Result<ExitCode> {
    let url = global.server.as_deref().filter(|s| !s.is_empty()).unwrap_or(DEFAULT_URL);
    let endpoint = endpoint_of(global, url)?;
    let password = match &args.password {
        Some(p) if !p.is_empty() => p.clone(),
        _ => read_password()?,
    };
    let api = Api::new(endpoint, None, false);
    let answer = api.call("POST", "/api/auth", Some(&json!({"username": args.user, "password": password})))?;
    let token = answer
        .get("token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Failure::new(1, "the server's login answer has no token"))?;
    if args.print {
        println!("{token}");
    } else {
        let path = save_token(token)?;
        println!("logged in to {url} as {}; token saved in {}", args.user, path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `basalt logout`: ends the session on the server when one is named, and removes the saved token.
pub fn logout(global: &Global) -> Result<ExitCode> {
    let token = std::env::var("BASALT_TOKEN").ok().filter(|t| !t.trim().is_empty()).or_else(saved_token);
    if let (Some(url), Some(token)) = (global.server.as_deref().filter(|s| !s.is_empty()), token) {
        let endpoint = endpoint_of(global, url)?;
        let api = Api::new(endpoint, Some(token.trim().to_owned()), false);
        // The token is forgotten locally whatever the server says: an expired session is no reason to keep it.
        let _ = api.call("POST", "/api/auth/logout", None);
    }
    let path = token_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => println!("logged out; removed {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => println!("not logged in"),
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    Ok(ExitCode::SUCCESS)
}
