//! XEP-0045 Multi-User Chat over TCP, in rooms at conference.localhost:
//! creation, the lock and the instant room; joins, with real JIDs shown to
//! moderators only; groupchat with one room stanza id, history and the
//! subject; nick changes; kick and ban; members-only and password rooms;
//! invitations; a dropped occupant; self-ping and removal on an error; a
//! persistent room across a restart; and the service's limits.

mod common;

use common::{sorted, unsid, Client, TestServer};
use shoal_actors::ns;
use shoal_actors::xml::Element;

const MUC: &str = "http://jabber.org/protocol/muc";
const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";

const ROOM: &str = "room@conference.localhost";
const ROMEO: &str = "romeo@localhost/orchard";
const JULIET: &str = "juliet@localhost/balcony";
const NURSE: &str = "nurse@localhost/kitchen";

fn server() -> TestServer {
    let server = TestServer::start();
    add_users(&server);
    server
}

fn add_users(server: &TestServer) {
    for u in ["romeo", "juliet", "nurse"] {
        server.add_user(u, u);
    }
}

fn available(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut c = server.login(user, user, resource);
    c.announce("<presence/>");
    c
}

/// Romeo, Juliet and the Nurse, online. They have no rosters: they see one
/// another only in rooms.
fn online(server: &TestServer) -> (Client, Client, Client) {
    (
        available(server, "romeo", "orchard"),
        available(server, "juliet", "balcony"),
        available(server, "nurse", "kitchen"),
    )
}

/// An occupant JID.
fn at(room: &str, nick: &str) -> String {
    format!("{room}/{nick}")
}

/// A muc#user `<item/>` (attributes in the order the room writes them).
fn item(affiliation: &str, role: &str, jid: Option<&str>) -> String {
    match jid {
        Some(jid) => format!("<item affiliation='{affiliation}' role='{role}' jid='{jid}'/>"),
        None => format!("<item affiliation='{affiliation}' role='{role}'/>"),
    }
}

fn codes(codes: &[u16]) -> String {
    codes.iter().map(|c| format!("<status code='{c}'/>")).collect()
}

/// An occupant's presence from `from` (room/nick) as `to` gets it.
fn present(to: &str, from: &str, item: &str, status: &[u16]) -> String {
    format!(
        "<presence to='{to}' from='{from}'><x xmlns='{MUC_USER}'>{item}{}</x></presence>",
        codes(status)
    )
}

/// An occupant's leaving, as `to` gets it.
fn gone(to: &str, from: &str, item: &str, status: &[u16]) -> String {
    format!(
        "<presence to='{to}' from='{from}' type='unavailable'><x xmlns='{MUC_USER}'>{item}{}</x></presence>",
        codes(status)
    )
}

/// The subject a joiner gets last: none yet (from the room), or `(nick, text)`.
fn subject(to: &str, room: &str, set: Option<(&str, &str)>) -> String {
    match set {
        None => format!("<message to='{to}' from='{room}' type='groupchat'><subject/></message>"),
        Some((nick, text)) => {
            format!("<message to='{to}' from='{room}/{nick}' type='groupchat'><subject>{text}</subject></message>")
        }
    }
}

/// A groupchat message as the room relays it live (its stanza id as SID).
fn groupchat(to: &str, room: &str, nick: &str, id: &str, body: &str) -> String {
    format!(
        "<message to='{to}' from='{room}/{nick}' type='groupchat' id='{id}'><body>{body}</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='{room}'/></message>"
    )
}

/// A groupchat message as a joiner gets it from the history.
fn history(to: &str, room: &str, nick: &str, id: &str, body: &str) -> String {
    let live = groupchat(to, room, nick, id, body);
    let end = live.len() - "</message>".len();
    format!(
        "{}<delay xmlns='urn:xmpp:delay' from='{room}' stamp='STAMP'/></message>",
        &live[..end]
    )
}

/// The room's notice that its configuration changed (status 104).
fn changed(to: &str, room: &str) -> String {
    format!(
        "<message to='{to}' from='{room}' type='groupchat'><x xmlns='{MUC_USER}'><status code='104'/></x></message>"
    )
}

fn result(to: &str, from: &str, id: &str) -> String {
    format!("<iq id='{id}' type='result' from='{from}' to='{to}'/>")
}

/// A refused join or nick change, with the muc `<x/>` (XEP-0045 §7.2's
/// examples; slixmpp 1.8 recognises a failed join by it).
fn refused(to: &str, from: &str, kind: &str, condition: &str) -> String {
    format!(
        "<presence type='error' from='{from}' to='{to}'><x xmlns='http://jabber.org/protocol/muc'/><error type='{kind}'>\
         <{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>"
    )
}

/// An error stanza reduced to its name, id, addresses and `type:condition`,
/// for refusals whose text is the server's own wording.
fn refusal(el: &Element) -> String {
    assert_eq!(el.attr("type"), Some("error"), "{el}");
    let error = el
        .get_child("error", ns::CLIENT)
        .unwrap_or_else(|| panic!("no <error/>: {el}"));
    let condition = error
        .children()
        .find(|c| c.ns() == ns::STANZAS_ERRORS && c.name() != "text")
        .unwrap_or_else(|| panic!("no condition: {el}"));
    let attr = |name| el.attr(name).unwrap_or("-");
    format!(
        "{} id={} from={} to={} {}:{}",
        el.name(),
        attr("id"),
        attr("from"),
        attr("to"),
        error.attr("type").unwrap_or("-"),
        condition.name()
    )
}

fn error_text(el: &Element) -> String {
    el.get_child("error", ns::CLIENT)
        .and_then(|e| e.get_child("text", ns::STANZAS_ERRORS))
        .map(Element::text)
        .unwrap_or_default()
}

