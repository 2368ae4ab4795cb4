//! The component actor: one per component connection. It answers the
//! stream header, checks the handshake, publishes the component's domain,
//! then checks and routes what the component sends; what is routed to the
//! domain reaches the connection through its [`Sink`].

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use quick_xml::escape::escape;
use subtle::ConstantTimeEq;

use super::{handshake_digest, ComponentContext, Service, StreamLimits};
use crate::c2s::limits::ConnState;
use crate::c2s::outbound::Outbound;
use crate::c2s::random_id;
use crate::c2s::transport::FrameResult;
use crate::codec::{Frame, StreamHeader};
use crate::error::{StreamCondition, StreamError};
use crate::jid::{BareJid, Jid};
use crate::ns;
use crate::services::{ConflictPolicy, Publication, PublishError, PublishOptions, ServiceSink};
use crate::session::Control;
use crate::stanza::{Stanza, StanzaParseError};
use crate::xml::{Element, Node};

pub(super) enum State {
    /// Waiting for the stream header.
    Start,
    /// Header answered; the component must show it knows the secret.
    AwaitHandshake { id: String, service: Arc<Service> },
    /// Shaken hands and published: stanzas flow both ways. Dropping the
    /// publication rescinds the domain.
    Connected(Publication),
}

pub struct Component {
    cx: Arc<ComponentContext>,
    settings: Arc<StreamLimits>,
    out: Outbound,
    peer: SocketAddr,
    conn: Arc<ConnState>,
    state: State,
    header_sent: bool,
    closing: bool,
}

/// The server's stream header to a component (XEP-0114 §3): no version,
/// no features.
pub(super) fn header(from: &str, id: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{}' from='{}'>",
        ns::COMPONENT_ACCEPT,
        ns::STREAM,
        escape(id),
        escape(from)
    )
}

/// Seeded at random per process, so that nobody can pick a JID whose key
/// collides with another sender's and spend that sender's share.
static SENDER_KEYS: LazyLock<std::collections::hash_map::RandomState> = LazyLock::new(Default::default);

/// Where stanzas for a component's domain go: its connection's queue.
struct Sink {
    out: Outbound,
    control: Recipient<Control>,
}

impl ServiceSink for Sink {
    fn deliver(&self, stanza: &Stanza) -> bool {
        // Others' traffic, as to a client: a sender past its share of the
        // queue is refused (and gets an error), rather than a flood
        // disconnecting the component.
        let sender = stanza
            .from()
            .map_or(0, |f| SENDER_KEYS.hash_one((f.node(), f.domain())));
        self.out.send_routed(sender, stanza.to_bytes()).is_ok()
    }

    fn replaced(&self) {
        let err = StreamError::with_text(StreamCondition::Conflict, "replaced by a new connection");
        // A full mailbox or a stopped actor both mean it is ending anyway.
        let _ = self.control.try_send(Control::Kick(err));
    }
}

impl Component {
    pub(super) fn new(
        cx: Arc<ComponentContext>,
        settings: Arc<StreamLimits>,
        out: Outbound,
        peer: SocketAddr,
        conn: Arc<ConnState>,
    ) -> Component {
        Component {
            cx,
            settings,
            out,
            peer,
            conn,
            state: State::Start,
            header_sent: false,
            closing: false,
        }
    }

    fn send_element(&self, el: &Element) {
        // Written in jabber:client with no xmlns on top: inside this stream
        // it inherits jabber:component:accept, as it should.
        let mut buf = Vec::with_capacity(128);
        el.write_to(&mut buf, ns::CLIENT);
        // A full queue closes the connection by itself.
        let _ = self.out.send(Bytes::from(buf));
    }

    fn send_header(&mut self, from: &str, id: &str) {
        self.header_sent = true;
        let _ = self.out.send(Bytes::from(header(from, id)));
    }

    /// Sends a stream error, closes the stream and stops the actor.
    fn stream_error(&mut self, ctx: &mut Context<Self>, err: StreamError) {
        if self.closing {
            return;
        }
        log::debug!("{} (component): {err}", self.peer);
        if !self.header_sent {
            let domain = self.cx.router.default_domain().to_string();
            self.send_header(&domain, &random_id(16));
        }
        let mut bytes = Vec::new();
        err.to_element().write_to(&mut bytes, ns::CLIENT);
        bytes.extend_from_slice(b"</stream:stream>");
        let _ = self.out.send(Bytes::from(bytes));
        self.close(ctx, self.cx.config.close_linger);
    }

    fn close(&mut self, ctx: &mut Context<Self>, linger: Duration) {
        self.closing = true;
        self.out.close(linger);
        ctx.stop();
    }

