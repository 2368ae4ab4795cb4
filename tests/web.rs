//! A real browser: Converse.js, in Debian's chromium (headless, driven by
//! playwright-core from `tests/web/converse.mjs`), opens Shoal's `/chat`
//! page, logs in through its login form over the WebSocket
//! (`/xmpp-websocket`, RFC 7395), receives a message from a slixmpp user
//! on plain TCP (`tests/interop/web_peer.py`, Debian's slixmpp) and
//! answers it by typing into the chat. The slixmpp side's copy of the
//! answer is the assertion; the browser's screenshot is kept at
//! `target/web/converse.png` (with `converse.png.log`, the page's console
//! and WebSocket frames).
//!
//! `make test` installs chromium, the npm packages (`make web-deps`) and
//! Debian's slixmpp (`SHOAL_DEBIAN_PYTHON`); without them the test is
//! skipped, and says so, unless `SHOAL_REQUIRE_INTEROP` is set, when that
//! is a failure. `tests/web/prosody.sh` runs the same two scripts against
//! Prosody, to tell a harness problem from a Shoal one.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::TestServer;
use shoal_actors::jid::Jid;
use shoal_actors::ns;
use shoal_actors::xml::{parse_element, Element, NsBindings, ParseLimits};

const MESSAGE: &str = "hello from slixmpp";
const REPLY: &str = "hello from Converse";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn web_dir() -> PathBuf {
    root().join("tests/web")
}

/// Converse's files, as `npm ci` in tests/web leaves them: what
/// `[http] conversejs_dir` points at.
fn conversejs_dist() -> PathBuf {
    web_dir().join("node_modules/converse.js/dist")
}

/// What the test runs: node, chromium, Debian's Python with slixmpp.
struct Tools {
    node: PathBuf,
    python: PathBuf,
}

fn skip(why: &str) -> Option<Tools> {
    if std::env::var_os("SHOAL_REQUIRE_INTEROP").is_some() {
        panic!("{why}; run `make test` (make web-deps installs chromium and the npm packages)");
    }
    eprintln!("SKIPPED: {why} (or run `make test`) for the real-browser test");
    None
}

fn tools() -> Option<Tools> {
    // converse.mjs takes the same variable.
    let chromium = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !chromium.exists() {
        return skip(&format!(
            "no chromium at {}: apt-get install chromium",
            chromium.display()
        ));
    }
    let packages = web_dir().join("node_modules");
    if !packages.join("playwright-core").is_dir() || !conversejs_dist().join("converse.min.js").is_file() {
        return skip(&format!(
            "no converse.js or playwright-core in {}: npm ci --prefix tests/web",
            packages.display()
        ));
    }
    let node = PathBuf::from("node");
    if Command::new(&node).arg("--version").output().is_err() {
        return skip("no node on PATH");
    }
    let python = std::env::var_os("SHOAL_DEBIAN_PYTHON").map(PathBuf::from);
    let Some(python) = python.filter(|p| p.exists()) else {
        return skip("set SHOAL_DEBIAN_PYTHON to a Python with Debian's slixmpp");
    };
    Some(Tools { node, python })
}

/// Where the screenshot is kept: `target/web/` (the target directory is
/// the parent of the integration tests' temporary one).
fn screenshot_path() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().expect("the target directory").join("web");
    std::fs::create_dir_all(&dir).expect("create target/web");
    dir.join("converse.png")
}

