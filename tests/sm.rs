//! XEP-0198 stream management over TCP: counting and acknowledgements
//! both ways, resumption after a dropped connection and over a half-open
//! one, the wait running out into offline storage, and the limits.

mod common;

use common::{unsid, Client, TestServer};
use shoal_actors::codec::Frame;
use shoal_actors::ns;
use shoal_actors::xml::Element;

const SM: &str = "urn:xmpp:sm:3";

fn server(edit: impl FnOnce(&mut shoal::Config)) -> TestServer {
    let server = TestServer::with_config(|c| {
        // Requests by count only where a test asks for them.
        c.sm.ack_request_stanzas = 1000;
        edit(c)
    });
    server.add_user("alice", "pw");
    server.add_user("bob", "pw");
    server
}

/// Enables resumable stream management; the id.
fn enable(c: &mut Client) -> String {
    enable_for(c, "300")
}

fn enable_for(c: &mut Client, max: &str) -> String {
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    let enabled = c.recv();
    assert!(enabled.is("enabled", SM), "{enabled}");
    assert_eq!(enabled.attr("resume"), Some("true"));
    assert_eq!(enabled.attr("max"), Some(max));
    enabled.attr("id").expect("an id").to_owned()
}

fn chat(to: &str, id: &str) -> String {
    format!("<message to='{to}' type='chat' id='{id}'><body>{id}</body></message>")
}

fn delivered(from: &str, to: &str, id: &str) -> String {
    format!(
        "<message to='{to}' type='chat' id='{id}' from='{from}'><body>{id}</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='alice@localhost'/></message>"
    )
}

