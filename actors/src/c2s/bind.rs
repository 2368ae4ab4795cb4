//! Resource binding (RFC 6120 §7): the client's resource or one we make up,
//! registered with the SessionManager; a conflicting older session is
//! closed by it.

use std::sync::Arc;

use actix::prelude::*;

use super::actor::{random_id, C2s, State};
use crate::error::{StanzaCondition, StanzaError, StreamCondition, StreamError};
use crate::jid::{normalise_resourcepart, FullJid};
use crate::ns;
use crate::presence::BindInfo;
use crate::session::{Link, Session, Transport};
use crate::session_manager::Register;
use crate::stanza::{IqType, Kind, Stanza};
use crate::xml::Element;

impl C2s {
    pub(super) fn on_pre_bind(&mut self, ctx: &mut Context<Self>, el: Element) {
        let State::Authenticated(user) = &self.state else {
            return;
        };
        let user = user.clone();
        let is_bind = el.is("iq", ns::CLIENT) && el.children().next().is_some_and(|p| p.is("bind", ns::BIND));
        if !is_bind {
            return self.stream_error(
                ctx,
                StreamError::with_text(StreamCondition::NotAuthorized, "bind a resource first"),
            );
        }
        let iq = match Stanza::from_element(el) {
            Ok(iq) if iq.kind == Kind::Iq(IqType::Set) => iq,
            Ok(iq) => {
                if let Some(reply) = iq.error_reply(&StanzaError::new(StanzaCondition::BadRequest)) {
                    self.send_stanza(&reply);
                }
                return;
            }
            Err(e) => return self.reject(ctx, e),
        };
        let requested = iq
            .payload()
            .and_then(|b| b.get_child("resource", ns::BIND))
            .map(Element::text)
            .filter(|r| !r.trim().is_empty());
        let resource = match requested {
            None => random_id(12),
            Some(r) => match normalise_resourcepart(&r) {
                Ok(r) => r,
                Err(_) => {
                    let err = StanzaError::with_text(StanzaCondition::BadRequest, "invalid resource");
                    if let Some(reply) = iq.error_reply(&err) {
                        self.send_stanza(&reply);
                    }
                    return;
                }
            },
        };
        let jid = match user.with_resource(&resource) {
            Ok(jid) => jid,
            Err(e) => {
                if let Some(reply) = iq.error_reply(&e.into()) {
                    self.send_stanza(&reply);
                }
                return;
            }
        };
        let extval = iq.payload().is_some_and(|b| b.has_child("extval", ns::BIND_EXTVAL));
        let asking = self
            .cx
            .hooks
            .on_bind_request(self.cx.router.storage(), &user, &resource, extval);
        ctx.wait(asking.into_actor(self).map(move |res, act, ctx| match res {
            Ok(info) => act.bind_session(ctx, iq, jid, extval.then_some(info)),
            Err(e) => {
                if let Some(reply) = iq.error_reply(&e) {
                    act.send_stanza(&reply);
                }
            }
        }));
    }

    /// Binds `jid` with the SessionManager and answers the bind request.
    fn bind_session(&mut self, ctx: &mut Context<Self>, iq: Stanza, jid: FullJid, extval: Option<BindInfo>) {
        let session = Session::new(jid, self.out.clone(), ctx.address().recipient());
        session.set_link(self.link());
        let session = Arc::new(session);
        let (router, sm, user) = (self.cx.router.clone(), self.cx.sm.clone(), session.jid.to_bare());
        let registering = {
            let session = session.clone();
            async move {
                // XEP-0191: the account's blocklist is cached before anyone
                // can reach the session (the SessionManager lets it go).
                if let Err(e) = router.blocklists().pin(&router, &user).await {
                    log::error!("{user}: cannot load the blocklist: {e}");
                    return Ok(Err(StanzaError::new(StanzaCondition::InternalServerError)));
                }
                sm.send(Register(session)).await
            }
        };
        ctx.wait(registering.into_actor(self).map(move |res, act, ctx| {
            let res = res.unwrap_or_else(|_| Err(StanzaError::new(StanzaCondition::InternalServerError)));
            match res {
                Ok(()) => {
                    log::info!("{}: bound {}", act.peer, session.jid);
                    let mut bind = Element::new("bind", ns::BIND)
                        .with_child(Element::new("jid", ns::BIND).with_text(session.jid.to_string()));
                    if let Some(info) = extval {
                        bind.push_child(Element::new("nick", ns::NICK).with_text(info.nick.unwrap_or_default()));
                        bind.push_child(
                            Element::new("photo-url", ns::BIND_EXTVAL).with_text(info.photo_url.unwrap_or_default()),
                        );
                    }
                    act.state = State::Bound(session);
                    act.live = Some(crate::metrics::LiveSession::new(act.transport()));
                    // Negotiated: the deadline's timer is no longer needed.
                    if let Some(timer) = act.negotiation_deadline.take() {
                        ctx.cancel_future(timer);
                    }
                    act.send_stanza(&iq.iq_result(Some(bind)));
                }
                Err(e) => {
                    if let Some(reply) = iq.error_reply(&e) {
                        act.send_stanza(&reply);
                    }
                }
            }
        }));
    }

    /// This connection as the server's session list shows it.
    pub(super) fn link(&self) -> Link {
        Link {
            transport: self.transport(),
            peer: self.peer,
        }
    }

    pub(super) fn transport(&self) -> Transport {
        self.conn.transport()
    }
}
