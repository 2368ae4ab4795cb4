//! An embedder's own follow graph drives presence fan-out (the Ocean
//! framework's pluggable follower source), and its connection handler is
//! called: as examples/follow_graph.rs sets it up.

mod common;

use std::sync::{mpsc, Arc, Mutex};

use common::Client;
use shoal::{Config, ServerBuilder};
use shoal_actors::jid::BareJid;
use shoal_actors::ns;
use shoal_actors::presence::{ConnectionHandler, FollowGraph, PresenceEvent};
use shoal_actors::sasl::Credentials;
use shoal_actors::session::Session;
use shoal_actors::storage::{MemoryStorage, Storage};

/// Reports each hook call on a channel the test waits on.
struct Reporting(Mutex<mpsc::Sender<String>>);

impl Reporting {
    fn report(&self, event: String) {
        if let Ok(tx) = self.0.lock() {
            let _ = tx.send(event);
        }
    }
}

impl ConnectionHandler for Reporting {
    fn on_initial_presence(&self, event: &PresenceEvent<'_>) {
        self.report(format!("initial {}", event.session.jid));
        event.broadcast();
        event.probe_followees();
    }

    fn on_silent_disconnection(&self, session: &Session) {
        self.report(format!("silent {}", session.jid));
    }
}

fn login(addr: std::net::SocketAddr, user: &str, resource: &str) -> Client {
    let mut c = Client::connect(addr);
    c.open();
    c.auth_plain(user, user);
    assert!(c.recv().is("success", ns::SASL));
    c.open();
    c.bind(Some(resource));
    c
}

#[test]
fn one_way_follows_without_rosters() {
    let (events_tx, events) = mpsc::channel();
    let hooks = Arc::new(Reporting(Mutex::new(events_tx)));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_hooks = hooks.clone();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let storage = Arc::new(MemoryStorage::default());
            let graph = Arc::new(FollowGraph::default());
            let jid = |n: &str| BareJid::new(n, "localhost").unwrap();
            for name in ["alice", "bob", "carol"] {
                storage
                    .create_user(&jid(name), Credentials::derive(name, 4096))
                    .await
                    .unwrap();
            }
            graph.follow(&jid("alice"), &jid("bob"));
            let mut config = Config::default();
            config.c2s.listen = vec!["127.0.0.1:0".parse().unwrap()];
            config.http.listen = Vec::new();
            let server = ServerBuilder::new(config)
                .storage(storage)
                .follower_source(graph)
                .connection_handler(server_hooks)
                .start()
                .await
                .unwrap();
            addr_tx.send(server.local_addrs()[0]).unwrap();
            let _ = stop_rx.await;
            server.shutdown().await;
        });
    });
    let addr = addr_rx.recv().unwrap();

    let mut bob = login(addr, "bob", "app");
    bob.send("<presence><status>building</status></presence>");
    assert_eq!(
        bob.recv_xml(),
        "<presence to='bob@localhost' from='bob@localhost/app'><status>building</status></presence>"
    );

    // Alice follows Bob: she gets his presence when she comes online...
    let mut alice = login(addr, "alice", "app");
    alice.send("<presence/>");
    assert_eq!(
        alice.recv_set(2),
        common::sorted([
            "<presence to='alice@localhost' from='alice@localhost/app'/>",
            "<presence to='alice@localhost/app' from='bob@localhost/app'><status>building</status></presence>",
        ])
    );
    // ...and his changes; he does not follow her, so he gets nothing.
    bob.send("<presence><show>dnd</show></presence>");
    assert_eq!(
        alice.recv_xml(),
        "<presence to='alice@localhost' from='bob@localhost/app'><show>dnd</show></presence>"
    );
    bob.recv();
    bob.expect_nothing();
    // Carol follows no one and nobody follows her.
    let mut carol = login(addr, "carol", "app");
    carol.send("<presence/>");
    carol.recv();
    drop(bob);
    assert_eq!(
        alice.recv_xml(),
        "<presence to='alice@localhost' type='unavailable' from='bob@localhost/app'/>"
    );
    carol.expect_nothing();

    let quiet = login(addr, "carol", "quiet");
    drop(quiet);
    let seen: Vec<String> = (0..4)
        .map(|_| events.recv_timeout(common::TIMEOUT).expect("a hook call"))
        .collect();
    assert_eq!(
        seen,
        [
            "initial bob@localhost/app",
            "initial alice@localhost/app",
            "initial carol@localhost/app",
            "silent carol@localhost/quiet"
        ]
    );
    stop_tx.send(()).unwrap();
    thread.join().unwrap();
}
