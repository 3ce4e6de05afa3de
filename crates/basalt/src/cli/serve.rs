//! `basalt serve`: starts logging and a tokio runtime and runs the REST API server until a shutdown signal.

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use super::error::Failure;

fn address(text: &str, option: &str) -> Result<SocketAddr, Failure> {
    // Accept names (`localhost:8080`) as well as literal addresses; the first resolution wins.
    text.to_socket_addrs().ok().and_then(|mut addrs| addrs.next()).ok_or_else(|| {
        Failure::invalid(format!("invalid {option} '{text}': expected HOST:PORT such as 127.0.0.1:8080"))
    })
}

/// The REST API's options of `basalt serve`.
#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    /// The fewest characters a password may have
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    password_min_length: u16,
    /// Serve the REST API over HTTPS with this certificate chain (PEM)
    #[arg(long, value_name = "PEM", env = "BASALT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "PEM", env = "BASALT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a --listen address that is not loopback (passwords and tokens cross in clear)
    #[arg(long)]
    insecure_http: bool,
    /// Serve /metrics without a token on a --listen address that is not loopback
    #[arg(long)]
    metrics_public: bool,
    /// Seconds a client has to send a request's headers (also how long an idle keep-alive connection stays)
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    http_header_timeout: u64,
    /// Seconds an API connection may go without any traffic before it is closed
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    http_idle_timeout: u64,
    /// API connections served at once on each listener (TCP and api.sock); more are closed at once
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    http_max_connections: u32,
    /// API connections served at once from one client address on the TCP listener
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    http_max_connections_per_address: u32,
}

impl ApiArgs {
    fn options(&self) -> basalt_server::ApiOptions {
        basalt_server::ApiOptions {
            password_policy: basalt_server::auth::PasswordPolicy { min_chars: usize::from(self.password_min_length) },
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(basalt_server::listen::ApiTls { cert: cert.clone(), key: key.clone() }),
                _ => None,
            },
            insecure_http: self.insecure_http,
            metrics_public: self.metrics_public,
            header_timeout: Duration::from_secs(self.http_header_timeout),
            idle_timeout: Duration::from_secs(self.http_idle_timeout),
            max_connections: usize::try_from(self.http_max_connections).unwrap_or(usize::MAX),
            max_per_address: usize::try_from(self.http_max_connections_per_address).unwrap_or(usize::MAX),
        }
    }
}

/// How NBD TCP clients authenticate.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NbdTlsMode {
    /// No TLS of basalt's own (TLS only with --nbd-tls-cert)
    Off,
    /// TLS with a certificate from basalt's own CA (DATA_DIR/nbd-tls), and client certificates from that CA
    /// required: issue them with `basalt nbd cert issue USER --out DIR`; each client gets its user's access
    Auto,
}

/// The NBD listener's authentication options of `basalt serve`.
#[derive(clap::Args, Debug)]
pub struct NbdArgs {
    /// NBD over TLS with client certificates naming basalt users: `auto` needs no PKI of your own
    #[arg(
        long,
        value_name = "MODE",
        value_enum,
        default_value = "off",
        env = "BASALT_NBD_TLS",
        conflicts_with = "nbd_tls_cert"
    )]
    nbd_tls: NbdTlsMode,
    /// Allow --nbd-listen off loopback without client certificates: anyone who reaches the port can then read and
    /// write every image. Without it such a listener is refused
    #[arg(long)]
    nbd_insecure_no_auth: bool,
}

impl NbdArgs {
    fn options(&self) -> basalt_server::nbd_access::NbdOptions {
        basalt_server::nbd_access::NbdOptions {
            tls_auto: self.nbd_tls == NbdTlsMode::Auto,
            insecure_no_auth: self.nbd_insecure_no_auth,
        }
    }
}

/// What serves the images: a Ceph cluster, or the embedded store with this much metadata memory (and its data in
/// the page cache or not).
pub struct Backing {
    pub ceph: Option<basalt_server::CephConfig>,
    pub cache_bytes: usize,
    /// Image data bypasses the page cache (`--direct-io`).
    pub direct_io: bool,
}

/// Runs the server with logs filtered by `BASALT_LOG` (default `info`).
pub fn run(
    data_dir: &Path,
    listen: &str,
    nbd_listen: &str,
    nbd_tls: Option<basalt_nbd::TlsFiles>,
    backing: Backing,
    api: ApiArgs,
    nbd: NbdArgs,
) -> Result<ExitCode> {
    // Whatever the server creates (data, sockets, keys) is the owner's only; files are created with explicit
    // modes too, so this is a second guard.
    // SAFETY: umask(2) only sets the process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    // Password hashes take about 19 MiB each; without a fixed threshold glibc would serve them from its arenas after
    // the first one and keep the freed memory there (some 200 MiB after a burst of logins). Above 16 MiB, memory
    // comes from mmap and goes back to the system when freed.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt(3) only tunes the allocator; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
    }
    let listen = address(listen, "--listen")?;
    let nbd_listen = address(nbd_listen, "--nbd-listen")?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BASALT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal, so log files and journald stay plain text.
    let ansi = std::io::stderr().is_terminal();
    // A line that cannot be written (stderr on a full disk) is dropped: by default tracing reports the failure with
    // `eprintln!`, which panics when stderr fails too, and a panic in a connection's task closes it unanswered.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    let config = basalt_server::ServeConfig {
        data_dir: data_dir.to_path_buf(),
        listen,
        nbd_listen,
        nbd_tls,
        nbd: nbd.options(),
        ceph: backing.ceph,
        cache_bytes: backing.cache_bytes,
        direct_io: backing.direct_io,
        api: api.options(),
    };
    runtime.block_on(basalt_server::serve(config)).map_err(|e| Failure::new(1, e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}
