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

/// A server with 64 KiB outbound queues and reads that never pause, for
/// floods.
fn small_queues() -> TestServer {
    TestServer::with_config(|c| {
        c.c2s.max_stanza_bytes = 16 * 1024;
        c.c2s.max_outbound_bytes = 64 * 1024;
        c.limits.rate_bytes_per_sec = 1 << 30;
        c.limits.burst_bytes = 1 << 30;
    })
}

#[test]
fn a_client_that_stops_reading_is_disconnected_not_buffered() {
    let server = small_queues();
    let mut by = Bystanders::new(&server);
    server.add_user("slow", "s");
    let mut slow = server.login("slow", "s", "r");
    // The flood comes from the account's own other resource: that is the
    // user's own traffic, which is not refused but overflows (another
    // account's is refused instead: see the next test). Headlines to a
    // full JID that is gone are dropped, so the flooder gets no errors
    // back while the slow reader is being cut off.
    let mut flood = server.login("slow", "s", "flood");
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
fn a_full_socket_is_closed_after_the_write_timeout_and_its_place_freed() {
    // Unlike the test above, the queue never overflows: the kernel's
    // buffers fill first, and the server's write to the socket waits.
    let server = TestServer::with_config(|c| {
        c.limits.write_timeout_secs = 1;
        // The bystanders, the stuck client and the flooder.
        c.limits.max_connections_per_ip = 4;
        c.c2s.max_outbound_bytes = 64 * 1024 * 1024;
        c.limits.rate_bytes_per_sec = 1 << 30;
        c.limits.burst_bytes = 1 << 30;
    });
    let mut by = Bystanders::new(&server);
    server.add_user("stuck", "s");
    server.add_user("flood", "f");
    // A receive window of a few KiB: the server's send buffer (4 MiB at most
    // by default on Linux) is all that the kernels hold for it.
    let mut stuck = Client::connect_with_recv_buffer(server.addr, 4096);
    stuck.open();
    stuck.auth_plain("stuck", "s");
    assert!(stuck.recv().is("success", ns::SASL));
    stuck.open();
    stuck.bind(Some("r"));
    let mut flood = server.login("flood", "f", "r");
    let (condition, _) = server.connect().expect_stream_error();
    assert_eq!(condition, "policy-violation", "the four places are taken");
    // Headlines to a full JID that is gone are dropped: no errors come back
    // to the flooder once the stuck client is cut off.
    let body = "x".repeat(16 * 1024);
    let stanza = format!("<message to='stuck@localhost/r' type='headline'><body>{body}</body></message>");
    let mut sent = 0;
    // Several times what the socket buffers hold, a quarter of the queue's limit.
    while sent < 16 * 1024 * 1024 {
        flood.send(&stanza);
        sent += stanza.len();
    }
    flood.sync();
    // The stuck client never reads. Its socket is closed once a write has
    // waited a second, and only then is its place given back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    let mut c = loop {
        let mut c = server.connect();
        c.send(common::OPEN);
        match c.next_frame() {
            Some(shoal_actors::codec::Frame::StreamOpen(h)) if h.id.as_deref() != Some("refused") => break c,
            _ => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the stuck connection still holds its place"
                );
                // The polling interval, not a synchronisation.
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    };
    assert!(c.recv().is("features", ns::STREAM));
    // What the buffers held, then the end.
    let mut delivered = 0;
    while let Some(frame) = stuck.next_frame() {
        match frame {
            shoal_actors::codec::Frame::Stanza(el) if el.name() == "message" => delivered += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        delivered * stanza.len() < sent / 2,
        "most of the flood never reached the socket: {delivered} delivered"
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

#[test]
fn a_flood_to_a_slow_reader_is_refused_to_the_flooder_and_the_reader_stays() {
    // Each sender may have 8 KiB (or one stanza) queued for a session,
    // and others' traffic all together 48 KiB.
    let server = small_queues();
    let mut by = Bystanders::new(&server);
    for user in ["slow", "flood", "friend"] {
        server.add_user(user, "p");
    }
    // A receive window of a few KiB: once the server's send buffer is full
    // too, the slow reader's queue backs up.
    let mut slow = Client::connect_with_recv_buffer(server.addr, 4096);
    slow.open();
    slow.auth_plain("slow", "p");
    assert!(slow.recv().is("success", ns::SASL));
    slow.open();
    slow.bind(Some("r"));
    let mut flood = server.login("flood", "p", "r");
    let mut friend = server.login("friend", "p", "r");
    let body = "x".repeat(8 * 1024);
    let mut sent = 0;
    let mut refused = Vec::new();
    // In rounds, reading the errors in between (a flooder that never reads
    // would fill its own socket with them), until a whole round is
    // refused: the slow reader's socket is full and its queue behind.
    loop {
        assert!(sent < 4096, "the flood was not refused after {sent} messages");
        for _ in 0..32 {
            flood.send(&format!(
                "<message to='slow@localhost/r' id='f{sent}'><body>{body}</body></message>"
            ));
            sent += 1;
        }
        let errors = flood.sync();
        let whole = errors.len() == 32;
        refused.extend(errors);
        if whole {
            break;
        }
    }
    let mut bounced = Vec::new();
    for el in &refused {
        let id = el.attr("id").unwrap_or_default().to_owned();
        assert_eq!(
            el.to_xml_in(ns::CLIENT),
            format!(
                "<message id='{id}' type='error' from='slow@localhost/r' to='flood@localhost/r'>\
                 <error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
                 </error></message>"
            )
        );
        bounced.push(id);
    }
    // Another sender still has its share: its message is not refused.
    friend.send("<message to='slow@localhost/r' id='during'><body>hello</body></message>");
    friend.expect_nothing();
    by.check();
    // The slow reader was not disconnected: it reads what was queued for
    // it, in order, the friend's message last.
    let mut received = Vec::new();
    loop {
        let el = answering_pings(&mut slow);
        assert_eq!(el.name(), "message", "{el}");
        if el.attr("from") == Some("friend@localhost/r") {
            assert_eq!(el.attr("id"), Some("during"));
            break;
        }
        assert_eq!(el.attr("from"), Some("flood@localhost/r"));
        received.push(el.attr("id").unwrap_or_default().to_owned());
    }
    slow.expect_nothing();
    // Every message was either delivered or refused, and both kinds were
    // the flooder's first ones: the head of the flood got through.
    let number = |id: &String| id[1..].parse::<usize>().unwrap();
    assert!(!received.is_empty(), "the first messages are delivered");
    assert!(received.windows(2).all(|w| number(&w[0]) < number(&w[1])), "in order");
    let mut all: Vec<usize> = received.iter().chain(&bounced).map(number).collect();
    all.sort_unstable();
    assert_eq!(all, (0..sent).collect::<Vec<_>>(), "each delivered or refused, once");
    assert_eq!(number(&received[0]), 0);
    // Drained, the session takes others' messages again, the flooder's too.
    friend.send("<message to='slow@localhost/r' id='later'><body>still there?</body></message>");
    assert_eq!(answering_pings(&mut slow).attr("id"), Some("later"));
    flood.send("<message to='slow@localhost/r' id='again'><body>sorry</body></message>");
    assert_eq!(answering_pings(&mut slow).attr("id"), Some("again"));
    flood.expect_nothing();
    by.check();
}

/// A client pipelining requests it does not wait for: at most
/// `MAX_IQS_IN_FLIGHT` are worked on at once, the excess is answered
/// `<resource-constraint/>` at once, and every request gets exactly one
/// answer while others log in as usual.
#[test]
fn pipelined_iqs_are_capped_per_session_and_each_answered_once() {
    let server = TestServer::start();
    let mut by = Bystanders::new(&server);
    server.add_user("greedy", "g");
    let mut greedy = server.login("greedy", "g", "r");
    const N: usize = 2000;
    let burst: String = (0..N)
        .map(|i| format!("<iq type='get' id='q{i}'><query xmlns='jabber:iq:roster'/></iq>"))
        .collect();
    greedy.send(&burst);
    by.check();
    let mut answered = std::collections::HashSet::new();
    let (mut results, mut refused) = (0, 0);
    while answered.len() < N {
        let el = greedy.recv();
        let id = el.attr("id").unwrap_or_default().to_owned();
        match el.attr("type") {
            Some("result") => results += 1,
            Some("error") => {
                let xml = el.to_xml_in(ns::CLIENT);
                assert!(xml.contains("<error type='wait'><resource-constraint"), "{xml}");
                refused += 1;
            }
            other => panic!("unexpected {other:?}: {el}"),
        }
        assert!(answered.insert(id.clone()), "{id} answered twice");
    }
    assert!(results > 0 && refused > 0, "{results} results, {refused} refused");
    greedy.expect_nothing();
    by.check();
}