/// Replaces each `stamp` (checked to be a XEP-0082 UTC date-time) with STAMP.
fn unstamp(xml: String) -> String {
    const MARK: &str = " stamp='";
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml.as_str();
    while let Some(i) = rest.find(MARK) {
        let start = i + MARK.len();
        let end = start + rest[start..].find('\'').unwrap();
        let stamp = &rest.as_bytes()[start..end];
        let shape =
            stamp.len() >= 20 && stamp[4] == b'-' && stamp[10] == b'T' && stamp[13] == b':' && stamp.ends_with(b"Z");
        assert!(shape, "stamp {:?} in {xml}", &rest[start..end]);
        out.push_str(&rest[..start]);
        out.push_str("STAMP");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The id of the (one) `<stanza-id/>` in a serialised message.
fn sid_of(xml: &str) -> String {
    const MARK: &str = "<stanza-id xmlns='urn:xmpp:sid:0' id='";
    let start = xml.find(MARK).unwrap_or_else(|| panic!("no stanza id: {xml}")) + MARK.len();
    let end = start + xml[start..].find('\'').unwrap();
    xml[start..end].to_owned()
}

fn is_subject(el: &Element, room: &str) -> bool {
    el.name() == "message"
        && el.attr("type") == Some("groupchat")
        && el.has_child("subject", ns::CLIENT)
        && !el.has_child("body", ns::CLIENT)
        && el.attr("from").is_some_and(|f| f.split('/').next() == Some(room))
}

/// `c` joins as `occupant` (room/nick), with `x` inside the join's
/// `<x xmlns='http://jabber.org/protocol/muc'/>`; what it gets up to and
/// including the subject, which ends every join (XEP-0045 §7.2), serialised
/// with stanza ids and stamps normalised.
fn join(c: &mut Client, occupant: &str, x: &str) -> Vec<String> {
    let room = occupant.split('/').next().unwrap();
    let x = if x.is_empty() {
        format!("<x xmlns='{MUC}'/>")
    } else {
        format!("<x xmlns='{MUC}'>{x}</x>")
    };
    c.send(&format!("<presence to='{occupant}'>{x}</presence>"));
    let mut got = Vec::new();
    loop {
        let el = c.recv();
        assert!(
            !(el.name() == "presence" && el.attr("type") == Some("error")),
            "join refused: {el}"
        );
        let end = is_subject(&el, room);
        got.push(unstamp(unsid(el.to_xml_in(ns::CLIENT))));
        if end {
            return got;
        }
    }
}

/// `got` with its first `n` (the others' presence, in no defined order)
/// sorted.
fn others_sorted(mut got: Vec<String>, n: usize) -> Vec<String> {
    got[..n].sort();
    got
}

/// `c` joins as `occupant` without history; its self-presence carries 110,
/// and each of `present` gets its presence. What `c` got.
fn enter(c: &mut Client, occupant: &str, present: &mut [&mut Client]) -> Vec<String> {
    let got = join(c, occupant, "<history maxstanzas='0'/>");
    let me = format!("<presence to='{}' from='{occupant}'>", c.jid);
    assert!(
        got.iter()
            .any(|s| s.starts_with(&me) && s.contains("<status code='110'/>")),
        "no self-presence: {got:?}"
    );
    for p in present.iter_mut() {
        let el = p.recv();
        assert!(
            el.name() == "presence" && el.attr("type").is_none() && el.attr("from") == Some(occupant),
            "{el}"
        );
    }
    got
}

/// The owner's configuration submit; with no fields, the instant room's
/// empty form (XEP-0045 §10.1.2).
fn config_iq(room: &str, id: &str, fields: &[(&str, &str)]) -> String {
    let form = if fields.is_empty() {
        "<x xmlns='jabber:x:data' type='submit'/>".to_owned()
    } else {
        let mut x = format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{ROOMCONFIG}</value></field>"
        );
        for (var, value) in fields {
            x.push_str(&format!("<field var='{var}'><value>{value}</value></field>"));
        }
        x.push_str("</x>");
        x
    };
    format!("<iq type='set' id='{id}' to='{room}'><query xmlns='{MUC_OWNER}'>{form}</query></iq>")
}

/// `owner` creates `room` as `nick` (status 201, locked) and unlocks it as
/// an instant room.
fn create_instant_room(owner: &mut Client, room: &str, nick: &str) {
    let me = owner.jid.clone();
    assert_eq!(
        join(owner, &at(room, nick), ""),
        [
            present(
                &me,
                &at(room, nick),
                &item("owner", "moderator", Some(&me)),
                &[110, 201]
            ),
            subject(&me, room, None),
        ]
    );
    owner.send(&config_iq(room, "instant", &[]));
    assert_eq!(owner.recv_xml(), result(&me, room, "instant"));
}

/// `owner` sets `jid`'s affiliation with `room`; it is not in the room.
fn affiliate(owner: &mut Client, room: &str, id: &str, jid: &str, affiliation: &str) {
    owner.send(&format!(
        "<iq type='set' id='{id}' to='{room}'><query xmlns='{MUC_ADMIN}'>\
         <item affiliation='{affiliation}' jid='{jid}'/></query></iq>"
    ));
    let me = owner.jid.clone();
    assert_eq!(owner.recv_xml(), result(&me, room, id));
}

fn say(c: &mut Client, room: &str, id: &str, body: &str) {
    c.send(&format!(
        "<message to='{room}' type='groupchat' id='{id}'><body>{body}</body></message>"
    ));
}

fn leave(c: &mut Client, occupant: &str) {
    c.send(&format!("<presence to='{occupant}' type='unavailable'/>"));
}

#[test]
fn a_new_room_is_locked_until_its_owner_submits_an_instant_configuration() {
    let server = server();
    let (mut romeo, mut juliet, _nurse) = online(&server);

    romeo.send(&format!("<presence to='{ROOM}/Romeo'><x xmlns='{MUC}'/></presence>"));
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost/orchard' from='room@conference.localhost/Romeo'>\
         <x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='owner' role='moderator' jid='romeo@localhost/orchard'/>\
         <status code='110'/><status code='201'/></x></presence>"
    );
    assert_eq!(
        romeo.recv_xml(),
        "<message to='romeo@localhost/orchard' from='room@conference.localhost' type='groupchat'><subject/></message>"
    );

    // Locked: nobody else enters, and disco does not show it.
    juliet.send(&format!("<presence to='{ROOM}/Juliet'><x xmlns='{MUC}'/></presence>"));
    assert_eq!(
        juliet.recv_xml(),
        refused(JULIET, &at(ROOM, "Juliet"), "cancel", "item-not-found")
    );
    juliet.send(&format!(
        "<iq type='get' id='d1' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='d1' type='error' from='room@conference.localhost' to='juliet@localhost/balcony'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/><error type='cancel'>\
         <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    );
    romeo.expect_nothing();

    // The instant room: an empty submitted form unlocks it.
    romeo.send(
        "<iq type='set' id='c1' to='room@conference.localhost'><query xmlns='http://jabber.org/protocol/muc#owner'>\
         <x xmlns='jabber:x:data' type='submit'/></query></iq>",
    );
    assert_eq!(
        romeo.recv_xml(),
        "<iq id='c1' type='result' from='room@conference.localhost' to='romeo@localhost/orchard'/>"
    );

    // Juliet gets the owner's presence without his JID (the room is
    // semi-anonymous), her own with hers and 110, then the subject; Romeo,
    // a moderator, sees her JID.
    assert_eq!(
        join(&mut juliet, &at(ROOM, "Juliet"), ""),
        [
            "<presence to='juliet@localhost/balcony' from='room@conference.localhost/Romeo'>\
             <x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' role='moderator'/></x></presence>",
            "<presence to='juliet@localhost/balcony' from='room@conference.localhost/Juliet'>\
             <x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='none' role='participant' jid='juliet@localhost/balcony'/>\
             <status code='110'/></x></presence>",
            "<message to='juliet@localhost/balcony' from='room@conference.localhost' type='groupchat'><subject/></message>",
        ]
    );
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost/orchard' from='room@conference.localhost/Juliet'>\
         <x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='participant' jid='juliet@localhost/balcony'/></x></presence>"
    );
    romeo.expect_nothing();
    juliet.expect_nothing();
}

#[test]
fn groupchat_reaches_every_occupant_and_history_comes_before_the_subject() {
    let server = server();
    let (mut romeo, mut juliet, mut nurse) = online(&server);
    create_instant_room(&mut romeo, ROOM, "Romeo");
    enter(&mut juliet, &at(ROOM, "Juliet"), &mut [&mut romeo]);

    // Every occupant gets it, the sender its echo: the same stanza but for
    // `to`, from the sender's occupant JID, with one id by the room.
    say(&mut juliet, ROOM, "g1", "one");
    let (to_romeo, to_juliet) = (romeo.recv_xml(), juliet.recv_xml());
    assert_eq!(sid_of(&to_romeo), sid_of(&to_juliet));
    assert_eq!(unsid(to_romeo), groupchat(ROMEO, ROOM, "Juliet", "g1", "one"));
    assert_eq!(unsid(to_juliet), groupchat(JULIET, ROOM, "Juliet", "g1", "one"));
    // A stanza id claimed to be by the room is replaced (XEP-0359 §4).
    romeo.send(&format!(
        "<message to='{ROOM}' type='groupchat' id='g2'><body>two</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='forged' by='{ROOM}'/></message>"
    ));
    assert_eq!(unsid(juliet.recv_xml()), groupchat(JULIET, ROOM, "Romeo", "g2", "two"));
    assert_eq!(unsid(romeo.recv_xml()), groupchat(ROMEO, ROOM, "Romeo", "g2", "two"));
    say(&mut juliet, ROOM, "g3", "three");
    assert_eq!(unsid(romeo.recv_xml()), groupchat(ROMEO, ROOM, "Juliet", "g3", "three"));
    assert_eq!(
        unsid(juliet.recv_xml()),
        groupchat(JULIET, ROOM, "Juliet", "g3", "three")
    );

    // The Nurse asks for the last two: they come after the presence, with
    // the room's <delay/>, before the subject.
    let mut expected = sorted([
        present(NURSE, &at(ROOM, "Juliet"), &item("none", "participant", None), &[]),
        present(NURSE, &at(ROOM, "Romeo"), &item("owner", "moderator", None), &[]),
    ]);
    expected.extend([
        present(
            NURSE,
            &at(ROOM, "Nurse"),
            &item("none", "participant", Some(NURSE)),
            &[110],
        ),
        history(NURSE, ROOM, "Romeo", "g2", "two"),
        history(NURSE, ROOM, "Juliet", "g3", "three"),
        subject(NURSE, ROOM, None),
    ]);
    assert_eq!(
        others_sorted(join(&mut nurse, &at(ROOM, "Nurse"), "<history maxstanzas='2'/>"), 2),
        expected
    );
    assert_eq!(
        romeo.recv_xml(),
        present(
            ROMEO,
            &at(ROOM, "Nurse"),
            &item("none", "participant", Some(NURSE)),
            &[]
        )
    );
    assert_eq!(
        juliet.recv_xml(),
        present(JULIET, &at(ROOM, "Nurse"), &item("none", "participant", None), &[])
    );

    // Romeo, a moderator, sets the subject; Juliet may not (changesubject
    // is off by default).
    romeo.send(&format!(
        "<message to='{ROOM}' type='groupchat' id='s1'><subject>Fair Verona</subject></message>"
    ));
    for (c, to) in [(&mut romeo, ROMEO), (&mut juliet, JULIET), (&mut nurse, NURSE)] {
        assert_eq!(
            c.recv_xml(),
            format!(
                "<message to='{to}' from='{ROOM}/Romeo' type='groupchat' id='s1'><subject>Fair Verona</subject></message>"
            )
        );
    }
    juliet.send(&format!(
        "<message to='{ROOM}' type='groupchat' id='s2'><subject>Mantua</subject></message>"
    ));
    assert_eq!(
        juliet.recv_xml(),
        "<message id='s2' type='error' from='room@conference.localhost' to='juliet@localhost/balcony'>\
         <error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>you may not change the subject</text>\
         </error></message>"
    );
    romeo.expect_nothing();
    nurse.expect_nothing();

    // She leaves: others see role none, she gets 110.
    leave(&mut nurse, &at(ROOM, "Nurse"));
    assert_eq!(
        nurse.recv_xml(),
        gone(NURSE, &at(ROOM, "Nurse"), &item("none", "none", Some(NURSE)), &[110])
    );
    assert_eq!(
        romeo.recv_xml(),
        gone(ROMEO, &at(ROOM, "Nurse"), &item("none", "none", Some(NURSE)), &[])
    );
    assert_eq!(
        juliet.recv_xml(),
        gone(JULIET, &at(ROOM, "Nurse"), &item("none", "none", None), &[])
    );

    // maxchars='0': no history, but the subject, now Romeo's.
    let mut expected = sorted([
        present(NURSE, &at(ROOM, "Juliet"), &item("none", "participant", None), &[]),
        present(NURSE, &at(ROOM, "Romeo"), &item("owner", "moderator", None), &[]),
    ]);
    expected.extend([
        present(
            NURSE,
            &at(ROOM, "Nurse"),
            &item("none", "participant", Some(NURSE)),
            &[110],
        ),
        subject(NURSE, ROOM, Some(("Romeo", "Fair Verona"))),
    ]);
    assert_eq!(
        others_sorted(join(&mut nurse, &at(ROOM, "Nurse"), "<history maxchars='0'/>"), 2),
        expected
    );
    for c in [&mut romeo, &mut juliet] {
        assert_eq!(c.recv().attr("from"), Some(at(ROOM, "Nurse").as_str()));
    }

    // Without <history/>: the room's length (20 by default), so all three,
    // then the subject.
    leave(&mut nurse, &at(ROOM, "Nurse"));
    for c in [&mut nurse, &mut romeo, &mut juliet] {
        assert_eq!(c.recv().attr("type"), Some("unavailable"));
    }
    let mut expected = sorted([
        present(NURSE, &at(ROOM, "Juliet"), &item("none", "participant", None), &[]),
        present(NURSE, &at(ROOM, "Romeo"), &item("owner", "moderator", None), &[]),
    ]);
    expected.extend([
        present(
            NURSE,
            &at(ROOM, "Nurse"),
            &item("none", "participant", Some(NURSE)),
            &[110],
        ),
        history(NURSE, ROOM, "Juliet", "g1", "one"),
        history(NURSE, ROOM, "Romeo", "g2", "two"),
        history(NURSE, ROOM, "Juliet", "g3", "three"),
        subject(NURSE, ROOM, Some(("Romeo", "Fair Verona"))),
    ]);
    assert_eq!(others_sorted(join(&mut nurse, &at(ROOM, "Nurse"), ""), 2), expected);
}

/// Chat states reach everyone but stay out of the history, which would
/// otherwise fill with typing notifications (as Prosody keeps it).
#[test]
fn chat_states_are_relayed_but_not_kept_for_joiners() {
    let server = server();
    let (mut romeo, mut juliet, mut nurse) = online(&server);
    create_instant_room(&mut romeo, ROOM, "Romeo");
    enter(&mut juliet, &at(ROOM, "Juliet"), &mut [&mut romeo]);
    romeo.send(&format!(
        "<message to='{ROOM}' type='groupchat' id='c1'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
    ));
    for (c, to) in [(&mut romeo, ROMEO), (&mut juliet, JULIET)] {
        assert_eq!(
            unsid(c.recv_xml()),
            format!(
                "<message to='{to}' from='{ROOM}/Romeo' type='groupchat' id='c1'>\
                 <composing xmlns='http://jabber.org/protocol/chatstates'/>\
                 <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='{ROOM}'/></message>"
            )
        );
    }
    say(&mut romeo, ROOM, "g1", "hello");
    romeo.recv();
    juliet.recv();
    let got = join(&mut nurse, &at(ROOM, "Nurse"), "");
    let kept: Vec<&String> = got.iter().filter(|s| s.contains("urn:xmpp:delay")).collect();
    assert_eq!(kept, [&history(NURSE, ROOM, "Romeo", "g1", "hello")]);
}

#[test]
fn a_nick_change_is_announced_with_303_and_a_taken_nick_is_a_conflict() {
    let server = server();
    let (mut romeo, mut juliet, mut nurse) = online(&server);
    create_instant_room(&mut romeo, ROOM, "Romeo");
    enter(&mut juliet, &at(ROOM, "Juliet"), &mut [&mut romeo]);

    juliet.send(&format!("<presence to='{ROOM}/Jules'/>"));
    let renamed = |jid: &str| format!("<item affiliation='none' role='participant' jid='{jid}' nick='Jules'/>");
    assert_eq!(
        romeo.recv_xml(),
        gone(ROMEO, &at(ROOM, "Juliet"), &renamed(JULIET), &[303])
    );
    assert_eq!(
        romeo.recv_xml(),
        present(
            ROMEO,
            &at(ROOM, "Jules"),
            &item("none", "participant", Some(JULIET)),
            &[]
        )
    );
    assert_eq!(
        juliet.recv_xml(),
        gone(JULIET, &at(ROOM, "Juliet"), &renamed(JULIET), &[110, 303])
    );
    assert_eq!(
        juliet.recv_xml(),
        present(
            JULIET,
            &at(ROOM, "Jules"),
            &item("none", "participant", Some(JULIET)),
            &[110]
        )
    );

    // Her messages now come from the new nick.
    say(&mut juliet, ROOM, "g1", "a rose");
    assert_eq!(unsid(romeo.recv_xml()), groupchat(ROMEO, ROOM, "Jules", "g1", "a rose"));
    assert_eq!(
        unsid(juliet.recv_xml()),
        groupchat(JULIET, ROOM, "Jules", "g1", "a rose")
    );

    // A nick another user holds: as a new nick, and as a join.
    juliet.send(&format!("<presence to='{ROOM}/Romeo'/>"));
    assert_eq!(
        juliet.recv_xml(),
        refused(JULIET, &at(ROOM, "Romeo"), "cancel", "conflict")
    );
    nurse.send(&format!("<presence to='{ROOM}/Jules'><x xmlns='{MUC}'/></presence>"));
    assert_eq!(
        nurse.recv_xml(),
        refused(NURSE, &at(ROOM, "Jules"), "cancel", "conflict")
    );
    romeo.expect_nothing();
    juliet.expect_nothing();
}

#[test]
fn a_moderator_kicks_with_307_and_an_admin_bans_with_301() {
    let server = server();
    let (mut romeo, mut juliet, mut nurse) = online(&server);
    create_instant_room(&mut romeo, ROOM, "Romeo");
    enter(&mut juliet, &at(ROOM, "Juliet"), &mut [&mut romeo]);
    enter(&mut nurse, &at(ROOM, "Nurse"), &mut [&mut romeo, &mut juliet]);

    let kick = |id: &str, nick: &str, reason: &str| {
        format!(
            "<iq type='set' id='{id}' to='{ROOM}'><query xmlns='{MUC_ADMIN}'>\
             <item nick='{nick}' role='none'>{reason}</item></query></iq>"
        )
    };
    let kick_error = |id: &str, to: &str, nick: &str, kind: &str, condition: &str, text: &str| {
        let text = match text {
            "" => String::new(),
            t => format!("<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>{t}</text>"),
        };
        format!(
            "<iq id='{id}' type='error' from='{ROOM}' to='{to}'><query xmlns='{MUC_ADMIN}'>\
             <item nick='{nick}' role='none'/></query><error type='{kind}'>\
             <{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>{text}</error></iq>"
        )
    };
    // Not a moderator; no such nick; the owner himself.
    juliet.send(&kick("k0", "Nurse", ""));
    assert_eq!(
        juliet.recv_xml(),
        kick_error(
            "k0",
            JULIET,
            "Nurse",
            "auth",
            "forbidden",
            "only moderators change roles"
        )
    );
    romeo.send(&kick("k1", "Tybalt", ""));
    assert_eq!(
        romeo.recv_xml(),
        kick_error("k1", ROMEO, "Tybalt", "cancel", "item-not-found", "")
    );
    romeo.send(&kick("k2", "Romeo", ""));
    assert_eq!(
        romeo.recv_xml(),
        kick_error(
            "k2",
            ROMEO,
            "Romeo",
            "cancel",
            "not-allowed",
            "admins and owners keep their role"
        )
    );
    nurse.expect_nothing();

    // The kick (§8.2): the kicked first (110, 307), then the others, then
    // the result.
    romeo.send(&kick("k3", "Juliet", "<reason>Banished</reason>"));
    let kicked = |jid: Option<&str>| {
        let jid = jid.map(|j| format!(" jid='{j}'")).unwrap_or_default();
        format!("<item affiliation='none' role='none'{jid}><actor nick='Romeo'/><reason>Banished</reason></item>")
    };
    assert_eq!(
        juliet.recv_xml(),
        gone(JULIET, &at(ROOM, "Juliet"), &kicked(Some(JULIET)), &[110, 307])
    );
    assert_eq!(
        nurse.recv_xml(),
        gone(NURSE, &at(ROOM, "Juliet"), &kicked(None), &[307])
    );
    assert_eq!(
        romeo.recv_xml(),
        gone(ROMEO, &at(ROOM, "Juliet"), &kicked(Some(JULIET)), &[307])
    );
    assert_eq!(romeo.recv_xml(), result(ROMEO, ROOM, "k3"));

    // A kick is not a ban: she comes back. Only an admin bans.
    enter(&mut juliet, &at(ROOM, "Juliet"), &mut [&mut romeo, &mut nurse]);
    let ban = |id: &str, jid: &str| {
        format!(
            "<iq type='set' id='{id}' to='{ROOM}'><query xmlns='{MUC_ADMIN}'>\
             <item affiliation='outcast' jid='{jid}'><reason>Exiled</reason></item></query></iq>"
        )
    };
    nurse.send(&ban("b0", "juliet@localhost"));
    assert_eq!(
        nurse.recv_xml(),
        format!(
            "<iq id='b0' type='error' from='{ROOM}' to='{NURSE}'><query xmlns='{MUC_ADMIN}'>\
             <item affiliation='outcast' jid='juliet@localhost'><reason>Exiled</reason></item></query>\
             <error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>only admins and owners change affiliations</text></error></iq>"
        )
    );
    juliet.expect_nothing();

    // The ban (§9.1): she leaves with 301, the others see 301, then the result.
    romeo.send(&ban("b1", "juliet@localhost"));
    let banned = |jid: Option<&str>| {
        let jid = jid.map(|j| format!(" jid='{j}'")).unwrap_or_default();
        format!("<item affiliation='outcast' role='none'{jid}><actor nick='Romeo'/><reason>Exiled</reason></item>")
    };
    assert_eq!(
        juliet.recv_xml(),
        gone(JULIET, &at(ROOM, "Juliet"), &banned(Some(JULIET)), &[110, 301])
    );
    assert_eq!(
        nurse.recv_xml(),
        gone(NURSE, &at(ROOM, "Juliet"), &banned(None), &[301])
    );
    assert_eq!(
        romeo.recv_xml(),
        gone(ROMEO, &at(ROOM, "Juliet"), &banned(Some(JULIET)), &[301])
    );
    assert_eq!(romeo.recv_xml(), result(ROMEO, ROOM, "b1"));

    // Banned by bare JID: no way back, under any nick.
    for nick in ["Juliet", "Juliette"] {
        juliet.send(&format!("<presence to='{ROOM}/{nick}'><x xmlns='{MUC}'/></presence>"));
        assert_eq!(juliet.recv_xml(), refused(JULIET, &at(ROOM, nick), "auth", "forbidden"));
    }
    romeo.expect_nothing();
    nurse.expect_nothing();
}

#[test]
fn switching_to_members_only_removes_non_members_with_322() {
    let server = server();
    let (mut romeo, mut juliet, mut nurse) = online(&server);
    create_instant_room(&mut romeo, ROOM, "Romeo");
    affiliate(&mut romeo, ROOM, "m1", "juliet@localhost", "member");
    let got = enter(&mut juliet, &at(ROOM, "Juliet"), &mut [&mut romeo]);
    assert!(
        got.contains(&present(
            JULIET,
            &at(ROOM, "Juliet"),
            &item("member", "participant", Some(JULIET)),
            &[110]
        )),
        "{got:?}"
    );
    enter(&mut nurse, &at(ROOM, "Nurse"), &mut [&mut romeo, &mut juliet]);

    romeo.send(&config_iq(ROOM, "c2", &[("muc#roomconfig_membersonly", "1")]));
    assert_eq!(
        nurse.recv_xml(),
        gone(
            NURSE,
            &at(ROOM, "Nurse"),
            &item("none", "none", Some(NURSE)),
            &[110, 322]
        )
    );
    nurse.expect_nothing();
    assert_eq!(
        juliet.recv_set(2),
        sorted([
            gone(JULIET, &at(ROOM, "Nurse"), &item("none", "none", None), &[322]),
            changed(JULIET, ROOM),
        ])
    );
    assert_eq!(
        romeo.recv_set(3),
        sorted([
            gone(ROMEO, &at(ROOM, "Nurse"), &item("none", "none", Some(NURSE)), &[322]),
            result(ROMEO, ROOM, "c2"),
            changed(ROMEO, ROOM),
        ])
    );

    nurse.send(&format!("<presence to='{ROOM}/Nurse'><x xmlns='{MUC}'/></presence>"));
    assert_eq!(
        nurse.recv_xml(),
        refused(NURSE, &at(ROOM, "Nurse"), "auth", "registration-required")
    );
    romeo.expect_nothing();
    juliet.expect_nothing();
}

/// In a members-only room that shows real JIDs, members may read the
/// member list (Conversations encrypts to members not present with
/// OMEMO; Prosody allows it), but not the outcasts.
#[test]
fn members_of_a_non_anonymous_members_only_room_see_the_member_list() {
    let server = server();
    let (mut romeo, mut juliet, _nurse) = online(&server);
    create_instant_room(&mut romeo, ROOM, "Romeo");
    romeo.send(&config_iq(
        ROOM,
        "c1",
        &[("muc#roomconfig_membersonly", "1"), ("muc#roomconfig_whois", "anyone")],
    ));
    let mut got = vec![romeo.recv_xml(), romeo.recv_xml()];
    got.sort();
    // 104, and 172: the room now shows real JIDs (XEP-0045 §10.2.1).
    let mut want = vec![
        result(ROMEO, ROOM, "c1"),
        format!(
            "<message to='{ROMEO}' from='{ROOM}' type='groupchat'><x xmlns='{MUC_USER}'>\
             <status code='104'/><status code='172'/></x></message>"
        ),
    ];
    want.sort();
    assert_eq!(got, want);
    affiliate(&mut romeo, ROOM, "a1", "juliet@localhost", "member");
    let list = |id: &str, affiliation: &str| {
        format!(
            "<iq type='get' id='{id}' to='{ROOM}'><query xmlns='{MUC_ADMIN}'><item affiliation='{affiliation}'/></query></iq>"
        )
    };
    juliet.send(&list("l1", "member"));
    assert_eq!(
        juliet.recv_xml(),
        format!(
            "<iq id='l1' type='result' from='{ROOM}' to='{JULIET}'><query xmlns='{MUC_ADMIN}'>\
             <item affiliation='member' jid='juliet@localhost'/></query></iq>"
        )
    );
    juliet.send(&list("l2", "outcast"));
    assert_eq!(
        refusal(&juliet.recv()),
        format!("iq id=l2 from={ROOM} to={JULIET} auth:forbidden")
    );
}

#[test]
fn a_password_protected_room_admits_only_with_the_password() {
    let server = server();
    let (mut romeo, mut juliet, mut nurse) = online(&server);
    create_instant_room(&mut romeo, ROOM, "Romeo");
    romeo.send(&config_iq(
        ROOM,
        "c2",
        &[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "cauldron"),
        ],
    ));
    assert_eq!(
        romeo.recv_set(2),
        sorted([result(ROMEO, ROOM, "c2"), changed(ROMEO, ROOM)])
    );

    for x in [
        format!("<x xmlns='{MUC}'/>"),
        format!("<x xmlns='{MUC}'><password>wrong</password></x>"),
    ] {
        juliet.send(&format!("<presence to='{ROOM}/Juliet'>{x}</presence>"));
        assert_eq!(
            juliet.recv_xml(),
            refused(JULIET, &at(ROOM, "Juliet"), "auth", "not-authorized")
        );
    }
    assert_eq!(
        join(&mut juliet, &at(ROOM, "Juliet"), "<password>cauldron</password>"),
        [
            present(JULIET, &at(ROOM, "Romeo"), &item("owner", "moderator", None), &[]),
            present(
                JULIET,
                &at(ROOM, "Juliet"),
                &item("none", "participant", Some(JULIET)),
                &[110]
            ),
            subject(JULIET, ROOM, None),
        ]
    );
    assert_eq!(
        romeo.recv_xml(),
        present(
            ROMEO,
            &at(ROOM, "Juliet"),
            &item("none", "participant", Some(JULIET)),
            &[]
        )
    );

    // A mediated invitation carries the password (XEP-0045 §7.8.2).
    romeo.send(&format!(
        "<message to='{ROOM}'><x xmlns='{MUC_USER}'><invite to='nurse@localhost'>\
         <reason>Bring the cauldron</reason></invite></x></message>"
    ));
    assert_eq!(
        unsid(nurse.recv_xml()),
        "<message from='room@conference.localhost' to='nurse@localhost'>\
         <x xmlns='http://jabber.org/protocol/muc#user'><invite from='romeo@localhost/orchard'>\
         <reason>Bring the cauldron</reason></invite><password>cauldron</password></x>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='nurse@localhost'/></message>"
    );
    romeo.expect_nothing();
    juliet.expect_nothing();
}

