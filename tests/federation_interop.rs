//! Interop, federation: Shoal serving `a.test` (s2s on 127.0.0.2:5269)
//! federates with a real Prosody 0.12 (`prosody.test`, 127.0.0.4) and a
//! real ejabberd 23.01 (`ejabberd.test`, 127.0.0.5), Debian's packages,
//! each started by `fixtures/peers/federation.sh` into a temporary
//! directory: once with Server Dialback over TLS (self-signed certificates
//! everywhere), once with SASL EXTERNAL (certificates from the test CA,
//! which every side trusts; Prosody with `s2s_secure_auth`, ejabberd
//! without dialback at all).
//!
//! In each, `tests/interop/slixmpp_federation.py` runs twice: under
//! Debian's slixmpp, alice@a.test and bob@PEER (alice goes offline: Shoal
//! tells the peer), and under PyPI's, carol@PEER and dave@a.test (carol
//! goes offline: the peer tells Shoal). Each pair subscribes both ways,
//! sees presence and chats both ways across the link.
//!
//! Shoal reaches the peers through `[s2s.hosts]`; the peers reach a.test
//! through their private host files (no DNS, no /etc/hosts edits).
//!
//! Needs root (the peers run as their own users; federation.sh installs
//! them with apt-get if missing) and both slixmpps, as `make test` sets
//! up (`SHOAL_PYTHON`, `SHOAL_DEBIAN_PYTHON`); otherwise skipped, unless
//! `SHOAL_REQUIRE_INTEROP` is set, when that is a failure. The tests share
//! 127.0.0.2:5269 and the peers' addresses, so they run one at a time.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use common::TestServer;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const SHOAL_S2S: &str = "127.0.0.2:5269";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn skip(why: &str) -> Option<(PathBuf, PathBuf)> {
    if std::env::var_os("SHOAL_REQUIRE_INTEROP").is_some() {
        panic!("{why}; run `make test` as root");
    }
    eprintln!("SKIPPED: {why} (or run `make test` as root) for the federation interop tests");
    None
}

/// PyPI's slixmpp (`SHOAL_PYTHON`) and Debian's (`SHOAL_DEBIAN_PYTHON`),
/// and root.
fn requirements() -> Option<(PathBuf, PathBuf)> {
    let python = |var: &str| std::env::var_os(var).map(PathBuf::from).filter(|p| p.exists());
    let (Some(pypi), Some(debian)) = (python("SHOAL_PYTHON"), python("SHOAL_DEBIAN_PYTHON")) else {
        return skip("set SHOAL_PYTHON and SHOAL_DEBIAN_PYTHON to Pythons with slixmpp");
    };
    let uid = Command::new("id").arg("-u").output().expect("run id -u");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return skip("the peers are started as their own users: run as root");
    }
    Some((pypi, debian))
}

fn federation_sh(args: &[&str]) -> Output {
    Command::new(root().join("fixtures/peers/federation.sh"))
        .args(args)
        .output()
        .expect("run fixtures/peers/federation.sh")
}

/// A peer running from a temporary directory; stopped on drop, even when
/// the test fails (the directory is then kept, with the peer's debug log).
struct Peer {
    kind: &'static str,
    dir: tempfile::TempDir,
}

