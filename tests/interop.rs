//! Interop with a real third-party client: slixmpp registers two accounts
//! in-band, logs in with SCRAM-SHA-256 and SCRAM-SHA-1, and chats.
//!
//! `make test` installs slixmpp into `.venv` and sets `SHOAL_PYTHON`; a
//! plain `cargo test` without it skips these tests (and says so), unless
//! `SHOAL_REQUIRE_INTEROP` is set, when a missing client is a failure.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::TestServer;

fn python() -> Option<PathBuf> {
    let python = std::env::var_os("SHOAL_PYTHON").map(PathBuf::from);
    match python {
        Some(p) if p.exists() => Some(p),
        _ if std::env::var_os("SHOAL_REQUIRE_INTEROP").is_some() => {
            panic!("SHOAL_PYTHON does not name a Python with slixmpp; run `make test`")
        }
        _ => {
            eprintln!("SKIPPED: set SHOAL_PYTHON (or run `make test`) for interop tests");
            None
        }
    }
}

fn run_script(script: &str, server: &TestServer) -> String {
    run_script_with(script, server, &[])
}

fn run_script_with(script: &str, server: &TestServer, extra: &[&str]) -> String {
    run_script_in(&python().expect("checked by the caller"), script, server.addr, extra)
}

fn run_script_in(python: &std::path::Path, script: &str, addr: std::net::SocketAddr, extra: &[&str]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let out = Command::new(python)
        .arg(&path)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg("localhost")
        .args(extra)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn slixmpp_registers_logs_in_with_scram_and_chats() {
    if python().is_none() {
        return;
    }
    let server = TestServer::start();
    let stdout = run_script("slixmpp_chat.py", &server);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "bob got: 'hello from alice' from alice@localhost/interop",
            "alice got: 'hello from bob' from bob@localhost/interop",
            "OK",
        ]
    );
}

#[test]
fn slixmpp_subscribes_and_sees_presence_come_and_go() {
    if python().is_none() {
        return;
    }
    let server = TestServer::start();
    let stdout = run_script("slixmpp_presence.py", &server);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "alice sees bob online",
            "bob sees alice online",
            "alice: both",
            "bob: both",
            "alice sees bob: dnd 'compiling'",
            "alice sees bob offline",
            "OK",
        ]
    );
}

fn fixture_ca() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/tls/ca.pem")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn slixmpp_verifies_the_certificate_over_required_starttls() {
    if python().is_none() {
        return;
    }
    let server = TestServer::with_config(|c| {
        common::fixture_tls(c);
        c.c2s.starttls = Some(shoal::config::StartTlsMode::Required);
    });
    let stdout = run_script_with("slixmpp_tls.py", &server, &[&fixture_ca()]);
    // Python's ssl has no tls-exporter, so slixmpp uses SCRAM without -PLUS.
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "alice: TLSv1.3, SCRAM-SHA-256",
            "bob: TLSv1.3, SCRAM-SHA-256",
            "bob got: 'over TLS' from alice@localhost/interop",
            "OK",
        ]
    );
}

#[test]
fn an_independent_scram_implementation_logs_in_with_plus() {
    if python().is_none() {
        return;
    }
    let server = TestServer::with_config(common::fixture_tls);
    server.add_user("romeo", "r");
    let stdout = run_script_with("scramp_plus.py", &server, &[&fixture_ca(), "romeo", "r"]);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "TLS: TLSv1.3",
            "offered: SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS SCRAM-SHA-256 SCRAM-SHA-1 PLAIN",
            "SCRAM-SHA-256-PLUS with tls-server-end-point: success, server verified",
        ]
    );
}

