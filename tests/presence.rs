//! Presence fan-out (RFC 6121 §4) over TCP: broadcasts to every available
//! resource of every follower and to no one else, probes, unavailable on
//! close and on a dropped connection, silence for sessions that never sent
//! presence, directed presence, XEP-0153 avatar hashes and the bind
//! extension.

mod common;

use common::{sorted, Client, TestServer};

fn available(server: &TestServer, user: &str, resource: &str, presence: &str) -> Client {
    let mut c = server.login(user, user, resource);
    c.send(presence);
    let me = format!("{user}@localhost/{resource}");
    c.recv_until(|e| {
        e.name() == "presence"
            && e.attr("from") == Some(me.as_str())
            && e.attr("to") == Some(&me[..me.find('/').unwrap()])
    });
    c
}

fn server_with(users: &[&str]) -> TestServer {
    let server = TestServer::start();
    for u in users {
        server.add_user(u, u);
    }
    server
}

/// Romeo and Juliet, subscribed both ways, online; each has seen the other.
fn friends_online(server: &TestServer) -> (Client, Client) {
    server.befriend("juliet", "romeo");
    let mut romeo = available(server, "romeo", "orchard", "<presence/>");
    let mut juliet = available(server, "juliet", "balcony", "<presence/>");
    romeo.recv_until(|e| e.attr("from") == Some("juliet@localhost/balcony"));
    assert_eq!(
        juliet.recv_xml(),
        "<presence to='juliet@localhost/balcony' from='romeo@localhost/orchard'/>"
    );
    (romeo, juliet)
}

#[test]
fn initial_presence_reaches_every_available_resource_of_every_follower_only() {
    let server = server_with(&["juliet", "romeo", "nurse", "tybalt"]);
    server.befriend("juliet", "romeo");
    server.befriend("juliet", "nurse");
    let mut orchard = available(&server, "romeo", "orchard", "<presence/>");
    let mut hall = available(&server, "romeo", "hall", "<presence><priority>-1</priority></presence>");
    // Resources of one account see each other come online.
    assert_eq!(
        hall.recv_xml(),
        "<presence to='romeo@localhost/hall' from='romeo@localhost/orchard'/>"
    );
    assert_eq!(
        orchard.recv_xml(),
        "<presence to='romeo@localhost' from='romeo@localhost/hall'><priority>-1</priority></presence>"
    );
    let mut crypt = server.login("romeo", "romeo", "crypt"); // bound, never available
    let mut nurse = available(&server, "nurse", "kitchen", "<presence><show>dnd</show></presence>");
    let mut tybalt = available(&server, "tybalt", "street", "<presence/>");

    let mut juliet = server.login("juliet", "juliet", "balcony");
    juliet.send("<presence><show>away</show><status>Wherefore art thou?</status><priority>2</priority></presence>");
    let body = "<show>away</show><status>Wherefore art thou?</status><priority>2</priority></presence>";
    assert_eq!(
        orchard.recv_xml(),
        format!("<presence to='romeo@localhost' from='juliet@localhost/balcony'>{body}")
    );
    assert_eq!(
        hall.recv_xml(),
        format!("<presence to='romeo@localhost' from='juliet@localhost/balcony'>{body}")
    );
    assert_eq!(
        nurse.recv_xml(),
        format!("<presence to='nurse@localhost' from='juliet@localhost/balcony'>{body}")
    );
    // Her own echo, and the probe answers: every available resource of
    // everyone she follows, with their show and priority.
    assert_eq!(
        juliet.recv_set(4),
        sorted([
            format!("<presence to='juliet@localhost' from='juliet@localhost/balcony'>{body}"),
            "<presence to='juliet@localhost/balcony' from='romeo@localhost/orchard'/>".into(),
            "<presence to='juliet@localhost/balcony' from='romeo@localhost/hall'><priority>-1</priority></presence>"
                .into(),
            "<presence to='juliet@localhost/balcony' from='nurse@localhost/kitchen'><show>dnd</show></presence>".into(),
        ])
    );
    crypt.expect_nothing();
    tybalt.expect_nothing();
    juliet.expect_nothing();
}

#[test]
fn unavailable_on_clean_close_and_on_a_dropped_connection() {
    let server = server_with(&["juliet", "romeo"]);
    let (mut romeo, mut juliet) = friends_online(&server);

    // Explicit unavailable, then available again.
    juliet.send("<presence type='unavailable'><status>gone to bed</status></presence>");
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost' type='unavailable' from='juliet@localhost/balcony'><status>gone to bed</status></presence>"
    );
    juliet.send("<presence/>");
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost' from='juliet@localhost/balcony'/>"
    );

    // A clean close.
    juliet.send("</stream:stream>");
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost' type='unavailable' from='juliet@localhost/balcony'/>"
    );

    // A dropped connection (no close tag, the socket just goes away).
    let juliet = available(&server, "juliet", "window", "<presence/>");
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost' from='juliet@localhost/window'/>"
    );
    drop(juliet);
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost' type='unavailable' from='juliet@localhost/window'/>"
    );

    // Once offline, messages to her bare JID bounce.
    romeo.send("<message to='juliet@localhost' type='chat' id='x'><body>?</body></message>");
    assert_eq!(romeo.recv().attr("type"), Some("error"));
}

