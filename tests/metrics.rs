//! Metrics: a scripted session moves every counter it touches by exactly
//! what it did, as the Prometheus exporter renders them; and the README
//! and the Grafana dashboard name exactly the metrics of the scheme.
//!
//! The recorder is global to the process: this binary's one server test
//! installs it and is the only traffic it sees.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use common::{fixture_tls, tls_client, unsid, TestServer, TIMEOUT};
use metrics_exporter_prometheus::PrometheusHandle;
use shoal_actors::metrics::{self as scheme, MetricType};
use shoal_actors::ns;
use shoal_actors::sasl::ScramHash;

/// One scrape: each series (a name and its labels, sorted) and its value.
#[derive(Debug)]
struct Scrape(HashMap<String, f64>);

impl Scrape {
    /// Parses the Prometheus text format, as `/metrics` serves it.
    fn parse(text: &str) -> Scrape {
        let mut series = HashMap::new();
        for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (key, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
            let key = match key.split_once('{') {
                None => key.to_owned(),
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("labels end with }");
                    let pairs: Vec<(&str, &str)> = labels
                        .split(',')
                        .map(|l| {
                            let (k, v) = l.split_once('=').expect("label=value");
                            (k, v.trim_matches('"'))
                        })
                        .collect();
                    key_of(name, &pairs)
                }
            };
            series.insert(key, value);
        }
        Scrape(series)
    }

    fn now(handle: &PrometheusHandle) -> Scrape {
        Scrape::parse(&shoal::metrics::render(handle))
    }

    fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }
}

/// A series' key: its name, then its labels sorted by name.
fn key_of(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let mut labels = labels.to_vec();
    labels.sort_unstable();
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// Scrapes until every series in `expected` has moved by exactly its
/// delta since `before`, or panics with what differs after TIMEOUT. Some
/// counts land just after what they count is on the wire (a gauge when a
/// connection's actor stops, a count taken once a stanza is queued), so
/// the scrape is retried rather than taken once.
fn settle(handle: &PrometheusHandle, before: &Scrape, expected: &[(String, f64)]) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let now = Scrape::now(handle);
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(key, delta)| now.get(key) - before.get(key) != *delta)
            .map(|(key, delta)| format!("{key}: moved {}, expected {delta}", now.get(key) - before.get(key)))
            .collect();
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metrics did not settle:\n{}",
            wrong.join("\n")
        );
        std::thread::yield_now();
    }
}

fn series(name: &str, labels: &[(&str, &str)], delta: f64) -> (String, f64) {
    (key_of(name, labels), delta)
}

fn stanzas(direction: &str, kind: &str, delta: f64) -> (String, f64) {
    series(scheme::C2S_STANZAS, &[("direction", direction), ("kind", kind)], delta)
}

fn login(mechanism: &str, result: &str, delta: f64) -> (String, f64) {
    series(
        scheme::C2S_LOGINS,
        &[("mechanism", mechanism), ("result", result)],
        delta,
    )
}

fn storage_ops(operation: &str, delta: f64) -> (String, f64) {
    let count = format!("{}_count", scheme::STORAGE_OPERATION_SECONDS);
    series(&count, &[("operation", operation)], delta)
}

/// One series of a histogram without labels: `_count` or `_sum`.
fn histogram(name: &str, suffix: &str, delta: f64) -> (String, f64) {
    series(&format!("{name}{suffix}"), &[], delta)
}

