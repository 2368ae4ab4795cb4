//! The c2s actor: one per client connection. It negotiates the stream
//! (RFC 6120 §4), authenticates (§6), binds a resource (§7), then stamps
//! `from` on everything the client sends and hands it to the router.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use quick_xml::escape::escape;
use rand::distr::Alphanumeric;
use rand::Rng;

use super::archiving::Archiving;
use super::auth::Sasl;
use super::limits::ConnState;
use super::outbound::Outbound;
use super::resume::{self, SmState};
use super::transport::FrameResult;
use super::C2sContext;
use crate::codec::{Frame, StreamHeader};
use crate::error::{StanzaCondition, StanzaError, StreamCondition, StreamError};
use crate::hosts::Host;
use crate::jid::{BareJid, Jid};
use crate::ns;
use crate::presence::PresenceMsg;
use crate::session::{Control, Session};
use crate::session_manager::Unregister;
use crate::stanza::{IqType, Kind, PresenceType, Stanza, StanzaParseError};
use crate::xml::Element;

pub(super) enum State {
    /// Waiting for the stream header.
    Start,
    /// Stream open, not authenticated.
    PreAuth(Sasl),
    /// SASL succeeded; the client must restart the stream.
    AwaitRestart(BareJid),
    /// Restarted; the client must bind a resource.
    Authenticated(BareJid),
    Bound(Arc<Session>),
}

pub struct C2s {
    pub(super) cx: Arc<C2sContext>,
    pub(super) out: Outbound,
    pub(super) peer: SocketAddr,
    /// The hosted domain the stream is for: its header's `to` (the
    /// default domain until one names it). Accounts authenticate and bind
    /// at it, and the server speaks as it.
    pub(super) host: Arc<Host>,
    header_sent: bool,
    pub(super) state: State,
    pub(super) auth_failures: u32,
    /// A -PLUS attempt on this stream asked for a binding type we cannot
    /// give: its `y` fallback is then no sign of a downgrade.
    pub(super) plus_refused: bool,
    pub(super) closing: bool,
    /// The session has sent available presence (and not unavailable since).
    pub(super) available: bool,
    /// Who got directed presence from this session (RFC 6121 §4.6). Boxed:
    /// most sessions never send any, and every connection holds this.
    #[allow(clippy::box_collection)]
    pub(super) directed: Option<Box<HashSet<Jid>>>,
    /// XEP-0198, once enabled. Boxed: most streams never enable it.
    pub(super) sm: Option<Box<SmState>>,
    /// The connection is gone and the session waits to be resumed.
    pub(super) parked: bool,
    /// The session went to another connection: this actor ends silently.
    pub(super) handed_off: bool,
    /// Its queue filled while detached: the session ends rather than park.
    pub(super) expire: bool,
    /// Messages on their way through the archive, in order; made at the
    /// first one.
    pub(super) archiving: Option<Box<Archiving>>,
    pub(super) conn: Arc<ConnState>,
    /// When the server pinged a silent client, and the read count then:
    /// any later read answers it.
    ping_sent: Option<(Instant, u64)>,
    /// Closes the stream if it is not bound in time; cancelled once bound.
    pub(super) negotiation_deadline: Option<SpawnHandle>,
    /// The mechanism of the SASL exchange under way, for the metrics.
    pub(super) mechanism: Option<crate::sasl::Mechanism>,
    /// Counts the bound session in the metrics while this connection
    /// carries it.
    pub(super) live: Option<crate::metrics::LiveSession>,
}

/// Everyone who got directed presence, forgotten: they are owed
/// unavailable presence now.
#[allow(clippy::box_collection)]
fn take_directed(directed: &mut Option<Box<HashSet<Jid>>>) -> Vec<Jid> {
    directed.take().map_or_else(Vec::new, |d| d.into_iter().collect())
}

/// Most JIDs one session remembers having sent directed presence to.
pub const MAX_DIRECTED: usize = 1000;

