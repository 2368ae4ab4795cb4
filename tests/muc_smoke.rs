//! A few MUC (XEP-0045) flows end to end, whole stanzas: a room made,
//! opened, joined, spoken in and left by a dropped connection; a
//! persistent members-only room across a restart. tests/muc.rs has the
//! rest.

mod common;

use common::{Client, TestServer};
use shoal_actors::ns;

const JOIN: &str = "<x xmlns='http://jabber.org/protocol/muc'/>";

fn online(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut c = server.login(user, "pw", resource);
    c.announce("<presence/>");
    c
}

fn users(server: &TestServer, names: &[&str]) {
    for name in names {
        server.add_user(name, "pw");
    }
}

/// Creates `room` as `romeo`'s, and opens it (an instant room).
fn create(romeo: &mut Client, room: &str) {
    romeo.send(&format!(
        "<presence to='{room}@conference.localhost/Romeo'>{JOIN}</presence>"
    ));
    assert_eq!(
        romeo.recv_xml(),
        format!(
            "<presence to='romeo@localhost/orchard' from='{room}@conference.localhost/Romeo'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='owner' role='moderator' jid='romeo@localhost/orchard'/>\
             <status code='110'/><status code='201'/></x></presence>"
        )
    );
    assert_eq!(
        romeo.recv_xml(),
        format!("<message to='romeo@localhost/orchard' from='{room}@conference.localhost' type='groupchat'><subject/></message>")
    );
}

fn configure(romeo: &mut Client, room: &str, id: &str, fields: &str) {
    romeo.send(&format!(
        "<iq type='set' id='{id}' to='{room}@conference.localhost'>\
         <query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>{fields}</x></query></iq>"
    ));
    assert_eq!(
        romeo.recv_xml(),
        format!("<iq id='{id}' type='result' from='{room}@conference.localhost' to='romeo@localhost/orchard'/>")
    );
}

#[test]
fn a_room_is_made_locked_opened_joined_spoken_in_and_left_by_a_dropped_connection() {
    let server = TestServer::start();
    users(&server, &["romeo", "juliet"]);
    let mut romeo = online(&server, "romeo", "orchard");
    create(&mut romeo, "room");
    // Locked until its owner configures it: to others, not there.
    let mut juliet = online(&server, "juliet", "balcony");
    let join = format!("<presence to='room@conference.localhost/Juliet'>{JOIN}</presence>");
    juliet.send(&join);
    assert_eq!(
        juliet.recv_xml(),
        "<presence type='error' from='room@conference.localhost/Juliet' to='juliet@localhost/balcony'>\
         <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
    );
    configure(&mut romeo, "room", "c1", "");
    romeo.expect_nothing();
    // Semi-anonymous: juliet does not see romeo's JID; romeo, a
    // moderator, sees hers.
    juliet.send(&join);
    assert_eq!(
        juliet.recv_xml(),
        "<presence to='juliet@localhost/balcony' from='room@conference.localhost/Romeo'>\
         <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' role='moderator'/></x></presence>"
    );
    assert_eq!(
        juliet.recv_xml(),
        "<presence to='juliet@localhost/balcony' from='room@conference.localhost/Juliet'>\
         <x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='participant' jid='juliet@localhost/balcony'/><status code='110'/></x></presence>"
    );
    assert_eq!(
        juliet.recv_xml(),
        "<message to='juliet@localhost/balcony' from='room@conference.localhost' type='groupchat'><subject/></message>"
    );
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost/orchard' from='room@conference.localhost/Juliet'>\
         <x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='participant' jid='juliet@localhost/balcony'/></x></presence>"
    );
    // A message reaches everyone, its sender too, with the room's id.
    juliet.send("<message to='room@conference.localhost' type='groupchat' id='m1'><body>O Romeo</body></message>");
    for (c, to) in [
        (&mut romeo, "romeo@localhost/orchard"),
        (&mut juliet, "juliet@localhost/balcony"),
    ] {
        let m = c.recv();
        let id = m
            .get_child("stanza-id", "urn:xmpp:sid:0")
            .and_then(|s| s.attr("id"))
            .unwrap()
            .to_owned();
        assert_eq!(
            m.to_xml_in(ns::CLIENT),
            format!(
                "<message to='{to}' from='room@conference.localhost/Juliet' type='groupchat' id='m1'>\
                 <body>O Romeo</body><stanza-id xmlns='urn:xmpp:sid:0' id='{id}' by='room@conference.localhost'/></message>"
            )
        );
    }
    // Her connection drops: the room is told, and so is romeo.
    drop(juliet);
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost/orchard' from='room@conference.localhost/Juliet' type='unavailable'>\
         <x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='none' jid='juliet@localhost/balcony'/></x></presence>"
    );
    // Not an occupant: not heard.
    let mut nurse = {
        server.add_user("nurse", "pw");
        online(&server, "nurse", "n")
    };
    nurse.send("<message to='room@conference.localhost' type='groupchat' id='x'><body>hi</body></message>");
    let refused = nurse.recv();
    assert_eq!(refused.attr("type"), Some("error"));
    assert!(refused
        .get_child("error", ns::CLIENT)
        .is_some_and(|e| e.has_child("not-acceptable", ns::STANZAS_ERRORS)));
    romeo.expect_nothing();
}

