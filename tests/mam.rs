//! Message Archive Management (XEP-0313) over TCP: both sides of a chat
//! archived before delivery, the recipient's under the stanza id it was
//! delivered with; queries by correspondent, time and ids; XEP-0059 pages
//! both ways; preferences; only the owner may read an archive.

mod common;

use common::{Client, TestServer};
use shoal_actors::ns;
use shoal_actors::xml::Element;

const MAM: &str = "urn:xmpp:mam:2";
const SID: &str = "urn:xmpp:sid:0";
const FORWARD: &str = "urn:xmpp:forward:0";
const RSM: &str = "http://jabber.org/protocol/rsm";

fn server_with(users: &[&str]) -> TestServer {
    let server = TestServer::start();
    for u in users {
        server.add_user(u, u);
    }
    server
}

/// A session that sent its initial presence and got it back.
fn available(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut c = server.login(user, user, resource);
    c.announce("<presence/>");
    c
}

/// `from` sends `to` (a bare JID, whose session is `rcpt`) a chat message
/// with `body` (also its id); the stanza id it was delivered with.
fn chat(from: &mut Client, rcpt: &mut Client, to: &str, body: &str) -> String {
    from.send(&format!(
        "<message to='{to}' type='chat' id='{body}'><body>{body}</body></message>"
    ));
    let got = rcpt.recv_until(|e| e.name() == "message" && e.attr("id") == Some(body));
    got.get_child("stanza-id", SID)
        .and_then(|s| s.attr("id"))
        .expect("a stanza id")
        .to_owned()
}

/// A query's results, in the order received, and the IQ that ends it.
struct Answer {
    results: Vec<Element>,
    iq: Element,
}

impl Answer {
    fn ids(&self) -> Vec<String> {
        self.results.iter().map(archive_id).collect()
    }

    fn bodies(&self) -> Vec<String> {
        self.results
            .iter()
            .map(|m| {
                let message = forwarded(m).get_child("message", ns::CLIENT).unwrap();
                message.get_child("body", ns::CLIENT).unwrap().text()
            })
            .collect()
    }

    /// The IQ, serialised, with each id in `ids` replaced by `S<i>`.
    fn fin(&self, ids: &[String]) -> String {
        let mut xml = self.iq.to_xml_in(ns::CLIENT);
        for (i, id) in ids.iter().enumerate() {
            xml = xml.replace(id.as_str(), &format!("S{i}"));
        }
        xml
    }

    /// The condition of an error answer.
    fn error(&self) -> String {
        assert_eq!(self.iq.attr("type"), Some("error"), "{}", self.iq);
        assert!(self.results.is_empty());
        let error = self.iq.get_child("error", ns::CLIENT).unwrap();
        error.children().next().unwrap().name().to_owned()
    }
}

/// Sends a query (`id` is its IQ id and its queryid) with `inner` as the
/// query's content; collects the results until the IQ answer.
fn query(c: &mut Client, id: &str, inner: &str) -> Answer {
    c.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='{MAM}' queryid='{id}'>{inner}</query></iq>"
    ));
    let mut results = Vec::new();
    loop {
        let el = c.recv();
        if el.name() == "iq" && el.attr("id") == Some(id) {
            return Answer { results, iq: el };
        }
        if el.name() == "message" {
            assert!(el.has_child("result", MAM), "not a result: {el}");
            assert_eq!(el.get_child("result", MAM).unwrap().attr("queryid"), Some(id));
            results.push(el);
        }
    }
}

fn forwarded(result: &Element) -> &Element {
    result
        .get_child("result", MAM)
        .and_then(|r| r.get_child("forwarded", FORWARD))
        .expect("a forwarded message")
}

fn archive_id(result: &Element) -> String {
    result.get_child("result", MAM).unwrap().attr("id").unwrap().to_owned()
}

fn stamp(result: &Element) -> String {
    let delay = forwarded(result).get_child("delay", "urn:xmpp:delay").unwrap();
    delay.attr("stamp").unwrap().to_owned()
}

/// The stanza with its delay stamp replaced by STAMP, after checking it is
/// XEP-0082 to the millisecond.
fn unstamped(xml: String) -> String {
    let Some(at) = xml.find("stamp='") else { return xml };
    let end = at + 7 + xml[at + 7..].find('\'').unwrap();
    let stamp = &xml[at + 7..end];
    let b = stamp.as_bytes();
    assert!(
        stamp.len() == 24 && b[10] == b'T' && b[19] == b'.' && stamp.ends_with('Z'),
        "{stamp}"
    );
    format!("{}STAMP{}", &xml[..at + 7], &xml[end..])
}

