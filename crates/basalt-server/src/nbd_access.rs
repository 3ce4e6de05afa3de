//! Who NBD clients are and what they may do: basalt's own certificate authority, which issues client certificates
//! whose subject common name is a basalt user (and, for `--nbd-tls auto`, the NBD listener's own certificate), and
//! the authoriser that turns such a user's roles into access to exports.
//!
//! The CA lives in `DATA_DIR/nbd-tls/` (directory 0700, key 0600), made at the first start. Issued files are named as
//! qemu's `tls-creds-x509` directory and libnbd's `tls-certificates=` directory expect them: `ca-cert.pem`,
//! `client-cert.pem`, `client-key.pem`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use basalt_core::{Error, ImageSpec, Result};
use basalt_nbd::{Access, Authorizer};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

use crate::auth::Auth;

/// The CA's directory inside the data directory.
pub const NBD_TLS_DIR: &str = "nbd-tls";
/// The CA certificate (what clients trust, and what the listener checks client certificates against).
pub const CA_CERT: &str = "ca-cert.pem";
/// The CA's private key.
pub const CA_KEY: &str = "ca-key.pem";
/// The listener's certificate under `--nbd-tls auto`, issued anew at each start.
pub const SERVER_CERT: &str = "server-cert.pem";
/// Its key.
pub const SERVER_KEY: &str = "server-key.pem";

/// How long an issued client certificate is valid.
pub const CLIENT_CERT_DAYS: i64 = 365;
/// How long the CA is valid.
const CA_DAYS: i64 = 3650;
/// How long the listener's own certificate is valid (it is issued again at every start).
const SERVER_CERT_DAYS: i64 = 365;

/// How the NBD TCP listener authenticates its clients.
#[derive(Debug, Clone, Default)]
pub struct NbdOptions {
    /// TLS with a certificate basalt issues itself from its CA, and client certificates from that CA required.
    pub tls_auto: bool,
    /// Serve NBD on a non-loopback address without client authentication (anyone who reaches the port can read
    /// and write every image).
    pub insecure_no_auth: bool,
}

/// Refuses an NBD listener off loopback without client authentication unless the operator insisted, and warns about
/// an open one on loopback.
pub fn check_exposure(
    listen: SocketAddr,
    client_auth: bool,
    insecure_no_auth: bool,
) -> std::result::Result<(), String> {
    if client_auth {
        return Ok(());
    }
    if !listen.ip().is_loopback() && !insecure_no_auth {
        return Err(format!(
            "refusing to serve NBD on {listen} without client authentication: anyone who reaches it could read and \
             write every image. Use --nbd-tls auto (client certificates from `basalt nbd cert issue`), or \
             --nbd-tls-cert/--nbd-tls-key with --nbd-tls-client-ca, or listen on loopback; \
             --nbd-insecure-no-auth serves it open anyway"
        ));
    }
    tracing::warn!(
        nbd = %listen,
        "the NBD listener has no client authentication: every process that reaches it can read and write every \
         image (use --nbd-tls auto to require client certificates)"
    );
    Ok(())
}

/// The authoriser for a TCP listener: users and roles when clients must present certificates, else none (every
/// client gets every export).
pub fn authorizer(tls: Option<&basalt_nbd::Tls>, auth: &Arc<Auth>) -> Option<Arc<dyn Authorizer>> {
    let authenticated = tls.is_some_and(basalt_nbd::Tls::requires_client_certificates);
    authenticated.then(|| Arc::new(UserAuthorizer::new(auth.clone())) as Arc<dyn Authorizer>)
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// basalt's NBD certificate authority.
pub struct NbdCa {
    dir: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for NbdCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdCa").field("dir", &self.dir).finish_non_exhaustive()
    }
}

fn cert_error(what: &str, err: impl std::fmt::Display) -> Error {
    Error::io(format!("{what}: {err}"))
}

fn io_error(path: &Path, err: std::io::Error) -> Error {
    Error::io(format!("{}: {err}", path.display()))
}

/// The CA's identity as rcgen signs with it: its name, key usages and key identifier method.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // An hour of slack for clocks that differ a little.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    let mut serial = [0u8; 16];
    rand::fill(&mut serial[..]);
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
}

/// Writes `contents` to `path` with `mode`, through a temporary file and a rename, so a crash leaves the old file or
/// the new one.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let temp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(|e| io_error(&temp, e))?;
    file.write_all(contents.as_bytes()).map_err(|e| io_error(&temp, e))?;
    file.sync_all().map_err(|e| io_error(&temp, e))?;
    std::fs::rename(&temp, path).map_err(|e| io_error(path, e))
}