#[test]
fn a_session_that_never_sent_presence_leaves_silently() {
    let server = server_with(&["juliet", "romeo"]);
    server.befriend("juliet", "romeo");
    let mut romeo = available(&server, "romeo", "orchard", "<presence/>");
    let mut juliet = server.login("juliet", "juliet", "balcony");
    juliet.send("</stream:stream>");
    assert_eq!(juliet.next_frame(), Some(shoal_actors::codec::Frame::StreamClose));
    let quiet = server.login("juliet", "juliet", "window");
    drop(quiet);
    romeo.expect_nothing();
}

#[test]
fn directed_presence_recipients_get_unavailable_at_logout() {
    let server = server_with(&["juliet", "friar"]);
    let mut friar = available(&server, "friar", "cell", "<presence/>");
    let mut juliet = available(&server, "juliet", "balcony", "<presence/>");
    // Not a contact: only what she sends him directly.
    juliet.send("<presence to='friar@localhost'><status>I need a plan</status></presence>");
    assert_eq!(
        friar.recv_xml(),
        "<presence to='friar@localhost' from='juliet@localhost/balcony'><status>I need a plan</status></presence>"
    );
    juliet.send("<presence><show>away</show></presence>");
    juliet.sync();
    friar.expect_nothing();
    drop(juliet);
    assert_eq!(
        friar.recv_xml(),
        "<presence to='friar@localhost' type='unavailable' from='juliet@localhost/balcony'/>"
    );
}

#[test]
fn avatar_hash_from_the_vcard_and_the_bind_extension() {
    let server = server_with(&["juliet", "romeo"]);
    let (mut romeo, mut juliet) = friends_online(&server);

    // The bind extension before any profile: empty elements.
    let mut c = server.authenticated("juliet", "juliet");
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>ext</resource><extval xmlns='urn:xmpp:shoal:bind-extval:0'/></bind></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='b' type='result'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>juliet@localhost/ext</jid>\
         <nick xmlns='http://jabber.org/protocol/nick'/><photo-url xmlns='urn:xmpp:shoal:bind-extval:0'/></bind></iq>"
    );

    let vcard = "<vCard xmlns='vcard-temp'><NICKNAME>Jules</NICKNAME><PHOTO><TYPE>image/png</TYPE>\
                 <BINVAL>aGVsbG8=</BINVAL><EXTVAL>https://example.com/j.png</EXTVAL></PHOTO></vCard>";
    juliet.send(&format!("<iq type='set' id='v'>{vcard}</iq>"));
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='v' type='result' to='juliet@localhost/balcony'/>"
    );
    romeo.send("<iq type='get' id='g' to='juliet@localhost'><vCard xmlns='vcard-temp'/></iq>");
    assert_eq!(
        romeo.recv_xml(),
        format!("<iq id='g' type='result' from='juliet@localhost' to='romeo@localhost/orchard'>{vcard}</iq>")
    );
    // Someone else cannot set it.
    romeo.send(&format!("<iq type='set' id='s' to='juliet@localhost'>{vcard}</iq>"));
    assert_eq!(romeo.recv().attr("type"), Some("error"));

    // The SHA-1 of the photo goes into her presence (XEP-0153)...
    juliet.send("<presence><status>new picture</status></presence>");
    let hash = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
    assert_eq!(
        romeo.recv_xml(),
        format!(
            "<presence to='romeo@localhost' from='juliet@localhost/balcony'><status>new picture</status>\
             <x xmlns='vcard-temp:x:update'><photo>{hash}</photo></x></presence>"
        )
    );
    // ...unless the client put one there itself.
    juliet.send("<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>");
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost' from='juliet@localhost/balcony'><x xmlns='vcard-temp:x:update'><photo/></x></presence>"
    );

    // The bind extension now carries the nickname and photo URL.
    let mut c = server.authenticated("juliet", "juliet");
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><extval xmlns='urn:xmpp:shoal:bind-extval:0'/></bind></iq>");
    let bind = c.recv().to_xml_in(shoal_actors::ns::CLIENT);
    assert!(
        bind.ends_with(
            "<nick xmlns='http://jabber.org/protocol/nick'>Jules</nick>\
             <photo-url xmlns='urn:xmpp:shoal:bind-extval:0'>https://example.com/j.png</photo-url></bind></iq>"
        ),
        "{bind}"
    );
}
