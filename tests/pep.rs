//! XEP-0163 PEP over TCP: publishes notified to the owner's and its
//! followers' sessions that ask with `+notify` caps (XEP-0115), access
//! models, publish-options preconditions, node configuration, retraction,
//! purge, deletion and trimming, the last item at login, limits, a
//! restart, XEP-0172 nicknames and XEP-0398 avatar conversion.
//!
//! juliet's contacts are romeo and nurse (`both`); tybalt is nobody's.

mod common;

use common::{node_config_form, pubsub_publish as publish, Client, TestServer};
use shoal_actors::ns;

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const TUNE: &str = "http://jabber.org/protocol/tune";
const MOOD: &str = "http://jabber.org/protocol/mood";
const ACTIVITY: &str = "http://jabber.org/protocol/activity";
const TUNE_NOTIFY: &str = "http://jabber.org/protocol/tune+notify";
const MOOD_NOTIFY: &str = "http://jabber.org/protocol/mood+notify";
const ACTIVITY_NOTIFY: &str = "http://jabber.org/protocol/activity+notify";
const ME: &str = "juliet@localhost/balcony";

fn verona() -> TestServer {
    let server = TestServer::start();
    for u in ["juliet", "romeo", "nurse", "tybalt"] {
        server.add_user(u, u);
    }
    server.befriend("juliet", "romeo");
    server.befriend("juliet", "nurse");
    server
}

/// `user` at `resource`, available with caps naming `features`; `asked`
/// when nobody announced these caps before, so that the server asks this
/// session. What came before its caps were in place is read.
fn online(server: &TestServer, user: &str, resource: &str, features: &[&str], asked: bool) -> Client {
    let mut c = server.login(user, user, resource);
    c.announce_caps(features);
    if asked {
        c.answer_caps_query(features);
    }
    c.sync();
    c
}

/// `user` at `resource`, available without caps: notified of nothing.
fn plain(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut c = server.login(user, user, resource);
    c.announce("<presence/>");
    c
}

fn tune(title: &str) -> String {
    format!("<tune xmlns='http://jabber.org/protocol/tune'><title>{title}</title></tune>")
}

/// juliet's publish result.
fn published(id: &str, node: &str, item: &str) -> String {
    format!(
        "<iq id='{id}' type='result' to='{ME}'><pubsub xmlns='{PUBSUB}'>\
         <publish node='{node}'><item id='{item}'/></publish></pubsub></iq>"
    )
}

/// A notification of juliet's to `to`: `<items node>` around `inner`.
fn event(to: &str, node: &str, inner: &str) -> String {
    format!(
        "<message to='{to}' from='juliet@localhost' type='headline'>\
         <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='{node}'>{inner}</items></event></message>"
    )
}

/// `<item id>` around `payload`.
fn item(id: &str, payload: &str) -> String {
    format!("<item id='{id}'>{payload}</item>")
}

/// juliet's empty result.
fn done(id: &str) -> String {
    format!("<iq id='{id}' type='result' to='{ME}'/>")
}

/// The error juliet gets for `payload`: `error` is the `<error/>`'s inside.
fn refused(id: &str, payload: &str, kind: &str, error: &str) -> String {
    format!("<iq id='{id}' type='error' to='{ME}'>{payload}<error type='{kind}'>{error}</error></iq>")
}

const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

fn items_request(node: &str) -> String {
    format!("<pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub>")
}

/// The `<delay/>` stamp of a last item, checked for its shape.
fn stamp_of(message: &shoal_actors::xml::Element) -> String {
    let stamp = message
        .get_child("delay", ns::DELAY)
        .and_then(|d| d.attr("stamp"))
        .unwrap_or_else(|| panic!("no delay in {message}"))
        .to_owned();
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "{stamp}"
    );
    stamp
}

#[test]
fn a_publish_reaches_the_interested_followers_only() {
    let server = verona();
    let mut juliet = online(&server, "juliet", "balcony", &[TUNE_NOTIFY], true);
    let mut romeo = online(&server, "romeo", "orchard", &[TUNE_NOTIFY], false);
    // The nurse follows her, but her client does not want tunes.
    let mut nurse = online(&server, "nurse", "chamber", &[TUNE], true);
    // Tybalt wants tunes, but does not follow her.
    let mut tybalt = online(&server, "tybalt", "street", &[TUNE_NOTIFY], false);
    // A session without caps wants nothing.
    let mut other = plain(&server, "romeo", "gate");
    for c in [&mut juliet, &mut romeo, &mut nurse, &mut tybalt, &mut other] {
        c.sync();
    }

    juliet.send(&format!(
        "<iq type='set' id='p1'>{}</iq>",
        publish(TUNE, "current", &tune("Fire"), &[])
    ));
    let fire = item("current", &tune("Fire"));
    // Her own interested session sees it before her result.
    assert_eq!(juliet.recv_xml(), event(ME, TUNE, &fire));
    assert_eq!(juliet.recv_xml(), published("p1", TUNE, "current"));
    assert_eq!(romeo.recv_xml(), event("romeo@localhost/orchard", TUNE, &fire));
    for c in [&mut romeo, &mut nurse, &mut tybalt, &mut other] {
        c.expect_nothing();
    }
}

