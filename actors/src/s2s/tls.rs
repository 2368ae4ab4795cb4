//! TLS between servers. Both ends of a stream present their domain's
//! certificate. Neither refuses the other's during the handshake: a
//! certificate that does not verify (self-signed, another name) still
//! gets an encrypted stream, on which the peer may authenticate by
//! dialback (XEP-0220) instead. Whether it verifies is checked afterwards,
//! against the trusted roots, for the domain the peer claims: that decides
//! whether SASL EXTERNAL (XEP-0178) is offered.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use crate::c2s::io::{Certificates, ReplaceError, StartTls, TlsSettings};

/// Our domains' certificates as presented by their TLS clients: domain,
/// chain leaf first, key; the first is the default.
pub type ClientCertificates = Vec<(String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>;

/// The TLS of a server's federation.
pub struct S2sTls {
    /// For streams peers open: asks for (and accepts any) client
    /// certificate.
    pub server: TlsSettings,
    /// For streams we open; a reload replaces them whole.
    clients: RwLock<Arc<Clients>>,
    /// Checks a peer's chain for a domain; `None` with no trusted roots at
    /// all (then nobody can use EXTERNAL).
    roots: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

/// The TLS clients of the streams we open.
struct Clients {
    /// By local domain: each presents its domain's certificate (for SASL
    /// EXTERNAL) and accepts any.
    by_domain: HashMap<String, TlsConnector>,
    /// The first domain's, for a local domain with none under it either.
    default: TlsConnector,
}

impl Clients {
    fn new(provider: &Arc<CryptoProvider>, certs: ClientCertificates) -> Result<Clients, rustls::Error> {
        let mut by_domain = HashMap::new();
        let mut default = None;
        for (domain, chain, key) in certs {
            let client = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
                .with_client_auth_cert(chain, key)?;
            let connector = TlsConnector::from(Arc::new(client));
            default.get_or_insert_with(|| connector.clone());
            by_domain.insert(domain, connector);
        }
        let default = default.ok_or(rustls::Error::General("no certificate to present".into()))?;
        Ok(Clients { by_domain, default })
    }
}

impl S2sTls {
    /// From our domains' certificates, served by the domain a peer asks
    /// for (`certs`) and presented by the domain a link is from (`clients`:
    /// domain, chain leaf first, key; the first is the default), and the
    /// roots peers' certificates are checked against.
    pub fn new(
        certs: Certificates,
        clients: ClientCertificates,
        roots: RootCertStore,
        tls_required: bool,
    ) -> Result<S2sTls, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let starttls = if tls_required {
            StartTls::Required
        } else {
            StartTls::Optional
        };
        let server = TlsSettings::new(starttls, certs, |resolver| {
            Ok(rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .with_client_cert_verifier(Arc::new(AnyCertificate(provider.clone())))
                .with_cert_resolver(resolver))
        })?;
        let clients = Clients::new(&provider, clients)?;
        let roots = (!roots.is_empty())
            .then(|| {
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .ok()
            })
            .flatten();
        Ok(S2sTls {
            server,
            clients: RwLock::new(Arc::new(clients)),
            roots,
            provider,
        })
    }

    /// What a link from `local` presents: that domain's certificate; for a
    /// published service's domain (`conference.a.test`), which has none,
    /// that of the hosted domain it is under (`a.test`), as Prosody does
    /// for components: with a certificate that names the service too, the
    /// service's links authenticate by EXTERNAL, and otherwise by dialback.
    pub(crate) fn client(&self, local: &str) -> TlsConnector {
        let clients = self.clients.read().unwrap_or_else(PoisonError::into_inner);
        crate::hosts::and_parents(local)
            .find_map(|d| clients.by_domain.get(d))
            .unwrap_or(&clients.default)
            .clone()
    }

    /// Renewed certificates, as [`S2sTls::new`] takes them, for the
    /// streams opened from now on, both ways; streams up keep theirs.
    /// On an error nothing changes.
    pub fn set_certificates(&self, certs: Certificates, clients: ClientCertificates) -> Result<(), ReplaceError> {
        let clients = Clients::new(&self.provider, clients)?;
        self.server.set_certificates(certs)?;
        *self.clients.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(clients);
        Ok(())
    }

    /// True when `chain` (leaf first) is valid for `domain` under the
    /// trusted roots. Checked as a server certificate whichever side
    /// presented it, as Prosody does: servers' certificates often lack the
    /// client-authentication purpose.
    pub fn verifies(&self, chain: &[CertificateDer<'static>], domain: &str) -> bool {
        let (Some(roots), Some((leaf, intermediates))) = (&self.roots, chain.split_first()) else {
            return false;
        };
        let Ok(name) = ServerName::try_from(domain.to_owned()) else {
            return false;
        };
        roots
            .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
            .is_ok()
    }
}

/// Accepts any certificate chain (signatures are still checked): whether
/// it is valid for the peer's domain is asked afterwards ([`S2sTls::verifies`]).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

/// The handshake signatures' checks, which both verifier traits ask for
/// alike: the provider's.
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    };
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    signature_checks!();
}

impl ClientCertVerifier for AnyCertificate {
    /// Asked for, not required: a peer without one can still use dialback.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    signature_checks!();
}
