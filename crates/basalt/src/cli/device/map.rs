//! `device map`, `device unmap` and `device list`.
//!
//! `map` forks before doing anything: the child negotiates the export on each connection (through a TLS relay when
//! asked), hands the sockets to the kernel with `NBD_CMD_CONNECT`, writes its state file and reports the device to
//! the parent, which prints it and exits. The child stays as the device's daemon, like rbd-nbd: it listens for
//! `NBD_CMD_LINK_DEAD` on the nbd multicast group and gives the kernel a fresh connection with
//! `NBD_CMD_RECONFIGURE`, retrying until the server is back; I/O waits meanwhile, up to the dead-connection timeout.
//! It ends when the device is disconnected. Any failure before the device exists leaves nothing behind: the sockets
//! close with the child.
//!
//! State files (`/run/basalt/devices/nbdX.json`, or `$BASALT_DEVICE_DIR`) record what each device maps.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::super::Global;
use super::super::error::Failure;
use super::super::output::{Align, Format, Table, print_json};
use super::handshake::{self, Address, FLAG_CAN_MULTI_CONN, FLAG_READ_ONLY, Refused, TlsSetup};
use super::netlink::{ConnectRequest, Nbd, NlError};

/// `device map`.
#[derive(Args, Debug)]
pub struct MapArgs {
    /// The image or snapshot: pool[/namespace]/image[@snap] (a snapshot maps read-only)
    #[arg(value_name = "SPEC")]
    spec: String,
    /// The NBD server: HOST[:PORT] or unix:PATH (default: DATA_DIR/nbd.sock when it exists, else 127.0.0.1:10809)
    #[arg(long, value_name = "ADDR")]
    nbd_address: Option<String>,
    /// Map read-only: the kernel refuses writes (the server still opens the head as a writer, holding an
    /// exclusive-lock image's lock; map a snapshot for a read-only view that leaves the lock free)
    #[arg(long)]
    read_only: bool,
    /// Require that no other client can write the image while it is mapped (the image's exclusive-lock feature)
    #[arg(long)]
    exclusive: bool,
    /// Connections to the server (more than one needs an image without exclusive-lock, or a read-only map)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    connections: u32,
    /// Seconds I/O waits for a lost connection to come back (server restart, network) before failing
    #[arg(long, value_name = "S", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86400))]
    timeout: u64,
    /// Seconds before a request without an answer is sent again on a fresh connection
    #[arg(long, value_name = "S", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    io_timeout: u64,
    /// Use TLS with the files of `basalt nbd cert issue USER --out DIR` (ca-cert.pem, client-cert.pem,
    /// client-key.pem); the daemon relays the kernel's plaintext through it
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the host of --nbd-address)
    #[arg(long, value_name = "NAME", requires = "tls_dir")]
    tls_hostname: Option<String>,
}

/// `device unmap`.
#[derive(Args, Debug)]
pub struct UnmapArgs {
    /// /dev/nbdX, nbdX, or the spec it maps
    #[arg(value_name = "DEV|SPEC")]
    target: String,
}

/// `device list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// What a mapping's state file records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Mapping {
    id: u32,
    device: String,
    pool: String,
    namespace: String,
    image: String,
    snap: Option<String>,
    spec: String,
    server: String,
    read_only: bool,
    exclusive: bool,
    tls: bool,
    connections: u32,
    pid: u32,
    backend: String,
}

fn state_dir() -> PathBuf {
    std::env::var_os("BASALT_DEVICE_DIR").map_or_else(|| PathBuf::from("/run/basalt/devices"), PathBuf::from)
}

fn state_path(id: u32) -> PathBuf {
    state_dir().join(format!("nbd{id}.json"))
}

fn load(path: &Path) -> Option<Mapping> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn mappings() -> Vec<Mapping> {
    let mut out: Vec<Mapping> = std::fs::read_dir(state_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| load(&e.path()))
        .collect();
    out.sort_by_key(|m| m.id);
    out
}

fn no_module() -> Failure {
    Failure::new(19, "the kernel has no nbd module loaded: run `modprobe nbd` (as root), then map again")
}