/// A submitted query form with these single-valued fields.
fn form(fields: &[(&str, &str)]) -> String {
    let mut x = format!(
        "<x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>"
    );
    for (var, value) in fields {
        x.push_str(&format!("<field var='{var}'><value>{value}</value></field>"));
    }
    x.push_str("</x>");
    x
}

fn rsm(inner: &str) -> String {
    format!("<set xmlns='{RSM}'>{inner}</set>")
}

#[test]
fn a_chat_is_archived_on_both_sides_under_the_delivered_id() {
    let server = server_with(&["romeo", "juliet"]);
    let mut romeo = available(&server, "romeo", "orchard");
    let mut juliet = available(&server, "juliet", "balcony");
    romeo.send("<message to='juliet@localhost' type='chat' id='m1'><body>Art thou not Romeo?</body></message>");
    let got = juliet.recv_until(|e| e.name() == "message");
    let sid = got.get_child("stanza-id", SID).unwrap().attr("id").unwrap().to_owned();
    assert_eq!(
        got.to_xml_in(ns::CLIENT).replace(&sid, "SID"),
        "<message to='juliet@localhost' type='chat' id='m1' from='romeo@localhost/orchard'>\
         <body>Art thou not Romeo?</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/></message>"
    );

    // Her archive has it, under the id it was delivered with.
    let mine = query(&mut juliet, "j1", "");
    assert_eq!(mine.ids(), std::slice::from_ref(&sid));
    assert_eq!(
        unstamped(mine.results[0].to_xml_in(ns::CLIENT)).replace(&sid, "SID"),
        "<message to='juliet@localhost/balcony' from='juliet@localhost'>\
         <result xmlns='urn:xmpp:mam:2' queryid='j1' id='SID'><forwarded xmlns='urn:xmpp:forward:0'>\
         <delay xmlns='urn:xmpp:delay' stamp='STAMP'/>\
         <message xmlns='jabber:client' to='juliet@localhost' type='chat' id='m1' from='romeo@localhost/orchard'>\
         <body>Art thou not Romeo?</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/>\
         </message></forwarded></result></message>"
    );
    assert_eq!(
        mine.fin(&mine.ids()),
        "<iq id='j1' type='result' to='juliet@localhost/balcony'><fin xmlns='urn:xmpp:mam:2' complete='true'>\
         <set xmlns='http://jabber.org/protocol/rsm'><first index='0'>S0</first><last>S0</last>\
         <count>1</count></set></fin></iq>"
    );

    // His has what he sent, as he sent it, under an id of its own.
    let his = query(&mut romeo, "r1", "");
    let rid = his.ids()[0].clone();
    assert_ne!(rid, sid);
    assert_eq!(
        unstamped(his.results[0].to_xml_in(ns::CLIENT)).replace(&rid, "RID"),
        "<message to='romeo@localhost/orchard' from='romeo@localhost'>\
         <result xmlns='urn:xmpp:mam:2' queryid='r1' id='RID'><forwarded xmlns='urn:xmpp:forward:0'>\
         <delay xmlns='urn:xmpp:delay' stamp='STAMP'/>\
         <message xmlns='jabber:client' to='juliet@localhost' type='chat' id='m1' from='romeo@localhost/orchard'>\
         <body>Art thou not Romeo?</body></message></forwarded></result></message>"
    );
    assert_eq!(stamp(&his.results[0]), stamp(&mine.results[0]));
    romeo.expect_nothing();
    juliet.expect_nothing();
}