impl NbdCa {
    /// Opens the CA of `data_dir`, making it on first use.
    pub fn open_or_create(data_dir: &Path) -> Result<NbdCa> {
        let dir = data_dir.join(NBD_TLS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| io_error(&dir, e))?;
        let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
        if cert_path.exists() && key_path.exists() {
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| io_error(&cert_path, e))?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(|e| io_error(&key_path, e))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| cert_error(&key_path.display().to_string(), e))?;
            let name = basalt_nbd::pem_subject_common_name(&cert_pem)
                .ok_or_else(|| Error::io(format!("{}: no PEM certificate with a common name", cert_path.display())))?;
            return Ok(NbdCa { dir, cert_pem, issuer: Issuer::new(ca_params(&name), key) });
        }
        let key = KeyPair::generate().map_err(|e| cert_error("generating the NBD CA key", e))?;
        let mut id = [0u8; 4];
        rand::fill(&mut id[..]);
        let name = format!("basalt NBD CA {}", id.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let mut params = ca_params(&name);
        validity(&mut params, CA_DAYS);
        let cert = params.self_signed(&key).map_err(|e| cert_error("making the NBD CA certificate", e))?;
        // The key first: a crash before the certificate is written makes a new CA at the next start.
        write_file(&key_path, &key.serialize_pem(), 0o600)?;
        write_file(&cert_path, &cert.pem(), 0o600)?;
        tracing::info!(ca = %cert_path.display(), "created the NBD certificate authority");
        Ok(NbdCa { dir, cert_pem: cert.pem(), issuer: Issuer::new(ca_params(&name), key) })
    }

    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate's path.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    fn issue(&self, mut params: CertificateParams, days: i64) -> Result<Issued> {
        validity(&mut params, days);
        // qemu insists on keyEncipherment in the key usage, even for EC keys.
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(|e| cert_error("generating a key", e))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| cert_error("signing a certificate", e))?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A client certificate naming basalt user `user`.
    pub fn issue_client(&self, user: &str) -> Result<Issued> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, user);
        params.distinguished_name = name;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, CLIENT_CERT_DAYS)
    }

    /// A certificate for the NBD listener on `listen`, valid for loopback, `localhost`, the listen address when it is
    /// a specific one, and `extra_names`; written to the CA's directory. Returns the files for the listener, with
    /// this CA required of clients.
    pub fn server_files(&self, listen: SocketAddr) -> Result<basalt_nbd::TlsFiles> {
        let mut names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
            names.push(SanType::IpAddress(listen.ip()));
        }
        let mut dns = vec!["localhost".to_owned()];
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let host = host.trim();
            if !host.is_empty() {
                dns.push(host.to_owned());
            }
        }
        for name in dns {
            match name.parse::<IpAddr>() {
                Ok(ip) => names.push(SanType::IpAddress(ip)),
                Err(_) => names.push(SanType::DnsName(
                    name.clone().try_into().map_err(|e| cert_error(&format!("server name '{name}'"), e))?,
                )),
            }
        }
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, "basalt NBD server");
        params.distinguished_name = subject;
        params.subject_alt_names = names;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let issued = self.issue(params, SERVER_CERT_DAYS)?;
        let (cert, key) = (self.dir.join(SERVER_CERT), self.dir.join(SERVER_KEY));
        write_file(&key, &issued.key_pem, 0o600)?;
        // The chain: the leaf, then the CA, so clients that only know the CA's file by another path still build it.
        write_file(&cert, &format!("{}{}", issued.cert_pem, self.cert_pem), 0o600)?;
        Ok(basalt_nbd::TlsFiles { cert, key, client_ca: Some(self.ca_cert_path()) })
    }
}

/// Export access from basalt roles: the user named by the client certificate must exist and be enabled;
/// `rbd-image` update gives read-write exports, `rbd-image` read read-only ones, and anything less none at all (not
/// listed, not opened).
#[derive(Debug)]
pub struct UserAuthorizer {
    auth: Arc<Auth>,
}

impl UserAuthorizer {
    /// Authorises against the users and roles of `auth`.
    pub fn new(auth: Arc<Auth>) -> UserAuthorizer {
        UserAuthorizer { auth }
    }
}

