//! The REST API against abuse, end to end on the real binary: login floods, over-long credentials, creation races,
//! the password policy, HTTPS, slow and idle connections, connection caps, security headers and error bodies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::{ADMIN_PASSWORD, Server, call, login, start, start_on, start_with};

/// Runs `n` copies of one call at once and returns their statuses.
fn parallel(server: &Server, n: usize, call_once: impl Fn(&Server, usize) -> u16 + Sync) -> Vec<u16> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let call_once = &call_once;
                s.spawn(move || call_once(server, i))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    })
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[test]
fn parallel_wrong_passwords_are_checked_at_most_the_limit() {
    // All 200 at once from one address: more than one address may keep open by default.
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let server = start_with(dir, Some(ADMIN_PASSWORD), &["--http-max-connections-per-address", "256"]);
    let statuses = parallel(&server, 200, |server, i| {
        call(server, "POST", "/api/auth", None, Some(json!({"username": "admin", "password": format!("wrong-{i}")}))).0
    });
    let (checked, limited) = (count(&statuses, 401), count(&statuses, 429));
    assert_eq!(checked + limited, 200, "{statuses:?}");
    assert!(checked <= 5, "{checked} wrong passwords were checked against a limit of 5");
    // The limit holds for the right password too, until the window passes.
    let right = json!({"username": "admin", "password": ADMIN_PASSWORD});
    assert_eq!(call(&server, "POST", "/api/auth", None, Some(right)).0, 429);
}

#[test]
fn over_long_user_names_and_passwords_get_400_without_a_check() {
    let server = start(Some(ADMIN_PASSWORD));
    let long_name = json!({"username": "a".repeat(1 << 20), "password": "x"});
    for _ in 0..10 {
        let (status, body) = call(&server, "POST", "/api/auth", None, Some(long_name.clone()));
        assert_eq!(status, 400, "{body}");
        assert!(body["detail"].as_str().is_some_and(|d| d.contains("longer than 64 bytes")), "{body}");
    }
    let long_password = json!({"username": "admin", "password": "p".repeat(4096)});
    assert_eq!(call(&server, "POST", "/api/auth", None, Some(long_password)).0, 400);
    // None of that counted as a failed login.
    login(&server, "admin", ADMIN_PASSWORD);
}

#[test]
fn parallel_creations_of_one_user_or_role_make_exactly_one() {
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let users = parallel(&server, 20, |server, i| {
        let body = json!({"username": "twin", "password": format!("twin-password-{i}")});
        call(server, "POST", "/api/user", Some(&token), Some(body)).0
    });
    assert_eq!(count(&users, 201), 1, "{users:?}");
    assert_eq!(count(&users, 400), 19, "the others are refused as Ceph refuses an existing user: {users:?}");
    let roles = parallel(&server, 20, |server, i| {
        let body = json!({"name": "twins", "description": format!("{i}"), "scopes_permissions": {"pool": ["read"]}});
        call(server, "POST", "/api/role", Some(&token), Some(body)).0
    });
    assert_eq!(count(&roles, 201), 1, "{roles:?}");
    assert_eq!(count(&roles, 400), 19, "{roles:?}");
    let (_, listed) = call(&server, "GET", "/api/user", Some(&token), None);
    let twins = listed.as_array().expect("users").iter().filter(|u| u["username"] == "twin").count();
    assert_eq!(twins, 1, "{listed}");
}

#[test]
fn the_password_policy_is_enforced_and_configurable() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let server = start_with(dir, Some(ADMIN_PASSWORD), &["--password-min-length", "12"]);
    let token = login(&server, "admin", ADMIN_PASSWORD);
    let create = |username: &str, password: &str| -> (u16, Value) {
        call(&server, "POST", "/api/user", Some(&token), Some(json!({"username": username, "password": password})))
    };
    for (password, why) in
        [("eleven-char", "at least 12"), ("            ", "white space"), ("dave-the-user", "the user name")]
    {
        let (status, body) = create("dave-the-user", password);
        assert_eq!(status, 400, "{password:?}: {body}");
        assert!(body["detail"].as_str().is_some_and(|d| d.contains(why)), "{password:?}: {body}");
    }
    assert_eq!(create("dave-the-user", "twelve chars").0, 201);
}