#[test]
fn messages_are_delivered_and_archived_in_the_order_sent() {
    let server = server_with(&["romeo", "juliet"]);
    let mut romeo = available(&server, "romeo", "orchard");
    let mut juliet = available(&server, "juliet", "balcony");
    let sent: Vec<String> = (0..30).map(|i| format!("b{i}")).collect();
    for body in &sent {
        romeo.send(&format!(
            "<message to='juliet@localhost' type='chat' id='{body}'><body>{body}</body></message>"
        ));
    }
    let got: Vec<String> = (0..30)
        .map(|_| {
            juliet
                .recv_until(|e| e.name() == "message")
                .attr("id")
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(got, sent);
    assert_eq!(query(&mut juliet, "q", "").bodies(), sent);
    assert_eq!(query(&mut romeo, "q", "").bodies(), sent);
}

#[test]
fn an_offline_message_is_archived_under_the_id_it_waits_with() {
    let server = server_with(&["romeo", "juliet"]);
    let mut romeo = available(&server, "romeo", "orchard");
    romeo.send("<message to='juliet@localhost' type='chat' id='w'><body>wait</body></message>");
    romeo.expect_nothing();
    let store = shoal::store::SqliteStore::open(&server.db).unwrap();
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    while store.offline_messages(&common::account("juliet")).unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the message was never stored");
        std::thread::yield_now();
    }
    // Delivered at her initial presence, maybe before her own presence.
    let mut juliet = server.login("juliet", "juliet", "balcony");
    juliet.send("<presence/>");
    let got = juliet.recv_until(|e| e.name() == "message");
    let sid = got.get_child("stanza-id", SID).unwrap().attr("id").unwrap().to_owned();
    juliet.sync();
    assert_eq!(query(&mut juliet, "q", "").ids(), [sid]);
}

#[test]
fn queries_filter_by_correspondent_time_and_ids() {
    let server = server_with(&["romeo", "nurse", "juliet"]);
    let mut romeo = available(&server, "romeo", "orchard");
    let mut nurse = available(&server, "nurse", "kitchen");
    let mut juliet = available(&server, "juliet", "balcony");
    let mut ids = Vec::new();
    for (i, body) in ["r0", "n0", "r1", "n1", "r2"].iter().enumerate() {
        let sender = if i % 2 == 0 { &mut romeo } else { &mut nurse };
        ids.push(chat(sender, &mut juliet, "juliet@localhost", body));
    }
    let all = query(&mut juliet, "all", "");
    assert_eq!(all.ids(), ids);
    assert_eq!(all.bodies(), ["r0", "n0", "r1", "n1", "r2"]);

    // A bare JID: every resource; a full one: that resource only.
    let with = |c: &mut Client, jid: &str| query(c, "w", &form(&[("with", jid)]));
    assert_eq!(with(&mut juliet, "romeo@localhost").bodies(), ["r0", "r1", "r2"]);
    assert_eq!(
        with(&mut juliet, "romeo@localhost/orchard").bodies(),
        ["r0", "r1", "r2"]
    );
    let nobody = with(&mut juliet, "romeo@localhost/hall");
    assert_eq!(
        nobody.fin(&[]),
        "<iq id='w' type='result' to='juliet@localhost/balcony'><fin xmlns='urn:xmpp:mam:2' complete='true'>\
         <set xmlns='http://jabber.org/protocol/rsm'><count>0</count></set></fin></iq>"
    );

    // ids: those named that are there, in archive order.
    let chosen = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>\
         <field var='ids'><value>{}</value><value>{}</value><value>nonesuch</value></field></x>",
        ids[3], ids[0]
    );
    assert_eq!(query(&mut juliet, "i", &chosen).bodies(), ["r0", "n1"]);
    let after = query(&mut juliet, "a", &form(&[("after-id", ids[1].as_str())]));
    assert_eq!(after.bodies(), ["r1", "n1", "r2"]);
    assert_eq!(
        after.fin(&ids),
        "<iq id='a' type='result' to='juliet@localhost/balcony'><fin xmlns='urn:xmpp:mam:2' complete='true'>\
         <set xmlns='http://jabber.org/protocol/rsm'><first index='0'>S2</first><last>S4</last>\
         <count>3</count></set></fin></iq>"
    );
    let before = query(&mut juliet, "b", &form(&[("before-id", ids[3].as_str())]));
    assert_eq!(before.bodies(), ["r0", "n0", "r1"]);
    let between = form(&[
        ("after-id", ids[1].as_str()),
        ("before-id", ids[3].as_str()),
        ("with", "romeo@localhost"),
    ]);
    assert_eq!(query(&mut juliet, "ab", &between).bodies(), ["r1"]);
    let unknown = query(&mut juliet, "u", &form(&[("after-id", "nonesuch")]));
    assert_eq!(unknown.error(), "item-not-found");

    // Times, inclusive, as the results give them.
    let stamps: Vec<String> = all.results.iter().map(stamp).collect();
    let since = |s: &str| -> Vec<String> {
        let kept = stamps.iter().zip(all.bodies()).filter(|(t, _)| t.as_str() >= s);
        kept.map(|(_, b)| b).collect()
    };
    let until = |s: &str| -> Vec<String> {
        let kept = stamps.iter().zip(all.bodies()).filter(|(t, _)| t.as_str() <= s);
        kept.map(|(_, b)| b).collect()
    };
    let start = query(&mut juliet, "s", &form(&[("start", stamps[2].as_str())]));
    assert_eq!(start.bodies(), since(&stamps[2]));
    assert!(start.bodies().contains(&"r1".to_owned()));
    let end = query(&mut juliet, "e", &form(&[("end", stamps[2].as_str())]));
    assert_eq!(end.bodies(), until(&stamps[2]));
    let both = query(
        &mut juliet,
        "se",
        &form(&[("start", stamps[0].as_str()), ("end", stamps[4].as_str())]),
    );
    assert_eq!(both.bodies(), all.bodies());
    let past = query(&mut juliet, "p", &form(&[("end", "2000-01-01T00:00:00Z")]));
    assert_eq!((past.results.len(), past.iq.attr("type")), (0, Some("result")));
    let future = query(&mut juliet, "f", &form(&[("start", "2999-01-01T00:00:00+02:00")]));
    assert_eq!((future.results.len(), future.iq.attr("type")), (0, Some("result")));

    for bad in [
        form(&[("start", "yesterday")]),
        form(&[("with", "a@b@c")]),
        form(&[("colour", "red")]),
    ] {
        assert_eq!(query(&mut juliet, "x", &bad).error(), "bad-request", "{bad}");
    }
    romeo.expect_nothing();
    nurse.expect_nothing();
    juliet.expect_nothing();
}