pub(crate) fn random_id(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

impl C2s {
    pub(super) fn new(cx: Arc<C2sContext>, out: Outbound, peer: SocketAddr, conn: Arc<ConnState>) -> C2s {
        let host = cx.router.hosts().default_host().clone();
        C2s {
            cx,
            out,
            peer,
            host,
            header_sent: false,
            state: State::Start,
            auth_failures: 0,
            plus_refused: false,
            closing: false,
            available: false,
            directed: None,
            sm: None,
            parked: false,
            handed_off: false,
            expire: false,
            archiving: None,
            conn,
            ping_sent: None,
            negotiation_deadline: None,
            mechanism: None,
            live: None,
        }
    }

    /// XEP-0199 liveness: a client silent for `idle_timeout` is pinged; one
    /// that then says nothing for `ping_timeout` is disconnected.
    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        self.check_acks(ctx);
        if self.parked {
            return;
        }
        let State::Bound(session) = &self.state else { return };
        let limits = self.cx.limits();
        let silent = self.conn.silent_for();
        match self.ping_sent {
            Some((_, reads)) if self.conn.reads() > reads => self.ping_sent = None,
            Some((sent, _)) if sent.elapsed() >= limits.ping_timeout => {
                // A half-open connection: a resumable session waits for
                // its client on another one.
                if self.can_park() {
                    return self.park(ctx);
                }
                let err = StreamError::with_text(StreamCondition::ConnectionTimeout, "no answer to a ping");
                self.stream_error(ctx, err);
            }
            Some(_) => {}
            None if silent >= limits.idle_timeout => {
                let ping = Element::new("iq", ns::CLIENT)
                    .with_attr("type", "get")
                    .with_attr("id", format!("shoal-ping-{}", random_id(8)))
                    .with_attr("from", self.domain().as_str())
                    .with_attr("to", session.jid.as_str())
                    .with_child(Element::new("ping", ns::PING));
                self.send_element(&ping);
                self.ping_sent = Some((Instant::now(), self.conn.reads()));
            }
            None => {}
        }
    }

    /// The stream's domain.
    pub(super) fn domain(&self) -> &BareJid {
        &self.host.domain
    }

    pub(super) fn send_element(&self, el: &Element) {
        // Stream features, SASL and TLS elements are no stanzas.
        if el.ns() == ns::CLIENT {
            if let Some(kind) = crate::metrics::StanzaKind::from_name(el.name()) {
                crate::metrics::stanza(crate::metrics::Stream::C2s, crate::metrics::Direction::Out, kind);
            }
        }
        let mut buf = Vec::with_capacity(128);
        el.write_to(&mut buf, ns::CLIENT);
        // A full queue closes the connection by itself.
        let _ = self.out.send(Bytes::from(buf));
    }

    pub(super) fn send_stanza(&self, stanza: &Stanza) {
        let kind = stanza.kind.into();
        crate::metrics::stanza(crate::metrics::Stream::C2s, crate::metrics::Direction::Out, kind);
        let _ = self.out.send(stanza.to_bytes());
    }

    fn send_header(&mut self, to: Option<&Jid>, lang: &str) {
        let mut header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{}' from='{}'",
            ns::CLIENT,
            ns::STREAM,
            random_id(16),
            escape(self.domain().as_str()),
        );
        if let Some(to) = to {
            header.push_str(&format!(" to='{}'", escape(to.as_str())));
        }
        header.push_str(&format!(" version='1.0' xml:lang='{}'>", escape(lang)));
        self.header_sent = true;
        let _ = self.out.send(Bytes::from(header));
    }

    /// Sends a stream error, closes the stream and stops the actor.
    pub(super) fn stream_error(&mut self, ctx: &mut Context<Self>, err: StreamError) {
        if self.closing {
            return;
        }
        log::debug!("{}: {err}", self.peer);
        if !self.header_sent {
            self.send_header(None, "en");
        }
        let mut bytes = Vec::new();
        err.to_element().write_to(&mut bytes, ns::CLIENT);
        bytes.extend_from_slice(b"</stream:stream>");
        self.fatal(ctx, Bytes::from(bytes));
    }

    /// Sends a stream error already written (with the stream's close), and
    /// closes.
    pub(super) fn fatal(&mut self, ctx: &mut Context<Self>, error: Bytes) {
        self.out.send_nonza(error);
        self.close_now(ctx);
    }

    pub(super) fn close_now(&mut self, ctx: &mut Context<Self>) {
        self.close(ctx, self.cx.config.close_linger);
    }

    fn close(&mut self, ctx: &mut Context<Self>, linger: Duration) {
        self.closing = true;
        self.out.close(linger);
        ctx.stop();
    }

    fn on_stream_open(&mut self, ctx: &mut Context<Self>, header: StreamHeader) {
        let authenticated = match &self.state {
            State::Start | State::PreAuth(_) => None,
            State::AwaitRestart(user) => Some(user.clone()),
            State::Authenticated(_) | State::Bound(_) => {
                return self.stream_error(
                    ctx,
                    StreamError::with_text(StreamCondition::BadFormat, "unexpected stream restart"),
                )
            }
        };
        match self.check_header(&header) {
            Err(err) => return self.stream_error(ctx, err),
            // A stream restarted after authentication stays at its account's domain.
            Ok(Some(host))
                if authenticated
                    .as_ref()
                    .is_some_and(|u| u.domain() != host.domain.as_str()) =>
            {
                let err = StreamError::with_text(StreamCondition::HostUnknown, "authenticated at another domain");
                return self.stream_error(ctx, err);
            }
            Ok(Some(host)) => self.host = host,
            Ok(None) => {}
        }
        let to = header.from.as_deref().and_then(|f| Jid::parse(f).ok());
        let lang = header
            .lang
            .filter(|l| l.len() <= 35 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or_else(|| "en".to_owned());
        self.send_header(to.as_ref(), &lang);
        let features = match authenticated {
            None => {
                self.state = State::PreAuth(Sasl::Idle);
                self.pre_auth_features()
            }
            Some(user) => {
                self.state = State::Authenticated(user);
                let mut features = Element::new("features", ns::STREAM)
                    .with_child(Element::new("bind", ns::BIND))
                    .with_child(Element::new("session", ns::SESSION).with_child(Element::new("optional", ns::SESSION)))
                    .with_child(Element::new("ver", ns::ROSTERVER_FEATURE))
                    .with_child(Element::new("sub", ns::PRE_APPROVAL_FEATURE))
                    .with_child(Element::new("extval", ns::BIND_EXTVAL));
                if self.cx.config.sm.is_some() {
                    features.push_child(Element::new("sm", crate::xep::sm::NS));
                }
                features.push_child(Element::new("csi", crate::xep::csi::NS));
                features.push_child(self.cx.server_caps(self.host.registration).clone());
                features
            }
        };
        self.send_element(&features);
    }

    /// RFC 6120 §4.9.1: the header's namespaces, version and `to`; the
    /// hosted domain `to` names, if it names one.
    fn check_header(&self, header: &StreamHeader) -> Result<Option<Arc<Host>>, StreamError> {
        if header.default_ns.as_deref() != Some(ns::CLIENT) {
            return Err(StreamError::with_text(
                StreamCondition::InvalidNamespace,
                "the content namespace must be jabber:client",
            ));
        }
        let major = header
            .version
            .as_deref()
            .and_then(|v| v.split_once('.'))
            .and_then(|(major, minor)| minor.parse::<u32>().ok().and(major.parse::<u32>().ok()));
        if major.is_none_or(|m| m < 1) {
            return Err(StreamError::with_text(
                StreamCondition::UnsupportedVersion,
                "XMPP 1.0 is required",
            ));
        }
        let Some(to) = &header.to else { return Ok(None) };
        // Normalised as JIDs are: `A.Test` is `a.test`; `alice@a.test` is no domain.
        match Jid::parse(to)
            .ok()
            .and_then(|jid| self.cx.router.hosts().get(jid.as_str()).cloned())
        {
            Some(host) => Ok(Some(host)),
            None => Err(StreamError::with_text(
                StreamCondition::HostUnknown,
                "no such domain is served here",
            )),
        }
    }

    fn on_element(&mut self, ctx: &mut Context<Self>, el: Element) {
        match &self.state {
            State::Start => self.stream_error(ctx, StreamError::new(StreamCondition::NotWellFormed)),
            State::PreAuth(_) => self.on_pre_auth(ctx, el),
            State::AwaitRestart(_) => self.stream_error(
                ctx,
                StreamError::with_text(StreamCondition::NotAuthorized, "restart the stream first"),
            ),
            State::Authenticated(_) | State::Bound(_) if resume::is_sm(&el) => self.on_sm(ctx, el),
            State::Authenticated(_) => self.on_pre_bind(ctx, el),
            State::Bound(session) if el.ns() == crate::xep::csi::NS => {
                // XEP-0352 §5: a client's word on its state, nothing to answer.
                match el.name() {
                    "active" => session.set_inactive(false),
                    "inactive" => session.set_inactive(true),
                    _ => self.stream_error(ctx, StreamError::new(StreamCondition::UnsupportedStanzaType)),
                }
            }
            State::Bound(session) => {
                let session = session.clone();
                if resume::is_stanza(&el) {
                    self.count_received();
                }
                self.on_stanza(ctx, &session, el)
            }
        }
    }

    /// Answers an element that failed to parse as a stanza, if it deserves
    /// an answer.
    pub(super) fn reject(&mut self, ctx: &mut Context<Self>, err: StanzaParseError) {
        match err {
            StanzaParseError::Stream(e) => self.stream_error(ctx, e),
            StanzaParseError::Stanza(e, el) => {
                if el.attr("type") == Some("error") {
                    return;
                }
                let mut reply = Element::new(el.name(), ns::CLIENT).with_attr("type", "error");
                if let Some(id) = el.attr("id") {
                    reply.set_attr("id", id);
                }
                reply.push_child(e.to_element());
                self.send_element(&reply);
            }
        }
    }

    fn on_stanza(&mut self, ctx: &mut Context<Self>, session: &Arc<Session>, el: Element) {
        // RFC 6120 §8.1.2.1: a client may only name itself as the sender.
        if let Some(from) = el.attr("from") {
            match Jid::parse(from) {
                Ok(j) if j == *session.jid.as_jid() || j == *session.jid.to_bare().as_jid() => {}
                _ => {
                    return self.stream_error(
                        ctx,
                        StreamError::with_text(StreamCondition::InvalidFrom, "you may not send as another JID"),
                    )
                }
            }
        }
        let mut stanza = match Stanza::from_element(el) {
            Ok(s) => s,
            Err(e) => return self.reject(ctx, e),
        };
        let kind = stanza.kind.into();
        crate::metrics::stanza(crate::metrics::Stream::C2s, crate::metrics::Direction::In, kind);
        stanza.set_from(Some(session.jid.clone().into()));
        match stanza.kind {
            Kind::Iq(IqType::Get | IqType::Set) if self.is_for_server(&stanza) => {
                let payload_ns = stanza.payload().map(|p| p.ns().to_owned()).unwrap_or_default();
                match payload_ns.as_str() {
                    // RFC 3921's session establishment: nothing left to do.
                    ns::SESSION => self.send_stanza(&stanza.iq_result(None)),
                    // A new password in the clear only where PLAIN is offered.
                    ns::REGISTER
                        if stanza.kind == Kind::Iq(IqType::Set)
                            && stanza.payload().is_some_and(|q| q.has_child("password", ns::REGISTER))
                            && !self.passwords_allowed() =>
                    {
                        if let Some(reply) = stanza.error_reply(&crate::xep::register::encryption_required()) {
                            self.send_stanza(&reply);
                        }
                    }
                    ns::BIND => {
                        if let Some(reply) = stanza.error_reply(&StanzaError::with_text(
                            StanzaCondition::NotAllowed,
                            "a resource is bound already",
                        )) {
                            self.send_stanza(&reply);
                        }
                    }
                    _ => self.route_in_order(ctx, stanza),
                }
            }
            Kind::Presence(t) if stanza.to().is_none() => self.on_own_presence(ctx, session, t, stanza),
            Kind::Presence(t) if t.is_subscription() => {
                // One at a time, in order: the stream waits for each.
                let outbound = crate::roster::presence::outbound(self.cx.router.clone(), session.jid.clone(), stanza);
                ctx.wait(outbound.into_actor(self));
            }
            Kind::Presence(PresenceType::Available) => self.directed_presence(stanza),
            // RFC 6121 §4.3.2: a local contact's presence is the server's to
            // give. One probe at a time: the stream waits for the shard.
            Kind::Presence(PresenceType::Probe) if stanza.to().is_some_and(|t| self.cx.router.is_local_user(t)) => {
                if let Some(contact) = stanza.to().map(|t| t.to_bare()) {
                    let from = session.jid.clone().into();
                    self.publish(ctx, PresenceMsg::Probe { from, contact });
                }
            }
            Kind::Presence(PresenceType::Unavailable) => {
                if let (Some(to), Some(directed)) = (stanza.to(), &mut self.directed) {
                    directed.remove(to);
                }
                self.route_in_order(ctx, stanza);
            }
            Kind::Message(_) if stanza.to().is_none() => {
                // RFC 6121 §8.1.1.1: as if addressed to the sender's bare JID.
                stanza.set_to(Some(session.jid.to_bare().into()));
                self.route_message(ctx, stanza);
            }
            Kind::Message(_) => {
                // XEP-0280 §7: the sender's other resources see it sent.
                crate::xep::carbons::sent(&self.cx.router, session, &stanza);
                self.route_message(ctx, stanza);
            }
            _ => self.route_in_order(ctx, stanza),
        }
    }

    /// A message is archived (XEP-0313) before it is routed: it joins the
    /// stream's messages on their way through the archive, in order (see
    /// `archiving.rs`), and XEP-0198 counts it handled once routed, on
    /// disk.
    fn route_message(&mut self, ctx: &mut Context<Self>, stanza: Stanza) {
        match crate::xep::mam::prepare(&self.cx.router, stanza) {
            Ok(pending) => self.in_order(ctx, pending.run()),
            Err(stanza) => self.route_in_order(ctx, stanza),
        }
    }

    /// Routes a stanza now, or, while messages of this stream are on their
    /// way through the archive, behind them: a client's stanzas are
    /// processed in the order sent (RFC 6120 §10.1), so an IQ never
    /// overtakes the message before it, nor its bounce.
    fn route_in_order(&mut self, ctx: &mut Context<Self>, stanza: Stanza) {
        // A message here is one `mam::prepare` declined.
        if self.archiving.as_mut().is_none_or(|a| a.idle()) {
            return self.cx.router.route_unarchived(stanza);
        }
        let router = self.cx.router.clone();
        self.in_order(ctx, Box::pin(async move { router.route_unarchived(stanza) }));
    }

    fn in_order(&mut self, ctx: &mut Context<Self>, routing: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>) {
        let seq = self.received();
        let archiving = self.archiving.get_or_insert_default();
        archiving.submit(seq, routing);
        if archiving.full() {
            if let Some(drained) = archiving.barrier() {
                ctx.wait(drained.into_actor(self).map(|_, _, _| ()));
            }
        }
    }

    /// Directed available presence (RFC 6121 §4.6): whoever received it
    /// is owed this session's unavailable later, so is remembered, up to
    /// [`MAX_DIRECTED`] of them.
    fn directed_presence(&mut self, stanza: Stanza) {
        let Some(to) = stanza.to().cloned() else { return };
        let directed = self.directed.get_or_insert_default();
        if directed.len() >= MAX_DIRECTED && !directed.contains(&to) {
            let err = StanzaError::with_text(StanzaCondition::ResourceConstraint, "too many directed presences");
            if let Some(reply) = stanza.error_reply(&err) {
                self.send_stanza(&reply);
            }
            return;
        }
        if self.cx.router.route_directed_presence(stanza) {
            directed.insert(to);
        }
        if directed.is_empty() {
            self.directed = None;
        }
    }

    fn is_for_server(&self, stanza: &Stanza) -> bool {
        stanza.to().is_none_or(|to| to.as_str() == self.domain().as_str())
    }

    /// Presence without `to`: the session's own availability, broadcast by
    /// the PresenceActor.
    fn on_own_presence(&mut self, ctx: &mut Context<Self>, session: &Arc<Session>, t: PresenceType, stanza: Stanza) {
        match t {
            PresenceType::Available => {
                let priority = match stanza.element().get_child("priority", ns::CLIENT) {
                    None => Ok(0),
                    Some(p) => p.text().trim().parse::<i8>(),
                };
                let Ok(priority) = priority else {
                    let err = StanzaError::with_text(StanzaCondition::BadRequest, "priority must be -128..127");
                    if let Some(reply) = stanza.error_reply(&err) {
                        self.send_stanza(&reply);
                    }
                    return;
                };
                let initial = !self.available;
                self.available = true;
                session.set_available(priority);
                // XEP-0115: before the presence goes out, so that a query
                // about its caps reaches the client ahead of it.
                let caps_before = session.caps();
                crate::xep::caps::on_available(&self.cx.router, session, stanza.element());
                let presence = stanza.into_element();
                let msg = PresenceMsg::Available {
                    session: session.clone(),
                    presence,
                    initial,
                    caps_before,
                };
                self.publish(ctx, msg);
                if initial {
                    self.deliver_waiting(session);
                }
            }
            PresenceType::Unavailable if self.available => {
                self.available = false;
                session.set_unavailable();
                let directed = take_directed(&mut self.directed);
                let presence = stanza.into_element();
                let msg = PresenceMsg::Unavailable {
                    session: session.clone(),
                    presence,
                    directed,
                    sent: true,
                };
                self.publish(ctx, msg);
            }
            // Subscription types need a 'to'; probes and errors from a
            // client to itself mean nothing.
            _ => {}
        }
    }

    /// Hands the session's own presence to its PresenceActor shard and waits
    /// until the shard has taken it: a presence flood slows at its socket.
    fn publish(&mut self, ctx: &mut Context<Self>, msg: PresenceMsg) {
        let request = self.cx.router.presence().request(msg);
        ctx.wait(request.into_actor(self).map(|_, _, _| ()));
    }

    /// What waited for the user, at initial presence: subscription
    /// requests (RFC 6121 §3.1.3), then offline messages (XEP-0160), in
    /// order. Offline messages are forgotten once queued for the client.
    fn deliver_waiting(&self, session: &Arc<Session>) {
        let router = self.cx.router.clone();
        let paced = Paced {
            sessions: router.sessions().clone(),
            out: self.out.clone(),
            room: self.cx.config.max_outbound_bytes / 2,
            session: session.clone(),
        };
        actix_rt::spawn(async move {
            let user = paced.session.jid.to_bare();
            let requests = match router.storage().pending_requests(&user).await {
                Ok(items) => items
                    .into_iter()
                    .filter_map(|i| i.pending_request)
                    .map(Bytes::from)
                    .collect(),
                Err(e) => {
                    log::error!("{user}: pending requests: {e}");
                    Vec::new()
                }
            };
            paced.deliver(requests).await;
            let (seqs, messages): (Vec<i64>, Vec<Bytes>) =
                crate::xep::offline::waiting(&router, &user).await.into_iter().unzip();
            let delivered = paced.deliver(messages).await;
            if let Some(upto) = delivered.checked_sub(1).and_then(|last| seqs.get(last)) {
                if let Err(e) = router.storage().delete_offline(&user, *upto).await {
                    log::error!("{user}: cannot forget delivered offline messages: {e}");
                }
            }
        });
    }
}

