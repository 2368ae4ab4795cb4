//! Federation between two Shoal servers in one test (RFC 6120 server
//! streams, XEP-0220 dialback over TLS): `a.test` and `b.test` on
//! loopback, each finding the other, and the other's chatrooms
//! (`conference.a.test`, `conference.b.test`), through `[s2s.hosts]`.
//! Dialogues assert the exact stanzas each side's users receive.

mod common;

use std::net::{SocketAddr, TcpListener};

use base64::Engine;
use common::{unsid, Client, TestServer};
use shoal::Config;
use shoal_actors::ns;

/// A loopback address with a port nobody listens on now.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A server for `domain`, taking other servers' streams on `listen`, and
/// finding each of `peers` at its address.
fn server(
    domain: &str,
    listen: SocketAddr,
    peers: &[(&str, SocketAddr)],
    edit: impl FnOnce(&mut Config),
) -> TestServer {
    TestServer::with_config(|c| {
        c.domain = Some(domain.into());
        c.s2s.listen = vec![listen];
        for (peer, addr) in peers {
            c.s2s.hosts.insert((*peer).into(), *addr);
        }
        c.s2s.reconnect_after_secs = 1;
        // Exact stanzas: no archive ids stamped on them.
        c.mam.enabled = false;
        edit(c);
    })
}

/// `a.test` and `b.test`, federated; each finds the other's chatrooms
/// (a published service's domain) at the other's address, as the SRV
/// records of `conference.a.test` would say.
fn pair() -> (TestServer, TestServer) {
    let (a_s2s, b_s2s) = (free_addr(), free_addr());
    let a = server(
        "a.test",
        a_s2s,
        &[("b.test", b_s2s), ("conference.b.test", b_s2s)],
        |_| {},
    );
    let b = server(
        "b.test",
        b_s2s,
        &[("a.test", a_s2s), ("conference.a.test", a_s2s)],
        |_| {},
    );
    a.add_user("alice", "pw-a");
    b.add_user("bob", "pw-b");
    (a, b)
}

/// The running server's streams with others (`shoal s2s list`), the
/// seconds in each state and the bytes queued left out (they vary with
/// timing).
fn s2s_list(server: &TestServer) -> Vec<String> {
    let lines = shoal::control::request(&server.db.with_extension("sock"), "list-s2s")
        .expect("the control socket")
        .expect("a running server");
    lines
        .iter()
        .map(|l| {
            let mut fields: Vec<&str> = l.splitn(9, ' ').collect();
            (fields[6], fields[7]) = ("N", "Q");
            fields.join(" ")
        })
        .collect()
}

fn online(server: &TestServer, user: &str, password: &str) -> Client {
    let mut c = server.login(user, password, "r");
    c.announce("<presence/>");
    c
}

fn is_message(el: &shoal_actors::xml::Element) -> bool {
    el.name() == "message"
}

/// The next stanza, without the recipient's server's XEP-0359 stanza id
/// (random).
fn recv_unstamped(c: &mut Client) -> String {
    let mut el = c.recv();
    el.remove_children(|e| e.name() == "stanza-id");
    el.to_xml_in(ns::CLIENT)
}

#[test]
fn messages_and_iqs_cross_both_ways() {
    let (a, b) = pair();
    let mut alice = online(&a, "alice", "pw-a");
    let mut bob = online(&b, "bob", "pw-b");

    // The first stanza waits while the link comes up (TLS, dialback both
    // ways), then goes.
    alice.send("<message to='bob@b.test' type='chat' id='m1'><body>hello bob</body></message>");
    assert_eq!(
        recv_unstamped(&mut bob),
        "<message to='bob@b.test' type='chat' id='m1' from='alice@a.test/r'><body>hello bob</body></message>"
    );
    bob.send("<message to='alice@a.test/r' type='chat' id='m2'><body>hi alice</body></message>");
    assert_eq!(
        recv_unstamped(&mut alice),
        "<message to='alice@a.test/r' type='chat' id='m2' from='bob@b.test/r'><body>hi alice</body></message>"
    );

    // An IQ to a remote user's resource, and its answer.
    alice.send("<iq type='get' id='q1' to='bob@b.test/r'><query xmlns='jabber:iq:version'/></iq>");
    assert_eq!(
        bob.recv_xml(),
        "<iq type='get' id='q1' to='bob@b.test/r' from='alice@a.test/r'><query xmlns='jabber:iq:version'/></iq>"
    );
    bob.send("<iq type='result' id='q1' to='alice@a.test/r'/>");
    assert_eq!(
        alice.recv_xml(),
        "<iq type='result' id='q1' to='alice@a.test/r' from='bob@b.test/r'/>"
    );

    // An IQ to the remote server itself.
    bob.send("<iq type='get' id='p1' to='a.test'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(
        bob.recv_xml(),
        "<iq id='p1' type='result' from='a.test' to='bob@b.test/r'/>"
    );

    // A remote user who does not exist: the remote server answers.
    alice.send("<iq type='get' id='q2' to='nobody@b.test/x'><ping xmlns='urn:xmpp:ping'/></iq>");
    let err = alice.recv();
    assert_eq!(err.attr("type"), Some("error"), "{err}");
    assert_eq!(err.attr("from"), Some("nobody@b.test/x"));
    assert!(
        err.get_child("error", ns::CLIENT)
            .unwrap()
            .get_child("service-unavailable", ns::STANZAS_ERRORS)
            .is_some(),
        "{err}"
    );
    alice.expect_nothing();
    bob.expect_nothing();

    // One link each way, each an inbound stream on the other side.
    assert_eq!(
        s2s_list(&a),
        [
            "s2s in a.test b.test dialback tls N Q up",
            "s2s out a.test b.test dialback tls N Q up"
        ]
    );
}

