//! The component client (XEP-0114) under its connection manager, against a
//! real Shoal that is killed and restarted under it: the client comes
//! back, its subscribers see `Disconnected` then `Connected`, a request in
//! flight is answered with an error rather than lost, nothing panics, and
//! the component serves again afterwards.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use actix::prelude::*;
use common::{TestServer, TIMEOUT};
use shoal::config::ComponentServiceConfig;
use shoal_actors::component::client::{ComponentConfig, ComponentConnector, ComponentHandle, Incoming, RequestError};
use shoal_actors::jid::Jid;
use shoal_actors::ns;
use shoal_actors::outbound::{ConnectionEvent, ConnectionManager, CurrentHandle, ManagerSettings, Shutdown, Subscribe};
use shoal_actors::stanza::{IqType, Kind, Stanza};
use shoal_actors::xml::Element;

const DOMAIN: &str = "bot.localhost";
const SECRET: &str = "s3cret";

/// Panics anywhere in the process, the component's threads included
/// (actix would otherwise swallow a panicking task).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
}

/// Answers every IQ get or set with `<ok xmlns='urn:test'/>`.
struct Bot;

impl Actor for Bot {
    type Context = Context<Self>;
}

impl Handler<Incoming> for Bot {
    type Result = ();

    fn handle(&mut self, msg: Incoming, _: &mut Context<Self>) {
        if msg.stanza.is_iq_request() {
            let reply = msg.stanza.iq_result(Some(Element::new("ok", "urn:test")));
            msg.handle.send(&reply).unwrap();
        }
    }
}

/// Passes connection events to the test thread.
struct Watcher(mpsc::Sender<ConnectionEvent<ComponentHandle>>);

impl Actor for Watcher {
    type Context = Context<Self>;
}

impl Handler<ConnectionEvent<ComponentHandle>> for Watcher {
    type Result = ();

    fn handle(&mut self, msg: ConnectionEvent<ComponentHandle>, _: &mut Context<Self>) {
        let _ = self.0.send(msg);
    }
}

/// The component: a connection manager on an actix System of its own.
struct Component {
    system: System,
    manager: Addr<ConnectionManager<ComponentConnector>>,
    events: mpsc::Receiver<ConnectionEvent<ComponentHandle>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Component {
    fn start(server: SocketAddr) -> Component {
        let (events_tx, events) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = System::new();
            system.block_on(async move {
                let mut config = ComponentConfig::new(server.to_string(), DOMAIN, SECRET);
                // Longer than the test waits: a request that is never
                // answered must not pass for one failed by disconnection.
                config.request_timeout = Duration::from_secs(120);
                let connector = ComponentConnector::new(config, Bot.start().recipient());
                let settings = ManagerSettings {
                    reconnect_after: Duration::from_millis(50),
                    max_backoff: Duration::from_millis(500),
                    ..ManagerSettings::default()
                };
                let manager = ConnectionManager::new(connector, settings).start();
                manager.do_send(Subscribe(Watcher(events_tx).start().recipient()));
                ready_tx.send((System::current(), manager)).unwrap();
            });
            system.run().unwrap();
        });
        let (system, manager) = ready.recv_timeout(TIMEOUT).expect("component start");
        Component {
            system,
            manager,
            events,
            thread: Some(thread),
        }
    }

    fn next_event(&self) -> ConnectionEvent<ComponentHandle> {
        self.events.recv_timeout(TIMEOUT).expect("no connection event in time")
    }

    /// The next connection, past the attempts that fail while the server
    /// is away.
    fn connected(&self) -> ComponentHandle {
        loop {
            match self.next_event() {
                ConnectionEvent::Connected(handle) => return handle,
                ConnectionEvent::AttemptFailed(_) => {}
                ConnectionEvent::Disconnected => panic!("expected Connected, got Disconnected"),
            }
        }
    }

    /// Runs `fut` on the component's System; its output arrives on the
    /// returned channel.
    fn run<T: Send + 'static>(&self, fut: impl std::future::Future<Output = T> + Send + 'static) -> mpsc::Receiver<T> {
        let (tx, rx) = mpsc::channel();
        self.system.arbiter().spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx
    }

    fn stop(&mut self) {
        self.system.stop();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the component's thread");
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.system.stop();
    }
}

