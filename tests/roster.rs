//! RFC 6121 rosters and subscriptions over TCP: roster get/set/remove with
//! pushes, versioning (XEP-0237), error cases, and the subscription state
//! machine as two clients drive it, with the presence that follows it.

mod common;

use common::{Client, TestServer};
use shoal_actors::ns;

const PUSH: &str = "<iq type='set' id='push' to='";

/// A roster push to `to` carrying `item` at version `ver`.
fn push(to: &str, ver: u32, item: &str) -> String {
    format!("{PUSH}{to}'><query xmlns='jabber:iq:roster' ver='{ver}'>{item}</query></iq>")
}

/// The stanza error's type and condition.
fn error_of(el: &shoal_actors::xml::Element) -> (String, String) {
    let err = el.get_child("error", ns::CLIENT).expect("an error");
    let cond = err
        .children()
        .find(|c| c.ns() == ns::STANZAS_ERRORS && c.name() != "text")
        .unwrap();
    (err.attr("type").unwrap().to_owned(), cond.name().to_owned())
}

/// Logs in, asks for the roster (to get pushes) and sends initial presence.
fn online(server: &TestServer, user: &str, resource: &str) -> Client {
    let mut c = server.login(user, user, resource);
    c.roster();
    c.announce("<presence/>");
    c
}

/// Romeo's orchard sets `item`: orchard gets the result, then the push (as
/// Prosody and ejabberd send them), his hall the push, at version `ver`.
fn roster_set(orchard: &mut Client, hall: &mut Client, id: &str, item: &str, ver: u32, pushed: &str) {
    orchard.send(&format!(
        "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
    ));
    assert_eq!(
        orchard.recv_xml(),
        format!("<iq id='{id}' type='result' to='romeo@localhost/orchard'/>")
    );
    assert_eq!(
        common::normalise(orchard.recv_xml()),
        push("romeo@localhost/orchard", ver, pushed)
    );
    assert_eq!(hall.recv_set(1), [push("romeo@localhost/hall", ver, pushed)]);
}

#[test]
fn roster_set_update_remove_push_to_every_interested_resource() {
    let server = TestServer::start();
    server.add_user("romeo", "romeo");
    let mut orchard = server.login("romeo", "romeo", "orchard");
    let mut hall = server.login("romeo", "romeo", "hall");
    let mut uninterested = server.login("romeo", "romeo", "crypt");
    assert_eq!(orchard.roster(), "<query xmlns='jabber:iq:roster' ver='0'/>");
    assert_eq!(hall.roster(), "<query xmlns='jabber:iq:roster' ver='0'/>");

    let item = "<item jid='nurse@localhost' subscription='none' name='Nurse'><group>Servants</group><group>Capulets</group></item>";
    let set = "<item jid='Nurse@Localhost' name='Nurse'><group>Servants</group><group>Capulets</group></item>";
    roster_set(&mut orchard, &mut hall, "s1", set, 1, item);
    let renamed = "<item jid='nurse@localhost' subscription='none' name='Angelica'/>";
    roster_set(
        &mut orchard,
        &mut hall,
        "s2",
        "<item jid='nurse@localhost' name='Angelica'/>",
        2,
        renamed,
    );
    let removed = "<item jid='nurse@localhost' subscription='remove'/>";
    roster_set(&mut orchard, &mut hall, "s3", removed, 3, removed);

    orchard.send("<iq type='set' id='s4'><query xmlns='jabber:iq:roster'><item jid='nurse@localhost' subscription='remove'/></query></iq>");
    assert_eq!(error_of(&orchard.recv()), ("cancel".into(), "item-not-found".into()));
    assert_eq!(orchard.roster(), "<query xmlns='jabber:iq:roster' ver='3'/>");
    // A resource that never asked for the roster gets no pushes.
    uninterested.expect_nothing();
}

