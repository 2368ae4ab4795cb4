//! Server-to-server federation (RFC 6120, XEP-0220, XEP-0178, XEP-0368):
//! stanzas for a domain that is neither ours nor a published service go
//! to that domain's server, over a stream of our own; its server's
//! stanzas for us arrive on streams it opens.
//!
//! One file per piece:
//!
//! - `mod.rs` (here): the settings, the [`S2sContext`] every stream and
//!   link shares, [`accept`] for inbound connections, and the router's way
//!   out ([`crate::router::RemoteRoute`]).
//! - `inbound.rs`: the [`S2sIn`] actor, one per stream a peer opens, on
//!   the client transport: STARTTLS, SASL EXTERNAL when the peer's
//!   certificate is valid for its domain, dialback for the rest, then the
//!   peer's stanzas, checked against the domains it authenticated.
//! - `outbound.rs`: the [`S2sOut`] actor, one per stream we open: the
//!   initiating side's dialogue (header, STARTTLS, EXTERNAL or
//!   `<db:result/>`), for a link or for one dialback verification.
//! - `link.rs`: one link per (local, remote) domain pair, under a
//!   [`crate::outbound::ConnectionManager`]: stanzas wait (bounded) while it
//!   comes up, go back to their senders when it cannot, and the link
//!   closes when idle.
//! - [`dialback`]: the key and the elements. [`resolve`]: where a domain's
//!   server is. [`tls`]: the certificates' checks.

pub mod dialback;
mod inbound;
mod link;
mod outbound;
pub mod resolve;
pub mod tls;

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use actix::{Actor, AsyncContext};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use dialback::{Body, Dialback, DialbackParseError};
pub use inbound::S2sIn;
pub use link::{Direction, LinkInfo};
pub use outbound::S2sOut;
pub use resolve::{Dns, Resolve, ResolveError, StaticHosts, StaticThen, StaticThenDns, Target};
pub use tls::S2sTls;

use crate::c2s::io::Io;
use crate::c2s::limits::{Admission, ConnectionLimits};
use crate::c2s::transport::{self, StreamSettings};
use crate::codec::{CodecLimits, XmppCodec};
use crate::error::{StanzaCondition, StreamCondition, StreamError};
use crate::router::{RemoteRoute, Router};
use crate::stanza::Stanza;

/// How federation behaves; `[s2s]` in the server's configuration.
#[derive(Clone, Debug)]
pub struct S2sSettings {
    /// A peer must start TLS before anything else (and we must be able to
    /// start it with every peer); otherwise dialback is offered in the
    /// clear too.
    pub tls_required: bool,
    /// One outbound attempt: resolution, TCP, TLS and authentication.
    pub connect_timeout: Duration,
    /// Wait before trying a domain again after its link failed or ended.
    pub reconnect_after: Duration,
    /// A link, or an inbound stream, silent this long is closed.
    pub idle_timeout: Duration,
    /// Stanzas waiting for one link to come up.
    pub max_queued: usize,
    /// Limits before the peer has authenticated a domain (small stanzas
    /// only: dialback and TLS need no more) and the stanza size after.
    pub codec: CodecLimits,
    pub max_stanza_bytes: usize,
    /// Read rates, connections per IP, write timeout.
    pub connections: ConnectionLimits,
    /// Bytes queued for one stream.
    pub max_outbound_bytes: usize,
    /// Time a peer has to authenticate once connected.
    pub negotiation_timeout: Duration,
    pub close_linger: Duration,
    /// Domains neither connected to nor accepted from.
    pub blocked: HashSet<String>,
    /// Links (remote domains) at most at once, and dialback verifications
    /// in flight at most, in all and on one stream.
    pub max_links: usize,
    /// Streams one remote domain may have authenticated to us at once.
    pub max_streams_per_domain: usize,
    pub max_verifications: usize,
    pub max_verifications_per_stream: usize,
    /// IQ requests our users send to another domain, waiting for their
    /// answers: how long each may wait (then the requester gets
    /// `<remote-server-timeout/>`), and how many at most, in all and from
    /// one account (as for a published service).
    pub requests: crate::services::PublishOptions,
}

