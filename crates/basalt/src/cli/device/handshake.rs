//! The client half of the NBD fixed-newstyle handshake, up to the transmission phase the kernel takes over:
//! greeting, client flags, optional `NBD_OPT_STARTTLS` (the TLS session then runs through a relay, see
//! [`super::super::tls`]), and `NBD_OPT_GO` for the export, with the server's refusals turned into clear errors.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const FLAG_FIXED_NEWSTYLE: u16 = 1;
const FLAG_NO_ZEROES: u16 = 2;
const OPT_STARTTLS: u32 = 5;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_ERR: u32 = 1 << 31;
const INFO_EXPORT: u16 = 0;

/// Transmission flags the kernel understands.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// The server allows several connections to one export.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `HOST:PORT`.
    Tcp(String),
    /// `unix:PATH`.
    Unix(PathBuf),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Address {
    /// Parses `unix:PATH`, `HOST:PORT`, `[V6]:PORT` or `HOST` (port 10809).
    pub fn parse(text: &str) -> Result<Address, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if text.is_empty() {
            return Err("the NBD address is empty".into());
        }
        let has_port = if text.starts_with('[') { text.contains("]:") } else { text.matches(':').count() == 1 };
        if has_port {
            let (_, port) = text.rsplit_once(':').unwrap_or_default();
            port.parse::<u16>().map_err(|_| format!("'{text}': the port must be a number from 1 to 65535"))?;
            Ok(Address::Tcp(text.to_owned()))
        } else if text.contains(':') && !text.starts_with('[') {
            Ok(Address::Tcp(format!("[{text}]:10809")))
        } else {
            Ok(Address::Tcp(format!("{text}:10809")))
        }
    }

    /// The host part of a TCP address (for the TLS server name).
    pub fn host(&self) -> String {
        match self {
            Address::Unix(_) => "localhost".into(),
            Address::Tcp(a) => {
                let host = a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h);
                host.trim_start_matches('[').trim_end_matches(']').to_owned()
            }
        }
    }
}

/// Why a handshake failed.
#[derive(Debug)]
pub enum Refused {
    /// Nothing answers at the address.
    Unreachable(String),
    /// The export does not exist (or this client may not see it).
    UnknownExport(String),
    /// The server refused by policy: a write lock held by another client, or no permission.
    Policy(String),
    /// The server requires TLS and none was configured.
    TlsRequired(String),
    /// Anything else.
    Other(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Unreachable(m)
            | Refused::UnknownExport(m)
            | Refused::Policy(m)
            | Refused::TlsRequired(m)
            | Refused::Other(m) => f.write_str(m),
        }
    }
}

/// A connection in the transmission phase: the socket for the kernel, the size and flags of the export.
#[derive(Debug)]
pub struct Connected {
    /// The socket the kernel takes (a TCP or Unix socket, or the plaintext end of a TLS relay).
    pub socket: std::os::fd::OwnedFd,
    /// The export's size.
    pub size_bytes: u64,
    /// The transmission flags.
    pub flags: u16,
}

/// TLS material: a CA to trust, a client certificate and key, and the name the server's certificate must carry.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// The client configuration.
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// The expected server name.
    pub server_name: String,
}

/// Loads `DIR/ca-cert.pem` and, when present, `DIR/client-cert.pem` with `DIR/client-key.pem` (as
/// `basalt nbd cert issue` writes them).
pub fn tls_setup(dir: &std::path::Path, server_name: String) -> Result<TlsSetup, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca_path = dir.join("ca-cert.pem");
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&ca_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read {}: {e}", ca_path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(format!("{}: no usable CA certificate", ca_path.display()));
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
    let (cert_path, key_path) = (dir.join("client-cert.pem"), dir.join("client-key.pem"));
    let config = if cert_path.exists() {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read {}: {e}", cert_path.display()))?;
        let key =
            PrivateKeyDer::from_pem_file(&key_path).map_err(|e| format!("cannot read {}: {e}", key_path.display()))?;
        builder.with_client_auth_cert(chain, key).map_err(|e| format!("{}: {e}", cert_path.display()))?
    } else {
        builder.with_no_client_auth()
    };
    Ok(TlsSetup { config: std::sync::Arc::new(config), server_name })
}