#[test]
fn a_scripted_session_moves_each_counter_by_exactly_what_it_did() {
    let handle = shoal::metrics::install().expect("the exporter installs");
    // A second call is the same exporter (tests run servers in one process).
    assert!(shoal::metrics::install().is_ok());
    let server = TestServer::with_config(|c| {
        fixture_tls(c);
        c.http.listen = vec!["127.0.0.1:0".parse().unwrap()];
    });
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, user);
    }
    server.befriend("alice", "bob");
    let before = Scrape::now(&handle);
    let sessions = |transport: &str, delta: f64| series(scheme::C2S_SESSIONS, &[("transport", transport)], delta);

    // A failed login, for an account that does not exist.
    let mut mallory = server.connect();
    mallory.open();
    mallory.auth_plain("mallory", "guess");
    assert_eq!(
        mallory.recv_xml(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>"
    );
    drop(mallory);

    // Two logins in the clear (PLAIN), one over STARTTLS (SCRAM-SHA-256).
    let mut alice = server.login("alice", "alice", "home");
    let mut bob = server.login("bob", "bob", "home");
    let mut carol = server.connect();
    carol.open();
    carol.starttls(tls_client(rustls::ALL_VERSIONS, &[]));
    carol.open();
    let outcome = carol.auth_scram(ScramHash::Sha256, "carol", "carol");
    assert!(outcome.is("success", ns::SASL), "{outcome}");
    carol.open();
    assert_eq!(carol.bind(Some("phone")), "carol@localhost/phone");
    settle(
        &handle,
        &before,
        &[
            login("PLAIN", "failure", 1.0),
            login("PLAIN", "success", 2.0),
            login("SCRAM-SHA-256", "success", 1.0),
            sessions("tcp", 2.0),
            sessions("tls", 1.0),
            // Each login looked its account up once.
            storage_ops("credentials", 4.0),
        ],
    );

    // Presence: alice's reaches only herself (bob is not available yet);
    // bob's reaches alice and himself, and he gets alice's in answer to
    // his probe.
    alice.announce("<presence/>");
    bob.announce("<presence/>");
    assert_eq!(
        bob.recv_xml(),
        "<presence to='bob@localhost/home' from='alice@localhost/home'/>"
    );
    assert_eq!(
        alice.recv_xml(),
        "<presence to='alice@localhost' from='bob@localhost/home'/>"
    );

    // A message, archived then delivered; one to nobody, archived then
    // bounced.
    alice.send("<message to='bob@localhost/home' type='chat' id='m1'><body>hi</body></message>");
    assert_eq!(
        unsid(bob.recv_xml()),
        "<message to='bob@localhost/home' type='chat' id='m1' from='alice@localhost/home'>\
         <body>hi</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='bob@localhost'/></message>"
    );
    alice.send("<message to='nobody@localhost' id='m2'><body>?</body></message>");
    assert_eq!(
        alice.recv_xml(),
        "<message id='m2' type='error' from='nobody@localhost' to='alice@localhost/home'>\
         <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    );

    // Everyone leaves: alice's unavailable reaches bob; bob's, nobody;
    // carol never sent presence, so nothing is broadcast for her.
    carol.send("</stream:stream>");
    carol.expect_eof();
    alice.send("</stream:stream>");
    assert_eq!(
        bob.recv_xml(),
        "<presence to='bob@localhost' type='unavailable' from='alice@localhost/home'/>"
    );
    alice.expect_eof();
    bob.send("</stream:stream>");
    bob.expect_eof();

    settle(
        &handle,
        &before,
        &[
            login("PLAIN", "failure", 1.0),
            login("PLAIN", "success", 2.0),
            login("SCRAM-SHA-256", "success", 1.0),
            login("SCRAM-SHA-1", "success", 0.0),
            sessions("tcp", 0.0),
            sessions("tls", 0.0),
            stanzas("in", "presence", 2.0),
            stanzas("in", "message", 2.0),
            // Binding is before the session: not counted in.
            stanzas("in", "iq", 0.0),
            // 1 (alice's own) + 3 (bob's to both, alice's to bob) + 1 (alice's unavailable).
            stanzas("out", "presence", 5.0),
            // The message, and the bounce.
            stanzas("out", "message", 2.0),
            // The three bind results.
            stanzas("out", "iq", 3.0),
            series(scheme::ROUTER_BOUNCES, &[("condition", "service-unavailable")], 1.0),
            series(scheme::ROUTER_BOUNCES, &[("condition", "remote-server-not-found")], 0.0),
            // Four broadcasts (two available, two unavailable) reaching 1 + 2 + 1 + 0.
            histogram(scheme::PRESENCE_FANOUT_RECIPIENTS, "_count", 4.0),
            histogram(scheme::PRESENCE_FANOUT_RECIPIENTS, "_sum", 4.0),
            histogram(scheme::PRESENCE_FANOUT_SECONDS, "_count", 4.0),
            series(scheme::MAM_MESSAGES, &[("result", "archived")], 2.0),
            series(scheme::MAM_MESSAGES, &[("result", "failed")], 0.0),
            storage_ops("credentials", 4.0),
            storage_ops("archive", 2.0),
            storage_ops("store_offline", 1.0),
            // Every queue drained or gone with its connection.
            series(scheme::OUTBOUND_QUEUED_BYTES, &[], 0.0),
            series(scheme::S2S_STANZAS, &[("direction", "out"), ("kind", "message")], 0.0),
        ],
    );

    // The same figures, as Prometheus reads them from the HTTP listener.
    let reply = common::http(server.http_addr(), "GET", "/metrics", &[], b"");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let over_http = Scrape::parse(&String::from_utf8(reply.body).unwrap());
    let plain = key_of(scheme::C2S_LOGINS, &[("mechanism", "PLAIN"), ("result", "success")]);
    assert_eq!(over_http.get(&plain), before.get(&plain) + 2.0);
}

/// The metric names a text mentions: `shoal_` words, histogram series
/// (`_bucket`, `_sum`, `_count`) taken as their histogram.
fn names_in(text: &str) -> Vec<String> {
    let histograms: Vec<&str> = scheme::ALL
        .iter()
        .filter(|m| m.kind == MetricType::Histogram)
        .map(|m| m.name)
        .collect();
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("shoal_") && w.len() > "shoal_".len())
        .map(|w| {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s).filter(|b| histograms.contains(b)));
            base.unwrap_or(w).to_owned()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_readme_and_the_dashboard_name_exactly_the_metrics_of_the_scheme() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut scheme_names: Vec<String> = scheme::ALL.iter().map(|m| m.name.to_owned()).collect();
    scheme_names.sort();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Metrics\n"))
        .expect("a Metrics section in the README");
    assert_eq!(names_in(section), scheme_names, "the README's Metrics section");
    // Each is documented with its type and labels.
    for m in scheme::ALL {
        let row = section
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", m.name)))
            .unwrap_or_else(|| panic!("no row for {}", m.name));
        let kind = match m.kind {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        };
        assert!(row.contains(&format!("| {kind} |")), "{row}");
        for label in m.labels {
            assert!(row.contains(&format!("`{label}`")), "{row} lacks {label}");
        }
    }
    let dashboard = std::fs::read_to_string(root.join("fixtures/grafana/shoal.json")).unwrap();
    assert_eq!(names_in(&dashboard), scheme_names, "fixtures/grafana/shoal.json");
}
