//! TLS settings for `amqps://` broker connections.
//!
//! Server certificates are always verified: against the system's trusted CAs
//! (rustls' platform verifier) plus, when `broker_tls_ca_file` is set, the
//! CAs in that PEM file; the host name in the URL must match the
//! certificate. A client certificate (`broker_tls_client_cert` +
//! `broker_tls_client_key`, both PEM) is presented when configured, for
//! brokers that require one (RabbitMQ's `fail_if_no_peer_cert`).
//!
//! The files are read and checked at every connection, so a renewed
//! certificate is picked up at the next reconnection, and a missing or
//! malformed file is reported by name before any network traffic.

use crate::config::Config;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// Which PEM files an `amqps://` connection uses. All unset by default:
/// the system's CAs, no client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerTls {
    /// Extra trusted CA certificates (PEM), besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), leaf first.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
}

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds nothing usable.
    #[error("{key} {path:?}: {reason}")]
    File {
        /// The config key that names the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The settings do not fit together.
    #[error("{0}")]
    Settings(String),
}

impl BrokerTls {
    /// The `broker_tls_*` keys of `config`.
    pub fn from_config(config: &Config) -> BrokerTls {
        BrokerTls {
            ca_file: config.broker_tls_ca_file.clone(),
            client_cert: config.broker_tls_client_cert.clone(),
            client_key: config.broker_tls_client_key.clone(),
        }
    }

    /// Whether any setting is given.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.client_cert.is_some() || self.client_key.is_some()
    }

    /// Reads and checks the files into lapin's TLS configuration.
    pub fn load(&self) -> Result<OwnedTLSConfig, TlsError> {
        let cert_chain = match &self.ca_file {
            Some(path) => {
                let pem = read_certificates("broker_tls_ca_file", path)?;
                Some(String::from_utf8(pem).map_err(|_| TlsError::File {
                    key: "broker_tls_ca_file",
                    path: path.clone(),
                    reason: "not a text (PEM) file".to_owned(),
                })?)
            }
            None => None,
        };
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
                pem: read_certificates("broker_tls_client_cert", cert)?,
                key: read_private_key("broker_tls_client_key", key)?,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(TlsError::Settings(
                    "broker_tls_client_cert is set but broker_tls_client_key is not; give both"
                        .to_owned(),
                ));
            }
            (None, Some(_)) => {
                return Err(TlsError::Settings(
                    "broker_tls_client_key is set but broker_tls_client_cert is not; give both"
                        .to_owned(),
                ));
            }
        };
        Ok(OwnedTLSConfig {
            identity,
            cert_chain,
        })
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        key,
        path: path.to_owned(),
        reason: format!("cannot read it: {e}"),
    })
}

/// The file's bytes, once it is known to hold at least one PEM certificate
/// and nothing malformed.
fn read_certificates(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(key, path)?;
    let bad = |reason: String| TlsError::File {
        key,
        path: path.to_owned(),
        reason,
    };
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| bad(format!("malformed PEM: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad(
            "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".to_owned(),
        ));
    }
    Ok(pem)
}

/// The file's bytes, once it is known to hold a PEM private key.
fn read_private_key(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::File {
        key,
        path: path.to_owned(),
        reason: format!("no usable PEM private key in it ({e})"),
    })?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_is_the_default_verification() {
        let tls = BrokerTls::default();
        assert!(!tls.is_set());
        let owned = tls.load().expect("load");
        assert!(owned.cert_chain.is_none() && owned.identity.is_none());
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let err = BrokerTls {
            ca_file: Some(missing.clone()),
            ..BrokerTls::default()
        }
        .load()
        .expect_err("missing file")
        .to_string();
        assert!(
            err.starts_with("broker_tls_ca_file") && err.contains("missing.pem"),
            "{err}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let err = BrokerTls {
            ca_file: Some(junk.clone()),
            ..BrokerTls::default()
        }
        .load()
        .expect_err("junk")
        .to_string();
        assert!(err.contains("no certificate in it"), "{err}");
        let err = BrokerTls {
            client_cert: Some(junk.clone()),
            ..BrokerTls::default()
        }
        .load()
        .expect_err("cert without key")
        .to_string();
        assert!(err.contains("broker_tls_client_key is not"), "{err}");
        let err = BrokerTls {
            client_key: Some(junk),
            ..BrokerTls::default()
        }
        .load()
        .expect_err("key without cert")
        .to_string();
        assert!(err.contains("broker_tls_client_cert is not"), "{err}");
    }
}
