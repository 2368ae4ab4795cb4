//! RFC 6120 core, driven over TCP against a real server: stream
//! negotiation, SASL, binding, routing, server IQs, and bad input.

mod common;

use common::{server_caps, unsid, Client, TestServer, OPEN};
use shoal_actors::ns;
use shoal_actors::sasl::ScramHash;

const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

#[test]
fn stream_header_and_features() {
    let server = TestServer::start();
    let mut c = server.connect();
    let features = c.open();
    let header = c.header.clone().unwrap();
    assert_eq!(header.from.as_deref(), Some("localhost"));
    assert_eq!(header.version.as_deref(), Some("1.0"));
    assert_eq!(header.default_ns.as_deref(), Some(ns::CLIENT));
    assert!(header.id.as_deref().is_some_and(|id| id.len() >= 16));
    let caps = server_caps(&features);
    assert_eq!(
        features.to_xml_in(ns::CLIENT),
        format!(
            "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
             <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
             <mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism>\
             </mechanisms><register xmlns='http://jabber.org/features/iq-register'/>{caps}</stream:features>"
        )
    );
    // A restart gets a fresh stream id.
    let mut d = server.connect();
    d.open();
    assert_ne!(d.header.unwrap().id, header.id);
}

#[test]
fn register_in_band_then_log_in_with_every_mechanism() {
    let server = TestServer::start();
    let mut c = server.connect();
    c.open();
    c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='r1' type='result'><query xmlns='jabber:iq:register'><instructions>Choose a username and \
         password for use with this service.</instructions><username/><password/></query></iq>"
    );
    c.send("<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>Juliet</username><password>r0m30!</password></query></iq>");
    assert_eq!(c.recv_xml(), "<iq id='r2' type='result'/>");
    c.send("<iq type='set' id='r3'><query xmlns='jabber:iq:register'><username>juliet</username><password>x</password></query></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='r3' type='error'><query xmlns='jabber:iq:register'><username>juliet</username><password>x</password></query>\
         <error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>the username is taken</text></error></iq>"
    );

    // PLAIN on that stream.
    c.auth_plain("juliet", "r0m30!");
    assert_eq!(c.recv_xml(), "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    let features = c.open();
    let caps = server_caps(&features);
    assert_eq!(
        features.to_xml_in(ns::CLIENT),
        format!(
            "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
             <session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>\
             <ver xmlns='urn:xmpp:features:rosterver'/><sub xmlns='urn:xmpp:features:pre-approval'/>\
             <extval xmlns='urn:xmpp:shoal:bind-extval:0'/><sm xmlns='urn:xmpp:sm:3'/>\
             <csi xmlns='urn:xmpp:csi:0'/>{caps}</stream:features>"
        )
    );
    assert_eq!(c.bind(Some("balcony")), "juliet@localhost/balcony");

    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let mut s = server.connect();
        s.open();
        let success = s.auth_scram(hash, "juliet", "r0m30!");
        assert!(success.is("success", SASL), "{success}");
        s.open();
        assert!(s.bind(None).starts_with("juliet@localhost/"));
    }
}

#[test]
fn wrong_password_and_unknown_user_look_the_same() {
    let server = TestServer::start();
    server.add_user("romeo", "secret");
    let failure = "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>";
    let mut c = server.connect();
    c.open();
    c.auth_plain("romeo", "wrong");
    assert_eq!(c.recv_xml(), failure);
    c.auth_plain("nobody", "secret");
    assert_eq!(c.recv_xml(), failure);
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let mut s = server.connect();
        s.open();
        assert_eq!(s.auth_scram(hash, "romeo", "wrong").to_xml_in(ns::CLIENT), failure);
        assert_eq!(s.auth_scram(hash, "nobody", "secret").to_xml_in(ns::CLIENT), failure);
    }
    // The third failure on one stream ends it.
    c.auth_plain("romeo", "again");
    assert_eq!(c.recv_xml(), failure);
    let (condition, text) = c.expect_stream_error();
    assert_eq!(condition, "policy-violation");
    assert_eq!(text.as_deref(), Some("too many failed authentication attempts"));
}

/// The server-first-message a SCRAM-SHA-256 exchange for `user` gets,
/// split into its salt and iteration count.
fn scram_challenge(server: &TestServer, user: &str) -> (String, String) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut c = server.connect();
    c.open();
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
        b64.encode(format!("n,,n={user},r=abcdefghijkl"))
    ));
    let challenge = c.recv();
    assert!(challenge.is("challenge", SASL), "{challenge}");
    let first = String::from_utf8(b64.decode(challenge.text()).unwrap()).unwrap();
    let field = |k: &str| first.split(',').find_map(|f| f.strip_prefix(k)).unwrap().to_owned();
    (field("s="), field("i="))
}

