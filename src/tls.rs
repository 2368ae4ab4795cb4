//! The server certificates, one per hosted domain: loaded from the
//! domain's `tls_cert` and `tls_key`, or `[tls] cert` and `key` (PEM, full
//! chain), or generated self-signed for the domain at first start and kept
//! beside the database. A connection gets the one its client names by SNI
//! (see [`shoal_actors::c2s::io::Certificates`]). Also what `shoal cert`
//! prints, and the `tls-server-end-point` channel-binding data (RFC 5929
//! §4.1).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256, Sha384, Sha512};
use shoal_actors::c2s::io::{Certificates, HostCert, StartTls, TlsSettings};

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
    #[error("no certificate for the default domain {0}")]
    NoDefault(String),
}

pub struct ServerCert {
    /// The hosted domain it is for.
    pub domain: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_path: PathBuf,
    /// Made by Shoal itself (not from the configuration).
    pub generated: bool,
}

/// Where the generated certificate and key of `domain` live: beside the
/// database, the default domain's with the names a one-domain server has
/// always used (`shoal.cert.pem`), the others' with their domain in them
/// (`shoal.b.test.cert.pem`).
pub fn generated_paths(config: &Config, domain: &str) -> (PathBuf, PathBuf) {
    let db = &config.storage.sqlite;
    if domain == config.default_domain() {
        return (db.with_extension("cert.pem"), db.with_extension("key.pem"));
    }
    (
        db.with_extension(format!("{domain}.cert.pem")),
        db.with_extension(format!("{domain}.key.pem")),
    )
}

pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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

/// The certificate of every hosted domain, the default domain's first.
pub fn load_all(config: &Config) -> Result<Vec<ServerCert>, TlsError> {
    config
        .domain_list()
        .into_iter()
        .map(|d| load_or_generate(config, d))
        .collect()
}

/// The certificate configured for `domain` (its own or `[tls]`'s), or its
/// generated one (made now if missing).
///
/// A configured key that other users can read, or a configured certificate
/// that does not name the domain, is refused: clients would either trust a
/// key that is not secret or fail to verify. A generated pair with the
/// same faults (an old one for another domain, a key made readable) is
/// made again instead.
pub fn load_or_generate(config: &Config, domain: &str) -> Result<ServerCert, TlsError> {
    if let Some((cert, key)) = config.tls_files_of(domain) {
        if let Some(mode) = loose_mode(key) {
            return Err(TlsError::Key {
                path: key.to_owned(),
                message: format!("is readable by other users (mode {mode:o}); `chmod 600` it"),
            });
        }
        let chain = read_chain(cert)?;
        if !names_domain(&chain[0], domain) {
            return Err(TlsError::Cert {
                path: cert.to_owned(),
                message: format!("does not name the domain {domain}"),
            });
        }
        return Ok(ServerCert {
            domain: domain.to_owned(),
            chain,
            key: read_key(key)?,
            cert_path: cert.to_owned(),
            generated: false,
        });
    }
    let (cert_path, key_path) = generated_paths(config, domain);
    if let Some(why) = stale_generated(&cert_path, &key_path, domain) {
        if cert_path.exists() || key_path.exists() {
            log::warn!("{}: {why}; generating a new one", cert_path.display());
        }
        generate(domain, &cert_path, &key_path)?;
    }
    Ok(ServerCert {
        domain: domain.to_owned(),
        chain: read_chain(&cert_path)?,
        key: read_key(&key_path)?,
        cert_path,
        generated: true,
    })
}

/// Why the generated pair cannot be used as it is, if it cannot.
fn stale_generated(cert_path: &Path, key_path: &Path, domain: &str) -> Option<&'static str> {
    if !cert_path.exists() || !key_path.exists() {
        return Some("no generated certificate");
    }
    if loose_mode(key_path).is_some() {
        return Some("the generated key is readable by other users");
    }
    match read_chain(cert_path) {
        Ok(chain) if names_domain(&chain[0], domain) => None,
        Ok(_) => Some("the generated certificate names another domain"),
        Err(_) => Some("the generated certificate cannot be read"),
    }
}

/// The key file's mode when group or other users may read or write it
/// (group read is allowed: `ssl-cert`-style groups are common).
#[cfg(unix)]
fn loose_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o027 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_mode(_: &Path) -> Option<u32> {
    None
}

/// True when the certificate's subject alternative names (or, without
/// any, its common name) cover `domain` (RFC 6125, one wildcard label).
fn names_domain(leaf: &[u8], domain: &str) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return false;
    };
    let matches = |name: &str| {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(parent) => domain.split_once('.').is_some_and(|(_, rest)| rest == parent),
            None => name == domain,
        }
    };
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().any(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => matches(d),
            _ => false,
        }),
        _ => cert
            .subject()
            .iter_common_name()
            .any(|cn| cn.as_str().is_ok_and(matches)),
    }
}