#[test]
fn open_nodes_reach_followers_and_whitelists_their_members() {
    let server = verona();
    let all = [TUNE_NOTIFY, MOOD_NOTIFY, ACTIVITY_NOTIFY];
    let mut juliet = online(&server, "juliet", "balcony", &all, true);
    let mut romeo = online(&server, "romeo", "orchard", &all, false);
    let mut nurse = online(&server, "nurse", "chamber", &all, false);
    let mut tybalt = online(&server, "tybalt", "street", &all, false);
    for c in [&mut juliet, &mut romeo, &mut nurse, &mut tybalt] {
        c.sync();
    }

    // Open: every follower, but no stranger (there are no explicit
    // subscriptions)...
    let happy = "<mood xmlns='http://jabber.org/protocol/mood'><happy/></mood>";
    let open = [("pubsub#access_model", "open")];
    juliet.send(&format!(
        "<iq type='set' id='p1'>{}</iq>",
        publish(MOOD, "current", happy, &open)
    ));
    let mood = item("current", happy);
    assert_eq!(juliet.recv_xml(), event(ME, MOOD, &mood));
    assert_eq!(juliet.recv_xml(), published("p1", MOOD, "current"));
    assert_eq!(romeo.recv_xml(), event("romeo@localhost/orchard", MOOD, &mood));
    assert_eq!(nurse.recv_xml(), event("nurse@localhost/chamber", MOOD, &mood));
    tybalt.expect_nothing();
    // ...though anyone may read it.
    tybalt.send(&format!(
        "<iq type='get' id='i1' to='juliet@localhost'>{}</iq>",
        items_request(MOOD)
    ));
    assert_eq!(
        tybalt.recv_xml(),
        format!(
            "<iq id='i1' type='result' from='juliet@localhost' to='tybalt@localhost/street'>\
             <pubsub xmlns='{PUBSUB}'><items node='{MOOD}'>{mood}</items></pubsub></iq>"
        )
    );

    // Whitelist: only the owner, until she makes romeo a member.
    let working = "<activity xmlns='http://jabber.org/protocol/activity'><working/></activity>";
    let whitelist = [("pubsub#access_model", "whitelist")];
    juliet.send(&format!(
        "<iq type='set' id='p2'>{}</iq>",
        publish(ACTIVITY, "current", working, &whitelist)
    ));
    assert_eq!(juliet.recv_xml(), event(ME, ACTIVITY, &item("current", working)));
    assert_eq!(juliet.recv_xml(), published("p2", ACTIVITY, "current"));
    juliet.send(&format!(
        "<iq type='set' id='a1'><pubsub xmlns='{PUBSUB}#owner'><affiliations node='{ACTIVITY}'>\
         <affiliation jid='romeo@localhost' affiliation='member'/></affiliations></pubsub></iq>"
    ));
    assert_eq!(juliet.recv_xml(), done("a1"));
    juliet.send(&format!(
        "<iq type='get' id='a2'><pubsub xmlns='{PUBSUB}#owner'><affiliations node='{ACTIVITY}'/></pubsub></iq>"
    ));
    assert_eq!(
        juliet.recv_xml(),
        format!(
            "<iq id='a2' type='result' to='{ME}'><pubsub xmlns='{PUBSUB}#owner'><affiliations node='{ACTIVITY}'>\
             <affiliation jid='juliet@localhost' affiliation='owner'/>\
             <affiliation jid='romeo@localhost' affiliation='member'/></affiliations></pubsub></iq>"
        )
    );
    let relaxing = "<activity xmlns='http://jabber.org/protocol/activity'><relaxing/></activity>";
    juliet.send(&format!(
        "<iq type='set' id='p3'>{}</iq>",
        publish(ACTIVITY, "current", relaxing, &whitelist)
    ));
    let activity = item("current", relaxing);
    assert_eq!(juliet.recv_xml(), event(ME, ACTIVITY, &activity));
    assert_eq!(juliet.recv_xml(), published("p3", ACTIVITY, "current"));
    assert_eq!(romeo.recv_xml(), event("romeo@localhost/orchard", ACTIVITY, &activity));
    for c in [&mut romeo, &mut nurse, &mut tybalt] {
        c.expect_nothing();
    }
    // Those not on the list cannot read it.
    nurse.send(&format!(
        "<iq type='get' id='i2' to='juliet@localhost'>{}</iq>",
        items_request(ACTIVITY)
    ));
    assert_eq!(
        nurse.recv_xml(),
        format!(
            "<iq id='i2' type='error' from='juliet@localhost' to='nurse@localhost/chamber'>{}\
             <error type='cancel'><not-allowed xmlns='{STANZAS}'/><closed-node xmlns='{ERRORS}'/></error></iq>",
            items_request(ACTIVITY)
        )
    );
}

