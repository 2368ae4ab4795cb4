//! The control channel, used as an administrator would: `shoal session
//! list|kick`, `shoal stats` and `shoal reload` against a running server
//! started from a configuration file, through its control socket.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{any_certificate, shoal, Client, TestServer};
use shoal_actors::ns;

/// Writes a new self-signed certificate for localhost and its key
/// (owner-only, as the server requires) at `cert` and `key`, replacing
/// what is there; returns the certificate (DER).
fn certificate(cert: &Path, key: &Path) -> Vec<u8> {
    let signing_key = rcgen::KeyPair::generate().unwrap();
    let made = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&signing_key)
        .unwrap();
    std::fs::write(cert, made.pem()).unwrap();
    std::fs::write(key, signing_key.serialize_pem()).unwrap();
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    made.der().to_vec()
}

/// The SHA-256 fingerprint as the server prints it (AA:BB:...).
fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    let hex: Vec<String> = sha2::Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// The configuration of these tests: localhost on loopback (plain with
/// optional STARTTLS, and Direct TLS), the certificate at `server.pem`
/// and `server.key` in `dir`, and `extra` at the end.
fn config_text(dir: &Path, extra: &str) -> String {
    format!(
        "domain = 'localhost'\n\
         [storage]\nsqlite = {:?}\n\
         [c2s]\nlisten = ['127.0.0.1:0']\ndirect_tls_listen = ['127.0.0.1:0']\n\
         [http]\nlisten = []\n\
         [tls]\ncert = {:?}\nkey = {:?}\n{extra}",
        dir.join("shoal.db"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// A server started from [`config_text`] with a fresh certificate, which
/// it returns, and accounts alice, bob and carol (password `pw`).
fn server() -> (TestServer, Vec<u8>) {
    let mut first = Vec::new();
    let server = TestServer::from_file(|dir| {
        first = certificate(&dir.join("server.pem"), &dir.join("server.key"));
        config_text(dir, "")
    });
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, "pw");
    }
    (server, first)
}

/// A logged-in client of `user`, over Direct TLS, bound to `resource`.
fn login_tls(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut c = Client::connect_tls(server.direct_tls_addr(), any_certificate(true));
    c.open();
    c.auth_plain(user, "pw");
    let outcome = c.recv();
    assert!(outcome.is("success", ns::SASL), "{outcome}");
    c.open();
    c.bind(Some(resource));
    c
}

/// The certificate a client's TLS connection was served.
fn served(c: &Client) -> Vec<u8> {
    c.tls().peer_certificates().expect("a certificate")[0].to_vec()
}

/// Unix seconds as the `shoal` command prints them (UTC).
fn utc(secs: u64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap()
        .format(&format)
        .unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The rows of `shoal session list`, each split at whitespace, the time
/// (date and time of day) checked to be from `from` to `to` (Unix
/// seconds) and replaced with `SINCE`.
fn session_rows(stdout: &str, from: u64, to: u64) -> Vec<Vec<String>> {
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(
        header,
        [
            "jid",
            "transport",
            "peer",
            "since",
            "(UTC)",
            "priority",
            "presence",
            "sm"
        ]
    );
    lines
        .map(|line| {
            let mut row: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            assert_eq!(row.len(), 8, "{line}");
            let since = row.drain(3..5).collect::<Vec<_>>().join(" ");
            assert!(
                (from..=to).any(|s| utc(s) == since),
                "{since} is not from {from} to {to}"
            );
            row.insert(3, "SINCE".to_owned());
            row
        })
        .collect()
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

#[test]
fn sessions_are_listed_counted_and_kicked() {
    let before = now();
    let (mut server, _) = server();
    let cli = server.config_file().to_owned();
    let mut alice = server.login("alice", "pw", "phone");
    alice.announce("<presence><show>away</show><priority>5</priority></presence>");
    let mut bob = login_tls(&server, "bob", "laptop");
    let mut carol = server.login("carol", "pw", "tablet");
    carol.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    let enabled = carol.recv();
    assert!(enabled.is("enabled", shoal_actors::xep::sm::NS), "{enabled}");

    let (ok, out, err) = shoal(&cli, &["session", "list"], None);
    assert!(ok, "{err}");
    let peer = |c: &Client| c.local_addr().to_string();
    let (alice_row, bob_row, carol_row) = (
        row(&[
            "alice@localhost/phone",
            "tcp",
            &peer(&alice),
            "SINCE",
            "5",
            "away",
            "off",
        ]),
        row(&["bob@localhost/laptop", "tls", &peer(&bob), "SINCE", "-", "-", "off"]),
        row(&[
            "carol@localhost/tablet",
            "tcp",
            &peer(&carol),
            "SINCE",
            "-",
            "-",
            "resumable",
        ]),
    );
    assert_eq!(
        session_rows(&out, before, now()),
        [alice_row.clone(), bob_row.clone(), carol_row]
    );
    // One account's, or one session.
    let (ok, out, _) = shoal(&cli, &["session", "list", "--user", "bob@localhost"], None);
    assert!(ok);
    assert_eq!(session_rows(&out, before, now()), [bob_row]);
    let (ok, out, _) = shoal(&cli, &["session", "list", "--user", "alice/phone"], None);
    assert!(ok);
    assert_eq!(session_rows(&out, before, now()), [alice_row]);

    let (ok, out, err) = shoal(&cli, &["stats"], None);
    assert!(ok, "{err}");
    let stats: Vec<(&str, &str)> = out
        .lines()
        .map(|l| l.split_once(' ').map(|(k, v)| (k, v.trim())).unwrap())
        .collect();
    let names: Vec<&str> = stats.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        names,
        [
            "uptime-secs",
            "sessions",
            "sessions-tcp",
            "sessions-tls",
            "sessions-websocket",
            "sessions-websocket-tls",
            "sessions-detached",
            "accounts-online",
            "services",
            "components",
            "s2s-in",
            "s2s-out",
            "memory-rss-bytes",
        ]
    );
    let value = |name: &str| {
        stats
            .iter()
            .find(|(k, _)| *k == name)
            .unwrap()
            .1
            .parse::<u64>()
            .unwrap()
    };
    assert!(value("uptime-secs") <= now() - before + 1);
    assert!(value("memory-rss-bytes") > 1 << 20);
    let counts: Vec<u64> = names[1..12].iter().map(|n| value(n)).collect();
    // One service: the MUC service ([muc], on by default).
    assert_eq!(counts, [3, 2, 1, 0, 0, 0, 3, 1, 0, 0, 0]);

    // One session, by its full JID: the client is told why.
    assert_eq!(
        shoal(&cli, &["session", "kick", "alice@localhost/phone"], None),
        (
            true,
            "ended 1 session(s) of alice@localhost/phone\n".into(),
            String::new()
        )
    );
    assert_eq!(
        alice.expect_stream_error(),
        (
            "policy-violation".to_owned(),
            Some("session ended by the administrator".to_owned())
        )
    );
    // All of an account's, by its bare JID.
    assert_eq!(
        shoal(&cli, &["session", "kick", "bob@localhost"], None),
        (true, "ended 1 session(s) of bob@localhost\n".into(), String::new())
    );
    assert_eq!(bob.expect_stream_error().0, "policy-violation");
    assert_eq!(
        shoal(&cli, &["session", "kick", "dave@localhost/x"], None),
        (
            false,
            String::new(),
            "shoal: no live session of dave@localhost/x\n".into()
        )
    );
    assert_eq!(
        shoal(&cli, &["session", "kick", "dave@other.example"], None),
        (
            false,
            String::new(),
            "shoal: \"dave@other.example\" is not on this server's domain (localhost)\n".into()
        )
    );
    // The others stay.
    carol.sync();

    // No server: each command says so.
    server.stop();
    let socket = server.dir().join("shoal.sock");
    for args in [
        &["session", "list"][..],
        &["stats"],
        &["reload"],
        &["session", "kick", "carol"],
    ] {
        assert_eq!(
            shoal(&cli, args, None),
            (
                false,
                String::new(),
                format!("shoal: the server is not running (no answer on {})\n", socket.display())
            ),
            "{args:?}"
        );
    }
}

#[test]
fn reload_renews_the_certificate_and_keeps_sessions() {
    let (server, first) = server();
    let dir = server.dir().to_owned();
    let file = server.config_file().to_owned();
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    let mut bob = login_tls(&server, "bob", "laptop");
    assert_eq!(served(&bob), first);
    let mut probe = server.connect();
    let features = probe.open();
    assert!(features.has_child("register", ns::REGISTER_FEATURE), "{features}");

    // A renewed certificate, a faster rate, registration closed, and a
    // stanza limit that only a restart can change.
    let second = certificate(&cert, &key);
    let extra = "[limits]\nrate_bytes_per_sec = 500000\n[registration]\nenabled = false\n";
    let config = config_text(&dir, extra).replace("[c2s]\n", "[c2s]\nmax_stanza_bytes = 20000\n");
    std::fs::write(&file, config).unwrap();
    assert_eq!(
        shoal(&file, &["reload"], None),
        (
            true,
            format!(
                "certificate of localhost: SHA-256 {}\n\
                 limits: [limits] rate_bytes_per_sec\n\
                 registration at localhost: off (5 accounts per network before waits)\n\
                 needs a restart: [c2s] max_stanza_bytes\n",
                fingerprint(&second)
            ),
            String::new()
        )
    );
    // New connections get the new certificate, over Direct TLS and STARTTLS...
    let fresh = login_tls(&server, "alice", "desk");
    assert_eq!(served(&fresh), second);
    let mut upgraded = server.connect();
    upgraded.open();
    upgraded.starttls(any_certificate(true));
    assert_eq!(served(&upgraded), second);
    // ...and new streams the new registration policy.
    let features = upgraded.open();
    assert!(!features.has_child("register", ns::REGISTER_FEATURE), "{features}");
    // The session that was there goes on, over the old certificate.
    bob.sync();
    assert_eq!(served(&bob), first);
    let (ok, out, _) = shoal(&file, &["session", "list"], None);
    assert!(ok);
    assert_eq!(out.lines().count(), 3, "{out}");
    // Read again, nothing changed; what needs a restart still does.
    assert_eq!(
        shoal(&file, &["reload"], None).1,
        "nothing changed\nneeds a restart: [c2s] max_stanza_bytes\n"
    );

    // A file that does not parse is refused with the reason. (The command
    // reads a file of its own, naming the same database and so socket.)
    let cli = dir.join("cli.toml");
    std::fs::write(
        &cli,
        format!("domain = 'localhost'\n[storage]\nsqlite = {:?}\n", dir.join("shoal.db")),
    )
    .unwrap();
    std::fs::write(&file, "[c2s\nlisten = []\n").unwrap();
    let (ok, out, err) = shoal(&cli, &["reload"], None);
    assert!(!ok);
    assert_eq!(out, "");
    let refused = "shoal: the running server refused \"reload\": ";
    assert!(
        err.starts_with(&format!("{refused}{}: TOML parse error at line 1", file.display())),
        "{err}"
    );
    assert!(err.ends_with("; the configuration in force is unchanged\n"), "{err}");
    // So is one whose certificate cannot be read, however well it parses.
    let missing = dir.join("missing.pem");
    let config = config_text(&dir, "").replace(&format!("{:?}", cert), &format!("{:?}", missing));
    std::fs::write(&file, config).unwrap();
    let (ok, out, err) = shoal(&file, &["reload"], None);
    assert!(!ok);
    assert_eq!(out, "");
    assert!(
        err.starts_with(&format!("{refused}TLS certificate {}: ", missing.display())),
        "{err}"
    );
    assert!(err.ends_with("; the configuration in force is unchanged\n"), "{err}");
    // What the last good reload put in force stays.
    let after = login_tls(&server, "carol", "tablet");
    assert_eq!(served(&after), second);
    let mut probe = server.connect();
    let features = probe.open();
    assert!(!features.has_child("register", ns::REGISTER_FEATURE), "{features}");
    bob.sync();
}

/// The `shoal` binary serving, as a child process; killed when dropped.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sighup_reloads_as_the_command_does() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    certificate(&cert, &key);
    let file = dir.path().join("shoal.toml");
    std::fs::write(&file, config_text(dir.path(), "")).unwrap();
    let mut server = Serving(
        Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The log, a line at a time, read on a thread of its own.
    let (lines, log) = mpsc::channel();
    let stderr = server.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let wait_for = |needle: &str| loop {
        let line = log.recv_timeout(common::TIMEOUT).expect("the server's log");
        if line.contains(needle) {
            return line;
        }
    };
    wait_for("serving localhost");
    // Answered once the server waits for signals: its handlers are in place.
    let (ok, _, err) = shoal(&file, &["stats"], None);
    assert!(ok, "{err}");

    let renewed = certificate(&cert, &key);
    // SAFETY: kill has no memory effects; the pid is our child's.
    let sent = unsafe { libc::kill(server.0.id() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(sent, 0);
    wait_for(&format!(
        "reload: certificate of localhost: SHA-256 {}",
        fingerprint(&renewed)
    ));
    // It serves on, and another reload finds nothing new.
    assert_eq!(
        shoal(&file, &["reload"], None),
        (true, "nothing changed\n".into(), String::new())
    );
}
