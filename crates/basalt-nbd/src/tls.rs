//! TLS for NBD: the server's certificate, an optional client CA, and the acceptor used after `NBD_OPT_STARTTLS`.
//!
//! A listener with TLS is in the spec's FORCEDTLS mode: until the client has upgraded, every option but
//! `NBD_OPT_STARTTLS` and `NBD_OPT_ABORT` is answered `NBD_REP_ERR_TLS_REQD`, so export names never cross the wire
//! in clear. Only the ring provider is built (aws-lc would compile a large C library).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// Where the server's TLS material lives (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the combination (for example a key that does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A ready TLS server configuration; cheap to clone.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    client_certificates: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("client_certificates", &self.client_certificates).finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate, key and optional client CA, and checks that they fit together.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certificates(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|err| pem_error(&files.key, "private key", err))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| TlsError::Config(err.to_string()))?;
        let builder = match &files.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for ca in certificates(path)? {
                    roots.add(ca).map_err(|err| TlsError::File { path: path.clone(), message: err.to_string() })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|err| TlsError::Config(err.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(chain, key).map_err(|err| TlsError::Config(err.to_string()))?;
        Ok(Tls { acceptor: TlsAcceptor::from(Arc::new(config)), client_certificates: files.client_ca.is_some() })
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.client_certificates
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|err| pem_error(path, "certificates", err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(path, "certificates", err))?;
    if chain.is_empty() {
        return Err(TlsError::File { path: path.to_path_buf(), message: "no PEM certificates found".into() });
    }
    Ok(chain)
}

fn pem_error(path: &Path, what: &str, err: rustls::pki_types::pem::Error) -> TlsError {
    let message = match err {
        rustls::pki_types::pem::Error::NoItemsFound => format!("no PEM {what} found"),
        other => format!("cannot read {what}: {other}"),
    };
    TlsError::File { path: path.to_path_buf(), message }
}
