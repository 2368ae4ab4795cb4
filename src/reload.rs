//! Reloading a running server's configuration (`shoal reload`, SIGHUP):
//! the file it was started with is read again and checked whole (parsed,
//! validated, its certificates loaded). Anything wrong, and the answer is
//! why, with everything as it was. Otherwise what can change without a
//! restart is put in force, without dropping a session:
//!
//! - the TLS certificates: handshakes from then on, of clients and of
//!   other servers (and the certificate our links to them present);
//!   connections already encrypted keep theirs;
//! - the connection limits of `[limits]` (rates, counts, timeouts, login
//!   throttling), for connections already open too;
//! - in-band registration (`[registration]`, `[hosts."d".registration]`),
//!   for streams opened and requests made from then on;
//! - the components of `[[components.service]]`, their secrets and limits,
//!   for connections from then on (connected ones stay as they are).
//!
//! What else differs is named in a "needs a restart" line, and left as it
//! runs.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use shoal_actors::c2s::io::ReplaceError;
use shoal_actors::c2s::C2sContext;
use shoal_actors::component::ComponentContext;
use shoal_actors::hosts::HostsError;
use shoal_actors::router::Router;
use shoal_actors::s2s::S2sContext;

use crate::config::{Config, ConfigError, LimitsConfig};
use crate::tls::{ServerCert, TlsError};

/// The names of the fields that differ between two values of one struct.
macro_rules! changed {
    ($a:expr, $b:expr, [$($key:ident),+ $(,)?]) => {{
        let (a, b) = (&$a, &$b);
        let mut keys: Vec<&'static str> = Vec::new();
        $(
            if format!("{:?}", a.$key) != format!("{:?}", b.$key) {
                keys.push(stringify!($key));
            }
        )+
        keys
    }};
}

/// `$section(NAME, changed keys, whole section differs)` for each row
/// `NAME field [keys]` of a table of `Config`'s sections.
macro_rules! restart_keys {
    ($section:ident, $a:expr, $b:expr, { $($name:literal $field:ident [$($key:ident),+ $(,)?]),+ $(,)? }) => {
        $( $section($name, changed!($a.$field, $b.$field, [$($key),+]), differs(&$a.$field, &$b.$field)); )+
    };
}

/// Sets the fields named of one struct from another.
macro_rules! copy_fields {
    ($to:expr, $from:expr, [$($key:ident),+ $(,)?]) => {
        $( $to.$key = $from.$key; )+
    };
}