#[test]
fn versioned_roster_get() {
    let server = TestServer::start();
    server.add_user("romeo", "romeo");
    let mut c = server.login("romeo", "romeo", "orchard");
    c.roster();
    for (id, item) in [
        ("a", "<item jid='nurse@localhost'/>"),
        ("b", "<item jid='tybalt@localhost'/>"),
        ("c", "<item jid='nurse@localhost' subscription='remove'/>"),
    ] {
        c.send(&format!(
            "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
        ));
        c.recv_set(2);
    }
    let mut fresh = server.login("romeo", "romeo", "fresh");
    // Up to date: an empty result and nothing else.
    fresh.send("<iq type='get' id='v3'><query xmlns='jabber:iq:roster' ver='3'/></iq>");
    assert_eq!(
        fresh.recv_xml(),
        "<iq id='v3' type='result' to='romeo@localhost/fresh'/>"
    );
    fresh.expect_nothing();
    // Behind: an empty result, then the changes as pushes, in order.
    fresh.send("<iq type='get' id='v1'><query xmlns='jabber:iq:roster' ver='1'/></iq>");
    assert_eq!(
        fresh.recv_xml(),
        "<iq id='v1' type='result' to='romeo@localhost/fresh'/>"
    );
    assert_eq!(
        common::normalise(fresh.recv_xml()),
        push(
            "romeo@localhost/fresh",
            3,
            "<item jid='tybalt@localhost' subscription='none'/>"
        )
    );
    assert_eq!(
        common::normalise(fresh.recv_xml()),
        push(
            "romeo@localhost/fresh",
            3,
            "<item jid='nurse@localhost' subscription='remove'/>"
        )
    );
    // Unknown or empty versions get the whole roster.
    for ver in ["", "999", "x"] {
        fresh.send(&format!(
            "<iq type='get' id='full'><query xmlns='jabber:iq:roster' ver='{ver}'/></iq>"
        ));
        assert_eq!(
            fresh.recv_xml(),
            "<iq id='full' type='result' to='romeo@localhost/fresh'><query xmlns='jabber:iq:roster' ver='3'>\
             <item jid='tybalt@localhost' subscription='none'/></query></iq>"
        );
    }
}

#[test]
fn malformed_roster_sets_rfc6121_2_3_3() {
    let server = TestServer::start();
    server.add_user("romeo", "romeo");
    let mut c = server.login("romeo", "romeo", "orchard");
    let cases = [
        (
            "<item jid='a@localhost'/><item jid='b@localhost'/>",
            "modify",
            "bad-request",
        ),
        ("<item jid='a@localhost' subscription='both'/>", "modify", "bad-request"),
        ("<item jid='romeo@localhost'/>", "cancel", "not-allowed"),
        (
            "<item jid='a@localhost'><group></group></item>",
            "modify",
            "not-acceptable",
        ),
        (
            "<item jid='a@localhost'><group>x</group><group>x</group></item>",
            "modify",
            "bad-request",
        ),
        ("<item jid='a@localhost/res'/>", "modify", "bad-request"),
        ("<item jid='a@b@c'/>", "modify", "jid-malformed"),
        ("<item/>", "modify", "bad-request"),
    ];
    for (item, kind, condition) in cases {
        c.send(&format!(
            "<iq type='set' id='m'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
        ));
        assert_eq!(error_of(&c.recv()), (kind.into(), condition.into()), "{item}");
    }
    // Another user's roster is not yours to read.
    c.send("<iq type='get' id='o' to='juliet@localhost'><query xmlns='jabber:iq:roster'/></iq>");
    assert_eq!(error_of(&c.recv()), ("auth".into(), "forbidden".into()));
    assert_eq!(c.roster(), "<query xmlns='jabber:iq:roster' ver='0'/>");
}

