//! XEP-0402 PEP Native Bookmarks over TCP, and their XEP-0411 views
//! (XEP-0402's `#compat` and `#compat-pep`): Conversations' publish-options
//! create the node and match it again; legacy XEP-0048 bookmarks, as
//! private XML (XEP-0049) or as the PEP node `storage:bookmarks`, are
//! generated from the XEP-0402 items and replace them, each change
//! notified as a publish or a retraction is.
//!
//! juliet's balcony session is a XEP-0402 client (`+notify`), her chamber
//! one a legacy client (not even available: its IQs need no presence);
//! romeo is her contact (`both`).

mod common;

use common::{node_config_form, pubsub_publish as publish, Client, TestServer};

const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";
const BOOKMARKS_NOTIFY: &str = "urn:xmpp:bookmarks:1+notify";
const LEGACY: &str = "storage:bookmarks";
const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const ME: &str = "juliet@localhost/balcony";
const CHAMBER: &str = "juliet@localhost/chamber";
const COUNCIL: &str = "council@conference.localhost";
const BALCONY: &str = "balcony@conference.localhost";
const ORCHARD: &str = "orchard@conference.localhost";

/// Conversations' publish-options for bookmarks
/// (`PublishOptions.persistentWhitelistAccessMaxItems`).
const CONVERSATIONS: &[(&str, &str)] = &[
    ("pubsub#persist_items", "true"),
    ("pubsub#max_items", "max"),
    ("pubsub#send_last_published_item", "never"),
    ("pubsub#access_model", "whitelist"),
    ("pubsub#notify_delete", "true"),
    ("pubsub#notify_retract", "true"),
];

/// Bookmarks as a XEP-0402 client publishes them.
const COUNCIL_2: &str =
    "<conference xmlns='urn:xmpp:bookmarks:1' name='Council of Verona' autojoin='true'><nick>Jules</nick></conference>";
const BALCONY_2: &str = "<conference xmlns='urn:xmpp:bookmarks:1' name='Balcony'/>";

fn verona() -> TestServer {
    let server = TestServer::start();
    for u in ["juliet", "romeo"] {
        server.add_user(u, u);
    }
    server.befriend("juliet", "romeo");
    server
}

/// juliet at `balcony`, a XEP-0402 client: available with caps asking for
/// bookmark notifications.
fn modern(server: &TestServer) -> Client {
    let mut c = server.login("juliet", "juliet", "balcony");
    c.announce_caps(&[BOOKMARKS_NOTIFY]);
    c.answer_caps_query(&[BOOKMARKS_NOTIFY]);
    c.sync();
    c
}

fn items_request(node: &str) -> String {
    format!("<pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub>")
}

/// A result to `to` around `payload`, its id read as `ID`.
fn result(to: &str, payload: &str) -> String {
    format!("<iq id='ID' type='result' to='{to}'>{payload}</iq>")
}

/// `<items node>` around `inner`, in a pubsub result.
fn items(node: &str, inner: &str) -> String {
    format!("<pubsub xmlns='{PUBSUB}'><items node='{node}'>{inner}</items></pubsub>")
}

/// A publish's result payload.
fn published(node: &str, id: &str) -> String {
    format!("<pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{id}'/></publish></pubsub>")
}

/// `inner` in a `<query xmlns='jabber:iq:private'/>`.
fn private(inner: &str) -> String {
    format!("<query xmlns='jabber:iq:private'>{inner}</query>")
}

/// Legacy bookmarks around `rooms`.
fn storage(rooms: &str) -> String {
    if rooms.is_empty() {
        return format!("<storage xmlns='{LEGACY}'/>");
    }
    format!("<storage xmlns='{LEGACY}'>{rooms}</storage>")
}

/// A bookmark notification to juliet's balcony: `<items node>` around `inner`.
fn event(inner: &str) -> String {
    format!(
        "<message to='{ME}' from='juliet@localhost' type='headline'>\
         <event xmlns='http://jabber.org/protocol/pubsub#event'><items node='{BOOKMARKS}'>{inner}</items>\
         </event></message>"
    )
}

/// `<item id>` around `payload`.
fn item(id: &str, payload: &str) -> String {
    format!("<item id='{id}'>{payload}</item>")
}