#[test]
fn an_administrator_reset_ends_the_users_sessions() {
    let server = start(Some(ADMIN_PASSWORD));
    let admin = login(&server, "admin", ADMIN_PASSWORD);
    let body = json!({"username": "erin", "password": "erin-password-1", "roles": ["read-only"]});
    assert_eq!(call(&server, "POST", "/api/user", Some(&admin), Some(body)).0, 201);
    let erin = login(&server, "erin", "erin-password-1");
    assert_eq!(call(&server, "GET", "/api/auth/check", Some(&erin), None).0, 200);
    let reset = json!({"password": "erin-password-2"});
    assert_eq!(call(&server, "PUT", "/api/user/erin", Some(&admin), Some(reset)).0, 200);
    assert_eq!(call(&server, "GET", "/api/auth/check", Some(&erin), None).0, 401);
}

/// A throw-away CA and a server certificate it signed for 127.0.0.1 and localhost; returns the CA, certificate and
/// key files.
fn certificates(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "basalt test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("server key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("params");
    let cert = params.signed_by(&key, &ca).expect("server certificate");
    let paths = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&paths.0, ca.pem()).expect("write CA");
    std::fs::write(&paths.1, cert.pem()).expect("write certificate");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write key");
    (paths.0, paths.1, paths.2)
}

fn basalt(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let home = tempfile::tempdir().expect("home");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_basalt"));
    cmd.args(args)
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("BASALT_URL")
        .env_remove("BASALT_TOKEN")
        .env_remove("BASALT_CA_CERT")
        .env_remove("BASALT_PASSWORD")
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run basalt")
}

#[test]
fn the_cli_talks_to_an_https_server_that_it_trusts_through_ca_cert() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let pki = tempfile::tempdir().expect("pki dir");
    let (ca, cert, key) = certificates(pki.path());
    let (cert, key, ca) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"), ca.to_str().expect("utf-8"));
    let server = start_with(dir, Some(ADMIN_PASSWORD), &["--tls-cert", cert, "--tls-key", key]);
    let url = format!("https://{}", server.addr);
    let out = basalt(&["login", "--server", &url, "--ca-cert", ca, "--password", ADMIN_PASSWORD, "--print"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // The CA can come from the environment too, and uploads and downloads work through the TLS stream.
    let env = [("BASALT_TOKEN", token.as_str()), ("BASALT_CA_CERT", ca), ("BASALT_URL", url.as_str())];
    let out = basalt(&["create", "--size", "4M", "rbd/secure"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = basalt(&["ls", "rbd"], &env);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "secure", "{}", String::from_utf8_lossy(&out.stderr));
    let image = pki.path().join("image.raw");
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&image, &data).expect("image file");
    let out = basalt(&["import", image.to_str().expect("utf-8"), "rbd/copy"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let back = pki.path().join("back.raw");
    let out = basalt(&["export", "rbd/copy", back.to_str().expect("utf-8")], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&back).expect("exported") == data, "the image changed on its way through TLS");
    // Without the CA the certificate is not trusted, and plain HTTP gets no answer from the TLS port.
    let out = basalt(&["ls", "--server", &url], &[("BASALT_TOKEN", token.as_str())]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS") || stderr.contains("certificate"), "{stderr}");
    let plain = format!("http://{}", server.addr);
    assert!(!basalt(&["ls", "--server", &plain], &[("BASALT_TOKEN", token.as_str())]).status.success());
}

#[test]
fn plain_http_off_loopback_is_refused_unless_asked_for_and_metrics_then_need_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "0.0.0.0:0", "--nbd-listen", "127.0.0.1:0"])
        .env_remove("BASALT_CEPH_CONF")
        .stdin(Stdio::null())
        .output()
        .expect("run basalt serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("refusing to serve the REST API in clear on 0.0.0.0"), "{stderr}");
    assert!(stderr.contains("--insecure-http"), "{stderr}");

    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let server = start_on(dir, Some(ADMIN_PASSWORD), "0.0.0.0", &["--insecure-http"]);
    assert_eq!(call(&server, "GET", "/metrics", None, None).0, 401);
    let token = login(&server, "admin", ADMIN_PASSWORD);
    assert_eq!(call(&server, "GET", "/metrics", Some(&token), None).0, 200);
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let public = start_on(dir, Some(ADMIN_PASSWORD), "0.0.0.0", &["--insecure-http", "--metrics-public"]);
    assert_eq!(call(&public, "GET", "/metrics", None, None).0, 200);
    // On loopback it stays public.
    let local = start(Some(ADMIN_PASSWORD));
    assert_eq!(call(&local, "GET", "/metrics", None, None).0, 200);
}

/// Sends `raw` and returns everything the server sends until it closes, or None if it stays silent and open for
/// `wait`.
fn closed_within(stream: &mut impl Read, wait: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return Some(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(got),
        }
    }
    None
}

