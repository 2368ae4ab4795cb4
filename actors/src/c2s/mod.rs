//! Client-to-server connections. Each connection is two parts: a transport
//! task that owns the socket ([`transport`]), and the [`C2s`] actor that owns
//! the session's state: stream negotiation ([`auth`], [`bind`]), then
//! stamping and routing what the client sends ([`actor`]).

mod actor;
mod archiving;
mod auth;
mod bind;
pub(crate) mod frames;
pub mod io;
pub mod limits;
pub(crate) mod outbound;
pub(crate) mod resume;
mod sweep;
pub(crate) mod transport;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext};
use futures_util::StreamExt;
use tokio::io::AsyncWrite;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use actor::random_id;
pub use actor::C2s;
pub use outbound::{Outbound, OutboundReader, SendError};
pub use resume::{ResumeRefused, Resumed};

use crate::codec::{CodecLimits, XmppCodec};
use crate::current::Current;
use crate::error::StreamError;
use crate::presence::ConnectionHandler;
use crate::router::Router;
use crate::session_manager::SessionManager;
use crate::xml::Element;
use io::{Io, TlsSettings};
use limits::{Admission, Admitted, AuthThrottle, ConnectionLimits};

/// Settings of client connections.
#[derive(Clone, Debug)]
pub struct C2sConfig {
    pub codec: CodecLimits,
    /// Rates, connection counts, idle pings and login throttling, at start:
    /// those in force are [`C2sContext::limits`] (a reload may change them).
    pub connections: ConnectionLimits,
    /// PBKDF2 iterations for accounts created in-band.
    pub scram_iterations: u32,
    /// Bytes queued for a client that is not reading before it is dropped.
    pub max_outbound_bytes: usize,
    /// Time from connecting to a bound resource.
    pub negotiation_timeout: Duration,
    /// Failed SASL attempts allowed on one stream.
    pub max_auth_failures: u32,
    /// After the server closes a stream, how long the client has to close its side.
    pub close_linger: Duration,
    /// STARTTLS and SCRAM-PLUS; `None` offers no TLS at all.
    pub tls: Option<TlsSettings>,
    /// Offer SASL PLAIN on unencrypted streams (sensible on loopback only).
    pub allow_plain_without_tls: bool,
    /// XEP-0198 stream management; `None` does not offer it.
    pub sm: Option<SmSettings>,
}

/// Stream management (XEP-0198) settings.
#[derive(Clone, Debug)]
pub struct SmSettings {
    /// How long a dropped session waits to be resumed (0: not resumable).
    pub resume_timeout: Duration,
    /// Stanzas a client may leave unacknowledged before it is cut off.
    pub max_unacked: usize,
    /// The server asks for an acknowledgement every this many stanzas...
    pub request_every: u32,
    /// ...and when one has waited this long.
    pub request_after: Duration,
}

impl Default for SmSettings {
    fn default() -> Self {
        SmSettings {
            resume_timeout: Duration::from_secs(300),
            max_unacked: 5000,
            request_every: 5,
            request_after: Duration::from_secs(30),
        }
    }
}

impl Default for C2sConfig {
    fn default() -> Self {
        C2sConfig {
            codec: CodecLimits::default(),
            connections: ConnectionLimits::default(),
            scram_iterations: crate::sasl::MIN_ITERATIONS,
            max_outbound_bytes: 1024 * 1024,
            negotiation_timeout: Duration::from_secs(30),
            max_auth_failures: 3,
            close_linger: Duration::from_secs(2),
            tls: None,
            allow_plain_without_tls: true,
            sm: Some(SmSettings::default()),
        }
    }
}

/// What every connection of a server shares.
pub struct C2sContext {
    pub router: Router,
    pub sm: Addr<SessionManager>,
    pub config: C2sConfig,
    /// The embedder's hooks (or the standard behaviour).
    pub hooks: Arc<dyn ConnectionHandler>,
    /// Cancelled at shutdown: every stream is closed with `<system-shutdown/>`.
    pub shutdown: CancellationToken,
    /// The transport tasks, to wait for their last bytes at shutdown.
    pub tasks: TaskTracker,
    /// Keys the made-up SCRAM salts of unknown users. Random per process
    /// unless the host keeps one ([`C2sContext::with_secret`]): a salt that
    /// changed at each restart would tell an unknown user from a real one.
    pub(crate) secret: [u8; 32],
    pub admission: Arc<Admission>,
    pub throttle: AuthThrottle,
    /// In-band registrations per source network and domain (each hosted
    /// domain has its own policy: [`crate::hosts::Host`]).
    pub registrations: AuthThrottle,
    /// Every live connection, for the liveness sweep and shutdown.
    pub connections: sweep::Connections,
    /// The limits in force; see [`C2sContext::limits`].
    limits: Current<ConnectionLimits>,
    /// The server's caps (XEP-0115) for the stream features, made at first
    /// use: of a domain without in-band registration, and of one with it.
    server_caps: [OnceLock<Element>; 2],
}