impl Default for S2sSettings {
    fn default() -> Self {
        // Servers send more than clients (Prosody reads 30 kB/s per peer,
        // ejabberd 200 kB/s).
        let connections = ConnectionLimits {
            rate: 1 << 20,
            burst: 1 << 20,
            ..ConnectionLimits::default()
        };
        let codec = CodecLimits {
            // Prosody's s2s_unauthed_stanza_size_limit.
            max_stanza_bytes: 10_000,
            ..CodecLimits::default()
        };
        S2sSettings {
            tls_required: true,
            connect_timeout: Duration::from_secs(10),
            reconnect_after: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(600),
            max_queued: 1000,
            codec,
            max_stanza_bytes: 256 * 1024,
            connections,
            max_outbound_bytes: 4 << 20,
            negotiation_timeout: Duration::from_secs(30),
            close_linger: Duration::from_secs(1),
            blocked: HashSet::new(),
            max_links: 10_000,
            max_streams_per_domain: 8,
            max_verifications: 1024,
            max_verifications_per_stream: 8,
            requests: crate::services::PublishOptions {
                iq_timeout: Duration::from_secs(30),
                max_pending: 10_000,
                max_pending_per_requester: 100,
                ..Default::default()
            },
        }
    }
}

/// How a stream authenticated a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Server Dialback (XEP-0220).
    Dialback,
    /// SASL EXTERNAL with the domain's certificate (XEP-0178).
    External,
}

impl Auth {
    pub fn as_str(self) -> &'static str {
        match self {
            Auth::Dialback => "dialback",
            Auth::External => "external",
        }
    }
}

/// Why a link could not be made or was lost, in words for the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum S2sError {
    #[error("{0}")]
    Dns(#[from] ResolveError),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("authentication refused: {0}")]
    Auth(String),
    #[error("stream: {0}")]
    Stream(String),
}

impl S2sError {
    /// What the senders of the stanzas that were waiting get (RFC 6120
    /// §8.3.3.16 and .17).
    pub fn condition(&self) -> StanzaCondition {
        match self {
            S2sError::Dns(_) => StanzaCondition::RemoteServerNotFound,
            _ => StanzaCondition::RemoteServerTimeout,
        }
    }

    /// Carried through the connection manager as an `io::Error`.
    fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }

    /// The S2sError inside an `io::Error` from [`S2sError::into_io`].
    fn of(err: &std::io::Error) -> Option<&S2sError> {
        err.get_ref()?.downcast_ref::<S2sError>()
    }
}

/// What every server-to-server stream and link of a server shares.
pub struct S2sContext {
    /// Itself, for what it starts from the router's calls (links).
    this: std::sync::Weak<S2sContext>,
    pub router: Router,
    pub settings: S2sSettings,
    pub tls: S2sTls,
    /// The dialback secret (XEP-0185): keys made with it must survive a
    /// restart, or a peer's pending verifications fail.
    secret: Vec<u8>,
    resolver: Box<dyn Resolve + Send + Sync>,
    links: link::Links,
    /// Where links and their streams run.
    arbiter: actix::ArbiterHandle,
    /// Cancelled at shutdown: every stream is closed with `<system-shutdown/>`.
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    /// Inbound connections per IP and those not authenticated yet.
    pub admission: Arc<Admission>,
    /// Outbound connections are not counted, but need admission slots.
    outbound_admission: Arc<Admission>,
    /// Dialback verifications in flight.
    verifications: AtomicUsize,
    /// Inbound streams that authenticated a domain, by stream, for
    /// `shoal s2s list`.
    inbound: dashmap::DashMap<u64, link::InboundEntry>,
}

impl S2sContext {
    /// The context of a server's federation, started on `arbiter` (where
    /// links run), closing its streams when `shutdown` is cancelled; the
    /// router sends what is for other domains through it from now on.
    pub fn new(
        router: Router,
        settings: S2sSettings,
        tls: S2sTls,
        secret: Vec<u8>,
        resolver: Box<dyn Resolve + Send + Sync>,
        shutdown: CancellationToken,
    ) -> Arc<S2sContext> {
        let cx = Arc::new_cyclic(|this| S2sContext {
            this: this.clone(),
            router: router.clone(),
            settings,
            tls,
            secret,
            resolver,
            links: link::Links::default(),
            arbiter: actix::Arbiter::new().handle(),
            shutdown,
            tasks: TaskTracker::new(),
            admission: Arc::new(Admission::default()),
            outbound_admission: Arc::new(Admission::default()),
            verifications: AtomicUsize::new(0),
            inbound: dashmap::DashMap::new(),
        });
        let route: Arc<dyn RemoteRoute> = cx.clone();
        router.set_remote(Arc::downgrade(&route));
        cx
    }