/// Calls `$m!(ARGS [keys])` with the keys of `[limits]` that rule
/// connections (those of `LimitsConfig::connection_limits`): they reload.
macro_rules! connection_limit_keys {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)* [
            rate_bytes_per_sec,
            burst_bytes,
            preauth_rate_bytes_per_sec,
            preauth_burst_bytes,
            max_connections_per_ip,
            max_unauthenticated,
            idle_timeout_secs,
            ping_timeout_secs,
            write_timeout_secs,
            auth_failures_per_account,
            auth_failures_per_network,
            auth_throttle_max_delay_secs,
            auth_failure_window_secs,
            auth_throttle_entries,
        ])
    };
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the server was started without a configuration file (--config): there is none to read again")]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("TLS: {0}")]
    Certificates(#[from] ReplaceError),
    #[error("domains: {0}")]
    Hosts(#[from] HostsError),
}

/// What a reload changes, and the configuration in force.
pub struct Reloader {
    /// The file the server was started with.
    path: Option<PathBuf>,
    running: Mutex<Running>,
    c2s: Arc<C2sContext>,
    /// When components are configured (their listener is up).
    components: Option<Arc<ComponentContext>>,
    /// When federation is on.
    s2s: Option<Arc<S2sContext>>,
    router: Router,
}

/// The configuration in force (what the server started with, and what
/// reloads changed of it), and the certificates served.
struct Running {
    config: Config,
    /// SHA-256 fingerprints by domain, when TLS is served at all.
    fingerprints: BTreeMap<String, String>,
}

impl Reloader {
    /// For a server started from `path` (if any) with `config`, serving
    /// `certs` (none without TLS).
    pub(crate) fn new(
        path: Option<PathBuf>,
        config: Config,
        certs: &[ServerCert],
        c2s: Arc<C2sContext>,
        components: Option<Arc<ComponentContext>>,
        s2s: Option<Arc<S2sContext>>,
    ) -> Reloader {
        Reloader {
            path,
            running: Mutex::new(Running {
                config,
                fingerprints: fingerprints(certs),
            }),
            router: c2s.router.clone(),
            c2s,
            components,
            s2s,
        }
    }

    /// Reads the configuration file again and puts what it changes in
    /// force; answers what changed, one line each (the last one names what
    /// needs a restart, if anything does). On an error nothing changed.
    pub fn reload(&self) -> Result<Vec<String>, ReloadError> {
        let path = self.path.as_deref().ok_or(ReloadError::NoFile)?;
        let new = Config::load(path)?;
        // One reload at a time: each starts from what the last put in force.
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let old = &running.config;
        // Without a component listener, components need a restart.
        let applied = apply(old, &new, self.components.is_some());
        let restart = needs_restart(&applied, &new);

        // Everything that can fail, before anything changes.
        let hosts = applied.hosted()?;
        let tls_served = self.c2s.config.tls.is_some() || self.s2s.is_some();
        let certs = if tls_served {
            crate::tls::load_all(&applied)?
        } else {
            Vec::new()
        };
        let c2s_certs = match &self.c2s.config.tls {
            Some(_) => Some(crate::tls::certificates(&certs)?),
            None => None,
        };
        if let Some(s2s) = &self.s2s {
            // Builds the TLS clients first, and swaps nothing if it fails:
            // after this, nothing below can fail (the domains are those
            // the server runs with).
            let served = crate::tls::certificates(&certs)?;
            s2s.tls
                .set_certificates(served, crate::federation::client_certificates(&certs))?;
        }
        if let (Some(tls), Some(c2s_certs)) = (&self.c2s.config.tls, c2s_certs) {
            tls.set_certificates(c2s_certs)?;
        }
        let mut report = Vec::new();
        let fingerprints = fingerprints(&certs);
        for (domain, fingerprint) in &fingerprints {
            if running.fingerprints.get(domain) != Some(fingerprint) {
                report.push(format!("certificate of {domain}: SHA-256 {fingerprint}"));
            }
        }

        let limits = limit_keys(&old.limits, &applied.limits);
        if !limits.is_empty() {
            self.c2s.set_limits(applied.limits.connection_limits());
            let keys: Vec<String> = limits.iter().map(|k| format!("[limits] {k}")).collect();
            report.push(format!("limits: {}", keys.join(", ")));
        }

        let mut registration = Vec::new();
        for domain in applied.domain_list() {
            let (was, now) = (old.registration_of(domain), applied.registration_of(domain));
            if was != now {
                let (on, per_network) = now;
                let state = if on { "on" } else { "off" };
                registration.push(format!(
                    "registration at {domain}: {state} ({per_network} accounts per network before waits)"
                ));
            }
        }
        // Only on a change: each policy put in force is kept (see `Current`).
        if !registration.is_empty() {
            self.router.hosts().set_policies(&hosts)?;
            report.append(&mut registration);
        }

        if let Some(components) = &self.components {
            let changes = component_changes(old, &applied);
            // The clients' limits are the components' defaults.
            if !changes.is_empty() || !limits.is_empty() {
                let services = crate::server::component_services(&applied);
                components.set_services(&services, applied.limits.connection_limits());
            }
            for (domain, change) in &changes {
                if *change == "added" {
                    // Known before it connects, as at start.
                    self.router.services().expect(domain);
                }
                report.push(format!("component {domain}: {change}"));
            }
        }

        if report.is_empty() {
            report.push("nothing changed".to_owned());
        }
        for line in &report {
            log::info!("reload: {line}");
        }
        if !restart.is_empty() {
            let line = format!("needs a restart: {}", restart.join(", "));
            log::warn!("reload: {line}");
            report.push(line);
        }
        *running = Running {
            config: applied,
            fingerprints,
        };
        Ok(report)
    }
}

/// SHA-256 fingerprints by domain.
fn fingerprints(certs: &[ServerCert]) -> BTreeMap<String, String> {
    certs
        .iter()
        .map(|c| (c.domain.clone(), crate::tls::fingerprint(c)))
        .collect()
}

/// What can be in force of `new`: `running` with every key that reloads
/// taken from `new` (the components only with `components`).
fn apply(running: &Config, new: &Config, components: bool) -> Config {
    let mut c = running.clone();
    c.tls = new.tls.clone();
    // Every key of `[hosts."d"]` reloads: registration and certificates.
    c.hosts = new.hosts.clone();
    c.registration = new.registration.clone();
    connection_limit_keys!(copy_fields!(c.limits, new.limits,));
    if components {
        c.components.services = new.components.services.clone();
    }
    c
}

/// The keys of `[limits]` that reload and differ.
fn limit_keys(a: &LimitsConfig, b: &LimitsConfig) -> Vec<&'static str> {
    connection_limit_keys!(changed!(a, b,))
}

