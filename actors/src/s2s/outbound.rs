//! The initiating side of a server-to-server stream (RFC 6120 §4,
//! XEP-0220, XEP-0178): one actor per stream we open, on the client
//! transport. It sends our header, starts TLS, then authenticates our
//! domain: by SASL EXTERNAL when the peer offers it (our certificate is
//! good for our domain), otherwise, or when EXTERNAL fails, by dialback.
//! A stream is opened for one of two things ([`Mode`]): a link, which
//! carries our stanzas once authenticated, or one dialback verification,
//! asked of a peer's authoritative server on a connection of its own (so
//! that two servers each waiting for the other's link cannot deadlock).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use quick_xml::escape::escape;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::dialback::{Body, Dialback};
use super::{Auth, S2sContext, S2sError};
use crate::c2s::io::Io;
use crate::c2s::limits::{ConnState, ConnectionLimits};
use crate::c2s::outbound::Outbound;
use crate::c2s::transport::{self, FrameResult, Started, StreamSettings};
use crate::codec::{CodecLimits, Frame, StreamHeader, XmppCodec};
use crate::error::StanzaCondition;
use crate::ns;
use crate::xml::Element;

/// Time one dialback verification may take, connection included.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a stream is opened for.
pub(super) enum Mode {
    /// A link: told once our domain is authenticated, how and whether
    /// over TLS (or why not).
    Link(Option<oneshot::Sender<Result<(Auth, bool), S2sError>>>),
    /// One `<db:verify/>` request, whose answer is sent back.
    Verify(Dialback, Option<oneshot::Sender<Body>>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the peer's header (first, after TLS, after SASL).
    Header,
    Features,
    /// `<starttls/>` sent.
    Proceed,
    /// `<auth mechanism='EXTERNAL'/>` sent.
    Sasl,
    /// `<db:result/>` sent.
    Dialback,
    /// `<db:verify/>` sent.
    Verify,
    /// Authenticated: stanzas flow.
    Up,
}

pub struct S2sOut {
    cx: Arc<S2sContext>,
    local: String,
    remote: String,
    out: Outbound,
    conn: Arc<ConnState>,
    mode: Mode,
    phase: Phase,
    /// The id of the peer's latest header: our dialback key is bound to it.
    stream_id: String,
    tls: bool,
    /// EXTERNAL was tried (and succeeded, or failed).
    external_tried: bool,
    sasl_done: bool,
    closing: bool,
    /// Dropped when the actor stops: the link's end.
    _closed: oneshot::Sender<()>,
}

/// Our header to a peer: the dialback namespace declared, as XEP-0220
/// §2.4.1 requires of a server that supports it.
fn header(from: &str, to: &str) -> Bytes {
    Bytes::from(format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:db='{}' xmlns:stream='{}' from='{}' to='{}' version='1.0'>",
        ns::SERVER,
        ns::DIALBACK,
        ns::STREAM,
        escape(from),
        escape(to),
    ))
}

/// An outbound stream's settings for its transport task.
struct OutboundSettings {
    cx: Arc<S2sContext>,
    /// The remote domain, and our certificate for the local one.
    name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
}

impl StreamSettings for OutboundSettings {
    fn limits(&self) -> &ConnectionLimits {
        &self.cx.settings.connections
    }

    fn tls(&self) -> Option<&crate::c2s::io::TlsSettings> {
        None
    }

    fn authenticated_codec(&self) -> Option<CodecLimits> {
        Some(CodecLimits {
            max_stanza_bytes: self.cx.settings.max_stanza_bytes,
            ..self.cx.settings.codec
        })
    }

    fn tls_client(&self) -> Option<(&tokio_rustls::TlsConnector, &ServerName<'static>)> {
        Some((&self.connector, &self.name))
    }
}

/// Finds `remote`'s server and connects to the first address that
/// answers. Direct TLS targets (XEP-0368) are not used yet.
pub(super) async fn dial(cx: &S2sContext, remote: &str) -> Result<(TcpStream, SocketAddr), S2sError> {
    let targets = cx.resolver.targets(remote).await?;
    let mut failures = Vec::new();
    for target in targets.iter().filter(|t| !t.direct_tls) {
        match TcpStream::connect(target.addr).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return Ok((tcp, target.addr));
            }
            Err(e) => failures.push(format!("{target}: {e}")),
        }
    }
    if failures.is_empty() {
        failures.push("only direct TLS addresses (XEP-0368), which are not supported yet".into());
    }
    Err(S2sError::Connect(failures.join("; ")))
}