#[test]
fn mutual_subscription_dialogue_with_presence() {
    let server = TestServer::start();
    for u in ["romeo", "juliet", "nurse"] {
        server.add_user(u, u);
    }
    let mut romeo = online(&server, "romeo", "orchard");
    let mut juliet = online(&server, "juliet", "balcony");
    let mut nurse = online(&server, "nurse", "kitchen");

    // Romeo asks (None → None + Pending Out at Romeo; None + Pending In at Juliet).
    romeo.send("<presence to='juliet@localhost' type='subscribe'/>");
    assert_eq!(
        romeo.recv_set(1),
        common::sorted([push(
            "romeo@localhost/orchard",
            1,
            "<item jid='juliet@localhost' subscription='none' ask='subscribe'/>"
        )])
    );
    assert_eq!(
        juliet.recv_xml(),
        "<presence to='juliet@localhost' type='subscribe' from='romeo@localhost'/>"
    );

    // Juliet approves: Romeo now follows her and gets her presence at once.
    juliet.send("<presence to='romeo@localhost' type='subscribed'/>");
    assert_eq!(
        juliet.recv_set(1),
        common::sorted([push(
            "juliet@localhost/balcony",
            1,
            "<item jid='romeo@localhost' subscription='from'/>"
        )])
    );
    assert_eq!(
        romeo.recv_set(3),
        common::sorted([
            push(
                "romeo@localhost/orchard",
                2,
                "<item jid='juliet@localhost' subscription='to'/>"
            ),
            "<presence to='romeo@localhost' from='juliet@localhost/balcony'/>".into(),
            "<presence to='romeo@localhost' type='subscribed' from='juliet@localhost'/>".into(),
        ])
    );

    // And back: Juliet asks, Romeo approves; both are 'both'.
    juliet.send("<presence to='romeo@localhost' type='subscribe'/>");
    assert_eq!(
        juliet.recv_set(1),
        common::sorted([push(
            "juliet@localhost/balcony",
            2,
            "<item jid='romeo@localhost' subscription='from' ask='subscribe'/>"
        )])
    );
    // Pending In is not part of what Romeo's client sees: no push.
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost' type='subscribe' from='juliet@localhost'/>"
    );
    romeo.send("<presence to='juliet@localhost' type='subscribed'/>");
    assert_eq!(
        romeo.recv_set(1),
        common::sorted([push(
            "romeo@localhost/orchard",
            3,
            "<item jid='juliet@localhost' subscription='both'/>"
        )])
    );
    assert_eq!(
        juliet.recv_set(3),
        common::sorted([
            push(
                "juliet@localhost/balcony",
                3,
                "<item jid='romeo@localhost' subscription='both'/>"
            ),
            "<presence to='juliet@localhost' from='romeo@localhost/orchard'/>".into(),
            "<presence to='juliet@localhost' type='subscribed' from='romeo@localhost'/>".into(),
        ])
    );
    // A duplicate approval changes nothing and is not routed.
    romeo.send("<presence to='juliet@localhost' type='subscribed'/>");
    romeo.sync();
    juliet.expect_nothing();

    // Presence reaches the follower with show, status and priority, and the
    // sender's own resources; not a non-follower.
    juliet.send("<presence><show>away</show><status>at the window</status><priority>3</priority></presence>");
    let body = "<show>away</show><status>at the window</status><priority>3</priority></presence>";
    assert_eq!(
        romeo.recv_xml(),
        format!("<presence to='romeo@localhost' from='juliet@localhost/balcony'>{body}")
    );
    assert_eq!(
        juliet.recv_xml(),
        format!("<presence to='juliet@localhost' from='juliet@localhost/balcony'>{body}")
    );
    nurse.expect_nothing();

    // Romeo unsubscribes (Both → From): Juliet loses a follower, and her
    // available resources tell Romeo they are gone (RFC 6121 §3.3.3).
    romeo.send("<presence to='juliet@localhost' type='unsubscribe'/>");
    assert_eq!(
        romeo.recv_set(2),
        common::sorted([
            push(
                "romeo@localhost/orchard",
                4,
                "<item jid='juliet@localhost' subscription='from'/>"
            ),
            "<presence to='romeo@localhost' type='unavailable' from='juliet@localhost/balcony'/>".into(),
        ])
    );
    assert_eq!(
        juliet.recv_set(2),
        common::sorted([
            push(
                "juliet@localhost/balcony",
                4,
                "<item jid='romeo@localhost' subscription='to'/>"
            ),
            "<presence to='juliet@localhost' type='unsubscribe' from='romeo@localhost'/>".into(),
        ])
    );
    juliet.send("<presence><status>alone</status></presence>");
    juliet.recv();
    romeo.expect_nothing();

    // Romeo cancels Juliet's subscription (From → None): she gets his
    // unavailable (RFC 6121 §3.2.2).
    romeo.send("<presence to='juliet@localhost' type='unsubscribed'/>");
    assert_eq!(
        romeo.recv_set(1),
        common::sorted([push(
            "romeo@localhost/orchard",
            5,
            "<item jid='juliet@localhost' subscription='none'/>"
        )])
    );
    assert_eq!(
        juliet.recv_set(3),
        common::sorted([
            push(
                "juliet@localhost/balcony",
                5,
                "<item jid='romeo@localhost' subscription='none'/>"
            ),
            "<presence to='juliet@localhost' type='unavailable' from='romeo@localhost/orchard'/>".into(),
            "<presence to='juliet@localhost' type='unsubscribed' from='romeo@localhost'/>".into(),
        ])
    );

    // Removing an item with a subscription tells the contact (RFC 6121 §2.5.2).
    nurse.send("<presence to='juliet@localhost' type='subscribe'/>");
    nurse.recv();
    juliet.recv();
    juliet.send("<presence to='nurse@localhost' type='subscribed'/>");
    juliet.recv_set(1);
    nurse.recv_set(3);
    juliet.send("<iq type='set' id='rm'><query xmlns='jabber:iq:roster'><item jid='nurse@localhost' subscription='remove'/></query></iq>");
    // The result first, then the push.
    assert_eq!(
        juliet.recv_xml(),
        "<iq id='rm' type='result' to='juliet@localhost/balcony'/>"
    );
    assert_eq!(
        common::normalise(juliet.recv_xml()),
        push(
            "juliet@localhost/balcony",
            7,
            "<item jid='nurse@localhost' subscription='remove'/>"
        )
    );
    assert_eq!(
        nurse.recv_set(3),
        common::sorted([
            push(
                "nurse@localhost/kitchen",
                3,
                "<item jid='juliet@localhost' subscription='none'/>"
            ),
            "<presence to='nurse@localhost' type='unavailable' from='juliet@localhost/balcony'/>".into(),
            "<presence to='nurse@localhost' type='unsubscribed' from='juliet@localhost'/>".into(),
        ])
    );
}

