//! HTTPS for the CLI's blocking HTTP client: a rustls client connection (ring provider) whose plaintext is handed
//! to the client through a local socket pair, so the client keeps working on one plain byte stream, including the
//! uploads that read the answer on one thread while another still writes the body.
//!
//! Two threads move the bytes: one reads TLS records from the server and passes their plaintext on, the other
//! takes the client's plaintext and sends it as records. They share the rustls connection under a lock; records go
//! out under a second lock taken first, so records from both threads never interleave.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::http::{SYSTEM_CA_BUNDLE, TlsRoots};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn config(roots: &TlsRoots) -> io::Result<ClientConfig> {
    let path = match roots {
        TlsRoots::File(path) => path.clone(),
        TlsRoots::System => std::path::PathBuf::from(SYSTEM_CA_BUNDLE),
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&path).and_then(|certs| certs.collect::<Result<Vec<_>, _>>()).map_err(|e| {
            let hint = match roots {
                TlsRoots::System => " (name the server's CA with --ca-cert FILE or BASALT_CA_CERT)",
                TlsRoots::File(_) => "",
            };
            io::Error::other(format!("cannot read the CA certificates of {}: {e}{hint}", path.display()))
        })?;
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(io::Error::other(format!("{}: no usable CA certificate", path.display())));
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Makes a TLS connection to `host` over `tcp` (the handshake is done before returning, so certificate problems
/// surface here) and returns the plaintext end.
pub(crate) fn connect(tcp: TcpStream, host: &str, roots: &TlsRoots) -> io::Result<UnixStream> {
    connect_with(tcp, host, Arc::new(config(roots)?))
}

/// [`connect`] with a client configuration of the caller's (NBD's, with a client certificate).
pub(crate) fn connect_with(mut tcp: TcpStream, host: &str, config: Arc<ClientConfig>) -> io::Result<UnixStream> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::other(format!("'{host}' is not a valid TLS server name: {e}")))?;
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| io::Error::new(e.kind(), format!("TLS handshake with {host}: {e}")))?;
    }
    let (client_end, pump_end) = UnixStream::pair()?;
    let conn = Arc::new(Mutex::new(conn));
    let out = Arc::new(Mutex::new(tcp.try_clone()?));
    let tcp_in = tcp;
    let pump_in = pump_end.try_clone()?;
    {
        let (conn, out) = (Arc::clone(&conn), Arc::clone(&out));
        std::thread::Builder::new().name("tls-in".into()).spawn(move || from_server(tcp_in, pump_end, &conn, &out))?;
    }
    std::thread::Builder::new().name("tls-out".into()).spawn(move || to_server(pump_in, &conn, &out))?;
    Ok(client_end)
}

/// Sends whatever records rustls has ready; `out` is held across, so records keep their order.
fn send_records(conn: &Mutex<ClientConnection>, out: &Mutex<TcpStream>) -> io::Result<()> {
    let mut tcp = lock(out);
    loop {
        let mut records = Vec::new();
        {
            let mut conn = lock(conn);
            while conn.wants_write() {
                conn.write_tls(&mut records)?;
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        tcp.write_all(&records)?;
    }
}

/// Server to client: records in, plaintext out; the client sees the end of the stream when the server closes.
fn from_server(mut tcp: TcpStream, mut client: UnixStream, conn: &Mutex<ClientConnection>, out: &Mutex<TcpStream>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut plain = vec![0u8; 64 << 10];
    'outer: loop {
        let n = match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut received = &buf[..n];
        let mut chunks = Vec::new();
        let mut closed = false;
        {
            let mut tls = lock(conn);
            // Records are fed a little at a time and their plaintext taken out after each, as rustls keeps only a
            // bounded amount of unread plaintext.
            while !received.is_empty() && !closed {
                if tls.read_tls(&mut received).is_err() {
                    break 'outer;
                }
                if tls.process_new_packets().is_err() {
                    // Tell the server why (the alert rustls queued), then end the client's stream.
                    drop(tls);
                    let _ = send_records(conn, out);
                    break 'outer;
                }
                loop {
                    match tls.reader().read(&mut plain) {
                        Ok(0) => {
                            closed = true;
                            break;
                        }
                        Ok(n) => chunks.push(plain[..n].to_vec()),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            closed = true;
                            break;
                        }
                    }
                }
            }
        }
        if send_records(conn, out).is_err() {
            break;
        }
        for chunk in chunks {
            if client.write_all(&chunk).is_err() {
                break 'outer;
            }
        }
        if closed {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Write);
}

/// Client to server: plaintext in, records out. When the client is done (or gone), the TLS session is closed; when
/// the server stops taking data, the client's writes fail from then on.
fn to_server(mut client: UnixStream, conn: &Mutex<ClientConnection>, out: &Mutex<TcpStream>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let written = lock(conn).writer().write_all(&buf[..n]);
        if written.is_err() || send_records(conn, out).is_err() {
            let _ = client.shutdown(Shutdown::Read);
            return;
        }
    }
    lock(conn).send_close_notify();
    let _ = send_records(conn, out);
    let _ = lock(out).shutdown(Shutdown::Write);
}
