//! Presence from an application's own one-way follow graph instead of
//! XMPP rosters, with a connection handler of its own.
//!
//!     cargo run --example follow_graph
//!
//! Three accounts (password = name): alice follows bob, bob follows nobody,
//! carol follows alice and bob. Log in as them on the printed port: each
//! sees the presence of those they follow, with no subscription requests.

use std::sync::Arc;

use shoal::{Config, ServerBuilder};
use shoal_actors::jid::BareJid;
use shoal_actors::presence::{ConnectionHandler, FollowGraph, PresenceEvent};
use shoal_actors::sasl::Credentials;
use shoal_actors::session::Session;
use shoal_actors::storage::{MemoryStorage, Storage};

/// Logs what happens, then does what the standard handler does.
struct Logging;

impl ConnectionHandler for Logging {
    fn on_initial_presence(&self, event: &PresenceEvent<'_>) {
        log::info!(
            "{} is online; telling {} followers",
            event.session.jid,
            event.followers.len()
        );
        event.broadcast();
        event.probe_followees();
    }

    fn on_silent_disconnection(&self, session: &Session) {
        log::info!("{} left without ever being online", session.jid);
    }
}

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let storage = Arc::new(MemoryStorage::default());
    let graph = Arc::new(FollowGraph::default());
    let jid = |n: &str| BareJid::new(n, "localhost");
    for name in ["alice", "bob", "carol"] {
        storage
            .create_user(&jid(name)?, Credentials::derive(name, 4096))
            .await?;
    }
    graph.follow(&jid("alice")?, &jid("bob")?);
    graph.follow(&jid("carol")?, &jid("alice")?);
    graph.follow(&jid("carol")?, &jid("bob")?);

    let mut config = Config::default();
    config.c2s.listen = vec!["127.0.0.1:0".parse()?];
    let server = ServerBuilder::new(config)
        .storage(storage)
        .follower_source(graph)
        .connection_handler(Arc::new(Logging))
        .start()
        .await?;
    println!("listening on {}", server.local_addrs()[0]);
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