#[test]
fn contacts_on_two_servers_subscribe_and_see_each_others_presence() {
    let (a, b) = pair();
    let mut alice = online(&a, "alice", "pw-a");
    let mut bob = online(&b, "bob", "pw-b");

    alice.send("<presence to='bob@b.test' type='subscribe'/>");
    let request = bob.recv_until(|e| e.name() == "presence");
    assert_eq!(
        request.to_xml_in(ns::CLIENT),
        "<presence to='bob@b.test' type='subscribe' from='alice@a.test'/>"
    );
    bob.send("<presence to='alice@a.test' type='subscribed'/>");
    // Approved: alice learns it, then gets bob's presence (RFC 6121 §3.1.5).
    let approved = alice.recv_until(|e| e.name() == "presence");
    assert_eq!(
        approved.to_xml_in(ns::CLIENT),
        "<presence to='alice@a.test' type='subscribed' from='bob@b.test'/>"
    );
    let available = alice.recv_until(|e| e.name() == "presence");
    assert_eq!(
        available.to_xml_in(ns::CLIENT),
        "<presence to='alice@a.test' from='bob@b.test/r'/>"
    );

    // And back the other way.
    bob.send("<presence to='alice@a.test' type='subscribe'/>");
    let request = alice.recv_until(|e| e.name() == "presence");
    assert_eq!(
        request.to_xml_in(ns::CLIENT),
        "<presence to='alice@a.test' type='subscribe' from='bob@b.test'/>"
    );
    alice.send("<presence to='bob@b.test' type='subscribed'/>");
    let approved = bob.recv_until(|e| e.name() == "presence");
    assert_eq!(
        approved.to_xml_in(ns::CLIENT),
        "<presence to='bob@b.test' type='subscribed' from='alice@a.test'/>"
    );
    let available = bob.recv_until(|e| e.name() == "presence");
    assert_eq!(
        available.to_xml_in(ns::CLIENT),
        "<presence to='bob@b.test' from='alice@a.test/r'/>"
    );

    // Presence changes reach the remote follower; so does going offline.
    bob.send("<presence><show>away</show></presence>");
    let away = alice.recv_until(|e| e.name() == "presence");
    assert_eq!(
        away.to_xml_in(ns::CLIENT),
        "<presence to='alice@a.test' from='bob@b.test/r'><show>away</show></presence>"
    );
    drop(bob);
    let gone = alice.recv_until(|e| e.name() == "presence");
    assert_eq!(
        gone.to_xml_in(ns::CLIENT),
        "<presence to='alice@a.test' type='unavailable' from='bob@b.test/r'/>"
    );

    // At login, alice's server probes bob's (RFC 6121 §4.3), which answers
    // with his presence.
    let mut bob = online(&b, "bob", "pw-b");
    let back = alice.recv_until(|e| e.name() == "presence");
    assert_eq!(back.attr("from"), Some("bob@b.test/r"), "{back}");
    drop(alice);
    bob.recv_until(|e| e.name() == "presence" && e.attr("type") == Some("unavailable"));
    let mut alice = a.login("alice", "pw-a", "r2");
    alice.send("<presence/>");
    let probed = alice.recv_until(|e| e.name() == "presence" && e.attr("from") == Some("bob@b.test/r"));
    // Answered to the probe's bare JID: every resource gets it.
    assert_eq!(
        probed.to_xml_in(ns::CLIENT),
        "<presence to='alice@a.test' from='bob@b.test/r'/>"
    );
}

#[test]
fn a_lost_link_bounces_what_cannot_go_and_comes_back() {
    let (a, mut b) = pair();
    let mut alice = online(&a, "alice", "pw-a");
    let mut bob = online(&b, "bob", "pw-b");
    alice.send("<message to='bob@b.test' type='chat' id='m1'><body>one</body></message>");
    assert_eq!(bob.recv_until(is_message).attr("id"), Some("m1"));

    // b.test goes away: once a.test has seen its link end, what alice
    // sends comes back to her. (A stanza written in the instant before,
    // into a stream the peer is closing, is lost: server-to-server
    // streams carry no acknowledgements.)
    drop(bob);
    b.stop();
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    while s2s_list(&a).iter().any(|l| l.ends_with(" up")) {
        assert!(std::time::Instant::now() < deadline, "a.test never saw b.test go");
        std::thread::yield_now();
    }
    alice.send("<message to='bob@b.test' type='chat' id='m2'><body>two</body></message>");
    let bounce = alice.recv_until(is_message);
    assert_eq!(bounce.attr("type"), Some("error"), "{bounce}");
    assert_eq!(bounce.attr("id"), Some("m2"));
    let error = bounce.get_child("error", ns::CLIENT).expect("an error");
    assert!(
        error.get_child("remote-server-timeout", ns::STANZAS_ERRORS).is_some(),
        "{bounce}"
    );

    // It comes back: the connection manager makes a new link, and the
    // message goes (after bounces while the last failure is recent).
    b.restart();
    let mut bob = online(&b, "bob", "pw-b");
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    for attempt in 0.. {
        assert!(std::time::Instant::now() < deadline, "the link never came back");
        let id = format!("m3-{attempt}");
        alice.send(&format!(
            "<message to='bob@b.test' type='chat' id='{id}'><body>three</body></message>"
        ));
        // Either delivered, or bounced at once while the failure is recent.
        let seen = alice.sync();
        if seen.iter().any(|e| e.attr("id") == Some(id.as_str())) {
            continue;
        }
        let got = bob.recv_until(is_message);
        assert_eq!(got.attr("id"), Some(id.as_str()));
        break;
    }
}

