//! The receiving side of a server-to-server stream (RFC 6120 §4, XEP-0220,
//! XEP-0178): one actor per stream a peer opens. It answers the header
//! for the hosted domain the peer asked for, offers STARTTLS, then SASL
//! EXTERNAL when the peer's certificate is valid for its domain and
//! dialback in any case; it answers dialback verifications for our own
//! domains (statelessly), checks the peer's keys with its authoritative
//! server, and routes the peer's stanzas, each from a domain the stream
//! authenticated and to one of ours.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use base64::Engine;
use bytes::Bytes;
use quick_xml::escape::escape;

use super::dialback::{self, Body, Dialback};
use super::link::InboundEntry;
use super::{Auth, S2sContext};
use crate::c2s::limits::ConnState;
use crate::c2s::outbound::Outbound;
use crate::c2s::random_id;
use crate::c2s::transport::FrameResult;
use crate::codec::{Frame, StreamHeader};
use crate::error::{SaslCondition, StanzaCondition, StreamCondition, StreamError};
use crate::jid::{BareJid, Jid};
use crate::ns;
use crate::session::Control;
use crate::stanza::{Kind, PresenceType, Stanza, StanzaParseError};
use crate::xml::Element;

/// Our stream header to a peer: from the domain it asked for, to its
/// domain when it named one, with the dialback namespace.
pub(super) fn header(from: &str, to: Option<&str>, id: &str) -> String {
    let to = to.map(|t| format!(" to='{}'", escape(t))).unwrap_or_default();
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:db='{}' xmlns:stream='{}' id='{}' from='{}'{to} version='1.0'>",
        ns::SERVER,
        ns::DIALBACK,
        ns::STREAM,
        escape(id),
        escape(from),
    )
}

/// Remote users' available presence that came on a stream: when the
/// stream is lost (its server went away, or the network), the local users
/// it went to are told they are unavailable, since their server cannot
/// say so any more. Not a remote room's occupants (XEP-0045): who is in
/// a room, our user included, is the room's to say once the link is back
/// (Prosody and ejabberd tell nothing either); occupants shown gone while
/// our user stays would leave the client's view of the room wrong.
/// Bounded: past `MAX_PAIRS`, new ones are not kept.
#[derive(Default)]
struct SeenAvailable {
    /// Remote full JID -> the local accounts it is available to.
    seen: HashMap<Jid, HashSet<BareJid>>,
    pairs: usize,
}

impl SeenAvailable {
    const MAX_PAIRS: usize = 65_536;

    /// Notes presence from a remote user to a local one.
    fn note(&mut self, stanza: &Stanza) {
        let (Kind::Presence(kind), Some(from), Some(to)) = (stanza.kind, stanza.from(), stanza.to()) else {
            return;
        };
        if from.resource().is_none() || to.node().is_none() {
            return;
        }
        match kind {
            PresenceType::Available if stanza.element().has_child("x", ns::MUC_USER) => {}
            PresenceType::Available if self.pairs < Self::MAX_PAIRS => {
                let added = self.seen.entry(from.clone()).or_default().insert(to.to_bare());
                self.pairs += usize::from(added);
            }
            PresenceType::Unavailable => {
                if let Some(locals) = self.seen.get_mut(from) {
                    if locals.remove(&to.to_bare()) {
                        self.pairs -= 1;
                    }
                    if locals.is_empty() {
                        self.seen.remove(from);
                    }
                }
            }
            _ => {}
        }
    }

    /// The unavailable presence each local user is owed.
    fn gone(self) -> impl Iterator<Item = Stanza> {
        self.seen.into_iter().flat_map(|(remote, locals)| {
            locals.into_iter().map(move |local| {
                let el = Element::new("presence", ns::CLIENT).with_attr("type", "unavailable");
                Stanza::new(
                    Kind::Presence(PresenceType::Unavailable),
                    Some(remote.clone()),
                    Some(local.into()),
                    el,
                )
            })
        })
    }
}

/// Domain pairs one stream may authenticate.
const MAX_PAIRS: usize = 1024;

/// Numbers inbound streams, for their entries in the list of streams.
static STREAMS: AtomicU64 = AtomicU64::new(0);