/// Sends an IQ of `kind` around `payload` (to the client's own account)
/// and returns the next stanza, the reply, its id read as `ID`.
fn ask(c: &mut Client, kind: &str, payload: &str) -> String {
    let id = c.id();
    c.send(&format!("<iq type='{kind}' id='{id}'>{payload}</iq>"));
    c.recv_xml().replace(&format!("id='{id}'"), "id='ID'")
}

#[test]
fn conversations_options_create_the_node_and_match_it_again() {
    let server = verona();
    let mut juliet = modern(&server);

    // The first publish creates the node with the options...
    let first = publish(BOOKMARKS, COUNCIL, COUNCIL_2, CONVERSATIONS);
    juliet.send(&format!("<iq type='set' id='p1'>{first}</iq>"));
    assert_eq!(juliet.recv_xml(), event(&item(COUNCIL, COUNCIL_2)));
    assert_eq!(
        juliet.recv_xml(),
        format!(
            "<iq id='p1' type='result' to='{ME}'>{}</iq>",
            published(BOOKMARKS, COUNCIL)
        )
    );
    juliet.send(&format!(
        "<iq type='get' id='c1'><pubsub xmlns='{PUBSUB}#owner'><configure node='{BOOKMARKS}'/></pubsub></iq>"
    ));
    assert_eq!(
        juliet.recv_xml(),
        format!(
            "<iq id='c1' type='result' to='{ME}'><pubsub xmlns='{PUBSUB}#owner'><configure node='{BOOKMARKS}'>{}\
             </configure></pubsub></iq>",
            node_config_form("whitelist", "max", "never")
        )
    );
    // ...and the next one's options match it (no precondition-not-met).
    let second = publish(BOOKMARKS, BALCONY, BALCONY_2, CONVERSATIONS);
    juliet.send(&format!("<iq type='set' id='p2'>{second}</iq>"));
    assert_eq!(juliet.recv_xml(), event(&item(BALCONY, BALCONY_2)));
    assert_eq!(
        juliet.recv_xml(),
        format!(
            "<iq id='p2' type='result' to='{ME}'>{}</iq>",
            published(BOOKMARKS, BALCONY)
        )
    );
    let both = format!("{}{}", item(COUNCIL, COUNCIL_2), item(BALCONY, BALCONY_2));
    assert_eq!(
        ask(&mut juliet, "get", &items_request(BOOKMARKS)),
        result(ME, &items(BOOKMARKS, &both))
    );

    // The legacy views show the same rooms, in the same order.
    let legacy = storage(&format!(
        "<conference jid='{COUNCIL}' autojoin='true' name='Council of Verona'><nick>Jules</nick></conference>\
         <conference jid='{BALCONY}' autojoin='false' name='Balcony'/>"
    ));
    assert_eq!(
        ask(&mut juliet, "get", &private(&storage(""))),
        result(ME, &private(&legacy))
    );
    assert_eq!(
        ask(&mut juliet, "get", &items_request(LEGACY)),
        result(ME, &items(LEGACY, &item("current", &legacy)))
    );
    juliet.expect_nothing();

    // Nobody else reads them, in any form.
    let mut romeo = server.login("romeo", "romeo", "orchard");
    let refused = |id: &str, payload: &str, kind: &str, error: &str| {
        format!(
            "<iq id='{id}' type='error' from='juliet@localhost' to='romeo@localhost/orchard'>{payload}\
             <error type='{kind}'>{error}</error></iq>"
        )
    };
    romeo.send(&format!(
        "<iq type='get' id='r1' to='juliet@localhost'>{}</iq>",
        items_request(BOOKMARKS)
    ));
    assert_eq!(
        romeo.recv_xml(),
        refused(
            "r1",
            &items_request(BOOKMARKS),
            "cancel",
            &format!("<not-allowed xmlns='{STANZAS}'/><closed-node xmlns='{ERRORS}'/>")
        )
    );
    // Not the owner: the legacy node is asked as any node, and there is none.
    romeo.send(&format!(
        "<iq type='get' id='r2' to='juliet@localhost'>{}</iq>",
        items_request(LEGACY)
    ));
    assert_eq!(
        romeo.recv_xml(),
        refused(
            "r2",
            &items_request(LEGACY),
            "cancel",
            &format!("<item-not-found xmlns='{STANZAS}'/>")
        )
    );
    romeo.send(&format!(
        "<iq type='get' id='r3' to='juliet@localhost'>{}</iq>",
        private(&storage(""))
    ));
    assert_eq!(
        romeo.recv_xml(),
        refused(
            "r3",
            &private(&storage("")),
            "auth",
            &format!("<forbidden xmlns='{STANZAS}'/>")
        )
    );
    juliet.expect_nothing();
}