fn io_refused(address: &Address, e: &io::Error) -> Refused {
    Refused::Unreachable(format!("cannot reach the NBD server at {address}: {e}"))
}

/// Connects and negotiates `export`, ready for transmission.
pub fn connect(address: &Address, export: &str, tls: Option<&TlsSetup>) -> Result<Connected, Refused> {
    let timeout = Some(Duration::from_secs(15));
    match address {
        Address::Unix(path) => {
            let mut s = UnixStream::connect(path).map_err(|e| io_refused(address, &e))?;
            s.set_read_timeout(timeout)
                .and_then(|()| s.set_write_timeout(timeout))
                .map_err(|e| io_refused(address, &e))?;
            let flags = greet(&mut s, address)?;
            let (size, tflags) = match tls {
                Some(tls) => {
                    return Err(Refused::Other(format!(
                        "TLS over a Unix socket is not supported (server name {}): the socket is served in clear",
                        tls.server_name
                    )));
                }
                None => go(&mut s, export, flags)?,
            };
            s.set_read_timeout(None).and_then(|()| s.set_write_timeout(None)).map_err(|e| io_refused(address, &e))?;
            Ok(Connected { socket: s.into(), size_bytes: size, flags: tflags })
        }
        Address::Tcp(a) => {
            let mut s = resolve_and_connect(a).map_err(|e| io_refused(address, &e))?;
            let _ = s.set_nodelay(true);
            s.set_read_timeout(timeout)
                .and_then(|()| s.set_write_timeout(timeout))
                .map_err(|e| io_refused(address, &e))?;
            let flags = greet(&mut s, address)?;
            match tls {
                None => {
                    let (size, tflags) = go(&mut s, export, flags)?;
                    s.set_read_timeout(None)
                        .and_then(|()| s.set_write_timeout(None))
                        .map_err(|e| io_refused(address, &e))?;
                    Ok(Connected { socket: s.into(), size_bytes: size, flags: tflags })
                }
                Some(tls) => {
                    send_option(&mut s, OPT_STARTTLS, &[]).map_err(|e| io_refused(address, &e))?;
                    let (kind, data) = read_reply(&mut s, OPT_STARTTLS).map_err(|e| io_refused(address, &e))?;
                    if kind != REP_ACK {
                        return Err(refusal(kind, &data, export, "STARTTLS"));
                    }
                    s.set_read_timeout(None)
                        .and_then(|()| s.set_write_timeout(None))
                        .map_err(|e| io_refused(address, &e))?;
                    let mut plain = super::super::tls::connect_with(s, &tls.server_name, tls.config.clone())
                        .map_err(|e| Refused::Other(format!("TLS with {address}: {e}")))?;
                    plain.set_read_timeout(timeout).map_err(|e| io_refused(address, &e))?;
                    let (size, tflags) = go(&mut plain, export, flags)?;
                    plain.set_read_timeout(None).map_err(|e| io_refused(address, &e))?;
                    Ok(Connected { socket: plain.into(), size_bytes: size, flags: tflags })
                }
            }
        }
    }
}