#[test]
fn pages_go_forwards_with_after_and_backwards_from_the_last() {
    let server = server_with(&["romeo", "juliet"]);
    let mut romeo = available(&server, "romeo", "orchard");
    let mut juliet = available(&server, "juliet", "balcony");
    let ids: Vec<String> = (0..5)
        .map(|i| chat(&mut romeo, &mut juliet, "juliet@localhost", &format!("m{i}")))
        .collect();
    let page = |c: &mut Client, set: &str| query(c, "pg", &rsm(set));
    let fin = |complete: bool, first: usize, last: usize| {
        format!(
            "<iq id='pg' type='result' to='juliet@localhost/balcony'><fin xmlns='urn:xmpp:mam:2' complete='{complete}'>\
             <set xmlns='http://jabber.org/protocol/rsm'><first index='{first}'>S{first}</first><last>S{last}</last>\
             <count>5</count></set></fin></iq>"
        )
    };

    // Forwards: the first page, then each after the last one's last.
    let first = page(&mut juliet, "<max>2</max>");
    assert_eq!(
        (first.bodies(), first.fin(&ids)),
        (vec!["m0".into(), "m1".into()], fin(false, 0, 1))
    );
    let second = page(&mut juliet, &format!("<max>2</max><after>{}</after>", ids[1]));
    assert_eq!(
        (second.bodies(), second.fin(&ids)),
        (vec!["m2".into(), "m3".into()], fin(false, 2, 3))
    );
    let third = page(&mut juliet, &format!("<max>2</max><after>{}</after>", ids[3]));
    assert_eq!((third.bodies(), third.fin(&ids)), (vec!["m4".into()], fin(true, 4, 4)));

    // Backwards: the last page, then each before the previous one's first.
    let last = page(&mut juliet, "<max>2</max><before/>");
    assert_eq!(
        (last.bodies(), last.fin(&ids)),
        (vec!["m3".into(), "m4".into()], fin(false, 3, 4))
    );
    let earlier = page(&mut juliet, &format!("<max>2</max><before>{}</before>", ids[3]));
    assert_eq!(
        (earlier.bodies(), earlier.fin(&ids)),
        (vec!["m1".into(), "m2".into()], fin(false, 1, 2))
    );
    let earliest = page(&mut juliet, &format!("<max>2</max><before>{}</before>", ids[1]));
    assert_eq!(
        (earliest.bodies(), earliest.fin(&ids)),
        (vec!["m0".into()], fin(true, 0, 0))
    );

    // Out of order, flipped, and the count alone.
    let index = page(&mut juliet, "<max>2</max><index>2</index>");
    assert_eq!(
        (index.bodies(), index.fin(&ids)),
        (vec!["m2".into(), "m3".into()], fin(false, 2, 3))
    );
    let flipped = query(
        &mut juliet,
        "pg",
        &format!("{}<flip-page/>", rsm("<max>2</max><before/>")),
    );
    assert_eq!(
        (flipped.bodies(), flipped.fin(&ids)),
        (vec!["m4".into(), "m3".into()], fin(false, 3, 4))
    );
    let count = page(&mut juliet, "<max>0</max>");
    assert_eq!(
        (count.results.len(), count.fin(&ids)),
        (
            0,
            "<iq id='pg' type='result' to='juliet@localhost/balcony'><fin xmlns='urn:xmpp:mam:2' complete='false'>\
             <set xmlns='http://jabber.org/protocol/rsm'><count>5</count></set></fin></iq>"
                .to_owned()
        )
    );

    // An id that is not in the archive.
    juliet.send(&format!(
        "<iq type='set' id='nf'><query xmlns='{MAM}'>{}</query></iq>",
        rsm("<after>nonesuch</after>")
    ));
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='nf' type='error' to='juliet@localhost/balcony'><query xmlns='urn:xmpp:mam:2'>\
         <set xmlns='http://jabber.org/protocol/rsm'><after>nonesuch</after></set></query>\
         <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    );
    juliet.expect_nothing();
}