#[test]
fn pending_requests_and_rosters_survive_a_restart() {
    let mut server = TestServer::start();
    for u in ["romeo", "juliet"] {
        server.add_user(u, u);
    }
    let mut romeo = online(&server, "romeo", "orchard");
    // Juliet is offline: the request waits for her.
    romeo.send("<presence to='juliet@localhost' type='subscribe'/>");
    romeo.recv();
    drop(romeo);
    server.restart();

    let mut romeo = online(&server, "romeo", "orchard");
    assert_eq!(
        romeo.roster(),
        "<query xmlns='jabber:iq:roster' ver='1'><item jid='juliet@localhost' subscription='none' ask='subscribe'/></query>"
    );
    let mut juliet = server.login("juliet", "juliet", "balcony");
    assert_eq!(juliet.roster(), "<query xmlns='jabber:iq:roster' ver='0'/>");
    juliet.send("<presence/>");
    assert_eq!(
        juliet.recv_set(2),
        common::sorted([
            "<presence to='juliet@localhost' from='juliet@localhost/balcony'/>",
            "<presence to='juliet@localhost' type='subscribe' from='romeo@localhost'/>",
        ])
    );
    juliet.send("<presence to='romeo@localhost' type='subscribed'/>");
    juliet.recv();
    assert_eq!(
        romeo.recv_set(3),
        common::sorted([
            push(
                "romeo@localhost/orchard",
                2,
                "<item jid='juliet@localhost' subscription='to'/>"
            ),
            "<presence to='romeo@localhost' from='juliet@localhost/balcony'/>".into(),
            "<presence to='romeo@localhost' type='subscribed' from='juliet@localhost'/>".into(),
        ])
    );
    // After another restart the subscription still carries presence.
    drop((romeo, juliet));
    server.restart();
    let mut romeo = online(&server, "romeo", "orchard");
    let mut juliet = server.login("juliet", "juliet", "balcony");
    juliet.send("<presence><show>chat</show></presence>");
    assert_eq!(
        romeo.recv_xml(),
        "<presence to='romeo@localhost' from='juliet@localhost/balcony'><show>chat</show></presence>"
    );
}