fn resolve_and_connect(address: &str) -> io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = io::Error::other(format!("'{address}' resolves to no address"));
    for addr in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn greet<S: Read + Write>(s: &mut S, address: &Address) -> Result<u16, Refused> {
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).map_err(|e| io_refused(address, &e))?;
    let magic = u64::from_be_bytes(hello[0..8].try_into().unwrap_or_default());
    let opt = u64::from_be_bytes(hello[8..16].try_into().unwrap_or_default());
    if magic != NBDMAGIC || opt != IHAVEOPT {
        return Err(Refused::Other(format!("{address} is not a fixed-newstyle NBD server")));
    }
    let server = u16::from_be_bytes([hello[16], hello[17]]);
    if server & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(Refused::Other(format!("{address} does not speak fixed-newstyle NBD")));
    }
    let client = u32::from(server & (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
    s.write_all(&client.to_be_bytes()).map_err(|e| io_refused(address, &e))?;
    Ok(server)
}

fn send_option<S: Write>(s: &mut S, option: u32, data: &[u8]) -> io::Result<()> {
    let mut out = Vec::with_capacity(16 + data.len());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(data);
    s.write_all(&out)
}

fn read_reply<S: Read>(s: &mut S, option: u32) -> io::Result<(u32, Vec<u8>)> {
    let mut head = [0u8; 20];
    s.read_exact(&mut head)?;
    let magic = u64::from_be_bytes(head[0..8].try_into().unwrap_or_default());
    let echoed = u32::from_be_bytes(head[8..12].try_into().unwrap_or_default());
    let kind = u32::from_be_bytes(head[12..16].try_into().unwrap_or_default());
    let len = u32::from_be_bytes(head[16..20].try_into().unwrap_or_default());
    if magic != REPLY_MAGIC || echoed != option || len > (64 << 10) {
        return Err(io::Error::other("the server's option reply is malformed"));
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data)?;
    Ok((kind, data))
}

fn refusal(kind: u32, data: &[u8], export: &str, what: &str) -> Refused {
    let message = String::from_utf8_lossy(data).into_owned();
    let said = if message.is_empty() { String::new() } else { format!(": {message}") };
    match kind & !REP_ERR {
        2 => Refused::Policy(format!("the server refused {what} of '{export}'{said}")),
        5 => Refused::TlsRequired(format!(
            "the NBD server requires TLS: give --tls-dir DIR with the files of `basalt nbd cert issue USER --out DIR`{said}"
        )),
        6 => Refused::UnknownExport(format!(
            "no export '{export}' on the server (no such image or snapshot, or \
             this client may not see it){said}"
        )),
        1 if what == "STARTTLS" => Refused::Other(format!("the NBD server does not offer TLS{said}")),
        code => Refused::Other(format!("the server refused {what} of '{export}' (NBD error {code}){said}")),
    }
}

fn go<S: Read + Write>(s: &mut S, export: &str, _server_flags: u16) -> Result<(u64, u16), Refused> {
    let io_err = |e: io::Error| Refused::Unreachable(format!("the NBD server hung up during the handshake: {e}"));
    let mut data = Vec::new();
    data.extend_from_slice(&u32::try_from(export.len()).unwrap_or(u32::MAX).to_be_bytes());
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    send_option(s, OPT_GO, &data).map_err(io_err)?;
    let mut export_info = None;
    loop {
        let (kind, data) = read_reply(s, OPT_GO).map_err(io_err)?;
        match kind {
            REP_INFO if data.len() >= 12 && u16::from_be_bytes([data[0], data[1]]) == INFO_EXPORT => {
                let size = u64::from_be_bytes(data[2..10].try_into().unwrap_or_default());
                let flags = u16::from_be_bytes([data[10], data[11]]);
                export_info = Some((size, flags));
            }
            REP_ACK => {
                return export_info
                    .ok_or_else(|| Refused::Other("the server accepted the export without saying its size".into()));
            }
            k if k & REP_ERR != 0 => return Err(refusal(k, &data, export, "the export")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_default_port_and_unix_paths() {
        assert_eq!(Address::parse("10.0.2.2").expect("host"), Address::Tcp("10.0.2.2:10809".into()));
        assert_eq!(Address::parse("h:1234").expect("host:port"), Address::Tcp("h:1234".into()));
        assert_eq!(Address::parse("[::1]:5").expect("v6"), Address::Tcp("[::1]:5".into()));
        assert_eq!(Address::parse("::1").expect("bare v6"), Address::Tcp("[::1]:10809".into()));
        assert_eq!(Address::parse("unix:/run/x.sock").expect("unix"), Address::Unix("/run/x.sock".into()));
        assert!(Address::parse("h:port").is_err());
        assert!(Address::parse("unix:").is_err());
        assert_eq!(Address::parse("[::1]:5").expect("v6").host(), "::1");
        assert_eq!(Address::parse("example.org:5").expect("name").host(), "example.org");
    }
}