#[test]
fn publish_options_are_preconditions_and_the_owner_configures() {
    let server = verona();
    let mut juliet = plain(&server, "juliet", "balcony");
    juliet.send(&format!(
        "<iq type='set' id='p1'>{}</iq>",
        publish(TUNE, "current", &tune("Fire"), &[])
    ));
    assert_eq!(juliet.recv_xml(), published("p1", TUNE, "current"));

    // The node is `presence`, as PEP nodes are by default (XEP-0060 §7.1.5).
    let open = publish(TUNE, "current", &tune("Ice"), &[("pubsub#access_model", "open")]);
    let mismatch = |text: &str| {
        format!(
            "<conflict xmlns='{STANZAS}'/><text xmlns='{STANZAS}' xml:lang='en'>{text}</text>\
             <precondition-not-met xmlns='{ERRORS}'/>"
        )
    };
    juliet.send(&format!("<iq type='set' id='p2'>{open}</iq>"));
    assert_eq!(
        juliet.recv_xml(),
        refused("p2", &open, "cancel", &mismatch("pubsub#access_model is presence"))
    );
    // Configured as asked, the publish passes (as Conversations and
    // Converse recover).
    juliet.send(&format!(
        "<iq type='set' id='c1'><pubsub xmlns='{PUBSUB}#owner'><configure node='{TUNE}'>\
         <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
         <value>http://jabber.org/protocol/pubsub#node_config</value></field>\
         <field var='pubsub#access_model'><value>open</value></field></x></configure></pubsub></iq>"
    ));
    assert_eq!(juliet.recv_xml(), done("c1"));
    juliet.send(&format!("<iq type='set' id='p3'>{open}</iq>"));
    assert_eq!(juliet.recv_xml(), published("p3", TUNE, "current"));
    // An option no node has fails as a mismatch does (XEP-0060 1.13.6).
    let odd = publish(TUNE, "current", &tune("Ice"), &[("pubsub#frobnicate", "1")]);
    juliet.send(&format!("<iq type='set' id='p4'>{odd}</iq>"));
    assert_eq!(
        juliet.recv_xml(),
        refused(
            "p4",
            &odd,
            "cancel",
            &mismatch("pubsub#frobnicate is not a node option")
        )
    );

    // Converse reads the configuration in plain pubsub...
    juliet.send(&format!(
        "<iq type='get' id='c2'><pubsub xmlns='{PUBSUB}'><configure node='{TUNE}'/></pubsub></iq>"
    ));
    assert_eq!(
        juliet.recv_xml(),
        format!(
            "<iq id='c2' type='result' to='{ME}'><pubsub xmlns='{PUBSUB}#owner'><configure node='{TUNE}'>{}\
             </configure></pubsub></iq>",
            node_config_form("open", "1", "on_sub_and_presence")
        )
    );
    // ...and sends it back with its own FORM_TYPE and no prefixes.
    juliet.send(&format!(
        "<iq type='set' id='c3'><pubsub xmlns='{PUBSUB}#owner'><configure node='{TUNE}'>\
         <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
         <value>http://jabber.org/protocol/pubsub#nodeconfig</value></field>\
         <field var='access_model'><value>presence</value></field>\
         <field var='persist_items'><value>true</value></field></x></configure></pubsub></iq>"
    ));
    assert_eq!(juliet.recv_xml(), done("c3"));
    let presence = publish(TUNE, "current", &tune("Fire"), &[("pubsub#access_model", "presence")]);
    juliet.send(&format!("<iq type='set' id='p5'>{presence}</iq>"));
    assert_eq!(juliet.recv_xml(), published("p5", TUNE, "current"));
    // A value a node cannot have.
    let authorize = format!(
        "<pubsub xmlns='{PUBSUB}#owner'><configure node='{TUNE}'><x xmlns='jabber:x:data' type='submit'>\
         <field var='pubsub#access_model'><value>authorize</value></field></x></configure></pubsub>"
    );
    juliet.send(&format!("<iq type='set' id='c4'>{authorize}</iq>"));
    assert_eq!(
        juliet.recv_xml(),
        refused(
            "c4",
            &authorize,
            "modify",
            &format!(
                "<not-acceptable xmlns='{STANZAS}'/>\
                 <text xmlns='{STANZAS}' xml:lang='en'>pubsub#access_model cannot be authorize</text>"
            )
        )
    );
}

