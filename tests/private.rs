//! XEP-0049 Private XML Storage over TCP: elements stored, read back by
//! any of the account's sessions and after a restart, forgotten by an empty
//! set; the errors of §3; and XEP-0048 bookmarks kept there, as legacy
//! clients (Gajim, Conversations without PEP bookmarks) keep them.

mod common;

use common::{Client, TestServer};

const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

fn server_with(users: &[&str]) -> TestServer {
    let server = TestServer::start();
    for u in users {
        server.add_user(u, u);
    }
    server
}

/// `inner` in a `<query xmlns='jabber:iq:private'/>`.
fn query(inner: &str) -> String {
    format!("<query xmlns='jabber:iq:private'>{inner}</query>")
}

/// Sends a get or set of `inner` without `to` (the client's own account);
/// returns the reply.
fn private(c: &mut Client, kind: &str, inner: &str) -> String {
    let id = c.id();
    c.send(&format!("<iq type='{kind}' id='{id}'>{}</iq>", query(inner)));
    c.recv_xml().replace(&format!("id='{id}'"), "id='ID'")
}

/// The result of a get, to `to`.
fn result(to: &str, inner: &str) -> String {
    format!("<iq id='ID' type='result' to='{to}'>{}</iq>", query(inner))
}

fn set_result(to: &str) -> String {
    format!("<iq id='ID' type='result' to='{to}'/>")
}

/// An error with an explanation, as the handler gives it.
fn error(kind: &str, condition: &str, text: &str) -> String {
    format!(
        "<error type='{kind}'><{condition} xmlns='{STANZAS}'/>\
         <text xmlns='{STANZAS}' xml:lang='en'>{text}</text></error>"
    )
}

const BALCONY: &str = "juliet@localhost/balcony";

const PREFS: &str = "<exodus xmlns='exodus:prefs'><defaultnick>Jules</defaultnick></exodus>";

#[test]
fn stored_elements_come_back_to_every_session_of_the_account() {
    let server = server_with(&["juliet"]);
    let mut balcony = server.login("juliet", "juliet", "balcony");
    let mut chamber = server.login("juliet", "juliet", "chamber");

    // Nothing stored yet: the element asked for comes back empty.
    assert_eq!(
        private(&mut balcony, "get", "<exodus xmlns='exodus:prefs'/>"),
        result(BALCONY, "<exodus xmlns='exodus:prefs'/>")
    );
    assert_eq!(private(&mut balcony, "set", PREFS), set_result(BALCONY));
    assert_eq!(
        private(&mut balcony, "get", "<exodus xmlns='exodus:prefs'/>"),
        result(BALCONY, PREFS)
    );
    assert_eq!(
        private(&mut chamber, "get", "<exodus xmlns='exodus:prefs'/>"),
        result("juliet@localhost/chamber", PREFS)
    );

    // Keyed by name and namespace: another element is another key, and a
    // text-only element (XEP-0083's roster delimiter, which Psi and Gajim
    // keep here) is stored as it came.
    assert_eq!(
        private(&mut balcony, "get", "<roster xmlns='roster:delimiter'/>"),
        result(BALCONY, "<roster xmlns='roster:delimiter'/>")
    );
    let delimiter = "<roster xmlns='roster:delimiter'>::</roster>";
    assert_eq!(private(&mut balcony, "set", delimiter), set_result(BALCONY));
    assert_eq!(
        private(&mut chamber, "get", "<roster xmlns='roster:delimiter'/>"),
        result("juliet@localhost/chamber", delimiter)
    );
    assert_eq!(
        private(&mut balcony, "get", "<exodus xmlns='exodus:prefs'/>"),
        result(BALCONY, PREFS)
    );

    // A set replaces; an empty set forgets.
    let changed = "<exodus xmlns='exodus:prefs'><defaultnick>J.</defaultnick></exodus>";
    assert_eq!(
        private(&mut chamber, "set", changed),
        set_result("juliet@localhost/chamber")
    );
    assert_eq!(
        private(&mut balcony, "get", "<exodus xmlns='exodus:prefs'/>"),
        result(BALCONY, changed)
    );
    assert_eq!(
        private(&mut balcony, "set", "<exodus xmlns='exodus:prefs'/>"),
        set_result(BALCONY)
    );
    assert_eq!(
        private(&mut chamber, "get", "<exodus xmlns='exodus:prefs'/>"),
        result("juliet@localhost/chamber", "<exodus xmlns='exodus:prefs'/>")
    );
    // Nobody else was told anything.
    balcony.expect_nothing();
    chamber.expect_nothing();
}

#[test]
fn another_accounts_private_data_is_forbidden() {
    let server = server_with(&["juliet", "romeo"]);
    let mut juliet = server.login("juliet", "juliet", "balcony");
    let mut romeo = server.login("romeo", "romeo", "orchard");
    assert_eq!(private(&mut juliet, "set", PREFS), set_result(BALCONY));

    let forbidden = |inner: &str| {
        format!(
            "<iq id='r1' type='error' from='juliet@localhost' to='romeo@localhost/orchard'>{}\
             <error type='auth'><forbidden xmlns='{STANZAS}'/></error></iq>",
            query(inner)
        )
    };
    romeo.send(&format!(
        "<iq type='get' id='r1' to='juliet@localhost'>{}</iq>",
        query("<exodus xmlns='exodus:prefs'/>")
    ));
    assert_eq!(romeo.recv_xml(), forbidden("<exodus xmlns='exodus:prefs'/>"));
    let tampered = "<exodus xmlns='exodus:prefs'><defaultnick>Romeo's</defaultnick></exodus>";
    romeo.send(&format!(
        "<iq type='set' id='r1' to='juliet@localhost'>{}</iq>",
        query(tampered)
    ));
    assert_eq!(romeo.recv_xml(), forbidden(tampered));

    // Hers is unchanged, and his own is his.
    assert_eq!(
        private(&mut juliet, "get", "<exodus xmlns='exodus:prefs'/>"),
        result(BALCONY, PREFS)
    );
    assert_eq!(
        private(&mut romeo, "get", "<exodus xmlns='exodus:prefs'/>"),
        result("romeo@localhost/orchard", "<exodus xmlns='exodus:prefs'/>")
    );
    // Addressed to her own bare JID, it is hers: answered from it.
    juliet.send(&format!(
        "<iq type='get' id='j1' to='juliet@localhost'>{}</iq>",
        query("<exodus xmlns='exodus:prefs'/>")
    ));
    assert_eq!(
        juliet.recv_xml(),
        format!(
            "<iq id='j1' type='result' from='juliet@localhost' to='{BALCONY}'>{}</iq>",
            query(PREFS)
        )
    );
}

