//! TLS between servers. Both ends of a stream present their domain's
//! certificate. Neither refuses the other's during the handshake: a
//! certificate that does not verify (self-signed, another name) still
//! gets an encrypted stream, on which the peer may authenticate by
//! dialback (XEP-0220) instead. Whether it verifies is checked afterwards,
//! against the trusted roots, for the domain the peer claims: that decides
//! whether SASL EXTERNAL (XEP-0178) is offered.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use crate::c2s::io::{Certificates, StartTls, TlsSettings};

/// The TLS of a server's federation.
pub struct S2sTls {
    /// For streams peers open: asks for (and accepts any) client
    /// certificate.
    pub server: TlsSettings,
    /// For streams we open, by local domain: each presents its domain's
    /// certificate (for SASL EXTERNAL) and accepts any.
    clients: HashMap<String, TlsConnector>,
    /// The first domain's, for a local domain with none (a service's).
    default_client: TlsConnector,
    /// Checks a peer's chain for a domain; `None` with no trusted roots at
    /// all (then nobody can use EXTERNAL).
    roots: Option<Arc<WebPkiServerVerifier>>,
}

impl S2sTls {
    /// From our domains' certificates, served by the domain a peer asks
    /// for (`certs`) and presented by the domain a link is from (`clients`:
    /// domain, chain leaf first, key; the first is the default), and the
    /// roots peers' certificates are checked against.
    pub fn new(
        certs: Certificates,
        clients: Vec<(String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
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
        let mut connectors = HashMap::new();
        let mut default_client = None;
        for (domain, chain, key) in clients {
            let client = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
                .with_client_auth_cert(chain, key)?;
            let connector = TlsConnector::from(Arc::new(client));
            default_client.get_or_insert_with(|| connector.clone());
            connectors.insert(domain, connector);
        }
        let default_client = default_client.ok_or(rustls::Error::General("no certificate to present".into()))?;
        let roots = (!roots.is_empty())
            .then(|| {
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .ok()
            })
            .flatten();
        Ok(S2sTls {
            server,
            clients: connectors,
            default_client,
            roots,
        })
    }

    /// What a link from `local` presents: that domain's certificate.
    pub(crate) fn client(&self, local: &str) -> &TlsConnector {
        self.clients.get(local).unwrap_or(&self.default_client)
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
