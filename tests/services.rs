//! In-process published services (the embedder's API): an actix actor
//! publishes a domain, appears in the server's disco#items listing,
//! answers what is sent to it, and when it rescinds, every request still
//! waiting on it is answered and the listing forgets it.

mod common;

use actix::prelude::*;
use common::Client;
use shoal::{Config, ServerBuilder};
use shoal_actors::ns;
use shoal_actors::router::Router;
use shoal_actors::services::{Publication, PublishError, PublishOptions, ServiceSink, ServiceStanza};
use shoal_actors::stanza::{IqType, Kind, Stanza};
use shoal_actors::xml::Element;

/// Answers IQs with `<ok/>`, except those in `urn:test:hold`, which it
/// keeps unanswered; a message with the body "rescind" makes it rescind.
struct Holder {
    router: Router,
    domain: &'static str,
    options: PublishOptions,
    publication: Option<Publication>,
}

impl Actor for Holder {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let sink = Box::new(ctx.address().recipient::<ServiceStanza>());
        self.publication = Some(self.router.publish(self.domain, sink, self.options.clone()).unwrap());
    }
}

impl Handler<ServiceStanza> for Holder {
    type Result = ();

    fn handle(&mut self, ServiceStanza(stanza): ServiceStanza, _: &mut Context<Self>) {
        let Some(publication) = &self.publication else { return };
        match stanza.kind {
            Kind::Iq(IqType::Get | IqType::Set) if stanza.payload().is_some_and(|p| p.ns() == "urn:test:hold") => {}
            Kind::Iq(IqType::Get | IqType::Set) => {
                let reply = stanza.iq_result(Some(Element::new("ok", "urn:test")));
                publication.send(reply).unwrap();
            }
            Kind::Message(_) => self.publication = None,
            _ => {}
        }
    }
}

struct NullSink;

impl ServiceSink for NullSink {
    fn deliver(&self, _: &Stanza) -> bool {
        false
    }
}

/// A server on a thread with two services: `svc.localhost` (listed, as
/// "Service") and `hidden.localhost` (not listed).
fn start(
    db: std::path::PathBuf,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let mut config = Config::default();
            config.c2s.listen = vec!["127.0.0.1:0".parse().unwrap()];
            config.http.listen = Vec::new();
            config.storage.sqlite = db;
            // These services alone are listed.
            config.muc.enabled = false;
            let server = ServerBuilder::new(config).workers(1).start().await.unwrap();
            let router = server.router().clone();
            for (domain, options) in [
                (
                    "svc.localhost",
                    PublishOptions {
                        name: Some("Service".into()),
                        ..PublishOptions::default()
                    },
                ),
                (
                    "hidden.localhost",
                    PublishOptions {
                        hidden: true,
                        ..PublishOptions::default()
                    },
                ),
            ] {
                Holder {
                    router: router.clone(),
                    domain,
                    options,
                    publication: None,
                }
                .start();
            }
            // The server's own domain is not for publishing.
            assert_eq!(
                router
                    .publish("localhost", Box::new(NullSink), PublishOptions::default())
                    .err(),
                Some(PublishError::ServerDomain("localhost".into()))
            );
            addr_tx.send(server.local_addrs()[0]).unwrap();
            let _ = stop_rx.await;
            server.shutdown().await;
        });
    });
    (addr_rx.recv().unwrap(), stop_tx, thread)
}

fn login(addr: std::net::SocketAddr, user: &str) -> Client {
    let mut c = Client::connect(addr);
    c.open();
    c.send(&format!(
        "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username><password>pw</password></query></iq>"
    ));
    assert_eq!(c.recv().attr("type"), Some("result"));
    let mut c = Client::connect(addr);
    c.open();
    c.auth_plain(user, "pw");
    assert!(c.recv().is("success", ns::SASL));
    c.open();
    c.bind(Some("r"));
    c
}

