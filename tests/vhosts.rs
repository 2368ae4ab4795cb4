//! Several hosted domains (virtual hosts) on one server: each has its own
//! accounts, registration policy and certificate, and their users talk
//! to each other without any server-to-server stream.

mod common;

use std::process::Command;

use common::{any_certificate, unsid, Client, TestServer, OPEN};
use shoal::config::{HostConfig, HostRegistrationConfig};
use shoal::Config;
use shoal_actors::ns;
use shoal_actors::sasl::{ScramClient, ScramHash};

/// A server hosting a.test (the default domain) and b.test.
fn two_domains(edit: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::with_config(|c| {
        c.domains = vec!["a.test".into(), "b.test".into()];
        edit(c);
    })
}

/// A client whose streams are to `domain`, with its stream open.
fn open_to(server: &TestServer, domain: &str) -> (Client, shoal_actors::xml::Element) {
    let mut c = server.connect();
    c.domain = domain.to_owned();
    let features = c.open();
    (c, features)
}

#[test]
fn the_same_name_at_two_domains_is_two_accounts() {
    let server = two_domains(|_| {});
    server.add_user("alice@a.test", "apple");
    server.add_user("alice@b.test", "banana");
    for (domain, password, wrong) in [("a.test", "apple", "banana"), ("b.test", "banana", "apple")] {
        let (mut c, _) = open_to(&server, domain);
        assert_eq!(c.header.as_ref().and_then(|h| h.from.as_deref()), Some(domain));
        c.auth_plain("alice", wrong);
        assert!(
            c.recv().is("failure", ns::SASL),
            "the other alice's password at {domain}"
        );
        let success = c.auth_scram(ScramHash::Sha256, "alice", password);
        assert!(success.is("success", ns::SASL), "{success}");
        c.open();
        assert_eq!(c.bind(Some("phone")), format!("alice@{domain}/phone"));
    }
    // Both at once, each as itself.
    let a = server.login_at("a.test", "alice", "apple", "laptop");
    let b = server.login_at("b.test", "alice", "banana", "laptop");
    assert_eq!(
        (a.jid.as_str(), b.jid.as_str()),
        ("alice@a.test/laptop", "alice@b.test/laptop")
    );
}

#[test]
fn users_of_two_domains_talk_without_a_server_to_server_link() {
    let server = two_domains(|_| {});
    server.add_user("alice@a.test", "a");
    server.add_user("bob@b.test", "b");
    server.add_user("carol@b.test", "c");
    let mut alice = server.login_at("a.test", "alice", "a", "home");
    let mut bob = server.login_at("b.test", "bob", "b", "work");
    alice.send("<message to='bob@b.test/work' type='chat' id='m1'><body>hello from a</body></message>");
    assert_eq!(
        unsid(bob.recv_xml()),
        "<message to='bob@b.test/work' type='chat' id='m1' from='alice@a.test/home'><body>hello from a</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='bob@b.test'/></message>"
    );
    bob.send("<message to='alice@a.test/home' type='chat' id='m2'><body>and back</body></message>");
    assert_eq!(
        unsid(alice.recv_xml()),
        "<message to='alice@a.test/home' type='chat' id='m2' from='bob@b.test/work'><body>and back</body>\
         <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='alice@a.test'/></message>"
    );
    // IQs too: b.test answers for its account, as itself.
    alice.send("<iq type='get' id='p1' to='bob@b.test'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(
        alice.recv_xml(),
        "<iq id='p1' type='result' from='bob@b.test' to='alice@a.test/home'/>"
    );
    alice.send("<iq type='get' id='p2' to='b.test'><ping xmlns='urn:xmpp:ping'/></iq>");
    assert_eq!(
        alice.recv_xml(),
        "<iq id='p2' type='result' from='b.test' to='alice@a.test/home'/>"
    );

    // A subscription across domains, between two local accounts.
    bob.announce("<presence/>");
    alice.send("<presence to='bob@b.test' type='subscribe'/>");
    let request = bob.recv_until(|e| e.name() == "presence");
    assert_eq!(
        request.to_xml_in(ns::CLIENT),
        "<presence to='bob@b.test' type='subscribe' from='alice@a.test'/>"
    );

    // Kept for a user of the other domain who is offline, stamped by
    // her domain.
    alice.send("<message to='carol@b.test' type='chat' id='m3'><body>later</body></message>");
    // Nothing comes back (her roster push of the subscription may).
    alice.expect_no_messages();
    let mut carol = server.login_at("b.test", "carol", "c", "desk");
    carol.send("<presence/>");
    let waiting = unsid(carol.recv_until(|e| e.name() == "message").to_xml_in(ns::CLIENT));
    assert!(
        waiting.starts_with(
            "<message to='carol@b.test' type='chat' id='m3' from='alice@a.test/home'><body>later</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='SID' by='carol@b.test'/>\
             <delay xmlns='urn:xmpp:delay' from='b.test' stamp='"
        ),
        "{waiting}"
    );

    // A domain that is not hosted is still out of reach.
    alice.send("<message to='dave@c.test' type='chat' id='m4'><body>anyone?</body></message>");
    let bounce = alice.recv_until(|e| e.name() == "message").to_xml_in(ns::CLIENT);
    assert!(bounce.contains("<remote-server-not-found"), "{bounce}");
}

