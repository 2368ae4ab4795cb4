//! The `shoal` command line, run as a user would: account management
//! against the database of a running server, and clear errors.

mod common;

use std::process::{Command, Stdio};

use common::TestServer;
use shoal_actors::ns;

struct Cli {
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Cli {
    fn for_db(db: &std::path::Path) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("shoal.toml");
        std::fs::write(&config, format!("domain = 'localhost'\n[storage]\nsqlite = {:?}\n", db)).unwrap();
        Cli { config, _dir: dir }
    }

    /// Runs `shoal --config FILE ARGS`; returns (success, stdout, stderr).
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        common::shoal(&self.config, args, stdin)
    }
}

#[test]
fn user_commands_against_a_running_server() {
    let server = TestServer::start();
    let cli = Cli::for_db(&server.db);
    assert_eq!(
        cli.run(&["user", "add", "alice@localhost", "s3cret"], None),
        (true, "created alice@localhost\n".into(), String::new())
    );
    assert_eq!(
        cli.run(&["user", "add", "Bob"], Some("from-stdin\n")).1,
        "created bob@localhost\n"
    );
    assert_eq!(cli.run(&["user", "list"], None).1, "alice@localhost\nbob@localhost\n");

    // The running server sees the new accounts at once.
    let mut alice = server.login("alice", "s3cret", "cli");
    alice.sync();
    let mut c = server.connect();
    c.open();
    c.auth_plain("bob", "from-stdin");
    assert!(c.recv().is("success", ns::SASL));

    assert!(cli.run(&["user", "passwd", "alice@localhost", "n3w"], None).0);
    let mut old = server.connect();
    old.open();
    old.auth_plain("alice", "s3cret");
    assert!(old.recv().is("failure", ns::SASL));

    // The bind extension shows what `user set` stored.
    assert_eq!(
        cli.run(
            &[
                "user",
                "set",
                "alice",
                "--nick",
                "Al",
                "--photo-url",
                "https://example.com/a.png"
            ],
            None
        )
        .1,
        "profile of alice@localhost set\n"
    );
    assert!(cli.run(&["user", "set", "alice", "--nick", "Alice"], None).0);
    let mut c = server.authenticated("alice", "n3w");
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><extval xmlns='urn:xmpp:shoal:bind-extval:0'/></bind></iq>");
    let bind = c.recv().to_xml_in(ns::CLIENT);
    assert!(
        bind.ends_with(
            "<nick xmlns='http://jabber.org/protocol/nick'>Alice</nick>\
             <photo-url xmlns='urn:xmpp:shoal:bind-extval:0'>https://example.com/a.png</photo-url></bind></iq>"
        ),
        "{bind}"
    );
    assert_eq!(
        cli.run(&["user", "set", "carol", "--nick", "C"], None).2,
        "shoal: no such user: carol@localhost\n"
    );

    assert_eq!(
        cli.run(&["user", "del", "bob@localhost"], None).1,
        "deleted bob@localhost\n"
    );
    assert_eq!(cli.run(&["user", "list"], None).1, "alice@localhost\n");
}

/// XEP-0172: `user set --nick` publishes the nickname with PEP, through
/// the running server (a contact whose caps want it is notified), or into
/// the database when no server runs (read back after a start).
#[test]
fn user_set_nick_publishes_the_nickname_with_pep() {
    const NICK_NOTIFY: &str = "http://jabber.org/protocol/nick+notify";
    let mut server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    server.befriend("alice", "bob");
    let cli = Cli::for_db(&server.db);
    let mut bob = server.login("bob", "pw", "desk");
    bob.announce_caps(&[NICK_NOTIFY]);
    bob.answer_caps_query(&[NICK_NOTIFY]);
    bob.sync();
    let item = |nick: &str| {
        format!(
            "<items node='{}'><item id='current'><nick xmlns='{}'>{nick}</nick></item></items>",
            ns::NICK,
            ns::NICK
        )
    };

    // The command returns once the server has published (and notified).
    assert_eq!(
        cli.run(&["user", "set", "alice", "--nick", " Alice Liddell "], None),
        (true, "profile of alice@localhost set\n".into(), String::new())
    );
    assert_eq!(
        bob.recv_xml(),
        format!(
            "<message to='bob@localhost/desk' from='alice@localhost' type='headline'>\
             <event xmlns='http://jabber.org/protocol/pubsub#event'>{}</event></message>",
            item("Alice Liddell")
        )
    );

    // Stopped: stored as the server would have, and there after a start.
    server.stop();
    assert_eq!(
        cli.run(&["user", "set", "alice", "--nick", "Ally"], None),
        (true, "profile of alice@localhost set\n".into(), String::new())
    );
    server.restart();
    let mut bob = server.login("bob", "pw", "desk");
    bob.send(&format!(
        "<iq type='get' id='i' to='alice@localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <items node='{}'/></pubsub></iq>",
        ns::NICK
    ));
    assert_eq!(
        bob.recv_xml(),
        format!(
            "<iq id='i' type='result' from='alice@localhost' to='bob@localhost/desk'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'>{}</pubsub></iq>",
            item("Ally")
        )
    );
    let (ok, _, stderr) = cli.run(&["user", "set", "alice", "--nick", "Al\nice"], None);
    assert!(!ok);
    assert_eq!(
        stderr,
        "shoal: the nickname holds a line break or another control character\n"
    );
}