pub struct S2sIn {
    cx: Arc<S2sContext>,
    id: u64,
    out: Outbound,
    peer: SocketAddr,
    conn: Arc<ConnState>,
    /// The id of our latest header: the peer's dialback keys are bound to it.
    stream_id: String,
    /// Waiting for a (new) header.
    awaiting_header: bool,
    /// The hosted domain the peer addressed, and the domain it says it is.
    local: Option<String>,
    remote: Option<String>,
    tls: bool,
    /// SASL EXTERNAL succeeded (for `remote`).
    external: bool,
    /// The (local, remote) domain pairs this stream authenticated: stanzas
    /// go only between them (XEP-0220 §2.1.2, §2.6).
    authenticated: HashSet<(String, String)>,
    /// Dialback verifications of this stream in flight.
    verifying: usize,
    seen: SeenAvailable,
    /// The stream ended as streams should (either side closed it), not by
    /// the connection's loss or the peer's error: its users are not gone.
    clean_end: bool,
    header_sent: bool,
    closing: bool,
}

impl S2sIn {
    pub(super) fn new(cx: Arc<S2sContext>, out: Outbound, peer: SocketAddr, conn: Arc<ConnState>) -> S2sIn {
        S2sIn {
            cx,
            id: STREAMS.fetch_add(1, Ordering::Relaxed),
            out,
            peer,
            conn,
            stream_id: String::new(),
            awaiting_header: true,
            local: None,
            remote: None,
            tls: false,
            external: false,
            authenticated: HashSet::new(),
            verifying: 0,
            seen: SeenAvailable::default(),
            clean_end: false,
            header_sent: false,
            closing: false,
        }
    }

    fn send_element(&self, el: &Element) {
        let mut buf = Vec::with_capacity(128);
        el.write_to(&mut buf, ns::CLIENT);
        // A full queue closes the connection by itself.
        let _ = self.out.send(Bytes::from(buf));
    }

    fn send_dialback(&self, db: &Dialback) {
        let _ = self.out.send(db.to_bytes());
    }

    /// Sends a stream error, closes the stream and stops the actor.
    fn stream_error(&mut self, ctx: &mut Context<Self>, err: StreamError) {
        if self.closing {
            return;
        }
        log::info!(
            "{} (server {}): {err}",
            self.peer,
            self.remote.as_deref().unwrap_or("?")
        );
        if !self.header_sent {
            let from = self
                .local
                .clone()
                .unwrap_or_else(|| self.cx.router.default_domain().to_string());
            self.header_sent = true;
            let _ = self.out.send(Bytes::from(header(&from, None, &random_id(16))));
        }
        let mut bytes = Vec::new();
        err.to_element().write_to(&mut bytes, ns::CLIENT);
        bytes.extend_from_slice(b"</stream:stream>");
        let _ = self.out.send(Bytes::from(bytes));
        self.closing = true;
        self.out.close(self.cx.settings.close_linger);
        ctx.stop();
    }

    fn on_stream_open(&mut self, ctx: &mut Context<Self>, h: StreamHeader) {
        if !self.awaiting_header {
            let err = StreamError::with_text(StreamCondition::BadFormat, "unexpected stream restart");
            return self.stream_error(ctx, err);
        }
        if h.default_ns.as_deref() != Some(ns::SERVER) {
            let err = StreamError::with_text(
                StreamCondition::InvalidNamespace,
                "the content namespace must be jabber:server",
            );
            return self.stream_error(ctx, err);
        }
        let to = h.to.as_deref().and_then(|t| BareJid::domain_jid(t).ok());
        let Some(to) = to.filter(|t| self.cx.is_ours(t.as_str())) else {
            log::info!("{}: a server asked for a domain not hosted here: {:?}", self.peer, h.to);
            let err = StreamError::with_text(StreamCondition::HostUnknown, "that domain is not served here");
            return self.stream_error(ctx, err);
        };
        let from = h.from.as_deref().and_then(|f| BareJid::domain_jid(f).ok());
        if let Some(from) = &from {
            if self.cx.is_ours(from.as_str()) {
                let err = StreamError::with_text(StreamCondition::InvalidFrom, "that domain is ours");
                return self.stream_error(ctx, err);
            }
            if self.cx.is_blocked(from.as_str()) {
                log::info!("{}: refused {from}: blocked in [s2s] blocked", self.peer);
                let err =
                    StreamError::with_text(StreamCondition::PolicyViolation, "federation with this domain is off");
                return self.stream_error(ctx, err);
            }
        }
        // A restart must not change who is who (RFC 6120 §4.7.1).
        let (to, from) = (to.to_string(), from.map(|f| f.to_string()));
        if self.local.as_ref().is_some_and(|l| *l != to) || (self.remote.is_some() && self.remote != from) {
            let err = StreamError::with_text(StreamCondition::InvalidFrom, "the stream's domains changed on restart");
            return self.stream_error(ctx, err);
        }
        if h.version.as_deref().is_some_and(|v| !v.starts_with("1.")) {
            return self.stream_error(ctx, StreamError::new(StreamCondition::UnsupportedVersion));
        }
        self.stream_id = random_id(16);
        self.header_sent = true;
        let _ = self
            .out
            .send(Bytes::from(header(&to, from.as_deref(), &self.stream_id)));
        self.local = Some(to);
        self.remote = from;
        self.awaiting_header = false;
        // Before XMPP 1.0, no features: dialback straight away.
        if h.version.is_some() {
            self.send_features();
        }
    }

