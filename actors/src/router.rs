//! The router: where every stanza goes once the c2s actor has stamped its
//! `from` (ejabberd_router → ejabberd_local / ejabberd_sm). It runs in the
//! caller's context and reads the session table directly, so one message
//! costs no actor hop: it is serialised once and queued on the recipient's
//! socket. Addressing rules follow RFC 6121 §8.5.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use crate::error::{StanzaCondition, StanzaError};
use crate::iq_handler::{IqHandlerTable, IqRequest, IqScope};
use crate::jid::{BareJid, FullJid, Jid};
use crate::presence::PresenceHub;
use crate::session::{Session, SessionTable};
use crate::stanza::{IqType, Kind, MessageType, PresenceType, Stanza};
use crate::storage::Storage;

#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    domain: BareJid,
    sessions: SessionTable,
    iq_handlers: IqHandlerTable,
    storage: Arc<dyn Storage>,
    presence: PresenceHub,
}

impl Router {
    pub fn new(
        domain: BareJid,
        sessions: SessionTable,
        iq_handlers: IqHandlerTable,
        storage: Arc<dyn Storage>,
        presence: PresenceHub,
    ) -> Router {
        Router {
            inner: Arc::new(Inner {
                domain,
                sessions,
                iq_handlers,
                storage,
                presence,
            }),
        }
    }

    pub fn presence(&self) -> &PresenceHub {
        &self.inner.presence
    }

    /// The domain this server serves (a bare JID without node).
    pub fn domain(&self) -> &BareJid {
        &self.inner.domain
    }