#[test]
fn stanzas_are_counted_and_acknowledged_both_ways() {
    let server = server(|c| c.sm.ack_request_stanzas = 3);
    let mut alice = server.login("alice", "pw", "phone");
    alice.send("<enable xmlns='urn:xmpp:sm:3'/>");
    assert_eq!(alice.recv_xml(), "<enabled xmlns='urn:xmpp:sm:3'/>");
    alice.send("<r xmlns='urn:xmpp:sm:3'/>");
    assert_eq!(alice.recv_xml(), "<a xmlns='urn:xmpp:sm:3' h='0'/>");
    for id in ["p1", "p2"] {
        alice.send(&format!(
            "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
        assert_eq!(
            alice.recv_xml(),
            format!("<iq id='{id}' type='result' from='localhost' to='alice@localhost/phone'/>")
        );
    }
    alice.send("<r xmlns='urn:xmpp:sm:3'/>");
    assert_eq!(alice.recv_xml(), "<a xmlns='urn:xmpp:sm:3' h='2'/>");
    // The third stanza written brings the server's request.
    let mut bob = server.login("bob", "pw", "desk");
    bob.send(&chat("alice@localhost/phone", "m1"));
    assert_eq!(
        unsid(alice.recv_xml()),
        delivered("bob@localhost/desk", "alice@localhost/phone", "m1")
    );
    assert_eq!(alice.recv_xml(), "<r xmlns='urn:xmpp:sm:3'/>");
    alice.send("<a xmlns='urn:xmpp:sm:3' h='3'/>");
    alice.expect_nothing();
    // Acknowledging more than was sent (4: the ping's answer) ends the stream.
    alice.send("<a xmlns='urn:xmpp:sm:3' h='9'/>");
    let error = alice.recv();
    assert_eq!(
        error.to_xml_in(ns::CLIENT),
        "<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
         <handled-count-too-high xmlns='urn:xmpp:sm:3' h='9' send-count='4'/></stream:error>"
    );
}

/// Reads stanzas until the message `id`, returning everything read.
fn read_until_message(c: &mut Client, id: &str) -> Vec<Element> {
    let mut read = Vec::new();
    loop {
        let el = c.recv();
        let done = el.is("message", ns::CLIENT) && el.attr("id") == Some(id);
        read.push(el);
        if done {
            return read;
        }
    }
}

#[test]
fn a_dropped_session_resumes_with_what_it_missed_exactly_once() {
    let server = server(|_| {});
    let mut alice = server.login("alice", "pw", "phone");
    let id = enable(&mut alice);
    alice.send("<presence/>");
    let mut bob = server.login("bob", "pw", "desk");
    for m in ["m1", "m2", "m3"] {
        bob.send(&chat("alice@localhost/phone", m));
    }
    // Her own presence, then three messages: four stanzas.
    let read = read_until_message(&mut alice, "m3");
    assert_eq!(read.len(), 4, "{read:?}");
    // The connection drops having handled two of them (presence, m1).
    drop(alice);
    bob.send(&chat("alice@localhost/phone", "m4"));
    bob.expect_nothing();

    let mut alice = server.authenticated("alice", "pw");
    alice.send(&format!("<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='2'/>"));
    // The server handled one stanza of hers: the presence.
    assert_eq!(
        alice.recv_xml(),
        format!("<resumed xmlns='urn:xmpp:sm:3' previd='{id}' h='1'/>")
    );
    for m in ["m2", "m3", "m4"] {
        assert_eq!(
            unsid(alice.recv_xml()),
            delivered("bob@localhost/desk", "alice@localhost/phone", m)
        );
    }
    alice.expect_nothing();
    // The same session carries on: same JID, counting on.
    bob.send(&chat("alice@localhost/phone", "m5"));
    assert_eq!(
        unsid(alice.recv_xml()),
        delivered("bob@localhost/desk", "alice@localhost/phone", "m5")
    );
    alice.send("<r xmlns='urn:xmpp:sm:3'/>");
    // Presence, and the ping of expect_nothing.
    assert_eq!(alice.recv_xml(), "<a xmlns='urn:xmpp:sm:3' h='2'/>");
    bob.expect_nothing();
}

#[test]
fn a_new_connection_takes_the_session_from_a_half_open_one_silently() {
    let server = server(|_| {});
    server.befriend("alice", "bob");
    let mut bob = server.login("bob", "pw", "desk");
    bob.announce("<presence/>");
    let mut old = server.login("alice", "pw", "phone");
    let id = enable(&mut old);
    old.send("<presence/>");
    // Her presence (reflected) and bob's, in either order.
    let mut received = 0;
    while received < 2 {
        let el = old.recv();
        assert!(el.is("presence", ns::CLIENT), "{el}");
        received += 1;
    }
    bob.recv_until(|e| e.attr("from") == Some("alice@localhost/phone"));
    // The old connection is still open, but nobody reads it any more.
    bob.send(&chat("alice@localhost/phone", "m1"));
    bob.expect_nothing();

    let mut alice = server.authenticated("alice", "pw");
    alice.send(&format!("<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='2'/>"));
    assert_eq!(
        alice.recv_xml(),
        format!("<resumed xmlns='urn:xmpp:sm:3' previd='{id}' h='1'/>")
    );
    assert_eq!(
        unsid(alice.recv_xml()),
        delivered("bob@localhost/desk", "alice@localhost/phone", "m1")
    );
    // The old connection is cut without a word; bob saw nothing go.
    loop {
        match old.next_frame() {
            None => break,
            Some(Frame::Stanza(el)) => assert!(el.is("message", ns::CLIENT), "{el}"),
            Some(other) => panic!("unexpected on the old connection: {other:?}"),
        }
    }
    bob.expect_nothing();
    alice.send("<message to='bob@localhost' type='chat' id='back'><body>back</body></message>");
    let back = bob.recv();
    assert_eq!(back.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(back.attr("id"), Some("back"));
}

#[test]
fn a_session_not_resumed_in_time_leaves_messages_offline_and_bounces_requests() {
    let server = server(|c| c.sm.resume_timeout_secs = 1);
    server.befriend("alice", "bob");
    let mut bob = server.login("bob", "pw", "desk");
    bob.announce("<presence/>");
    let mut alice = server.login("alice", "pw", "phone");
    let id = enable_for(&mut alice, "1");
    alice.send("<presence/>");
    bob.recv_until(|e| e.attr("from") == Some("alice@localhost/phone"));
    bob.send(&chat("alice@localhost", "m1"));
    read_until_message(&mut alice, "m1");
    drop(alice);
    bob.send("<iq type='get' id='v1' to='alice@localhost/phone'><query xmlns='jabber:iq:version'/></iq>");
    // The wait runs out: bob sees her go, and his request come back.
    let mut seen = bob.recv_set(2);
    seen.sort();
    assert_eq!(
        seen,
        vec![
            "<iq id='v1' type='error' from='alice@localhost/phone' to='bob@localhost/desk'>\
             <query xmlns='jabber:iq:version'/><error type='wait'>\
             <recipient-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
                .to_owned(),
            "<presence to='bob@localhost' type='unavailable' from='alice@localhost/phone'/>".to_owned(),
        ]
    );
    // Too late to resume; a new session finds the message waiting.
    let mut alice = server.authenticated("alice", "pw");
    alice.send(&format!("<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='1'/>"));
    assert_eq!(
        alice.recv_xml(),
        "<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    );
    alice.bind(Some("phone"));
    alice.send("<presence/>");
    let m1 = read_until_message(&mut alice, "m1").pop().unwrap();
    assert_eq!(m1.attr("from"), Some("bob@localhost/desk"));
    let delay = m1.get_child("delay", "urn:xmpp:delay").expect("a delay stamp");
    assert_eq!(delay.attr("from"), Some("localhost"));
    alice.expect_no_messages();
}

#[test]
fn a_session_waiting_to_be_resumed_ends_when_its_queue_is_full_and_nothing_bounces() {
    // A queue of 10,000 bytes: one sender's share is 1,250, a few messages.
    let server = server(|c| {
        c.c2s.max_stanza_bytes = 10_000;
        c.c2s.max_outbound_bytes = 10_000;
    });
    server.befriend("alice", "bob");
    let mut bob = server.login("bob", "pw", "desk");
    bob.announce("<presence/>");
    let mut alice = server.login("alice", "pw", "phone");
    let id = enable(&mut alice);
    alice.send("<presence/>");
    bob.recv_until(|e| e.attr("from") == Some("alice@localhost/phone"));
    drop(alice);
    for n in 0..40 {
        bob.send(&chat("alice@localhost/phone", &format!("m{n}")));
    }
    // Far past the share: the waiting session ends (bob sees her go), and
    // none of his messages came back.
    let gone = bob.recv();
    assert_eq!(
        gone.to_xml_in(ns::CLIENT),
        "<presence to='bob@localhost' type='unavailable' from='alice@localhost/phone'/>"
    );
    bob.expect_nothing();
    let mut alice = server.authenticated("alice", "pw");
    alice.send(&format!("<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='1'/>"));
    assert!(alice.recv().is("failed", SM));
    alice.bind(Some("phone"));
    alice.send("<presence/>");
    let mut got = Vec::new();
    while got.len() < 40 {
        let el = alice.recv();
        if el.is("message", ns::CLIENT) {
            got.push(el.attr("id").unwrap_or_default().to_owned());
        }
    }
    // Once each. Those queued before the session ended keep their order;
    // those routed while it was ending may be stored ahead of them.
    let mut sorted = got.clone();
    sorted.sort_by_key(|id| id[1..].parse::<u32>().unwrap());
    let sent: Vec<String> = (0..40).map(|n| format!("m{n}")).collect();
    assert_eq!(sorted, sent, "every message once: {got:?}");
    alice.expect_no_messages();
}

#[test]
fn a_client_that_stops_acknowledging_is_cut_off() {
    let server = server(|c| c.sm.max_unacked = 3);
    let mut alice = server.login("alice", "pw", "phone");
    enable(&mut alice);
    let mut bob = server.login("bob", "pw", "desk");
    for n in 0..6 {
        bob.send(&chat("alice@localhost/phone", &format!("m{n}")));
    }
    let error = loop {
        let el = alice.recv();
        if el.is("error", ns::STREAM) {
            break el;
        }
        assert!(el.is("message", ns::CLIENT), "{el}");
    };
    assert!(error.has_child("policy-violation", ns::STREAMS_ERRORS), "{error}");
    // Not resumable: what it never acknowledged went offline.
    let mut alice = server.login("alice", "pw", "phone");
    alice.send("<presence/>");
    read_until_message(&mut alice, "m5");
}

#[test]
fn resumption_is_refused_when_misplaced_or_not_ones_own() {
    let server = server(|_| {});
    let mut alice = server.login("alice", "pw", "phone");
    let id = enable(&mut alice);
    // Twice.
    alice.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    assert_eq!(
        alice.recv_xml(),
        "<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    );
    // After binding.
    alice.send(&format!("<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='0'/>"));
    assert_eq!(
        alice.recv_xml(),
        "<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    );
    // Someone else's id is nobody's.
    let mut bob = server.authenticated("bob", "pw");
    bob.send(&format!("<resume xmlns='urn:xmpp:sm:3' previd='{id}' h='0'/>"));
    assert_eq!(
        bob.recv_xml(),
        "<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    );
    bob.bind(Some("desk"));
    // Before binding, enabling is premature.
    let mut early = server.authenticated("alice", "pw");
    early.send("<enable xmlns='urn:xmpp:sm:3'/>");
    assert_eq!(
        early.recv_xml(),
        "<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    );
    // And alice's session was not disturbed.
    alice.expect_nothing();
}

#[test]
fn stream_management_is_offered_after_authentication() {
    let server = server(|_| {});
    let mut c = server.connect();
    let features = c.open();
    assert!(!features.has_child("sm", SM));
    c.auth_plain("alice", "pw");
    assert!(c.recv().is("success", ns::SASL));
    let features = c.open();
    assert!(features.has_child("sm", SM), "{features}");
}
