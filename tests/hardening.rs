//! Hostile clients: each gets its RFC error, and a pair of well-behaved
//! sessions on the same server keeps exchanging messages throughout with
//! nothing lost.

mod common;

use std::io::Write;

use common::{Client, TestServer};
use shoal_actors::ns;

/// Two sessions that keep talking; `check` proves nothing was lost.
struct Bystanders {
    romeo: Client,
    juliet: Client,
    sent: u32,
}

impl Bystanders {
    fn new(server: &TestServer) -> Bystanders {
        server.add_user("romeo", "r");
        server.add_user("juliet", "j");
        Bystanders {
            romeo: server.login("romeo", "r", "orchard"),
            juliet: server.login("juliet", "j", "balcony"),
            sent: 0,
        }
    }

    fn check(&mut self) {
        self.sent += 1;
        let n = self.sent;
        self.romeo.send(&format!(
            "<message to='juliet@localhost/balcony' id='n{n}'><body>{n}</body></message>"
        ));
        let got = answering_pings(&mut self.juliet);
        assert_eq!(got.attr("id"), Some(format!("n{n}").as_str()), "bystander message {n}");
        self.juliet.send(&format!(
            "<message to='romeo@localhost/orchard' id='r{n}'><body>{n}</body></message>"
        ));
        assert_eq!(
            answering_pings(&mut self.romeo).attr("id"),
            Some(format!("r{n}").as_str())
        );
    }
}

/// The next stanza that is not a server ping; pings are answered, as a
/// well-behaved client does.
fn answering_pings(c: &mut Client) -> shoal_actors::xml::Element {
    loop {
        let el = c.recv();
        if el.has_child("ping", ns::PING) && el.attr("type") == Some("get") {
            c.send(&format!(
                "<iq type='result' id='{}' to='localhost'/>",
                el.attr("id").unwrap_or_default()
            ));
            continue;
        }
        return el;
    }
}

#[test]
fn connections_per_ip_are_limited() {
    // The bystanders hold two of the four.
    let server = TestServer::with_config(|c| c.limits.max_connections_per_ip = 4);
    let mut by = Bystanders::new(&server);
    let mut silent: Vec<Client> = (0..2).map(|_| server.connect()).collect();
    for c in &mut silent {
        c.open();
    }
    let mut refused = server.connect();
    let (condition, text) = refused.expect_stream_error();
    assert_eq!(condition, "policy-violation");
    assert_eq!(text.as_deref(), Some("too many connections from your address"));
    by.check();
    // A place freed is a place taken.
    drop(silent.pop());
    let mut c = loop {
        // The server notices the close asynchronously: retry until admitted.
        let mut c = server.connect();
        c.send(common::OPEN);
        match c.next_frame() {
            Some(shoal_actors::codec::Frame::StreamOpen(h)) if h.id.as_deref() != Some("refused") => break c,
            _ => continue,
        }
    };
    assert!(c.recv().is("features", ns::STREAM));
    by.check();
}

#[test]
fn connections_that_never_authenticate_are_capped_and_timed_out() {
    let server = TestServer::with_config(|c| {
        c.limits.max_unauthenticated = 2;
        c.c2s.negotiation_timeout_secs = 1;
    });
    let mut by = Bystanders::new(&server);
    let mut a = server.connect();
    a.open();
    let mut b = server.connect();
    b.open();
    let mut third = server.connect();
    let (condition, text) = third.expect_stream_error();
    assert_eq!(condition, "resource-constraint");
    assert_eq!(text.as_deref(), Some("too many connections are logging in"));
    by.check();
    // Silent ones are closed when their time to authenticate is up.
    for c in [&mut a, &mut b] {
        let (condition, text) = c.expect_stream_error();
        assert_eq!(condition, "connection-timeout");
        assert_eq!(text.as_deref(), Some("stream negotiation took too long"));
    }
    by.check();
}

#[test]
fn silent_sessions_are_pinged_then_dropped() {
    let server = TestServer::with_config(|c| {
        c.limits.idle_timeout_secs = 1;
        c.limits.ping_timeout_secs = 1;
    });
    server.add_user("tybalt", "t");
    server.add_user("friar", "f");
    let Bystanders { romeo, juliet, .. } = Bystanders::new(&server);
    // Well-behaved clients answer pings as they come, while Tybalt is silent.
    let attentive = |mut c: Client| {
        std::thread::spawn(move || {
            while answering_pings(&mut c).attr("id") != Some("stop") {}
            c
        })
    };
    let (romeo, juliet) = (attentive(romeo), attentive(juliet));
    let mut tybalt = server.login("tybalt", "t", "street");
    // An answered ping keeps the session.
    let ping = tybalt.recv();
    assert!(ping.has_child("ping", ns::PING), "{ping}");
    assert_eq!(ping.attr("from"), Some("localhost"));
    assert_eq!(ping.attr("to"), Some("tybalt@localhost/street"));
    tybalt.send(&format!(
        "<iq type='result' id='{}' to='localhost'/>",
        ping.attr("id").unwrap()
    ));
    // The next one goes unanswered.
    let second = tybalt.recv();
    assert!(second.has_child("ping", ns::PING), "{second}");
    let (condition, text) = tybalt.expect_stream_error();
    assert_eq!(condition, "connection-timeout");
    assert_eq!(text.as_deref(), Some("no answer to a ping"));
    // The attentive ones are still there, and still talk.
    let mut friar = server.login("friar", "f", "cell");
    friar.send("<message to='romeo@localhost/orchard' id='stop'/><message to='juliet@localhost/balcony' id='stop'/>");
    let mut by = Bystanders {
        romeo: romeo.join().unwrap(),
        juliet: juliet.join().unwrap(),
        sent: 0,
    };
    by.check();
}