    /// RFC 6120 §4.3.2: TLS first (when required, nothing else); then SASL
    /// EXTERNAL, when the peer's certificate is good for its domain; and
    /// dialback (XEP-0220 §2.4.1; `<errors/>`: its errors are understood).
    fn send_features(&self) {
        let mut features = Vec::new();
        if !self.tls {
            let mut starttls = Element::new("starttls", ns::TLS);
            if self.cx.settings.tls_required {
                starttls.push_child(Element::new("required", ns::TLS));
            }
            features.push(starttls);
        }
        if self.tls || !self.cx.settings.tls_required {
            if self.tls && !self.external && self.certificate_is_valid() {
                let mechanism = Element::new("mechanism", ns::SASL).with_text("EXTERNAL");
                features.push(Element::new("mechanisms", ns::SASL).with_child(mechanism));
            }
            let errors = Element::new("errors", ns::DIALBACK_FEATURE);
            features.push(Element::new("dialback", ns::DIALBACK_FEATURE).with_child(errors));
        }
        // `stream:` is bound by our header: written as text around them.
        let mut buf = b"<stream:features>".to_vec();
        for feature in &features {
            feature.write_to(&mut buf, ns::CLIENT);
        }
        buf.extend_from_slice(b"</stream:features>");
        let _ = self.out.send(Bytes::from(buf));
    }

    /// The peer's certificate is valid for the domain it named.
    fn certificate_is_valid(&self) -> bool {
        let Some(remote) = &self.remote else { return false };
        let chain = crate::c2s::lock(&self.conn.tls)
            .as_ref()
            .and_then(|b| b.peer_certificates.clone());
        chain.is_some_and(|chain| self.cx.tls.verifies(&chain, remote))
    }

    fn on_element(&mut self, ctx: &mut Context<Self>, el: Element) {
        if self.awaiting_header {
            return self.stream_error(ctx, StreamError::new(StreamCondition::NotWellFormed));
        }
        if el.ns() == ns::TLS && el.name() == "starttls" {
            return self.on_starttls(ctx);
        }
        if el.is("error", ns::STREAM) {
            // The peer ends the stream (RFC 6120 §4.9): nothing to answer.
            log::info!(
                "{}: {:?} ended its stream: {}",
                self.peer,
                self.authenticated,
                el.to_xml_in(ns::CLIENT)
            );
            self.closing = true;
            self.out.close(Duration::ZERO);
            return ctx.stop();
        }
        if !self.tls && self.cx.settings.tls_required {
            let err = StreamError::with_text(StreamCondition::PolicyViolation, "use of STARTTLS is required");
            return self.stream_error(ctx, err);
        }
        if el.ns() == ns::SASL && el.name() == "auth" {
            return self.on_auth(ctx, &el);
        }
        if Dialback::is_dialback(&el) {
            return match Dialback::parse(&el) {
                Ok(db) => self.on_dialback(ctx, db),
                Err(e) => self.stream_error(ctx, StreamError::with_text(StreamCondition::InvalidXml, e.to_string())),
            };
        }
        if el.ns() == ns::CLIENT && matches!(el.name(), "message" | "presence" | "iq") {
            return self.on_stanza(ctx, el);
        }
        self.stream_error(ctx, StreamError::new(StreamCondition::UnsupportedStanzaType));
    }

