//! Where a remote domain's server listens: the ordered [`Target`]s to try,
//! as RFC 6120 §3.2 and XEP-0368 have it.
//!
//! 1. `[s2s.hosts]` ([`StaticHosts`]): an address configured for the
//!    domain, no DNS at all.
//! 2. SRV records of `_xmpps-server._tcp.D` (TLS from the first byte) and
//!    `_xmpp-server._tcp.D` (STARTTLS), merged by priority, in weighted
//!    random order within a priority (RFC 2782): [`plan`].
//! 3. A service whose only target is `.` is one the domain says it does
//!    not offer. If that is `_xmpp-server`, and `_xmpps-server` has
//!    nothing usable either, the domain has no server: no fallback.
//! 4. No SRV records (or failed lookups): the domain's own A/AAAA records,
//!    port 5269, STARTTLS.
//!
//! SNI and certificate checks always use the remote domain, never a
//! target's host name. What is tried is behind the [`Resolve`] trait, so
//! that tests can script it.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use futures_util::future::{self, LocalBoxFuture};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::error::StanzaCondition;

/// The server-to-server port, without SRV records (RFC 6120 §14.7).
pub const DEFAULT_PORT: u16 = 5269;
/// XEP-0368: the SRV service of TLS from the first byte.
pub const SRV_DIRECT_TLS: &str = "_xmpps-server._tcp.";
/// RFC 6120 §3.2.1: the SRV service of STARTTLS.
pub const SRV_STARTTLS: &str = "_xmpp-server._tcp.";

/// One address to try.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: SocketAddr,
    /// TLS from the first byte (`_xmpps-server`; ALPN `xmpp-server`);
    /// otherwise a plain connection that negotiates STARTTLS.
    pub direct_tls: bool,
    /// The name the address was found for, for log lines: the SRV target,
    /// or the domain itself.
    pub host: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tls = if self.direct_tls { ", direct TLS" } else { "" };
        write!(f, "{} ({}{tls})", self.addr, self.host)
    }
}

/// Why a domain has nowhere to connect to. Either way its senders get
/// `<remote-server-not-found/>` ([`ResolveError::condition`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The domain publishes `.` as its only `_xmpp-server` target.
    #[error("{domain} has no XMPP server (its SRV target is \".\")")]
    NoService { domain: String },
    /// Nothing found, or the lookups failed.
    #[error("no address found for {domain}: {reason}")]
    NotFound { domain: String, reason: String },
}

impl ResolveError {
    pub fn domain(&self) -> &str {
        match self {
            ResolveError::NoService { domain } | ResolveError::NotFound { domain, .. } => domain,
        }
    }

    /// The stanza error for what was sent to the domain (RFC 6120 §8.3.3.16).
    pub fn condition(&self) -> StanzaCondition {
        StanzaCondition::RemoteServerNotFound
    }
}

/// What [`Resolve::targets`] returns: run on the arbiter that asks, so it
/// need not be `Send`.
pub type TargetsFuture = LocalBoxFuture<'static, Result<Vec<Target>, ResolveError>>;

/// Finds the servers of a remote domain.
pub trait Resolve {
    /// The targets to try for `domain`, best first; never empty when `Ok`.
    fn targets(&self, domain: &str) -> TargetsFuture;
}

/// `[s2s.hosts]`: a fixed address per domain, with STARTTLS.
#[derive(Clone, Debug, Default)]
pub struct StaticHosts {
    hosts: HashMap<String, SocketAddr>,
}

impl StaticHosts {
    /// Domains as configured (normalised, as their JIDs are).
    pub fn new(hosts: impl IntoIterator<Item = (String, SocketAddr)>) -> Self {
        StaticHosts {
            hosts: hosts.into_iter().collect(),
        }
    }