#[test]
fn a_server_that_is_not_there_gets_senders_an_error() {
    let down = free_addr();
    let a = server("a.test", free_addr(), &[("down.test", down)], |_| {});
    a.add_user("alice", "pw-a");
    let mut alice = online(&a, "alice", "pw-a");
    alice.send("<message to='x@down.test' type='chat' id='m1'><body>anyone?</body></message>");
    alice.send("<iq to='down.test' type='get' id='q1'><ping xmlns='urn:xmpp:ping'/></iq>");
    // Broadcast presence is not answered; directed presence neither.
    alice.send("<presence to='x@down.test'/>");
    let mut got: Vec<String> = (0..2).map(|_| alice.recv_xml()).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "<iq id='q1' type='error' from='down.test' to='alice@a.test/r'><ping xmlns='urn:xmpp:ping'/><error type='wait'><remote-server-timeout xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
            "<message id='m1' type='error' from='x@down.test' to='alice@a.test/r'><error type='wait'><remote-server-timeout xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
        ]
    );
    alice.expect_nothing();
    // `shoal s2s list` says why, in words.
    let links = s2s_list(&a);
    let why = "s2s out a.test down.test - - N Q failed: cannot connect: ";
    assert!(links.len() == 1 && links[0].starts_with(why), "{links:?}");
}

/// A raw server stream to `addr`, as `from`, asking for `to`: the
/// connection, and the first element after the server's header (its
/// features, or its stream error).
fn raw_stream(addr: SocketAddr, from: &str, to: &str) -> (Client, shoal_actors::xml::Element) {
    let mut c = Client::connect(addr);
    c.send(&format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' \
         xmlns:stream='http://etherx.jabber.org/streams' from='{from}' to='{to}' version='1.0'>"
    ));
    match c.next_frame() {
        Some(shoal_actors::codec::Frame::StreamOpen(h)) => c.header = Some(h),
        other => panic!("expected a stream header, got {other:?}"),
    }
    let first = c.recv();
    (c, first)
}

fn stream_error(el: &shoal_actors::xml::Element) -> String {
    assert!(el.is("error", ns::STREAM), "not a stream error: {el}");
    el.children().next().map(|c| c.name().to_owned()).unwrap_or_default()
}

#[test]
fn what_a_bad_peer_gets() {
    // Dialback in the clear on a.test, so that a raw socket can speak it.
    let (a_s2s, b_s2s) = (free_addr(), free_addr());
    let down = free_addr();
    let peers = [("b.test", b_s2s), ("nowhere.test", down)];
    let _a = server("a.test", a_s2s, &peers, |c| c.s2s.tls = shoal::config::S2sTls::Optional);
    let _b = server("b.test", b_s2s, &[("a.test", a_s2s)], |c| {
        c.s2s.tls = shoal::config::S2sTls::Optional
    });

    // A stream for a domain not served there.
    let (_c, first) = raw_stream(a_s2s, "b.test", "elsewhere.test");
    assert_eq!(stream_error(&first), "host-unknown");

    // A stanza before any domain is authenticated.
    let (mut c, features) = raw_stream(a_s2s, "b.test", "a.test");
    assert!(features.is("features", ns::STREAM), "{features}");
    assert!(
        features.get_child("dialback", "urn:xmpp:features:dialback").is_some(),
        "{features}"
    );
    c.send("<message from='bob@b.test' to='alice@a.test'><body>hi</body></message>");
    assert_eq!(stream_error(&c.recv()), "not-authorized");

    // A dialback key b.test's server did not make: a.test asks b.test's
    // server (a real one), which says invalid; the stream ends.
    let (mut c, _) = raw_stream(a_s2s, "b.test", "a.test");
    c.send("<db:result from='b.test' to='a.test'>0123456789abcdef</db:result>");
    assert_eq!(
        c.recv_xml(),
        "<result xmlns='jabber:server:dialback' from='a.test' to='b.test' type='invalid'/>"
    );
    assert_eq!(stream_error(&c.recv()), "not-authorized");

    // A key for a domain whose server does not answer: an error answer,
    // and the stream stays (XEP-0220 §2.5).
    let (mut c, _) = raw_stream(a_s2s, "nowhere.test", "a.test");
    c.send("<db:result from='nowhere.test' to='a.test'>0123456789abcdef</db:result>");
    assert_eq!(
        c.recv_xml(),
        "<result xmlns='jabber:server:dialback' from='a.test' to='nowhere.test' type='error'><error xmlns='jabber:server' type='cancel'><remote-connection-failed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></result>"
    );
    // A verification for a domain a.test does not serve.
    c.send("<db:verify from='nowhere.test' to='other.test' id='x'>0123</db:verify>");
    assert_eq!(
        c.recv_xml(),
        "<verify xmlns='jabber:server:dialback' from='other.test' to='nowhere.test' id='x' type='error'><error xmlns='jabber:server' type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></verify>"
    );
}