/// Delivery of what waited for a user, paced: each stanza waits until the
/// client's outbound queue is under half its limit (or empty, for one
/// bigger than that), so that much stored traffic cannot get the client
/// disconnected at every login. Stops when the session ends.
struct Paced {
    sessions: crate::session::SessionTable,
    out: Outbound,
    room: usize,
    session: Arc<Session>,
}

impl Paced {
    /// Queues `items` in order; how many were queued.
    async fn deliver(&self, items: Vec<Bytes>) -> usize {
        let total = items.len();
        /// Stanzas queued between two yields to the connection.
        const BATCH: usize = 10;
        const PAUSE: Duration = Duration::from_millis(50);
        let live = || {
            self.sessions
                .get(&self.session.jid)
                .is_some_and(|s| s.id == self.session.id)
        };
        for (n, item) in items.into_iter().enumerate() {
            loop {
                if !live() {
                    return n;
                }
                let queued = self.out.queued();
                if queued == 0 || queued + item.len() <= self.room {
                    break;
                }
                actix_rt::time::sleep(PAUSE).await;
            }
            if !self.session.deliver(item) {
                return n;
            }
            if (n + 1) % BATCH == 0 {
                // Lets the connection write (it may share this thread).
                actix_rt::task::yield_now().await;
            }
        }
        total
    }
}