#[test]
fn preferences_choose_what_is_archived() {
    let server = server_with(&["romeo", "nurse", "juliet"]);
    server.befriend("juliet", "nurse");
    let mut romeo = available(&server, "romeo", "orchard");
    let mut nurse = available(&server, "nurse", "kitchen");
    let mut juliet = available(&server, "juliet", "balcony");
    for c in [&mut romeo, &mut nurse, &mut juliet] {
        c.sync();
    }

    // The server's default until she chooses.
    juliet.send("<iq type='get' id='p0'><prefs xmlns='urn:xmpp:mam:2'/></iq>");
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='p0' type='result' to='juliet@localhost/balcony'>\
         <prefs xmlns='urn:xmpp:mam:2' default='always'><always/><never/></prefs></iq>"
    );
    juliet.send("<iq type='set' id='p1'><prefs xmlns='urn:xmpp:mam:2' default='never'/></iq>");
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='p1' type='result' to='juliet@localhost/balcony'>\
         <prefs xmlns='urn:xmpp:mam:2' default='never'><always/><never/></prefs></iq>"
    );
    chat(&mut romeo, &mut juliet, "juliet@localhost", "unkept");
    assert!(query(&mut juliet, "q", "").results.is_empty());
    // His own choice is his: the default.
    assert_eq!(query(&mut romeo, "q", "").bodies(), ["unkept"]);

    // Contacts only, and Romeo always.
    juliet.send("<iq type='set' id='p2'><prefs xmlns='urn:xmpp:mam:2' default='roster'/></iq>");
    juliet.recv_until(|e| e.attr("id") == Some("p2"));
    chat(&mut romeo, &mut juliet, "juliet@localhost", "stranger");
    chat(&mut nurse, &mut juliet, "juliet@localhost", "contact");
    juliet.send(
        "<iq type='set' id='p3'><prefs xmlns='urn:xmpp:mam:2' default='roster'>\
         <always><jid>Romeo@localhost</jid></always><never><jid>nurse@localhost/attic</jid></never></prefs></iq>",
    );
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='p3' type='result' to='juliet@localhost/balcony'><prefs xmlns='urn:xmpp:mam:2' default='roster'>\
         <always><jid>romeo@localhost</jid></always><never><jid>nurse@localhost/attic</jid></never></prefs></iq>"
    );
    chat(&mut romeo, &mut juliet, "juliet@localhost", "always");
    assert_eq!(query(&mut juliet, "q", "").bodies(), ["contact", "always"]);
    juliet.send("<iq type='get' id='p4'><prefs xmlns='urn:xmpp:mam:2'/></iq>");
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='p4' type='result' to='juliet@localhost/balcony'><prefs xmlns='urn:xmpp:mam:2' default='roster'>\
         <always><jid>romeo@localhost</jid></always><never><jid>nurse@localhost/attic</jid></never></prefs></iq>"
    );

    // A hint against storing wins over any preference.
    romeo.send(
        "<message to='juliet@localhost' type='chat' id='h'><body>forget this</body>\
         <no-store xmlns='urn:xmpp:hints'/></message>",
    );
    juliet.recv_until(|e| e.attr("id") == Some("h"));
    assert_eq!(query(&mut juliet, "q", "").bodies(), ["contact", "always"]);
    assert_eq!(query(&mut romeo, "q", "").bodies(), ["unkept", "stranger", "always"]);
    juliet.send("<iq type='set' id='p5'><prefs xmlns='urn:xmpp:mam:2' default='sometimes'/></iq>");
    let reply = juliet.recv();
    assert_eq!(reply.attr("type"), Some("error"), "{reply}");
    assert!(reply.to_xml_in(ns::CLIENT).contains("<bad-request"), "{reply}");
}

