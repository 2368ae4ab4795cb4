//! XEP-0115 entity capabilities over TCP: the server's own caps, and how
//! it learns what clients' caps stand for (one query per new hash, checked,
//! another client asked after a wrong answer). What the caps are for (PEP
//! notifications) is tested in tests/pep.rs.

mod common;

use common::{caps_query, server_caps, TestServer, CAPS_NODE};
use shoal_actors::ns;
use shoal_actors::xep::caps::ver_of;

const TUNE: &str = "http://jabber.org/protocol/tune+notify";

/// The ver of a test client with `+notify` for tunes (design §2.1).
const TUNE_VER: &str = "O6adgBW9UPnFI3MFnRY+n5uAOGE=";

#[test]
fn the_server_offers_its_caps_and_answers_for_their_node() {
    let server = TestServer::start();
    server.add_user("romeo", "r");
    let mut c = server.connect();
    let before = c.open();
    c.auth_plain("romeo", "r");
    assert!(c.recv().is("success", ns::SASL));
    let features = c.open();
    // The same domain, the same disco#info: the same caps before and after.
    assert_eq!(server_caps(&before), server_caps(&features));
    let ver = features
        .get_child("c", ns::CAPS)
        .and_then(|c| c.attr("ver"))
        .unwrap()
        .to_owned();
    c.bind(Some("orchard"));

    c.send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let plain = c.recv();
    let query = plain.get_child("query", ns::DISCO_INFO).unwrap();
    assert_eq!(ver_of(query), ver, "{plain}");
    // Asked at the caps' node, the server says the same, naming the node.
    c.send(&format!(
        "<iq type='get' id='d2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' \
         node='urn:xmpp:shoal#{ver}'/></iq>"
    ));
    let expected = plain.to_xml_in(ns::CLIENT).replace("id='d1'", "id='d2'").replace(
        "<query xmlns='http://jabber.org/protocol/disco#info'>",
        &format!("<query xmlns='http://jabber.org/protocol/disco#info' node='urn:xmpp:shoal#{ver}'>"),
    );
    assert_eq!(c.recv_xml(), expected);
    // Another ver is no node of the server's.
    c.send(
        "<iq type='get' id='d3' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' \
         node='urn:xmpp:shoal#QgayPKawpkPSDYmwT/WM94uAlu0='/></iq>",
    );
    assert_eq!(
        c.recv_xml(),
        "<iq id='d3' type='error' from='localhost' to='romeo@localhost/orchard'>\
         <query xmlns='http://jabber.org/protocol/disco#info' node='urn:xmpp:shoal#QgayPKawpkPSDYmwT/WM94uAlu0='/>\
         <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    );
}

#[test]
fn a_new_ver_is_asked_about_once() {
    let server = TestServer::start();
    server.add_user("romeo", "r");
    server.add_user("juliet", "j");
    let mut romeo = server.login("romeo", "r", "a");
    assert_eq!(romeo.announce_caps(&[TUNE]), TUNE_VER);
    // Asked from the domain, ahead of the presence's reflection.
    let query = romeo.recv();
    let id = query.attr("id").unwrap().to_owned();
    assert_eq!(
        query.to_xml_in(ns::CLIENT),
        format!(
            "<iq type='get' from='localhost' to='romeo@localhost/a' id='{id}'>\
             <query xmlns='http://jabber.org/protocol/disco#info' node='http://test#{TUNE_VER}'/></iq>"
        )
    );
    let mut answer = caps_query(&[TUNE]);
    answer.set_attr("node", format!("{CAPS_NODE}#{TUNE_VER}"));
    romeo.send(&format!(
        "<iq type='result' to='localhost' id='{id}'>{}</iq>",
        answer.to_xml_in(ns::CLIENT)
    ));
    // Answered (the answer went before this round trip): nothing more.
    romeo.expect_nothing();
    // Known now: another session announcing it is not asked.
    let mut juliet = server.login("juliet", "j", "balcony");
    assert_eq!(juliet.announce_caps(&[TUNE]), TUNE_VER);
    juliet.expect_nothing();
    // Nor is romeo, announcing it again.
    romeo.announce_caps(&[TUNE]);
    romeo.expect_nothing();
}

/// Dino answers without the node asked about: the hash still proves the
/// answer (Prosody takes it too).
#[test]
fn an_answer_without_its_node_is_taken_by_its_hash() {
    let server = TestServer::start();
    server.add_user("romeo", "r");
    server.add_user("juliet", "j");
    let mut romeo = server.login("romeo", "r", "a");
    romeo.announce_caps(&[TUNE]);
    let query = romeo.recv();
    let id = query.attr("id").unwrap().to_owned();
    romeo.send(&format!(
        "<iq type='result' to='localhost' id='{id}'>{}</iq>",
        caps_query(&[TUNE]).to_xml_in(ns::CLIENT)
    ));
    romeo.expect_nothing();
    let mut juliet = server.login("juliet", "j", "balcony");
    juliet.announce_caps(&[TUNE]);
    juliet.expect_nothing();
}

#[test]
fn after_a_wrong_answer_another_session_is_asked() {
    let server = TestServer::start();
    for (user, password) in [("romeo", "r"), ("juliet", "j"), ("nurse", "n")] {
        server.add_user(user, password);
    }
    let mut romeo = server.login("romeo", "r", "a");
    let mut juliet = server.login("juliet", "j", "balcony");
    romeo.announce_caps(&[TUNE]);
    // Waits for romeo's answer: not asked meanwhile.
    juliet.announce_caps(&[TUNE]);
    juliet.expect_nothing();
    // Romeo's answer hashes to another ver: not taken, and juliet is asked.
    romeo.answer_caps_query(&[]);
    juliet.answer_caps_query(&[TUNE]);
    juliet.expect_nothing();
    romeo.expect_nothing();
    // Juliet told the truth: known now.
    let mut nurse = server.login("nurse", "n", "hall");
    nurse.announce_caps(&[TUNE]);
    nurse.expect_nothing();
}

#[test]
fn a_ver_nobody_answers_truly_is_not_asked_about_again() {
    let server = TestServer::start();
    server.add_user("romeo", "r");
    server.add_user("juliet", "j");
    let mut romeo = server.login("romeo", "r", "a");
    romeo.announce_caps(&[TUNE]);
    // An error is no answer either.
    let query = romeo.recv();
    let id = query.attr("id").unwrap();
    romeo.send(&format!(
        "<iq type='error' to='localhost' id='{id}'><query xmlns='http://jabber.org/protocol/disco#info'/>\
         <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ));
    romeo.expect_nothing();
    let mut juliet = server.login("juliet", "j", "balcony");
    juliet.announce_caps(&[TUNE]);
    juliet.expect_nothing();
    romeo.announce_caps(&[TUNE]);
    romeo.expect_nothing();
}

#[test]
fn caps_last_until_other_caps_or_unavailable() {
    // Nothing kept server-wide: whether a session still has its caps shows
    // in whether announcing the same ver again is asked about.
    let server = TestServer::with_config(|c| c.caps.max_entries = 0);
    server.add_user("romeo", "r");
    let mut romeo = server.login("romeo", "r", "a");
    romeo.announce_caps(&[TUNE]);
    romeo.answer_caps_query(&[TUNE]);
    romeo.expect_nothing();
    // A presence without <c/> keeps them (XEP-0115 lets later presence
    // leave caps out): the same ver again is not asked about.
    romeo.announce("<presence><show>away</show></presence>");
    romeo.announce_caps(&[TUNE]);
    romeo.expect_nothing();
    // Legacy caps (no hash) are none.
    romeo.announce("<presence><c xmlns='http://jabber.org/protocol/caps' node='http://test' ver='1.0'/></presence>");
    romeo.announce_caps(&[TUNE]);
    romeo.answer_caps_query(&[TUNE]);
    romeo.expect_nothing();
    // Unavailable ends them.
    romeo.send("<presence type='unavailable'/>");
    romeo.recv_until(|e| e.attr("type") == Some("unavailable"));
    romeo.announce_caps(&[TUNE]);
    romeo.answer_caps_query(&[TUNE]);
    romeo.expect_nothing();
}