impl Actor for C2s {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Liveness checks and shutdown come from the server's sweeper.
        super::sweep::track(&self.cx, ctx.address().downgrade());
        if self.cx.shutdown.is_cancelled() {
            self.stream_error(ctx, StreamError::new(StreamCondition::SystemShutdown));
            return;
        }
        let deadline = ctx.run_later(self.cx.config.negotiation_timeout, |act, ctx| {
            if !matches!(act.state, State::Bound(_)) {
                let err =
                    StreamError::with_text(StreamCondition::ConnectionTimeout, "stream negotiation took too long");
                act.stream_error(ctx, err);
            }
        });
        self.negotiation_deadline = Some(deadline);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if self.handed_off {
            // The session lives on, on another connection.
            return;
        }
        if let State::Bound(session) = &self.state {
            session.set_unavailable();
            // XEP-0198: what the client never acknowledged goes elsewhere.
            resume::reroute(&self.cx.router, session, self.out.seal());
            let msg = if self.available {
                let presence = Element::new("presence", ns::CLIENT)
                    .with_attr("type", "unavailable")
                    .with_attr("from", session.jid.as_str());
                let directed = take_directed(&mut self.directed);
                // Nobody is left to read it on this socket.
                PresenceMsg::Unavailable {
                    session: session.clone(),
                    presence,
                    directed,
                    sent: false,
                }
            } else {
                // Never available, yet it sent directed presence (a bot
                // that only joined a room): those are owed its unavailable.
                for jid in take_directed(&mut self.directed) {
                    let from = Some(session.jid.clone().into());
                    let presence = Element::new("presence", ns::CLIENT);
                    let unavailable = Stanza::new(Kind::Presence(PresenceType::Unavailable), from, Some(jid), presence);
                    self.cx.router.route(unavailable);
                }
                PresenceMsg::Silent {
                    session: session.clone(),
                }
            };
            self.cx.router.presence().send(msg);
            self.cx.sm.do_send(Unregister {
                jid: session.jid.clone(),
                id: session.id,
                resumption: self.resumption_id(),
            });
        }
        // Does nothing if the stream was closed already.
        self.out.close(Duration::ZERO);
    }
}

