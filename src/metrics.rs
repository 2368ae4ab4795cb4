//! The Prometheus exporter of Shoal's metrics (named, every one, in
//! [`shoal_actors::metrics`]): installed once per process as the
//! recorder of the `metrics` facade, and served at `GET /metrics` to
//! loopback and to the networks `[http] metrics_allow` lists.
//!
//! Without [`install`] no recorder is installed and recording costs
//! next to nothing: that is how metrics are off.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use shoal_actors::metrics as scheme;

/// How often histograms are drained and per-thread counts summed when
/// nobody scrapes (a scrape does both too).
const UPKEEP: Duration = Duration::from_secs(5);

/// The exporter could not be installed: another recorder was installed in
/// this process first, or the buckets of [`scheme::ALL`] are wrong.
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot install the metrics exporter: {0}")]
pub struct InstallError(String);

static INSTALLED: OnceLock<Result<PrometheusHandle, InstallError>> = OnceLock::new();

/// Installs the Prometheus recorder, with every metric described and each
/// histogram's buckets, and a thread that keeps it trim. Once per
/// process: later calls return the same handle (tests run several servers
/// in one process). Must run before any server starts: what records
/// before then records nothing, for good.
pub fn install() -> Result<PrometheusHandle, InstallError> {
    INSTALLED
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for m in scheme::ALL.iter().filter(|m| !m.buckets.is_empty()) {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(m.name.to_owned()), m.buckets)
                    .map_err(|e| InstallError(e.to_string()))?;
            }
            let handle = builder.install_recorder().map_err(|e| InstallError(e.to_string()))?;
            scheme::describe();
            let trimmed = handle.clone();
            let upkeep = std::thread::Builder::new()
                .name("shoal-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP);
                    scheme::sample();
                    trimmed.run_upkeep();
                });
            if let Err(e) = upkeep {
                // Scrapes still drain the histograms.
                log::warn!("metrics: no upkeep thread: {e}");
            }
            Ok(handle)
        })
        .clone()
}

/// The installed exporter, if [`install`] succeeded.
pub fn handle() -> Option<PrometheusHandle> {
    INSTALLED.get().and_then(|r| r.as_ref().ok().cloned())
}

/// The exposition text of `handle`, every per-thread count summed first.
pub fn render(handle: &PrometheusHandle) -> String {
    scheme::sample();
    handle.render()
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`), or one address (`192.0.2.7`,
/// `::1`): an entry of `[http] metrics_allow`. Written in the config as a
/// string; anything else is refused at load with the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// True when `ip` is in this network (an IPv4 address mapped into
    /// IPv6, as a dual-stack socket reports it, counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(net.to_bits().into(), ip.to_bits().into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_prefix(net.to_bits(), ip.to_bits(), 128, self.prefix),
            _ => false,
        }
    }
}

/// True when the first `prefix` of the `width` low bits of `a` and `b` agree.
fn same_prefix(a: u128, b: u128, width: u32, prefix: u8) -> bool {
    let shift = width - u32::from(prefix);
    a.checked_shr(shift).unwrap_or(0) == b.checked_shr(shift).unwrap_or(0)
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Network, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network (such as 10.0.0.0/8 or ::1)"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= width => p,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {width}")),
            },
        };
        Ok(Network { addr, prefix })
    }
}

impl TryFrom<String> for Network {
    type Error = String;

    fn try_from(s: String) -> Result<Network, String> {
        s.parse()
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What `GET /metrics` needs: the exporter, and who besides loopback may
/// scrape it.
pub struct MetricsEndpoint {
    handle: PrometheusHandle,
    allow: Vec<Network>,
}

impl MetricsEndpoint {
    pub fn new(handle: PrometheusHandle, allow: Vec<Network>) -> MetricsEndpoint {
        MetricsEndpoint { handle, allow }
    }

    /// Loopback always; others only from a network allowed.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        peer.is_loopback() || self.allow.iter().any(|n| n.contains(peer))
    }
}

/// Registers `GET /metrics` on an actix-web app, whose data must hold a
/// [`MetricsEndpoint`] (`app_data(web::Data::new(endpoint))`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(scrape));
}

/// The exposition text, to an allowed peer; 403 to anyone else. The peer
/// is the socket's: forwarded-for headers are anyone's to write.
async fn scrape(req: HttpRequest, endpoint: web::Data<MetricsEndpoint>) -> HttpResponse {
    match req.peer_addr() {
        Some(peer) if endpoint.allows(peer.ip()) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(render(&endpoint.handle)),
        _ => HttpResponse::Forbidden().finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Network {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_contain() {
        assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("192.0.2.7").to_string(), "192.0.2.7/32");
        assert_eq!(net("::1").to_string(), "::1/128");
        assert!(net("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("192.0.2.7").contains(ip("192.0.2.7")));
        assert!(!net("192.0.2.7").contains(ip("192.0.2.8")));
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!net("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(net("fd00::/8").contains(ip("fd12:3456::1")));
        assert!(!net("fd00::/8").contains(ip("fe80::1")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        // A dual-stack socket's view of an IPv4 peer.
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        // Host bits past the prefix do not matter.
        assert!(net("10.1.2.3/8").contains(ip("10.9.9.9")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "example.org",
            "10.0.0.0/x",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad:?}");
        }
        assert_eq!(
            "10.0.0.0/33".parse::<Network>(),
            Err("\"10.0.0.0/33\": the prefix length must be 0 to 32".to_owned())
        );
    }

    fn endpoint(allow: &[&str]) -> MetricsEndpoint {
        // A recorder of its own, not installed: the process's is not touched.
        let handle = PrometheusBuilder::new().build_recorder().handle();
        MetricsEndpoint::new(handle, allow.iter().map(|s| net(s)).collect())
    }

    #[test]
    fn loopback_may_scrape_and_others_only_when_allowed() {
        let only_loopback = endpoint(&[]);
        for peer in ["127.0.0.1", "127.0.0.2", "::1"] {
            assert!(only_loopback.allows(ip(peer)), "{peer}");
        }
        assert!(only_loopback.allows(ip("::ffff:127.0.0.1")));
        assert!(!only_loopback.allows(ip("192.0.2.1")));
        let lan = endpoint(&["192.0.2.0/24"]);
        assert!(lan.allows(ip("192.0.2.1")));
        assert!(!lan.allows(ip("198.51.100.1")));
    }

    #[actix_rt::test]
    async fn the_endpoint_answers_403_to_a_peer_not_allowed() {
        use actix_web::{test, App};
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(endpoint(&["192.0.2.0/24"])))
                .configure(routes),
        )
        .await;
        let get = |peer: &str| {
            test::TestRequest::get()
                .uri("/metrics")
                .peer_addr(peer.parse().unwrap())
                .to_request()
        };
        for (peer, status) in [
            ("127.0.0.1:40000", 200),
            ("192.0.2.9:40000", 200),
            ("198.51.100.1:40000", 403),
        ] {
            let res = test::call_service(&app, get(peer)).await;
            assert_eq!(res.status().as_u16(), status, "{peer}");
            if status == 200 {
                let content_type = res.headers().get("content-type").unwrap().to_str().unwrap();
                assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
            }
        }
    }
}
