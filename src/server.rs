//! Starting a whole server inside an actix System the caller already runs:
//! storage, the session manager, the router and its IQ handlers, worker
//! arbiters for connections, and the listeners. `main.rs`, the integration
//! tests and embedders all start Shoal through [`ServerBuilder`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter};
use shoal_actors::c2s::io::{Io, StartTls, TlsSettings};
use shoal_actors::c2s::{self, C2sConfig, C2sContext, SmSettings};
use shoal_actors::codec::CodecLimits;
use shoal_actors::component::{self, ComponentConfig, ComponentContext, ComponentService};
use shoal_actors::iq_handler::{IqHandler, IqScope};
use shoal_actors::presence::{ConnectionHandler, FollowerSource, PresenceHub, RosterFollowers, StandardHandler};
use shoal_actors::router::Router;
use shoal_actors::services::ConflictPolicy;
use shoal_actors::session::SessionTable;
use shoal_actors::session_manager::SessionManager;
use shoal_actors::storage::Storage;
use shoal_actors::xep::{self, ServerFeatures};
use shoal_actors::xml::ParseLimits;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{ComponentConflict, Config, ConfigError, StartTlsMode};
use crate::control::{self, ControlContext, ControlError, ControlListener, ControlServer};
use crate::reload::{ReloadError, Reloader};
use crate::store::{SqliteStorage, StoreError};
use crate::tls::{ServerCert, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Upload(#[from] crate::upload::UploadError),
    #[error("[muc] domain: {0}")]
    Muc(#[from] shoal_actors::services::PublishError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

pub struct ServerBuilder {
    config: Config,
    /// Where `config` was read from: what a reload reads again.
    config_file: Option<PathBuf>,
    storage: Option<Arc<dyn Storage>>,
    iq_handlers: Vec<(IqScope, String, Arc<dyn IqHandler>)>,
    workers: Option<usize>,
    followers: Option<Arc<dyn FollowerSource>>,
    hooks: Option<Arc<dyn ConnectionHandler>>,
}

impl ServerBuilder {
    pub fn new(config: Config) -> ServerBuilder {
        ServerBuilder {
            config,
            config_file: None,
            storage: None,
            iq_handlers: Vec::new(),
            workers: None,
            followers: None,
            hooks: None,
        }
    }

    /// The file the configuration was read from: a reload (`shoal reload`,
    /// SIGHUP, [`ServerHandle::reload`]) reads it again. Without one there
    /// is nothing to reload.
    pub fn config_file(mut self, path: PathBuf) -> Self {
        // The working directory is not the server's to keep.
        self.config_file = Some(std::path::absolute(&path).unwrap_or(path));
        self
    }

    /// Takes followers and followees from this source instead of rosters.
    pub fn follower_source(mut self, source: Arc<dyn FollowerSource>) -> Self {
        self.followers = Some(source);
        self
    }

    /// Replaces the standard connection handlers (bind, presence, disconnection).
    pub fn connection_handler(mut self, hooks: Arc<dyn ConnectionHandler>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Uses this storage instead of the configured SQLite database.
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Adds (or replaces) the handler of IQs in namespace `ns`.
    pub fn iq_handler(mut self, scope: IqScope, ns: &str, handler: Arc<dyn IqHandler>) -> Self {
        self.iq_handlers.push((scope, ns.to_owned(), handler));
        self
    }

    /// Threads serving connections (default: one per core).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }

    /// Starts everything. Must be awaited inside a running actix System.
    pub async fn start(self) -> Result<ServerHandle, StartError> {
        let started = Instant::now();
        let config = self.config;
        config.validate()?;
        // First: what is counted before the recorder is in place is never
        // counted (the handles are taken once).
        let http_on = !(config.http.listen.is_empty() && config.http.tls_listen.is_empty());
        let metrics = if http_on && config.http.metrics {
            match crate::metrics::install() {
                Ok(handle) => Some(crate::metrics::MetricsEndpoint::new(
                    handle,
                    config.http.metrics_allow.clone(),
                )),
                Err(e) => {
                    log::warn!("{e}: /metrics is off");
                    None
                }
            }
        } else {
            None
        };
        let hosts = config.hosted()?;
        let on_sqlite = self.storage.is_none();
        let storage: Arc<dyn Storage> = match self.storage {
            Some(s) => s,
            None => Arc::new(SqliteStorage::start(
                &config.storage.sqlite,
                2,
                config.limits.roster_limits(),
                config.default_domain(),
                config.storage.durability,
            )?),
        };
        // Password change and cancellation are answered where the asker's
        // domain allows registration: the handler checks that policy at
        // each request, which a reload may change.
        let mut handlers = xep::standard_iq_handlers(&ServerFeatures {
            registration: true,
            scram_iterations: config.auth.scram_iterations,
        });
        // XEP-0313, on the account (its disco#info lists it).
        if config.mam.enabled {
            handlers.register(IqScope::Account, xep::mam::NS, Arc::new(xep::mam::Mam));
        }
        // XEP-0163, on the account, for both of XEP-0060's namespaces.
        if config.pep.enabled {
            handlers.register(IqScope::Account, xep::pubsub::NS, Arc::new(xep::pep::Pep));
            handlers.register(IqScope::Account, xep::pubsub::OWNER, Arc::new(xep::pep::Pep));
        }
        for (scope, ns, handler) in self.iq_handlers {
            handlers.register(scope, &ns, handler);
        }
        let workers = self
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let arbiters: Arc<Vec<Arbiter>> = Arc::new((0..workers).map(|_| Arbiter::new()).collect());
        let sessions = SessionTable::default();
        let hooks = self.hooks.unwrap_or_else(|| Arc::new(StandardHandler));
        let followers = self
            .followers
            .unwrap_or_else(|| Arc::new(RosterFollowers(storage.clone())));
        let handles: Vec<_> = arbiters.iter().map(Arbiter::handle).collect();
        let presence = PresenceHub::start(&handles, sessions.clone(), followers, storage.clone(), hooks.clone());
        presence.set_pep(config.pep.settings(config.c2s.max_stanza_bytes));
        let served: Vec<String> = hosts
            .iter()
            .map(|h| {
                format!(
                    "{} (registration {})",
                    h.domain,
                    if h.registration { "on" } else { "off" }
                )
            })
            .collect();
        let router =
            Router::new(hosts, sessions, handlers, storage, presence).with_offline_quota(config.offline.max_messages);
        let router = router
            .with_mam(config.mam.settings())
            .with_caps(config.caps.max_entries);
        let sm = SessionManager::new(router.clone(), config.sessions.max_per_user).start();
        // Bound before the listeners, so that a second server on this
        // database is refused before it takes clients. With an embedder's
        // own storage there is no database for the `shoal` command to
        // change: no socket unless one is configured.
        let control_listener = match config.control.socket.clone() {
            Some(path) => Some(ControlListener::bind(&path).await?),
            None if on_sqlite => Some(ControlListener::bind(&config.control_socket()).await?),
            None => None,
        };
        let certs = certificates(&config)?;
        let c2s_config = C2sConfig {
            codec: CodecLimits {
                max_stanza_bytes: config.c2s.max_stanza_bytes,
                max_header_bytes: config.limits.max_header_bytes,
                parse: ParseLimits {
                    max_depth: config.limits.max_depth,
                    max_attrs: config.limits.max_attributes,
                    max_name_bytes: config.limits.max_name_bytes,
                },
            },
            connections: config.limits.connection_limits(),
            tls: tls_settings(&config, &certs)?,
            allow_plain_without_tls: config.allow_plain_without_tls(),
            scram_iterations: config.auth.scram_iterations,
            max_outbound_bytes: config.c2s.max_outbound_bytes,
            negotiation_timeout: Duration::from_secs(config.c2s.negotiation_timeout_secs),
            max_auth_failures: config.auth.max_failures,
            sm: config.sm.enabled.then(|| SmSettings {
                resume_timeout: Duration::from_secs(config.sm.resume_timeout_secs),
                max_unacked: config.sm.max_unacked,
                request_every: config.sm.ack_request_stanzas,
                request_after: Duration::from_secs(config.sm.ack_request_secs),
            }),
            ..C2sConfig::default()
        };
        let mut cx = C2sContext::new(router.clone(), sm.clone(), c2s_config, hooks);
        // XEP-0185: dialback keys must survive a restart, as the fake
        // salts of unknown users must not change.
        let mut dialback_secret = shoal_actors::sasl::random_secret();
        if on_sqlite {
            let fresh = shoal_actors::sasl::random_secret();
            let mut store = crate::store::SqliteStore::open_with(&config.storage.sqlite, config.storage.durability)?;
            let secret = store.secret("scram-fake-salt", fresh)?;
            cx = cx.with_secret(secret);
            dialback_secret = store.secret("dialback", dialback_secret)?;
        }
        let cx = Arc::new(cx);
        if config.mam.retention_days > 0 {
            actix_rt::spawn(expire_archive(
                router.clone(),
                config.mam.retention_days,
                cx.shutdown.clone(),
            ));
        }

        // Before any stream header: SNI picks, else the default domain's.
        let direct = cx.config.tls.as_ref().map(|t| t.acceptor(None));
        let plain = config.c2s.listen.iter().map(|a| (*a, None));
        let direct_tls = config.c2s.direct_tls_listen.iter().map(|a| (*a, direct.clone()));
        let mut listeners = Vec::new();
        for (addr, tls) in plain.chain(direct_tls) {
            let (listener, local) = listen(addr)?;
            listeners.push((listener, local, tls));
        }
        // External components (XEP-0114): a listener only if any is
        // configured. Bound with the others, so that a failure leaves
        // nothing running.
        let component_listeners = if config.components.services.is_empty() {
            Vec::new()
        } else {
            config
                .components
                .listen
                .iter()
                .map(|a| listen(*a))
                .collect::<Result<_, _>>()?
        };
        let http_plain: Vec<_> = config
            .http
            .listen
            .iter()
            .map(|a| listen(*a))
            .collect::<Result<_, _>>()?;
        let http_tls: Vec<_> = config
            .http
            .tls_listen
            .iter()
            .map(|a| listen(*a))
            .collect::<Result<_, _>>()?;
        // Other servers (federation): only when [s2s] listen is set.
        let s2s_listeners: Vec<_> = config.s2s.listen.iter().map(|a| listen(*a)).collect::<Result<_, _>>()?;
        let serve = Serve {
            shutdown: cx.shutdown.clone(),
            arbiters: arbiters.clone(),
            next: Arc::new(AtomicUsize::new(0)),
        };
        let mut local_addrs = Vec::new();
        let mut direct_tls_addrs = Vec::new();
        for (listener, local, tls) in listeners {
            if tls.is_some() {
                log::info!("listening for clients on {local} (Direct TLS)");
                direct_tls_addrs.push(local);
            } else {
                log::info!("listening for clients on {local}");
                local_addrs.push(local);
            }
            let cx = cx.clone();
            serve.spawn(listener, tls, move |io, peer| c2s::accept(cx.clone(), io, peer));
        }
        // Configured domains are known from the start: a stanza to one
        // that is not connected gets <remote-server-timeout/>.
        for service in &config.components.services {
            router.services().expect(&service.domain);
        }
        // XEP-0045: the rooms' actors run on the workers.
        let muc = if config.muc.enabled {
            Some(shoal_actors::muc::start(&router, config.muc_settings(), &handles)?)
        } else {
            None
        };
        let mut component_addrs = Vec::new();
        let mut components = None;
        if !component_listeners.is_empty() {
            // One shutdown and one set of tasks for clients and components.
            let ccx = ComponentContext::new(router.clone(), component_config(&config, &cx.config))
                .with_shutdown(cx.shutdown.clone(), cx.tasks.clone());
            let ccx = Arc::new(ccx);
            components = Some(ccx.clone());
            for (listener, local) in component_listeners {
                log::info!("listening for components on {local}");
                component_addrs.push(local);
                let ccx = ccx.clone();
                serve.spawn(listener, None, move |io, peer| component::accept(ccx.clone(), io, peer));
            }
        }
        let mut s2s_addrs = Vec::new();
        let s2s = if config.s2s.enabled() {
            let secret = dialback_secret.to_vec();
            let s2s = crate::federation::start(&config, &certs, router.clone(), secret, cx.shutdown.clone())?;
            for (listener, local) in s2s_listeners {
                log::info!("listening for servers on {local}");
                s2s_addrs.push(local);
                let s2s = s2s.clone();
                serve.spawn(listener, None, move |io, peer| {
                    shoal_actors::s2s::accept(s2s.clone(), io, peer)
                });
            }
            Some(s2s)
        } else {
            None
        };
        let http = if http_plain.is_empty() && http_tls.is_empty() {
            None
        } else {
            // HTTPS with the clients' certificates, or the domains' own
            // when clients have no TLS.
            let own;
            let certs = match (&cx.config.tls, http_tls.is_empty()) {
                (_, true) => None,
                (Some(tls), false) => Some(tls),
                (None, false) => {
                    own = crate::tls::settings(&crate::tls::load_all(&config)?, StartTls::Off)?;
                    Some(&own)
                }
            };
            let std_listeners = |ls: Vec<(TcpListener, SocketAddr)>| -> Result<Vec<_>, StartError> {
                ls.into_iter()
                    .map(|(l, addr)| {
                        l.into_std()
                            .map(|l| (l, addr))
                            .map_err(|source| StartError::Listen { addr, source })
                    })
                    .collect()
            };
            // Upload URLs name the first listener unless [upload] url says.
            let base = match (http_plain.first(), http_tls.first()) {
                (Some((_, addr)), _) => format!("http://{addr}"),
                (None, Some((_, addr))) => format!("https://{addr}"),
                (None, None) => unreachable!("some listener"),
            };
            let upload = crate::upload::start(&config, &router, &base, &config.http.allowed_origins)?;
            let web = crate::http::Web {
                c2s: cx.clone(),
                config: config.http.clone(),
                domain: config.default_domain().to_owned(),
                secure: Vec::new(),
                upload,
                metrics,
            };
            let first = config.http.listen.first().or(config.http.tls_listen.first()).copied();
            let started = crate::http::start(
                web,
                std_listeners(http_plain)?,
                std_listeners(http_tls)?,
                certs,
                workers,
            )
            .map_err(|source| StartError::Listen {
                addr: first.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                source,
            })?;
            Some(started)
        };
        log::info!("serving {}", served.join(", "));
        let reloader = Arc::new(Reloader::new(
            self.config_file,
            config,
            &certs,
            cx.clone(),
            components,
            s2s.clone(),
        ));
        let control = control_listener.map(|listener| {
            control::serve(
                listener,
                ControlContext {
                    sm: sm.clone(),
                    router: router.clone(),
                    s2s: s2s.clone(),
                    reloader: reloader.clone(),
                    started,
                },
            )
        });
        Ok(ServerHandle {
            http,
            muc,
            local_addrs,
            direct_tls_addrs,
            component_addrs,
            s2s_addrs,
            s2s,
            control,
            reloader,
            sm,
            cx,
            arbiters,
        })
    }
}

/// The archive's retention (`[mam] retention_days`): at start, then
/// hourly, messages older than that are deleted, whether archiving is on
/// or not (what was archived before still expires).
async fn expire_archive(router: Router, days: u32, shutdown: CancellationToken) {
    const EVERY: Duration = Duration::from_secs(3600);
    loop {
        let cut = xep::mam::now_ms() - i64::from(days) * 86_400_000;
        if let Err(e) = router.storage().purge_archive(cut).await {
            log::error!("cannot delete expired archived messages: {e}");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// A listening socket with a deep accept queue: a burst of logins must not
/// overflow it while a freshly started server warms up (the kernel caps
/// it at `net.core.somaxconn`).
fn listen(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let bound = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(4096)?;
        let local = listener.local_addr()?;
        Ok((listener, local))
    };
    bound().map_err(|source| StartError::Listen { addr, source })
}

/// What every listener's accept loop shares: the worker arbiters, taken
/// round robin, and the shutdown.
struct Serve {
    shutdown: CancellationToken,
    arbiters: Arc<Vec<Arbiter>>,
    next: Arc<AtomicUsize>,
}

impl Serve {
    fn spawn(
        &self,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        accept: impl Fn(Io, SocketAddr) + Clone + Send + 'static,
    ) {
        actix_rt::spawn(accept_loop(
            listener,
            tls,
            self.shutdown.clone(),
            self.arbiters.clone(),
            self.next.clone(),
            accept,
        ));
    }
}

/// Accepts connections and hands each to a worker arbiter, round robin,
/// where `accept` takes it (a client's or a component's).
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    arbiters: Arc<Vec<Arbiter>>,
    next: Arc<AtomicUsize>,
    accept: impl Fn(Io, SocketAddr) + Clone + Send + 'static,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, typically: back off rather than spin.
                log::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Re-register the socket with the worker's own reactor.
        let Ok(std_stream) = stream.into_std() else {
            continue;
        };
        let arbiter = &arbiters[next.fetch_add(1, Ordering::Relaxed) % arbiters.len()];
        let accept = accept.clone();
        let tls = tls.clone();
        arbiter.spawn(async move {
            match tokio::net::TcpStream::from_std(std_stream) {
                Ok(stream) => {
                    log::debug!("{peer}: connected");
                    let io = match tls {
                        Some(acceptor) => Io::TlsPending(stream, acceptor),
                        None => Io::Tcp(stream),
                    };
                    accept(io, peer);
                }
                Err(e) => log::warn!("{peer}: {e}"),
            }
        });
    }
}

/// A running server.
pub struct ServerHandle {
    /// The HTTP listeners (`[http]`), if any.
    http: Option<crate::http::HttpHandle>,
    /// The MUC service (`[muc]`), when on.
    muc: Option<shoal_actors::muc::MucHandle>,
    local_addrs: Vec<SocketAddr>,
    direct_tls_addrs: Vec<SocketAddr>,
    component_addrs: Vec<SocketAddr>,
    s2s_addrs: Vec<SocketAddr>,
    /// Federation, when on.
    s2s: Option<Arc<shoal_actors::s2s::S2sContext>>,
    /// The control socket (`None` with an embedder's storage and no
    /// `[control] socket`).
    control: Option<ControlServer>,
    reloader: Arc<Reloader>,
    sm: Addr<SessionManager>,
    cx: Arc<C2sContext>,
    arbiters: Arc<Vec<Arbiter>>,
}

impl ServerHandle {
    /// The addresses the listeners are bound to (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The Direct TLS listeners' addresses (XEP-0368).
    pub fn direct_tls_addrs(&self) -> &[SocketAddr] {
        &self.direct_tls_addrs
    }

    /// The component listeners' addresses (XEP-0114); none unless a
    /// component is configured.
    pub fn component_addrs(&self) -> &[SocketAddr] {
        &self.component_addrs
    }

    /// The listeners for other servers' addresses; none unless federation
    /// is on.
    pub fn s2s_addrs(&self) -> &[SocketAddr] {
        &self.s2s_addrs
    }

    /// The plain HTTP listeners' addresses (`[http] listen`).
    pub fn http_addrs(&self) -> &[SocketAddr] {
        self.http.as_ref().map_or(&[], |h| &h.addrs)
    }

    /// The HTTPS listeners' addresses (`[http] tls_listen`).
    pub fn http_tls_addrs(&self) -> &[SocketAddr] {
        self.http.as_ref().map_or(&[], |h| &h.tls_addrs)
    }

    /// Federation's links and settings, when on.
    pub fn s2s(&self) -> Option<&Arc<shoal_actors::s2s::S2sContext>> {
        self.s2s.as_ref()
    }

    /// The MUC service (XEP-0045), when on.
    pub fn muc(&self) -> Option<&shoal_actors::muc::MucHandle> {
        self.muc.as_ref()
    }

    /// The session manager: list sessions, route a stanza to a user.
    pub fn session_manager(&self) -> &Addr<SessionManager> {
        &self.sm
    }

    pub fn router(&self) -> &Router {
        &self.cx.router
    }

    /// Reads the configuration file again and puts what it changes in
    /// force (see [`crate::reload`]); answers what changed. On an error,
    /// nothing did. What `shoal reload` and SIGHUP do.
    pub fn reload(&self) -> Result<Vec<String>, ReloadError> {
        self.reloader.reload()
    }

    /// The path of the control socket, if the server has one.
    pub fn control_socket(&self) -> Option<&std::path::Path> {
        self.control.as_ref().map(ControlServer::path)
    }

    /// Stops accepting, closes every stream (clients' and components')
    /// with `<system-shutdown/>` and waits (up to 10 s) for their last
    /// bytes to be written.
    pub async fn shutdown(self) {
        log::info!("shutting down");
        // First, so that the `shoal` command stops counting on this server.
        if let Some(control) = self.control {
            control.stop();
        }
        // No new WebSocket streams; the open ones close with the others.
        let http_stopped = self.http.as_ref().map(|http| http.stop());
        self.cx.shutdown.cancel();
        self.cx.tasks.close();
        let s2s_tasks = self.s2s.as_ref().map(|s2s| {
            s2s.close_links();
            s2s.tasks.close();
            s2s.tasks.clone()
        });
        let closed = async {
            self.cx.tasks.wait().await;
            if let Some(tasks) = s2s_tasks {
                tasks.wait().await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), closed).await.is_err() {
            log::warn!("some connections did not close in time");
        }
        if let Some(stopped) = http_stopped {
            let _ = tokio::time::timeout(Duration::from_secs(3), stopped).await;
        }
        for arbiter in self.arbiters.iter() {
            arbiter.stop();
        }
    }
}

/// The components configured (`[[components.service]]`).
pub(crate) fn component_services(config: &Config) -> Vec<ComponentService> {
    config
        .components
        .services
        .iter()
        .map(|s| ComponentService {
            domain: s.domain.clone(),
            secret: s.secret.clone(),
            name: s.name.clone(),
            max_stanza_bytes: s.max_stanza_bytes,
            max_outbound_bytes: s.max_outbound_bytes,
            rate_bytes_per_sec: s.rate_bytes_per_sec,
            burst_bytes: s.burst_bytes,
        })
        .collect()
}

/// Component settings as configured, with the clients' limits as the
/// defaults of each component's own.
fn component_config(config: &Config, clients: &C2sConfig) -> ComponentConfig {
    let c = &config.components;
    ComponentConfig {
        services: component_services(config),
        conflict: match c.conflict {
            ComponentConflict::KickOld => ConflictPolicy::KickOld,
            ComponentConflict::KickNew => ConflictPolicy::KickNew,
        },
        iq_timeout: Duration::from_secs(c.iq_timeout_secs),
        hidden: c.hidden.clone(),
        max_pending: c.max_pending,
        max_pending_per_requester: c.max_pending_per_requester,
        codec: clients.codec,
        connections: clients.connections.clone(),
        max_outbound_bytes: clients.max_outbound_bytes,
        negotiation_timeout: clients.negotiation_timeout,
        close_linger: clients.close_linger,
    }
}

fn starttls(config: &Config) -> StartTls {
    match config.starttls() {
        StartTlsMode::Off => StartTls::Off,
        StartTlsMode::Optional => StartTls::Optional,
        StartTlsMode::Required => StartTls::Required,
    }
}

/// True when clients are offered TLS: STARTTLS or Direct TLS.
fn clients_tls(config: &Config) -> bool {
    starttls(config) != StartTls::Off || !config.c2s.direct_tls_listen.is_empty()
}

/// Each hosted domain's certificate (the default domain's first), when
/// TLS is served at all: to clients, or to other servers.
fn certificates(config: &Config) -> Result<Vec<ServerCert>, TlsError> {
    if !clients_tls(config) && !config.s2s.enabled() {
        return Ok(Vec::new());
    }
    let certs = crate::tls::load_all(config)?;
    for cert in &certs {
        log::info!(
            "TLS certificate of {} {} (SHA-256 {})",
            cert.domain,
            cert.cert_path.display(),
            crate::tls::fingerprint(cert)
        );
    }
    Ok(certs)
}

/// TLS for clients as configured: `None` when neither STARTTLS nor Direct
/// TLS is on.
fn tls_settings(config: &Config, certs: &[ServerCert]) -> Result<Option<TlsSettings>, TlsError> {
    if !clients_tls(config) {
        return Ok(None);
    }
    Ok(Some(crate::tls::settings(certs, starttls(config))?))
}
