//! External components (XEP-0114, Jabber Component Protocol), the server
//! side. A component connects, names the domain it serves in its stream
//! header, and proves it knows that domain's secret with `<handshake>`
//! (the hex SHA-1 of the stream id and the secret). Then it is published
//! ([`crate::services`]): stanzas for its domain go to it, and it sends
//! stanzas from its domain. Disconnecting rescinds it.
//!
//! A component's connection runs on the client machinery ([`crate::c2s`]'s
//! transport task, outbound queue, frames and codec): the same limits on
//! stanza size, read rate and slow readers, each settable per component.

mod actor;
/// The other side: a component connecting to a server.
pub mod client;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext};
use futures_util::StreamExt;
use sha1::{Digest, Sha1};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use actor::Component;

use crate::c2s::io::{Io, TlsSettings};
use crate::c2s::limits::{Admission, Admitted, ConnectionLimits};
use crate::c2s::transport::{self, StreamSettings};
use crate::c2s::C2sConfig;
use crate::codec::{CodecLimits, XmppCodec};
use crate::current::Current;
use crate::router::Router;
use crate::services::ConflictPolicy;

/// One configured component: its domain, its secret, and its own limits
/// (`None`: the clients').
#[derive(Clone, Default)]
pub struct ComponentService {
    pub domain: String,
    pub secret: String,
    /// A name for the server's listing of services.
    pub name: Option<String>,
    pub max_stanza_bytes: Option<usize>,
    pub max_outbound_bytes: Option<usize>,
    pub rate_bytes_per_sec: Option<u32>,
    pub burst_bytes: Option<u32>,
}

/// Everything but the secret: configurations get logged.
impl fmt::Debug for ComponentService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentService")
            .field("domain", &self.domain)
            .field("secret", &"<hidden>")
            .field("name", &self.name)
            .field("max_stanza_bytes", &self.max_stanza_bytes)
            .field("max_outbound_bytes", &self.max_outbound_bytes)
            .field("rate_bytes_per_sec", &self.rate_bytes_per_sec)
            .field("burst_bytes", &self.burst_bytes)
            .finish()
    }
}

/// Settings of component connections.
#[derive(Clone, Debug)]
pub struct ComponentConfig {
    pub services: Vec<ComponentService>,
    /// A second connection for a connected component's domain: which one
    /// stays (the other gets `<conflict/>`).
    pub conflict: ConflictPolicy,
    /// Time a component has to answer a request.
    pub iq_timeout: Duration,
    /// Domains left out of the server's disco#items listing.
    pub hidden: Vec<String>,
    /// Requests waiting for one component, in all and from one requester.
    pub max_pending: usize,
    pub max_pending_per_requester: usize,
    /// The clients' limits: those of a connection until it has shaken
    /// hands, and the defaults of each component's own.
    pub codec: CodecLimits,
    pub connections: ConnectionLimits,
    pub max_outbound_bytes: usize,
    /// Time from connecting to a successful handshake.
    pub negotiation_timeout: Duration,
    /// After the server closes a stream, how long the component has to
    /// close its side.
    pub close_linger: Duration,
}

impl Default for ComponentConfig {
    fn default() -> Self {
        let clients = C2sConfig::default();
        ComponentConfig {
            services: Vec::new(),
            conflict: ConflictPolicy::KickOld,
            iq_timeout: Duration::from_secs(30),
            hidden: Vec::new(),
            max_pending: 1000,
            max_pending_per_requester: 100,
            codec: clients.codec,
            connections: clients.connections,
            max_outbound_bytes: clients.max_outbound_bytes,
            negotiation_timeout: clients.negotiation_timeout,
            close_linger: clients.close_linger,
        }
    }
}

/// A configured component with its limits resolved.
pub(crate) struct Service {
    pub(crate) config: ComponentService,
    pub(crate) codec: CodecLimits,
    pub(crate) connections: ConnectionLimits,
    pub(crate) max_outbound_bytes: usize,
}

/// What a reload may change: the configured components, and the clients'
/// limits, which are those of a connection until it has shaken hands and
/// the defaults of each component's own.
struct Configured {
    /// By domain.
    services: HashMap<String, Arc<Service>>,
    connections: ConnectionLimits,
}

/// What every component connection of a server shares.
pub struct ComponentContext {
    pub router: Router,
    /// As started: the components and the clients' limits in force are
    /// in `configured` (a reload may change them).
    pub config: ComponentConfig,
    configured: Current<Configured>,
    /// Cancelled at shutdown: every stream is closed with `<system-shutdown/>`.
    pub shutdown: CancellationToken,
    /// The transport tasks, to wait for their last bytes at shutdown.
    pub tasks: TaskTracker,
    /// Connections per IP and those that have not shaken hands yet, with
    /// the clients' limits on both.
    pub admission: Arc<Admission>,
}

impl ComponentContext {
    pub fn new(router: Router, config: ComponentConfig) -> ComponentContext {
        let configured = configure(&config, &config.services, config.connections.clone());
        ComponentContext {
            router,
            config,
            configured: Current::new(configured),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            admission: Arc::new(Admission::default()),
        }
    }

