//! XEP-0191 Blocking Command over TCP: the blocklist and its pushes, and a
//! blocked JID's stanzas refused or dropped both ways, presence included,
//! online and offline, across a restart, and for a whole domain.

mod common;

use common::{sorted, Client, TestServer};

const UNAVAILABLE: &str =
    "<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>";

/// The `<service-unavailable/>` a message to `from` comes back with.
fn bounced(id: &str, from: &str, to: &str) -> String {
    format!("<message id='{id}' type='error' from='{from}' to='{to}'>{UNAVAILABLE}</message>")
}

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

/// A blocklist push with its id (a counter) replaced by `N`.
fn push_id(xml: String) -> String {
    match xml.find("id='block") {
        Some(i) => {
            let rest = xml[i + 9..].trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{}N{rest}", &xml[..i + 9])
        }
        None => xml,
    }
}

#[test]
fn a_blocked_contact_is_refused_both_ways_until_unblocked() {
    let server = server_with(&["juliet", "romeo"]);
    server.befriend("juliet", "romeo");
    let mut romeo = available(&server, "romeo", "orchard", "<presence/>");
    let mut balcony = available(&server, "juliet", "balcony", "<presence/>");
    let mut chamber = available(&server, "juliet", "chamber", "<presence/>");
    for c in [&mut romeo, &mut balcony, &mut chamber] {
        c.sync();
    }

    // The chamber asks for the (empty) list, so it gets the pushes.
    chamber.send("<iq type='get' id='bl1'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
    assert_eq!(
        chamber.recv_xml(),
        "<iq id='bl1' type='result' to='juliet@localhost/chamber'><blocklist xmlns='urn:xmpp:blocking'/></iq>"
    );
    balcony.send("<iq type='set' id='b0'><block xmlns='urn:xmpp:blocking'/></iq>");
    assert_eq!(
        balcony.recv_xml(),
        "<iq id='b0' type='error' to='juliet@localhost/balcony'><block xmlns='urn:xmpp:blocking'/>\
         <error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>nothing to block</text></error></iq>"
    );
    balcony.send("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='romeo@localhost'/></block></iq>");
    assert_eq!(
        balcony.recv_xml(),
        "<iq id='b1' type='result' to='juliet@localhost/balcony'/>"
    );
    assert_eq!(
        push_id(chamber.recv_xml()),
        "<iq type='set' id='blockN' to='juliet@localhost/chamber'>\
         <block xmlns='urn:xmpp:blocking'><item jid='romeo@localhost'/></block></iq>"
    );
    // She goes offline for him (§3.3): he followed her.
    assert_eq!(
        romeo.recv_set(2),
        sorted([
            "<presence to='romeo@localhost/orchard' type='unavailable' from='juliet@localhost/balcony'/>",
            "<presence to='romeo@localhost/orchard' type='unavailable' from='juliet@localhost/chamber'/>",
        ])
    );
    // The balcony never asked for the list: no push.
    balcony.expect_nothing();

    // His messages and IQs come back as if she were not there.
    romeo.send("<message to='juliet@localhost' type='chat' id='m1'><body>Juliet?</body></message>");
    assert_eq!(
        romeo.recv_xml(),
        bounced("m1", "juliet@localhost", "romeo@localhost/orchard")
    );
    romeo.send("<message to='juliet@localhost/balcony' id='m2'><body>Juliet!</body></message>");
    assert_eq!(
        romeo.recv_xml(),
        bounced("m2", "juliet@localhost/balcony", "romeo@localhost/orchard")
    );
    romeo.send("<iq type='get' id='v1' to='juliet@localhost/balcony'><query xmlns='jabber:iq:version'/></iq>");
    assert_eq!(
        romeo.recv_xml(),
        format!(
            "<iq id='v1' type='error' from='juliet@localhost/balcony' to='romeo@localhost/orchard'>\
             <query xmlns='jabber:iq:version'/>{UNAVAILABLE}</iq>"
        )
    );
    romeo.send("<iq type='get' id='v2' to='juliet@localhost'><vCard xmlns='vcard-temp'/></iq>");
    assert_eq!(
        romeo.recv_xml(),
        format!(
            "<iq id='v2' type='error' from='juliet@localhost' to='romeo@localhost/orchard'>\
             <vCard xmlns='vcard-temp'/>{UNAVAILABLE}</iq>"
        )
    );
    // His presence of every kind is dropped without a word.
    romeo.send("<presence to='juliet@localhost/balcony'><show>chat</show></presence>");
    romeo.send("<presence to='juliet@localhost' type='subscribe'/>");
    romeo.send("<presence to='juliet@localhost' type='probe'/>");
    romeo.send("<presence><status>thinking of her</status></presence>");
    romeo.recv_until(|e| e.name() == "presence" && e.attr("from") == Some("romeo@localhost/orchard"));
    romeo.expect_nothing();
    balcony.expect_nothing();
    chamber.expect_nothing();

    // Her presence no longer reaches him; her own resources still see it.
    balcony.send("<presence><show>away</show></presence>");
    assert_eq!(
        chamber.recv_xml(),
        "<presence to='juliet@localhost' from='juliet@localhost/balcony'><show>away</show></presence>"
    );
    balcony.sync();
    romeo.expect_nothing();

    // What she sends him is refused, with the reason (§3.3).
    balcony.send("<message to='romeo@localhost' type='chat' id='m3'><body>Romeo?</body></message>");
    assert_eq!(
        balcony.recv_xml(),
        "<message id='m3' type='error' from='romeo@localhost' to='juliet@localhost/balcony'>\
         <error type='cancel'><not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <blocked xmlns='urn:xmpp:blocking:errors'/></error></message>"
    );
    balcony.send("<iq type='get' id='v3' to='romeo@localhost/orchard'><query xmlns='jabber:iq:version'/></iq>");
    assert_eq!(
        balcony.recv_xml(),
        "<iq id='v3' type='error' from='romeo@localhost/orchard' to='juliet@localhost/balcony'>\
         <query xmlns='jabber:iq:version'/><error type='cancel'>\
         <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <blocked xmlns='urn:xmpp:blocking:errors'/></error></iq>"
    );
    romeo.expect_nothing();

    // Unblocked: pushes to both (both asked now), and presence both ways (§3.4).
    balcony.send("<iq type='get' id='bl2'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
    assert_eq!(
        balcony.recv_xml(),
        "<iq id='bl2' type='result' to='juliet@localhost/balcony'>\
         <blocklist xmlns='urn:xmpp:blocking'><item jid='romeo@localhost'/></blocklist></iq>"
    );
    balcony
        .send("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='romeo@localhost'/></unblock></iq>");
    assert_eq!(
        balcony.recv_xml(),
        "<iq id='u1' type='result' to='juliet@localhost/balcony'/>"
    );
    let unblock_push = |to: &str| {
        format!(
            "<iq type='set' id='blockN' to='{to}'>\
             <unblock xmlns='urn:xmpp:blocking'><item jid='romeo@localhost'/></unblock></iq>"
        )
    };
    let his = |to: &str| {
        format!("<presence to='{to}' from='romeo@localhost/orchard'><status>thinking of her</status></presence>")
    };
    let mut got: Vec<String> = (0..2).map(|_| push_id(balcony.recv_xml())).collect();
    got.sort();
    assert_eq!(
        got,
        sorted([
            unblock_push("juliet@localhost/balcony"),
            his("juliet@localhost/balcony")
        ])
    );
    let mut got: Vec<String> = (0..2).map(|_| push_id(chamber.recv_xml())).collect();
    got.sort();
    assert_eq!(
        got,
        sorted([
            unblock_push("juliet@localhost/chamber"),
            his("juliet@localhost/chamber")
        ])
    );
    assert_eq!(
        romeo.recv_set(2),
        sorted([
            "<presence to='romeo@localhost/orchard' from='juliet@localhost/balcony'><show>away</show></presence>",
            "<presence to='romeo@localhost/orchard' from='juliet@localhost/chamber'/>",
        ])
    );

    // Messages flow again.
    romeo.send("<message to='juliet@localhost/balcony' type='chat' id='m4'><body>At last</body></message>");
    let m = balcony.recv_until(|e| e.name() == "message");
    assert_eq!(m.attr("from"), Some("romeo@localhost/orchard"));
    assert_eq!(
        m.get_child("body", "jabber:client").map(|b| b.text()),
        Some("At last".into())
    );
    romeo.expect_nothing();
}

#[test]
fn the_blocklist_survives_a_restart_and_holds_while_she_is_offline() {
    let mut server = server_with(&["juliet", "romeo"]);
    let mut juliet = server.login("juliet", "juliet", "balcony");
    juliet.send(
        "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'>\
         <item jid='romeo@localhost'/><item jid='tybalt@capulet.example/sword'/></block></iq>",
    );
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='b1' type='result' to='juliet@localhost/balcony'/>"
    );
    drop(juliet);
    server.restart();

    // Offline, her list is read from the database.
    let mut romeo = server.login("romeo", "romeo", "orchard");
    romeo.send("<message to='juliet@localhost' type='chat' id='m1'><body>Juliet?</body></message>");
    assert_eq!(
        romeo.recv_xml(),
        bounced("m1", "juliet@localhost", "romeo@localhost/orchard")
    );
    romeo.send("<iq type='get' id='v1' to='juliet@localhost'><vCard xmlns='vcard-temp'/></iq>");
    assert_eq!(
        romeo.recv_xml(),
        format!(
            "<iq id='v1' type='error' from='juliet@localhost' to='romeo@localhost/orchard'>\
             <vCard xmlns='vcard-temp'/>{UNAVAILABLE}</iq>"
        )
    );
    romeo.send("<presence to='juliet@localhost' type='subscribe'/>");
    romeo.sync();

    // Nothing waited for her: no message, no request.
    let mut juliet = available(&server, "juliet", "balcony", "<presence/>");
    juliet.expect_nothing();
    juliet.send("<iq type='get' id='bl1'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='bl1' type='result' to='juliet@localhost/balcony'><blocklist xmlns='urn:xmpp:blocking'>\
         <item jid='romeo@localhost'/><item jid='tybalt@capulet.example/sword'/></blocklist></iq>"
    );
    romeo.send("<message to='juliet@localhost' type='chat' id='m2'><body>Juliet!</body></message>");
    assert_eq!(
        romeo.recv_xml(),
        bounced("m2", "juliet@localhost", "romeo@localhost/orchard")
    );
    juliet.expect_nothing();

    // Unblocking everyone: an empty <unblock/>.
    juliet.send("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'/></iq>");
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='u1' type='result' to='juliet@localhost/balcony'/>"
    );
    assert_eq!(
        push_id(juliet.recv_xml()),
        "<iq type='set' id='blockN' to='juliet@localhost/balcony'><unblock xmlns='urn:xmpp:blocking'/></iq>"
    );
    romeo.send("<message to='juliet@localhost' type='chat' id='m3'><body>Juliet?</body></message>");
    let m = juliet.recv_until(|e| e.name() == "message");
    assert_eq!(m.attr("id"), Some("m3"));
}

