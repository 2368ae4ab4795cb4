//! The server certificate: loaded from `[tls] cert` and `key` (PEM, full
//! chain), or generated self-signed for the domain at first start and kept
//! beside the database. Also what `shoal cert` prints, and the
//! `tls-server-end-point` channel-binding data (RFC 5929 §4.1).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256, Sha384, Sha512};
use shoal_actors::c2s::io::{StartTls, TlsSettings};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {path}: {message}")]
    Cert { path: PathBuf, message: String },
    #[error("TLS key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_path: PathBuf,
    /// Made by Shoal itself (not from the configuration).
    pub generated: bool,
}

/// Where a generated certificate and key live: beside the database.
pub fn generated_paths(config: &Config) -> (PathBuf, PathBuf) {
    let db = &config.storage.sqlite;
    (db.with_extension("cert.pem"), db.with_extension("key.pem"))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Cert {
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if chain.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The configured certificate, or the generated one (made now if missing).
pub fn load_or_generate(config: &Config) -> Result<ServerCert, TlsError> {
    if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        return Ok(ServerCert {
            chain: read_chain(cert)?,
            key: read_key(key)?,
            cert_path: cert.clone(),
            generated: false,
        });
    }
    let (cert_path, key_path) = generated_paths(config);
    if !cert_path.exists() || !key_path.exists() {
        let mut names = vec![config.domain.clone()];
        if config.domain == "localhost" {
            names.push("127.0.0.1".into());
        }
        let generated = self_signed(&config.domain, names).map_err(|e| TlsError::Generate(e.to_string()))?;
        let write = |path: &Path, pem: String, private: bool| -> Result<(), TlsError> {
            let io = |e: std::io::Error| TlsError::Generate(format!("{}: {e}", path.display()));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            if private {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            #[cfg(not(unix))]
            let _ = private;
            std::io::Write::write_all(&mut options.open(path).map_err(io)?, pem.as_bytes()).map_err(io)
        };
        write(&key_path, generated.signing_key.serialize_pem(), true)?;
        write(&cert_path, generated.cert.pem(), false)?;
        log::warn!(
            "generated a self-signed certificate for {} at {}",
            config.domain,
            cert_path.display()
        );
    }
    Ok(ServerCert {
        chain: read_chain(&cert_path)?,
        key: read_key(&key_path)?,
        cert_path,
        generated: true,
    })
}

/// A self-signed certificate for the domain, valid for ten years.
fn self_signed(domain: &str, names: Vec<String>) -> Result<rcgen::CertifiedKey<rcgen::KeyPair>, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, domain);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let year = 1970 + (now.as_secs() / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let signing_key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&signing_key)?;
    Ok(rcgen::CertifiedKey { cert, signing_key })
}

/// SHA-256 fingerprint of the leaf, as clients show it (AA:BB:...).
pub fn fingerprint(cert: &ServerCert) -> String {
    Sha256::digest(&cert.chain[0])
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// RFC 5929 §4.1: the leaf hashed with its signature's hash, SHA-256 for
/// MD5, SHA-1 and anything without one.
fn server_end_point(leaf: &[u8]) -> Vec<u8> {
    let oid = x509_parser::parse_x509_certificate(leaf)
        .map(|(_, c)| c.signature_algorithm.algorithm.to_id_string())
        .unwrap_or_default();
    match oid.as_str() {
        // sha384WithRSAEncryption, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => Sha384::digest(leaf).to_vec(),
        // sha512WithRSAEncryption, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => Sha512::digest(leaf).to_vec(),
        _ => Sha256::digest(leaf).to_vec(),
    }
}

/// rustls with its defaults (TLS 1.2 and 1.3 only), ALPN `xmpp-client`
/// for Direct TLS (XEP-0368).
pub fn settings(cert: &ServerCert, starttls: StartTls) -> Result<TlsSettings, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())?;
    server.alpn_protocols = vec![b"xmpp-client".to_vec()];
    Ok(TlsSettings {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        starttls,
        server_end_point: server_end_point(&cert.chain[0]),
    })
}

/// What `shoal cert` prints.
pub fn describe(cert: &ServerCert) -> String {
    let mut out = format!("certificate: {}", cert.cert_path.display());
    if cert.generated {
        out.push_str(" (self-signed, generated by Shoal)");
    }
    if let Ok((_, c)) = x509_parser::parse_x509_certificate(&cert.chain[0]) {
        out.push_str(&format!("\nsubject:     {}", c.subject()));
        out.push_str(&format!("\nissuer:      {}", c.issuer()));
        if let Ok(Some(san)) = c.subject_alternative_name() {
            let names: Vec<String> = san.value.general_names.iter().map(|n| n.to_string()).collect();
            out.push_str(&format!("\nnames:       {}", names.join(", ")));
        }
        out.push_str(&format!("\nnot before:  {}", c.validity().not_before));
        out.push_str(&format!("\nnot after:   {}", c.validity().not_after));
    }
    out.push_str(&format!("\nSHA-256:     {}", fingerprint(cert)));
    out.push_str(&format!("\nchain:       {} certificate(s)", cert.chain.len()));
    out
}