/// Every row of RFC 6121 Appendix A that a client can trigger, over TCP:
/// each consistent pair of states, and each subscription stanza the user
/// can send. Both stored states and what each client receives are checked
/// against the state machine (whose table has its own unit test).
#[test]
fn subscription_state_table_over_tcp() {
    use shoal::store::SqliteStore;
    use shoal_actors::jid::BareJid;
    use shoal_actors::roster::subscription::Direction;
    use shoal_actors::roster::{ItemChange, RosterItem, SubState, Subscription};
    use shoal_actors::stanza::PresenceType;

    let st = |sub, pending_out, pending_in| SubState {
        subscription: sub,
        pending_out,
        pending_in,
        approved: false,
    };
    // The user has pre-approved the contact (RFC 6121 §3.4).
    let pre = |s: SubState| SubState { approved: true, ..s };
    use Subscription::*;
    // (user's state, contact's state): the two views of one relationship.
    let pairs = [
        (st(None, false, false), st(None, false, false)),
        (st(None, true, false), st(None, false, true)),
        (st(None, false, true), st(None, true, false)),
        (st(None, true, true), st(None, true, true)),
        (st(To, false, false), st(From, false, false)),
        (st(To, false, true), st(From, true, false)),
        (st(From, false, false), st(To, false, false)),
        (st(From, true, false), st(To, false, true)),
        (st(Both, false, false), st(Both, false, false)),
        (pre(st(None, false, false)), st(None, false, false)),
        (pre(st(None, true, false)), st(None, false, true)),
        (pre(st(To, false, false)), st(From, false, false)),
    ];
    let kinds = [
        PresenceType::Subscribe,
        PresenceType::Subscribed,
        PresenceType::Unsubscribe,
        PresenceType::Unsubscribed,
    ];
    let server = TestServer::start();
    let names: Vec<String> = (0..pairs.len() * kinds.len())
        .flat_map(|i| [format!("u{i}"), format!("c{i}")])
        .collect();
    server.add_users(&names, "pw");
    let seed = |user: &str, contact: &str, state: SubState| {
        let jid = BareJid::new(contact, "localhost").unwrap();
        let in_roster = state != SubState::default() && state != st(None, false, true);
        let item = RosterItem {
            state,
            in_roster,
            ..RosterItem::new(jid.clone())
        };
        let change = if state == SubState::default() {
            ItemChange::Keep
        } else {
            ItemChange::Put(item)
        };
        SqliteStore::open(&server.db)
            .unwrap()
            .update_roster_item(&common::account(user), &jid, Box::new(move |_| change))
            .unwrap();
    };
    let stored = |user: &str, contact: &str| {
        let jid = BareJid::new(contact, "localhost").unwrap();
        SqliteStore::open(&server.db)
            .unwrap()
            .roster_item(&common::account(user), &jid)
            .unwrap()
            .map(|i| i.state)
            .unwrap_or_default()
    };
    let mut case = 0;
    for (user_state, contact_state) in pairs {
        for kind in kinds {
            let (u, c) = (format!("u{case}"), format!("c{case}"));
            case += 1;
            seed(&u, &c, user_state);
            seed(&c, &u, contact_state);
            let mut user = server.login(&u, "pw", "r");
            let mut contact = server.login(&c, "pw", "r");
            for client in [&mut user, &mut contact] {
                client.send("<presence/>");
                client.sync();
            }
            let mut user_pending = user.sync();
            contact.sync();

            user.send(&format!("<presence to='{c}@localhost' type='{}'/>", kind.as_str()));
            user_pending.extend(user.sync());

            // What the state machine says should happen.
            let out = user_state.transition(Direction::Outbound, kind);
            let (mut want_user, mut want_contact, mut delivered, mut approved) =
                (out.state, contact_state, false, false);
            if out.forward {
                let inbound = contact_state.transition(Direction::Inbound, kind);
                want_contact = inbound.state;
                delivered = inbound.forward;
                if inbound.auto_approve {
                    // The contact's server answers for the contact; the
                    // answer reaches the user only if it changes something.
                    let reply = want_user.transition(Direction::Inbound, PresenceType::Subscribed);
                    approved = reply.forward;
                    want_user = reply.state;
                }
            }
            let label = format!("{user_state:?} / {contact_state:?} + outbound {kind:?}");
            assert_eq!(stored(&u, &c), want_user, "user side: {label}");
            assert_eq!(stored(&c, &u), want_contact, "contact side: {label}");
            let got: Vec<String> = contact
                .sync()
                .iter()
                .filter(|e| e.attr("type") == Some(kind.as_str()))
                .map(|e| e.to_xml_in(ns::CLIENT))
                .collect();
            let expected: Vec<String> = if delivered {
                vec![format!(
                    "<presence to='{c}@localhost' type='{}' from='{u}@localhost'/>",
                    kind.as_str()
                )]
            } else {
                vec![]
            };
            assert_eq!(got, expected, "delivered to the contact: {label}");
            let auto: Vec<_> = user_pending
                .iter()
                .filter(|e| e.attr("type") == Some("subscribed"))
                .collect();
            assert_eq!(auto.len(), usize::from(approved), "auto-approval: {label}");
        }
    }
}

