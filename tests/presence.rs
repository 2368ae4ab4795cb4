//! Presence fan-out (RFC 6121 §4) over TCP: broadcasts to every available
//! resource of every follower and to no one else, probes, unavailable on
//! close and on a dropped connection, silence for sessions that never sent
//! presence, directed presence, XEP-0153 avatar hashes and the bind
//! extension.

mod common;

use common::{sorted, Client, TestServer};

fn available(server: &TestServer, user: &str, resource: &str, presence: &str) -> Client {
    let mut c = server.login(user, user, resource);
    c.announce(presence);
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

    // Once offline, messages to her bare JID wait for her (XEP-0160).
    romeo.send("<message to='juliet@localhost' type='chat' id='x'><body>?</body></message>");
    romeo.expect_nothing();
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
    // Her presence goes out again with the photo's SHA-1 (XEP-0153), to
    // her followers and herself, before the result.
    let hash = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
    let update = format!("<x xmlns='vcard-temp:x:update'><photo>{hash}</photo></x>");
    assert_eq!(
        juliet.recv_xml(),
        format!("<presence to='juliet@localhost' from='juliet@localhost/balcony'>{update}</presence>")
    );
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='v' type='result' to='juliet@localhost/balcony'/>"
    );
    assert_eq!(
        romeo.recv_xml(),
        format!("<presence to='romeo@localhost' from='juliet@localhost/balcony'>{update}</presence>")
    );
    romeo.send("<iq type='get' id='g' to='juliet@localhost'><vCard xmlns='vcard-temp'/></iq>");
    assert_eq!(
        romeo.recv_xml(),
        format!("<iq id='g' type='result' from='juliet@localhost' to='romeo@localhost/orchard'>{vcard}</iq>")
    );
    // Someone else cannot set it.
    romeo.send(&format!("<iq type='set' id='s' to='juliet@localhost'>{vcard}</iq>"));
    assert_eq!(romeo.recv().attr("type"), Some("error"));

    // The SHA-1 of the photo goes into her later presence too...
    juliet.send("<presence><status>new picture</status></presence>");
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

/// XEP-0153 with ejabberd's mod_vcard_xupdate behaviour: a vCard set that
/// changes the photo sends each available session's last presence again,
/// with the new hash in place of the client's own `<x/>`, to the followers
/// and the user's resources; probes answer with it from then on. The same
/// photo again changes nothing; no photo is an empty `<photo/>`.
#[test]
fn a_new_vcard_photo_sends_each_sessions_presence_again() {
    let server = server_with(&["juliet", "romeo"]);
    server.befriend("juliet", "romeo");
    let mut romeo = available(&server, "romeo", "orchard", "<presence/>");
    let old = "<x xmlns='vcard-temp:x:update'><photo>0000000000000000000000000000000000000000</photo></x>";
    let mut balcony = available(
        &server,
        "juliet",
        "balcony",
        &format!("<presence><show>away</show>{old}</presence>"),
    );
    let mut chamber = available(&server, "juliet", "chamber", "<presence/>");
    for c in [&mut romeo, &mut balcony, &mut chamber] {
        c.sync();
    }
    // Each session's presence, addressed to `to`, with `photo` in it.
    let both = |to: &str, photo: &str| {
        let update = format!("<x xmlns='vcard-temp:x:update'>{photo}</x>");
        sorted([
            format!("<presence to='{to}' from='juliet@localhost/balcony'><show>away</show>{update}</presence>"),
            format!("<presence to='{to}' from='juliet@localhost/chamber'>{update}</presence>"),
        ])
    };
    let vcard = |photo: &str| format!("<iq type='set' id='v'><vCard xmlns='vcard-temp'>{photo}</vCard></iq>");
    let result = "<iq id='v' type='result' to='juliet@localhost/balcony'/>";

    let hello = "<PHOTO><TYPE>image/png</TYPE><BINVAL>aGVsbG8=</BINVAL></PHOTO>";
    let hash = "<photo>aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d</photo>";
    balcony.send(&vcard(hello));
    assert_eq!(balcony.recv_set(2), both("juliet@localhost", hash));
    assert_eq!(balcony.recv_xml(), result);
    assert_eq!(chamber.recv_set(2), both("juliet@localhost", hash));
    assert_eq!(romeo.recv_set(2), both("romeo@localhost", hash));

    // The sessions' last presence has it now.
    romeo.send("<presence type='probe' to='juliet@localhost'/>");
    assert_eq!(romeo.recv_set(2), both("romeo@localhost/orchard", hash));

    // The same photo (with a nickname now): nothing to tell.
    balcony.send(&vcard(&format!("<NICKNAME>Jules</NICKNAME>{hello}")));
    assert_eq!(balcony.recv_xml(), result);
    romeo.expect_nothing();
    chamber.expect_nothing();

    // No photo any more: an empty <photo/> (XEP-0153 §4.1).
    balcony.send(&vcard(""));
    assert_eq!(balcony.recv_set(2), both("juliet@localhost", "<photo/>"));
    assert_eq!(balcony.recv_xml(), result);
    assert_eq!(romeo.recv_set(2), both("romeo@localhost", "<photo/>"));
    assert_eq!(chamber.recv_set(2), both("juliet@localhost", "<photo/>"));
}

