//! XEP-0198 in the c2s actor: enabling, acknowledging, and resumption.
//!
//! A dropped connection whose session is resumable does not end the
//! session: the actor *parks* (its transport gone, its outbound queue
//! kept and still filling), and waits `resume_timeout` for a new
//! connection to ask for it. The new connection's actor, through the
//! SessionManager, asks the holder to hand the session over ([`Handoff`]):
//! the holder stops without a word to anyone, and the new actor's transport
//! adopts the session's queue, resending what the client did not
//! acknowledge. A half-open connection is no different: the holder is
//! still reading its dead socket when the handoff comes, and its transport
//! sees the end of the queue it was writing. Nobody else notices: the
//! session, its presence and its place in the session table stay the same.
//!
//! When a session ends for good (the wait ran out, the client closed the
//! stream, it was replaced), the stanzas it was sent and never
//! acknowledged go where they would have gone had it not been there
//! ([`reroute`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;

use super::actor::{random_id, C2s, State};
use super::outbound::{Outbound, TooHigh};
use crate::error::{StanzaCondition, StreamCondition, StreamError};
use crate::jid::Jid;
use crate::ns;
use crate::router::Router;
use crate::session::{Control, Session, SmStatus};
use crate::session_manager::{Resumable, Resume};
use crate::stanza::Stanza;
use crate::xep::sm::{self, Nonza};
use crate::xml::{parse_element, Element, NsBindings, ParseLimits};

/// The actor's side of stream management.
pub struct SmState {
    /// Stanzas received from the client, modulo 2^32. Counted as the
    /// actor takes them: the actor handles one frame at a time, and waits
    /// for what must be durable (a message's archiving) before the next,
    /// so when `<r/>` is read every stanza before it is handled.
    received: u32,
    /// The resumption id, when resumable.
    id: Option<String>,
    /// How long the session waits to be resumed.
    timeout: Duration,
    /// When the server last asked for an acknowledgement by the clock.
    last_request: Instant,
    /// An answer to `<r/>` is on its way.
    answering: bool,
}

/// How long `<a h/>` waits for the client's IQs in flight to be answered.
const IQ_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Asks the connection holding a session to give it up to a new one,
/// whose client has received `h` stanzas.
#[derive(Message)]
#[rtype(result = "Result<Resumed, ResumeRefused>")]
pub struct Handoff {
    h: u32,
    control: Recipient<Control>,
}

/// A session handed over: what its new connection carries on with.
pub struct Resumed {
    session: Arc<Session>,
    out: Outbound,
    available: bool,
    #[allow(clippy::box_collection)]
    directed: Option<Box<HashSet<Jid>>>,
    sm: Box<SmState>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ResumeRefused {
    /// No such session (never, or no longer: §5 item-not-found).
    Unknown,
    /// The client claims more than was sent.
    TooHigh { sent: u32 },
}

impl C2s {
    /// An element in the XEP-0198 namespace.
    pub(super) fn on_sm(&mut self, ctx: &mut Context<Self>, el: Element) {
        let Ok(nonza) = Nonza::parse(&el) else {
            let err = StreamError::with_text(StreamCondition::BadFormat, "malformed stream management element");
            return self.stream_error(ctx, err);
        };
        if self.cx.config.sm.is_none() {
            let err = StreamError::with_text(StreamCondition::UnsupportedStanzaType, "stream management is off");
            return self.stream_error(ctx, err);
        }
        match nonza {
            Nonza::Enable { resume, max } => self.enable_sm(ctx, resume, max),
            Nonza::Resume { previd, h } => self.resume(ctx, previd, h),
            Nonza::Ack(h) if self.sm.is_some() => {
                if let Err(TooHigh { sent }) = self.out.ack(h) {
                    self.fatal(ctx, sm::too_high(h, sent));
                }
            }
            Nonza::Request if self.sm.is_some() => self.answer_request(ctx),
            Nonza::Ack(_) | Nonza::Request => {
                let err = StreamError::with_text(
                    StreamCondition::UnsupportedStanzaType,
                    "stream management is not enabled",
                );
                self.stream_error(ctx, err);
            }
        }
    }

