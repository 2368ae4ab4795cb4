//! Memory stays bounded under hostile input: the server runs as a child
//! process (the `shoal` binary) so that its resident set can be read from
//! /proc/PID/status while it is attacked.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::Client;

struct ChildServer {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl ChildServer {
    fn start() -> ChildServer {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("shoal.toml");
        // Fast reads before authentication, so the attacks reach the limits
        // quickly; everything else as shipped.
        std::fs::write(
            &config,
            format!(
                "[storage]\nsqlite = {:?}\n[c2s]\nlisten = ['127.0.0.1:0']\n[http]\nlisten = []\n\
                 [limits]\npreauth_rate_bytes_per_sec = 67108864\npreauth_burst_bytes = 67108864\n",
                dir.path().join("shoal.db")
            ),
        )
        .unwrap();
        for (user, pw) in [("romeo", "r"), ("juliet", "j")] {
            let ok = Command::new(env!("CARGO_BIN_EXE_shoal"))
                .args(["--config", config.to_str().unwrap(), "user", "add", user, pw])
                .output()
                .unwrap();
            assert!(ok.status.success());
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The log says where it listens.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("server log").unwrap();
            if let Some(addr) = line.split("listening for clients on ").nth(1) {
                break addr.trim().parse().unwrap();
            }
        };
        // Keep draining the log so the child never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        ChildServer { child, addr, _dir: dir }
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn login(&self, user: &str, pw: &str, resource: &str) -> Client {
        let mut c = Client::connect(self.addr);
        c.open();
        c.auth_plain(user, pw);
        assert!(c.recv().is("success", shoal_actors::ns::SASL));
        c.open();
        c.bind(Some(resource));
        c
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chat(romeo: &mut Client, juliet: &mut Client, n: u32) {
    romeo.send(&format!(
        "<message to='juliet@localhost/b' id='m{n}'><body>{n}</body></message>"
    ));
    assert_eq!(juliet.recv().attr("id"), Some(format!("m{n}").as_str()));
}

#[test]
fn hostile_input_leaves_memory_bounded() {
    let server = ChildServer::start();
    let mut romeo = server.login("romeo", "r", "o");
    let mut juliet = server.login("juliet", "j", "b");
    chat(&mut romeo, &mut juliet, 0);
    let (rss_before, _) = server.memory();

    // Billion laughs: refused at the DTD, nothing expanded.
    let mut lol = Client::connect(server.addr);
    let mut payload = String::from("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>");
    for i in 1..10 {
        payload.push_str(&format!(
            "<!ENTITY lol{i} '{}'>",
            format!("&lol{};", if i == 1 { String::new() } else { (i - 1).to_string() }).repeat(10)
        ));
    }
    payload.push_str("]><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>&lol9;");
    lol.send_raw(payload.as_bytes());
    assert_eq!(lol.expect_stream_error().0, "restricted-xml");
    chat(&mut romeo, &mut juliet, 1);

    // A 100 MB stanza: cut off at the 256 KiB limit.
    let mut big = Client::connect(server.addr);
    big.open();
    big.send("<message><body>");
    let chunk = vec![b'a'; 64 * 1024];
    let mut written = 0usize;
    while written < 100 * 1024 * 1024 {
        if big.raw().write_all(&chunk).is_err() {
            break;
        }
        written += chunk.len();
    }
    assert!(written < 100 * 1024 * 1024, "the server read 100 MB of one stanza");
    assert_eq!(big.expect_stream_error().0, "policy-violation");
    chat(&mut romeo, &mut juliet, 2);

    // A hundred connections each holding a stanza just under the limit.
    let mut holders = Vec::new();
    for _ in 0..100 {
        let mut c = Client::connect(server.addr);
        c.open();
        c.send("<message><body>");
        c.send_raw(&vec![b'a'; 200 * 1024]);
        holders.push(c);
    }
    // A round trip per holder proves the server has read what they sent.
    chat(&mut romeo, &mut juliet, 3);
    let (rss, hwm) = server.memory();
    eprintln!("server RSS before {rss_before} KiB, with 100 held stanzas {rss} KiB, peak {hwm} KiB");
    // 100 × 200 KiB buffered is ~20 MiB; the 100 MB and billion-laughs
    // attempts must have added nothing near their size.
    assert!(
        hwm < rss_before + 64 * 1024,
        "peak RSS {hwm} KiB (was {rss_before} KiB)"
    );
    drop(holders);
    chat(&mut romeo, &mut juliet, 4);
}

/// Two floods measured before as memory that grew with the flood and was
/// never given back: 40,000 directed presences to made-up JIDs (+38 MiB,
/// kept for the session's life) and 50,000 pipelined roster gets from a
/// client that does not read (+92 MiB). Now nobody unreached is
/// remembered, and at most 64 requests per session are worked on.
#[test]
fn directed_presence_and_pipelined_iq_floods_leave_memory_bounded() {
    let server = ChildServer::start();
    let mut romeo = server.login("romeo", "r", "o");
    let mut juliet = server.login("juliet", "j", "b");
    chat(&mut romeo, &mut juliet, 0);
    let (rss_before, _) = server.memory();

    let mut flooder = server.login("romeo", "r", "flood");
    flooder.send("<presence/>");
    let ghosts: String = (0..40_000)
        .map(|i| format!("<presence to='ghost{i}@localhost/x{i}'/>"))
        .collect();
    flooder.send_raw(ghosts.as_bytes());
    // A round trip on the flooder's own stream: everything before it is done.
    flooder.sync();
    chat(&mut romeo, &mut juliet, 1);
    let (after_presence, _) = server.memory();

    let mut greedy = server.login("juliet", "j", "greedy");
    let gets: String = (0..50_000)
        .map(|i| format!("<iq type='get' id='g{i}'><query xmlns='jabber:iq:roster'/></iq>"))
        .collect();
    greedy.send_raw(gets.as_bytes());
    chat(&mut romeo, &mut juliet, 2);
    drop(greedy);
    chat(&mut romeo, &mut juliet, 3);
    let (after_iqs, hwm) = server.memory();
    eprintln!(
        "server RSS before {rss_before} KiB, after 40,000 directed presences {after_presence} KiB, \
         after 50,000 pipelined IQs {after_iqs} KiB, peak {hwm} KiB"
    );
    assert!(
        after_presence < rss_before + 8 * 1024,
        "directed presence kept {} KiB",
        after_presence - rss_before
    );
    assert!(
        hwm < rss_before + 32 * 1024,
        "peak RSS {hwm} KiB (was {rss_before} KiB)"
    );
}