    fn on_starttls(&mut self, ctx: &mut Context<Self>) {
        if self.tls {
            let err = StreamError::with_text(StreamCondition::PolicyViolation, "TLS is on already");
            return self.stream_error(ctx, err);
        }
        self.send_element(&Element::new("proceed", ns::TLS));
        // The transport runs the handshake once <proceed/> is written (with
        // the certificate of the domain the peer asked for, or, for a
        // service's, of the hosted domain it is under), and then reads a
        // new header.
        let hosts = self.cx.router.hosts();
        let host = self
            .local
            .as_deref()
            .map_or(hosts.default_host(), |d| hosts.owner_of(d));
        self.out.start_tls(host.clone());
        self.tls = true;
        self.awaiting_header = true;
    }

    /// SASL EXTERNAL (XEP-0178 §3): the identity is the stream's `from`;
    /// the certificate must be valid for it.
    fn on_auth(&mut self, ctx: &mut Context<Self>, el: &Element) {
        let failure = |this: &mut Self, ctx: &mut Context<Self>, condition: SaslCondition, close: bool| {
            let mut failure = Element::new("failure", ns::SASL);
            failure.push_child(Element::new(condition.as_str(), ns::SASL));
            this.send_element(&failure);
            if close {
                let _ = this.out.send(Bytes::from_static(b"</stream:stream>"));
                this.closing = true;
                this.out.close(this.cx.settings.close_linger);
                ctx.stop();
            }
        };
        if self.external {
            return failure(self, ctx, SaslCondition::Aborted, false);
        }
        if el.attr("mechanism") != Some("EXTERNAL") {
            return failure(self, ctx, SaslCondition::InvalidMechanism, false);
        }
        let Some(remote) = self.remote.clone() else {
            return failure(self, ctx, SaslCondition::NotAuthorized, true);
        };
        let text = el.text();
        let authzid = match text.trim() {
            "" => return failure(self, ctx, SaslCondition::MalformedRequest, false),
            "=" => String::new(),
            given => match base64::engine::general_purpose::STANDARD.decode(given) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(_) => return failure(self, ctx, SaslCondition::IncorrectEncoding, false),
            },
        };
        if !authzid.is_empty() && authzid != remote {
            return failure(self, ctx, SaslCondition::InvalidAuthzid, false);
        }
        if self.too_many_streams(&remote) {
            return failure(self, ctx, SaslCondition::TemporaryAuthFailure, true);
        }
        if !self.certificate_is_valid() {
            log::info!(
                "{}: {remote} tried EXTERNAL with a certificate not valid for it",
                self.peer
            );
            return failure(self, ctx, SaslCondition::NotAuthorized, true);
        }
        log::info!(
            "{}: {remote} authenticated by its certificate (SASL EXTERNAL)",
            self.peer
        );
        self.send_element(&Element::new("success", ns::SASL));
        self.external = true;
        let local = self.local.clone().unwrap_or_default();
        self.authenticate(local, remote, Auth::External);
        // RFC 6120 §6.4.6: the peer restarts the stream.
        self.awaiting_header = true;
    }

    /// `remote` has as many other streams authenticated to us as it may
    /// (`max_streams_per_domain`): a server opening streams without end
    /// cannot hold as many connections as it likes.
    fn too_many_streams(&self, remote: &str) -> bool {
        let others = self
            .cx
            .inbound
            .iter()
            .filter(|e| *e.key() != self.id && e.remotes.iter().any(|r| r == remote));
        others.count() >= self.cx.settings.max_streams_per_domain
    }

    fn authenticate(&mut self, local: String, remote: String, auth: Auth) {
        if self.authenticated.is_empty() {
            self.conn.admitted.authenticated();
            self.conn.authenticated.store(true, Ordering::Relaxed);
            crate::metrics::s2s_stream(crate::metrics::Direction::In, true);
            self.cx.inbound.insert(
                self.id,
                InboundEntry {
                    local: self.local.clone().unwrap_or_default(),
                    remotes: Vec::new(),
                    auth,
                    tls: self.tls,
                    since: Instant::now(),
                    out: self.out.clone(),
                },
            );
        }
        if let Some(mut entry) = self.cx.inbound.get_mut(&self.id) {
            if !entry.remotes.contains(&remote) {
                entry.remotes.push(remote.clone());
            }
        }
        self.authenticated.insert((local, remote));
    }

    fn on_dialback(&mut self, ctx: &mut Context<Self>, db: Dialback) {
        match (&db, db.body()) {
            // Step 3: we are the authoritative server; stateless.
            (Dialback::Verify { .. }, Body::Key(_)) => {
                let answer = if self.cx.is_ours(db.to()) {
                    dialback::answer_verify(&self.cx.secret, &db)
                } else {
                    Some(db.answer(Body::Error(StanzaCondition::ItemNotFound)))
                };
                if let Some(answer) = answer {
                    self.send_dialback(&answer);
                }
            }
            // Step 1 received: check the key with the authoritative server.
            (Dialback::Result { from, to, .. }, Body::Key(key)) => {
                let (from, to, key) = (from.clone(), to.clone(), key.clone());
                self.on_result_request(ctx, &db, from, to, key);
            }
            // Answers are for the streams we open; ignored here (Prosody too).
            _ => {}
        }
    }

    fn on_result_request(&mut self, ctx: &mut Context<Self>, db: &Dialback, from: String, to: String, key: String) {
        let refuse = |this: &Self, condition| this.send_dialback(&db.answer(Body::Error(condition)));
        if !self.cx.is_ours(&to) {
            return refuse(self, StanzaCondition::ItemNotFound);
        }
        if self.cx.is_blocked(&from) || self.cx.is_ours(&from) {
            return refuse(self, StanzaCondition::Forbidden);
        }
        let pair = (to.clone(), from.clone());
        if self.authenticated.contains(&pair) {
            return self.send_dialback(&db.answer(Body::Valid));
        }
        let settings = &self.cx.settings;
        if self.verifying >= settings.max_verifications_per_stream
            || self.authenticated.len() >= MAX_PAIRS
            || self.too_many_streams(&from)
        {
            return refuse(self, StanzaCondition::ResourceConstraint);
        }
        let Some(slot) = super::outbound::VerificationSlot::take(&self.cx) else {
            return refuse(self, StanzaCondition::ResourceConstraint);
        };
        self.verifying += 1;
        let request = Dialback::verify_request(to.clone(), from.clone(), self.stream_id.clone(), key);
        let verdict = super::outbound::verify(self.cx.clone(), request, slot);
        let request = db.clone();
        ctx.spawn(verdict.into_actor(self).map(move |body, act, ctx| {
            act.verifying -= 1;
            if act.closing {
                return;
            }
            let refused = body == Body::Invalid;
            match &body {
                Body::Valid => {
                    log::info!("{}: {from} authenticated by dialback (for {to})", act.peer);
                    act.authenticate(to, from, Auth::Dialback);
                }
                Body::Invalid => log::info!("{}: {from}'s dialback key was refused by its server", act.peer),
                Body::Error(condition) => {
                    log::info!(
                        "{}: could not verify {from}'s dialback key: {}",
                        act.peer,
                        condition.as_str()
                    )
                }
                Body::Key(_) => return,
            }
            act.send_dialback(&request.answer(body));
            // XEP-0220 §2.1.2: an invalid key ends the stream.
            if refused {
                let err = StreamError::with_text(StreamCondition::NotAuthorized, "dialback key refused");
                act.stream_error(ctx, err);
            }
        }));
    }

    /// A stanza from the peer: from a domain this stream authenticated, to
    /// one of ours (RFC 6120 §4.9.3.6, .9, .12; XEP-0220 §2.1.2).
    fn on_stanza(&mut self, ctx: &mut Context<Self>, el: Element) {
        if self.authenticated.is_empty() {
            let err = StreamError::with_text(StreamCondition::NotAuthorized, "authenticate first");
            return self.stream_error(ctx, err);
        }
        let from = el.attr("from").and_then(|f| Jid::parse(f).ok());
        let to = el.attr("to").and_then(|t| Jid::parse(t).ok());
        let (Some(from), Some(to)) = (from, to) else {
            let err = StreamError::with_text(
                StreamCondition::ImproperAddressing,
                "a stanza between servers needs 'from' and 'to'",
            );
            return self.stream_error(ctx, err);
        };
        if !self.cx.is_ours(to.domain()) {
            let err = StreamError::with_text(StreamCondition::HostUnknown, "that domain is not served here");
            return self.stream_error(ctx, err);
        }
        // Pairs are few (usually one): looked through, not hashed.
        let paired = |(l, r): &(String, String)| l == to.domain() && r == from.domain();
        if !self.authenticated.iter().any(paired) {
            let err = StreamError::with_text(
                StreamCondition::InvalidFrom,
                "that domain is not authenticated on this stream (for that recipient's domain)",
            );
            return self.stream_error(ctx, err);
        }
        // An answer counts only if one of our users asked (and still waits).
        if el.name() == "iq" && matches!(el.attr("type"), Some("result" | "error")) {
            let id = el.attr("id").unwrap_or_default();
            if !self.cx.links.answered(to.domain(), from.domain(), &to, id) {
                return log::debug!(
                    "{}: dropped an answer nobody waits for: {from} -> {to} ({id})",
                    self.peer
                );
            }
        }
        let stanza = Stanza::from_element(el);
        if let Ok(stanza) = &stanza {
            let kind = stanza.kind.into();
            crate::metrics::stanza(crate::metrics::Stream::S2s, crate::metrics::Direction::In, kind);
        }
        match stanza {
            // A subscription change is stored before what follows it on
            // the stream is routed: a contact's `subscribed` then its
            // presence reach the user in that order (RFC 6121 §3.1.5).
            Ok(stanza) if matches!(stanza.kind, Kind::Presence(t) if t.is_subscription()) && to.node().is_some() => {
                let stored = crate::roster::presence::inbound(self.cx.router.clone(), stanza);
                ctx.wait(stored.into_actor(self));
            }
            Ok(stanza) => {
                self.seen.note(&stanza);
                self.cx.router.route(stanza)
            }
            Err(StanzaParseError::Stream(e)) => self.stream_error(ctx, e),
            Err(StanzaParseError::Stanza(e, el)) => {
                if el.attr("type") != Some("error") {
                    if let Ok(stanza) = Stanza::from_element(*el) {
                        if let Some(reply) = stanza.error_reply(&e) {
                            self.cx.router.route(reply);
                        }
                    }
                }
            }
        }
    }
}