    /// The configured target of `domain`, if any.
    pub fn get(&self, domain: &str) -> Option<Target> {
        self.hosts.get(domain).map(|addr| Target {
            addr: *addr,
            direct_tls: false,
            host: domain.to_owned(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

/// Only the static map: for tests, and for servers that federate with a
/// fixed set of peers.
impl Resolve for StaticHosts {
    fn targets(&self, domain: &str) -> TargetsFuture {
        let found = self.get(domain).map(|t| vec![t]).ok_or_else(|| ResolveError::NotFound {
            domain: domain.to_owned(),
            reason: "not in [s2s.hosts]".into(),
        });
        Box::pin(future::ready(found))
    }
}

/// The static map first, then another resolver (in production, [`Dns`]).
#[derive(Clone, Debug)]
pub struct StaticThen<R> {
    pub hosts: StaticHosts,
    pub then: R,
}

/// What a server uses: `[s2s.hosts]`, then DNS.
pub type StaticThenDns = StaticThen<Dns>;

impl<R: Resolve> Resolve for StaticThen<R> {
    fn targets(&self, domain: &str) -> TargetsFuture {
        match self.hosts.get(domain) {
            Some(target) => Box::pin(future::ready(Ok(vec![target]))),
            None => self.then.targets(domain),
        }
    }
}

/// One SRV record, as far as ordering goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host, without the trailing dot; `.` or empty for the
    /// root ("no service").
    pub target: String,
    /// Found under `_xmpps-server` rather than `_xmpp-server`.
    pub direct_tls: bool,
}

impl SrvRecord {
    /// The target `.`: "decidedly not available at this domain" (RFC 2782).
    pub fn is_root(&self) -> bool {
        self.target.is_empty() || self.target == "."
    }
}

/// What the SRV records of both services say to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SrvPlan {
    /// Try these targets, in this order.
    Targets(Vec<SrvRecord>),
    /// The domain has no XMPP server: do not fall back.
    NoService,
    /// No records: the domain's A/AAAA records, port 5269.
    Fallback,
}

/// Decides from the records of both services (`direct_tls` tells them
/// apart; lookups that failed contribute none). A service whose records
/// are all `.` is refused; `.` records are never tried. Without any other
/// record, a refused `_xmpp-server` means [`SrvPlan::NoService`], while a
/// refused `_xmpps-server` alone still falls back to A/AAAA with STARTTLS
/// (that is the `_xmpp-server` service's fallback, and it was not refused).
pub fn plan<R: Rng + ?Sized>(records: Vec<SrvRecord>, rng: &mut R) -> SrvPlan {
    let mut starttls = records.iter().filter(|r| !r.direct_tls).peekable();
    let starttls_refused = starttls.peek().is_some() && starttls.all(SrvRecord::is_root);
    let usable: Vec<SrvRecord> = records.into_iter().filter(|r| !r.is_root()).collect();
    if !usable.is_empty() {
        SrvPlan::Targets(order(usable, rng))
    } else if starttls_refused {
        SrvPlan::NoService
    } else {
        SrvPlan::Fallback
    }
}

/// RFC 2782's order: lowest priority first; within a priority, records are
/// drawn one by one at random, each with a chance proportional to its
/// weight (weight 0: a very small chance, drawn only when the random pick
/// is 0, or once only weight-0 records are left).
pub fn order<R: Rng + ?Sized>(mut records: Vec<SrvRecord>, rng: &mut R) -> Vec<SrvRecord> {
    records.sort_by_key(|r| r.priority);
    let mut ordered = Vec::with_capacity(records.len());
    for group in records.chunk_by(|a, b| a.priority == b.priority) {
        // "Arrange in any order, except that all those with weight 0 are
        // placed at the beginning": at random, so that equal records share
        // the load.
        let mut group = group.to_vec();
        group.shuffle(rng);
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
            let pick = rng.random_range(0..=total);
            let mut running = 0u64;
            let next = group
                .iter()
                .position(|r| {
                    running += u64::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            ordered.push(group.remove(next));
        }
    }
    ordered
}

/// An IP literal domain (`192.0.2.1`, `[2001:db8::1]`), which has no
/// DNS records to look up.
fn ip_literal(domain: &str) -> Option<IpAddr> {
    if let Some(inner) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    domain.parse::<IpAddr>().ok()
}

/// DNS, through hickory-resolver: SRV records of both services, then the
/// addresses of their targets; A/AAAA of the domain without them.
#[derive(Clone, Debug)]
pub struct Dns {
    resolver: TokioResolver,
}

impl Dns {
    /// A resolver configured as the system is (`/etc/resolv.conf`, and
    /// `/etc/hosts` for addresses). Build it on the arbiter that uses it.
    pub fn from_system() -> std::io::Result<Dns> {
        let resolver = TokioResolver::builder_tokio()
            .map_err(|e| std::io::Error::other(format!("reading the system's DNS configuration: {e}")))?
            .build()
            .map_err(|e| std::io::Error::other(format!("starting the DNS resolver: {e}")))?;
        Ok(Dns { resolver })
    }

    /// With a resolver configured elsewhere (other name servers, options).
    pub fn new(resolver: TokioResolver) -> Dns {
        Dns { resolver }
    }
}

impl Resolve for Dns {
    fn targets(&self, domain: &str) -> TargetsFuture {
        let resolver = self.resolver.clone();
        let domain = domain.to_owned();
        Box::pin(async move { resolve(&resolver, &domain).await })
    }
}

/// The SRV records of one lookup; a failed lookup has none.
fn srv_records(lookup: Result<Lookup, impl fmt::Display>, name: &str, direct_tls: bool) -> Vec<SrvRecord> {
    let lookup = match lookup {
        Ok(lookup) => lookup,
        Err(e) => {
            // NXDOMAIN and "no records" land here too: the usual case.
            log::debug!("SRV {name}: {e}");
            return Vec::new();
        }
    };
    lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(SrvRecord {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv.target.to_string().trim_end_matches('.').to_owned(),
                direct_tls,
            }),
            _ => None,
        })
        .collect()
}

async fn resolve(resolver: &TokioResolver, domain: &str) -> Result<Vec<Target>, ResolveError> {
    let not_found = |reason: String| ResolveError::NotFound {
        domain: domain.to_owned(),
        reason,
    };
    if let Some(ip) = ip_literal(domain) {
        return Ok(vec![Target {
            addr: SocketAddr::new(ip, DEFAULT_PORT),
            direct_tls: false,
            host: domain.to_owned(),
        }]);
    }
    // Fully qualified: the search list of resolv.conf does not apply.
    let fqdn = format!("{}.", domain.trim_end_matches('.'));
    let direct_name = format!("{SRV_DIRECT_TLS}{fqdn}");
    let starttls_name = format!("{SRV_STARTTLS}{fqdn}");
    let (direct, starttls) = future::join(
        resolver.srv_lookup(direct_name.as_str()),
        resolver.srv_lookup(starttls_name.as_str()),
    )
    .await;
    let mut records = srv_records(direct, &direct_name, true);
    records.extend(srv_records(starttls, &starttls_name, false));
    let decided = plan(records, &mut rand::rng());
    let records = match decided {
        SrvPlan::Targets(records) => records,
        SrvPlan::NoService => {
            return Err(ResolveError::NoService {
                domain: domain.to_owned(),
            })
        }
        SrvPlan::Fallback => {
            let ips = resolver
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| not_found(e.to_string()))?;
            let targets: Vec<Target> = ips
                .iter()
                .map(|ip| Target {
                    addr: SocketAddr::new(ip, DEFAULT_PORT),
                    direct_tls: false,
                    host: domain.to_owned(),
                })
                .collect();
            if targets.is_empty() {
                return Err(not_found("no A or AAAA records".into()));
            }
            return Ok(targets);
        }
    };
    // Each target's addresses, in the order of the records.
    let names: Vec<String> = records.iter().map(|r| format!("{}.", r.target)).collect();
    let answers = future::join_all(names.iter().map(|name| resolver.lookup_ip(name.as_str()))).await;
    let mut targets = Vec::new();
    let mut failures = Vec::new();
    for (record, answer) in records.iter().zip(answers) {
        match answer {
            Ok(ips) => targets.extend(ips.iter().map(|ip| Target {
                addr: SocketAddr::new(ip, record.port),
                direct_tls: record.direct_tls,
                host: record.target.clone(),
            })),
            Err(e) => failures.push(format!("{}: {e}", record.target)),
        }
    }
    if targets.is_empty() {
        // Records, but no address for any of them: no fallback to the
        // domain's own addresses, which the records stand in for.
        return Err(not_found(format!(
            "no address for its SRV targets ({})",
            failures.join("; ")
        )));
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn srv(priority: u16, weight: u16, target: &str, direct_tls: bool) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: if direct_tls { 5270 } else { 5269 },
            target: target.into(),
            direct_tls,
        }
    }