/// A port nobody listens on now, for the server to take and keep across
/// its restart.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn server_with_component(port: u16) -> TestServer {
    TestServer::with_config(|c| {
        c.components.services = vec![ComponentServiceConfig {
            domain: DOMAIN.into(),
            secret: SECRET.into(),
            name: None,
            max_stanza_bytes: None,
            max_outbound_bytes: None,
            rate_bytes_per_sec: None,
            burst_bytes: None,
        }];
        c.components.listen = vec![SocketAddr::from(([127, 0, 0, 1], port))];
    })
}

/// A client asks the component and gets its answer.
fn assert_component_answers(client: &mut common::Client, id: &str) {
    client.send(&format!(
        "<iq type='get' id='{id}' to='{DOMAIN}'><q xmlns='urn:test'/></iq>"
    ));
    let reply = client.recv_until(|e| e.attr("id") == Some(id));
    assert_eq!(
        reply.to_xml_in(ns::CLIENT),
        format!(
            "<iq id='{id}' type='result' from='{DOMAIN}' to='{}'><ok xmlns='urn:test'/></iq>",
            client.jid
        )
    );
}

#[test]
fn the_component_client_survives_a_server_restart() {
    count_panics();
    let port = free_port();
    let mut server = server_with_component(port);
    assert_eq!(server.component_addr().port(), port);
    server.add_user("alice", "pw");

    let mut component = Component::start(server.component_addr());
    let handle = component.connected();
    assert!(handle.is_connected());
    assert_eq!(handle.domain().as_str(), DOMAIN);

    // It serves.
    let mut alice = server.login("alice", "pw", "phone");
    assert_component_answers(&mut alice, "before");

    // It asks alice something she never answers.
    let ask = Element::new("iq", ns::CLIENT)
        .with_attr("id", "held")
        .with_child(Element::new("query", "urn:test:hold"));
    let to = Jid::parse(&alice.jid).unwrap();
    let from = Jid::parse(DOMAIN).unwrap();
    let request = handle.request(Stanza::new(Kind::Iq(IqType::Get), Some(from), Some(to), ask));
    let answer = component.run(request);
    let asked = alice.recv();
    assert_eq!(
        asked.to_xml_in(ns::CLIENT),
        format!(
            "<iq id='held' type='get' from='{DOMAIN}' to='{}'><query xmlns='urn:test:hold'/></iq>",
            alice.jid
        )
    );

    // The server goes away and comes back on the same component port.
    server.restart();
    assert_eq!(server.component_addr().port(), port);

    // The request waiting on the old connection is failed, not forgotten.
    let failed = answer
        .recv_timeout(TIMEOUT)
        .expect("the request in flight was not answered");
    assert_eq!(failed.unwrap_err(), RequestError::Disconnected);
    assert!(!handle.is_connected());

    // Subscribers saw the connection go, then come back.
    assert!(matches!(component.next_event(), ConnectionEvent::Disconnected));
    let handle = component.connected();
    assert!(handle.is_connected());
    let current = component.run(component.manager.send(CurrentHandle::new()));
    let current = current.recv_timeout(TIMEOUT).unwrap().unwrap();
    assert!(current.is_some_and(|h| h.is_connected()));

    // And it serves again.
    let mut alice = server.login("alice", "pw", "phone");
    assert_component_answers(&mut alice, "after");

    // Shut down, it says goodbye once and stops.
    component.manager.do_send(Shutdown);
    assert!(matches!(component.next_event(), ConnectionEvent::Disconnected));
    component.stop();
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked");
}