/// RFC 6121 §3.4, subscription pre-approval, advertised in the stream
/// features: Alice approves Bob before he asks, her roster shows it and he
/// is told nothing; his request is then approved by her server without
/// her seeing it, with pushes on both sides. A pre-approval she cancels
/// leaves the next request for her to answer.
#[test]
fn subscription_pre_approval_dialogue() {
    let server = TestServer::start();
    for u in ["alice", "bob", "carol"] {
        server.add_user(u, u);
    }
    let mut c = server.connect();
    c.open();
    c.auth_plain("alice", "alice");
    assert!(c.recv().is("success", ns::SASL));
    let features = c.open();
    assert!(features.has_child("sub", ns::PRE_APPROVAL_FEATURE), "{features}");
    drop(c);

    let mut alice = online(&server, "alice", "home");
    let mut bob = online(&server, "bob", "work");
    let mut carol = online(&server, "carol", "garden");

    alice.send("<presence to='bob@localhost' type='subscribed'/>");
    assert_eq!(
        common::normalise(alice.recv_xml()),
        push(
            "alice@localhost/home",
            1,
            "<item jid='bob@localhost' subscription='none' approved='true'/>"
        )
    );
    assert_eq!(
        alice.roster(),
        "<query xmlns='jabber:iq:roster' ver='1'><item jid='bob@localhost' subscription='none' approved='true'/></query>"
    );
    bob.expect_nothing();

    bob.send("<presence to='alice@localhost' type='subscribe'/>");
    assert_eq!(
        bob.recv_set(4),
        common::sorted([
            push(
                "bob@localhost/work",
                1,
                "<item jid='alice@localhost' subscription='none' ask='subscribe'/>"
            ),
            push(
                "bob@localhost/work",
                2,
                "<item jid='alice@localhost' subscription='to'/>"
            ),
            "<presence to='bob@localhost' type='subscribed' from='alice@localhost'/>".into(),
            "<presence to='bob@localhost' from='alice@localhost/home'/>".into(),
        ])
    );
    // The approval is used up: 'from' now, and no request reached her.
    assert_eq!(
        common::normalise(alice.recv_xml()),
        push(
            "alice@localhost/home",
            2,
            "<item jid='bob@localhost' subscription='from'/>"
        )
    );
    alice.expect_nothing();
    bob.expect_nothing();

    // Cancelled with 'unsubscribed' (the contact never knew of it).
    alice.send("<presence to='carol@localhost' type='subscribed'/>");
    assert_eq!(
        common::normalise(alice.recv_xml()),
        push(
            "alice@localhost/home",
            3,
            "<item jid='carol@localhost' subscription='none' approved='true'/>"
        )
    );
    alice.send("<presence to='carol@localhost' type='unsubscribed'/>");
    assert_eq!(
        common::normalise(alice.recv_xml()),
        push(
            "alice@localhost/home",
            4,
            "<item jid='carol@localhost' subscription='none'/>"
        )
    );
    carol.expect_nothing();
    carol.send("<presence to='alice@localhost' type='subscribe'/>");
    assert_eq!(
        carol.recv_set(1),
        [push(
            "carol@localhost/garden",
            1,
            "<item jid='alice@localhost' subscription='none' ask='subscribe'/>"
        )]
    );
    assert_eq!(
        alice.recv_xml(),
        "<presence to='alice@localhost' type='subscribe' from='carol@localhost'/>"
    );
}