/// Debian's own slixmpp (`apt-get install python3-slixmpp`: 1.8.3 on
/// Debian 12), which `make test` installs and names in
/// `SHOAL_DEBIAN_PYTHON`.
fn debian_python() -> Option<PathBuf> {
    match std::env::var_os("SHOAL_DEBIAN_PYTHON").map(PathBuf::from) {
        Some(p) if p.exists() => Some(p),
        _ if std::env::var_os("SHOAL_REQUIRE_INTEROP").is_some() => {
            panic!("SHOAL_DEBIAN_PYTHON does not name a Python with Debian's slixmpp; run `make test`")
        }
        _ => {
            eprintln!("SKIPPED: set SHOAL_DEBIAN_PYTHON (or run `make test`) for Debian's slixmpp");
            None
        }
    }
}

/// Both slixmpps log in with their default mechanism selection over
/// STARTTLS and Direct TLS. Debian's tries SCRAM-*-PLUS with tls-unique
/// first (which TLS 1.3 does not have), then falls back with `y`.
#[test]
fn debian_and_pypi_slixmpp_log_in_over_starttls_and_direct_tls_by_default() {
    let (Some(pypi), Some(debian)) = (python(), debian_python()) else {
        return;
    };
    let server = TestServer::with_config(|c| {
        common::fixture_tls(c);
        c.c2s.direct_tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
    });
    server.add_user("alice", "alice-pass");
    let ca = fixture_ca();
    for (python, name) in [(&debian, "debian"), (&pypi, "pypi")] {
        for (mode, addr) in [("starttls", server.addr), ("direct", server.direct_tls_addr())] {
            let stdout = run_script_in(
                python,
                "slixmpp_default_tls.py",
                addr,
                &[&ca, mode, "alice", "alice-pass"],
            );
            assert_eq!(
                stdout.lines().collect::<Vec<_>>(),
                ["TLSv1.3, SCRAM-SHA-256", "OK"],
                "{name} slixmpp over {mode}"
            );
        }
    }
}

/// A slixmpp `ComponentXMPP` (Debian's and PyPI's) connects as an external
/// component (XEP-0114), shows up in a slixmpp client's disco#items of the
/// server, answers its disco#info and ping, and echoes its message.
#[test]
fn a_slixmpp_component_is_listed_answers_and_echoes_through_shoal() {
    let (Some(pypi), Some(debian)) = (python(), debian_python()) else {
        return;
    };
    for (python, name) in [(&debian, "debian"), (&pypi, "pypi")] {
        let server = TestServer::with_config(|c| {
            c.components.listen = vec!["127.0.0.1:0".parse().unwrap()];
            c.components.services = vec![shoal::config::ComponentServiceConfig {
                domain: "bot.localhost".into(),
                secret: "s3cret".into(),
                ..Default::default()
            }];
        });
        server.add_user("alice", "alice-pass");
        let port = server.component_addr().port().to_string();
        let stdout = run_script_in(
            python,
            "slixmpp_component.py",
            server.addr,
            &[&port, "bot.localhost", "s3cret", "alice", "alice-pass"],
        );
        assert_eq!(
            stdout.lines().collect::<Vec<_>>(),
            [
                // With the MUC service, on by default.
                "items: bot.localhost conference.localhost",
                "info: automation/bot Bot",
                "ping: ok",
                "user got: 'echo: hello' from echo@bot.localhost",
                "OK",
            ],
            "{name} slixmpp"
        );
    }
}

