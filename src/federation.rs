//! Federation as configured (`[s2s]`): the settings, our certificate as
//! both server and client of other servers, the roots their certificates
//! are checked against, and where remote domains are found.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use shoal_actors::router::Router;
use shoal_actors::s2s::tls::ClientCertificates;
use shoal_actors::s2s::{Dns, Resolve, S2sContext, S2sSettings, S2sTls, StaticHosts, StaticThen};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, S2sTls as TlsMode};
use crate::tls::{ServerCert, TlsError};

/// Starts federation for `router`, with each hosted domain's certificate
/// (`certs`, the default domain's first) and `secret` for dialback keys
/// (kept in the database, so that keys survive a restart); `Err` names
/// what is wrong.
pub fn start(
    config: &Config,
    certs: &[ServerCert],
    router: Router,
    secret: Vec<u8>,
    shutdown: CancellationToken,
) -> Result<Arc<S2sContext>, TlsError> {
    let c = &config.s2s;
    let mut settings = S2sSettings {
        tls_required: c.tls == TlsMode::Required,
        connect_timeout: Duration::from_secs(c.connect_timeout_secs),
        reconnect_after: Duration::from_secs(c.reconnect_after_secs),
        idle_timeout: Duration::from_secs(c.idle_timeout_secs),
        max_queued: c.max_queued,
        max_streams_per_domain: c.max_streams_per_domain,
        max_stanza_bytes: c.max_stanza_bytes,
        blocked: c.blocked.iter().cloned().collect::<HashSet<_>>(),
        ..S2sSettings::default()
    };
    settings.codec.parse = shoal_actors::xml::ParseLimits {
        max_depth: config.limits.max_depth,
        max_attrs: config.limits.max_attributes,
        max_name_bytes: config.limits.max_name_bytes,
    };
    settings.connections.write_timeout = config.limits.connection_limits().write_timeout;
    (settings.connections.rate, settings.connections.burst) = (c.rate_bytes_per_sec, c.burst_bytes);
    settings.requests.iq_timeout = Duration::from_secs(c.iq_timeout_secs);
    // Each hosted domain's certificate, for the streams peers open to it
    // and on the links it opens.
    let served = crate::tls::certificates(certs)?;
    let roots = roots(c.ca_file.as_deref())?;
    let tls = S2sTls::new(served, client_certificates(certs), roots, settings.tls_required)?;
    let hosts = StaticHosts::new(c.hosts.iter().map(|(d, a)| (d.clone(), *a)));
    let resolver: Box<dyn Resolve + Send + Sync> = match Dns::from_system() {
        Ok(dns) => Box::new(StaticThen { hosts, then: dns }),
        Err(e) => {
            log::warn!("no DNS resolver ({e}): only the domains in [s2s.hosts] can be reached");
            Box::new(hosts)
        }
    };
    Ok(S2sContext::new(router, settings, tls, secret, resolver, shutdown))
}

/// What the links we open present: each domain's certificate.
pub(crate) fn client_certificates(certs: &[ServerCert]) -> ClientCertificates {
    certs
        .iter()
        .map(|c| (c.domain.clone(), c.chain.clone(), c.key.clone_key()))
        .collect()
}

/// The system's roots and `[s2s] ca_file`'s.
fn roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(system.certs);
    log::debug!("{added} trusted roots from the system");
    if let Some(path) = ca_file {
        for cert in crate::tls::read_chain(path)? {
            roots.add(cert).map_err(|e| TlsError::Cert {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        }
    }
    Ok(roots)
}
