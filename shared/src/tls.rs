//! TLS for Lido's listeners and dialers: rustls with the ring provider (the
//! one reqwest's `rustls-tls` already brings, so the build has a single
//! crypto provider), certificates and keys read from PEM files.
//!
//! - [`Identity`]: a listener's certificate chain and key; `lidod` serves its
//!   API with one, broker services their pipe listener with the same one.
//! - [`client_config`] (public CAs plus an optional private one: the SDK,
//!   lidoctl, lido-tui) and [`private_client_config`] (one CA only: a manager
//!   dialing its services' pipes, a service checking in with its manager).
//! - [`untrusted`]: finds a refused server certificate in an error chain, so
//!   clients can say what to do about it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A node's certificate (PEM), handed to the services it starts.
pub const TLS_CERT_ENV: &str = "LIDO_TLS_CERT";
/// The key of [`TLS_CERT_ENV`] (PEM).
pub const TLS_KEY_ENV: &str = "LIDO_TLS_KEY";
/// The CA a node's managers and services trust on the pipes and check-ins
/// (PEM; default: the node's own certificate).
pub const TLS_CA_ENV: &str = "LIDO_TLS_CA";
/// The private CA a client (lidoctl, lido-tui, an algo) trusts besides the public ones.
pub const CA_ENV: &str = "LIDO_CA";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "a TLS certificate was given without its key, or a key without its certificate: give both \
         (--tls-cert and --tls-key, [node] tls_cert and tls_key, or {TLS_CERT_ENV} and {TLS_KEY_ENV}) to serve \
         HTTPS, or neither"
    )]
    Incomplete,
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("cannot use the certificate {cert} with the key {key}: {source}")]
    Server {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot trust the CA certificate in {path}: {source}")]
    Ca {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// A listener's certificate chain and private key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Identity {
    /// Both or neither: a certificate without its key (or the reverse) is an error.
    pub fn pair(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<Self>, TlsError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Self { cert, key })),
            (None, None) => Ok(None),
            _ => Err(TlsError::Incomplete),
        }
    }

    /// From [`TLS_CERT_ENV`] and [`TLS_KEY_ENV`] (how a node hands its identity to a service).
    pub fn from_env() -> Result<Option<Self>, TlsError> {
        Self::pair(env_path(TLS_CERT_ENV), env_path(TLS_KEY_ENV))
    }

    /// A server configuration speaking HTTP/1.1 (which carries the WebSocket upgrades).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let chain = read_certs(&self.cert, "TLS certificate")?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|source| TlsError::Read {
            what: "TLS key",
            path: self.key.clone(),
            source,
        })?;
        let server_error = |source| TlsError::Server { cert: self.cert.clone(), key: self.key.clone(), source };
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(server_error)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(server_error)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Trusts the public CAs (Mozilla's, as reqwest does) and, if given, the
/// private CA in `ca`: what a client of Lido uses.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(ca) = ca {
        add_ca(&mut roots, ca)?;
    }
    Ok(with_roots(roots))
}

/// Trusts only the CA in `ca`: what a node's own parts use between them.
pub fn private_client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    add_ca(&mut roots, ca)?;
    Ok(with_roots(roots))
}

/// The reason a server's certificate was refused, if that is what `err`
/// (or anything in its chain of causes) says.
pub fn untrusted(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(rustls::Error::InvalidCertificate(why)) = err.downcast_ref::<rustls::Error>() {
            return Some(format!("{why:?}"));
        }
        // An io::Error's `source` skips the error it wraps; look inside it.
        next = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn with_roots(roots: RootCertStore) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

fn add_ca(roots: &mut RootCertStore, ca: &Path) -> Result<(), TlsError> {
    for cert in read_certs(ca, "CA certificate")? {
        roots.add(cert).map_err(|source| TlsError::Ca { path: ca.to_path_buf(), source })?;
    }
    Ok(())
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |source| TlsError::Read { what, path: path.to_path_buf(), source };
    let certs =
        CertificateDer::pem_file_iter(path).map_err(read_error)?.collect::<Result<Vec<_>, _>>().map_err(read_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

/// The CA of [`TLS_CA_ENV`], if set.
pub fn ca_from_env() -> Option<PathBuf> {
    env_path(TLS_CA_ENV)
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_and_key_come_in_pairs() {
        let (c, k) = (PathBuf::from("c.pem"), PathBuf::from("k.pem"));
        assert_eq!(Identity::pair(None, None).unwrap(), None);
        assert!(Identity::pair(Some(c.clone()), Some(k.clone())).unwrap().is_some());
        assert!(matches!(Identity::pair(Some(c), None), Err(TlsError::Incomplete)));
        assert!(matches!(Identity::pair(None, Some(k)), Err(TlsError::Incomplete)));
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = private_client_config(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn a_refused_certificate_is_found_inside_io_errors() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, refused);
        assert_eq!(untrusted(&io).as_deref(), Some("UnknownIssuer"));
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(untrusted(&other), None);
    }
}