/// Starts a stream to `remote` over `tcp`, as `local`, for `mode`; its
/// queue, and a receiver that resolves when the stream has ended.
pub(super) fn spawn(
    cx: Arc<S2sContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    local: String,
    remote: String,
    mode: Mode,
) -> Result<(Outbound, oneshot::Receiver<()>), S2sError> {
    let name = ServerName::try_from(remote.clone()).map_err(|e| S2sError::Tls(format!("{remote}: {e}")))?;
    let no_limits = ConnectionLimits {
        max_per_ip: 0,
        max_unauthenticated: 0,
        ..cx.settings.connections.clone()
    };
    let admitted = cx
        .outbound_admission
        .admit(peer.ip(), &no_limits)
        .map_err(|e| S2sError::Connect(e.to_string()))?;
    let codec = XmppCodec::new(cx.settings.codec).for_server();
    let connector = cx.tls.client(&local);
    let settings = Arc::new(OutboundSettings {
        cx: cx.clone(),
        name,
        connector,
    });
    let limit = cx.settings.max_outbound_bytes;
    let Started { out, frames, conn } = transport::start(Io::Tcp(tcp), codec, settings, admitted, limit, &cx.tasks);
    let (closed_tx, closed_rx) = oneshot::channel();
    let handle = out.clone();
    S2sOut::create(move |ctx| {
        ctx.add_stream(frames.map(|b| *b));
        S2sOut {
            cx,
            local,
            remote,
            out,
            conn,
            mode,
            phase: Phase::Header,
            stream_id: String::new(),
            tls: false,
            external_tried: false,
            sasl_done: false,
            closing: false,
            _closed: closed_tx,
        }
    });
    Ok((handle, closed_rx))
}

/// One place among the dialback verifications in flight; given back when
/// dropped. A flood of `<db:result/>`s cannot open connections without
/// limit.
pub(super) struct VerificationSlot(Arc<S2sContext>);

impl VerificationSlot {
    pub(super) fn take(cx: &Arc<S2sContext>) -> Option<VerificationSlot> {
        let max = cx.settings.max_verifications;
        cx.verifications
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| VerificationSlot(cx.clone()))
    }
}

impl Drop for VerificationSlot {
    fn drop(&mut self) {
        self.0.verifications.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Asks the authoritative server of `request.to()` whether a key is
/// valid (XEP-0220 step 2), on a connection of its own. Never fails: what
/// goes wrong is an error answer (§2.5).
pub(super) async fn verify(cx: Arc<S2sContext>, request: Dialback, slot: VerificationSlot) -> Body {
    let _slot = slot;
    let (local, remote) = (request.from().to_owned(), request.to().to_owned());
    let asked = async {
        let (tcp, peer) = match dial(&cx, &remote).await {
            Ok(found) => found,
            Err(e) => {
                log::info!("cannot verify a dialback key with {remote}: {e}");
                return Body::Error(match e {
                    S2sError::Dns(_) => StanzaCondition::RemoteServerNotFound,
                    _ => StanzaCondition::RemoteConnectionFailed,
                });
            }
        };
        let (tx, rx) = oneshot::channel();
        let Ok((out, _closed)) = spawn(cx.clone(), tcp, peer, local, remote, Mode::Verify(request, Some(tx))) else {
            return Body::Error(StanzaCondition::RemoteConnectionFailed);
        };
        let _close = CloseOnDrop(out);
        rx.await.unwrap_or(Body::Error(StanzaCondition::RemoteServerTimeout))
    };
    tokio::time::timeout(VERIFY_TIMEOUT, asked)
        .await
        .unwrap_or(Body::Error(StanzaCondition::RemoteServerTimeout))
}

/// Closes a stream when dropped (a link the manager let go, a
/// verification done or abandoned).
pub(super) struct CloseOnDrop(pub(super) Outbound);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Bytes::from_static(b"</stream:stream>"));
        self.0.close(Duration::from_secs(1));
    }
}

impl S2sOut {
    fn send_element(&self, el: &Element) {
        let mut buf = Vec::with_capacity(128);
        el.write_to(&mut buf, ns::CLIENT);
        let _ = self.out.send(Bytes::from(buf));
    }

    fn send_header(&mut self) {
        let _ = self.out.send(header(&self.local, &self.remote));
        self.phase = Phase::Header;
    }