#[test]
fn user_command_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::for_db(&dir.path().join("x.db"));
    let err = |args: &[&str]| {
        let (ok, _, stderr) = cli.run(args, None);
        assert!(!ok, "{args:?} should fail");
        stderr
    };
    assert!(cli.run(&["user", "add", "alice", "pw"], None).0);
    assert_eq!(
        err(&["user", "add", "alice", "pw"]),
        "shoal: alice@localhost exists already\n"
    );
    assert_eq!(err(&["user", "del", "carol"]), "shoal: no such user: carol@localhost\n");
    assert_eq!(
        err(&["user", "passwd", "carol", "x"]),
        "shoal: no such user: carol@localhost\n"
    );
    assert_eq!(
        err(&["user", "add", "x@other.example", "pw"]),
        "shoal: \"x@other.example\" is not on this server's domain (localhost)\n"
    );
    assert!(err(&["user", "add", "a b@localhost", "pw"]).starts_with("shoal: invalid JID \"a b@localhost\""));
    assert!(err(&["user", "add", "a@localhost/res", "pw"]).contains("has a resource"));
    assert_eq!(err(&["user", "add", "dave"]), "shoal: the password is empty\n");
}

#[test]
fn config_errors_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "domain = 'localhost'\n[c2s]\nlisten = ['127.0.0.1:0']\nmax_stanza_byte = 5\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--config")
        .arg(&path)
        .args(["user", "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("bad.toml") && stderr.contains("unknown field `max_stanza_byte`"),
        "{stderr}"
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["--config", "/nonexistent/shoal.toml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).starts_with("shoal: cannot read /nonexistent/shoal.toml"));
}

#[test]
fn cert_shows_the_configured_or_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    let configured = dir.path().join("configured.toml");
    std::fs::write(
        &configured,
        format!(
            "[storage]\nsqlite = {:?}\n[tls]\ncert = {:?}\nkey = {:?}\n",
            dir.path().join("a.db"),
            fixtures.join("server.pem"),
            common::fixture_key()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--config")
        .arg(&configured)
        .arg("cert")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.starts_with(&format!("certificate: {}\n", fixtures.join("server.pem").display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nsubject:     CN=localhost\nissuer:      CN=Shoal Test CA\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nnot after:   ") && stdout.contains(" 2126 "),
        "{stdout}"
    );
    assert!(stdout.contains("-----BEGIN CERTIFICATE-----"));

    // Without one, Shoal makes a self-signed certificate beside the database.
    let generated = dir.path().join("generated.toml");
    std::fs::write(
        &generated,
        format!("[storage]\nsqlite = {:?}\n", dir.path().join("b.db")),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--config")
        .arg(&generated)
        .arg("cert")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("(self-signed, generated by Shoal)\ndomain:      localhost\nsubject:     CN=localhost\n"),
        "{stdout}"
    );
    assert!(dir.path().join("b.cert.pem").exists() && dir.path().join("b.key.pem").exists());
    // And uses it again next time.
    let again = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--config")
        .arg(&generated)
        .arg("cert")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);

    // A certificate without its key is a clear error.
    let half = dir.path().join("half.toml");
    std::fs::write(&half, format!("[tls]\ncert = {:?}\n", fixtures.join("server.pem"))).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--config")
        .arg(&half)
        .arg("cert")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "shoal: invalid configuration: [tls] cert and key go together: give both or neither\n"
    );
}

#[test]
fn passwd_and_del_end_the_accounts_live_sessions() {
    use std::os::unix::fs::PermissionsExt;
    let mut server = TestServer::start();
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    let cli = Cli::for_db(&server.db);
    let mut phone = server.login("alice", "pw", "phone");
    let mut laptop = server.login("alice", "pw", "laptop");
    let mut bob = server.login("bob", "pw", "desk");

    // The command returns once the server has queued the stream errors, so
    // they are read without waiting for anything else.
    assert_eq!(
        cli.run(&["user", "passwd", "alice@localhost", "newpw"], None),
        (
            true,
            "password of alice@localhost changed\nended 2 session(s) on the running server\n".into(),
            String::new()
        )
    );
    for c in [&mut phone, &mut laptop] {
        assert_eq!(
            c.expect_stream_error(),
            ("reset".into(), Some("password changed".into()))
        );
    }
    bob.expect_nothing();

    assert_eq!(
        cli.run(&["user", "del", "bob"], None),
        (
            true,
            "deleted bob@localhost\nended 1 session(s) on the running server\n".into(),
            String::new()
        )
    );
    assert_eq!(
        bob.expect_stream_error(),
        ("not-authorized".into(), Some("account removed".into()))
    );

    // The socket sits beside the database, owner-only, and names errors.
    let socket = server.db.with_extension("sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let err = shoal::control::request(&socket, "reboot").unwrap_err();
    assert!(err.contains("unknown command \"reboot\""), "{err}");
    assert_eq!(
        shoal::control::request(&socket, "kick-user nobody@localhost account-deleted"),
        Ok(Some(vec!["sessions 0".to_owned()]))
    );

    // Without a running server the commands change the store, quietly.
    server.stop();
    assert!(!socket.exists(), "the server removes its socket when it stops");
    assert_eq!(
        cli.run(&["user", "passwd", "alice", "again"], None),
        (true, "password of alice@localhost changed\n".into(), String::new())
    );
}

#[test]
fn a_second_server_on_the_same_database_is_refused() {
    let server = TestServer::start();
    let socket = server.db.with_extension("sock");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("second.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nsqlite = {:?}\n[c2s]\nlisten = ['127.0.0.1:0']\n[http]\nlisten = []\n",
            server.db
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It must give up at once; a bug would have it serve forever instead.
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second server on the same database started");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(&format!(
            "shoal: another Shoal server answers on the control socket {}",
            socket.display()
        )),
        "{stderr}"
    );
    // The first server keeps its socket.
    assert_eq!(
        shoal::control::request(&socket, "kick-user nobody@localhost"),
        Ok(Some(vec!["sessions 0".to_owned()]))
    );
}
