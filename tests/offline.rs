//! Offline messages (XEP-0160, RFC 6121 §8.5.2.2.1) over TCP: kept for a
//! user with no available resource, delivered in order with a delay stamp
//! (XEP-0203) at the next initial presence and only then, within a quota.

mod common;

use common::{unsid, Client, TestServer};
use shoal_actors::ns;

fn server(edit: impl FnOnce(&mut shoal::Config)) -> TestServer {
    let server = TestServer::with_config(edit);
    for u in ["romeo", "juliet"] {
        server.add_user(u, u);
    }
    server
}

/// The next message delivered (the client's own presence may come before
/// or between), with its delay stamp replaced by STAMP and its stanza id
/// (XEP-0359) by SID.
fn unstamped(c: &mut Client) -> String {
    let xml = unsid(c.recv_until(|e| e.name() == "message").to_xml_in(ns::CLIENT));
    let Some(at) = xml.find("stamp='") else { return xml };
    let end = xml[at + 7..].find('\'').unwrap() + at + 7;
    let stamp = &xml[at + 7..end];
    assert_eq!(stamp.len(), 20, "{stamp}");
    assert!(stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T', "{stamp}");
    format!("{}STAMP{}", &xml[..at + 7], &xml[end..])
}

#[test]
fn messages_for_an_offline_user_wait_and_arrive_in_order_stamped() {
    let server = server(|_| {});
    let mut romeo = server.login("romeo", "romeo", "orchard");
    for (i, kind) in ["chat", "normal", "chat"].iter().enumerate() {
        romeo.send(&format!(
            "<message to='juliet@localhost' type='{kind}' id='m{i}'><body>{i}</body></message>"
        ));
    }
    // Nothing to keep in a chat state alone, nor in a headline.
    romeo.send(
        "<message to='juliet@localhost' type='chat' id='cs'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    );
    romeo.send("<message to='juliet@localhost' type='headline' id='h'><body>news</body></message>");
    let bounced = romeo.recv_xml();
    assert!(
        bounced.starts_with("<message id='cs' type='error'") && bounced.contains("<service-unavailable"),
        "{bounced}"
    );
    romeo.expect_nothing();
    // Bound but not yet available: nothing yet.
    let mut juliet = server.login("juliet", "juliet", "balcony");
    juliet.expect_nothing();
    juliet.send("<presence/>");
    for (i, kind) in ["chat", "normal", "chat"].iter().enumerate() {
        assert_eq!(
            unstamped(&mut juliet),
            format!(
                "<message to='juliet@localhost' type='{kind}' id='m{i}' from='romeo@localhost/orchard'>\
                 <body>{i}</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/>\
                 <delay xmlns='urn:xmpp:delay' from='localhost' stamp='STAMP'/></message>"
            )
        );
    }
    let rest: Vec<String> = juliet.sync().iter().map(|e| e.name().to_owned()).collect();
    assert!(rest.iter().all(|n| n == "presence"), "{rest:?}");
    // Delivered once: not again at the next login.
    drop(juliet);
    let mut again = server.login("juliet", "juliet", "hall");
    again.send("<presence/>");
    again.expect_no_messages();
}

#[test]
fn past_the_quota_the_sender_is_told() {
    let server = server(|c| c.offline.max_messages = 2);
    let mut romeo = server.login("romeo", "romeo", "orchard");
    for i in 0..3 {
        romeo.send(&format!(
            "<message to='juliet@localhost' type='chat' id='q{i}'><body>{i}</body></message>"
        ));
    }
    let reply = romeo.recv();
    assert_eq!(reply.attr("id"), Some("q2"), "{reply}");
    assert!(reply.to_xml_in(ns::CLIENT).contains("<service-unavailable"), "{reply}");
    romeo.expect_nothing();
    // Nobody at all: the same error.
    romeo.send("<message to='nobody@localhost' type='chat' id='n'><body>?</body></message>");
    let reply = romeo.recv();
    assert_eq!(reply.attr("id"), Some("n"));
    assert!(reply.to_xml_in(ns::CLIENT).contains("<service-unavailable"), "{reply}");
}

#[test]
fn stored_messages_survive_a_restart() {
    let mut server = server(|_| {});
    let mut romeo = server.login("romeo", "romeo", "orchard");
    romeo.send("<message to='juliet@localhost' type='chat' id='r'><body>wait for me</body></message>");
    romeo.expect_nothing();
    drop(romeo);
    // Stored without a word to the sender: wait until the database has it.
    let store = shoal::store::SqliteStore::open(&server.db).unwrap();
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    while store.offline_messages(&common::account("juliet")).unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the message was never stored");
        std::thread::yield_now();
    }
    server.restart();
    let mut juliet = server.login("juliet", "juliet", "balcony");
    juliet.send("<presence/>");
    assert_eq!(
        unstamped(&mut juliet),
        "<message to='juliet@localhost' type='chat' id='r' from='romeo@localhost/orchard'>\
         <body>wait for me</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/>\
         <delay xmlns='urn:xmpp:delay' from='localhost' stamp='STAMP'/></message>"
    );
}