/// A raw server stream to `a_s2s` authenticated as `b.test` by dialback
/// with b.test's own key (made with its secret, read from its database),
/// which a.test checks with b.test's server.
fn authenticated_as_b(a_s2s: SocketAddr, b: &TestServer) -> Client {
    authenticated_as(a_s2s, "b.test", "a.test", b)
}

/// A raw server stream to `addr`, for `to`, authenticated as `from` by
/// dialback with the key `from`'s server (`origin`) makes, which the
/// receiving server checks with it.
fn authenticated_as(addr: SocketAddr, from: &str, to: &str, origin: &TestServer) -> Client {
    let secret = shoal::store::SqliteStore::open(&origin.db)
        .unwrap()
        .secret("dialback", [0; 32])
        .unwrap();
    let (mut c, features) = raw_stream(addr, from, to);
    assert!(features.is("features", ns::STREAM), "{features}");
    let id = c.header.as_ref().and_then(|h| h.id.clone()).expect("a stream id");
    let key = shoal_actors::s2s::dialback::key(&secret, to, from, &id);
    c.send(&format!("<db:result from='{from}' to='{to}'>{key}</db:result>"));
    assert_eq!(
        c.recv_xml(),
        format!("<result xmlns='jabber:server:dialback' from='{to}' to='{from}' type='valid'/>")
    );
    c
}

#[test]
fn a_lost_stream_takes_its_users_presence_and_other_domains_are_refused() {
    let (a_s2s, b_s2s) = (free_addr(), free_addr());
    let optional = |c: &mut Config| c.s2s.tls = shoal::config::S2sTls::Optional;
    let a = server("a.test", a_s2s, &[("b.test", b_s2s)], |c| {
        optional(c);
        c.domain = None;
        c.domains = vec!["a.test".into(), "c.test".into()];
    });
    let b = server("b.test", b_s2s, &[("a.test", a_s2s)], optional);
    a.add_user("alice", "pw-a");
    let mut alice = online(&a, "alice", "pw-a");

    // b.test's users' presence comes on the stream; the connection is lost
    // without a close: alice is told they are gone.
    let mut peer = authenticated_as_b(a_s2s, &b);
    peer.send("<presence from='bob@b.test/x' to='alice@a.test'/>");
    peer.send("<presence from='carol@b.test/y' to='alice@a.test'/>");
    peer.send("<presence from='carol@b.test/y' to='alice@a.test' type='unavailable'/>");
    let seen: Vec<String> = (0..3)
        .map(|_| alice.recv_until(|e| e.name() == "presence").to_xml_in(ns::CLIENT))
        .collect();
    assert_eq!(seen[0], "<presence from='bob@b.test/x' to='alice@a.test'/>");
    drop(peer);
    let gone = alice.recv_until(|e| e.name() == "presence");
    assert_eq!(
        gone.to_xml_in(ns::CLIENT),
        "<presence type='unavailable' from='bob@b.test/x' to='alice@a.test'/>"
    );
    alice.expect_nothing();

    // A stanza from a domain the stream did not authenticate.
    let mut peer = authenticated_as_b(a_s2s, &b);
    peer.send("<message from='eve@c.test' to='alice@a.test'><body>hi</body></message>");
    assert_eq!(stream_error(&peer.recv()), "invalid-from");
    // One to another domain of ours, which the stream did not authenticate
    // b.test for (XEP-0220 §2.1.2: pairs of domains).
    let mut peer = authenticated_as_b(a_s2s, &b);
    peer.send("<message from='bob@b.test' to='x@c.test'><body>hi</body></message>");
    assert_eq!(stream_error(&peer.recv()), "invalid-from");
    // One to a domain not served here.
    let mut peer = authenticated_as_b(a_s2s, &b);
    peer.send("<message from='bob@b.test' to='x@elsewhere.test'><body>hi</body></message>");
    assert_eq!(stream_error(&peer.recv()), "host-unknown");
    // A clean close takes nobody's presence.
    let mut peer = authenticated_as_b(a_s2s, &b);
    peer.send("<presence from='bob@b.test/x' to='alice@a.test'/>");
    alice.recv_until(|e| e.name() == "presence");
    peer.send("</stream:stream>");
    assert!(matches!(
        peer.next_frame(),
        Some(shoal_actors::codec::Frame::StreamClose)
    ));
    alice.expect_nothing();
}

/// A certificate for `name` signed by the test CA (fixtures/tls), made
/// with openssl into `dir`: (chain, key) as PEM files.
fn ca_signed(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    ca_signed_for(dir, name, &[name])
}