    fn targets_of(plan: SrvPlan) -> Vec<String> {
        match plan {
            SrvPlan::Targets(records) => records.into_iter().map(|r| r.target).collect(),
            other => panic!("expected targets, got {other:?}"),
        }
    }

    #[test]
    fn lower_priorities_come_first_whatever_the_weights() {
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            let records = vec![
                srv(20, 0, "c", false),
                srv(10, 1, "a", false),
                srv(30, 65535, "d", false),
                srv(10, 0, "b", true),
            ];
            let ordered = order(records, &mut rng);
            let priorities: Vec<u16> = ordered.iter().map(|r| r.priority).collect();
            assert_eq!(priorities, [10, 10, 20, 30]);
            assert_eq!(ordered[2].target, "c");
            assert_eq!(ordered[3].target, "d");
        }
    }

    #[test]
    fn weights_set_the_odds_within_a_priority() {
        let mut rng = StdRng::seed_from_u64(2782);
        let runs = 2000;
        let mut heavy_first = 0;
        let mut zero_first = 0;
        for _ in 0..runs {
            let ordered = order(vec![srv(5, 10, "light", false), srv(5, 90, "heavy", false)], &mut rng);
            assert_eq!(ordered.len(), 2);
            if ordered[0].target == "heavy" {
                heavy_first += 1;
            }
            let ordered = order(vec![srv(5, 50, "some", false), srv(5, 0, "zero", false)], &mut rng);
            assert_eq!(ordered.len(), 2);
            if ordered[0].target == "zero" {
                zero_first += 1;
            }
        }
        // 90/101 and 1/51 (the pick is uniform in 0..=sum).
        assert!((1650..=1930).contains(&heavy_first), "{heavy_first}");
        assert!((1..=120).contains(&zero_first), "{zero_first}");
    }

    #[test]
    fn equal_weights_share_the_load_and_a_seed_repeats_its_order() {
        let records: Vec<SrvRecord> = ["a", "b", "c"].iter().map(|t| srv(0, 0, t, false)).collect();
        let mut rng = StdRng::seed_from_u64(1);
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            firsts.insert(order(records.clone(), &mut rng)[0].target.clone());
        }
        assert_eq!(firsts.len(), 3, "{firsts:?}");
        let once = order(records.clone(), &mut StdRng::seed_from_u64(9));
        let again = order(records, &mut StdRng::seed_from_u64(9));
        assert_eq!(once, again);
    }

    #[test]
    fn ordering_keeps_every_record() {
        let mut rng = StdRng::seed_from_u64(42);
        for n in 0..30u16 {
            let records: Vec<SrvRecord> = (0..n)
                .map(|i| srv(i % 3, i.wrapping_mul(7919) % 5, &format!("t{i}"), i % 2 == 0))
                .collect();
            let mut ordered = order(records.clone(), &mut rng);
            assert!(ordered.windows(2).all(|w| w[0].priority <= w[1].priority));
            ordered.sort_by(|a, b| a.target.cmp(&b.target));
            let mut expected = records;
            expected.sort_by(|a, b| a.target.cmp(&b.target));
            assert_eq!(ordered, expected);
        }
    }

    #[test]
    fn both_services_merge_by_priority() {
        let mut rng = StdRng::seed_from_u64(3);
        let decided = plan(
            vec![
                srv(10, 0, "starttls.example", false),
                srv(5, 0, "direct.example", true),
                srv(20, 0, "backup.example", true),
            ],
            &mut rng,
        );
        let records = match decided {
            SrvPlan::Targets(records) => records,
            other => panic!("expected targets, got {other:?}"),
        };
        let got: Vec<(&str, bool, u16)> = records
            .iter()
            .map(|r| (r.target.as_str(), r.direct_tls, r.port))
            .collect();
        assert_eq!(
            got,
            [
                ("direct.example", true, 5270),
                ("starttls.example", false, 5269),
                ("backup.example", true, 5270)
            ]
        );
    }

    #[test]
    fn a_dot_target_means_no_service() {
        let mut rng = StdRng::seed_from_u64(0);
        // `_xmpp-server` says none, `_xmpps-server` has nothing: no server.
        assert_eq!(plan(vec![srv(0, 0, ".", false)], &mut rng), SrvPlan::NoService);
        assert_eq!(plan(vec![srv(0, 0, "", false)], &mut rng), SrvPlan::NoService);
        assert_eq!(
            plan(vec![srv(0, 0, ".", false), srv(0, 0, ".", true)], &mut rng),
            SrvPlan::NoService
        );
        // Direct TLS refused, STARTTLS offered: STARTTLS.
        assert_eq!(
            targets_of(plan(
                vec![srv(0, 0, ".", true), srv(0, 0, "x.example", false)],
                &mut rng
            )),
            ["x.example"]
        );
        // STARTTLS refused, direct TLS offered: direct TLS.
        assert_eq!(
            targets_of(plan(
                vec![srv(0, 0, "y.example", true), srv(0, 0, ".", false)],
                &mut rng
            )),
            ["y.example"]
        );
        // Only direct TLS refused: the usual fallback, STARTTLS on 5269.
        assert_eq!(plan(vec![srv(0, 0, ".", true)], &mut rng), SrvPlan::Fallback);
        // No records at all.
        assert_eq!(plan(Vec::new(), &mut rng), SrvPlan::Fallback);
        // A "." among real targets is never tried.
        assert_eq!(
            targets_of(plan(
                vec![srv(0, 0, ".", false), srv(1, 0, "z.example", false)],
                &mut rng
            )),
            ["z.example"]
        );
    }

    #[test]
    fn ip_literals_need_no_lookup() {
        assert_eq!(ip_literal("192.0.2.1"), Some(IpAddr::from([192, 0, 2, 1])));
        assert_eq!(ip_literal("[2001:db8::1]"), "2001:db8::1".parse::<IpAddr>().ok());
        assert_eq!(ip_literal("[192.0.2.1]"), None);
        assert_eq!(ip_literal("example.com"), None);
    }

    /// A scripted resolver: answers from a table, and counts questions.
    struct Scripted {
        answers: HashMap<String, Result<Vec<Target>, ResolveError>>,
        asked: std::cell::Cell<usize>,
    }

    impl Resolve for Scripted {
        fn targets(&self, domain: &str) -> TargetsFuture {
            self.asked.set(self.asked.get() + 1);
            let answer = self.answers.get(domain).cloned().unwrap_or_else(|| {
                Err(ResolveError::NotFound {
                    domain: domain.into(),
                    reason: "not scripted".into(),
                })
            });
            Box::pin(future::ready(answer))
        }
    }

    #[test]
    fn the_static_map_comes_before_the_next_resolver() {
        let prosody: SocketAddr = "127.0.0.4:5269".parse().unwrap();
        let hosts = StaticHosts::new([("prosody.test".to_owned(), prosody)]);
        assert!(!hosts.is_empty());
        let remote = Target {
            addr: "192.0.2.7:5270".parse().unwrap(),
            direct_tls: true,
            host: "xmpp.remote.example".into(),
        };
        let resolver = StaticThen {
            hosts: hosts.clone(),
            then: Scripted {
                answers: HashMap::from([("remote.example".to_owned(), Ok(vec![remote.clone()]))]),
                asked: std::cell::Cell::new(0),
            },
        };
        let now = |f: TargetsFuture| f.now_or_never().expect("a ready answer");
        let configured = now(resolver.targets("prosody.test")).unwrap();
        assert_eq!(
            configured,
            [Target {
                addr: prosody,
                direct_tls: false,
                host: "prosody.test".into()
            }]
        );
        assert_eq!(resolver.then.asked.get(), 0);
        assert_eq!(now(resolver.targets("remote.example")).unwrap(), [remote]);
        assert_eq!(resolver.then.asked.get(), 1);
        let err = now(resolver.targets("x.invalid")).unwrap_err();
        assert_eq!(err.domain(), "x.invalid");
        assert_eq!(err.condition(), StanzaCondition::RemoteServerNotFound);

        // The map alone knows only its domains.
        let err = now(hosts.targets("remote.example")).unwrap_err();
        assert!(err.to_string().contains("[s2s.hosts]"), "{err}");
    }

    #[test]
    fn targets_read_well_in_logs() {
        let t = Target {
            addr: "192.0.2.7:5270".parse().unwrap(),
            direct_tls: true,
            host: "xmpp.remote.example".into(),
        };
        assert_eq!(t.to_string(), "192.0.2.7:5270 (xmpp.remote.example, direct TLS)");
        let none = ResolveError::NoService {
            domain: "x.example".into(),
        };
        assert_eq!(
            none.to_string(),
            "x.example has no XMPP server (its SRV target is \".\")"
        );
    }
}
