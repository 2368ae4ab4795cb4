//! What a fresh clone must be: no secrets in it, and the README's run
//! command, exactly as written, serving at once. It must build, serve
//! `localhost` on 127.0.0.1:5222 with no configuration, take an in-band
//! registration and a login, and stop cleanly on SIGTERM. (A second
//! binary once broke `cargo run --release` and nothing noticed.)

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Client;
use shoal_actors::ns;

/// The first command of the README's "Two commands" block.
fn readme_run_command(root: &Path) -> String {
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let block = readme
        .split("## Two commands")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .expect("the README has a 'Two commands' code block");
    let line = block
        .lines()
        .find(|l| l.trim_start().starts_with("cargo run"))
        .expect("the block has a cargo run line");
    line.split('#').next().unwrap().trim().to_owned()
}

/// What the run leaves in the working directory; removed afterwards when
/// the test made it.
const MADE: &[&str] = &[
    "shoal.db",
    "shoal.db-wal",
    "shoal.db-shm",
    "shoal.cert.pem",
    "shoal.key.pem",
    "shoal.sock",
];

#[test]
fn the_readme_run_command_serves_with_no_configuration() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let command = readme_run_command(&root);
    assert_eq!(command, "cargo run --release");
    if root.join("shoal.db").exists() {
        eprintln!("SKIPPED: ./shoal.db exists (a developer's own data is not touched)");
        return;
    }
    let mut child = Command::new("sh")
        .arg("-c")
        // exec: `cargo run` then execs the server, so the signal reaches it.
        .arg(format!("exec {command}"))
        .current_dir(&root)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the README's command");
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("| {line}");
            let _ = lines_tx.send(line);
        }
    });
    // Whatever happens below, the server stops and its files go.
    let mut guard = Guard {
        child,
        root: root.clone(),
    };
    // A first release build takes minutes on two cores.
    let deadline = std::time::Instant::now() + Duration::from_secs(40 * 60);
    let listening = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("listening for clients on 127.0.0.1:5222") => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    assert!(listening, "the server did not start listening on 127.0.0.1:5222");

    let mut c = Client::connect("127.0.0.1:5222".parse().unwrap());
    let features = c.open();
    assert!(features.has_child("register", ns::REGISTER_FEATURE), "{features}");
    c.send(
        "<iq type='set' id='reg'><query xmlns='jabber:iq:register'>\
         <username>readme</username><password>first-run</password></query></iq>",
    );
    assert_eq!(c.recv_xml(), "<iq id='reg' type='result'/>");
    let mut c = Client::connect("127.0.0.1:5222".parse().unwrap());
    c.open();
    c.auth_plain("readme", "first-run");
    assert!(c.recv().is("success", ns::SASL));
    c.open();
    assert_eq!(c.bind(Some("first")), "readme@localhost/first");
    c.expect_nothing();

    // The HTTP listener too: live figures at /metrics, the chat page.
    let http: std::net::SocketAddr = "127.0.0.1:5280".parse().unwrap();
    let metrics = common::http(http, "GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines().any(|l| l == "shoal_c2s_sessions{transport=\"tcp\"} 1"),
        "{text}"
    );
    assert_eq!(common::http(http, "GET", "/chat", &[], b"").status, 200);

    // SIGTERM: every stream is told, and the server exits cleanly.
    unsafe { libc::kill(guard.child.id() as i32, libc::SIGTERM) };
    let (condition, _) = c.expect_stream_error();
    assert_eq!(condition, "system-shutdown");
    let status = guard.child.wait().unwrap();
    assert!(status.success(), "the server exited with {status}");
}

/// Stops the server (if still running) and removes what it made.
struct Guard {
    child: std::process::Child,
    root: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for f in MADE {
            let _ = std::fs::remove_file(self.root.join(f));
        }
    }
}

/// Every clone would share a tracked private key: only the test material
/// in `fixtures/` may hold one.
#[test]
fn no_private_key_is_tracked_outside_fixtures() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let Ok(out) = Command::new("git").args(["ls-files", "-z"]).current_dir(&root).output() else {
        eprintln!("SKIPPED: no git");
        return;
    };
    if !out.status.success() {
        eprintln!("SKIPPED: not a git checkout");
        return;
    }
    let tracked: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    assert!(tracked.iter().any(|p| p == "Cargo.toml"), "git ls-files lists the tree");
    let keys: Vec<&String> = tracked
        .iter()
        .filter(|p| !p.starts_with("fixtures/"))
        .filter(|p| {
            // Spelt in two parts, or this file would hold the marker itself.
            let marker = concat!("PRIVATE ", "KEY-----").as_bytes();
            std::fs::read(root.join(p)).is_ok_and(|bytes| bytes.windows(marker.len()).any(|w| w == marker))
        })
        .collect();
    assert!(keys.is_empty(), "private keys tracked outside fixtures/: {keys:?}");
}