const HALF_HEAD: &[u8] = b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ";

#[test]
fn half_sent_headers_are_cut_off_and_others_still_get_answers() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let server = start_with(dir, Some(ADMIN_PASSWORD), &["--http-header-timeout", "1", "--http-idle-timeout", "1"]);
    let mut slow: Vec<TcpStream> = (0..48)
        .map(|_| {
            let mut s = TcpStream::connect(&server.addr).expect("connect");
            s.write_all(HALF_HEAD).expect("half a head");
            s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
            s
        })
        .collect();
    assert_eq!(call(&server, "GET", "/api/health", None, None).0, 200, "a normal request waited behind the slow");
    for s in &mut slow {
        let answer = closed_within(s, Duration::from_secs(20)).expect("a half-sent head stayed open");
        let text = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    // A body that stops coming is cut off by the idle timeout.
    let mut stalled = TcpStream::connect(&server.addr).expect("connect");
    let head = "POST /api/auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    stalled.write_all(head.as_bytes()).expect("head");
    stalled.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    assert!(closed_within(&mut stalled, Duration::from_secs(20)).is_some(), "a stalled body kept its connection");
}

#[test]
fn each_listener_serves_at_most_its_connection_limit() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let server = start_with(dir, Some(ADMIN_PASSWORD), &["--http-max-connections", "8"]);
    let hold: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(&server.addr).expect("connect");
            s.write_all(HALF_HEAD).expect("half a head");
            s
        })
        .collect();
    let mut extra = TcpStream::connect(&server.addr).expect("the kernel still accepts");
    extra.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    assert!(closed_within(&mut extra, Duration::from_secs(5)).is_some(), "a ninth connection was kept");
    let socket = server.dir.path().join("api.sock");
    let unix_hold: Vec<UnixStream> = (0..8)
        .map(|_| {
            let mut s = UnixStream::connect(&socket).expect("connect");
            s.write_all(HALF_HEAD).expect("half a head");
            s
        })
        .collect();
    let mut unix_extra = UnixStream::connect(&socket).expect("connect");
    unix_extra.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    assert!(closed_within(&mut unix_extra, Duration::from_secs(5)).is_some(), "a ninth socket connection was kept");
    // Once the holders go, clients get in again.
    drop(hold);
    drop(unix_hold);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((200, _)) = crate::api::try_call(&server, "GET", "/api/health", None, None) {
            break;
        }
        assert!(Instant::now() < deadline, "the API did not take connections again");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One raw request; returns the head (lower-cased) and the body.
fn raw(server: &Server, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_owned())
}