impl Actor for S2sIn {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.cx.shutdown.is_cancelled() {
            return self.stream_error(ctx, super::shutdown_error());
        }
        let shutdown = self.cx.shutdown.clone();
        ctx.spawn(
            async move { shutdown.cancelled().await }
                .into_actor(self)
                .map(|(), act, ctx| act.stream_error(ctx, super::shutdown_error())),
        );
        ctx.run_later(self.cx.settings.negotiation_timeout, |act, ctx| {
            if act.authenticated.is_empty() {
                let err = StreamError::with_text(StreamCondition::ConnectionTimeout, "no authentication in time");
                act.stream_error(ctx, err);
            }
        });
        // Idle streams are closed; the peer opens a new one when it needs.
        let idle = self.cx.settings.idle_timeout;
        ctx.run_interval(idle.min(Duration::from_secs(60)), move |act, ctx| {
            if act.conn.silent_for() >= idle {
                let _ = act.out.send(Bytes::from_static(b"</stream:stream>"));
                act.clean_end = true;
                act.closing = true;
                act.out.close(act.cx.settings.close_linger);
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if self.cx.inbound.remove(&self.id).is_some() {
            crate::metrics::s2s_stream(crate::metrics::Direction::In, false);
        }
        if !self.clean_end && !self.cx.shutdown.is_cancelled() {
            let gone = std::mem::take(&mut self.seen);
            for unavailable in gone.gone() {
                self.cx.router.route(unavailable);
            }
        }
        if !self.authenticated.is_empty() {
            log::info!("{}: stream from {:?} closed", self.peer, self.authenticated);
        }
        self.out.close(Duration::ZERO);
    }
}

impl StreamHandler<FrameResult> for S2sIn {
    fn handle(&mut self, frame: FrameResult, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        match frame {
            Err(err) => self.stream_error(ctx, err),
            Ok(Frame::StreamOpen(header)) => self.on_stream_open(ctx, header),
            Ok(Frame::Stanza(el)) => {
                if log::log_enabled!(log::Level::Trace) {
                    log::trace!("{} (server) <- {}", self.peer, el.to_xml_in(ns::CLIENT));
                }
                self.on_element(ctx, el)
            }
            Ok(Frame::StreamClose) => {
                let _ = self.out.send(Bytes::from_static(b"</stream:stream>"));
                self.clean_end = true;
                self.closing = true;
                self.out.close(Duration::ZERO);
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.closing = true;
        ctx.stop();
    }
}

impl Handler<Control> for S2sIn {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) {
        match msg {
            Control::Kick(err) => self.stream_error(ctx, err),
            Control::Expire => {}
        }
    }
}