    /// The stream failed before it was up (or the peer ended it): whoever
    /// waits is told why, and the stream is closed.
    fn fail(&mut self, ctx: &mut Context<Self>, err: S2sError) {
        if self.closing {
            return;
        }
        log::info!("{} -> {}: {err}", self.local, self.remote);
        match &mut self.mode {
            Mode::Link(ready) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(err));
                }
            }
            Mode::Verify(_, answer) => {
                if let Some(answer) = answer.take() {
                    let _ = answer.send(Body::Error(StanzaCondition::RemoteServerTimeout));
                }
            }
        }
        self.close(ctx);
    }

    fn close(&mut self, ctx: &mut Context<Self>) {
        self.closing = true;
        let _ = self.out.send(Bytes::from_static(b"</stream:stream>"));
        self.out.close(self.cx.settings.close_linger);
        ctx.stop();
    }

    fn on_stream_open(&mut self, ctx: &mut Context<Self>, h: StreamHeader) {
        if self.phase != Phase::Header {
            return self.fail(ctx, S2sError::Stream("unexpected stream header".into()));
        }
        if h.default_ns.as_deref() != Some(ns::SERVER) {
            return self.fail(ctx, S2sError::Stream("the peer's stream is not jabber:server".into()));
        }
        let Some(id) = h.id.filter(|id| !id.is_empty()) else {
            return self.fail(ctx, S2sError::Stream("the peer's header has no id".into()));
        };
        self.stream_id = id;
        self.phase = Phase::Features;
        // No features before XMPP 1.0: dialback at once.
        if h.version.is_none() {
            self.authenticate(ctx, None);
        }
    }

    fn on_element(&mut self, ctx: &mut Context<Self>, el: Element) {
        match (self.phase, el.ns(), el.name()) {
            (_, ns::STREAM, "error") => {
                let condition = el
                    .children()
                    .find(|c| c.ns() == ns::STREAMS_ERRORS && c.name() != "text")
                    .map_or_else(|| "undefined-condition".to_owned(), |c| c.name().to_owned());
                let text = el
                    .get_child("text", ns::STREAMS_ERRORS)
                    .map(|t| format!(" ({})", t.text()));
                let why = format!(
                    "{} ended the stream: <{condition}/>{}",
                    self.remote,
                    text.unwrap_or_default()
                );
                self.fail(ctx, S2sError::Stream(why))
            }
            (Phase::Features, ns::STREAM, "features") => self.on_features(ctx, &el),
            (Phase::Proceed, ns::TLS, "proceed") => {
                let host = self.cx.router.hosts().owner_of(&self.local).clone();
                self.out.start_tls(host);
                self.tls = true;
                // Sent once the handshake is done: the transport writes in order.
                self.send_header();
            }
            (Phase::Proceed, ns::TLS, "failure") => {
                let why = format!("{} refused to start TLS", self.remote);
                self.fail(ctx, S2sError::Tls(why))
            }
            (Phase::Sasl, ns::SASL, "success") => {
                log::info!(
                    "{} -> {}: authenticated by our certificate (SASL EXTERNAL)",
                    self.local,
                    self.remote
                );
                self.sasl_done = true;
                self.send_header();
            }
            // XEP-0178 §3: EXTERNAL refused; dialback may still do.
            (Phase::Sasl, ns::SASL, "failure") => self.send_result_request(),
            (Phase::Dialback, ns::DIALBACK, "result") | (Phase::Verify, ns::DIALBACK, "verify") => {
                match Dialback::parse(&el) {
                    Ok(db) => self.on_dialback(ctx, db),
                    Err(e) => self.fail(ctx, S2sError::Stream(e.to_string())),
                }
            }
            // Answers to verifications asked on other streams, and anything
            // a peer sends on a stream it did not open: not ours to route.
            (Phase::Up, _, _) => log::debug!("{} -> {}: ignored <{}/>", self.local, self.remote, el.name()),
            _ => {
                let why = format!("unexpected <{}/> from {}", el.name(), self.remote);
                self.fail(ctx, S2sError::Stream(why))
            }
        }
    }

    fn on_features(&mut self, ctx: &mut Context<Self>, features: &Element) {
        if !self.tls {
            if features.get_child("starttls", ns::TLS).is_some() {
                self.send_element(&Element::new("starttls", ns::TLS));
                self.phase = Phase::Proceed;
                return;
            }
            if self.cx.settings.tls_required {
                let why = format!("{} does not offer TLS, which [s2s] tls requires", self.remote);
                return self.fail(ctx, S2sError::Tls(why));
            }
        }
        self.authenticate(ctx, Some(features));
    }

    /// Past TLS: a verification asks its question; a link authenticates,
    /// by EXTERNAL if offered (once), else by dialback.
    fn authenticate(&mut self, ctx: &mut Context<Self>, features: Option<&Element>) {
        if let Mode::Verify(request, _) = &self.mode {
            let _ = self.out.send(request.to_bytes());
            self.phase = Phase::Verify;
            return;
        }
        if self.sasl_done {
            return self.up(ctx, Auth::External);
        }
        let external = features
            .and_then(|f| f.get_child("mechanisms", ns::SASL))
            .is_some_and(|m| {
                m.children()
                    .any(|c| c.name() == "mechanism" && c.text().trim() == "EXTERNAL")
            });
        if self.tls && external && !self.external_tried {
            self.external_tried = true;
            let authzid = base64::engine::general_purpose::STANDARD.encode(&self.local);
            let auth = Element::new("auth", ns::SASL)
                .with_attr("mechanism", "EXTERNAL")
                .with_text(authzid);
            self.send_element(&auth);
            self.phase = Phase::Sasl;
            return;
        }
        self.send_result_request();
    }

    /// Dialback step 1 (XEP-0220 §2.1.1).
    fn send_result_request(&mut self) {
        let key = self.cx.key(&self.remote, &self.local, &self.stream_id);
        let request = Dialback::result_request(self.local.clone(), self.remote.clone(), key);
        let _ = self.out.send(request.to_bytes());
        self.phase = Phase::Dialback;
    }

    fn on_dialback(&mut self, ctx: &mut Context<Self>, db: Dialback) {
        if db.from() != self.remote || db.to() != self.local {
            // XEP-0220 §3.1: an answer to nothing we asked.
            log::debug!("{} -> {}: ignored {db}", self.local, self.remote);
            return;
        }
        match (&mut self.mode, db) {
            (Mode::Verify(request, answer), Dialback::Verify { id, body, .. }) if request.id() == Some(&id) => {
                if let Some(answer) = answer.take() {
                    let _ = answer.send(body);
                }
                self.close(ctx);
            }
            (Mode::Link(_), Dialback::Result { body: Body::Valid, .. }) => {
                log::info!("{} -> {}: authenticated by dialback", self.local, self.remote);
                self.up(ctx, Auth::Dialback)
            }
            (Mode::Link(_), Dialback::Result { body, .. }) if !body.is_key() => {
                let why = match body {
                    Body::Error(c) => format!("{} answered our dialback key with <{}/>", self.remote, c.as_str()),
                    _ => format!(
                        "{} refused our dialback key (does it reach us, and the other way round?)",
                        self.remote
                    ),
                };
                self.fail(ctx, S2sError::Auth(why))
            }
            (_, db) => log::debug!("{} -> {}: ignored {db}", self.local, self.remote),
        }
    }

    fn up(&mut self, ctx: &mut Context<Self>, auth: Auth) {
        self.phase = Phase::Up;
        self.conn.admitted.authenticated();
        self.conn.authenticated.store(true, Ordering::Relaxed);
        if let Mode::Link(ready) = &mut self.mode {
            let told = ready
                .take()
                .is_some_and(|ready| ready.send(Ok((auth, self.tls))).is_ok());
            if !told {
                // Nobody waits for it any more (the attempt timed out).
                self.close(ctx);
            }
        }
    }
}