#[test]
fn mediated_invitations_come_from_the_room_and_direct_ones_pass_unchanged() {
    let server = server();
    let (mut romeo, _juliet, mut nurse) = online(&server);
    create_instant_room(&mut romeo, ROOM, "Romeo");

    romeo.send(
        "<message to='room@conference.localhost'><x xmlns='http://jabber.org/protocol/muc#user'>\
         <invite to='nurse@localhost'><reason>Come to the feast</reason></invite></x></message>",
    );
    assert_eq!(
        unsid(nurse.recv_xml()),
        "<message from='room@conference.localhost' to='nurse@localhost'>\
         <x xmlns='http://jabber.org/protocol/muc#user'><invite from='romeo@localhost/orchard'>\
         <reason>Come to the feast</reason></invite></x>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='nurse@localhost'/></message>"
    );

    // XEP-0249: from client to client, the room not involved.
    romeo.send(
        "<message to='nurse@localhost' id='d1'>\
         <x xmlns='jabber:x:conference' jid='room@conference.localhost' reason='Join us'/></message>",
    );
    assert_eq!(
        unsid(nurse.recv_xml()),
        "<message to='nurse@localhost' id='d1' from='romeo@localhost/orchard'>\
         <x xmlns='jabber:x:conference' jid='room@conference.localhost' reason='Join us'/>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='nurse@localhost'/></message>"
    );
    romeo.expect_nothing();
    nurse.expect_nothing();
}

