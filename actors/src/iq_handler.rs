//! The IQ-handler table (ejabberd's `gen_iq_handler`, Prosody's
//! `iq/host/<ns>` and `iq/bare/<ns>` events): IQ requests addressed to the
//! server or to an account are dispatched by the namespace of their payload.
//! Every request gets exactly one reply: the handler's, or an error.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::StanzaError;
use crate::jid::{BareJid, Jid};
use crate::router::Router;
use crate::stanza::Stanza;
use crate::xml::Element;

/// What an IQ request is addressed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IqScope {
    /// The server itself (`to` is the domain).
    Server,
    /// An account, answered by the server on its behalf (`to` is a bare JID
    /// or absent; RFC 6121 §8.5.2.1.3).
    Account,
}

/// One IQ get or set, with its addresses resolved.
pub struct IqRequest {
    pub stanza: Stanza,
    /// Who asked (stamped by the server).
    pub from: Jid,
    /// The server, or the account the request is about.
    pub target: BareJid,
    /// The single child of the get or set.
    payload: Element,
}

impl IqRequest {
    /// A request for `stanza`, if it has the one child a get or set needs.
    pub fn new(stanza: Stanza, from: Jid, target: BareJid) -> Option<IqRequest> {
        let payload = stanza.payload()?.clone();
        Some(IqRequest {
            stanza,
            from,
            target,
            payload,
        })
    }

    /// The single child of the get or set.
    pub fn payload(&self) -> &Element {
        &self.payload
    }

    pub fn is_set(&self) -> bool {
        matches!(self.stanza.kind, crate::stanza::Kind::Iq(crate::stanza::IqType::Set))
    }

    /// True when the account asks about itself.
    pub fn from_owner(&self) -> bool {
        self.from.to_bare() == self.target
    }
}

/// The result payload (`None` for an empty result), or the error to return.
pub type IqResult = Result<Option<Element>, StanzaError>;
pub type IqFuture = Pin<Box<dyn Future<Output = IqResult>>>;

pub trait IqHandler: Send + Sync + 'static {
    /// Answers a request. The future runs on the requester's arbiter.
    fn handle(&self, router: &Router, request: IqRequest) -> IqFuture;

    /// The disco#info features this handler implements.
    fn features(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Handlers by scope and payload namespace.
#[derive(Clone, Default)]
pub struct IqHandlerTable {
    handlers: HashMap<(IqScope, String), Arc<dyn IqHandler>>,
}

impl IqHandlerTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the handler for `ns` in `scope`.
    pub fn register(&mut self, scope: IqScope, ns: &str, handler: Arc<dyn IqHandler>) {
        self.handlers.insert((scope, ns.to_owned()), handler);
    }

    pub fn get(&self, scope: IqScope, ns: &str) -> Option<&Arc<dyn IqHandler>> {
        self.handlers.get(&(scope, ns.to_owned()))
    }

    /// The features of the handlers in `scope`, sorted, once each.
    pub fn features(&self, scope: IqScope) -> Vec<String> {
        let mut out: Vec<String> = self
            .handlers
            .iter()
            .filter(|((s, _), _)| *s == scope)
            .flat_map(|(_, h)| h.features())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// An [`IqFuture`] that is already done.
pub fn ready(result: IqResult) -> IqFuture {
    Box::pin(std::future::ready(result))
}
