//! NBD over TLS: certificates made with the openssl command, real clients (qemu-io with `tls-creds-x509`,
//! nbdinfo with `nbds://`), and the refusals a client that does not upgrade gets.

use std::path::{Path, PathBuf};
use std::process::Command;

use basalt_nbd::proto::*;
use basalt_nbd::{Tls, TlsFiles};

use crate::TestServer;
use crate::client::RawClient;
use crate::tools::{self, run, run_ok};

const MIB: u64 = 1 << 20;

/// A throw-away PKI made by `scripts/nbd-tls-pki.sh`: a CA, a server certificate for 127.0.0.1, and client
/// directories laid out as qemu's `tls-creds-x509` and libnbd's `tls-certificates` expect.
struct Pki {
    /// The server's certificate and key.
    server: TlsFiles,
    /// `ca-cert.pem`, `client-cert.pem` and `client-key.pem`.
    client_dir: PathBuf,
    /// `ca-cert.pem` only: a client that can check the server but has no certificate of its own.
    anonymous_dir: PathBuf,
}

fn make_pki(root: &Path) -> Pki {
    let dir = root.join("pki");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/nbd-tls-pki.sh");
    let output = Command::new("bash").arg(&script).arg(&dir).output().expect("run nbd-tls-pki.sh");
    assert!(output.status.success(), "nbd-tls-pki.sh failed\n{}", tools::describe(&output));
    Pki {
        server: TlsFiles { cert: dir.join("server-cert.pem"), key: dir.join("server-key.pem"), client_ca: None },
        client_dir: dir.join("client"),
        anonymous_dir: dir.join("anonymous"),
    }
}

/// qemu-io on `export` over TLS with the client credentials in `creds_dir`.
fn qemu_io_tls(port: u16, creds_dir: &Path, export: &str, commands: &[&str]) -> std::process::Output {
    let object = format!("tls-creds-x509,id=tls0,endpoint=client,dir={}", creds_dir.display());
    let image =
        format!("driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={port},export={export},tls-creds=tls0");
    let mut args = vec!["--object", &object, "--image-opts"];
    for command in commands {
        args.extend(["-c", command]);
    }
    args.push(&image);
    run("qemu-io", &args)
}

fn assert_io_ok(output: &std::process::Output) {
    let text = tools::describe(output);
    assert!(
        output.status.success() && !text.contains("Pattern verification failed") && !text.contains("failed"),
        "qemu-io over TLS failed\n{text}"
    );
}

#[test]
fn qemu_io_and_nbdinfo_read_and_write_over_tls() {
    let mut pki = None;
    let server = TestServer::start_with_tls(|dir| {
        let made = make_pki(dir);
        let tls = Tls::load(&made.server).expect("load server certificate");
        pki = Some(made);
        tls
    });
    let pki = pki.expect("pki made");
    server.create_image("rbd/img", 8 * MIB);

    let written = qemu_io_tls(
        server.port,
        &pki.anonymous_dir,
        "rbd/img",
        &["write -P 0xc3 1M 256k", "write -P 0x11 5000 3000", "read -P 0xc3 1M 256k", "read -P 0x11 5000 3000"],
    );
    assert_io_ok(&written);

    // libnbd: the same data is seen, and the allocation map travels over TLS too.
    let uri = format!("nbds://127.0.0.1:{}/rbd/img?tls-certificates={}", server.port, pki.anonymous_dir.display());
    let info = run_ok("nbdinfo", &[&uri]);
    assert!(info.contains("export-size: 8388608"), "{info}");
    let map = run_ok("nbdinfo", &["--map", &uri]);
    assert!(map.lines().any(|line| line.split_whitespace().take(3).eq(["1048576", "262144", "0"])), "{map}");

    // The Unix socket of the same server stays in clear.
    let plain = tools::qemu_io(&server.unix_uri("rbd/img"), true, &["read -P 0xc3 1M 256k"]);
    assert!(plain.contains("read 262144/262144"), "{plain}");
}

#[test]
fn clients_that_do_not_upgrade_learn_nothing() {
    let server = TestServer::start_with_tls(|dir| Tls::load(&make_pki(dir).server).expect("load server certificate"));
    server.create_image("rbd/secret", MIB);

    let mut client = RawClient::handshake(server.port);
    for option in [OPT_LIST, OPT_STRUCTURED_REPLY, 99] {
        client.send_option(option, &[]);
        let (replied, reply, message) = client.option_reply();
        assert_eq!((replied, reply), (option, REP_ERR_TLS_REQD));
        assert!(String::from_utf8_lossy(&message).contains("TLS"));
    }
    let (reply, message) = client.go(OPT_GO, "rbd/secret").expect_err("GO before TLS");
    assert_eq!(reply, REP_ERR_TLS_REQD);
    assert!(!message.contains("secret"), "{message}");
    client.send_option(OPT_STARTTLS, b"junk");
    assert_eq!(client.option_reply().1, REP_ERR_INVALID);
    // The legacy option has no error reply: the server hangs up.
    client.send_option(OPT_EXPORT_NAME, b"rbd/secret");
    assert!(client.closed_by_server());

    let refused = run("nbdinfo", &[&server.tcp_uri("rbd/secret")]);
    assert!(!refused.status.success(), "{}", tools::describe(&refused));
    assert!(tools::describe(&refused).to_lowercase().contains("tls"), "{}", tools::describe(&refused));
}