#[test]
fn a_domain_item_blocks_everyone_there_but_not_the_server() {
    let server = server_with(&["juliet", "romeo", "nurse"]);
    let mut juliet = server.login("juliet", "juliet", "balcony");
    let mut romeo = server.login("romeo", "romeo", "orchard");
    let mut nurse = server.login("nurse", "nurse", "kitchen");
    juliet.send("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='localhost'/></block></iq>");
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='b1' type='result' to='juliet@localhost/balcony'/>"
    );
    for (c, from) in [
        (&mut romeo, "romeo@localhost/orchard"),
        (&mut nurse, "nurse@localhost/kitchen"),
    ] {
        c.send("<message to='juliet@localhost/balcony' type='chat' id='m'><body>?</body></message>");
        assert_eq!(c.recv_xml(), bounced("m", "juliet@localhost/balcony", from));
    }
    juliet.send("<message to='nurse@localhost' id='m2'><body>Nurse!</body></message>");
    assert!(juliet.recv().has_child("error", "jabber:client"));
    // The server and her own account still answer her.
    juliet.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='p1' type='result' from='localhost' to='juliet@localhost/balcony'/>"
    );
    juliet.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='r1' type='result' to='juliet@localhost/balcony'><query xmlns='jabber:iq:roster' ver='0'/></iq>"
    );
    romeo.expect_nothing();
    nurse.expect_nothing();
    juliet.expect_nothing();
}

#[test]
fn the_server_advertises_blocking() {
    let server = server_with(&["juliet"]);
    let mut juliet = server.login("juliet", "juliet", "balcony");
    juliet.send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    let reply = juliet.recv();
    let features: Vec<String> = reply
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .map(|q| q.children().filter_map(|f| f.attr("var").map(str::to_owned)).collect())
        .unwrap_or_default();
    assert!(features.iter().any(|f| f == "urn:xmpp:blocking"), "{features:?}");
}