#[test]
fn items_follow_the_access_model_and_the_owner_alone_publishes() {
    let server = verona();
    let mut juliet = plain(&server, "juliet", "balcony");
    let mut romeo = plain(&server, "romeo", "orchard");
    let mut tybalt = plain(&server, "tybalt", "street");
    for c in [&mut juliet, &mut romeo, &mut tybalt] {
        c.sync();
    }
    juliet.send(&format!(
        "<iq type='set' id='p1'>{}</iq>",
        publish(TUNE, "current", &tune("Fire"), &[])
    ));
    assert_eq!(juliet.recv_xml(), published("p1", TUNE, "current"));

    romeo.send(&format!(
        "<iq type='get' id='i1' to='juliet@localhost'>{}</iq>",
        items_request(TUNE)
    ));
    assert_eq!(
        romeo.recv_xml(),
        format!(
            "<iq id='i1' type='result' from='juliet@localhost' to='romeo@localhost/orchard'>\
             <pubsub xmlns='{PUBSUB}'><items node='{TUNE}'>{}</items></pubsub></iq>",
            item("current", &tune("Fire"))
        )
    );
    tybalt.send(&format!(
        "<iq type='get' id='i2' to='juliet@localhost'>{}</iq>",
        items_request(TUNE)
    ));
    assert_eq!(
        tybalt.recv_xml(),
        format!(
            "<iq id='i2' type='error' from='juliet@localhost' to='tybalt@localhost/street'>{}\
             <error type='auth'><not-authorized xmlns='{STANZAS}'/>\
             <presence-subscription-required xmlns='{ERRORS}'/></error></iq>",
            items_request(TUNE)
        )
    );
    let none = items_request("urn:example:none");
    romeo.send(&format!("<iq type='get' id='i3' to='juliet@localhost'>{none}</iq>"));
    assert_eq!(
        romeo.recv_xml(),
        format!(
            "<iq id='i3' type='error' from='juliet@localhost' to='romeo@localhost/orchard'>{none}\
             <error type='cancel'><item-not-found xmlns='{STANZAS}'/></error></iq>"
        )
    );
    let theirs = publish(TUNE, "current", &tune("Swords"), &[]);
    tybalt.send(&format!("<iq type='set' id='x1' to='juliet@localhost'>{theirs}</iq>"));
    assert_eq!(
        tybalt.recv_xml(),
        format!(
            "<iq id='x1' type='error' from='juliet@localhost' to='tybalt@localhost/street'>{theirs}\
             <error type='auth'><forbidden xmlns='{STANZAS}'/></error></iq>"
        )
    );
    let subscribe = format!("<pubsub xmlns='{PUBSUB}'><subscribe node='{TUNE}' jid='romeo@localhost'/></pubsub>");
    romeo.send(&format!(
        "<iq type='set' id='s1' to='juliet@localhost'>{subscribe}</iq>"
    ));
    assert_eq!(
        romeo.recv_xml(),
        format!(
            "<iq id='s1' type='error' from='juliet@localhost' to='romeo@localhost/orchard'>{subscribe}\
             <error type='cancel'><feature-not-implemented xmlns='{STANZAS}'/>\
             <unsupported xmlns='{ERRORS}' feature='subscribe'/></error></iq>"
        )
    );

    // Disco: the account is a PEP service, its items the nodes one may see.
    romeo.send(
        "<iq type='get' id='d1' to='juliet@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    );
    let info = romeo.recv_xml();
    assert!(
        info.contains("<identity category='account' type='registered'/><identity category='pubsub' type='pep'/>"),
        "{info}"
    );
    assert!(
        info.contains("<feature var='http://jabber.org/protocol/pubsub#publish-options'/>"),
        "{info}"
    );
    let disco_items = "<query xmlns='http://jabber.org/protocol/disco#items'/>";
    romeo.send(&format!(
        "<iq type='get' id='d2' to='juliet@localhost'>{disco_items}</iq>"
    ));
    assert_eq!(
        romeo.recv_xml(),
        format!(
            "<iq id='d2' type='result' from='juliet@localhost' to='romeo@localhost/orchard'>\
             <query xmlns='http://jabber.org/protocol/disco#items'>\
             <item jid='juliet@localhost' node='{TUNE}'/></query></iq>"
        )
    );
    tybalt.send(&format!(
        "<iq type='get' id='d3' to='juliet@localhost'>{disco_items}</iq>"
    ));
    assert_eq!(
        tybalt.recv_xml(),
        format!("<iq id='d3' type='result' from='juliet@localhost' to='tybalt@localhost/street'>{disco_items}</iq>")
    );
}

#[test]
fn retractions_purges_and_deletions_are_notified_and_trimming_is_silent() {
    let server = verona();
    let list = "urn:example:list";
    let mut juliet = plain(&server, "juliet", "balcony");
    let mut romeo = online(&server, "romeo", "orchard", &["urn:example:list+notify"], true);
    juliet.sync();
    let to_romeo = "romeo@localhost/orchard";
    let entry = |id: &str| format!("<entry xmlns='urn:example'>{id}</entry>");

    // Created and configured at once: two items kept.
    juliet.send(&format!(
        "<iq type='set' id='c1'><pubsub xmlns='{PUBSUB}'><create node='{list}'/><configure>\
         <x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
         <value>http://jabber.org/protocol/pubsub#node_config</value></field>\
         <field var='pubsub#max_items'><value>2</value></field></x></configure></pubsub></iq>"
    ));
    assert_eq!(juliet.recv_xml(), done("c1"));
    for (i, id) in ["a", "b"].into_iter().enumerate() {
        juliet.send(&format!(
            "<iq type='set' id='p{i}'>{}</iq>",
            publish(list, id, &entry(id), &[])
        ));
        assert_eq!(juliet.recv_xml(), published(&format!("p{i}"), list, id));
        assert_eq!(romeo.recv_xml(), event(to_romeo, list, &item(id, &entry(id))));
    }
    // A third: the oldest goes, silently (as in Prosody and ejabberd).
    juliet.send(&format!(
        "<iq type='set' id='p2'>{}</iq>",
        publish(list, "c", &entry("c"), &[])
    ));
    assert_eq!(juliet.recv_xml(), published("p2", list, "c"));
    assert_eq!(romeo.recv_xml(), event(to_romeo, list, &item("c", &entry("c"))));
    juliet.send(&format!(
        "<iq type='get' id='i0'><pubsub xmlns='{PUBSUB}'><items node='{list}'/></pubsub></iq>"
    ));
    assert_eq!(
        juliet.recv_xml(),
        format!(
            "<iq id='i0' type='result' to='juliet@localhost/balcony'><pubsub xmlns='{PUBSUB}'>\
             <items node='{list}'>{}{}</items></pubsub></iq>",
            item("b", &entry("b")),
            item("c", &entry("c"))
        )
    );

    juliet.send(&format!(
        "<iq type='set' id='r1'><pubsub xmlns='{PUBSUB}'><retract node='{list}' notify='true'>\
         <item id='b'/></retract></pubsub></iq>"
    ));
    assert_eq!(juliet.recv_xml(), done("r1"));
    assert_eq!(romeo.recv_xml(), event(to_romeo, list, "<retract id='b'/>"));
    let retract_again = format!("<pubsub xmlns='{PUBSUB}'><retract node='{list}'><item id='b'/></retract></pubsub>");
    juliet.send(&format!("<iq type='set' id='r2'>{retract_again}</iq>"));
    assert_eq!(
        juliet.recv_xml(),
        refused(
            "r2",
            &retract_again,
            "cancel",
            &format!("<item-not-found xmlns='{STANZAS}'/>")
        )
    );
    juliet.send(&format!("<iq type='get' id='i1'>{}</iq>", items_request(list)));
    assert_eq!(
        juliet.recv_xml(),
        format!(
            "<iq id='i1' type='result' to='{ME}'><pubsub xmlns='{PUBSUB}'><items node='{list}'>{}</items></pubsub></iq>",
            item("c", &entry("c"))
        )
    );

    let owner_event = |child: &str| {
        format!(
            "<message to='{to_romeo}' from='juliet@localhost' type='headline'>\
             <event xmlns='http://jabber.org/protocol/pubsub#event'>{child}</event></message>"
        )
    };
    juliet.send(&format!(
        "<iq type='set' id='u1'><pubsub xmlns='{PUBSUB}#owner'><purge node='{list}'/></pubsub></iq>"
    ));
    assert_eq!(juliet.recv_xml(), done("u1"));
    assert_eq!(romeo.recv_xml(), owner_event(&format!("<purge node='{list}'/>")));
    juliet.send(&format!("<iq type='get' id='i2'>{}</iq>", items_request(list)));
    assert_eq!(
        juliet.recv_xml(),
        format!("<iq id='i2' type='result' to='{ME}'><pubsub xmlns='{PUBSUB}'><items node='{list}'/></pubsub></iq>")
    );

    juliet.send(&format!(
        "<iq type='set' id='x1'><pubsub xmlns='{PUBSUB}#owner'><delete node='{list}'/></pubsub></iq>"
    ));
    assert_eq!(juliet.recv_xml(), done("x1"));
    assert_eq!(romeo.recv_xml(), owner_event(&format!("<delete node='{list}'/>")));
    juliet.send(&format!("<iq type='get' id='i3'>{}</iq>", items_request(list)));
    assert_eq!(
        juliet.recv_xml(),
        refused(
            "i3",
            &items_request(list),
            "cancel",
            &format!("<item-not-found xmlns='{STANZAS}'/>")
        )
    );
    romeo.expect_nothing();
}

#[test]
fn the_last_item_comes_with_interest_and_a_delay() {
    let server = verona();
    let mut juliet = plain(&server, "juliet", "balcony");
    let happy = "<mood xmlns='http://jabber.org/protocol/mood'><happy/></mood>";
    juliet.send(&format!(
        "<iq type='set' id='p1'>{}</iq>",
        publish(TUNE, "current", &tune("Fire"), &[])
    ));
    assert_eq!(juliet.recv_xml(), published("p1", TUNE, "current"));
    juliet.send(&format!(
        "<iq type='set' id='p2'>{}</iq>",
        publish(MOOD, "m1", happy, &[])
    ));
    assert_eq!(juliet.recv_xml(), published("p2", MOOD, "m1"));

    let last = |to: &str, node: &str, item: &str, stamp: &str| {
        format!(
            "<message to='{to}' from='juliet@localhost' type='headline'>\
             <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='{node}'>{item}</items></event>\
             <delay xmlns='urn:xmpp:delay' stamp='{stamp}'/></message>"
        )
    };
    // Romeo comes online wanting tunes: he gets hers, once his caps are known.
    let mut romeo = server.login("romeo", "romeo", "orchard");
    romeo.announce_caps(&[TUNE_NOTIFY]);
    romeo.answer_caps_query(&[TUNE_NOTIFY]);
    let got = romeo.recv_until(|e| e.name() == "message");
    assert_eq!(
        got.to_xml_in(ns::CLIENT),
        last(
            "romeo@localhost/orchard",
            TUNE,
            &item("current", &tune("Fire")),
            &stamp_of(&got)
        )
    );
    romeo.expect_no_messages();
    // Now moods too: only the mood comes.
    romeo.announce_caps(&[TUNE_NOTIFY, MOOD_NOTIFY]);
    romeo.answer_caps_query(&[TUNE_NOTIFY, MOOD_NOTIFY]);
    let got = romeo.recv_until(|e| e.name() == "message");
    assert_eq!(
        got.to_xml_in(ns::CLIENT),
        last("romeo@localhost/orchard", MOOD, &item("m1", happy), &stamp_of(&got))
    );
    romeo.expect_no_messages();
    // Her own new session gets them too; Tybalt, who does not follow
    // her, gets neither.
    let mut own = server.login("juliet", "juliet", "chamber");
    own.announce_caps(&[TUNE_NOTIFY, MOOD_NOTIFY]);
    let mut got: Vec<String> = (0..2)
        .map(|_| {
            let m = own.recv_until(|e| e.name() == "message");
            let stamp = stamp_of(&m);
            (m.to_xml_in(ns::CLIENT), stamp)
        })
        .map(|(xml, stamp)| xml.replace(&stamp, "STAMP"))
        .collect();
    got.sort();
    let mut want = vec![
        last("juliet@localhost/chamber", MOOD, &item("m1", happy), "STAMP"),
        last(
            "juliet@localhost/chamber",
            TUNE,
            &item("current", &tune("Fire")),
            "STAMP",
        ),
    ];
    want.sort();
    assert_eq!(got, want);
    let mut tybalt = server.login("tybalt", "tybalt", "street");
    tybalt.announce_caps(&[TUNE_NOTIFY, MOOD_NOTIFY]);
    tybalt.expect_no_messages();
}

#[test]
fn limits_refuse_with_their_conditions() {
    let server = TestServer::with_config(|c| {
        c.pep.max_nodes = 2;
        c.pep.max_item_bytes = 200;
        c.pep.publish_rate = 1;
        c.pep.publish_burst = 3;
    });
    server.add_user("juliet", "juliet");
    let mut juliet = plain(&server, "juliet", "balcony");
    let create = |node: &str| format!("<pubsub xmlns='{PUBSUB}'><create node='{node}'/></pubsub>");
    for node in ["urn:example:1", "urn:example:2"] {
        juliet.send(&format!("<iq type='set' id='c'>{}</iq>", create(node)));
        assert_eq!(juliet.recv_xml(), done("c"));
    }
    let too_many = format!("<not-allowed xmlns='{STANZAS}'/><max-nodes-exceeded xmlns='{ERRORS}'/>");
    juliet.send(&format!("<iq type='set' id='c3'>{}</iq>", create("urn:example:3")));
    assert_eq!(
        juliet.recv_xml(),
        refused("c3", &create("urn:example:3"), "cancel", &too_many)
    );
    // Publishes count against the rate from here: three at once at most.
    let big = publish("urn:example:1", "big", &tune(&"x".repeat(200)), &[]);
    juliet.send(&format!("<iq type='set' id='p1'>{big}</iq>"));
    assert_eq!(
        juliet.recv_xml(),
        refused(
            "p1",
            &big,
            "modify",
            &format!("<not-acceptable xmlns='{STANZAS}'/><payload-too-big xmlns='{ERRORS}'/>")
        )
    );
    let third = publish("urn:example:3", "one", &tune("One"), &[]);
    juliet.send(&format!("<iq type='set' id='p2'>{third}</iq>"));
    assert_eq!(juliet.recv_xml(), refused("p2", &third, "cancel", &too_many));
    // Sent at once: the first takes the last token, the last finds none.
    // Refusals are answered at once, so replies may come in another order.
    let fast = publish("urn:example:1", "current", &tune("Fast"), &[]);
    let slow_down = format!(
        "<resource-constraint xmlns='{STANZAS}'/>\
         <text xmlns='{STANZAS}' xml:lang='en'>publishing too fast</text>"
    );
    let all: String = (0..6)
        .map(|i| format!("<iq type='set' id='r{i}'>{fast}</iq>"))
        .collect();
    juliet.send(&all);
    let mut replies = std::collections::HashMap::new();
    for _ in 0..6 {
        let reply = juliet.recv();
        replies.insert(reply.attr("id").unwrap().to_owned(), reply.to_xml_in(ns::CLIENT));
    }
    for i in 0..6 {
        let id = format!("r{i}");
        let ok = published(&id, "urn:example:1", "current");
        let refusal = refused(&id, &fast, "wait", &slow_down);
        let reply = &replies[&id];
        match i {
            0 => assert_eq!(*reply, ok),
            5 => assert_eq!(*reply, refusal),
            _ => assert!(*reply == ok || *reply == refusal, "{reply}"),
        }
    }
}

#[test]
fn items_and_last_items_outlive_a_restart() {
    let mut server = verona();
    let mut juliet = plain(&server, "juliet", "balcony");
    juliet.send(&format!(
        "<iq type='set' id='p1'>{}</iq>",
        publish(TUNE, "current", &tune("Fire"), &[])
    ));
    assert_eq!(juliet.recv_xml(), published("p1", TUNE, "current"));
    drop(juliet);
    server.restart();

    let fire = item("current", &tune("Fire"));
    let mut romeo = server.login("romeo", "romeo", "orchard");
    romeo.announce_caps(&[TUNE_NOTIFY]);
    romeo.answer_caps_query(&[TUNE_NOTIFY]);
    let got = romeo.recv_until(|e| e.name() == "message");
    assert_eq!(
        got.to_xml_in(ns::CLIENT),
        format!(
            "<message to='romeo@localhost/orchard' from='juliet@localhost' type='headline'>\
             <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='{TUNE}'>{fire}</items></event>\
             <delay xmlns='urn:xmpp:delay' stamp='{}'/></message>",
            stamp_of(&got)
        )
    );
    romeo.send(&format!(
        "<iq type='get' id='i1' to='juliet@localhost'>{}</iq>",
        items_request(TUNE)
    ));
    assert_eq!(
        romeo.recv_until(|e| e.attr("id") == Some("i1")).to_xml_in(ns::CLIENT),
        format!(
            "<iq id='i1' type='result' from='juliet@localhost' to='romeo@localhost/orchard'>\
             <pubsub xmlns='{PUBSUB}'><items node='{TUNE}'>{fire}</items></pubsub></iq>"
        )
    );
}

#[test]
fn a_published_nick_is_the_bind_extensions() {
    let server = verona();
    let mut juliet = plain(&server, "juliet", "balcony");
    let nick = "<nick xmlns='http://jabber.org/protocol/nick'>Jules</nick>";
    juliet.send(&format!(
        "<iq type='set' id='n1'>{}</iq>",
        publish(ns::NICK, "current", nick, &[])
    ));
    assert_eq!(juliet.recv_xml(), published("n1", ns::NICK, "current"));
    let mut c = server.authenticated("juliet", "juliet");
    c.send(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>ext</resource>\
         <extval xmlns='urn:xmpp:shoal:bind-extval:0'/></bind></iq>",
    );
    assert_eq!(
        c.recv_xml(),
        "<iq id='b' type='result'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>juliet@localhost/ext</jid>\
         <nick xmlns='http://jabber.org/protocol/nick'>Jules</nick>\
         <photo-url xmlns='urn:xmpp:shoal:bind-extval:0'/></bind></iq>"
    );
}

#[test]
fn the_vcard_photo_and_the_avatar_follow_each_other() {
    let server = verona();
    let mut juliet = plain(&server, "juliet", "balcony");
    let mut romeo = online(&server, "romeo", "orchard", &["urn:xmpp:avatar:metadata+notify"], true);
    juliet.sync();
    let to_romeo = "romeo@localhost/orchard";
    let metadata = |id: &str| {
        format!("<metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='5' id='{id}' type='image/png'/></metadata>")
    };
    // Her presence again with a new photo's hash (XEP-0153), to `to`.
    let presence = |to: &str, hash: &str| {
        format!("<presence to='{to}' from='{ME}'><x xmlns='vcard-temp:x:update'><photo>{hash}</photo></x></presence>")
    };

    // A vCard photo ("hello") is published as the avatar (XEP-0398 §4.1).
    let hello = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d";
    juliet.send(
        "<iq type='set' id='v1'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE>\
         <BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard></iq>",
    );
    assert_eq!(juliet.recv_xml(), presence("juliet@localhost", hello));
    assert_eq!(juliet.recv_xml(), done("v1"));
    assert_eq!(
        romeo.recv_xml(),
        event(to_romeo, ns::AVATAR_METADATA, &item(hello, &metadata(hello)))
    );
    assert_eq!(romeo.recv_xml(), presence("romeo@localhost", hello));
    let data_request = |id: &str| {
        format!(
            "<pubsub xmlns='{PUBSUB}'><items node='{}'><item id='{id}'/></items></pubsub>",
            ns::AVATAR_DATA
        )
    };
    romeo.send(&format!(
        "<iq type='get' id='i1' to='juliet@localhost'>{}</iq>",
        data_request(hello)
    ));
    assert_eq!(
        romeo.recv_xml(),
        format!(
            "<iq id='i1' type='result' from='juliet@localhost' to='{to_romeo}'><pubsub xmlns='{PUBSUB}'>\
             <items node='{}'>{}</items></pubsub></iq>",
            ns::AVATAR_DATA,
            item(hello, "<data xmlns='urn:xmpp:avatar:data'>aGVsbG8=</data>")
        )
    );

    // A client's avatar ("world") becomes the vCard's photo (§4.2)...
    let world = "7c211433f02071597741e6ff5a8ea34789abbf43";
    let data = "<data xmlns='urn:xmpp:avatar:data'>d29ybGQ=</data>";
    juliet.send(&format!(
        "<iq type='set' id='p1'>{}</iq>",
        publish(ns::AVATAR_DATA, world, data, &[])
    ));
    assert_eq!(juliet.recv_xml(), published("p1", ns::AVATAR_DATA, world));
    juliet.send(&format!(
        "<iq type='set' id='p2'>{}</iq>",
        publish(ns::AVATAR_METADATA, world, &metadata(world), &[])
    ));
    assert_eq!(juliet.recv_xml(), presence("juliet@localhost", world));
    assert_eq!(juliet.recv_xml(), published("p2", ns::AVATAR_METADATA, world));
    assert_eq!(
        romeo.recv_xml(),
        event(to_romeo, ns::AVATAR_METADATA, &item(world, &metadata(world)))
    );
    assert_eq!(romeo.recv_xml(), presence("romeo@localhost", world));
    romeo.send("<iq type='get' id='g1' to='juliet@localhost'><vCard xmlns='vcard-temp'/></iq>");
    assert_eq!(
        romeo.recv_xml(),
        format!(
            "<iq id='g1' type='result' from='juliet@localhost' to='{to_romeo}'><vCard xmlns='vcard-temp'>\
             <PHOTO><TYPE>image/png</TYPE><BINVAL>d29ybGQ=</BINVAL></PHOTO></vCard></iq>"
        )
    );
    // ...and its hash stays in her later presence.
    juliet.send("<presence><status>new picture</status></presence>");
    assert_eq!(
        romeo.recv_xml(),
        format!(
            "<presence to='romeo@localhost' from='juliet@localhost/balcony'><status>new picture</status>\
             <x xmlns='vcard-temp:x:update'><photo>{world}</photo></x></presence>"
        )
    );
}