#[test]
fn a_client_ca_makes_client_certificates_mandatory() {
    let mut pki = None;
    let server = TestServer::start_with_tls(|dir| {
        let made = make_pki(dir);
        let files = TlsFiles { client_ca: Some(made.client_dir.join("ca-cert.pem")), ..made.server.clone() };
        let tls = Tls::load(&files).expect("load server certificate and client CA");
        assert!(tls.requires_client_certificates());
        pki = Some(made);
        tls
    });
    let pki = pki.expect("pki made");
    server.create_image("rbd/img", MIB);

    let anonymous = qemu_io_tls(server.port, &pki.anonymous_dir, "rbd/img", &["read 0 4k"]);
    let text = tools::describe(&anonymous);
    assert!(!anonymous.status.success(), "a client without a certificate got in\n{text}");
    let known = qemu_io_tls(server.port, &pki.client_dir, "rbd/img", &["write -P 0x7e 0 64k", "read -P 0x7e 0 64k"]);
    assert_io_ok(&known);
}

#[test]
fn bad_tls_material_is_refused_with_the_file_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = make_pki(dir.path());

    let missing = TlsFiles { cert: dir.path().join("nope.pem"), ..pki.server.clone() };
    let err = Tls::load(&missing).expect_err("missing certificate").to_string();
    assert!(err.contains("nope.pem"), "{err}");

    let not_pem = dir.path().join("empty.pem");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    let err = Tls::load(&TlsFiles { cert: not_pem, ..pki.server.clone() }).expect_err("no certificate").to_string();
    assert!(err.contains("empty.pem") && err.contains("no PEM certificates"), "{err}");

    // The client's key does not belong to the server's certificate.
    let mismatched = TlsFiles { key: pki.client_dir.join("client-key.pem"), ..pki.server.clone() };
    let err = Tls::load(&mismatched).expect_err("key mismatch").to_string();
    assert!(err.contains("TLS configuration"), "{err}");
}

/// Grants the test client read-only access to pool `rbd` and nothing elsewhere; remembers who asked.
#[derive(Debug, Default)]
struct ReadOnlyInRbd {
    asked: std::sync::Mutex<Vec<Option<String>>>,
}

impl basalt_nbd::Authorizer for ReadOnlyInRbd {
    fn access(&self, identity: Option<&str>, image: &basalt_core::ImageSpec) -> basalt_nbd::Access {
        self.asked.lock().expect("lock").push(identity.map(str::to_owned));
        match identity {
            Some("basalt NBD test client") if image.pool().as_str() == "rbd" => basalt_nbd::Access::ReadOnly,
            _ => basalt_nbd::Access::None,
        }
    }
}

#[test]
fn the_authorizer_sees_the_certificate_name_and_limits_exports() {
    let mut pki = None;
    let authorizer = std::sync::Arc::new(ReadOnlyInRbd::default());
    let server = TestServer::start_with_tls_and_authorizer(
        |dir| {
            let made = make_pki(dir);
            let files = TlsFiles { client_ca: Some(made.client_dir.join("ca-cert.pem")), ..made.server.clone() };
            pki = Some(made);
            Tls::load(&files).expect("load server certificate and client CA")
        },
        authorizer.clone(),
    );
    let pki = pki.expect("pki made");
    let cert = std::fs::read_to_string(pki.client_dir.join("client-cert.pem")).expect("client certificate");
    assert_eq!(basalt_nbd::pem_subject_common_name(&cert).as_deref(), Some("basalt NBD test client"));
    server.create_pool("other");
    server.create_image("rbd/img", MIB);
    server.create_image("other/hidden", MIB);
    basalt_core::Backend::open(
        &*server.engine,
        &basalt_core::ImageSpec::parse("rbd/img").expect("spec"),
        &basalt_core::OpenTarget::Head,
        "t",
    )
    .expect("open")
    .write(0, &[0x42; 4096], basalt_core::Durability::Buffered)
    .expect("write");

    let list = format!("nbds://127.0.0.1:{}?tls-certificates={}", server.port, pki.client_dir.display());
    let listed = run_ok("nbdinfo", &["--list", &list]);
    assert!(listed.contains("rbd/img") && !listed.contains("hidden"), "{listed}");
    let uri = |export: &str| {
        format!("nbds://127.0.0.1:{}/{export}?tls-certificates={}", server.port, pki.client_dir.display())
    };
    let info = run_ok("nbdinfo", &[&uri("rbd/img")]);
    assert!(info.contains("is_read_only: true"), "{info}");
    let hidden = run("nbdinfo", &[&uri("other/hidden")]);
    assert!(!hidden.status.success(), "{}", tools::describe(&hidden));
    let read = qemu_io_tls(server.port, &pki.client_dir, "rbd/img", &["read -P 0x42 0 4k"]);
    // qemu opens a read-only export only when asked to, so this open fails; the read-only open below succeeds.
    assert!(!read.status.success(), "qemu-io opened a read-only export read-write\n{}", tools::describe(&read));
    let object = format!("tls-creds-x509,id=tls0,endpoint=client,dir={}", pki.client_dir.display());
    let image = format!(
        "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={},export=rbd/img,tls-creds=tls0",
        server.port
    );
    let read_only = run("qemu-io", &["-r", "--object", &object, "--image-opts", "-c", "read -P 0x42 0 4k", &image]);
    assert_io_ok(&read_only);
    let asked = authorizer.asked.lock().expect("lock");
    assert!(asked.iter().all(|who| who.as_deref() == Some("basalt NBD test client")), "{asked:?}");
}
