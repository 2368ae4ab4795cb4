//! Message Carbons (XEP-0280) and stanza ids (XEP-0359) over TCP: every
//! resource that enabled carbons gets copies of its account's chats with
//! the other resources, received and sent; `<private/>` and `<no-copy/>`
//! are honoured; every chat or normal message a user gets carries one
//! server-made `<stanza-id/>`, the same in its copies, and none a sender
//! forged.

mod common;

use common::{unsid, Client, TestServer};
use shoal_actors::ns;
use shoal_actors::xml::Element;

const SID: &str = "urn:xmpp:sid:0";

fn server() -> TestServer {
    let server = TestServer::start();
    for u in ["romeo", "juliet"] {
        server.add_user(u, u);
    }
    server
}

/// A resource with available presence (priority 0).
fn online(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut c = server.login(user, user, resource);
    c.send("<presence/>");
    c.sync();
    c
}

/// Enables carbons as XEP-0280 §4 shows it: no `to`.
fn enable(c: &mut Client) {
    c.send("<iq type='set' id='on'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
    let reply = c.recv_until(|e| e.attr("id") == Some("on"));
    assert_eq!(
        reply.to_xml_in(ns::CLIENT),
        format!("<iq id='on' type='result' to='{}'/>", c.jid)
    );
}

/// The next message (presence may come before), serialised, its stanza
/// ids normalised.
fn message(c: &mut Client) -> String {
    unsid(c.recv_until(|e| e.name() == "message").to_xml_in(ns::CLIENT))
}

/// The next message, and the id of its `<stanza-id/>` (inside a carbon's
/// `<forwarded/>` for a copy).
fn message_and_id(c: &mut Client) -> (String, String) {
    let el = c.recv_until(|e| e.name() == "message");
    let mut m: &Element = &el;
    while let Some(inner) = m
        .children()
        .find(|c| c.ns() == "urn:xmpp:carbons:2")
        .and_then(|w| w.children().next())
        .and_then(|f| f.children().next())
    {
        m = inner;
    }
    let id = m
        .get_child("stanza-id", SID)
        .and_then(|s| s.attr("id"))
        .unwrap_or_default();
    (unsid(el.to_xml_in(ns::CLIENT)), id.to_owned())
}

/// Juliet on the balcony and in the hall, both with carbons, and in the
/// attic without; Romeo in the orchard.
fn household(server: &TestServer) -> (Client, Client, Client, Client) {
    let romeo = online(server, "romeo", "orchard");
    let mut balcony = online(server, "juliet", "balcony");
    enable(&mut balcony);
    let mut hall = online(server, "juliet", "hall");
    enable(&mut hall);
    let attic = online(server, "juliet", "attic");
    (romeo, balcony, hall, attic)
}

fn received(to: &str, original: &str) -> String {
    format!(
        "<message from='juliet@localhost' to='juliet@localhost/{to}' type='chat'>\
         <received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>{original}\
         </forwarded></received></message>"
    )
}

fn sent(to: &str, original: &str) -> String {
    format!(
        "<message from='juliet@localhost' to='juliet@localhost/{to}' type='chat'>\
         <sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>{original}\
         </forwarded></sent></message>"
    )
}

#[test]
fn a_chat_to_one_resource_is_copied_to_the_others_that_asked() {
    let server = server();
    let (mut romeo, mut balcony, mut hall, mut attic) = household(&server);
    romeo.send("<message to='juliet@localhost/balcony' type='chat' id='m1'><body>Wherefore</body></message>");
    let (got, id) = message_and_id(&mut balcony);
    assert_eq!(
        got,
        "<message to='juliet@localhost/balcony' type='chat' id='m1' from='romeo@localhost/orchard'>\
         <body>Wherefore</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/></message>"
    );
    let (copy, copy_id) = message_and_id(&mut hall);
    assert_eq!(
        copy,
        received(
            "hall",
            "<message xmlns='jabber:client' to='juliet@localhost/balcony' type='chat' id='m1' \
             from='romeo@localhost/orchard'><body>Wherefore</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/></message>"
        )
    );
    // One message, one id, wherever it is seen.
    assert_eq!(id, copy_id);
    attic.expect_no_messages();
    balcony.expect_no_messages();
    hall.expect_no_messages();
    romeo.expect_no_messages();
}

#[test]
fn a_chat_to_the_bare_jid_reaches_all_of_top_priority_without_copies() {
    let server = server();
    let (mut romeo, mut balcony, mut hall, mut attic) = household(&server);
    romeo.send("<message to='juliet@localhost' type='chat' id='b'><body>Juliet!</body></message>");
    let mut ids = Vec::new();
    for c in [&mut balcony, &mut hall, &mut attic] {
        let (got, id) = message_and_id(c);
        assert_eq!(
            got,
            "<message to='juliet@localhost' type='chat' id='b' from='romeo@localhost/orchard'>\
             <body>Juliet!</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/></message>"
        );
        ids.push(id);
        c.expect_no_messages();
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");

    // A lower priority there: the hall gets a copy of what it did not get.
    hall.send("<presence><priority>-1</priority></presence>");
    hall.sync();
    balcony.sync();
    romeo.send("<message to='juliet@localhost' type='chat' id='c'><body>Again</body></message>");
    assert_eq!(
        message(&mut balcony),
        "<message to='juliet@localhost' type='chat' id='c' from='romeo@localhost/orchard'>\
         <body>Again</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/></message>"
    );
    assert_eq!(
        message(&mut hall),
        received(
            "hall",
            "<message xmlns='jabber:client' to='juliet@localhost' type='chat' id='c' from='romeo@localhost/orchard'>\
             <body>Again</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/></message>"
        )
    );
    hall.expect_no_messages();
}

#[test]
fn a_chat_sent_is_copied_to_the_senders_other_resources_that_asked() {
    let server = server();
    let (mut romeo, mut balcony, mut hall, mut attic) = household(&server);
    balcony.send("<message to='romeo@localhost/orchard' type='chat' id='s1'><body>Ay me</body></message>");
    assert_eq!(
        message(&mut romeo),
        "<message to='romeo@localhost/orchard' type='chat' id='s1' from='juliet@localhost/balcony'>\
         <body>Ay me</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='romeo@localhost'/></message>"
    );
    assert_eq!(
        message(&mut hall),
        sent(
            "hall",
            "<message xmlns='jabber:client' to='romeo@localhost/orchard' type='chat' id='s1' \
             from='juliet@localhost/balcony'><body>Ay me</body></message>"
        )
    );
    // Copied whatever the recipient: to another domain too, which bounces.
    attic.send("<message to='nurse@elsewhere.example' type='chat' id='s2'><body>Go</body></message>");
    assert_eq!(
        message(&mut balcony),
        sent(
            "balcony",
            "<message xmlns='jabber:client' to='nurse@elsewhere.example' type='chat' id='s2' \
             from='juliet@localhost/attic'><body>Go</body></message>"
        )
    );
    assert_eq!(
        message(&mut hall),
        sent(
            "hall",
            "<message xmlns='jabber:client' to='nurse@elsewhere.example' type='chat' id='s2' \
             from='juliet@localhost/attic'><body>Go</body></message>"
        )
    );
    assert!(message(&mut attic).contains("<remote-server-not-found"));
    // The sender never gets its own copy; the attic asked for none.
    for c in [&mut balcony, &mut hall, &mut attic, &mut romeo] {
        c.expect_no_messages();
    }
}

#[test]
fn only_chats_are_copied_and_not_when_private_or_hinted() {
    let server = server();
    let (mut romeo, mut balcony, mut hall, _attic) = household(&server);
    // Private: delivered without the element, which is for the servers.
    romeo.send(
        "<message to='juliet@localhost/balcony' type='chat' id='p1'><body>Hush</body>\
         <private xmlns='urn:xmpp:carbons:2'/></message>",
    );
    assert_eq!(
        message(&mut balcony),
        "<message to='juliet@localhost/balcony' type='chat' id='p1' from='romeo@localhost/orchard'>\
         <body>Hush</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/></message>"
    );
    balcony.send(
        "<message to='romeo@localhost/orchard' type='chat' id='p2'><body>Hush</body>\
         <private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/></message>",
    );
    assert_eq!(
        message(&mut romeo),
        "<message to='romeo@localhost/orchard' type='chat' id='p2' from='juliet@localhost/balcony'>\
         <body>Hush</body><no-copy xmlns='urn:xmpp:hints'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='romeo@localhost'/></message>"
    );
    // The hint alone, both ways: kept, and not copied.
    romeo.send(
        "<message to='juliet@localhost/balcony' type='chat' id='h1'><body>Soft</body>\
         <no-copy xmlns='urn:xmpp:hints'/></message>",
    );
    assert_eq!(
        message(&mut balcony),
        "<message to='juliet@localhost/balcony' type='chat' id='h1' from='romeo@localhost/orchard'>\
         <body>Soft</body><no-copy xmlns='urn:xmpp:hints'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/></message>"
    );
    balcony.send(
        "<message to='romeo@localhost/orchard' type='chat' id='h2'><body>Soft</body>\
         <no-copy xmlns='urn:xmpp:hints'/></message>",
    );
    assert!(message(&mut romeo).contains("id='h2'"));
    // Not a chat: not copied (§6 leaves `normal` to the server).
    romeo.send("<message to='juliet@localhost/balcony' id='n1'><body>Plain</body></message>");
    assert_eq!(
        message(&mut balcony),
        "<message to='juliet@localhost/balcony' id='n1' from='romeo@localhost/orchard'>\
         <body>Plain</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/></message>"
    );
    // Nor a MUC private message.
    balcony.send(
        "<message to='romeo@localhost/orchard' type='chat' id='x1'><body>Mask</body>\
         <x xmlns='http://jabber.org/protocol/muc#user'/></message>",
    );
    assert!(message(&mut romeo).contains("id='x1'"));
    hall.expect_no_messages();
    balcony.expect_no_messages();
}

#[test]
fn disable_stops_the_copies_and_the_server_advertises_carbons() {
    let server = server();
    let (mut romeo, mut balcony, mut hall, _attic) = household(&server);
    hall.send("<iq type='set' id='off' to='localhost'><disable xmlns='urn:xmpp:carbons:2'/></iq>");
    assert_eq!(
        hall.recv_until(|e| e.attr("id") == Some("off")).to_xml_in(ns::CLIENT),
        "<iq id='off' type='result' from='localhost' to='juliet@localhost/hall'/>"
    );
    romeo.send("<message to='juliet@localhost/balcony' type='chat' id='d'><body>Still?</body></message>");
    assert!(message(&mut balcony).contains("id='d'"));
    hall.expect_no_messages();
    // Again, and asked of the server this time: copies again.
    hall.send("<iq type='set' id='on2' to='localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
    hall.recv_until(|e| e.attr("id") == Some("on2"));
    romeo.send("<message to='juliet@localhost/balcony' type='chat' id='e'><body>Yes</body></message>");
    assert!(message(&mut balcony).contains("id='e'"));
    assert!(message(&mut hall).starts_with("<message from='juliet@localhost' to='juliet@localhost/hall'"));

    // Only for oneself, and only with a set.
    romeo.send("<iq type='set' id='x' to='juliet@localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
    assert_eq!(
        romeo.recv_until(|e| e.attr("id") == Some("x")).to_xml_in(ns::CLIENT),
        "<iq id='x' type='error' from='juliet@localhost' to='romeo@localhost/orchard'>\
         <enable xmlns='urn:xmpp:carbons:2'/><error type='cancel'>\
         <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    );
    romeo.send("<iq type='get' id='g' to='localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
    let reply = romeo.recv_until(|e| e.attr("id") == Some("g")).to_xml_in(ns::CLIENT);
    assert!(
        reply.contains("type='error'") && reply.contains("<bad-request"),
        "{reply}"
    );

    romeo.send("<iq type='get' id='i' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let info = romeo.recv_until(|e| e.attr("id") == Some("i")).to_xml_in(ns::CLIENT);
    assert!(info.contains("<feature var='urn:xmpp:carbons:2'/>"), "{info}");
    assert!(!info.contains("urn:xmpp:sid:0"), "{info}");
    romeo.send(
        "<iq type='get' id='a' to='juliet@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    let info = romeo.recv_until(|e| e.attr("id") == Some("a")).to_xml_in(ns::CLIENT);
    assert!(info.contains("<feature var='urn:xmpp:sid:0'/>"), "{info}");
    assert!(!info.contains("urn:xmpp:carbons:2"), "{info}");
}

#[test]
fn forged_stanza_ids_are_replaced_and_others_pass() {
    let server = server();
    let mut romeo = online(&server, "romeo", "orchard");
    let mut juliet = online(&server, "juliet", "balcony");
    romeo.send(
        "<message to='juliet@localhost/balcony' type='chat' id='f'><body>Trust me</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='Juliet@localhost'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' by='romeo@localhost' id='mine'/>\
         <origin-id xmlns='urn:xmpp:sid:0' id='o1'/></message>",
    );
    assert_eq!(
        message(&mut juliet),
        "<message to='juliet@localhost/balcony' type='chat' id='f' from='romeo@localhost/orchard'>\
         <body>Trust me</body><stanza-id xmlns='urn:xmpp:sid:0' by='romeo@localhost' id='mine'/>\
         <origin-id xmlns='urn:xmpp:sid:0' id='o1'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/></message>"
    );
    // Headlines get no id, and lose a forged one all the same.
    romeo.send(
        "<message to='juliet@localhost/balcony' type='headline' id='h'><body>News</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='juliet@localhost'/></message>",
    );
    assert_eq!(
        message(&mut juliet),
        "<message to='juliet@localhost/balcony' type='headline' id='h' from='romeo@localhost/orchard'>\
         <body>News</body></message>"
    );
}