/// RFC 6121 §4.3.2: the server answers a client's probe, to a bare or a
/// full JID, and the probed user never sees it. A follower gets the
/// presence of each available resource (or unavailable when there is
/// none); anyone else gets `unsubscribed`, and no presence.
#[test]
fn probes_are_answered_by_the_server_and_reveal_presence_only_to_followers() {
    let server = server_with(&["juliet", "romeo", "tybalt"]);
    let (mut romeo, mut juliet) = friends_online(&server);
    let mut tybalt = server.login("tybalt", "tybalt", "street");
    romeo.send("<presence type='probe' to='juliet@localhost'/>");
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost/orchard' from='juliet@localhost/balcony'/>"
    );
    romeo.send("<presence type='probe' to='juliet@localhost/balcony'/>");
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost/orchard' from='juliet@localhost/balcony'/>"
    );
    for to in ["juliet@localhost", "juliet@localhost/balcony", "nobody@localhost"] {
        tybalt.send(&format!("<presence type='probe' to='{to}'/>"));
        let bare = &to[..to.find('/').unwrap_or(to.len())];
        assert_eq!(
            tybalt.recv_xml(),
            format!("<presence to='tybalt@localhost/street' type='unsubscribed' from='{bare}'/>")
        );
    }
    juliet.expect_nothing();
    drop(juliet);
    romeo.recv_until(|e| e.attr("type") == Some("unavailable"));
    romeo.send("<presence type='probe' to='juliet@localhost'/>");
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost/orchard' type='unavailable' from='juliet@localhost'/>"
    );
}

/// RFC 6121 §2.1.6: only the account itself pushes roster changes; a
/// roster set from another account never reaches the client.
#[test]
fn a_roster_set_from_another_account_is_refused_not_delivered() {
    let server = server_with(&["juliet", "tybalt"]);
    let mut juliet = server.login("juliet", "juliet", "balcony");
    let mut tybalt = server.login("tybalt", "tybalt", "street");
    tybalt.send(
        "<iq type='set' id='evil' to='juliet@localhost/balcony'><query xmlns='jabber:iq:roster'>\
         <item jid='tybalt@localhost' name='Romeo'/></query></iq>",
    );
    let reply = tybalt.recv();
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    assert!(
        reply
            .to_xml_in(shoal_actors::ns::CLIENT)
            .contains("<service-unavailable"),
        "{reply}"
    );
    juliet.expect_nothing();
}