#[test]
fn password_guessing_is_throttled_per_account() {
    let server = TestServer::with_config(|c| c.limits.auth_failures_per_account = 3);
    let mut by = Bystanders::new(&server);
    server.add_user("alice", "secret");
    let failure = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>";
    let mut guesses = 0;
    while guesses < 3 {
        let mut c = server.connect();
        c.open();
        c.auth_plain("alice", &format!("guess{guesses}"));
        assert_eq!(c.recv_xml(), failure);
        guesses += 1;
    }
    // Now even the right password is refused, with the reason.
    let mut c = server.connect();
    c.open();
    c.auth_plain("alice", "secret");
    assert_eq!(
        c.recv_xml(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>\
         <text xml:lang='en'>too many failed attempts; try again later</text></failure>"
    );
    // SCRAM too, and another account from the same address is not affected.
    let mut s = server.connect();
    s.open();
    let refused = s.auth_scram(shoal_actors::sasl::ScramHash::Sha256, "alice", "secret");
    assert!(refused.is("failure", ns::SASL));
    let _carol = {
        server.add_user("carol", "c");
        server.login("carol", "c", "x")
    };
    by.check();
}

#[test]
fn a_client_that_stops_reading_is_disconnected_not_buffered() {
    let server = TestServer::with_config(|c| {
        c.c2s.max_stanza_bytes = 16 * 1024;
        c.c2s.max_outbound_bytes = 64 * 1024;
        c.limits.rate_bytes_per_sec = 1 << 30;
        c.limits.burst_bytes = 1 << 30;
    });
    let mut by = Bystanders::new(&server);
    server.add_user("slow", "s");
    server.add_user("flood", "f");
    let mut slow = server.login("slow", "s", "r");
    let mut flood = server.login("flood", "f", "r");
    // Headlines to a full JID that is gone are dropped, so the flooder
    // gets no errors back while the slow reader is being cut off.
    let body = "x".repeat(8 * 1024);
    let stanza = format!("<message to='slow@localhost/r' type='headline'><body>{body}</body></message>");
    let mut sent = 0;
    // Far more than the kernel's socket buffers and the 64 KiB queue.
    while sent < 64 * 1024 * 1024 {
        flood.send(&stanza);
        sent += stanza.len();
    }
    by.check();
    flood.sync();
    // The slow client finds what fitted in its socket buffers, then the end.
    let mut delivered = 0;
    loop {
        match slow.next_frame() {
            Some(shoal_actors::codec::Frame::Stanza(el)) if el.name() == "message" => delivered += 1,
            Some(shoal_actors::codec::Frame::Stanza(el)) if el.is("error", ns::STREAM) => {
                assert!(el.has_child("policy-violation", ns::STREAMS_ERRORS), "{el}");
            }
            Some(shoal_actors::codec::Frame::StreamClose) => {}
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    assert!(
        delivered * stanza.len() < sent / 2,
        "most of the flood was not queued: {delivered} delivered"
    );
    by.check();
}

#[test]
fn a_flood_of_bytes_before_authentication_is_slowed_not_buffered() {
    // 4 KiB/s with a 16 KiB burst: whitespace keep-alives beyond that wait.
    let server = TestServer::with_config(|c| {
        c.limits.preauth_rate_bytes_per_sec = 4096;
        c.limits.preauth_burst_bytes = 16 * 1024;
    });
    let mut by = Bystanders::new(&server);
    let mut c = server.connect();
    c.open();
    // The kernel takes what it can; the server stops reading, so this
    // write would block once the socket buffers are full.
    c.set_write_timeout(std::time::Duration::from_millis(500));
    let chunk = vec![b' '; 64 * 1024];
    let mut accepted = 0usize;
    while c.raw().write(&chunk).map(|n| accepted += n).is_ok() {
        if accepted > 512 * 1024 * 1024 {
            panic!("the server kept reading at full speed");
        }
    }
    by.check();
}

#[test]
fn hundreds_of_silent_sockets_do_not_delay_a_login() {
    let server = TestServer::with_config(|c| {
        c.limits.max_connections_per_ip = 1000;
        c.limits.max_unauthenticated = 1000;
    });
    let mut by = Bystanders::new(&server);
    // Some connect and say nothing; some open a stream and stop there.
    let mut silent: Vec<Client> = (0..300).map(|_| server.connect()).collect();
    for c in silent.iter_mut().step_by(2) {
        c.send(common::OPEN);
    }
    server.add_user("mercutio", "m");
    let mut m = server.login("mercutio", "m", "r");
    m.send("<message to='romeo@localhost/orchard' id='q'><body>a plague</body></message>");
    assert_eq!(answering_pings(&mut by.romeo).attr("id"), Some("q"));
    by.check();
    drop(silent);
}