#[test]
fn a_published_service_is_listed_answers_and_rescinds_answering_what_waits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shoal.db");
    let (addr, stop, thread) = start(db.clone());
    let mut c = login(addr, "alice");
    c.send("<iq type='get' id='items' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='items' type='result' from='localhost' to='alice@localhost/r'>\
         <query xmlns='http://jabber.org/protocol/disco#items'><item jid='svc.localhost' name='Service'/></query></iq>"
    );
    c.send("<iq type='get' id='q1' to='svc.localhost'><query xmlns='urn:test:x'/></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='q1' type='result' from='svc.localhost' to='alice@localhost/r'><ok xmlns='urn:test'/></iq>"
    );
    // Held requests wait; rescinding answers them.
    c.send("<iq type='get' id='h1' to='svc.localhost'><query xmlns='urn:test:hold'/></iq>");
    c.send("<iq type='set' id='h2' to='bot@svc.localhost'><query xmlns='urn:test:hold'/></iq>");
    c.expect_nothing();
    // The command line lists both, with what each has in flight.
    let config = dir.path().join("shoal.toml");
    std::fs::write(&config, format!("[storage]\nsqlite = {:?}\n", db)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .arg("--config")
        .arg(&config)
        .args(["service", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing: Vec<Vec<String>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    let fields = |row: &Vec<String>| [row[0].clone(), row[1].clone(), row[2].clone(), row[5].clone()];
    assert_eq!(
        listing.iter().map(fields).collect::<Vec<_>>(),
        [
            ["hidden.localhost", "in-process", "hidden", "0"].map(String::from),
            ["svc.localhost", "in-process", "listed", "2"].map(String::from),
        ]
    );
    assert_eq!(listing[1].last().map(String::as_str), Some("Service"));
    c.send("<message to='svc.localhost'><body>rescind</body></message>");
    let answers = c.recv_set(2);
    assert_eq!(
        answers,
        common::sorted([
            "<iq id='h1' type='error' from='svc.localhost' to='alice@localhost/r'><error type='cancel'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
            "<iq id='h2' type='error' from='bot@svc.localhost' to='alice@localhost/r'><error type='cancel'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        ])
    );
    c.send("<iq type='get' id='items2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='items2' type='result' from='localhost' to='alice@localhost/r'>\
         <query xmlns='http://jabber.org/protocol/disco#items'/></iq>"
    );
    c.send("<iq type='get' id='gone' to='svc.localhost'><query xmlns='urn:test:x'/></iq>");
    let gone = c.recv_xml();
    assert!(gone.contains("<remote-server-not-found"), "{gone}");
    // The hidden service answers too, unlisted.
    c.send("<iq type='get' id='hid' to='hidden.localhost'><query xmlns='urn:test:x'/></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='hid' type='result' from='hidden.localhost' to='alice@localhost/r'><ok xmlns='urn:test'/></iq>"
    );
    // An answer nobody asked for, sent as the service, goes nowhere: the
    // client cannot forge one either (its from is stamped).
    c.expect_nothing();
    stop.send(()).unwrap();
    thread.join().unwrap();
}

/// Keeps what it is given, serialised, for the test to read.
struct Recorder(std::sync::Mutex<std::sync::mpsc::Sender<String>>);

impl ServiceSink for Recorder {
    fn deliver(&self, stanza: &Stanza) -> bool {
        let xml = stanza.element().to_xml_in(ns::CLIENT);
        self.0.lock().unwrap().send(xml).is_ok()
    }
}

#[test]
fn a_dropped_connection_tells_the_services_it_sent_presence_to() {
    // RFC 6121 §4.6.3, for a service as for a user: a room a client joined
    // learns that it left when its connection drops (XEP-0045 needs it).
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shoal.db");
    let (seen_tx, seen) = std::sync::mpsc::channel();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let mut config = Config::default();
            config.c2s.listen = vec!["127.0.0.1:0".parse().unwrap()];
            config.http.listen = Vec::new();
            config.storage.sqlite = db;
            let server = ServerBuilder::new(config).workers(1).start().await.unwrap();
            let sink = Box::new(Recorder(std::sync::Mutex::new(seen_tx)));
            let publication = server
                .router()
                .publish("rec.localhost", sink, PublishOptions::default())
                .unwrap();
            addr_tx.send(server.local_addrs()[0]).unwrap();
            let _ = stop_rx.await;
            drop(publication);
            server.shutdown().await;
        });
    });
    let addr = addr_rx.recv().unwrap();
    let next = || seen.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    // Available, then a room joined.
    let mut alice = login(addr, "alice");
    alice.send("<presence/>");
    alice.send("<presence to='room@rec.localhost/Alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>");
    assert_eq!(
        next(),
        "<presence to='room@rec.localhost/Alice' from='alice@localhost/r'><x xmlns='http://jabber.org/protocol/muc'/></presence>"
    );
    alice.sync();
    drop(alice);
    assert_eq!(
        next(),
        "<presence to='room@rec.localhost/Alice' type='unavailable' from='alice@localhost/r'/>"
    );
    // Never available: the room it joined is told all the same.
    let mut bob = login(addr, "bob");
    bob.send("<presence to='room@rec.localhost/Bob'/>");
    assert_eq!(next(), "<presence to='room@rec.localhost/Bob' from='bob@localhost/r'/>");
    bob.sync();
    drop(bob);
    assert_eq!(
        next(),
        "<presence type='unavailable' from='bob@localhost/r' to='room@rec.localhost/Bob'/>"
    );
    stop_tx.send(()).unwrap();
    thread.join().unwrap();
}