#[test]
fn a_dropped_connection_leaves_the_room() {
    let server = server();
    let (mut romeo, mut juliet, _nurse) = online(&server);
    create_instant_room(&mut romeo, ROOM, "Romeo");
    enter(&mut juliet, &at(ROOM, "Juliet"), &mut [&mut romeo]);

    // The socket just goes away; no stream management to keep her.
    drop(juliet);
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost/orchard' from='room@conference.localhost/Juliet' type='unavailable'>\
         <x xmlns='http://jabber.org/protocol/muc#user'>\
         <item affiliation='none' role='none' jid='juliet@localhost/balcony'/></x></presence>"
    );
    romeo.expect_nothing();
    say(&mut romeo, ROOM, "g1", "alone");
    assert_eq!(unsid(romeo.recv_xml()), groupchat(ROMEO, ROOM, "Romeo", "g1", "alone"));
    romeo.expect_nothing();
}

#[test]
fn self_ping_is_answered_by_the_room_and_an_occupants_error_removes_it_with_333() {
    let server = server();
    let (mut romeo, mut juliet, mut nurse) = online(&server);
    create_instant_room(&mut romeo, ROOM, "Romeo");
    enter(&mut juliet, &at(ROOM, "Juliet"), &mut [&mut romeo]);

    // XEP-0410: her own occupant JID answers, without her client.
    juliet.send(&format!(
        "<iq type='get' id='sp1' to='{ROOM}/Juliet'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    assert_eq!(juliet.recv_xml(), result(JULIET, &at(ROOM, "Juliet"), "sp1"));
    // Someone who is not Juliet in this room.
    nurse.send(&format!(
        "<iq type='get' id='sp2' to='{ROOM}/Juliet'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    assert_eq!(
        nurse.recv_xml(),
        "<iq id='sp2' type='error' from='room@conference.localhost/Juliet' to='nurse@localhost/kitchen'>\
         <ping xmlns='urn:xmpp:ping'/><error type='modify'>\
         <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>not an occupant of this nick</text>\
         </error></iq>"
    );
    romeo.expect_nothing();
    juliet.expect_nothing();

    // Her client bounces a groupchat message: she is out (333).
    say(&mut romeo, ROOM, "g1", "Juliet?");
    assert_eq!(
        unsid(romeo.recv_xml()),
        groupchat(ROMEO, ROOM, "Romeo", "g1", "Juliet?")
    );
    assert_eq!(
        unsid(juliet.recv_xml()),
        groupchat(JULIET, ROOM, "Romeo", "g1", "Juliet?")
    );
    // An error saying her client cannot handle something leaves her in
    // (Prosody's list of errors that mean "gone").
    juliet.send(&format!(
        "<message to='{ROOM}/Romeo' type='error' id='g1'><error type='cancel'>\
         <feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    ));
    romeo.expect_nothing();
    juliet.expect_nothing();
    juliet.send(&format!(
        "<message to='{ROOM}/Romeo' type='error' id='g1'><error type='cancel'>\
         <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    ));
    assert_eq!(
        romeo.recv_xml(),
        gone(ROMEO, &at(ROOM, "Juliet"), &item("none", "none", Some(JULIET)), &[333])
    );
    assert_eq!(
        juliet.recv_xml(),
        gone(
            JULIET,
            &at(ROOM, "Juliet"),
            &item("none", "none", Some(JULIET)),
            &[110, 333]
        )
    );

    // No longer an occupant, she may not speak.
    say(&mut juliet, ROOM, "g2", "Romeo!");
    assert_eq!(
        juliet.recv_xml(),
        "<message id='g2' type='error' from='room@conference.localhost' to='juliet@localhost/balcony'>\
         <error type='modify'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>only occupants may speak here</text></error></message>"
    );
    romeo.expect_nothing();
}

#[test]
fn a_persistent_members_only_room_survives_a_restart() {
    const KEEP: &str = "capulets@conference.localhost";
    let mut server = server();
    {
        let mut romeo = available(&server, "romeo", "orchard");
        create_instant_room(&mut romeo, KEEP, "Romeo");
        romeo.send(&config_iq(
            KEEP,
            "c2",
            &[
                ("muc#roomconfig_persistentroom", "1"),
                ("muc#roomconfig_membersonly", "1"),
            ],
        ));
        assert_eq!(
            romeo.recv_set(2),
            sorted([result(ROMEO, KEEP, "c2"), changed(ROMEO, KEEP)])
        );
        romeo.send(&format!(
            "<message to='{KEEP}' type='groupchat' id='s1'><subject>Verona</subject></message>"
        ));
        romeo.recv_until(|e| is_subject(e, KEEP));
        // Saved in order: once this is answered, the subject is stored too.
        affiliate(&mut romeo, KEEP, "m1", "juliet@localhost", "member");
    }
    server.restart();

    // Loaded, not created: no 201, no lock, the member and the subject kept.
    let (mut romeo, mut juliet, mut nurse) = online(&server);
    assert_eq!(
        join(&mut juliet, &at(KEEP, "Juliet"), ""),
        [
            present(
                JULIET,
                &at(KEEP, "Juliet"),
                &item("member", "participant", Some(JULIET)),
                &[110]
            ),
            subject(JULIET, KEEP, Some(("Romeo", "Verona"))),
        ]
    );
    nurse.send(&format!("<presence to='{KEEP}/Nurse'><x xmlns='{MUC}'/></presence>"));
    assert_eq!(
        nurse.recv_xml(),
        refused(NURSE, &at(KEEP, "Nurse"), "auth", "registration-required")
    );
    assert_eq!(
        join(&mut romeo, &at(KEEP, "Romeo"), ""),
        [
            present(
                ROMEO,
                &at(KEEP, "Juliet"),
                &item("member", "participant", Some(JULIET)),
                &[]
            ),
            present(
                ROMEO,
                &at(KEEP, "Romeo"),
                &item("owner", "moderator", Some(ROMEO)),
                &[110]
            ),
            subject(ROMEO, KEEP, Some(("Romeo", "Verona"))),
        ]
    );
    assert_eq!(
        juliet.recv_xml(),
        present(JULIET, &at(KEEP, "Romeo"), &item("owner", "moderator", None), &[])
    );
}

/// A server with low MUC limits, from a configuration file as a user
/// would write it.
fn limited_server() -> TestServer {
    let server = TestServer::from_file(|dir| {
        format!(
            "[storage]\nsqlite = {:?}\n[c2s]\nlisten = ['127.0.0.1:0']\n[http]\nlisten = []\n\
             [muc]\nmessage_rate = 1\nmessage_burst = 2\nmax_rooms_per_user = 1\n",
            dir.join("shoal.db")
        )
    });
    add_users(&server);
    server
}

#[test]
fn the_services_limits_refuse_with_errors() {
    let server = limited_server();
    let (mut romeo, mut juliet, mut nurse) = online(&server);
    create_instant_room(&mut romeo, ROOM, "Romeo");
    enter(&mut juliet, &at(ROOM, "Juliet"), &mut [&mut romeo]);

    // Messages past the burst (2) are refused, not queued.
    for (id, body) in [("g1", "one"), ("g2", "two"), ("g3", "three")] {
        say(&mut juliet, ROOM, id, body);
    }
    assert_eq!(unsid(juliet.recv_xml()), groupchat(JULIET, ROOM, "Juliet", "g1", "one"));
    assert_eq!(unsid(juliet.recv_xml()), groupchat(JULIET, ROOM, "Juliet", "g2", "two"));
    assert_eq!(
        refusal(&juliet.recv()),
        format!("message id=g3 from={ROOM} to={JULIET} wait:resource-constraint")
    );
    assert_eq!(unsid(romeo.recv_xml()), groupchat(ROMEO, ROOM, "Juliet", "g1", "one"));
    assert_eq!(unsid(romeo.recv_xml()), groupchat(ROMEO, ROOM, "Juliet", "g2", "two"));
    romeo.expect_nothing();

    // maxusers: the room is full for anyone but its admins and owners.
    romeo.send(&config_iq(ROOM, "c2", &[("muc#roomconfig_maxusers", "2")]));
    assert_eq!(
        romeo.recv_set(2),
        sorted([result(ROMEO, ROOM, "c2"), changed(ROMEO, ROOM)])
    );
    assert_eq!(juliet.recv_xml(), changed(JULIET, ROOM));
    nurse.send(&format!("<presence to='{ROOM}/Nurse'><x xmlns='{MUC}'/></presence>"));
    assert_eq!(
        refusal(&nurse.recv()),
        format!("presence id=- from={ROOM}/Nurse to={NURSE} wait:service-unavailable")
    );

    // One room per user here: Romeo owns one already.
    romeo.send(&format!(
        "<presence to='second@conference.localhost/Romeo'><x xmlns='{MUC}'/></presence>"
    ));
    assert_eq!(
        refusal(&romeo.recv()),
        format!("presence id=- from=second@conference.localhost/Romeo to={ROMEO} wait:resource-constraint")
    );

    // Bad configurations change nothing: an unknown field or a value out of
    // range (past [muc] max_occupants) is named, a foreign form refused.
    for (id, var, value) in [
        ("c3", "muc#roomconfig_frobnicate", "1"),
        ("c4", "muc#roomconfig_maxusers", "100000"),
    ] {
        romeo.send(&config_iq(ROOM, id, &[(var, value)]));
        let answer = romeo.recv();
        assert_eq!(
            refusal(&answer),
            format!("iq id={id} from={ROOM} to={ROMEO} modify:not-acceptable")
        );
        assert!(error_text(&answer).contains(var), "{answer}");
    }
    romeo.send(&format!(
        "<iq type='set' id='c5' to='{ROOM}'><query xmlns='{MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>urn:example:other</value></field></x></query></iq>"
    ));
    assert_eq!(
        refusal(&romeo.recv()),
        format!("iq id=c5 from={ROOM} to={ROMEO} modify:bad-request")
    );
    romeo.expect_nothing();
    juliet.expect_nothing();
    nurse.expect_nothing();
}

/// Occupants already in the room when the last one joins the big room.
const CROWD: usize = 40;

#[test]
fn a_joiner_of_a_room_bigger_than_its_queue_share_gets_every_occupant_then_itself() {
    // The smallest queue a client may have: one sender (the room) may
    // queue an eighth of it, 1,250 bytes, a handful of presences, for a
    // session at once; the crowd's presence is ten times that.
    let server = TestServer::from_file(|dir| {
        format!(
            "[storage]\nsqlite = {:?}\n[c2s]\nlisten = ['127.0.0.1:0']\nmax_stanza_bytes = 10000\n\
             max_outbound_bytes = 10000\n[http]\nlisten = []\n",
            dir.join("shoal.db")
        )
    });
    let names: Vec<String> = (0..CROWD).map(|i| format!("guest{i}")).collect();
    server.add_users(&names, "secret");
    add_users(&server);
    let mut romeo = available(&server, "romeo", "orchard");
    create_instant_room(&mut romeo, ROOM, "Romeo");
    let mut guests: Vec<Client> = names
        .iter()
        .map(|name| {
            let mut guest = server.login(name, "secret", "phone");
            guest.announce("<presence/>");
            join(&mut guest, &at(ROOM, name), "<history maxstanzas='0'/>");
            guest
        })
        .collect();

    // Juliet joins, and reads nothing until the room has sent it all.
    let mut juliet = available(&server, "juliet", "balcony");
    juliet.send(&format!(
        "<presence to='{}'><x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>",
        at(ROOM, "Juliet")
    ));
    // Everyone in the room sees her come in, after the guests who came
    // after them: the room is done with her join.
    for guest in &mut guests {
        loop {
            let el = guest.recv();
            assert_eq!(el.name(), "presence", "{el}");
            if el.attr("from") == Some(at(ROOM, "Juliet").as_str()) {
                break;
            }
        }
    }
    say(&mut romeo, ROOM, "after", "Welcome");
    let mut expected: Vec<String> = names
        .iter()
        .map(|name| present(JULIET, &at(ROOM, name), &item("none", "participant", None), &[]))
        .collect();
    expected.push(present(
        JULIET,
        &at(ROOM, "Romeo"),
        &item("owner", "moderator", None),
        &[],
    ));
    expected.sort();
    let mut got: Vec<String> = (0..=CROWD).map(|_| juliet.recv_xml()).collect();
    got.sort();
    assert_eq!(got, expected);
    // Then, in order: her own, the subject, and what was said after.
    assert_eq!(
        juliet.recv_xml(),
        present(
            JULIET,
            &at(ROOM, "Juliet"),
            &item("none", "participant", Some(JULIET)),
            &[110]
        )
    );
    assert_eq!(juliet.recv_xml(), subject(JULIET, ROOM, None));
    assert_eq!(
        unsid(juliet.recv().to_xml_in(ns::CLIENT)),
        groupchat(JULIET, ROOM, "Romeo", "after", "Welcome")
    );
}