    pub fn sessions(&self) -> &SessionTable {
        &self.inner.sessions
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    pub fn iq_handlers(&self) -> &IqHandlerTable {
        &self.inner.iq_handlers
    }

    /// True when `jid` is an account of this server.
    pub fn is_local_user(&self, jid: &Jid) -> bool {
        jid.node().is_some() && jid.domain() == self.inner.domain.domain()
    }

    /// Routes a stanza whose `from` the server has already stamped. A
    /// stanza without `to` is for the sender's own account.
    pub fn route(&self, stanza: Stanza) {
        let to = match (stanza.to(), stanza.from()) {
            (Some(to), _) => to.clone(),
            (None, Some(from)) if self.is_local_user(from) => from.to_bare().into(),
            (None, _) => return log::debug!("dropping a stanza with no addresses"),
        };
        if to.domain() != self.inner.domain.domain() {
            // No server-to-server links yet.
            return self.bounce(&stanza, StanzaCondition::RemoteServerNotFound);
        }
        match to.node() {
            None => self.to_server(stanza),
            Some(_) => match to.clone().try_into_full() {
                Ok(full) => self.to_full(&full, stanza),
                Err(_) => self.to_bare(&to.to_bare(), stanza),
            },
        }
    }

    /// Sends the error reply of `stanza` back to its sender.
    pub fn bounce(&self, stanza: &Stanza, condition: StanzaCondition) {
        if let Some(reply) = stanza.error_reply(&StanzaError::new(condition)) {
            self.route(reply);
        }
    }

    fn to_server(&self, stanza: Stanza) {
        if stanza.is_iq_request() {
            let target = self.inner.domain.clone();
            self.dispatch_iq(IqScope::Server, target, stanza);
        }
        // Messages and presence for the server itself, and IQ results, have
        // nobody to go to.
    }

    fn to_bare(&self, user: &BareJid, stanza: Stanza) {
        match stanza.kind {
            Kind::Iq(IqType::Get | IqType::Set) => self.dispatch_iq(IqScope::Account, user.clone(), stanza),
            Kind::Iq(_) => {}
            Kind::Message(t) => self.message_to_bare(user, t, stanza),
            Kind::Presence(t) if t.is_subscription() => {
                actix_rt::spawn(crate::roster::presence::inbound(self.clone(), stanza));
            }
            // Probes are the server's business (RFC 6121 §4.3), answered
            // by the PresenceActor; errors to a bare JID go nowhere.
            Kind::Presence(PresenceType::Probe | PresenceType::Error) => {}
            Kind::Presence(_) => {
                // Presence to a bare JID reaches every available resource.
                let sessions = self.inner.sessions.resources(user);
                let bytes = stanza.to_bytes();
                for s in sessions.iter().filter(|s| s.priority().is_some()) {
                    s.deliver(bytes.clone());
                }
            }
        }
    }

    /// RFC 6121 §8.5.2: the available resources of highest non-negative
    /// priority get it; with none, the user is offline.
    fn message_to_bare(&self, user: &BareJid, kind: MessageType, stanza: Stanza) {
        if kind == MessageType::Error {
            return;
        }
        if kind == MessageType::Groupchat {
            return self.bounce(&stanza, StanzaCondition::ServiceUnavailable);
        }
        let sessions = self.inner.sessions.resources(user);
        let top = sessions.iter().filter_map(|s| s.priority()).filter(|p| *p >= 0).max();
        let targets: Vec<&Arc<Session>> = match (kind, top) {
            (_, None) => Vec::new(),
            (MessageType::Headline, Some(_)) => sessions
                .iter()
                .filter(|s| s.priority().is_some_and(|p| p >= 0))
                .collect(),
            (_, Some(top)) => sessions.iter().filter(|s| s.priority() == Some(top)).collect(),
        };
        let bytes = stanza.to_bytes();
        let delivered = targets.iter().filter(|s| s.deliver(bytes.clone())).count();
        if delivered == 0 && kind != MessageType::Headline {
            // Offline: no offline storage yet, so the sender learns of it.
            self.bounce(&stanza, StanzaCondition::ServiceUnavailable);
        }
    }

    fn to_full(&self, jid: &FullJid, stanza: Stanza) {
        if matches!(stanza.kind, Kind::Presence(t) if t.is_subscription()) {
            // Subscriptions are between accounts (RFC 6121 §3.1.3).
            return self.to_bare(&jid.to_bare(), stanza);
        }
        if let Some(session) = self.inner.sessions.get(jid) {
            if session.deliver(stanza.to_bytes()) {
                return;
            }
        }
        // RFC 6121 §8.5.3.2: no such session.
        match stanza.kind {
            Kind::Message(t @ (MessageType::Normal | MessageType::Chat)) => {
                self.message_to_bare(&jid.to_bare(), t, stanza)
            }
            Kind::Message(MessageType::Groupchat) | Kind::Iq(IqType::Get | IqType::Set) => {
                self.bounce(&stanza, StanzaCondition::ServiceUnavailable)
            }
            _ => {}
        }
    }

    fn dispatch_iq(&self, scope: IqScope, target: BareJid, stanza: Stanza) {
        let Some(from) = stanza.from().cloned() else {
            return;
        };
        let ns = stanza.payload().map(|p| p.ns().to_owned()).unwrap_or_default();
        let Some(handler) = self.inner.iq_handlers.get(scope, &ns).cloned() else {
            return self.bounce(&stanza, StanzaCondition::ServiceUnavailable);
        };
        let router = self.clone();
        // Stanzas from clients are checked on parsing; the host program's
        // (RouteStanza) may lack the payload.
        let Some(request) = IqRequest::new(stanza.clone(), from, target) else {
            return self.bounce(&stanza, StanzaCondition::BadRequest);
        };
        let future = AssertUnwindSafe(handler.handle(self, request)).catch_unwind();
        actix_rt::spawn(async move {
            let reply = match future.await {
                Ok(Ok(payload)) => Some(stanza.iq_result(payload)),
                Ok(Err(err)) => stanza.error_reply(&err),
                Err(_) => {
                    log::error!("IQ handler for {ns} panicked");
                    stanza.error_reply(&StanzaError::new(StanzaCondition::InternalServerError))
                }
            };
            if let Some(reply) = reply {
                router.route(reply);
            }
        });
    }
}