/// An account imported from ejabberd has SCRAM-SHA-1 keys only: slixmpp's
/// own first choice, SCRAM-SHA-256, is refused with `<invalid-mechanism/>`,
/// and slixmpp (Debian's and PyPI's) logs in with SCRAM-SHA-1 on the same
/// stream, finding the roster the account had.
#[test]
fn slixmpp_logs_in_to_an_account_imported_from_ejabberd() {
    let (Some(pypi), Some(debian)) = (python(), debian_python()) else {
        return;
    };
    let export = common::ejabberd_export();
    for (python, name) in [(&debian, "debian"), (&pypi, "pypi")] {
        let domains = ["ejabberd.test", "plain.ejabberd.test"];
        let server = TestServer::with_config(|c| c.domains = domains.iter().map(|d| d.to_string()).collect());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("shoal.toml");
        let toml = format!("domains = {domains:?}\n[storage]\nsqlite = {:?}\n", server.db);
        std::fs::write(&config, toml).unwrap();
        let (ok, out, err) = common::run_shoal(&config, [std::ffi::OsStr::new("import"), export.as_os_str()], None);
        assert!(ok, "{out}{err}");
        let stdout = run_script_in(
            python,
            "slixmpp_migrated.py",
            server.addr,
            &["romeo@ejabberd.test", "romeo-pw", "juliet@ejabberd.test"],
        );
        assert_eq!(
            stdout.lines().collect::<Vec<_>>(),
            [
                "refused: SCRAM-SHA-256 invalid-mechanism",
                "logged in with SCRAM-SHA-1",
                "juliet@ejabberd.test: both",
                "OK",
            ],
            "{name} slixmpp"
        );
    }
}

/// Runs `script` under Debian's slixmpp and PyPI's, each against a fresh
/// server with the accounts alice, bob and carol (Debian's slixmpp 1.8
/// cannot register in-band: it holds back the IQ until a session starts),
/// and checks that both print `expected`.
fn run_under_both_slixmpps(script: &str, expected: &[&str]) {
    let (Some(pypi), Some(debian)) = (python(), debian_python()) else {
        return;
    };
    for (python, name) in [(&debian, "debian"), (&pypi, "pypi")] {
        let server = TestServer::start();
        server.add_user("alice", "al1ce-pass");
        server.add_user("bob", "b0b-pass");
        server.add_user("carol", "car0l-pass");
        let stdout = run_script_in(python, script, server.addr, &[]);
        assert_eq!(
            stdout.lines().collect::<Vec<_>>(),
            expected,
            "{script} under {name} slixmpp"
        );
    }
}

/// XEP-0198 with slixmpp's xep_0198 (Debian's and PyPI's): Alice's socket
/// is cut while a message is in flight to her (in her socket, unread, and
/// unacknowledged); Bob sends ten more (to her full and bare JIDs); she
/// reconnects and resumes without a new session, and gets the in-flight
/// one and the ten exactly once, in order, but not again the one she had
/// read before the cut (her `h` counts it). The stream then works both
/// ways and the server's `h` for her matches her count.
#[test]
fn slixmpp_resumes_a_cut_session_and_gets_what_it_missed_exactly_once() {
    run_under_both_slixmpps(
        "slixmpp_resume.py",
        &[
            "alice: stream management enabled, resumable",
            "alice: connection cut",
            "bob: sent 10 while alice was away",
            "alice: resumed, no new session",
            "alice got: read-1 'read before the cut' to full",
            "alice got: unread-1 'in flight at the cut' to full",
            "alice got: full-1 'to full JID 1' to full",
            "alice got: bare-1 'to bare JID 1' to alice@localhost",
            "alice got: full-2 'to full JID 2' to full",
            "alice got: bare-2 'to bare JID 2' to alice@localhost",
            "alice got: full-3 'to full JID 3' to full",
            "alice got: bare-3 'to bare JID 3' to alice@localhost",
            "alice got: full-4 'to full JID 4' to full",
            "alice got: bare-4 'to bare JID 4' to alice@localhost",
            "alice got: full-5 'to full JID 5' to full",
            "alice got: bare-5 'to bare JID 5' to alice@localhost",
            "alice got: after-1 'after the resumption' to full",
            "bob got: \"I'm back\" from alice@localhost/interop",
            "alice: all her stanzas acknowledged",
            "OK",
        ],
    );
}

