//! The actors in-process, no sockets: one routing hop (a parsed message
//! in, the recipient's bytes out), presence fan-out through a
//! PresenceActor shard to F = 1,000 sessions, and a service's broadcast
//! (a MUC room's message) to the same 1,000 sessions. Sessions here are detached
//! outbound queues ([`Outbound::detached`]), read by the benchmark where a
//! connection's transport would write them to a socket.
//!
//!     cargo bench --bench actors        (make bench runs it with the others)

use std::sync::Arc;

use actix::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shoal_actors::c2s::{Outbound, OutboundReader};
use shoal_actors::iq_handler::IqHandlerTable;
use shoal_actors::jid::{BareJid, FullJid, Jid};
use shoal_actors::presence::{FollowGraph, PresenceHub, PresenceMsg, StandardHandler};
use shoal_actors::router::Router;
use shoal_actors::services::{Publication, PublishOptions, ServiceSink};
use shoal_actors::session::{Control, Session, SessionTable};
use shoal_actors::session_manager::{Register, SessionManager};
use shoal_actors::stanza::Stanza;
use shoal_actors::storage::MemoryStorage;
use shoal_actors::xml::{parse_element, Element, NsBindings, ParseLimits};

const FOLLOWERS: usize = 1000;

/// Stands in for a c2s actor: nobody is kicked during a benchmark.
struct NoConnection;

impl Actor for NoConnection {
    type Context = Context<Self>;
}

impl Handler<Control> for NoConnection {
    type Result = ();
    fn handle(&mut self, _: Control, _: &mut Context<Self>) {}
}

/// A service that takes nothing: the benchmark only sends from it.
struct NullSink;

impl ServiceSink for NullSink {
    fn deliver(&self, _: &Stanza) -> bool {
        false
    }
}

struct World {
    router: Router,
    presence: PresenceHub,
    publisher: Arc<Session>,
    /// romeo's queue, then the followers'.
    romeo: OutboundReader,
    followers: Vec<OutboundReader>,
    /// The followers' sessions, as a room holds its occupants'.
    sessions: Vec<Arc<Session>>,
    /// A room's service (`room.localhost`).
    room: Publication,
}

fn jid(s: &str) -> FullJid {
    Jid::parse(s).unwrap().try_into_full().unwrap()
}

/// Starts the actors on two arbiters of their own System, in a thread of
/// its own; returns once every session is bound and available.
fn world() -> World {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let arbiters: Vec<Arbiter> = (0..2).map(|_| Arbiter::new()).collect();
            let handles: Vec<_> = arbiters.iter().map(Arbiter::handle).collect();
            let storage = Arc::new(MemoryStorage::default());
            let sessions = SessionTable::default();
            let graph = Arc::new(FollowGraph::default());
            let juliet = BareJid::new("juliet", "localhost").unwrap();
            for i in 0..FOLLOWERS {
                graph.follow(&BareJid::new(&format!("f{i}"), "localhost").unwrap(), &juliet);
            }
            let presence = PresenceHub::start(
                &handles,
                sessions.clone(),
                graph,
                storage.clone(),
                Arc::new(StandardHandler),
            );
            let router = Router::new(
                BareJid::domain_jid("localhost").unwrap(),
                sessions,
                IqHandlerTable::new(),
                storage,
                presence.clone(),
            );
            let sm = SessionManager::new(router.clone(), 10).start();
            let control = NoConnection.start().recipient();
            let bind = |name: &str| {
                let (out, reader) = Outbound::detached(64 << 20);
                let session = Arc::new(Session::new(jid(name), out, control.clone()));
                session.set_available(0);
                session.set_interested();
                (session, reader)
            };
            let (publisher, _) = bind("juliet@localhost/balcony");
            let (romeo_session, romeo) = bind("romeo@localhost/orchard");
            let mut all = vec![publisher.clone(), romeo_session];
            let mut followers = Vec::new();
            let mut sessions = Vec::new();
            for i in 0..FOLLOWERS {
                let (s, r) = bind(&format!("f{i}@localhost/r"));
                all.push(s.clone());
                sessions.push(s);
                followers.push(r);
            }
            let room = router
                .publish("room.localhost", Box::new(NullSink), PublishOptions::default())
                .unwrap();
            for s in all {
                sm.send(Register(s)).await.unwrap().unwrap();
            }
            // The shard loads juliet's followers on first use: once that is
            // done, fan-out happens within the shard's handler.
            let first = PresenceMsg::Available {
                session: publisher.clone(),
                presence: Element::new("presence", shoal_actors::ns::CLIENT),
                initial: false,
                caps_before: None,
            };
            presence.request(first).await.unwrap();
            for f in &followers {
                f.recv().await.expect("the first presence");
            }
            tx.send(World {
                router,
                presence,
                publisher,
                romeo,
                followers,
                sessions,
                room,
            })
            .ok();
            std::future::pending::<()>().await;
            drop(arbiters);
        });
    });
    rx.recv().unwrap()
}

fn benches(c: &mut Criterion) {
    let world = world();
    let message = parse_element(
        b"<message from='juliet@localhost/balcony' to='romeo@localhost/orchard' type='chat' id='m1'>\
          <body>Wherefore art thou?</body></message>",
        &NsBindings::client(),
        &ParseLimits::default(),
    )
    .unwrap();
    let message = Stanza::from_element(message).unwrap();
    c.bench_function("route one message to a full JID (in, then out of the queue)", |b| {
        b.iter(|| {
            world.router.route(message.clone());
            world.romeo.try_recv().expect("delivered").len()
        })
    });

    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut group = c.benchmark_group("presence fan-out through a shard");
    group.throughput(Throughput::Elements(FOLLOWERS as u64));
    group.bench_function("to 1000 followers", |b| {
        b.iter(|| {
            let presence = Element::new("presence", shoal_actors::ns::CLIENT)
                .with_child(Element::new("status", shoal_actors::ns::CLIENT).with_text("on the balcony"));
            let msg = PresenceMsg::Available {
                session: world.publisher.clone(),
                presence,
                initial: false,
                caps_before: None,
            };
            // Resolves once the shard has queued the presence for everyone.
            runtime.block_on(world.presence.request(msg)).unwrap();
            world
                .followers
                .iter()
                .map(|f| f.try_recv().expect("delivered").len())
                .sum::<usize>()
        })
    });
    group.finish();

    // A MUC room's groupchat message: serialised once, addressed and
    // queued per occupant session (shoal_actors::muc's fan-out).
    let groupchat = parse_element(
        b"<message from='room@room.localhost/Juliet' type='groupchat' id='g1'>\
          <body>Wherefore art thou?</body></message>",
        &NsBindings::client(),
        &ParseLimits::default(),
    )
    .unwrap();
    let groupchat = Stanza::from_element(groupchat).unwrap();
    let mut group = c.benchmark_group("a service's broadcast");
    group.throughput(Throughput::Elements(FOLLOWERS as u64));
    group.bench_function("to 1000 occupants", |b| {
        b.iter(|| {
            let broadcast = world.room.broadcast(&groupchat).unwrap();
            for s in &world.sessions {
                world.room.deliver(&broadcast, &s.jid, Some(s)).unwrap();
            }
            world
                .followers
                .iter()
                .map(|f| f.try_recv().expect("delivered").len())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(actors, benches);
criterion_main!(actors);