    fn on_stream_open(&mut self, ctx: &mut Context<Self>, header: StreamHeader) {
        if !matches!(self.state, State::Start) {
            let err = StreamError::with_text(StreamCondition::BadFormat, "unexpected stream restart");
            return self.stream_error(ctx, err);
        }
        if header.default_ns.as_deref() != Some(ns::COMPONENT_ACCEPT) {
            let err = StreamError::with_text(
                StreamCondition::InvalidNamespace,
                "the content namespace must be jabber:component:accept",
            );
            return self.stream_error(ctx, err);
        }
        let service = header
            .to
            .as_deref()
            .and_then(|to| BareJid::domain_jid(to).ok())
            .and_then(|domain| self.cx.service(domain.as_str()).cloned());
        let Some(service) = service else {
            log::info!("{}: component for an unknown domain {:?}", self.peer, header.to);
            let err = StreamError::with_text(StreamCondition::HostUnknown, "no such component is configured");
            return self.stream_error(ctx, err);
        };
        let id = random_id(16);
        self.send_header(&service.config.domain, &id);
        self.state = State::AwaitHandshake { id, service };
    }

    fn on_element(&mut self, ctx: &mut Context<Self>, el: Element) {
        match &self.state {
            State::Start => self.stream_error(ctx, StreamError::new(StreamCondition::NotWellFormed)),
            State::AwaitHandshake { id, service } => {
                let (id, service) = (id.clone(), service.clone());
                if el.name() != "handshake" || !is_content_ns(el.ns()) {
                    let err = StreamError::with_text(StreamCondition::NotAuthorized, "shake hands first");
                    return self.stream_error(ctx, err);
                }
                self.handshake(ctx, &id, service, &el.text());
            }
            State::Connected(_) => self.on_stanza(ctx, el),
        }
    }

    /// Checks the handshake; on success answers it and publishes.
    fn handshake(&mut self, ctx: &mut Context<Self>, id: &str, service: Arc<Service>, given: &str) {
        let domain = service.config.domain.clone();
        let expected = handshake_digest(id, &service.config.secret);
        let given = given.trim().to_ascii_lowercase();
        // Constant time: how much of a guess matched must not show.
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            log::info!("{}: wrong secret for component {domain}", self.peer);
            crate::metrics::component_handshake(false);
            let err = StreamError::with_text(StreamCondition::NotAuthorized, "wrong handshake");
            return self.stream_error(ctx, err);
        }
        let config = &self.cx.config;
        let options = PublishOptions {
            hidden: config.hidden.contains(&domain),
            name: service.config.name.clone(),
            conflict: config.conflict,
            iq_timeout: config.iq_timeout,
            max_pending: config.max_pending,
            max_pending_per_requester: config.max_pending_per_requester,
            kind: "component",
        };
        let router = self.cx.router.clone();
        // Refused before `<handshake/>` is sent, so that the loser sees only
        // the conflict; publishing checks again.
        if options.conflict == ConflictPolicy::KickNew && router.services().get(&domain).is_some() {
            log::info!("{}: component {domain} is connected already", self.peer);
            let err = StreamError::with_text(StreamCondition::Conflict, "the component is connected already");
            return self.stream_error(ctx, err);
        }
        // Its own limits from now on.
        self.out.set_limit(service.max_outbound_bytes);
        self.settings.set(service);
        self.conn.admitted.authenticated();
        self.conn.authenticated.store(true, Ordering::Relaxed);
        // Queued before publishing, so that nothing routed to the domain
        // can come before it.
        self.send_element(&Element::new("handshake", ns::CLIENT));
        let sink = Sink {
            out: self.out.clone(),
            control: ctx.address().recipient(),
        };
        match router.publish(&domain, Box::new(sink), options) {
            Ok(publication) => {
                log::info!("{}: component {domain} connected", self.peer);
                crate::metrics::component_handshake(true);
                self.state = State::Connected(publication);
            }
            Err(PublishError::Conflict(_)) => {
                let err = StreamError::with_text(StreamCondition::Conflict, "the component is connected already");
                self.stream_error(ctx, err);
            }
            Err(PublishError::ServerDomain(_)) => {
                let err = StreamError::with_text(StreamCondition::HostUnknown, "that is the server's own domain");
                self.stream_error(ctx, err);
            }
        }
    }

    /// A stanza from the component: from its own domain, to someone, and
    /// then routed like any other.
    fn on_stanza(&mut self, ctx: &mut Context<Self>, el: Element) {
        let State::Connected(publication) = &self.state else {
            return;
        };
        let domain = publication.domain().to_owned();
        let el = if el.ns() == ns::COMPONENT_ACCEPT {
            as_client(el)
        } else {
            el
        };
        if el.ns() != ns::CLIENT || !matches!(el.name(), "message" | "presence" | "iq") {
            return self.stream_error(ctx, StreamError::new(StreamCondition::UnsupportedStanzaType));
        }
        // XEP-0114 §3.1: a component sends only from its own domain.
        let from_ok = el
            .attr("from")
            .and_then(|f| Jid::parse(f).ok())
            .is_some_and(|f| f.domain() == domain);
        if !from_ok {
            let err = StreamError::with_text(
                StreamCondition::InvalidFrom,
                "a component sends only from its own domain",
            );
            return self.stream_error(ctx, err);
        }
        if el.attr("to").is_none() {
            let err = StreamError::with_text(StreamCondition::ImproperAddressing, "a component's stanzas need a 'to'");
            return self.stream_error(ctx, err);
        }
        let stanza = match Stanza::from_element(el) {
            Ok(s) => s,
            Err(StanzaParseError::Stream(e)) => return self.stream_error(ctx, e),
            Err(StanzaParseError::Stanza(e, el)) => return self.reject(&el, &e),
        };
        let State::Connected(publication) = &self.state else {
            return;
        };
        if let Err(e) = publication.send(stanza) {
            // Only once replaced: the stream is being closed.
            log::debug!("{} (component): not sent: {e}", self.peer);
        }
    }

    /// Answers a stanza that could not be routed, addressed back to its
    /// sender (errors are never answered).
    fn reject(&self, el: &Element, err: &crate::error::StanzaError) {
        if el.attr("type") == Some("error") {
            return;
        }
        let mut reply = Element::new(el.name(), ns::CLIENT).with_attr("type", "error");
        for (name, attr) in [("id", "id"), ("from", "to"), ("to", "from")] {
            if let Some(v) = el.attr(attr) {
                reply.set_attr(name, v);
            }
        }
        reply.push_child(err.to_element());
        self.send_element(&reply);
    }
}