#[test]
fn a_stream_to_a_domain_not_hosted_gets_host_unknown() {
    let server = two_domains(|_| {});
    server.add_user("alice@a.test", "a");
    for to in ["c.test", "localhost", "alice@a.test"] {
        let mut c = server.connect();
        c.send(&OPEN.replacen("to='localhost'", &format!("to='{to}'"), 1));
        assert_eq!(c.expect_stream_error().0, "host-unknown", "to {to}");
        // Said by the default domain, as no hosted one was named.
        assert_eq!(c.header.as_ref().and_then(|h| h.from.as_deref()), Some("a.test"));
    }
    // Written otherwise, a hosted domain is the same domain.
    let (c, _) = open_to(&server, "B.Test");
    assert_eq!(c.header.as_ref().and_then(|h| h.from.as_deref()), Some("b.test"));
    // Authenticated at one domain, the stream cannot restart at another.
    let (mut c, _) = open_to(&server, "a.test");
    c.auth_plain("alice", "a");
    assert!(c.recv().is("success", ns::SASL));
    c.send(&OPEN.replacen("to='localhost'", "to='b.test'", 1));
    assert_eq!(c.expect_stream_error().0, "host-unknown");
}

#[test]
fn registration_is_per_domain() {
    let server = two_domains(|c| {
        c.registration.enabled = Some(true);
        let closed = HostConfig {
            registration: HostRegistrationConfig {
                enabled: Some(false),
                ..HostRegistrationConfig::default()
            },
            ..HostConfig::default()
        };
        c.hosts.insert("b.test".into(), closed);
    });
    let register = "<iq type='set' id='r'><query xmlns='jabber:iq:register'>\
                    <username>erin</username><password>pw</password></query></iq>";
    let (mut open, features) = open_to(&server, "a.test");
    assert!(features.has_child("register", ns::REGISTER_FEATURE));
    open.send(register);
    assert_eq!(open.recv_xml(), "<iq id='r' type='result'/>");

    let (mut closed, features) = open_to(&server, "b.test");
    assert!(!features.has_child("register", ns::REGISTER_FEATURE));
    closed.send(register);
    assert_eq!(closed.expect_stream_error().0, "not-authorized");

    // The account is a.test's: b.test has no erin.
    let (mut c, _) = open_to(&server, "b.test");
    c.auth_plain("erin", "pw");
    assert!(c.recv().is("failure", ns::SASL));
    let mut erin = server.login_at("a.test", "erin", "pw", "r");
    assert_eq!(erin.jid, "erin@a.test/r");

    // Each domain describes itself, with its own policy.
    for (domain, listed) in [("a.test", true), ("b.test", false)] {
        erin.send(&format!(
            "<iq type='get' id='d-{domain}' to='{domain}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ));
        let reply = erin.recv();
        assert_eq!(reply.attr("from"), Some(domain));
        let xml = reply.to_xml_in(ns::CLIENT);
        assert!(
            xml.contains("<identity category='server' type='im' name='Shoal'/>"),
            "{xml}"
        );
        assert_eq!(xml.contains("<feature var='jabber:iq:register'/>"), listed, "{xml}");
    }
}

/// The DNS names of the certificate the server presented.
fn served_names(c: &Client) -> Vec<String> {
    let der = &c.tls().peer_certificates().expect("a certificate")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert
        .subject_alternative_name()
        .unwrap()
        .expect("subject alternative names");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// SCRAM-SHA-256-PLUS bound to the certificate the client was served.
fn scram_plus(c: &mut Client, user: &str, password: &str) -> shoal_actors::xml::Element {
    let cb = c.channel_binding("tls-server-end-point");
    let scram = ScramClient::new(ScramHash::Sha256, user, password).with_channel_binding("tls-server-end-point", cb);
    c.auth_scram_with("SCRAM-SHA-256-PLUS", scram)
}

#[test]
fn each_domain_has_its_own_certificate_chosen_by_sni() {
    let server = two_domains(|c| c.c2s.direct_tls_listen = vec!["127.0.0.1:0".parse().unwrap()]);
    server.add_user("alice@a.test", "apple");
    server.add_user("alice@b.test", "banana");
    // STARTTLS, SNI naming the stream's domain, and without SNI: the
    // stream header's `to` picks. Either way tls-server-end-point binds
    // to the certificate served.
    for sni in [true, false] {
        for (domain, password) in [("a.test", "apple"), ("b.test", "banana")] {
            let (mut c, _) = open_to(&server, domain);
            c.starttls(any_certificate(sni));
            assert_eq!(served_names(&c), [domain], "SNI {sni}");
            c.open();
            let outcome = scram_plus(&mut c, "alice", password);
            assert!(outcome.is("success", ns::SASL), "{domain}, SNI {sni}: {outcome}");
            c.open();
            assert_eq!(c.bind(None).split('/').next(), Some(format!("alice@{domain}").as_str()));
        }
    }
    // Direct TLS: SNI picks; without it, the default domain's.
    let direct = server.direct_tls_addr();
    let mut b = Client::connect_tls_to(direct, any_certificate(true), "b.test");
    assert_eq!(served_names(&b), ["b.test"]);
    b.open();
    let outcome = scram_plus(&mut b, "alice", "banana");
    assert!(outcome.is("success", ns::SASL), "{outcome}");
    let default = Client::connect_tls_to(direct, any_certificate(false), "b.test");
    assert_eq!(served_names(&default), ["a.test"]);
    // SNI for a domain not hosted gets the default domain's too.
    let unknown = Client::connect_tls_to(direct, any_certificate(true), "c.test");
    assert_eq!(served_names(&unknown), ["a.test"]);
}

#[test]
fn the_cli_takes_full_jids_when_several_domains_are_hosted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shoal.toml");
    std::fs::write(
        &config,
        format!(
            "domains = ['a.test', 'b.test']\n[storage]\nsqlite = {:?}\n",
            dir.path().join("shoal.db")
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    assert_eq!(
        run(&["user", "add", "alice", "pw"]),
        (
            false,
            String::new(),
            "shoal: \"alice\" names no domain, and this server hosts several (a.test, b.test): give user@domain\n"
                .into()
        )
    );
    assert_eq!(run(&["user", "add", "alice@a.test", "one"]).1, "created alice@a.test\n");
    assert_eq!(run(&["user", "add", "Alice@B.test", "two"]).1, "created alice@b.test\n");
    assert_eq!(run(&["user", "list"]).1, "alice@a.test\nalice@b.test\n");
    assert_eq!(
        run(&["user", "passwd", "alice@c.test", "x"]).2,
        "shoal: \"alice@c.test\" is not on this server's domains (a.test, b.test)\n"
    );
    assert_eq!(run(&["user", "del", "alice@b.test"]).1, "deleted alice@b.test\n");
    assert_eq!(run(&["user", "list"]).1, "alice@a.test\n");
}