#[test]
fn a_persistent_members_only_room_keeps_its_members_and_subject_across_a_restart() {
    let mut server = TestServer::start();
    users(&server, &["romeo", "juliet", "nurse"]);
    let mut romeo = online(&server, "romeo", "orchard");
    create(&mut romeo, "vault");
    configure(
        &mut romeo,
        "vault",
        "c1",
        "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>\
         <field var='muc#roomconfig_persistentroom'><value>1</value></field>\
         <field var='muc#roomconfig_membersonly'><value>1</value></field>",
    );
    assert_eq!(
        romeo.recv_xml(),
        "<message to='romeo@localhost/orchard' from='vault@conference.localhost' type='groupchat'>\
         <x xmlns='http://jabber.org/protocol/muc#user'><status code='104'/></x></message>"
    );
    romeo.send("<message to='vault@conference.localhost' type='groupchat'><subject>Fire</subject></message>");
    assert_eq!(
        romeo.recv_xml(),
        "<message to='romeo@localhost/orchard' from='vault@conference.localhost/Romeo' type='groupchat'>\
         <subject>Fire</subject></message>"
    );
    romeo.send(
        "<iq type='set' id='a1' to='vault@conference.localhost'><query xmlns='http://jabber.org/protocol/muc#admin'>\
         <item affiliation='member' jid='juliet@localhost'/></query></iq>",
    );
    assert_eq!(
        romeo.recv_xml(),
        "<iq id='a1' type='result' from='vault@conference.localhost' to='romeo@localhost/orchard'/>"
    );
    drop(romeo);
    server.restart();
    let mut juliet = online(&server, "juliet", "balcony");
    juliet.send(&format!(
        "<presence to='vault@conference.localhost/Juliet'>{JOIN}</presence>"
    ));
    assert_eq!(
        juliet.recv_xml(),
        "<presence to='juliet@localhost/balcony' from='vault@conference.localhost/Juliet'>\
         <x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='member' role='participant' jid='juliet@localhost/balcony'/><status code='110'/></x></presence>"
    );
    assert_eq!(
        juliet.recv_xml(),
        "<message to='juliet@localhost/balcony' from='vault@conference.localhost/Romeo' type='groupchat'>\
         <subject>Fire</subject></message>"
    );
    let mut nurse = online(&server, "nurse", "n");
    nurse.send(&format!(
        "<presence to='vault@conference.localhost/Nurse'>{JOIN}</presence>"
    ));
    assert_eq!(
        nurse.recv_xml(),
        "<presence type='error' from='vault@conference.localhost/Nurse' to='nurse@localhost/n'>\
         <error type='auth'><registration-required xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
    );
    // The room is listed (public by default).
    nurse.send(
        "<iq type='get' id='d1' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>",
    );
    assert_eq!(
        nurse.recv_xml(),
        "<iq id='d1' type='result' from='conference.localhost' to='nurse@localhost/n'>\
         <query xmlns='http://jabber.org/protocol/disco#items'>\
         <item jid='vault@conference.localhost' name='vault'/></query></iq>"
    );
}