impl C2sContext {
    pub fn new(
        router: Router,
        sm: Addr<SessionManager>,
        config: C2sConfig,
        hooks: Arc<dyn ConnectionHandler>,
    ) -> C2sContext {
        C2sContext {
            router,
            sm,
            limits: Current::new(config.connections.clone()),
            config,
            hooks,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            secret: crate::sasl::random_secret(),
            admission: Arc::new(Admission::default()),
            throttle: AuthThrottle::default(),
            registrations: AuthThrottle::default(),
            connections: sweep::Connections::default(),
            server_caps: Default::default(),
        }
    }

    /// Uses a secret kept across restarts for the made-up salts.
    pub fn with_secret(mut self, secret: [u8; 32]) -> C2sContext {
        self.secret = secret;
        self
    }

    /// The connection limits in force: read at each use (every read of a
    /// connection), so that a reload reaches the connections already open.
    pub fn limits(&self) -> &ConnectionLimits {
        self.limits.get()
    }

    /// The server's `<c/>` for a domain that offers in-band registration
    /// or not (its disco#info, hence its ver, differs).
    pub(crate) fn server_caps(&self, registration: bool) -> &Element {
        self.server_caps[usize::from(registration)]
            .get_or_init(|| crate::xep::caps::server_caps(&self.router, registration))
    }

    /// Puts new connection limits in force (a reload).
    pub fn set_limits(&self, limits: ConnectionLimits) {
        self.limits.set(limits);
    }
}

/// Locks one of a connection's small shared structures. Nothing that holds
/// these locks can panic, so a poisoned one is still sound.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Takes a new connection on the current arbiter: admits it (per-IP and
/// unauthenticated limits) and starts it, or refuses it with a stream error.
pub fn accept(cx: Arc<C2sContext>, io: Io, peer: SocketAddr) {
    match cx.admission.admit(peer.ip(), cx.limits()) {
        Ok(admitted) => {
            spawn(cx, io, peer, admitted);
        }
        Err(err) => {
            log::info!("{peer}: refused: {err}");
            let header = format!(
                "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='refused' from='{}' version='1.0'>",
                crate::ns::CLIENT,
                crate::ns::STREAM,
                quick_xml::escape::escape(cx.router.default_domain().as_str())
            );
            // Over Direct TLS there is nobody to tell before the handshake.
            if !matches!(io, Io::TlsPending(..)) {
                actix_rt::spawn(refuse(io, header, err));
            }
        }
    }
}

/// Writes `header`, the error and the stream's close, then hangs up,
/// within a second: a refused connection of any kind (client, component).
pub(crate) async fn refuse<S: AsyncWrite + Unpin>(mut io: S, header: String, err: StreamError) {
    use tokio::io::AsyncWriteExt;
    let mut bytes = header.into_bytes();
    err.to_element().write_to(&mut bytes, crate::ns::CLIENT);
    bytes.extend_from_slice(b"</stream:stream>");
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = io.write_all(&bytes).await;
        let _ = io.shutdown().await;
    })
    .await;
}

/// Starts an admitted connection on the current arbiter: its transport
/// task and its actor. `io` is any byte stream (TCP, TLS, an in-memory
/// pipe in tests).
pub fn spawn(cx: Arc<C2sContext>, io: Io, peer: SocketAddr, admitted: Admitted) -> Addr<C2s> {
    let codec = XmppCodec::new(cx.config.codec);
    let started = transport::start(io, codec, cx.clone(), admitted, cx.config.max_outbound_bytes, &cx.tasks);
    C2s::create(move |ctx| {
        ctx.add_stream(started.frames.map(|b| *b));
        C2s::new(cx, started.out, peer, started.conn)
    })
}
