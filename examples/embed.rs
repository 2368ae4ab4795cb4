//! Embedding Shoal in an actix program of your own: accounts in memory, a
//! custom IQ service, and the host program messaging its users through the
//! SessionManager.
//!
//!     cargo run --example embed
//!
//! then log in as demo@localhost (password "demo") on the printed port and
//! send `<iq type='get' to='localhost' id='1'><motd xmlns='urn:example:motd'/></iq>`.

use std::sync::Arc;
use std::time::Duration;

use shoal::{Config, ServerBuilder};
use shoal_actors::iq_handler::{ready, IqFuture, IqHandler, IqRequest, IqScope};
use shoal_actors::jid::{BareJid, Jid};
use shoal_actors::ns;
use shoal_actors::router::Router;
use shoal_actors::sasl::Credentials;
use shoal_actors::session_manager::{ListSessions, RouteStanza};
use shoal_actors::stanza::{Kind, MessageType, Stanza};
use shoal_actors::storage::{MemoryStorage, Storage};
use shoal_actors::xml::Element;

/// A service of the host program, answered like any server IQ.
struct Motd;

impl IqHandler for Motd {
    fn handle(&self, _: &Router, _: IqRequest) -> IqFuture {
        ready(Ok(Some(
            Element::new("motd", "urn:example:motd").with_text("Welcome to the shoal."),
        )))
    }

    fn features(&self) -> Vec<String> {
        vec!["urn:example:motd".into()]
    }
}

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let storage = Arc::new(MemoryStorage::default());
    let demo = BareJid::new("demo", "localhost")?;
    storage.create_user(&demo, Credentials::derive("demo", 4096)).await?;

    let mut config = Config::default();
    config.c2s.listen = vec!["127.0.0.1:0".parse()?];
    let server = ServerBuilder::new(config)
        .storage(storage)
        .iq_handler(IqScope::Server, "urn:example:motd", Arc::new(Motd))
        .start()
        .await?;
    println!(
        "listening on {}; log in as demo@localhost / demo",
        server.local_addrs()[0]
    );

    // The host program greets every session once a minute.
    let sm = server.session_manager().clone();
    let domain: Jid = server.router().default_domain().clone().into();
    let ticker = actix_rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Ok(sessions) = sm.send(ListSessions).await else {
                return;
            };
            for jid in sessions {
                let body = Element::new("body", ns::CLIENT).with_text("Still swimming?");
                let msg = Stanza::new(
                    Kind::Message(MessageType::Headline),
                    Some(domain.clone()),
                    Some(jid.into()),
                    Element::new("message", ns::CLIENT).with_child(body),
                );
                sm.do_send(RouteStanza(msg));
            }
        }
    });

    tokio::signal::ctrl_c().await?;
    ticker.abort();
    server.shutdown().await;
    Ok(())
}