impl StreamHandler<FrameResult> for C2s {
    fn handle(&mut self, frame: FrameResult, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        match frame {
            Err(err) => self.stream_error(ctx, err),
            Ok(Frame::StreamOpen(header)) => self.on_stream_open(ctx, header),
            Ok(Frame::Stanza(el)) => {
                if log::log_enabled!(log::Level::Trace) {
                    log::trace!("{} <- {}", self.peer, el.to_xml_in(ns::CLIENT));
                }
                self.on_element(ctx, el)
            }
            Ok(Frame::StreamClose) => {
                // RFC 6120 §4.4: answer the close, then hang up. A session
                // closed so is over (XEP-0198 §5): not resumable.
                self.out.send_nonza(Bytes::from_static(b"</stream:stream>"));
                self.close(ctx, Duration::ZERO);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The peer hung up (or its stream ended in error, handled above).
        if self.parked || self.handed_off {
            return;
        }
        if !self.closing && self.can_park() {
            return self.park(ctx);
        }
        self.closing = true;
        ctx.stop();
    }
}

impl Handler<super::sweep::CheckIdle> for C2s {
    type Result = ();

    fn handle(&mut self, _: super::sweep::CheckIdle, ctx: &mut Context<Self>) {
        self.check_idle(ctx);
    }
}

impl Handler<Control> for C2s {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) {
        match msg {
            // Nobody to tell on a parked session's connection.
            Control::Kick(_) if self.parked => ctx.stop(),
            Control::Kick(err) => self.stream_error(ctx, err),
            Control::Expire if self.parked => {
                log::info!("{}: too much waiting to be resumed; the session ends", self.peer);
                ctx.stop();
            }
            // The transport is gone and the actor not parked yet (it is
            // waiting on something): it stops instead of parking.
            Control::Expire => self.expire = true,
        }
    }
}