#[test]
fn a_legacy_private_set_replaces_the_items_with_notifications() {
    let server = verona();
    let mut juliet = modern(&server);
    let mut legacy = server.login("juliet", "juliet", "chamber");
    for (i, (room, payload)) in [(COUNCIL, COUNCIL_2), (BALCONY, BALCONY_2)].into_iter().enumerate() {
        juliet.send(&format!(
            "<iq type='set' id='p{i}'>{}</iq>",
            publish(BOOKMARKS, room, payload, CONVERSATIONS)
        ));
        assert_eq!(juliet.recv_xml(), event(&item(room, payload)));
        assert_eq!(
            juliet.recv_xml(),
            format!(
                "<iq id='p{i}' type='result' to='{ME}'>{}</iq>",
                published(BOOKMARKS, room)
            )
        );
    }

    // Two rooms: the balcony as it was, the orchard new (autojoin `1`);
    // the council is gone, and the URL has no XEP-0402 form.
    let set = storage(&format!(
        "<conference jid='{BALCONY}' autojoin='false' name='Balcony'/>\
         <conference jid='{ORCHARD}' autojoin='1' name='Orchard'><nick>Jules</nick>\
         <password>capulet</password></conference>\
         <url name='Verona' url='https://verona.example/'/>"
    ));
    assert_eq!(
        ask(&mut legacy, "set", &private(&set)),
        format!("<iq id='ID' type='result' to='{CHAMBER}'/>")
    );
    // The new room is published, the dropped one retracted; the one
    // unchanged is not notified again.
    let orchard = "<conference xmlns='urn:xmpp:bookmarks:1' name='Orchard' autojoin='true'>\
                   <nick>Jules</nick><password>capulet</password></conference>";
    assert_eq!(juliet.recv_xml(), event(&item(ORCHARD, orchard)));
    assert_eq!(juliet.recv_xml(), event(&format!("<retract id='{COUNCIL}'/>")));
    juliet.expect_nothing();

    // Exactly those two are left, for both kinds of client.
    let left = format!("{}{}", item(BALCONY, BALCONY_2), item(ORCHARD, orchard));
    assert_eq!(
        ask(&mut juliet, "get", &items_request(BOOKMARKS)),
        result(ME, &items(BOOKMARKS, &left))
    );
    assert_eq!(
        ask(&mut legacy, "get", &private(&storage(""))),
        result(
            CHAMBER,
            &private(&storage(&format!(
                "<conference jid='{BALCONY}' autojoin='false' name='Balcony'/>\
                 <conference jid='{ORCHARD}' autojoin='true' name='Orchard'><nick>Jules</nick>\
                 <password>capulet</password></conference>"
            )))
        )
    );

    // No rooms: each is retracted.
    assert_eq!(
        ask(&mut legacy, "set", &private(&storage(""))),
        format!("<iq id='ID' type='result' to='{CHAMBER}'/>")
    );
    assert_eq!(juliet.recv_xml(), event(&format!("<retract id='{BALCONY}'/>")));
    assert_eq!(juliet.recv_xml(), event(&format!("<retract id='{ORCHARD}'/>")));
    assert_eq!(
        ask(&mut juliet, "get", &items_request(BOOKMARKS)),
        result(
            ME,
            &format!("<pubsub xmlns='{PUBSUB}'><items node='{BOOKMARKS}'/></pubsub>")
        )
    );
    for c in [&mut juliet, &mut legacy] {
        c.expect_nothing();
    }
}