#[test]
fn only_the_owner_reads_an_archive() {
    let server = server_with(&["romeo", "juliet"]);
    let mut romeo = available(&server, "romeo", "orchard");
    let mut juliet = available(&server, "juliet", "balcony");
    chat(&mut romeo, &mut juliet, "juliet@localhost", "secret");
    romeo.send("<iq type='set' id='f1' to='juliet@localhost'><query xmlns='urn:xmpp:mam:2'/></iq>");
    assert_eq!(
        romeo.recv_xml(),
        "<iq id='f1' type='error' from='juliet@localhost' to='romeo@localhost/orchard'>\
         <query xmlns='urn:xmpp:mam:2'/><error type='auth'>\
         <forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    );
    romeo.send("<iq type='get' id='f2' to='juliet@localhost'><prefs xmlns='urn:xmpp:mam:2'/></iq>");
    let reply = romeo.recv_xml();
    assert!(
        reply.contains("type='error'") && reply.contains("<forbidden"),
        "{reply}"
    );
    romeo.expect_nothing();
    juliet.expect_nothing();
}

#[test]
fn the_form_and_the_features() {
    let server = server_with(&["juliet"]);
    let mut juliet = available(&server, "juliet", "balcony");
    juliet.send("<iq type='get' id='g1'><query xmlns='urn:xmpp:mam:2'/></iq>");
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='g1' type='result' to='juliet@localhost/balcony'><query xmlns='urn:xmpp:mam:2'>\
         <x xmlns='jabber:x:data' type='form'>\
         <field type='hidden' var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field>\
         <field type='jid-single' var='with'/><field type='text-single' var='start'/>\
         <field type='text-single' var='end'/><field type='text-single' var='before-id'/>\
         <field type='text-single' var='after-id'/><field type='list-multi' var='ids'>\
         <validate xmlns='http://jabber.org/protocol/xdata-validate' datatype='xs:string'><open/></validate>\
         </field></x></query></iq>"
    );
    juliet.send(
        "<iq type='get' id='d1' to='juliet@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    let reply = juliet.recv();
    let features: Vec<String> = reply
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .map(|q| q.children().filter_map(|f| f.attr("var").map(str::to_owned)).collect())
        .unwrap_or_default();
    for f in ["urn:xmpp:mam:2", "urn:xmpp:mam:2#extended"] {
        assert!(features.iter().any(|x| x == f), "{f} in {features:?}");
    }
}

#[test]
fn nothing_is_archived_when_the_archive_is_off() {
    let server = TestServer::with_config(|c| c.mam.enabled = false);
    for u in ["romeo", "juliet"] {
        server.add_user(u, u);
    }
    let mut romeo = available(&server, "romeo", "orchard");
    let mut juliet = available(&server, "juliet", "balcony");
    // Still stamped (XEP-0359), but not archived, and no archive to ask.
    chat(&mut romeo, &mut juliet, "juliet@localhost", "gone");
    juliet.send("<iq type='set' id='q'><query xmlns='urn:xmpp:mam:2'/></iq>");
    let reply = juliet.recv_xml();
    assert!(reply.contains("<service-unavailable"), "{reply}");
    let store = shoal::store::SqliteStore::open(&server.db).unwrap();
    let all = shoal_actors::xep::mam::ArchiveQuery {
        max: 10,
        ..Default::default()
    };
    assert_eq!(
        store
            .archive_query(&common::account("juliet"), &all)
            .unwrap()
            .unwrap()
            .count,
        0
    );
}
