//! The login throttle, end to end: a guesser on another address waits for
//! its own attempts and never keeps the account's owner out.

mod common;

use common::{Client, TestServer};
use shoal_actors::ns;
use shoal_actors::xml::Element;

const THROTTLED: &str = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>\
     <text xml:lang='en'>too many failed attempts; try again later</text></failure>";

/// One PLAIN login from `from`, on a connection of its own (`[auth]
/// max_failures` would end a shared one); returns the server's answer.
fn attempt(server: &TestServer, from: &str, user: &str, password: &str) -> Element {
    let mut c = Client::connect_from(server.addr, from.parse().unwrap());
    c.open();
    c.auth_plain(user, password);
    c.recv()
}

#[test]
fn a_guesser_on_another_address_never_keeps_the_owner_out() {
    let server = TestServer::start();
    server.add_user("admin", "secret");
    server.add_user("bob", "b");
    // The measurement: ten wrong passwords from 127.0.0.2. The
    // first ones are checked; the rest are refused while the wait lasts
    // (or, on a machine slow enough to outlast it, checked and refused).
    for n in 0..10 {
        let reply = attempt(&server, "127.0.0.2", "admin", &format!("guess{n}"));
        assert!(
            reply.is("failure", ns::SASL) && reply.has_child("not-authorized", ns::SASL),
            "{reply}"
        );
    }
    // The guesser must wait, even with the right password. No sleep: the
    // wait (at least 1 s, doubling with each checked failure) outlasts this
    // one round trip.
    let refused = attempt(&server, "127.0.0.2", "admin", "secret");
    assert_eq!(refused.to_xml_in(ns::CLIENT), THROTTLED);
    // The owner on 127.0.0.1 gets in at once.
    let owner = attempt(&server, "127.0.0.1", "admin", "secret");
    assert!(owner.is("success", ns::SASL), "{owner}");
    // So does another account from the guesser's address: ten failures are
    // within the network's own allowance.
    let bob = attempt(&server, "127.0.0.2", "bob", "b");
    assert!(bob.is("success", ns::SASL), "{bob}");
}