fn describe(name: &str, out: &Output) -> String {
    format!(
        "{name} ({}):\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The reply as web_peer.py printed it (`xml: <message .../>`): slixmpp
/// writes the stanza without its default namespace, jabber:client.
fn reply_stanza(peer_stdout: &str) -> Element {
    let xml = peer_stdout
        .lines()
        .find_map(|l| l.strip_prefix("xml: "))
        .expect("web_peer.py printed the reply's XML");
    parse_element(xml.as_bytes(), &NsBindings::client(), &ParseLimits::default())
        .unwrap_or_else(|e| panic!("the reply {xml} does not parse: {e:?}"))
}

#[test]
fn converse_in_chromium_logs_in_over_websocket_and_answers_a_slixmpp_user() {
    let Some(tools) = tools() else {
        return;
    };
    let server = TestServer::with_config(|c| {
        c.http.listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.http.conversejs_dir = conversejs_dist();
    });
    server.add_user("alice", "alice-pass");
    server.add_user("bob", "bob-pass");
    // Each in the other's roster: the browser's presence reaches Bob, who
    // writes once Alice is online.
    server.befriend("alice", "bob");
    let screenshot = screenshot_path();
    let _ = std::fs::remove_file(&screenshot);

    let c2s = server.addr;
    let mut peer = Command::new(&tools.python)
        .arg(root().join("tests/interop/web_peer.py"))
        .arg(c2s.ip().to_string())
        .arg(c2s.port().to_string())
        .arg("localhost")
        .args(["bob", "bob-pass", "alice@localhost", MESSAGE, REPLY])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run web_peer.py");
    let browser = Command::new(&tools.node)
        .arg(web_dir().join("converse.mjs"))
        .arg("--url")
        .arg(format!("http://{}/chat", server.http_addr()))
        .args([
            "--jid",
            "alice@localhost",
            "--password",
            "alice-pass",
            "--peer",
            "bob@localhost",
        ])
        .args(["--expect", MESSAGE, "--reply", REPLY])
        .arg("--screenshot")
        .arg(&screenshot)
        .stdin(Stdio::null())
        .output()
        .expect("run converse.mjs");
    if !browser.status.success() {
        // Bob would wait a minute for a reply that cannot come.
        let _ = peer.kill();
    }
    let peer = peer.wait_with_output().expect("wait for web_peer.py");
    let browser_log = describe("converse.mjs", &browser);
    let peer_log = describe("web_peer.py", &peer);
    assert!(browser.status.success(), "{browser_log}\n{peer_log}");
    assert!(peer.status.success(), "{peer_log}\n{browser_log}");

    assert_eq!(
        String::from_utf8_lossy(&browser.stdout).lines().collect::<Vec<_>>(),
        ["ONLINE".to_owned(), format!("GOT {MESSAGE}"), "SENT".to_owned()],
        "{browser_log}"
    );
    let peer_stdout = String::from_utf8_lossy(&peer.stdout);
    let lines: Vec<&str> = peer_stdout.lines().filter(|l| !l.starts_with("xml: ")).collect();
    assert_eq!(
        lines,
        [
            "available: alice@localhost".to_owned(),
            format!("sent: '{MESSAGE}'"),
            format!("reply: '{REPLY}' from alice@localhost type chat"),
            "OK".to_owned(),
        ],
        "{peer_log}"
    );

    // The stanza as Bob got it: from the browser's session (a full JID of
    // Alice's), to Bob, a chat with the typed text, and Converse's own
    // extensions passed through untouched (its chat state and XEP-0359
    // origin-id, which repeats the message id).
    let reply = reply_stanza(&peer_stdout);
    assert!(reply.is("message", ns::CLIENT), "{peer_log}");
    assert_eq!(reply.attr("type"), Some("chat"), "{peer_log}");
    let from = Jid::parse(reply.attr("from").expect("from")).expect("from is a JID");
    assert_eq!(from.to_bare().to_string(), "alice@localhost", "{peer_log}");
    assert!(
        from.resource().is_some_and(|r| !r.is_empty()),
        "from a full JID: {peer_log}"
    );
    let to = Jid::parse(reply.attr("to").expect("to")).expect("to is a JID");
    assert_eq!(to.to_bare().to_string(), "bob@localhost", "{peer_log}");
    let body = reply.get_child("body", ns::CLIENT).expect("a body");
    assert_eq!(body.text(), REPLY);
    assert!(
        reply.has_child("active", "http://jabber.org/protocol/chatstates"),
        "{peer_log}"
    );
    let origin = reply.get_child("origin-id", "urn:xmpp:sid:0").expect("an origin-id");
    assert_eq!(origin.attr("id"), reply.attr("id"), "{peer_log}");

    let size = std::fs::metadata(&screenshot)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", screenshot.display()))
        .len();
    assert!(size > 0, "empty screenshot at {}", screenshot.display());
}
