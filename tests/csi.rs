//! XEP-0352 Client State Indication: an inactive client's contacts'
//! presence waits, the latest per sender, and goes out in one batch when
//! the client is active again or something that matters arrives, ahead of
//! it.

mod common;

use common::{unsid, Client, TestServer};
use shoal_actors::ns;

fn server() -> TestServer {
    let server = TestServer::start();
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, "pw");
    }
    server.befriend("alice", "bob");
    server.befriend("alice", "carol");
    server
}

/// Logs in with initial presence, and reads until its own presence is
/// reflected (the contacts' presence before it is dropped).
fn online(server: &TestServer, user: &str) -> Client {
    let mut c = server.login(user, "pw", "r");
    c.announce("<presence/>");
    c
}

#[test]
fn presence_waits_for_an_inactive_client_the_latest_per_sender() {
    let server = server();
    let mut alice = online(&server, "alice");
    let features = {
        let mut c = server.connect();
        c.open();
        c.auth_plain("carol", "pw");
        c.recv();
        c.open()
    };
    assert!(features.has_child("csi", "urn:xmpp:csi:0"), "{features}");
    alice.send("<inactive xmlns='urn:xmpp:csi:0'/>");
    alice.sync();
    let mut bob = online(&server, "bob");
    bob.send("<presence><show>away</show></presence>");
    bob.sync();
    let mut carol = online(&server, "carol");
    carol.sync();
    alice.send("<active xmlns='urn:xmpp:csi:0'/>");
    // Bob's second presence replaced his first; carol's waited behind it.
    let batch = alice.sync();
    let batch: Vec<String> = batch.iter().map(|e| e.to_xml_in(ns::CLIENT)).collect();
    assert_eq!(
        batch,
        vec![
            "<presence to='alice@localhost' from='bob@localhost/r'><show>away</show></presence>",
            "<presence to='alice@localhost' from='carol@localhost/r'/>",
        ]
    );
    alice.expect_nothing();
}

#[test]
fn a_message_brings_the_waiting_presence_ahead_of_it() {
    let server = server();
    let mut alice = online(&server, "alice");
    alice.send("<inactive xmlns='urn:xmpp:csi:0'/>");
    alice.sync();
    let mut bob = online(&server, "bob");
    bob.send("<message to='alice@localhost' type='chat' id='m1'><body>hi</body></message>");
    assert_eq!(
        alice.recv_xml(),
        "<presence to='alice@localhost' from='bob@localhost/r'/>"
    );
    assert_eq!(
        unsid(alice.recv_xml()),
        "<message to='alice@localhost' type='chat' id='m1' from='bob@localhost/r'><body>hi</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='alice@localhost'/></message>"
    );
    // Still inactive: the next presence waits again.
    bob.send("<presence><show>dnd</show></presence>");
    bob.sync();
    alice.send("<active xmlns='urn:xmpp:csi:0'/>");
    assert_eq!(
        alice.recv_xml(),
        "<presence to='alice@localhost' from='bob@localhost/r'><show>dnd</show></presence>"
    );
}