/// A subscription request waiting for an offline user is stored stripped:
/// who, the status (cut at 1024 bytes, on a character boundary) and the
/// XEP-0172 nickname; nothing else the 200 KiB stanza carried.
#[test]
fn a_stored_request_is_stripped() {
    let server = TestServer::start();
    for u in ["romeo", "juliet"] {
        server.add_user(u, u);
    }
    let mut romeo = server.login("romeo", "romeo", "orchard");
    let status = format!("x{}", "é".repeat(100_000));
    romeo.send(&format!(
        "<presence to='juliet@localhost' type='subscribe' id='big'><status>{status}</status>\
         <nick xmlns='http://jabber.org/protocol/nick'>Romeo</nick>\
         <x xmlns='urn:example:junk'>{}</x></presence>",
        "j".repeat(4096)
    ));
    romeo.sync();

    let mut juliet = server.login("juliet", "juliet", "balcony");
    juliet.send("<presence/>");
    let kept = format!("x{}", "é".repeat(511));
    assert_eq!(
        juliet.recv_set(2),
        common::sorted([
            "<presence to='juliet@localhost' from='juliet@localhost/balcony'/>".to_owned(),
            format!(
                "<presence to='juliet@localhost' type='subscribe' from='romeo@localhost'><status>{kept}</status>\
                 <nick xmlns='http://jabber.org/protocol/nick'>Romeo</nick></presence>"
            ),
        ])
    );
    juliet.expect_nothing();
}

/// Past `[limits] max_pending_requests`, a request from a new contact is
/// neither stored nor delivered.
#[test]
fn pending_requests_are_capped() {
    let server = TestServer::with_config(|c| c.limits.max_pending_requests = 2);
    for u in ["victim", "s1", "s2", "s3"] {
        server.add_user(u, u);
    }
    for s in ["s1", "s2", "s3"] {
        let mut c = server.login(s, s, "r");
        c.send("<presence to='victim@localhost' type='subscribe'/>");
        c.sync();
    }
    let mut victim = server.login("victim", "victim", "r");
    victim.send("<presence/>");
    assert_eq!(
        victim.recv_set(3),
        common::sorted([
            "<presence to='victim@localhost' from='victim@localhost/r'/>",
            "<presence to='victim@localhost' type='subscribe' from='s1@localhost'/>",
            "<presence to='victim@localhost' type='subscribe' from='s2@localhost'/>",
        ])
    );
    victim.expect_nothing();
    // Online, the third one is dropped as well: it was never stored.
    let mut s3 = server.login("s3", "s3", "r");
    s3.send("<presence to='victim@localhost' type='subscribe'/>");
    s3.sync();
    victim.expect_nothing();
}

/// Many stored requests reach the user at login without overflowing a
/// small outbound queue: they are sent only while it has room.
#[test]
fn pending_requests_are_paced_at_login() {
    use shoal::store::SqliteStore;
    use shoal_actors::jid::BareJid;
    use shoal_actors::roster::{ItemChange, RosterItem, SubState};

    let server = TestServer::with_config(|c| {
        c.c2s.max_stanza_bytes = 10_000;
        c.c2s.max_outbound_bytes = 10_000;
    });
    server.add_user("victim", "victim");
    let status = "s".repeat(1000);
    let mut expected = vec!["<presence to='victim@localhost' from='victim@localhost/r'/>".to_owned()];
    let mut store = SqliteStore::open(&server.db).unwrap();
    for i in 0..60 {
        let jid = BareJid::new(&format!("f{i}"), "localhost").unwrap();
        let request = format!(
            "<presence to='victim@localhost' type='subscribe' from='{jid}'><status>{status}</status></presence>"
        );
        expected.push(request.clone());
        let item = RosterItem {
            state: SubState {
                pending_in: true,
                ..SubState::default()
            },
            pending_request: Some(request),
            ..RosterItem::new(jid.clone())
        };
        store
            .update_roster_item(
                &common::account("victim"),
                &jid,
                Box::new(move |_| ItemChange::Put(item)),
            )
            .unwrap();
    }
    // 60 KB of requests; sent at once they would overflow the 10 KB queue.
    let mut victim = server.login("victim", "victim", "r");
    victim.send("<presence/>");
    assert_eq!(victim.recv_set(61), common::sorted(expected));
    victim.expect_nothing();
}