#[test]
fn the_legacy_pep_node_is_a_view_too() {
    let server = verona();
    let mut juliet = modern(&server);
    let mut legacy = server.login("juliet", "juliet", "chamber");

    // No bookmarks yet: the one item, empty.
    assert_eq!(
        ask(&mut legacy, "get", &items_request(LEGACY)),
        result(CHAMBER, &items(LEGACY, &item("current", &storage(""))))
    );
    // A publish, with the options older Conversations sent (not used: the
    // items have XEP-0402's), creates the XEP-0402 items.
    let council = storage(&format!(
        "<conference jid='{COUNCIL}' autojoin='true' name='Council of Verona'><nick>Jules</nick></conference>"
    ));
    let options = [("pubsub#persist_items", "true"), ("pubsub#access_model", "whitelist")];
    assert_eq!(
        ask(&mut legacy, "set", &publish(LEGACY, "current", &council, &options)),
        result(CHAMBER, &published(LEGACY, "current"))
    );
    assert_eq!(juliet.recv_xml(), event(&item(COUNCIL, COUNCIL_2)));
    assert_eq!(
        ask(&mut juliet, "get", &items_request(BOOKMARKS)),
        result(ME, &items(BOOKMARKS, &item(COUNCIL, COUNCIL_2)))
    );
    assert_eq!(
        ask(&mut legacy, "get", &items_request(LEGACY)),
        result(CHAMBER, &items(LEGACY, &item("current", &council)))
    );
    // The same as private XML.
    assert_eq!(
        ask(&mut legacy, "get", &private(&storage(""))),
        result(CHAMBER, &private(&council))
    );

    // What is not legacy bookmarks is refused, and changes nothing.
    let other = publish(LEGACY, "current", "<x xmlns='urn:example'/>", &[]);
    assert_eq!(
        ask(&mut legacy, "set", &other),
        format!(
            "<iq id='ID' type='error' to='{CHAMBER}'>{other}<error type='modify'>\
             <bad-request xmlns='{STANZAS}'/><invalid-payload xmlns='{ERRORS}'/></error></iq>"
        )
    );
    let full = publish(
        LEGACY,
        "current",
        &storage(&format!("<conference jid='{COUNCIL}/Jules'/>")),
        &[],
    );
    assert_eq!(
        ask(&mut legacy, "set", &full),
        format!(
            "<iq id='ID' type='error' to='{CHAMBER}'>{full}<error type='modify'><bad-request xmlns='{STANZAS}'/>\
             <text xmlns='{STANZAS}' xml:lang='en'>a bookmark's jid must be a room's bare JID, \
             not '{COUNCIL}/Jules'</text></error></iq>"
        )
    );
    assert_eq!(
        ask(&mut juliet, "get", &items_request(BOOKMARKS)),
        result(ME, &items(BOOKMARKS, &item(COUNCIL, COUNCIL_2)))
    );
    for c in [&mut juliet, &mut legacy] {
        c.expect_nothing();
    }
}

#[test]
fn more_rooms_than_a_node_keeps_are_refused() {
    let server = TestServer::with_config(|c| c.pep.max_items = 2);
    server.add_user("juliet", "juliet");
    let mut legacy = server.login("juliet", "juliet", "chamber");
    let three = storage(&format!(
        "<conference jid='{COUNCIL}'/><conference jid='{BALCONY}'/><conference jid='{ORCHARD}'/>"
    ));
    assert_eq!(
        ask(&mut legacy, "set", &private(&three)),
        format!(
            "<iq id='ID' type='error' to='{CHAMBER}'>{}<error type='modify'><policy-violation xmlns='{STANZAS}'/>\
             <text xmlns='{STANZAS}' xml:lang='en'>3 bookmarks, more than the 2 an account keeps</text></error></iq>",
            private(&three)
        )
    );
    assert_eq!(
        ask(&mut legacy, "get", &private(&storage(""))),
        result(CHAMBER, &private(&storage("")))
    );
}

/// Without PEP there are no XEP-0402 bookmarks: legacy ones are plain
/// private XML, kept as sent (the URL too), and no `#compat` is offered.
#[test]
fn without_pep_legacy_bookmarks_are_plain_private_xml() {
    let server = TestServer::with_config(|c| c.pep.enabled = false);
    server.add_user("juliet", "juliet");
    let mut legacy = server.login("juliet", "juliet", "chamber");
    let kept = storage(&format!(
        "<conference jid='{COUNCIL}' autojoin='1'/><url name='Verona' url='https://verona.example/'/>"
    ));
    assert_eq!(
        ask(&mut legacy, "set", &private(&kept)),
        format!("<iq id='ID' type='result' to='{CHAMBER}'/>")
    );
    assert_eq!(
        ask(&mut legacy, "get", &private(&storage(""))),
        result(CHAMBER, &private(&kept))
    );
    let info = ask(
        &mut legacy,
        "get",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    assert!(info.contains("<feature var='jabber:iq:private'/>"), "{info}");
    assert!(!info.contains(BOOKMARKS), "{info}");
}