/// XEP-0280 with slixmpp's xep_0280 (Debian's and PyPI's): alice/desk gets
/// `carbon_received` and `carbon_sent` copies of alice/phone's chats with
/// Bob, none of `<private/>` ones (which arrive without the marker).
#[test]
fn slixmpp_carbons_copy_received_and_sent_chats_but_not_private_ones() {
    run_under_both_slixmpps(
        "slixmpp_carbons.py",
        &[
            "phone got: in-1 'hello phone' from bob@localhost/interop",
            "desk got carbon_received: in-1 'hello phone' from bob@localhost/interop to alice@localhost/phone (wrapper from alice@localhost)",
            "bob got: out-1 'hello bob' from alice@localhost/phone",
            "desk got carbon_sent: out-1 'hello bob' from alice@localhost/phone to bob@localhost/interop (wrapper from alice@localhost)",
            "phone got: in-private 'just for the phone' from bob@localhost/interop",
            "bob got: out-private 'off the record' from alice@localhost/phone",
            "desk got carbon_received: in-2 'copied again' from bob@localhost/interop to alice@localhost/phone (wrapper from alice@localhost)",
            "OK",
        ],
    );
}

/// XEP-0313 with slixmpp's xep_0313 (Debian's and PyPI's): after 12 chats
/// with Bob (and 2 with Carol), Alice pages through her archive 5 at a
/// time: every message in order with its direction, the last page
/// complete, the live `<stanza-id/>` equal to the archive id; `with` Bob
/// gives the 12.
#[test]
fn slixmpp_reads_its_message_archive_in_pages() {
    run_under_both_slixmpps(
        "slixmpp_mam.py",
        &[
            "urn:xmpp:mam:2 advertised on alice@localhost",
            "exchanged 14 messages; alice saw 7 stanza-ids",
            "first page: ['m1', 'm2', 'm3', 'm4', 'm5']",
            "archive pages: [(5, False), (5, False), (4, True)]",
            "  in bob@localhost m1 'bob to alice 1'",
            "  out bob@localhost m2 'alice to bob 2'",
            "  in bob@localhost m3 'bob to alice 3'",
            "  out bob@localhost m4 'alice to bob 4'",
            "  in bob@localhost m5 'bob to alice 5'",
            "  out bob@localhost m6 'alice to bob 6'",
            "  in carol@localhost c1 'carol to alice'",
            "  out carol@localhost c2 'alice to carol'",
            "  in bob@localhost m7 'bob to alice 7'",
            "  out bob@localhost m8 'alice to bob 8'",
            "  in bob@localhost m9 'bob to alice 9'",
            "  out bob@localhost m10 'alice to bob 10'",
            "  in bob@localhost m11 'bob to alice 11'",
            "  out bob@localhost m12 'alice to bob 12'",
            "with bob@localhost: pages [(5, False), (5, False), (2, True)]",
            "iterate with bob@localhost: 12 messages",
            "OK",
        ],
    );
}

/// XEP-0045 with slixmpp's xep_0045 (Debian's and PyPI's): Alice creates a
/// room at conference.localhost (locked until her instant-room submit),
/// Bob and Carol join with `join_muc_wait`; all three get all three
/// groupchat messages with the room's stanza ids; Alice kicks Carol, who
/// gets 110 and 307 while the others see her go.
#[test]
fn slixmpp_creates_a_room_chats_in_it_and_kicks() {
    run_under_both_slixmpps("slixmpp_muc.py", &["JOINED 3", "MESSAGES 3", "KICKED carol", "OK"]);
}

/// XEP-0084 over PEP with slixmpp's xep_0084 (Debian's and PyPI's): Bob's
/// caps carry `urn:xmpp:avatar:metadata+notify`, which Shoal learns; Alice,
/// his mutual contact, publishes avatar data and metadata, and Bob gets the
/// metadata and retrieves the same bytes.
#[test]
fn slixmpp_sees_a_contacts_avatar_through_pep_and_caps() {
    run_under_both_slixmpps(
        "slixmpp_avatar.py",
        &[
            "alice: both",
            "bob: both",
            "alice published avatar data and metadata",
            "bob got metadata from alice@localhost: image/png, 69 bytes",
            "AVATAR SEEN",
            "OK",
        ],
    );
}