fn open_netlink() -> Result<Nbd, Failure> {
    match Nbd::open() {
        Ok(Some(nl)) => Ok(nl),
        Ok(None) => Err(no_module()),
        Err(e) => Err(Failure::new(1, format!("cannot open the kernel's netlink interface: {e}"))),
    }
}

fn netlink_failure(e: &NlError) -> Failure {
    let code = u8::try_from(e.errno).unwrap_or(1);
    let hint = match e.errno {
        libc::EPERM | libc::EACCES => ": mapping devices needs root (CAP_SYS_ADMIN)",
        libc::ENOSPC | libc::EBUSY | libc::ENODEV => {
            ": no free /dev/nbd device (unmap one, or reload the module with more: modprobe nbd nbds_max=N)"
        }
        _ => "",
    };
    Failure::new(code, format!("{e}{hint}"))
}

fn refused_failure(r: Refused) -> Failure {
    let code = match &r {
        Refused::Unreachable(_) => 111, // ECONNREFUSED-like: nothing to map from
        Refused::UnknownExport(_) => 2, // ENOENT
        Refused::Policy(_) => 16,       // EBUSY: a lock or a permission
        Refused::TlsRequired(_) => 13,  // EACCES
        Refused::Other(_) => 1,
    };
    let message = match r {
        Refused::Policy(m) if m.contains("lock") => {
            format!("{m} (another client holds the image's write lock: unmap or stop it, or map a snapshot)")
        }
        other => other.to_string(),
    };
    Failure::new(code, message)
}

/// Everything the daemon needs to (re)connect.
struct Plan {
    address: Address,
    export: String,
    tls: Option<TlsSetup>,
}

impl Plan {
    fn connect(&self) -> Result<handshake::Connected, Refused> {
        handshake::connect(&self.address, &self.export, self.tls.as_ref())
    }
}

/// Maps the device: forks the daemon and prints what it reports.
pub fn map(global: &Global, args: &MapArgs) -> Result<()> {
    let (image, snap) = basalt_core::parse_spec(&args.spec).map_err(|e| Failure::core(&e))?;
    let export = match &snap {
        Some(s) => format!("{image}@{s}"),
        None => image.to_string(),
    };
    if snap.is_some() && args.exclusive {
        return Err(Failure::invalid("--exclusive takes a write lock: a snapshot maps read-only").into());
    }
    if args.exclusive && args.read_only {
        return Err(Failure::invalid("--exclusive and --read-only contradict each other").into());
    }
    let address = match &args.nbd_address {
        Some(a) => Address::parse(a).map_err(Failure::invalid)?,
        None => {
            let socket = global.data_dir.join(basalt_server_nbd_socket());
            if socket.exists() {
                Address::Unix(std::path::absolute(&socket).unwrap_or(socket))
            } else {
                Address::Tcp("127.0.0.1:10809".into())
            }
        }
    };
    let tls = match &args.tls_dir {
        Some(dir) => {
            let name = args.tls_hostname.clone().unwrap_or_else(|| address.host());
            Some(handshake::tls_setup(dir, name).map_err(Failure::invalid)?)
        }
        None => None,
    };
    // Refuse early, in the caller's terminal, what needs no server.
    drop(open_netlink()?);
    std::fs::create_dir_all(state_dir())
        .map_err(|e| Failure::new(1, format!("cannot create {}: {e}", state_dir().display())))?;
    let read_only = args.read_only || snap.is_some();
    let mapping = Mapping {
        id: 0,
        device: String::new(),
        pool: image.pool().to_string(),
        namespace: image.namespace().to_string(),
        image: image.image.to_string(),
        snap: snap.as_ref().map(ToString::to_string),
        spec: export.clone(),
        server: address.to_string(),
        read_only,
        exclusive: args.exclusive,
        tls: tls.is_some(),
        connections: args.connections,
        pid: 0,
        backend: String::new(),
    };
    let plan = Plan { address, export, tls };

    let (mut report_rx, report_tx) = pipe()?;
    // SAFETY: the CLI is single-threaded here (no runtime, no helper threads yet), so the child may run Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Failure::new(1, format!("fork: {}", std::io::Error::last_os_error())).into());
    }
    if pid == 0 {
        drop(report_rx);
        daemon(plan, mapping, args, report_tx);
    }
    drop(report_tx);
    let mut report = String::new();
    let _ = report_rx.read_to_string(&mut report);
    match report.split_once(' ') {
        Some(("ok", device)) => {
            println!("{device}");
            Ok(())
        }
        Some(("err", rest)) => {
            let (code, message) = rest.split_once(' ').unwrap_or(("1", rest));
            Err(Failure::new(code.parse().unwrap_or(1), message.trim_end()).into())
        }
        _ => Err(Failure::new(1, "the mapping daemon ended without a word (see the kernel log)").into()),
    }
}