    /// True for a domain this server answers for: a hosted domain or a
    /// published service (whose stanzas it sends on the service's behalf).
    pub fn is_ours(&self, domain: &str) -> bool {
        self.router.is_local_domain(domain) || self.router.services().get(domain).is_some()
    }

    pub fn is_blocked(&self, domain: &str) -> bool {
        self.settings.blocked.contains(domain)
    }

    /// The links we opened and the streams other servers opened, for
    /// `shoal s2s list`.
    pub fn links(&self) -> Vec<LinkInfo> {
        let mut links = self.links.list();
        links.extend(self.inbound.iter().map(|e| e.info()));
        links.sort_by(|a, b| (&a.local, &a.remote, a.direction).cmp(&(&b.local, &b.remote, b.direction)));
        links
    }

    /// Closes every link (at shutdown).
    pub fn close_links(&self) {
        self.links.close_all();
    }

    fn key(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        dialback::key(&self.secret, receiving, originating, stream_id)
    }
}

impl RemoteRoute for S2sContext {
    fn deliver(&self, stanza: Stanza) {
        link::deliver(self, stanza)
    }

    fn deliver_copy(&self, from: &crate::jid::Jid, to: &crate::jid::Jid, bytes: bytes::Bytes) {
        link::deliver_copy(self, from, to, bytes)
    }
}

/// Seeded at random per process, so that nobody can pick a JID whose key
/// collides with another sender's and spend that sender's share of a
/// link's queue.
static SENDER_KEYS: LazyLock<std::collections::hash_map::RandomState> = LazyLock::new(Default::default);

/// The key of a stanza's sender (its account) for its link's fair queueing.
fn sender_key(from: Option<&crate::jid::Jid>) -> u64 {
    from.map_or(0, |f| SENDER_KEYS.hash_one((f.node(), f.domain())))
}

/// An inbound stream's settings for its transport task: the small
/// pre-authentication limits until a domain authenticates.
pub(crate) struct InboundSettings {
    cx: Arc<S2sContext>,
}

impl StreamSettings for InboundSettings {
    fn limits(&self) -> &ConnectionLimits {
        &self.cx.settings.connections
    }

    fn tls(&self) -> Option<&crate::c2s::io::TlsSettings> {
        Some(&self.cx.tls.server)
    }

    fn authenticated_codec(&self) -> Option<CodecLimits> {
        Some(CodecLimits {
            max_stanza_bytes: self.cx.settings.max_stanza_bytes,
            ..self.cx.settings.codec
        })
    }
}

/// Takes a new connection from another server on the current arbiter:
/// admits it (per-IP and not-yet-authenticated limits) and starts it, or
/// refuses it with a stream error.
pub fn accept(cx: Arc<S2sContext>, io: Io, peer: SocketAddr) {
    match cx.admission.admit(peer.ip(), &cx.settings.connections) {
        Ok(admitted) => {
            let codec = XmppCodec::new(cx.settings.codec).for_server();
            let settings = Arc::new(InboundSettings { cx: cx.clone() });
            let started = transport::start(io, codec, settings, admitted, cx.settings.max_outbound_bytes, &cx.tasks);
            S2sIn::create(move |ctx| {
                ctx.add_stream(started.frames.map(|b| *b));
                S2sIn::new(cx, started.out, peer, started.conn)
            });
        }
        Err(err) => {
            log::info!("{peer}: server connection refused: {err}");
            let header = inbound::header(cx.router.default_domain().as_str(), None, "refused");
            actix_rt::spawn(crate::c2s::refuse(io, header, err));
        }
    }
}

/// The stream error a peer gets at shutdown.
fn shutdown_error() -> StreamError {
    StreamError::new(StreamCondition::SystemShutdown)
}