/// Makes a new self-signed pair for `domain`: the key owner-only, and
/// written to a fresh file so no earlier (looser) mode survives.
fn generate(domain: &str, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let mut names = vec![domain.to_owned()];
    if domain == "localhost" {
        names.push("127.0.0.1".into());
    }
    let generated = self_signed(domain, names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let write = |path: &Path, pem: String, private: bool| -> Result<(), TlsError> {
        let io = |e: std::io::Error| TlsError::Generate(format!("{}: {e}", path.display()));
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if private { 0o600 } else { 0o644 });
        }
        #[cfg(not(unix))]
        let _ = private;
        std::io::Write::write_all(&mut options.open(path).map_err(io)?, pem.as_bytes()).map_err(io)
    };
    write(key_path, generated.signing_key.serialize_pem(), true)?;
    write(cert_path, generated.cert.pem(), false)?;
    log::warn!(
        "generated a self-signed certificate for {domain} at {}",
        cert_path.display()
    );
    Ok(())
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
/// for Direct TLS (XEP-0368), serving `certs` (the default domain's
/// first) by SNI.
pub fn settings(certs: &[ServerCert], starttls: StartTls) -> Result<TlsSettings, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let settings = TlsSettings::new(starttls, certificates(certs)?, |resolver| {
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        server.alpn_protocols = vec![b"xmpp-client".to_vec()];
        Ok(server)
    })?;
    Ok(settings)
}

/// The hosted domains' certificates, each served to whoever asks for its
/// domain (the default domain's first), for clients and other servers.
pub fn certificates(certs: &[ServerCert]) -> Result<Certificates, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    let mut by_domain = HashMap::new();
    for cert in certs {
        // Checks that the key is the certificate's, as a single cert did.
        let key = rustls::sign::CertifiedKey::from_der(cert.chain.clone(), cert.key.clone_key(), &provider)?;
        let host = HostCert {
            key: Arc::new(key),
            server_end_point: server_end_point(&cert.chain[0]),
        };
        by_domain.insert(cert.domain.clone(), host);
    }
    let default = certs.first().map_or("", |c| c.domain.as_str());
    Certificates::new(default, by_domain).ok_or_else(|| TlsError::NoDefault(default.to_owned()))
}

/// What `shoal cert` prints.
pub fn describe(cert: &ServerCert) -> String {
    let mut out = format!("certificate: {}", cert.cert_path.display());
    if cert.generated {
        out.push_str(" (self-signed, generated by Shoal)");
    }
    out.push_str(&format!("\ndomain:      {}", cert.domain));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config_in(dir: &Path, domain: &str) -> Config {
        let mut config = Config {
            domain: Some(domain.to_owned()),
            ..Config::default()
        };
        config.storage.sqlite = dir.join("shoal.db");
        config
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_generated_key_is_private_and_made_again_when_exposed_or_for_another_domain() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path(), "localhost");
        let (cert_path, key_path) = generated_paths(&config, "localhost");
        let first = load_or_generate(&config, "localhost").unwrap();
        assert!(first.generated);
        assert_eq!(mode(&key_path), 0o600);
        // Loaded again as it is.
        assert_eq!(load_or_generate(&config, "localhost").unwrap().chain, first.chain);
        // A key someone made readable is not used again.
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let second = load_or_generate(&config, "localhost").unwrap();
        assert_ne!(second.chain, first.chain);
        assert_eq!(mode(&key_path), 0o600);
        // Nor one made for another domain.
        let other = config_in(dir.path(), "example.org");
        let third = load_or_generate(&other, "example.org").unwrap();
        assert_ne!(third.chain, second.chain);
        assert!(names_domain(&third.chain[0], "example.org"));
        assert!(!names_domain(&third.chain[0], "localhost"));
        assert!(cert_path.exists());
    }

    #[test]
    fn a_configured_key_readable_by_others_or_a_certificate_for_another_domain_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
        let key = dir.path().join("server.key");
        std::fs::copy(fixtures.join("server.key"), &key).unwrap();
        let mut config = config_in(dir.path(), "localhost");
        config.tls.cert = Some(fixtures.join("server.pem"));
        config.tls.key = Some(key.clone());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_generate(&config, "localhost").err().unwrap().to_string();
        assert!(err.contains("readable by other users (mode 644)"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(!load_or_generate(&config, "localhost").unwrap().generated);
        config.domain = Some("example.org".into());
        let err = load_or_generate(&config, "example.org").err().unwrap().to_string();
        assert!(err.contains("does not name the domain example.org"), "{err}");
    }

    #[test]
    fn each_domain_gets_its_own_generated_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path(), "a.test");
        config.domain = None;
        config.domains = vec!["a.test".into(), "b.test".into()];
        let certs = load_all(&config).unwrap();
        let domains: Vec<&str> = certs.iter().map(|c| c.domain.as_str()).collect();
        assert_eq!(domains, ["a.test", "b.test"]);
        assert!(names_domain(&certs[0].chain[0], "a.test") && !names_domain(&certs[0].chain[0], "b.test"));
        assert!(names_domain(&certs[1].chain[0], "b.test") && !names_domain(&certs[1].chain[0], "a.test"));
        // The default domain's where a one-domain server keeps it.
        assert_eq!(certs[0].cert_path, dir.path().join("shoal.cert.pem"));
        assert_eq!(certs[1].cert_path, dir.path().join("shoal.b.test.cert.pem"));
        assert_eq!(load_all(&config).unwrap()[1].chain, certs[1].chain, "made once");
        settings(&certs, StartTls::Optional).unwrap();
    }

    #[test]
    fn wildcards_cover_one_label() {
        let cert = self_signed("example.org", vec!["*.example.org".into()]).unwrap();
        let der = cert.cert.der().to_vec();
        assert!(names_domain(&der, "chat.example.org"));
        assert!(!names_domain(&der, "example.org"));
        assert!(!names_domain(&der, "a.b.example.org"));
    }
}