/// `[limits] max_roster_items`: a roster set adding one more item gets
/// `<not-allowed/>`; changing an item already there still works.
#[test]
fn rosters_are_capped() {
    let server = TestServer::with_config(|c| c.limits.max_roster_items = 3);
    server.add_user("romeo", "romeo");
    let mut orchard = server.login("romeo", "romeo", "orchard");
    orchard.roster();
    let set = |c: &mut Client, id: &str, item: &str| {
        c.send(&format!(
            "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
        ))
    };
    for (ver, name) in [(1, "a"), (2, "b"), (3, "c")] {
        let item = format!("<item jid='{name}@localhost'/>");
        set(&mut orchard, name, &item);
        assert_eq!(
            orchard.recv_set(2),
            common::sorted([
                push(
                    "romeo@localhost/orchard",
                    ver,
                    &format!("<item jid='{name}@localhost' subscription='none'/>")
                ),
                format!("<iq id='{name}' type='result' to='romeo@localhost/orchard'/>"),
            ])
        );
    }
    set(&mut orchard, "d", "<item jid='d@localhost'/>");
    assert_eq!(
        orchard.recv_xml(),
        "<iq id='d' type='error' to='romeo@localhost/orchard'>\
         <query xmlns='jabber:iq:roster'><item jid='d@localhost'/></query>\
         <error type='cancel'><not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>the roster is full</text></error></iq>"
    );
    set(&mut orchard, "b2", "<item jid='b@localhost' name='Bee'/>");
    assert_eq!(
        orchard.recv_set(2),
        common::sorted([
            push(
                "romeo@localhost/orchard",
                4,
                "<item jid='b@localhost' subscription='none' name='Bee'/>"
            ),
            "<iq id='b2' type='result' to='romeo@localhost/orchard'/>".to_owned(),
        ])
    );
    orchard.expect_nothing();
}

/// Removing an account ends its subscriptions as RFC 6121 §2.5.2 would:
/// the contacts get `unsubscribe` and `unsubscribed` and their pushes, and
/// an account registered later under the same name inherits nobody. In
/// band (XEP-0077 §3.3) here; `shoal user del` goes the same way.
#[test]
fn a_removed_account_leaves_no_subscriptions_behind() {
    let server = TestServer::start();
    for u in ["romeo", "juliet"] {
        server.add_user(u, u);
    }
    server.befriend("romeo", "juliet");
    let mut juliet = online(&server, "juliet", "balcony");
    let mut romeo = online(&server, "romeo", "orchard");
    juliet.recv_until(|e| e.attr("from") == Some("romeo@localhost/orchard"));
    romeo.send("<iq type='set' id='rm' to='localhost'><query xmlns='jabber:iq:register'><remove/></query></iq>");
    romeo.recv_until(|e| e.attr("id") == Some("rm"));
    assert_eq!(romeo.expect_stream_error().0, "not-authorized");
    assert_eq!(
        juliet.recv_set(5),
        common::sorted([
            "<presence to='juliet@localhost' type='unsubscribe' from='romeo@localhost'/>".to_owned(),
            "<presence to='juliet@localhost' type='unsubscribed' from='romeo@localhost'/>".to_owned(),
            "<presence to='juliet@localhost' type='unavailable' from='romeo@localhost/orchard'/>".to_owned(),
            push(
                "juliet@localhost/balcony",
                2,
                "<item jid='romeo@localhost' subscription='to'/>"
            ),
            push(
                "juliet@localhost/balcony",
                3,
                "<item jid='romeo@localhost' subscription='none'/>"
            ),
        ])
    );
    // A new Romeo is a stranger.
    server.add_user("romeo", "again");
    let mut newcomer = server.login("romeo", "again", "orchard");
    assert_eq!(newcomer.roster(), "<query xmlns='jabber:iq:roster' ver='0'/>");
    newcomer.send("<presence/>");
    newcomer.recv_until(|e| e.name() == "presence");
    juliet.expect_nothing();
    assert_eq!(
        juliet.roster(),
        "<query xmlns='jabber:iq:roster' ver='3'><item jid='romeo@localhost' subscription='none'/></query>"
    );
}