/// Directed presence to nobody's session is not remembered; what reached
/// a session is, and is followed by unavailable.
#[test]
fn only_directed_presence_that_arrived_is_owed_unavailable() {
    let server = server_with(&["juliet", "friar"]);
    let mut friar = available(&server, "friar", "cell", "<presence/>");
    let mut juliet = available(&server, "juliet", "balcony", "<presence/>");
    // More than a session may remember, all to sessions that do not exist.
    let ghosts: String = (0..1100)
        .map(|i| format!("<presence to='ghost{i}@localhost/x'/>"))
        .collect();
    juliet.send(&ghosts);
    juliet.send("<presence to='friar@localhost/cell'/>");
    assert_eq!(
        friar.recv_xml(),
        "<presence to='friar@localhost/cell' from='juliet@localhost/balcony'/>"
    );
    juliet.expect_nothing();
    juliet.send("<presence type='unavailable'/>");
    assert_eq!(
        friar.recv_xml(),
        "<presence to='friar@localhost/cell' type='unavailable' from='juliet@localhost/balcony'/>"
    );
}

/// A session replaced by a new one with the same resource must never show
/// the newcomer offline: its unavailable may come before the newcomer's
/// presence, never after it.
#[test]
fn a_replaced_session_never_shows_its_successor_offline() {
    let server = server_with(&["juliet", "romeo", "friar"]);
    let (mut old, mut juliet) = friends_online(&server);
    // Someone the old session alone sent presence to is told it went.
    let mut friar = available(&server, "friar", "cell", "<presence/>");
    old.send("<presence to='friar@localhost/cell'/>");
    assert_eq!(
        friar.recv_xml(),
        "<presence to='friar@localhost/cell' from='romeo@localhost/orchard'/>"
    );
    let mut new = server.authenticated("romeo", "romeo");
    // Bind and initial presence in one write: the new presence races the
    // old session's unavailable.
    new.send(
        "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>orchard</resource></bind></iq>\
         <presence/>",
    );
    assert_eq!(old.expect_stream_error().0, "conflict");
    new.recv_until(|e| e.attr("id") == Some("bind"));
    new.send("<presence><show>away</show></presence>");
    let mut seen = Vec::new();
    loop {
        let p = juliet.recv();
        assert_eq!(p.attr("from"), Some("romeo@localhost/orchard"), "{p}");
        let away = p.get_child("show", shoal_actors::ns::CLIENT).is_some();
        seen.push(p.attr("type").unwrap_or("available").to_owned());
        if away {
            break;
        }
    }
    let first_available = seen.iter().position(|t| t == "available").unwrap();
    assert!(
        !seen[first_available..].iter().any(|t| t == "unavailable"),
        "juliet saw romeo go offline after his new session came online: {seen:?}"
    );
    juliet.expect_nothing();
    assert_eq!(
        friar.recv_xml(),
        "<presence to='friar@localhost/cell' type='unavailable' from='romeo@localhost/orchard'/>"
    );
}

/// RFC 6121 §4.5.2: unavailable presence that a session sends reaches the
/// user's other available resources and the session itself, as available
/// presence does.
#[test]
fn sent_unavailable_reaches_the_sender_and_its_other_resources() {
    let server = server_with(&["romeo"]);
    let mut orchard = available(&server, "romeo", "orchard", "<presence/>");
    let mut hall = available(&server, "romeo", "hall", "<presence/>");
    assert_eq!(
        orchard.recv_xml(),
        "<presence to='romeo@localhost' from='romeo@localhost/hall'/>"
    );
    assert_eq!(
        hall.recv_xml(),
        "<presence to='romeo@localhost/hall' from='romeo@localhost/orchard'/>"
    );

    hall.send("<presence type='unavailable'><status>to bed</status></presence>");
    let gone = "<presence to='romeo@localhost' type='unavailable' from='romeo@localhost/hall'>\
                <status>to bed</status></presence>";
    assert_eq!(hall.recv_xml(), gone);
    assert_eq!(orchard.recv_xml(), gone);
    hall.expect_nothing();
    orchard.expect_nothing();

    // Unavailable now, it no longer gets its resources' presence.
    orchard.send("<presence><show>away</show></presence>");
    assert_eq!(
        orchard.recv_xml(),
        "<presence to='romeo@localhost' from='romeo@localhost/orchard'><show>away</show></presence>"
    );
    hall.expect_nothing();
}