impl Authorizer for UserAuthorizer {
    fn access(&self, identity: Option<&str>, _image: &ImageSpec) -> Access {
        // Roles are global in basalt (as in the reference dashboard): the image is not consulted yet.
        let Some(user) = identity else {
            return Access::None;
        };
        match self.auth.active_principal(user) {
            Ok(Some(principal)) if principal.can("rbd-image", "update") => Access::ReadWrite,
            Ok(Some(principal)) if principal.can("rbd-image", "read") => Access::ReadOnly,
            Ok(_) => Access::None,
            Err(err) => {
                tracing::warn!(user, error = %err, "cannot read an NBD client's user: refusing it");
                Access::None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Principal, UserChange};
    use crate::store::ServerStore;

    fn user(name: &str, role: &str) -> UserChange {
        UserChange {
            username: Some(name.into()),
            password: Some("long-password-1".into()),
            roles: Some(vec![role.into()]),
            ..UserChange::default()
        }
    }

    #[test]
    fn users_get_the_access_their_roles_grant_and_no_more() {
        let dir = tempfile::tempdir().expect("temp dir");
        let auth = Arc::new(Auth::new(ServerStore::open(dir.path()).expect("store")));
        auth.ensure_admin(Some("long-password-0".into())).expect("admin");
        for (name, role) in [("reader", "read-only"), ("blocks", "block-manager"), ("pools", "pool-manager")] {
            auth.create_user(user(name, role)).expect("user");
        }
        let authorizer = UserAuthorizer::new(auth.clone());
        let image = ImageSpec::parse("rbd/vm").expect("spec");
        let access = |who: Option<&str>| authorizer.access(who, &image);
        assert_eq!(access(Some("admin")), Access::ReadWrite);
        assert_eq!(access(Some("blocks")), Access::ReadWrite);
        assert_eq!(access(Some("reader")), Access::ReadOnly);
        assert_eq!(access(Some("pools")), Access::None);
        assert_eq!(access(Some("nobody")), Access::None);
        assert_eq!(access(None), Access::None);
        let change = UserChange { enabled: Some(false), ..UserChange::default() };
        auth.update_user("blocks", change).expect("disable");
        assert_eq!(access(Some("blocks")), Access::None, "a disabled user");
        auth.remove_user("reader", &Principal::local_admin()).expect("remove");
        assert_eq!(access(Some("reader")), Access::None, "a deleted user");
    }

    #[test]
    fn the_ca_is_made_once_with_a_private_key_and_signs_client_certificates_naming_the_user() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = NbdCa::open_or_create(dir.path()).expect("new CA");
        let key = dir.path().join(NBD_TLS_DIR).join(CA_KEY);
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = ca.ca_cert_pem().to_owned();
        let issued = ca.issue_client("alice").expect("issue");
        assert_eq!(basalt_nbd::pem_subject_common_name(&issued.cert_pem).as_deref(), Some("alice"));
        // Reopened, it is the same CA: certificates it issued before and after verify alike.
        let again = NbdCa::open_or_create(dir.path()).expect("existing CA");
        assert_eq!(again.ca_cert_pem(), first);
        let later = again.issue_client("bob").expect("issue");
        let files = again.server_files("127.0.0.1:10809".parse().expect("addr")).expect("server files");
        let tls = basalt_nbd::Tls::load(&files).expect("the server certificate loads with the CA as client CA");
        assert!(tls.requires_client_certificates());
        assert_eq!(basalt_nbd::pem_subject_common_name(&later.cert_pem).as_deref(), Some("bob"));
        // The chains verify with an independent implementation.
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &first).expect("write CA");
        for (name, pem) in [("alice", &issued.cert_pem), ("bob", &later.cert_pem)] {
            let cert = dir.path().join(format!("{name}.pem"));
            std::fs::write(&cert, pem).expect("write certificate");
            let out = std::process::Command::new("openssl")
                .args(["verify", "-purpose", "sslclient", "-CAfile"])
                .arg(&ca_file)
                .arg(&cert)
                .output()
                .expect("openssl verify");
            assert!(
                out.status.success(),
                "{name}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = std::process::Command::new("openssl")
            .args(["verify", "-purpose", "sslserver", "-CAfile"])
            .arg(&ca_file)
            .arg(&files.cert)
            .output()
            .expect("openssl verify");
        assert!(out.status.success(), "server: {}", String::from_utf8_lossy(&out.stderr));
    }
}