impl Actor for S2sOut {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.send_header();
        ctx.run_later(self.cx.settings.negotiation_timeout, |act, ctx| {
            if act.phase != Phase::Up {
                let why = format!("{} did not authenticate us in time", act.remote);
                act.fail(ctx, S2sError::Stream(why));
            }
        });
        let shutdown = self.cx.shutdown.clone();
        ctx.spawn(
            async move { shutdown.cancelled().await }
                .into_actor(self)
                .map(|(), act, ctx| {
                    let mut bytes = Vec::new();
                    super::shutdown_error().to_element().write_to(&mut bytes, ns::CLIENT);
                    let _ = act.out.send(Bytes::from(bytes));
                    act.close(ctx);
                }),
        );
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Mode::Link(ready) = &mut self.mode {
            if let Some(ready) = ready.take() {
                let why = format!("{} closed the connection", self.remote);
                let _ = ready.send(Err(S2sError::Stream(why)));
            }
        }
        self.out.close(Duration::ZERO);
    }
}

impl StreamHandler<FrameResult> for S2sOut {
    fn handle(&mut self, frame: FrameResult, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        match frame {
            Err(err) => {
                let why = format!("{} sent what we cannot read: {err}", self.remote);
                self.fail(ctx, S2sError::Stream(why))
            }
            Ok(Frame::StreamOpen(header)) => self.on_stream_open(ctx, header),
            Ok(Frame::Stanza(el)) => self.on_element(ctx, el),
            Ok(Frame::StreamClose) => {
                let why = format!("{} closed the stream", self.remote);
                if self.phase == Phase::Up {
                    log::info!("{} -> {}: {why}", self.local, self.remote);
                    self.close(ctx)
                } else {
                    self.fail(ctx, S2sError::Stream(why))
                }
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Up {
            let why = format!("{} closed the connection", self.remote);
            self.fail(ctx, S2sError::Stream(why));
        }
        self.closing = true;
        ctx.stop();
    }
}

/// Used by the connection manager's log lines.
pub(super) fn describe(local: &str, remote: &str) -> String {
    format!("server link {local} -> {remote}")
}