/// [`ca_signed`], the certificate valid for each of `names` (its subject
/// alternative names).
fn ca_signed_for(dir: &std::path::Path, name: &str, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls");
    let [key, csr, crt, ext] = ["key", "csr", "crt", "ext"].map(|e| dir.join(format!("{name}.{e}")));
    let alt: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(&ext, format!("subjectAltName={}\n", alt.join(","))).unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (ca, ca_key) = (path(&fixtures.join("ca.pem")), path(&fixtures.join("ca.key")));
    let subject = format!("/CN={name}");
    for args in [
        vec![
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ],
        vec![
            "x509",
            "-req",
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-set_serial",
            "7",
            "-days",
            "30",
        ],
    ] {
        let mut command = std::process::Command::new("openssl");
        command.args(&args);
        if args[0] == "req" {
            command.args(["-subj", &subject, "-keyout", &path(&key), "-out", &path(&csr)]);
        } else {
            command.args(["-in", &path(&csr), "-extfile", &path(&ext), "-out", &path(&crt)]);
        }
        let out = command.output().expect("openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // Shoal refuses a key others may read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (crt, key)
}

/// TLS as a server connecting to `localhost` (the fixture certificate),
/// presenting `cert` for SASL EXTERNAL.
fn tls_as(cert: &(std::path::PathBuf, std::path::PathBuf)) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/ca.pem");
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(&cert.0)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&cert.1).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    std::sync::Arc::new(config)
}

/// Restarts a raw server stream after TLS or SASL; the new features.
fn restart(c: &mut Client, from: &str, to: &str) -> shoal_actors::xml::Element {
    c.send(&format!(
        "<stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' \
         xmlns:stream='http://etherx.jabber.org/streams' from='{from}' to='{to}' version='1.0'>"
    ));
    assert!(matches!(
        c.next_frame(),
        Some(shoal_actors::codec::Frame::StreamOpen(_))
    ));
    c.recv()
}

#[test]
fn sasl_external_takes_a_certificate_valid_for_the_domain_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let s2s = free_addr();
    let server = TestServer::with_config(|c| {
        common::fixture_tls(c);
        c.s2s.listen = vec![s2s];
        c.s2s.ca_file = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/ca.pem"));
    });
    let external = format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{}</auth>",
        base64::engine::general_purpose::STANDARD.encode("b.test")
    );

    // A certificate from a trusted CA, but for another name: no EXTERNAL
    // offered, and none taken.
    let (mut c, features) = raw_stream(s2s, "b.test", "localhost");
    assert!(features.get_child("starttls", ns::TLS).is_some(), "{features}");
    c.starttls(tls_as(&ca_signed(dir.path(), "wrong.test")));
    let features = restart(&mut c, "b.test", "localhost");
    assert_eq!(
        features.to_xml_in(ns::CLIENT),
        "<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>"
    );
    c.send(&external);
    assert_eq!(
        c.recv_xml(),
        "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>"
    );
    assert!(matches!(c.next_frame(), Some(shoal_actors::codec::Frame::StreamClose)));

    // One for b.test: EXTERNAL offered and taken.
    let (mut c, _) = raw_stream(s2s, "b.test", "localhost");
    c.starttls(tls_as(&ca_signed(dir.path(), "b.test")));
    let features = restart(&mut c, "b.test", "localhost");
    let mechanisms = features.get_child("mechanisms", ns::SASL).expect("EXTERNAL offered");
    assert_eq!(mechanisms.children().next().unwrap().text(), "EXTERNAL");
    c.send(&external);
    assert_eq!(c.recv_xml(), "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    let features = restart(&mut c, "b.test", "localhost");
    assert!(features.get_child("mechanisms", ns::SASL).is_none(), "{features}");
    assert_eq!(s2s_list(&server), ["s2s in localhost b.test external tls N Q up"]);
}

#[test]
fn each_hosted_domain_federates_on_a_link_of_its_own_with_its_own_certificate() {
    // Certificates from the test CA, which both trust: each link
    // authenticates by SASL EXTERNAL, with its own domain's certificate.
    let dir = tempfile::tempdir().unwrap();
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/ca.pem");
    let [a_cert, c_cert, b_cert] = ["a.test", "c.test", "b.test"].map(|d| ca_signed(dir.path(), d));
    let (a_s2s, b_s2s) = (free_addr(), free_addr());
    let a = server("a.test", a_s2s, &[("b.test", b_s2s)], |c| {
        c.domain = None;
        c.domains = vec!["a.test".into(), "c.test".into()];
        (c.tls.cert, c.tls.key) = (Some(a_cert.0), Some(a_cert.1));
        let host = c.hosts.entry("c.test".into()).or_default();
        (host.tls_cert, host.tls_key) = (Some(c_cert.0), Some(c_cert.1));
        c.s2s.ca_file = Some(ca.clone());
    });
    let b = server("b.test", b_s2s, &[("a.test", a_s2s), ("c.test", a_s2s)], |c| {
        (c.tls.cert, c.tls.key) = (Some(b_cert.0), Some(b_cert.1));
        c.s2s.ca_file = Some(ca.clone());
    });
    a.add_user("alice@a.test", "pw-a");
    a.add_user("carol@c.test", "pw-c");
    b.add_user("bob", "pw-b");
    let mut alice = a.login_at("a.test", "alice", "pw-a", "r");
    let mut carol = a.login_at("c.test", "carol", "pw-c", "r");
    let mut bob = online(&b, "bob", "pw-b");
    alice.send("<message to='bob@b.test' type='chat' id='m1'><body>from a</body></message>");
    carol.send("<message to='bob@b.test' type='chat' id='m2'><body>from c</body></message>");
    let mut got = [recv_unstamped(&mut bob), recv_unstamped(&mut bob)];
    got.sort();
    assert_eq!(
        got,
        [
            "<message to='bob@b.test' type='chat' id='m1' from='alice@a.test/r'><body>from a</body></message>",
            "<message to='bob@b.test' type='chat' id='m2' from='carol@c.test/r'><body>from c</body></message>",
        ]
    );
    bob.send("<message to='carol@c.test/r' type='chat' id='m3'><body>to c</body></message>");
    assert_eq!(
        recv_unstamped(&mut carol),
        "<message to='carol@c.test/r' type='chat' id='m3' from='bob@b.test/r'><body>to c</body></message>"
    );
    // One link per pair of domains: b.test wrote only to c.test.
    assert_eq!(
        s2s_list(&a),
        [
            "s2s out a.test b.test external tls N Q up",
            "s2s in c.test b.test external tls N Q up",
            "s2s out c.test b.test external tls N Q up",
        ]
    );
    alice.expect_nothing();
}