    /// `<a h/>` counts what is handled. What is on its way through the
    /// archive (a message, and what waits behind it) is handled once
    /// routed: the answer waits for what was read before the request, the
    /// stream reading on meanwhile. A request to the server is handled once
    /// answered (a roster change once committed): then the answer waits
    /// for those in flight, reading nothing meanwhile (none can start).
    /// They are the server's own handlers: a storage round trip.
    /// Requests that come while an answer waits get that one answer,
    /// which carries the count when it goes: a flood of them costs nothing.
    fn answer_request(&mut self, ctx: &mut Context<Self>) {
        let Some(sm) = self.sm.as_mut() else { return };
        if sm.answering {
            return;
        }
        match self.archiving.as_mut().and_then(|a| a.barrier()) {
            None => self.ack_when_answered(ctx),
            Some(reached) => {
                sm.answering = true;
                ctx.spawn(reached.into_actor(self).map(|_, act, ctx| act.ack_when_answered(ctx)));
            }
        }
    }

    fn ack_when_answered(&mut self, ctx: &mut Context<Self>) {
        let answered = match &self.state {
            State::Bound(session) => session.when_iqs_answered(),
            _ => None,
        };
        match answered {
            None => self.send_ack(),
            // Bounded: an embedder's handler that never answers must not
            // freeze the stream.
            Some(answered) => {
                let answered = tokio::time::timeout(IQ_ANSWER_WAIT, answered);
                ctx.wait(answered.into_actor(self).map(|_, act, _| act.send_ack()))
            }
        }
    }

    fn send_ack(&mut self) {
        if let Some(sm) = self.sm.as_mut() {
            sm.answering = false;
        }
        let h = self.handled();
        self.out.send_nonza(sm::ack(h));
    }

    /// Stanzas received from the client (0 without stream management).
    pub(super) fn received(&self) -> u32 {
        self.sm.as_ref().map_or(0, |s| s.received)
    }

    /// Stanzas of the client's handled: all but from the oldest message
    /// still on its way through the archive.
    fn handled(&mut self) -> u32 {
        let received = self.received();
        self.archiving.as_mut().map_or(received, |a| a.handled(received))
    }

    /// Counts a stanza from the client.
    pub(super) fn count_received(&mut self) {
        if let Some(sm) = self.sm.as_mut() {
            sm.received = sm.received.wrapping_add(1);
        }
    }

    fn enable_sm(&mut self, ctx: &mut Context<Self>, resume: bool, max: Option<u32>) {
        let (State::Bound(session), None, Some(settings)) = (&self.state, &self.sm, &self.cx.config.sm) else {
            // §3: before binding, or twice.
            return self.out.send_nonza(sm::failed(StanzaCondition::UnexpectedRequest));
        };
        let resumable = resume && !settings.resume_timeout.is_zero();
        let timeout = max.map_or(settings.resume_timeout, |m| {
            settings.resume_timeout.min(Duration::from_secs(u64::from(m)))
        });
        let id = resumable.then(|| random_id(24));
        let status = match resumable {
            true => SmStatus::Resumable,
            false => SmStatus::Enabled,
        };
        session.set_sm_status(status);
        if let Some(id) = &id {
            let user = session.jid.to_bare();
            self.cx.sm.do_send(Resumable {
                id: id.clone(),
                user,
                addr: ctx.address(),
            });
        }
        let enabled = sm::enabled(id.as_deref().map(|id| (id, timeout.as_secs())));
        self.out
            .enable_acks(enabled, settings.max_unacked, settings.request_every);
        self.sm = Some(Box::new(SmState {
            received: 0,
            id,
            timeout,
            last_request: Instant::now(),
            answering: false,
        }));
    }