/// RFC 5802 §9 (and XEP-0438): an unknown user must get what a real one
/// gets, the configured iteration count and a salt that does not change
/// when the server restarts.
#[test]
fn unknown_users_get_the_configured_iterations_and_the_same_salt_after_a_restart() {
    let mut server = TestServer::with_config(|c| c.auth.scram_iterations = 5000);
    shoal::store::SqliteStore::open(&server.db)
        .unwrap()
        .create_user(
            &common::account("romeo"),
            &shoal_actors::sasl::Credentials::derive("r", 5000),
        )
        .unwrap();
    assert_eq!(scram_challenge(&server, "romeo").1, "5000");
    let (salt, iterations) = scram_challenge(&server, "nobody");
    assert_eq!(iterations, "5000");
    assert_eq!(scram_challenge(&server, "nobody").0, salt);
    server.restart();
    assert_eq!(scram_challenge(&server, "nobody"), (salt, iterations));
}

#[test]
fn sasl_abort_and_unknown_mechanism() {
    let server = TestServer::start();
    server.add_user("romeo", "secret");
    let mut c = server.connect();
    c.open();
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>");
    assert_eq!(
        c.recv_xml(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-mechanism/></failure>"
    );
    // No initial response: an empty challenge, then abort.
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>");
    assert_eq!(c.recv_xml(), "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    c.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    assert_eq!(
        c.recv_xml(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><aborted/></failure>"
    );
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>not base64!</auth>");
    assert_eq!(
        c.recv_xml(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><incorrect-encoding/></failure>"
    );
    // After all that, a good login still works.
    c.auth_plain("romeo", "secret");
    assert!(c.recv().is("success", SASL));
}

#[test]
fn bind_generates_a_resource_and_answers_the_session_iq() {
    let server = TestServer::start();
    server.add_user("romeo", "secret");
    let mut c = server.authenticated("romeo", "secret");
    let jid = c.bind(None);
    let resource = jid.strip_prefix("romeo@localhost/").unwrap();
    assert!(resource.len() >= 8, "{jid}");
    c.send("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
    assert_eq!(c.recv_xml(), format!("<iq id='s1' type='result' to='{jid}'/>"));
}

#[test]
fn resource_conflict_the_new_session_wins() {
    let server = TestServer::start();
    server.add_user("romeo", "secret");
    let mut old = server.login("romeo", "secret", "orchard");
    let mut new = server.login("romeo", "secret", "orchard");
    let (condition, _) = old.expect_stream_error();
    assert_eq!(condition, "conflict");
    new.send("<message to='romeo@localhost/orchard' id='m'><body>me</body></message>");
    assert_eq!(
        unsid(new.recv_xml()),
        "<message to='romeo@localhost/orchard' id='m' from='romeo@localhost/orchard'><body>me</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='romeo@localhost'/></message>"
    );
}

#[test]
fn message_round_trip_with_from_stamped() {
    let server = TestServer::start();
    server.add_user("romeo", "r");
    server.add_user("juliet", "j");
    let mut romeo = server.login("romeo", "r", "orchard");
    let mut juliet = server.login("juliet", "j", "balcony");
    romeo.send("<message to='juliet@localhost/balcony' type='chat' id='m1'><body>Arise, fair sun</body></message>");
    // With the id the server gives every chat it delivers (XEP-0359).
    assert_eq!(
        unsid(juliet.recv_xml()),
        "<message to='juliet@localhost/balcony' type='chat' id='m1' from='romeo@localhost/orchard'>\
         <body>Arise, fair sun</body><stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/></message>"
    );
    // A from naming the sender's own bare JID is replaced by the full JID.
    juliet.send(
        "<message from='juliet@localhost' to='romeo@localhost/orchard' type='chat'><body>Ay me!</body></message>",
    );
    assert_eq!(
        unsid(romeo.recv_xml()),
        "<message from='juliet@localhost/balcony' to='romeo@localhost/orchard' type='chat'><body>Ay me!</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='romeo@localhost'/></message>"
    );
}

#[test]
fn bare_jid_messages_go_to_the_highest_priority() {
    let server = TestServer::start();
    server.add_user("romeo", "r");
    server.add_user("juliet", "j");
    let mut romeo = server.login("romeo", "r", "orchard");
    let mut low = server.login("juliet", "j", "low");
    let mut high = server.login("juliet", "j", "high");
    let mut negative = server.login("juliet", "j", "negative");
    low.send("<presence><priority>1</priority></presence>");
    high.send("<presence><priority>5</priority></presence>");
    negative.send("<presence><priority>-1</priority></presence>");
    // Each resource sees its own and its siblings' presence (RFC 6121 §4.2.2).
    for c in [&mut low, &mut high, &mut negative] {
        c.recv_until(|el| el.name() == "presence" && el.attr("from") == Some("juliet@localhost/negative"));
        c.sync();
    }
    romeo.send("<message to='juliet@localhost' type='chat' id='a'><body>1</body></message>");
    assert_eq!(
        unsid(high.recv_xml()),
        "<message to='juliet@localhost' type='chat' id='a' from='romeo@localhost/orchard'><body>1</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='juliet@localhost'/></message>"
    );
    romeo.sync();
    low.expect_no_messages();
    negative.expect_no_messages();

    // A tie: both get it.
    low.send("<presence><priority>5</priority></presence>");
    low.sync();
    romeo.send("<message to='juliet@localhost' id='b'><body>2</body></message>");
    assert_eq!(low.recv_until(|el| el.name() == "message").attr("id"), Some("b"));
    assert_eq!(high.recv_until(|el| el.name() == "message").attr("id"), Some("b"));
    romeo.sync();
    negative.expect_no_messages();

    // Only negative priority left: offline (RFC 6121 §8.5.2.2.1), so the
    // message is kept for her (XEP-0160), not given to the negative one.
    low.send("<presence type='unavailable'/>");
    high.send("<presence type='unavailable'/>");
    low.sync();
    high.sync();
    romeo.send("<message to='juliet@localhost' type='chat' id='c'><body>3</body></message>");
    romeo.expect_nothing();
    negative.expect_no_messages();
}

#[test]
fn addressing_what_is_not_there() {
    let server = TestServer::start();
    server.add_user("romeo", "r");
    server.add_user("juliet", "j");
    let mut romeo = server.login("romeo", "r", "orchard");
    romeo.send("<iq type='get' id='v1' to='juliet@localhost/balcony'><query xmlns='jabber:iq:version'/></iq>");
    assert_eq!(
        romeo.recv_xml(),
        "<iq id='v1' type='error' from='juliet@localhost/balcony' to='romeo@localhost/orchard'>\
         <query xmlns='jabber:iq:version'/><error type='cancel'>\
         <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    );
    romeo.send("<message to='nobody@localhost' id='m'><body>?</body></message>");
    assert_eq!(
        romeo.recv_xml(),
        "<message id='m' type='error' from='nobody@localhost' to='romeo@localhost/orchard'>\
         <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    );
    romeo.send("<message to='juliet@elsewhere.example' id='s'><body>?</body></message>");
    assert_eq!(
        romeo.recv_xml(),
        "<message id='s' type='error' from='juliet@elsewhere.example' to='romeo@localhost/orchard'>\
         <error type='cancel'><remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    );
    romeo.send("<message to='a@b@c' id='bad'><body>?</body></message>");
    let reply = romeo.recv();
    assert_eq!(reply.attr("type"), Some("error"));
    assert!(reply
        .get_child("error", ns::CLIENT)
        .unwrap()
        .has_child("jid-malformed", ns::STANZAS_ERRORS));
    // Errors are never answered with errors.
    romeo.send("<message to='nobody@localhost' type='error' id='e'/>");
    romeo.expect_nothing();
}

#[test]
fn server_iqs_disco_ping_version() {
    let server = TestServer::start();
    server.add_user("romeo", "r");
    let mut c = server.login("romeo", "r", "orchard");
    c.send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='d1' type='result' from='localhost' to='romeo@localhost/orchard'>\
         <query xmlns='http://jabber.org/protocol/disco#info'><identity category='server' type='im' name='Shoal'/>\
         <feature var='http://jabber.org/protocol/disco#info'/><feature var='http://jabber.org/protocol/disco#items'/>\
         <feature var='jabber:iq:last'/><feature var='jabber:iq:register'/><feature var='jabber:iq:version'/>\
         <feature var='urn:xmpp:blocking'/><feature var='urn:xmpp:carbons:2'/><feature var='urn:xmpp:ping'/></query></iq>"
    );
    // The MUC service is on by default ([muc]).
    c.send("<iq type='get' id='d2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='d2' type='result' from='localhost' to='romeo@localhost/orchard'>\
         <query xmlns='http://jabber.org/protocol/disco#items'>\
         <item jid='conference.localhost' name='Chatrooms'/></query></iq>"
    );
    c.send("<iq type='get' id='d3' to='romeo@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    assert_eq!(
        c.recv_xml(),
        format!(
            "<iq id='d3' type='result' from='romeo@localhost' to='romeo@localhost/orchard'>\
         <query xmlns='http://jabber.org/protocol/disco#info'><identity category='account' type='registered'/>\
         <identity category='pubsub' type='pep'/>\
         <feature var='http://jabber.org/protocol/disco#info'/><feature var='http://jabber.org/protocol/disco#items'/>\
         {}<feature var='jabber:iq:private'/><feature var='urn:xmpp:blocking'/>\
         <feature var='urn:xmpp:bookmarks:1#compat'/><feature var='urn:xmpp:bookmarks:1#compat-pep'/>\
         <feature var='urn:xmpp:mam:2'/><feature var='urn:xmpp:mam:2#extended'/>\
         <feature var='urn:xmpp:pep-vcard-conversion:0'/>\
         <feature var='urn:xmpp:ping'/><feature var='urn:xmpp:sid:0'/><feature var='vcard-temp'/></query></iq>",
            // XEP-0163 on the account: XEP-0060's features of the subset offered.
            [
                "",
                "#access-open",
                "#access-presence",
                "#access-roster",
                "#access-whitelist",
                "#auto-create",
                "#config-node",
                "#create-and-configure",
                "#delete-items",
                "#delete-nodes",
                "#filtered-notifications",
                "#item-ids",
                "#last-published",
                "#modify-affiliations",
                "#persistent-items",
                "#presence-notifications",
                "#publish",
                "#publish-options",
                "#purge-nodes",
                "#retrieve-default",
                "#retrieve-items",
            ]
            .map(|f| format!("<feature var='http://jabber.org/protocol/pubsub{f}'/>"))
            .concat()
        )
    );
    c.send("<iq type='get' id='p0' to='romeo@localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='p0' type='result' from='romeo@localhost' to='romeo@localhost/orchard'/>"
    );
    c.send("<iq type='get' id='vc' to='nobody@localhost'><vCard xmlns='vcard-temp'/></iq>");
    let err = c.recv();
    assert_eq!(err.attr("type"), Some("error"));
    assert!(err
        .get_child("error", ns::CLIENT)
        .unwrap()
        .has_child("service-unavailable", ns::STANZAS_ERRORS));
    c.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='p1' type='result' from='localhost' to='romeo@localhost/orchard'/>"
    );
    c.send("<iq type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>");
    assert_eq!(
        c.recv_xml(),
        format!(
            "<iq id='v1' type='result' from='localhost' to='romeo@localhost/orchard'><query xmlns='jabber:iq:version'>\
             <name>Shoal</name><version>{}</version></query></iq>",
            env!("CARGO_PKG_VERSION")
        )
    );
    // XEP-0012 §5: the server's uptime.
    c.send("<iq type='get' id='l1' to='localhost'><query xmlns='jabber:iq:last'/></iq>");
    let last = c.recv();
    let seconds: u64 = last
        .get_child("query", "jabber:iq:last")
        .and_then(|q| q.attr("seconds"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no uptime in seconds: {last}"));
    assert_eq!(
        last.to_xml_in(ns::CLIENT),
        format!(
            "<iq id='l1' type='result' from='localhost' to='romeo@localhost/orchard'>\
             <query xmlns='jabber:iq:last' seconds='{seconds}'/></iq>"
        )
    );
    c.send("<iq type='get' id='u1' to='localhost'><query xmlns='urn:example:unknown'/></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='u1' type='error' from='localhost' to='romeo@localhost/orchard'><query xmlns='urn:example:unknown'/>\
         <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    );
    // An IQ to one's own account (no 'to') is answered without a 'from'.
    c.send("<iq type='get' id='u2'><query xmlns='urn:example:unknown'/></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='u2' type='error' to='romeo@localhost/orchard'><query xmlns='urn:example:unknown'/>\
         <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    );
    c.send("<iq type='get' id='bad'/>");
    assert_eq!(
        c.recv_xml(),
        "<iq type='error' id='bad'><error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>an IQ get or set has exactly one child</text></error></iq>"
    );
}

#[test]
fn closing_handshake() {
    let server = TestServer::start();
    server.add_user("romeo", "r");
    let mut c = server.login("romeo", "r", "orchard");
    c.send("</stream:stream>");
    assert_eq!(c.next_frame(), Some(shoal_actors::codec::Frame::StreamClose));
    assert_eq!(c.next_frame(), None);
}

/// Each hostile or broken input gets its stream error, and a well-behaved
/// session on the same server keeps working throughout.
#[test]
fn bad_input_gets_its_stream_error_and_disturbs_nobody() {
    let server = TestServer::with_config(|c| c.c2s.max_stanza_bytes = 16 * 1024);
    server.add_user("romeo", "r");
    server.add_user("juliet", "j");
    let mut bystander = server.login("juliet", "j", "balcony");
    let stream_ns = "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'";
    let cases: Vec<(String, bool, &str)> = vec![
        // (input, log in first, expected condition)
        ("<message><body>unclosed</x></message>".into(), true, "not-well-formed"),
        (
            "<message><body>&undefined;</body></message>".into(),
            true,
            "not-well-formed",
        ),
        ("<message><!-- comment --></message>".into(), true, "restricted-xml"),
        ("<!DOCTYPE x [<!ENTITY lol 'lol'>]>".into(), true, "restricted-xml"),
        ("<?php evil() ?>".into(), true, "restricted-xml"),
        (
            format!("<message><body>{}</body></message>", "x".repeat(20 * 1024)),
            true,
            "policy-violation",
        ),
        (format!("<message>{}", "<a>".repeat(200)), true, "policy-violation"),
        (
            "<message><body>before auth</body></message>".into(),
            false,
            "not-authorized",
        ),
        (
            "<iq type='get' id='x'><query xmlns='jabber:iq:roster'/></iq>".into(),
            false,
            "not-authorized",
        ),
        (
            "<message from='juliet@localhost/balcony' to='romeo@localhost'><body>spoof</body></message>".into(),
            true,
            "invalid-from",
        ),
        (
            "<message from='juliet@localhost' to='romeo@localhost'><body>spoof</body></message>".into(),
            true,
            "invalid-from",
        ),
        ("<foo/>".into(), true, "unsupported-stanza-type"),
        ("plain text".into(), true, "bad-format"),
    ];
    for (i, (input, login, expected)) in cases.iter().enumerate() {
        let mut c = if *login {
            server.login("romeo", "r", &format!("r{i}"))
        } else {
            let mut c = server.connect();
            c.open();
            c
        };
        c.send_raw(input.as_bytes());
        let (condition, _) = c.expect_stream_error();
        assert_eq!(&condition, expected, "input: {}", &input[..input.len().min(80)]);
        bystander.send(&format!(
            "<message to='juliet@localhost/balcony' id='b{i}'><body>still here</body></message>"
        ));
        assert_eq!(bystander.recv().attr("id"), Some(format!("b{i}").as_str()));
    }
    // Broken stream headers.
    let headers = [
        (format!("<stream:stream to='elsewhere.example' version='1.0' {stream_ns}>"), "host-unknown"),
        ("<stream:stream to='localhost' version='1.0' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>".to_owned(), "invalid-namespace"),
        ("<stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='urn:wrong'>".to_owned(), "invalid-namespace"),
        (format!("<stream:stream to='localhost' {stream_ns}>"), "unsupported-version"),
        (format!("<stream:stream to='localhost' version='0.9' {stream_ns}>"), "unsupported-version"),
        ("<message/>".to_owned(), "not-well-formed"),
    ];
    for (header, expected) in headers {
        let mut c = server.connect();
        c.send_raw(header.as_bytes());
        let (condition, _) = c.expect_stream_error();
        assert_eq!(condition, expected, "header: {header}");
        // The error comes after a header of our own.
        assert_eq!(c.header.as_ref().and_then(|h| h.from.as_deref()), Some("localhost"));
    }
    bystander.send("<message to='juliet@localhost/balcony' id='end'><body>still here</body></message>");
    assert_eq!(bystander.recv().attr("id"), Some("end"));
}

#[test]
fn stanza_split_into_single_bytes_arrives_whole() {
    let server = TestServer::start();
    server.add_user("romeo", "r");
    server.add_user("juliet", "j");
    let mut romeo = server.login("romeo", "r", "orchard");
    let mut juliet = server.login("juliet", "j", "balcony");
    let msg = "<message to='juliet@localhost/balcony' id='u'><body>Señor — 😘</body></message>";
    for b in msg.as_bytes() {
        romeo.send_raw(&[*b]);
    }
    assert_eq!(
        juliet.recv().get_child("body", ns::CLIENT).unwrap().text(),
        "Señor — 😘"
    );
}

#[test]
fn password_change_and_account_removal_in_band() {
    let server = TestServer::start();
    server.add_user("romeo", "old");
    let mut c = server.login("romeo", "old", "orchard");
    let mut other = server.login("romeo", "old", "stolen");
    c.send("<iq type='set' id='pw' to='localhost'><query xmlns='jabber:iq:register'><username>romeo</username><password>new</password></query></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='pw' type='result' from='localhost' to='romeo@localhost/orchard'/>"
    );
    // Any other session of the account must authenticate again.
    assert_eq!(
        other.expect_stream_error(),
        ("reset".to_owned(), Some("password changed".to_owned()))
    );
    let mut fresh = server.connect();
    fresh.open();
    fresh.auth_plain("romeo", "old");
    assert!(fresh.recv().is("failure", SASL));
    fresh.auth_plain("romeo", "new");
    assert!(fresh.recv().is("success", SASL));

    c.send("<iq type='set' id='rm' to='localhost'><query xmlns='jabber:iq:register'><remove/></query></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='rm' type='result' from='localhost' to='romeo@localhost/orchard'/>"
    );
    let (condition, _) = c.expect_stream_error();
    assert_eq!(condition, "not-authorized");
    let mut gone = server.connect();
    gone.open();
    gone.auth_plain("romeo", "new");
    assert!(gone.recv().is("failure", SASL));
}

/// In-band registration is rate-limited per source network: a few
/// accounts, then `<resource-constraint/>`; another network is not slowed.
#[test]
fn registrations_are_limited_per_source_network() {
    let server = TestServer::with_config(|c| c.registration.max_per_network = 2);
    let register = |c: &mut Client, user: &str| {
        c.send(&format!(
            "<iq type='set' id='r-{user}'><query xmlns='jabber:iq:register'>\
             <username>{user}</username><password>pw</password></query></iq>"
        ));
        c.recv()
    };
    let mut c = server.connect();
    c.open();
    for user in ["one", "two"] {
        assert_eq!(register(&mut c, user).attr("type"), Some("result"));
    }
    let refused = register(&mut c, "three");
    assert_eq!(refused.attr("type"), Some("error"), "{refused}");
    assert!(
        refused
            .to_xml_in(ns::CLIENT)
            .contains("<error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"),
        "{refused}"
    );
    let mut elsewhere = Client::connect_from(server.addr, "127.0.0.2".parse().unwrap());
    elsewhere.open();
    assert_eq!(register(&mut elsewhere, "three").attr("type"), Some("result"));
}

#[test]
fn registration_can_be_turned_off() {
    let server = TestServer::with_config(|c| c.registration.enabled = Some(false));
    let mut c = server.connect();
    let features = c.open();
    assert!(!features.has_child("register", ns::REGISTER_FEATURE));
    c.send("<iq type='set' id='r'><query xmlns='jabber:iq:register'><username>x</username><password>y</password></query></iq>");
    assert_eq!(c.expect_stream_error().0, "not-authorized");
}

#[test]
fn shutdown_closes_every_stream() {
    let mut server = TestServer::start();
    server.add_user("romeo", "r");
    let mut bound = server.login("romeo", "r", "orchard");
    let mut fresh = server.connect();
    fresh.open();
    server.stop();
    assert_eq!(bound.expect_stream_error().0, "system-shutdown");
    assert_eq!(fresh.expect_stream_error().0, "system-shutdown");
    assert!(
        std::net::TcpStream::connect(server.addr).is_err(),
        "the listener is closed"
    );
}

#[test]
fn too_many_resources() {
    let server = TestServer::with_config(|c| c.sessions.max_per_user = 2);
    server.add_user("romeo", "r");
    let _a = server.login("romeo", "r", "a");
    let _b = server.login("romeo", "r", "b");
    let mut c = server.authenticated("romeo", "r");
    c.send(
        "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>c</resource></bind></iq>",
    );
    assert_eq!(
        c.recv_xml(),
        "<iq id='bind' type='error'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>c</resource></bind>\
         <error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>too many sessions for this account</text></error></iq>"
    );
    let _ = OPEN;
    let _ = Client::connect;
}
