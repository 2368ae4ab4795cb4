//! The embedding API, as examples/embed.rs uses it: a server started inside
//! the caller's actix System with its own storage and IQ handler, and the
//! host program reaching users through the SessionManager.

mod common;

use std::sync::Arc;

use common::Client;
use shoal::{Config, ServerBuilder};
use shoal_actors::iq_handler::{ready, IqFuture, IqHandler, IqRequest, IqScope};
use shoal_actors::jid::{FullJid, Jid};
use shoal_actors::ns;
use shoal_actors::router::Router;
use shoal_actors::sasl::Credentials;
use shoal_actors::session_manager::{ListSessions, RouteStanza};
use shoal_actors::stanza::{Kind, MessageType, Stanza};
use shoal_actors::storage::{MemoryStorage, Storage};
use shoal_actors::xml::Element;

struct Echo;

impl IqHandler for Echo {
    fn handle(&self, _: &Router, req: IqRequest) -> IqFuture {
        ready(Ok(Some(
            Element::new("echo", "urn:example:echo").with_text(req.from.to_string()),
        )))
    }
}

#[test]
fn embedded_server_with_custom_storage_handler_and_host_messages() {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (cmd_tx, cmd_rx) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<Vec<FullJid>>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let storage = Arc::new(MemoryStorage::default());
            storage
                .create_user(&common::account("demo"), Credentials::derive("demo", 4096))
                .await
                .unwrap();
            let mut config = Config::default();
            config.c2s.listen = vec!["127.0.0.1:0".parse().unwrap()];
            config.http.listen = Vec::new();
            let server = ServerBuilder::new(config)
                .storage(storage)
                .iq_handler(IqScope::Server, "urn:example:echo", Arc::new(Echo))
                .start()
                .await
                .unwrap();
            addr_tx.send(server.local_addrs()[0]).unwrap();
            // The host program: when asked, greet every session and report them.
            let sm = server.session_manager().clone();
            let reply_to = tokio::task::spawn_blocking(move || cmd_rx.recv().unwrap())
                .await
                .unwrap();
            let sessions = sm.send(ListSessions).await.unwrap();
            for jid in &sessions {
                let el = Element::new("message", ns::CLIENT)
                    .with_child(Element::new("body", ns::CLIENT).with_text("hello from the host"));
                let msg = Stanza::new(
                    Kind::Message(MessageType::Headline),
                    Some(Jid::parse("localhost").unwrap()),
                    Some(jid.clone().into()),
                    el,
                );
                sm.send(RouteStanza(msg)).await.unwrap();
            }
            reply_to.send(sessions).unwrap();
            let _ = stop_rx.await;
            server.shutdown().await;
        });
    });
    let addr = addr_rx.recv().unwrap();
    let mut c = Client::connect(addr);
    c.open();
    c.auth_plain("demo", "demo");
    assert!(c.recv().is("success", ns::SASL));
    c.open();
    c.bind(Some("desk"));
    c.send("<iq type='get' id='e1' to='localhost'><echo xmlns='urn:example:echo'/></iq>");
    assert_eq!(
        c.recv_xml(),
        "<iq id='e1' type='result' from='localhost' to='demo@localhost/desk'>\
         <echo xmlns='urn:example:echo'>demo@localhost/desk</echo></iq>"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    cmd_tx.send(tx).unwrap();
    assert_eq!(
        c.recv_xml(),
        "<message type='headline' from='localhost' to='demo@localhost/desk'><body>hello from the host</body></message>"
    );
    assert_eq!(rx.recv().unwrap(), vec![FullJid::parse("demo@localhost/desk").unwrap()]);
    stop_tx.send(()).unwrap();
    thread.join().unwrap();
}