/// True for the namespaces a component's stanzas may be in.
fn is_content_ns(namespace: &str) -> bool {
    namespace == ns::CLIENT || namespace == ns::COMPONENT_ACCEPT
}

/// An element a component wrote with an explicit
/// `xmlns='jabber:component:accept'`, moved to jabber:client with every
/// child that inherited it.
fn as_client(el: Element) -> Element {
    let namespace = if el.ns() == ns::COMPONENT_ACCEPT {
        ns::CLIENT
    } else {
        el.ns()
    };
    let mut out = Element::new(el.name(), namespace);
    for (name, value) in el.attrs() {
        out.set_attr(name, value);
    }
    for node in el.nodes() {
        match node {
            Node::Element(child) => out.push_child(as_client(child.clone())),
            Node::Text(text) => out.push_text(text.as_str()),
        }
    }
    out
}

impl Actor for Component {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.cx.shutdown.is_cancelled() {
            return self.stream_error(ctx, StreamError::new(StreamCondition::SystemShutdown));
        }
        // A watch per connection: components are few, unlike clients.
        let shutdown = self.cx.shutdown.clone();
        ctx.spawn(
            async move { shutdown.cancelled().await }
                .into_actor(self)
                .map(|(), act, ctx| act.stream_error(ctx, StreamError::new(StreamCondition::SystemShutdown))),
        );
        ctx.run_later(self.cx.config.negotiation_timeout, |act, ctx| {
            if !matches!(act.state, State::Connected(_)) {
                let err = StreamError::with_text(StreamCondition::ConnectionTimeout, "no handshake in time");
                act.stream_error(ctx, err);
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Rescinds the domain now: requests waiting on it are answered.
        if let State::Connected(publication) = std::mem::replace(&mut self.state, State::Start) {
            log::info!("{}: component {} disconnected", self.peer, publication.domain());
        }
        // Does nothing if the stream was closed already.
        self.out.close(Duration::ZERO);
    }
}

impl StreamHandler<FrameResult> for Component {
    fn handle(&mut self, frame: FrameResult, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        match frame {
            Err(err) => self.stream_error(ctx, err),
            Ok(Frame::StreamOpen(header)) => self.on_stream_open(ctx, header),
            Ok(Frame::Stanza(el)) => {
                if log::log_enabled!(log::Level::Trace) && matches!(self.state, State::Connected(_)) {
                    // Not before: the handshake is derived from the secret.
                    log::trace!("{} (component) <- {}", self.peer, el.to_xml_in(ns::CLIENT));
                }
                self.on_element(ctx, el)
            }
            Ok(Frame::StreamClose) => {
                // RFC 6120 §4.4: answer the close, then hang up.
                let _ = self.out.send(Bytes::from_static(b"</stream:stream>"));
                self.close(ctx, Duration::ZERO);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The peer hung up (or its stream ended in error, handled above).
        self.closing = true;
        ctx.stop();
    }
}

impl Handler<Control> for Component {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) {
        match msg {
            Control::Kick(err) => self.stream_error(ctx, err),
            // Components never wait to be resumed.
            Control::Expire => {}
        }
    }
}