fn basalt_server_nbd_socket() -> &'static str {
    "nbd.sock"
}

fn pipe() -> Result<(std::fs::File, std::fs::File), Failure> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(Failure::new(1, format!("pipe: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: both descriptors are fresh and owned here.
    Ok(unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) })
}

/// The forked child: map, report, then keep the device's connections alive. Never returns.
fn daemon(plan: Plan, mut mapping: Mapping, args: &MapArgs, mut report: std::fs::File) -> ! {
    // SAFETY: setsid in the fresh child detaches it from the caller's terminal and process group.
    unsafe { libc::setsid() };
    match establish(&plan, &mut mapping, args) {
        Ok(()) => {
            let _ = writeln!(report, "ok {}", mapping.device);
        }
        Err(f) => {
            let _ = write!(report, "err {} {}", f.exit_code, f.message);
            std::process::exit(1);
        }
    }
    drop(report);
    redirect_output(mapping.id);
    log(&format!("mapped {} from {} as {}", mapping.spec, mapping.server, mapping.device));
    watch(&plan, &mapping);
    std::process::exit(0);
}

/// Connects the device; on any failure nothing stays mapped.
fn establish(plan: &Plan, mapping: &mut Mapping, args: &MapArgs) -> Result<(), Failure> {
    let mut nl = open_netlink()?;
    let first = plan.connect().map_err(refused_failure)?;
    let multi = first.flags & FLAG_CAN_MULTI_CONN != 0;
    let server_read_only = first.flags & FLAG_READ_ONLY != 0;
    if args.exclusive && (multi || server_read_only) {
        return Err(Failure::invalid(format!(
            "--exclusive needs the image's exclusive-lock feature (then no other client can write it while it is \
             mapped): basalt feature enable {} exclusive-lock",
            mapping.spec
        )));
    }
    if args.connections > 1 && !multi {
        return Err(Failure::invalid(format!(
            "{} allows one writer connection (exclusive-lock): map it with --connections 1",
            mapping.spec
        )));
    }
    let mut sockets = vec![first.socket];
    for _ in 1..args.connections {
        sockets.push(plan.connect().map_err(refused_failure)?.socket);
    }
    let mut flags = u64::from(first.flags);
    if mapping.read_only {
        flags |= u64::from(FLAG_READ_ONLY);
    }
    mapping.read_only |= server_read_only;
    mapping.pid = std::process::id();
    mapping.backend = format!("basalt:{}:{}", mapping.pid, mapping.spec);
    // The kernel keeps the identifier short.
    mapping.backend.truncate(200);
    let request = ConnectRequest {
        size_bytes: first.size_bytes,
        block_size: 512,
        server_flags: flags,
        io_timeout: args.io_timeout,
        dead_conn_timeout: args.timeout,
        backend: mapping.backend.clone(),
    };
    let fds: Vec<i32> = sockets.iter().map(AsRawFd::as_raw_fd).collect();
    let id = nl.connect(&request, &fds).map_err(|e| netlink_failure(&e))?;
    // The kernel holds the sockets now; the copies here close (a TLS relay keeps its own end).
    drop(sockets);
    mapping.id = id;
    mapping.device = format!("/dev/nbd{id}");
    let written = serde_json::to_vec_pretty(&*mapping)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(state_path(id), json));
    if let Err(e) = written {
        let _ = nl.disconnect(id);
        return Err(Failure::new(
            1,
            format!("cannot write {}: {e} (the device was disconnected)", state_path(id).display()),
        ));
    }
    wait_for_node(id);
    Ok(())
}