#[test]
fn a_query_holds_one_element_in_a_namespace_of_its_own() {
    let server = server_with(&["juliet"]);
    let mut juliet = server.login("juliet", "juliet", "balcony");
    let refused =
        |inner: &str, error: String| format!("<iq id='ID' type='error' to='{BALCONY}'>{}{error}</iq>", query(inner));
    let one = || {
        error(
            "modify",
            "bad-request",
            "exactly one element is stored or fetched at a time",
        )
    };
    let reserved = || {
        error(
            "modify",
            "not-acceptable",
            "elements in jabber:iq:private or jabber:client are not stored",
        )
    };

    let two = "<storage xmlns='storage:bookmarks'/><exodus xmlns='exodus:prefs'/>";
    assert_eq!(private(&mut juliet, "get", two), refused(two, one()));
    let two_set = "<storage xmlns='storage:bookmarks'><conference jid='a@conference.localhost'/></storage>\
                   <exodus xmlns='exodus:prefs'>x</exodus>";
    assert_eq!(private(&mut juliet, "set", two_set), refused(two_set, one()));
    juliet.send("<iq type='get' id='e0'><query xmlns='jabber:iq:private'/></iq>");
    assert_eq!(
        juliet.recv_xml(),
        format!(
            "<iq id='e0' type='error' to='{BALCONY}'><query xmlns='jabber:iq:private'/>{}</iq>",
            one()
        )
    );

    // XEP-0049 §3: an element in jabber:client, or in jabber:iq:private
    // (one without a namespace of its own is in the query's).
    let client = "<x xmlns='jabber:client'>hi</x>";
    assert_eq!(private(&mut juliet, "set", client), refused(client, reserved()));
    assert_eq!(private(&mut juliet, "get", "<data/>"), refused("<data/>", reserved()));
    // Nothing of it was stored.
    assert_eq!(
        private(&mut juliet, "get", "<storage xmlns='storage:bookmarks'/>"),
        result(BALCONY, "<storage xmlns='storage:bookmarks'/>")
    );
}

#[test]
fn private_data_survives_a_restart() {
    let mut server = server_with(&["juliet"]);
    {
        let mut juliet = server.login("juliet", "juliet", "balcony");
        assert_eq!(private(&mut juliet, "set", PREFS), set_result(BALCONY));
    }
    server.restart();
    let mut juliet = server.login("juliet", "juliet", "balcony");
    assert_eq!(
        private(&mut juliet, "get", "<exodus xmlns='exodus:prefs'/>"),
        result(BALCONY, PREFS)
    );
}

/// XEP-0048 bookmarks in private storage, as Gajim and Conversations keep
/// them on a server without PEP bookmarks: the whole list is set at once,
/// read back whole at the next login. They are XEP-0402 items underneath
/// (XEP-0411, tests/bookmarks.rs): rooms come back as sent, `autojoin`
/// always written; a `<url/>` has no XEP-0402 form and is dropped.
#[test]
fn legacy_bookmarks_round_trip() {
    let server = server_with(&["juliet"]);
    let rooms = "<conference jid='council@conference.localhost' autojoin='true' name='Council of Verona'>\
                 <nick>Jules</nick><password>montague</password></conference>\
                 <conference jid='balcony@conference.localhost' autojoin='false'/>";
    let storage = format!(
        "<storage xmlns='storage:bookmarks'>{rooms}<url name='Verona' url='https://verona.example/'/></storage>"
    );
    {
        let mut juliet = server.login("juliet", "juliet", "balcony");
        // The client reads the list before it writes it.
        assert_eq!(
            private(&mut juliet, "get", "<storage xmlns='storage:bookmarks'/>"),
            result(BALCONY, "<storage xmlns='storage:bookmarks'/>")
        );
        assert_eq!(private(&mut juliet, "set", &storage), set_result(BALCONY));
    }
    let mut juliet = server.login("juliet", "juliet", "chamber");
    assert_eq!(
        private(&mut juliet, "get", "<storage xmlns='storage:bookmarks'/>"),
        result(
            "juliet@localhost/chamber",
            &format!("<storage xmlns='storage:bookmarks'>{rooms}</storage>")
        )
    );
    // One bookmark removed: the list is replaced whole.
    let fewer = "<storage xmlns='storage:bookmarks'>\
                 <conference jid='balcony@conference.localhost' autojoin='false'/></storage>";
    assert_eq!(
        private(&mut juliet, "set", fewer),
        set_result("juliet@localhost/chamber")
    );
    assert_eq!(
        private(&mut juliet, "get", "<storage xmlns='storage:bookmarks'/>"),
        result("juliet@localhost/chamber", fewer)
    );
}