impl Peer {
    fn start(kind: &'static str, mode: &str) -> Peer {
        let dir = tempfile::Builder::new()
            .prefix(&format!("shoal-federation-{kind}-{mode}-"))
            .tempdir()
            .expect("temp dir");
        // The guard exists before the start, so a half-started peer is stopped.
        let peer = Peer { kind, dir };
        let out = federation_sh(&["start", kind, peer.path().to_str().unwrap(), mode]);
        assert!(
            out.status.success(),
            "federation.sh start {kind} {mode} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        peer
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn domain(&self) -> String {
        format!("{}.test", self.kind)
    }

    fn ip(&self) -> &'static str {
        match self.kind {
            "prosody" => "127.0.0.4",
            _ => "127.0.0.5",
        }
    }

    /// Where its clients connect, as federation.sh wrote it in DIR/PEER.env.
    fn c2s(&self) -> String {
        let env = std::fs::read_to_string(self.path().join(format!("{}.env", self.kind))).expect("PEER.env");
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("no {name} in {}.env", self.kind))
                .to_string()
        };
        format!("{}:{}", var("PEER_C2S_HOST"), var("PEER_C2S_PORT"))
    }

    fn log(&self) -> PathBuf {
        match self.kind {
            "prosody" => self.path().join("prosody/prosody.log"),
            _ => self.path().join("ejabberd/logs/ejabberd.log"),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let out = federation_sh(&["stop", self.kind, self.path().to_str().unwrap()]);
        if !out.status.success() {
            eprintln!(
                "federation.sh stop {} failed ({}): {}",
                self.kind,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("{} kept for its logs: {}", self.kind, self.log().display());
        }
    }
}

/// What slixmpp_federation.py prints when everything crossed.
const EXPECTED: &[&str] = &[
    "login a ok",
    "login b ok",
    "subscribe a->b approved",
    "subscribe b->a approved",
    "roster a: b both",
    "roster b: a both",
    "presence a->b available",
    "presence b->a available",
    "message a->b ok",
    "message b->a ok",
    "presence a->b unavailable",
    "OK",
];

fn federate(kind: &'static str, mode: &str) {
    let Some((pypi, debian)) = requirements() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let peer = Peer::start(kind, mode);
    let dir = peer.path().to_path_buf();
    let domain = peer.domain();
    let peer_s2s = format!("{}:5269", peer.ip());
    let server = TestServer::with_config(|c| {
        c.domain = Some("a.test".into());
        c.tls.cert = Some(dir.join("a.test.crt"));
        c.tls.key = Some(dir.join("a.test.key"));
        c.s2s.listen = vec![SHOAL_S2S.parse().unwrap()];
        c.s2s.hosts.insert(domain.clone(), peer_s2s.parse().unwrap());
        if mode == "external" {
            c.s2s.ca_file = Some(dir.join("ca.pem"));
        }
    });
    server.add_user("alice", "secret");
    server.add_user("dave", "secret");
    let shoal_c2s = server.addr.to_string();
    let peer_c2s = peer.c2s();
    // Every c2s certificate here verifies against it (the test CA and the
    // self-signed ones federation.sh made).
    let trust = dir.join("trust.pem");
    let (bob, carol) = (format!("bob@{domain}"), format!("carol@{domain}"));
    let (shoal_c2s, peer_c2s) = (shoal_c2s.as_str(), peer_c2s.as_str());
    let runs = [
        // Shoal's user first: Shoal sends the unavailable across.
        (&debian, "debian", ["alice@a.test", shoal_c2s, bob.as_str(), peer_c2s]),
        // The peer's user first: the peer sends the unavailable across.
        (&pypi, "pypi", [carol.as_str(), peer_c2s, "dave@a.test", shoal_c2s]),
    ];
    for (python, name, [a, a_addr, b, b_addr]) in runs {
        let out = Command::new(python)
            .arg(root().join("tests/interop/slixmpp_federation.py"))
            .args([a, "secret", a_addr, b, "secret", b_addr])
            .arg(&trust)
            .output()
            .expect("run python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.lines().collect::<Vec<_>>() == EXPECTED,
            "{kind} ({mode}), {name} slixmpp, {a} with {b}: {}\n{stdout}\n{}\n{kind}'s log: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            peer.log().display()
        );
    }
}

#[test]
fn federates_with_prosody_by_dialback() {
    federate("prosody", "dialback");
}

#[test]
fn federates_with_prosody_by_sasl_external() {
    federate("prosody", "external");
}

#[test]
fn federates_with_ejabberd_by_dialback() {
    federate("ejabberd", "dialback");
}

#[test]
fn federates_with_ejabberd_by_sasl_external() {
    federate("ejabberd", "external");
}