/// The device node may appear a moment after the connect (udev or devtmpfs).
fn wait_for_node(id: u32) {
    let node = PathBuf::from(format!("/dev/nbd{id}"));
    let until = Instant::now() + Duration::from_secs(5);
    while !node.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn redirect_output(id: u32) {
    let path = state_dir().join(format!("nbd{id}.log"));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
    let devnull = std::fs::File::open("/dev/null");
    // SAFETY: dup2 onto the standard descriptors of this process, from descriptors that stay open during the calls.
    unsafe {
        if let Ok(null) = &devnull {
            libc::dup2(null.as_raw_fd(), 0);
        }
        if let Ok(file) = &file {
            libc::dup2(file.as_raw_fd(), 1);
            libc::dup2(file.as_raw_fd(), 2);
        }
    }
}

fn log(message: &str) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    eprintln!("{} basalt device daemon[{}]: {message}", basalt_core::time::rfc3339(now as i64), std::process::id());
}

/// Replaces dead connections until the device is disconnected.
fn watch(plan: &Plan, mapping: &Mapping) {
    let Ok(mut nl) = open_netlink() else { return };
    let monitor = match open_netlink() {
        Ok(m) => m,
        Err(e) => {
            log(&format!("cannot listen for dead links: {e}"));
            return;
        }
    };
    if let Err(e) = monitor.subscribe() {
        log(&format!("cannot join the nbd multicast group: {e}"));
    }
    let mut pending = 0u32;
    let mut last_status = Instant::now();
    let mut failures = 0u32;
    loop {
        let wait = if pending > 0 { Duration::from_millis(500) } else { Duration::from_secs(2) };
        match monitor.dead_links(wait) {
            Ok(dead) => {
                let ours = dead.iter().filter(|i| **i == mapping.id).count() as u32;
                if ours > 0 {
                    log(&format!("{ours} connection(s) of {} died; reconnecting", mapping.device));
                }
                pending = (pending + ours).min(mapping.connections);
            }
            Err(e) => log(&format!("reading netlink: {e}")),
        }
        while pending > 0 {
            match plan.connect() {
                Ok(conn) => match nl.reconfigure(mapping.id, &mapping.backend, &[conn.socket.as_raw_fd()]) {
                    Ok(()) => {
                        pending -= 1;
                        failures = 0;
                        log(&format!("reconnected {} to {}", mapping.device, mapping.server));
                    }
                    Err(e) if e.errno == libc::ENOSPC => {
                        // No dead slot left: the kernel already has all its connections.
                        pending = 0;
                    }
                    Err(e) => {
                        log(&format!("{e}"));
                        break;
                    }
                },
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(20) {
                        log(&format!("cannot reconnect yet (attempt {failures}): {e}"));
                    }
                    break;
                }
            }
        }
        if last_status.elapsed() >= Duration::from_secs(2) {
            last_status = Instant::now();
            match nl.status(Some(mapping.id)) {
                Ok(list) if list.iter().any(|d| d.index == mapping.id && d.connected) => {}
                Ok(_) => {
                    log(&format!("{} was disconnected; exiting", mapping.device));
                    let path = state_path(mapping.id);
                    if load(&path).is_some_and(|m| m.pid == mapping.pid) {
                        let _ = std::fs::remove_file(path);
                    }
                    return;
                }
                Err(e) => log(&format!("{e}")),
            }
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// The mappings whose devices are still connected (state files of vanished mappings are ignored).
fn live_mappings(nl: Option<&mut Nbd>) -> Vec<Mapping> {
    let all = mappings();
    let Some(nl) = nl else { return Vec::new() };
    let status = nl.status(None).unwrap_or_default();
    all.into_iter().filter(|m| status.iter().any(|d| d.index == m.id && d.connected) && backend_matches(m)).collect()
}

/// True when `/sys/block/nbdX/backend` names this mapping (or the kernel does not show it).
fn backend_matches(m: &Mapping) -> bool {
    match std::fs::read_to_string(format!("/sys/block/nbd{}/backend", m.id)) {
        Ok(text) => text.trim() == m.backend,
        Err(_) => pid_alive(m.pid),
    }
}

/// Lists the mapped devices.
pub fn list(args: &ListArgs) -> Result<()> {
    let mut nl = match Nbd::open() {
        Ok(nl) => nl,
        Err(e) => return Err(Failure::new(1, format!("cannot open the kernel's netlink interface: {e}")).into()),
    };
    let live = live_mappings(nl.as_mut());
    if args.format == Format::Json {
        let rows: Vec<serde_json::Value> = live
            .iter()
            .map(|m| {
                serde_json::json!({
                    "id": m.id, "pool": m.pool, "namespace": m.namespace, "name": m.image, "snap": m.snap,
                    "device": m.device, "server": m.server, "read_only": m.read_only, "exclusive": m.exclusive,
                    "tls": m.tls, "connections": m.connections, "pid": m.pid,
                })
            })
            .collect();
        return print_json(&serde_json::Value::Array(rows));
    }
    if live.is_empty() {
        return Ok(());
    }
    let mut table = Table::new(&[
        ("id", Align::Left),
        ("pool", Align::Left),
        ("namespace", Align::Left),
        ("image", Align::Left),
        ("snap", Align::Left),
        ("device", Align::Left),
        ("server", Align::Left),
    ]);
    for m in &live {
        table.row(vec![
            m.id.to_string(),
            m.pool.clone(),
            m.namespace.clone(),
            m.image.clone(),
            m.snap.clone().unwrap_or_else(|| "-".into()),
            m.device.clone(),
            m.server.clone(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

/// Unmaps a device: refuses while it is mounted, flushes, disconnects, and stops its daemon.
pub fn unmap(args: &UnmapArgs) -> Result<()> {
    let mut nl = open_netlink()?;
    let live = live_mappings(Some(&mut nl));
    let target = args.target.trim();
    let by_device = target.strip_prefix("/dev/").unwrap_or(target);
    let found: Vec<&Mapping> = if let Some(n) = by_device.strip_prefix("nbd").and_then(|n| n.parse::<u32>().ok()) {
        live.iter().filter(|m| m.id == n).collect()
    } else {
        let (image, snap) = basalt_core::parse_spec(target).map_err(|e| Failure::core(&e))?;
        let spec = match snap {
            Some(s) => format!("{image}@{s}"),
            None => image.to_string(),
        };
        live.iter().filter(|m| m.spec == spec).collect()
    };
    let m = match found.as_slice() {
        [] => {
            return Err(Failure::new(
                2,
                format!("{target} is not mapped by basalt device map (see basalt device list)"),
            )
            .into());
        }
        [m] => (*m).clone(),
        many => {
            let devices: Vec<&str> = many.iter().map(|m| m.device.as_str()).collect();
            return Err(Failure::invalid(format!(
                "{target} is mapped more than once ({}): name the device",
                devices.join(", ")
            ))
            .into());
        }
    };
    if let Some(mount) = mounted_at(&m.device) {
        return Err(Failure::new(16, format!("{} is mounted on {mount}: unmount it first", m.device)).into());
    }
    flush(&m)?;
    nl.disconnect(m.id).map_err(|e| netlink_failure(&e))?;
    // The daemon notices within a couple of seconds; stop it now.
    if let Ok(pid) = libc::pid_t::try_from(m.pid)
        && pid > 0
        && pid_alive(m.pid)
    {
        // SAFETY: sends SIGTERM to the daemon this mapping recorded.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let until = Instant::now() + Duration::from_secs(10);
    while pid_alive(m.pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(state_path(m.id));
    Ok(())
}

fn mounted_at(device: &str) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut fields = l.split_whitespace();
        let (dev, at) = (fields.next()?, fields.next()?);
        (dev == device || dev.starts_with(&format!("{device}p"))).then(|| at.to_owned())
    })
}

/// Writes the device's dirty pages and has the server flush them.
fn flush(m: &Mapping) -> Result<(), Failure> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!m.read_only)
        .open(&m.device)
        .map_err(|e| Failure::new(1, format!("cannot open {} to flush it: {e}", m.device)))?;
    if !m.read_only {
        file.sync_all().map_err(|e| Failure::new(5, format!("flushing {}: {e}", m.device)))?;
    }
    drop(file);
    Ok(())
}