    /// Shares another context's shutdown and task tracking (the client
    /// connections'), so that one shutdown closes and waits for both.
    pub fn with_shutdown(mut self, shutdown: CancellationToken, tasks: TaskTracker) -> ComponentContext {
        self.shutdown = shutdown;
        self.tasks = tasks;
        self
    }

    pub(crate) fn service(&self, domain: &str) -> Option<&Arc<Service>> {
        self.configured.get().services.get(domain)
    }

    /// The clients' limits in force: those of a connection that has not
    /// shaken hands yet.
    pub fn limits(&self) -> &ConnectionLimits {
        &self.configured.get().connections
    }

    /// Puts new component settings in force (a reload): `services` (their
    /// secrets and limits) and the clients' limits `connections`. Streams
    /// that have shaken hands keep their component's settings; a domain
    /// left out takes no new connection.
    pub fn set_services(&self, services: &[ComponentService], connections: ConnectionLimits) {
        self.configured.set(configure(&self.config, services, connections));
    }
}

/// `services` with their limits resolved: their own, else the clients'
/// (`connections`, and `config`'s codec and queue limits).
fn configure(config: &ComponentConfig, services: &[ComponentService], connections: ConnectionLimits) -> Configured {
    let services = services
        .iter()
        .map(|s| {
            let mut codec = config.codec;
            codec.max_stanza_bytes = s.max_stanza_bytes.unwrap_or(codec.max_stanza_bytes);
            let mut own = connections.clone();
            own.rate = s.rate_bytes_per_sec.unwrap_or(own.rate);
            own.burst = s.burst_bytes.unwrap_or(own.burst);
            let service = Service {
                config: s.clone(),
                codec,
                connections: own,
                max_outbound_bytes: s.max_outbound_bytes.unwrap_or(config.max_outbound_bytes),
            };
            (s.domain.clone(), Arc::new(service))
        })
        .collect();
    Configured { services, connections }
}

/// What `<handshake>` must hold for stream `stream_id` and `secret`:
/// the lowercase hex SHA-1 of the two concatenated (XEP-0114 §3).
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(stream_id.as_bytes());
    sha.update(secret.as_bytes());
    sha.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A component connection's settings for its transport task: the clients'
/// until it has shaken hands, then its component's own.
pub(crate) struct StreamLimits {
    cx: Arc<ComponentContext>,
    service: OnceLock<Arc<Service>>,
}

impl StreamLimits {
    /// From now on, `service`'s limits (set once: a stream serves one
    /// component).
    pub(crate) fn set(&self, service: Arc<Service>) {
        let _ = self.service.set(service);
    }
}

impl StreamSettings for StreamLimits {
    fn limits(&self) -> &ConnectionLimits {
        match self.service.get() {
            Some(service) => &service.connections,
            None => self.cx.limits(),
        }
    }

    /// XEP-0114 has no TLS: components connect over loopback or a trusted
    /// network.
    fn tls(&self) -> Option<&TlsSettings> {
        None
    }

    fn authenticated_codec(&self) -> Option<CodecLimits> {
        self.service.get().map(|s| s.codec)
    }
}

/// Takes a new component connection on the current arbiter: admits it
/// (per-IP and not-yet-shaken-hands limits) and starts it, or refuses it
/// with a stream error.
pub fn accept(cx: Arc<ComponentContext>, io: Io, peer: SocketAddr) {
    match cx.admission.admit(peer.ip(), cx.limits()) {
        Ok(admitted) => {
            spawn(cx, io, peer, admitted);
        }
        Err(err) => {
            log::info!("{peer}: component connection refused: {err}");
            let header = actor::header(cx.router.default_domain().as_str(), "refused");
            actix_rt::spawn(crate::c2s::refuse(io, header, err));
        }
    }
}

/// Starts an admitted component connection on the current arbiter: its
/// transport task and its actor.
pub fn spawn(cx: Arc<ComponentContext>, io: Io, peer: SocketAddr, admitted: Admitted) -> Addr<Component> {
    let codec = XmppCodec::new(cx.config.codec).for_component();
    let settings = Arc::new(StreamLimits {
        cx: cx.clone(),
        service: OnceLock::new(),
    });
    // The component's own queue limit is set once it has said which it is.
    let limit = cx.config.max_outbound_bytes;
    let started = transport::start(io, codec, settings.clone(), admitted, limit, &cx.tasks);
    Component::create(move |ctx| {
        ctx.add_stream(started.frames.map(|b| *b));
        Component::new(cx, settings, started.out, peer, started.conn)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_the_hex_sha1_of_id_and_secret() {
        // Computed elsewhere (Python's hashlib) for "3BF96D32" + "sausages".
        assert_eq!(
            handshake_digest("3BF96D32", "sausages"),
            "fa2d3cda0bc6c8337f6e910ce7bde26a5f49eb18"
        );
    }

    #[test]
    fn the_secret_is_not_shown() {
        let s = ComponentService {
            domain: "bot.localhost".into(),
            secret: "sausages".into(),
            ..ComponentService::default()
        };
        let shown = format!("{s:?}");
        assert!(
            shown.contains("bot.localhost") && !shown.contains("sausages"),
            "{shown}"
        );
    }
}