#[test]
fn a_request_to_another_server_is_owed_an_answer() {
    let (a_s2s, b_s2s) = (free_addr(), free_addr());
    let optional = |c: &mut Config| c.s2s.tls = shoal::config::S2sTls::Optional;
    let a = server("a.test", a_s2s, &[("b.test", b_s2s)], |c| {
        optional(c);
        c.s2s.iq_timeout_secs = 1;
    });
    let b = server("b.test", b_s2s, &[("a.test", a_s2s)], optional);
    a.add_user("alice", "pw-a");
    b.add_user("bob", "pw-b");
    let mut alice = online(&a, "alice", "pw-a");
    let mut bob = online(&b, "bob", "pw-b");

    // bob never answers: alice hears from her server when the time is up.
    alice.send("<iq type='get' id='q1' to='bob@b.test/r'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(bob.recv_until(|e| e.name() == "iq").attr("id"), Some("q1"));
    assert_eq!(
        alice.recv_xml(),
        "<iq id='q1' type='error' from='bob@b.test/r' to='alice@a.test/r'><error type='wait'><remote-server-timeout xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    );
    // His late answer, and one to nothing alice asked, are not routed: what
    // follows each on its stream is what alice gets next.
    bob.send("<iq type='result' id='q1' to='alice@a.test/r'/>");
    bob.send("<message to='alice@a.test/r' id='after-late'><body>1</body></message>");
    assert_eq!(alice.recv().attr("id"), Some("after-late"));
    let mut peer = authenticated_as_b(a_s2s, &b);
    peer.send("<iq type='result' id='never-asked' from='bob@b.test/r' to='alice@a.test/r'/>");
    peer.send("<message from='bob@b.test/r' to='alice@a.test/r' id='after-unasked'><body>2</body></message>");
    assert_eq!(alice.recv().attr("id"), Some("after-unasked"));
    alice.expect_nothing();
}

#[test]
fn one_domain_may_hold_only_so_many_streams() {
    let (a_s2s, b_s2s) = (free_addr(), free_addr());
    let optional = |c: &mut Config| c.s2s.tls = shoal::config::S2sTls::Optional;
    let _a = server("a.test", a_s2s, &[("b.test", b_s2s)], |c| {
        optional(c);
        c.s2s.max_streams_per_domain = 1;
    });
    let b = server("b.test", b_s2s, &[("a.test", a_s2s)], optional);
    let _first = authenticated_as_b(a_s2s, &b);
    let (mut second, _) = raw_stream(a_s2s, "b.test", "a.test");
    second.send("<db:result from='b.test' to='a.test'>0123456789abcdef</db:result>");
    assert_eq!(
        second.recv_xml(),
        "<result xmlns='jabber:server:dialback' from='a.test' to='b.test' type='error'><error xmlns='jabber:server' type='cancel'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></result>"
    );
}

#[test]
fn directed_presence_to_another_servers_user_is_followed_by_unavailable_at_logout() {
    // RFC 6121 §4.6.3: whoever got directed presence is told when the
    // sender goes, on another server as on this one.
    let (a, b) = pair();
    let mut bob = online(&b, "bob", "pw-b");
    let mut alice = a.login("alice", "pw-a", "r");
    alice.announce("<presence/>");
    alice.send("<presence to='bob@b.test/r'><show>chat</show></presence>");
    let directed = bob.recv_until(|e| e.name() == "presence");
    assert_eq!(
        directed.to_xml_in(ns::CLIENT),
        "<presence to='bob@b.test/r' from='alice@a.test/r'><show>chat</show></presence>"
    );
    alice.send("</stream:stream>");
    alice.expect_eof();
    let gone = bob.recv_until(|e| e.name() == "presence");
    assert_eq!(
        gone.to_xml_in(ns::CLIENT),
        "<presence to='bob@b.test/r' type='unavailable' from='alice@a.test/r'/>"
    );
}

const MUC: &str = "http://jabber.org/protocol/muc";
const ROOM: &str = "room@conference.a.test";

/// An occupant's presence from `ROOM/nick` as `to` gets it (`kind`:
/// `""`, or `" type='unavailable'"`), with `x` inside its muc#user `<x/>`.
fn occupant(to: &str, nick: &str, kind: &str, x: &str) -> String {
    format!(
        "<presence to='{to}' from='{ROOM}/{nick}'{kind}>\
         <x xmlns='http://jabber.org/protocol/muc#user'>{x}</x></presence>"
    )
}

/// A groupchat message from `ROOM/nick` as `to` gets it, the room's
/// stanza id (XEP-0359) as SID.
fn groupchat(to: &str, nick: &str, id: &str, body: &str) -> String {
    format!(
        "<message to='{to}' from='{ROOM}/{nick}' type='groupchat' id='{id}'><body>{body}</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='{ROOM}'/></message>"
    )
}

/// `c` asks to join as `nick`, without history.
fn join(c: &mut Client, nick: &str) {
    c.send(&format!(
        "<presence to='{ROOM}/{nick}'><x xmlns='{MUC}'><history maxstanzas='0'/></x></presence>"
    ));
}

/// The next `n` stanzas `c` gets, serialised, stanza ids as SID.
fn next(c: &mut Client, n: usize) -> Vec<String> {
    (0..n).map(|_| unsid(c.recv_xml())).collect()
}

#[test]
fn a_user_of_another_server_joins_a_room_talks_and_leaves_when_dropped() {
    // XEP-0045 across servers: bob@b.test's presence goes to
    // conference.a.test over a link of b.test's; the room answers over a
    // link from conference.a.test itself, authenticated by dialback for
    // that domain (b.test checks the key with conference.a.test's server).
    let (a, b) = pair();
    a.add_user("carol", "pw-c");
    let mut alice = online(&a, "alice", "pw-a");
    let mut bob = online(&b, "bob", "pw-b");
    let (alice_jid, bob_jid, carol_jid) = ("alice@a.test/r", "bob@b.test/r", "carol@a.test/r");

    // alice makes the room (an instant one) and sets its subject.
    join(&mut alice, "Alice");
    let owner = "<item affiliation='owner' role='moderator' jid='alice@a.test/r'/>";
    assert_eq!(
        next(&mut alice, 2),
        [
            occupant(
                alice_jid,
                "Alice",
                "",
                &format!("{owner}<status code='110'/><status code='201'/>")
            ),
            format!("<message to='{alice_jid}' from='{ROOM}' type='groupchat'><subject/></message>"),
        ]
    );
    alice.send(&format!(
        "<iq type='set' id='instant' to='{ROOM}'><query xmlns='{MUC}#owner'>\
         <x xmlns='jabber:x:data' type='submit'/></query></iq>"
    ));
    assert_eq!(
        alice.recv_xml(),
        format!("<iq id='instant' type='result' from='{ROOM}' to='{alice_jid}'/>")
    );
    alice.send(&format!(
        "<message to='{ROOM}' type='groupchat' id='s1'><subject>Across servers</subject></message>"
    ));
    // Relayed with its id; a joiner gets it without.
    let subject = |to: &str, id: &str| {
        format!(
            "<message to='{to}' from='{ROOM}/Alice' type='groupchat'{id}>\
             <subject>Across servers</subject></message>"
        )
    };
    assert_eq!(alice.recv_xml(), subject(alice_jid, " id='s1'"));

    // bob joins from b.test: alice's presence (her real JID hidden from a
    // participant), his own with 110, then the subject.
    join(&mut bob, "Bob");
    let participant = |jid: &str| format!("<item affiliation='none' role='participant' jid='{jid}'/>");
    let hidden = "<item affiliation='none' role='participant'/>";
    assert_eq!(
        next(&mut bob, 3),
        [
            occupant(bob_jid, "Alice", "", "<item affiliation='owner' role='moderator'/>"),
            occupant(
                bob_jid,
                "Bob",
                "",
                &format!("{}<status code='110'/>", participant(bob_jid))
            ),
            subject(bob_jid, ""),
        ]
    );
    // alice, a moderator, sees who he is.
    assert_eq!(alice.recv_xml(), occupant(alice_jid, "Bob", "", &participant(bob_jid)));

    // Groupchat both ways, each message with the room's stanza id.
    bob.send(&format!(
        "<message to='{ROOM}' type='groupchat' id='g1'><body>hello from b</body></message>"
    ));
    assert_eq!(next(&mut alice, 1), [groupchat(alice_jid, "Bob", "g1", "hello from b")]);
    assert_eq!(next(&mut bob, 1), [groupchat(bob_jid, "Bob", "g1", "hello from b")]);
    alice.send(&format!(
        "<message to='{ROOM}' type='groupchat' id='g2'><body>hello from a</body></message>"
    ));
    assert_eq!(
        next(&mut alice, 1),
        [groupchat(alice_jid, "Alice", "g2", "hello from a")]
    );
    assert_eq!(next(&mut bob, 1), [groupchat(bob_jid, "Alice", "g2", "hello from a")]);

    // carol, of a.test, joins: she sees bob, and bob sees her.
    let mut carol = online(&a, "carol", "pw-c");
    join(&mut carol, "Carol");
    let mut got = next(&mut carol, 4);
    got[..2].sort();
    assert_eq!(
        got,
        [
            occupant(carol_jid, "Alice", "", "<item affiliation='owner' role='moderator'/>"),
            occupant(carol_jid, "Bob", "", hidden),
            occupant(
                carol_jid,
                "Carol",
                "",
                &format!("{}<status code='110'/>", participant(carol_jid))
            ),
            subject(carol_jid, ""),
        ]
    );
    assert_eq!(bob.recv_xml(), occupant(bob_jid, "Carol", "", hidden));
    assert_eq!(
        alice.recv_xml(),
        occupant(alice_jid, "Carol", "", &participant(carol_jid))
    );

    // bob's connection drops: b.test sends the room his unavailable (he
    // had sent it directed presence), and he leaves it.
    drop(bob);
    let left = |jid: Option<&str>| match jid {
        Some(jid) => format!("<item affiliation='none' role='none' jid='{jid}'/>"),
        None => "<item affiliation='none' role='none'/>".to_owned(),
    };
    assert_eq!(
        alice.recv_xml(),
        occupant(alice_jid, "Bob", " type='unavailable'", &left(Some(bob_jid)))
    );
    assert_eq!(
        carol.recv_xml(),
        occupant(carol_jid, "Bob", " type='unavailable'", &left(None))
    );
    alice.expect_nothing();
    carol.expect_nothing();

    // The service's domain has links of its own, both ways, by dialback;
    // a.test itself had nothing to say to b.test.
    assert_eq!(
        s2s_list(&a),
        [
            "s2s in conference.a.test b.test dialback tls N Q up",
            "s2s out conference.a.test b.test dialback tls N Q up"
        ]
    );
    assert_eq!(
        s2s_list(&b),
        [
            "s2s in b.test conference.a.test dialback tls N Q up",
            "s2s out b.test conference.a.test dialback tls N Q up"
        ]
    );
}

#[test]
fn a_service_federates_with_the_certificate_of_the_hosted_domain_it_is_under() {
    // conference.a.test has no certificate of its own: its links present
    // a.test's, which names it too (as a certificate for a domain and its
    // services often does), and so authenticate by SASL EXTERNAL; not the
    // default domain x.test's, which does not.
    let dir = tempfile::tempdir().unwrap();
    let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls/ca.pem");
    let x_cert = ca_signed(dir.path(), "x.test");
    let a_cert = ca_signed_for(dir.path(), "a.test", &["a.test", "conference.a.test"]);
    let b_cert = ca_signed(dir.path(), "b.test");
    let (a_s2s, b_s2s) = (free_addr(), free_addr());
    let a = server("x.test", a_s2s, &[("b.test", b_s2s)], |c| {
        c.domain = None;
        c.domains = vec!["x.test".into(), "a.test".into()];
        (c.tls.cert, c.tls.key) = (Some(x_cert.0), Some(x_cert.1));
        let host = c.hosts.entry("a.test".into()).or_default();
        (host.tls_cert, host.tls_key) = (Some(a_cert.0), Some(a_cert.1));
        c.s2s.ca_file = Some(ca.clone());
        c.muc.domain = Some("conference.a.test".into());
        c.muc.create = shoal::config::MucCreate::Anyone;
    });
    let b = server(
        "b.test",
        b_s2s,
        &[("a.test", a_s2s), ("conference.a.test", a_s2s)],
        |c| {
            (c.tls.cert, c.tls.key) = (Some(b_cert.0), Some(b_cert.1));
            c.s2s.ca_file = Some(ca.clone());
        },
    );
    b.add_user("bob", "pw-b");
    let mut bob = online(&b, "bob", "pw-b");

    // bob makes a room there (anyone may): both links come up for it.
    join(&mut bob, "Bob");
    let bob_jid = "bob@b.test/r";
    let owner = format!("<item affiliation='owner' role='moderator' jid='{bob_jid}'/>");
    assert_eq!(
        next(&mut bob, 2),
        [
            occupant(
                bob_jid,
                "Bob",
                "",
                &format!("{owner}<status code='110'/><status code='201'/>")
            ),
            format!("<message to='{bob_jid}' from='{ROOM}' type='groupchat'><subject/></message>"),
        ]
    );
    assert_eq!(
        s2s_list(&a),
        [
            "s2s in conference.a.test b.test external tls N Q up",
            "s2s out conference.a.test b.test external tls N Q up"
        ]
    );
    assert_eq!(
        s2s_list(&b),
        [
            "s2s in b.test conference.a.test external tls N Q up",
            "s2s out b.test conference.a.test external tls N Q up"
        ]
    );
}

#[test]
fn a_lost_stream_from_a_rooms_server_leaves_the_rooms_occupants_there() {
    // A stream from conference.a.test (authenticated with a.test's key for
    // it, which b.test checks with conference.a.test's server) carries a
    // room's presence for bob, and presence of another kind from a JID
    // there; the connection is lost without a close. Only the latter is
    // shown gone: bob is still in the room, which says who is in it.
    let (a_s2s, b_s2s) = (free_addr(), free_addr());
    let optional = |c: &mut Config| c.s2s.tls = shoal::config::S2sTls::Optional;
    let a = server("a.test", a_s2s, &[("b.test", b_s2s)], optional);
    let b = server(
        "b.test",
        b_s2s,
        &[("a.test", a_s2s), ("conference.a.test", a_s2s)],
        optional,
    );
    b.add_user("bob", "pw-b");
    let mut bob = online(&b, "bob", "pw-b");
    let mut peer = authenticated_as(b_s2s, "conference.a.test", "b.test", &a);
    let in_room = occupant(
        "bob@b.test/r",
        "Alice",
        "",
        "<item affiliation='owner' role='moderator'/>",
    );
    peer.send(&in_room);
    peer.send("<presence from='bot@conference.a.test/x' to='bob@b.test'/>");
    assert_eq!(bob.recv_xml(), in_room);
    assert_eq!(
        bob.recv_xml(),
        "<presence from='bot@conference.a.test/x' to='bob@b.test'/>"
    );
    drop(peer);
    assert_eq!(
        bob.recv_xml(),
        "<presence type='unavailable' from='bot@conference.a.test/x' to='bob@b.test'/>"
    );
    bob.expect_nothing();
}