fn differs(a: &impl Debug, b: &impl Debug) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// What differs between what can be in force (`applied`) and what the
/// file asks for, as `[section] key`; a section alone when what differs
/// in it is not among the keys named here.
fn needs_restart(applied: &Config, new: &Config) -> Vec<String> {
    let (a, b) = (applied, new);
    let mut out = Vec::new();
    if a.domain_list() != b.domain_list() {
        out.push("domain/domains".to_owned());
    }
    let mut section = |name: &str, keys: Vec<&str>, whole: bool| {
        if keys.is_empty() && whole {
            out.push(name.to_owned());
        }
        out.extend(keys.into_iter().map(|k| format!("{name} {k}")));
    };
    // Each section: the keys named (those a user would change), then the
    // section alone if something else in it differs.
    restart_keys!(section, a, b, {
        "[storage]" storage [sqlite, durability],
        "[c2s]" c2s [
            listen,
            max_stanza_bytes,
            max_outbound_bytes,
            negotiation_timeout_secs,
            starttls,
            direct_tls_listen,
            allow_plain_without_tls,
        ],
        "[auth]" auth [scram_iterations, max_failures],
        "[sessions]" sessions [max_per_user],
        "[limits]" limits [
            max_depth,
            max_attributes,
            max_name_bytes,
            max_header_bytes,
            max_roster_items,
            max_pending_requests,
        ],
        "[control]" control [socket],
        "[components]" components [
            listen,
            conflict,
            iq_timeout_secs,
            hidden,
            max_pending,
            max_pending_per_requester,
            // Only when no component listener was started.
            services,
        ],
        "[offline]" offline [max_messages],
        "[sm]" sm [
            enabled,
            resume_timeout_secs,
            max_unacked,
            ack_request_stanzas,
            ack_request_secs,
        ],
        "[mam]" mam [enabled, default, retention_days, max_page],
        "[s2s]" s2s [
            listen,
            tls,
            ca_file,
            connect_timeout_secs,
            reconnect_after_secs,
            idle_timeout_secs,
            max_queued,
            max_stanza_bytes,
            max_streams_per_domain,
            iq_timeout_secs,
            rate_bytes_per_sec,
            burst_bytes,
            blocked,
            hosts,
        ],
        "[http]" http [listen, tls_listen, allowed_origins, conversejs_dir, metrics, metrics_allow],
        "[upload]" upload [enabled, domain, dir, url, max_file_bytes, quota_bytes, expire_after_secs, slot_timeout_secs],
        "[caps]" caps [max_entries],
        "[pep]" pep [enabled, max_nodes, max_item_bytes, max_items, publish_rate, publish_burst],
        "[muc]" muc [
            enabled,
            domain,
            create,
            max_rooms_per_user,
            max_occupants,
            max_history,
            message_rate,
            message_burst,
            idle_unload_secs,
        ],
    });
    // A section added to the configuration and forgotten above.
    if out.is_empty() && differs(a, b) {
        out.push("settings not named here".to_owned());
    }
    out
}

/// The components added, changed (secret, name or limits) and removed,
/// by domain.
fn component_changes(old: &Config, new: &Config) -> Vec<(String, &'static str)> {
    let find = |c: &Config, domain: &str| c.components.services.iter().find(|s| s.domain == domain).cloned();
    let mut out = Vec::new();
    for s in &new.components.services {
        match find(old, &s.domain) {
            None => out.push((s.domain.clone(), "added")),
            // The secret is left out of Debug: compared on its own.
            Some(o) if o.secret != s.secret || differs(&o, s) => out.push((s.domain.clone(), "changed")),
            Some(_) => {}
        }
    }
    for s in &old.components.services {
        if find(new, &s.domain).is_none() {
            out.push((s.domain.clone(), "removed"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        c
    }

    #[test]
    fn what_reloads_is_applied_and_the_rest_named() {
        let old = config("[limits]\nrate_bytes_per_sec = 1000\nmax_depth = 20\n");
        let new = config(
            "[limits]\nrate_bytes_per_sec = 2000\nmax_depth = 30\n[c2s]\nlisten = ['127.0.0.1:5223']\n\
             [registration]\nenabled = false\n[sm]\nmax_unacked = 10\n",
        );
        let applied = apply(&old, &new, true);
        assert_eq!(applied.limits.rate_bytes_per_sec, 2000);
        assert_eq!(applied.limits.max_depth, 20);
        assert_eq!(applied.registration.enabled, Some(false));
        assert_eq!(applied.c2s.listen, old.c2s.listen);
        assert_eq!(limit_keys(&old.limits, &applied.limits), ["rate_bytes_per_sec"]);
        assert_eq!(
            needs_restart(&applied, &new),
            ["[c2s] listen", "[limits] max_depth", "[sm] max_unacked"]
        );
        assert!(needs_restart(&applied, &applied).is_empty());
        let http = config("[http]\nlisten = ['127.0.0.1:5281']\n");
        assert_eq!(needs_restart(&config(""), &http), ["[http] listen"]);
    }

    #[test]
    fn components_are_compared_secret_included() {
        let service = |secret: &str, name: &str| {
            format!("[[components.service]]\ndomain = 'bot.localhost'\nsecret = '{secret}'\nname = '{name}'\n")
        };
        let old = config(&service("a", "Bot"));
        assert!(component_changes(&old, &old).is_empty());
        assert_eq!(
            component_changes(&old, &config(&service("b", "Bot"))),
            [("bot.localhost".to_owned(), "changed")]
        );
        assert_eq!(
            component_changes(&old, &config(&service("a", "Robot"))),
            [("bot.localhost".to_owned(), "changed")]
        );
        let other = config("[[components.service]]\ndomain = 'calc.localhost'\nsecret = 'c'\n");
        assert_eq!(
            component_changes(&old, &other),
            [
                ("calc.localhost".to_owned(), "added"),
                ("bot.localhost".to_owned(), "removed")
            ]
        );
        // Without a component listener, components need a restart.
        let applied = apply(&Config::default(), &other, false);
        assert_eq!(needs_restart(&applied, &other), ["[components] services"]);
    }
}