#[test]
fn answers_carry_security_headers_and_errors_their_json_body() {
    let server = start(Some(ADMIN_PASSWORD));
    for path in ["/", "/api/health", "/api/nope"] {
        let (head, _) = raw(&server, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        for header in [
            "x-frame-options: deny",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "content-security-policy: default-src 'self'; script-src 'self'",
        ] {
            assert!(head.contains(header), "{path}: no '{header}' in {head}");
        }
    }
    let (head, _) = raw(&server, "GET /api/docs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(head.contains("content-security-policy: default-src 'none'; script-src 'sha256-"), "{head}");
    let long_target =
        format!("GET /api/health?x={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "a".repeat(9000));
    let (head, body) = raw(&server, &long_target);
    assert!(head.starts_with("http/1.1 414"), "{head}");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON body")["status"], "414 URI Too Long");
    let big_headers =
        format!("GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "b".repeat(40_000));
    let (head, body) = raw(&server, &big_headers);
    assert!(head.starts_with("http/1.1 431"), "{head}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON body")["status"],
        "431 Request Header Fields Too Large"
    );
}

#[test]
fn a_snapshot_edit_names_an_existing_snapshot_and_bodies_must_be_objects() {
    let server = start(Some(ADMIN_PASSWORD));
    let token = login(&server, "admin", ADMIN_PASSWORD);
    for body in ["{}", "{\"is_protected\": null}"] {
        let (status, answer) =
            crate::api::try_call(&server, "PUT", "/api/block/image/rbd%2Fnope/snap/x", Some(&token), Some(body))
                .expect("call");
        // A missing image or snapshot is 400 with errno 2, as Ceph's librbd call answers it.
        assert_eq!((status, answer["code"].as_str()), (400, Some("2")), "{body}: {answer}");
    }
    for body in ["[null,null]", "[]", "1", "\"x\""] {
        let (status, answer) =
            crate::api::try_call(&server, "PUT", "/api/block/image/rbd%2Fnope/snap/x", Some(&token), Some(body))
                .expect("call");
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let image = json!({"name": "img", "pool_name": "rbd", "size": 1048576});
    assert_eq!(call(&server, "POST", "/api/block/image", Some(&token), Some(image)).0, 201);
    let (status, answer) =
        crate::api::try_call(&server, "PUT", "/api/block/image/rbd%2Fimg/snap/x", Some(&token), Some("{}"))
            .expect("call");
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("2")),
        "a missing snapshot of an existing image: {answer}"
    );
    // `sort=+name` as API.md writes it: the unencoded `+` arrives as a space.
    let (status, listed) = call(&server, "GET", "/api/block/image?sort=+name", Some(&token), None);
    assert_eq!(status, 200, "{listed}");
    let (status, listed) = call(&server, "GET", "/api/block/image?sort=-name", Some(&token), None);
    assert_eq!(status, 200, "{listed}");
}

#[test]
fn one_client_address_cannot_take_every_connection() {
    let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
    let server = start_with(dir, Some(ADMIN_PASSWORD), &["--http-max-connections-per-address", "4"]);
    let port: u16 = server.addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let hold: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.write_all(HALF_HEAD).expect("half a head");
            s
        })
        .collect();
    let mut fifth = TcpStream::connect(("127.0.0.1", port)).expect("the kernel still accepts");
    fifth.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    assert!(
        closed_within(&mut fifth, Duration::from_secs(5)).is_some(),
        "a fifth connection from one address was kept"
    );
    // Another address is still served.
    let mut other = connect_from([127, 0, 0, 2], port);
    other.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    other.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("request");
    let mut answer = String::new();
    let _ = other.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(hold);
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `source` (the kernel would pick 127.0.0.1).
fn connect_from(source: [u8; 4], port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    let sockaddr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip) },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let (from, to) = (sockaddr(source, 0), sockaddr([127, 0, 0, 1], port));
    // SAFETY: a fresh socket is bound and connected with valid sockaddr_in values of the given length; on success
    // the descriptor is handed to a TcpStream, which then owns it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let bound = libc::bind(fd, std::ptr::from_ref(&from).cast(), len);
        assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
        let connected = libc::connect(fd, std::ptr::from_ref(&to).cast(), len);
        assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}