    /// `<resume/>` on a stream that authenticated but did not bind.
    fn resume(&mut self, ctx: &mut Context<Self>, previd: String, h: u32) {
        let State::Authenticated(user) = &self.state else {
            return self.out.send_nonza(sm::failed(StanzaCondition::UnexpectedRequest));
        };
        let asking = self.cx.sm.send(Resume {
            id: previd.clone(),
            user: user.clone(),
            handoff: Handoff {
                h,
                control: ctx.address().recipient(),
            },
            addr: ctx.address(),
        });
        ctx.wait(asking.into_actor(self).map(move |res, act, ctx| match res {
            Ok(Ok(resumed)) => act.take_over(ctx, &previd, resumed),
            Ok(Err(ResumeRefused::TooHigh { sent })) => {
                act.out.send_nonza(sm::too_high(h, sent));
                act.close_now(ctx);
            }
            _ => act.out.send_nonza(sm::failed(StanzaCondition::ItemNotFound)),
        }));
    }

    /// Carries on with a session handed over by its old connection.
    fn take_over(&mut self, ctx: &mut Context<Self>, previd: &str, mut resumed: Resumed) {
        log::info!("{}: resumed {}", self.peer, resumed.session.jid);
        resumed.session.set_link(self.link());
        resumed.session.set_sm_status(SmStatus::Resumable);
        // Written on this stream's own queue, then the transport switches
        // to the session's, where the unacknowledged stanzas come first.
        self.out.send_nonza(sm::resumed(previd, resumed.sm.received));
        self.out.adopt(&resumed.out);
        self.out = resumed.out;
        self.available = resumed.available;
        self.directed = resumed.directed;
        resumed.sm.last_request = Instant::now();
        // The old connection's answer in waiting, if any, went with it.
        resumed.sm.answering = false;
        self.sm = Some(resumed.sm);
        self.state = State::Bound(resumed.session);
        // Counted on this connection now; the old one let it go.
        self.live = Some(crate::metrics::LiveSession::new(self.transport()));
        if let Some(timer) = self.negotiation_deadline.take() {
            ctx.cancel_future(timer);
        }
    }

    /// True when losing the connection now would park the session.
    pub(super) fn can_park(&self) -> bool {
        matches!(self.state, State::Bound(_))
            && self.sm.as_ref().is_some_and(|s| s.id.is_some())
            && !self.parked
            && !self.handed_off
            && !self.expire
            && !self.out.overflowed()
            && !self.cx.shutdown.is_cancelled()
    }

    /// The connection is gone (or dead): keep the session for a resumption.
    pub(super) fn park(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.sm.as_ref().map_or(Duration::ZERO, |s| s.timeout);
        if let State::Bound(session) = &self.state {
            log::info!(
                "{}: connection lost; {} may resume within {timeout:?}",
                self.peer,
                session.jid
            );
            session.set_sm_status(SmStatus::Detached);
        }
        self.out.detach();
        self.parked = true;
        self.closing = true;
        ctx.run_later(timeout, |act, ctx| {
            if act.parked {
                log::info!("{}: not resumed in time", act.peer);
                ctx.stop();
            }
        });
    }

    /// Liveness of a stream with acknowledgements on: asks for one when
    /// stanzas have waited `request_after`; ends a parked session whose
    /// queue overflowed (nothing more can be kept for it).
    pub(super) fn check_acks(&mut self, ctx: &mut Context<Self>) {
        if self.parked {
            if self.out.overflowed() {
                ctx.stop();
            }
            return;
        }
        let Some(settings) = &self.cx.config.sm else { return };
        let Some(sm) = self.sm.as_mut() else { return };
        if sm.last_request.elapsed() >= settings.request_after && self.out.unacked() > 0 {
            sm.last_request = Instant::now();
            self.out.send_nonza(Bytes::from_static(sm::REQUEST));
        }
    }

    /// The resumption id to forget when the session ends.
    pub(super) fn resumption_id(&self) -> Option<String> {
        self.sm.as_ref().and_then(|s| s.id.clone())
    }
}

impl Handler<Handoff> for C2s {
    type Result = ActorResponse<Self, Result<Resumed, ResumeRefused>>;

    /// Once the messages read are routed (the count handed over is then
    /// exact, and nothing the client resends is a duplicate). Answered at
    /// once when none is on its way: a future spawned now would be dropped
    /// with the actor that stops here.
    fn handle(&mut self, msg: Handoff, ctx: &mut Context<Self>) -> Self::Result {
        match self.archiving.as_mut().and_then(|a| a.barrier()) {
            None => ActorResponse::reply(self.hand_off(msg, ctx)),
            Some(routed) => {
                ActorResponse::r#async(routed.into_actor(self).map(move |_, act, ctx| act.hand_off(msg, ctx)))
            }
        }
    }
}

impl C2s {
    fn hand_off(&mut self, msg: Handoff, ctx: &mut Context<Self>) -> Result<Resumed, ResumeRefused> {
        let State::Bound(session) = &self.state else {
            return Err(ResumeRefused::Unknown);
        };
        if self.handed_off || self.out.overflowed() || self.sm.as_ref().is_none_or(|s| s.id.is_none()) {
            return Err(ResumeRefused::Unknown);
        }
        // Replaced meanwhile by a new binding of its JID (whose `<conflict/>`
        // for this actor may still be on its way): nothing to resume.
        let current = self.cx.router.sessions().get(&session.jid);
        if current.is_none_or(|s| s.id != session.id) {
            return Err(ResumeRefused::Unknown);
        }
        if let Err(TooHigh { sent }) = self.out.ack(msg.h) {
            return Err(ResumeRefused::TooHigh { sent });
        }
        // The old connection, dropped or half-open, writes no more.
        self.out.detach();
        session.set_control(msg.control);
        let resumed = Resumed {
            session: session.clone(),
            out: self.out.clone(),
            available: self.available,
            directed: self.directed.take(),
            sm: self.sm.take().ok_or(ResumeRefused::Unknown)?,
        };
        self.handed_off = true;
        self.parked = false;
        self.closing = true;
        self.state = State::Start;
        self.live = None;
        // Nothing more from this actor reaches the session's queue (an
        // acknowledgement it was still to send would count behind the new
        // connection's back): its own end is a queue nobody reads.
        self.out = Outbound::detached(0).0;
        // After the answer is on its way (it may be this call's, or a
        // future's that stopping now would drop).
        ctx.run_later(Duration::ZERO, |_, ctx| ctx.stop());
        Ok(resumed)
    }
}

/// Sends stanzas a session ended without acknowledging (XEP-0198 §5)
/// where they would have gone without it: messages to the account's other
/// resources or offline storage, requests back with
/// `<recipient-unavailable/>`. Presence and the server's own messages to
/// the account (carbon copies, archive results) are dropped.
pub(super) fn reroute(router: &Router, session: &Session, leftovers: Vec<Bytes>) {
    if leftovers.is_empty() {
        return;
    }
    log::info!("{}: {} stanzas unacknowledged", session.jid, leftovers.len());
    let limits = ParseLimits {
        // Our own serialisation, possibly wrapped (carbons): deeper than a
        // client may send.
        max_depth: 128,
        ..ParseLimits::default()
    };
    let bindings = NsBindings::client();
    for bytes in leftovers {
        let stanza = parse_element(&bytes, &bindings, &limits)
            .ok()
            .and_then(|el| Stanza::from_element(el).ok());
        match stanza {
            Some(stanza) => router.reroute_unacked(stanza, &session.jid),
            None => log::warn!("{}: an unacknowledged stanza could not be read back", session.jid),
        }
    }
}

/// The namespace's elements are not stanzas: they are not counted.
pub(super) fn is_sm(el: &Element) -> bool {
    el.ns() == sm::NS
}

/// True for the elements XEP-0198 counts (§4: message, presence, iq).
pub(super) fn is_stanza(el: &Element) -> bool {
    el.ns() == ns::CLIENT && matches!(el.name(), "message" | "presence" | "iq")
}
