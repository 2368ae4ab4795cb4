//! XEP-0030: Service Discovery. Each hosted domain is a `server/im`,
//! answering as itself with its own features (in-band registration is
//! per domain); an account is `account/registered` (and `pubsub/pep`
//! with PEP, its items its nodes), answered by the server on the
//! account's behalf.

use crate::error::{StanzaCondition, StanzaError};
use crate::iq_handler::{ready, IqFuture, IqHandler, IqRequest, IqScope};
use crate::ns;
use crate::router::Router;
use crate::xml::Element;

pub struct DiscoInfo;
pub struct DiscoItems;

fn identity(category: &str, kind: &str, name: Option<&str>) -> Element {
    let mut el = Element::new("identity", ns::DISCO_INFO)
        .with_attr("category", category)
        .with_attr("type", kind);
    if let Some(name) = name {
        el.set_attr("name", name);
    }
    el
}

impl IqHandler for DiscoInfo {
    fn handle(&self, router: &Router, req: IqRequest) -> IqFuture {
        if req.is_set() {
            return ready(Err(StanzaError::new(StanzaCondition::NotAllowed)));
        }
        if req.payload().attr("node").is_some() {
            return ready(Err(StanzaError::new(StanzaCondition::ItemNotFound)));
        }
        let (scope, ident) = if req.target.node().is_none() {
            (IqScope::Server, identity("server", "im", Some("Shoal")))
        } else {
            (IqScope::Account, identity("account", "registered", None))
        };
        let mut query = Element::new("query", ns::DISCO_INFO).with_child(ident);
        // XEP-0163 §6.1: an account with PEP is also a pubsub/pep service.
        if scope == IqScope::Account && crate::xep::pep::enabled(router) {
            query.push_child(identity("pubsub", "pep", None));
        }
        // The target is a hosted domain, or an account at one.
        let registration = router.hosts().get(req.target.domain()).is_some_and(|h| h.registration);
        for feature in router.iq_handlers().features(scope) {
            if scope == IqScope::Server && feature == ns::REGISTER && !registration {
                continue;
            }
            query.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", feature));
        }
        if req.target.node().is_none() {
            return ready(Ok(Some(query)));
        }
        // An account that does not exist has nobody to answer for it.
        let storage = router.storage().clone();
        let user = req.target.clone();
        Box::pin(async move {
            match storage.credentials(&user).await? {
                Some(_) => Ok(Some(query)),
                None => Err(StanzaError::new(StanzaCondition::ServiceUnavailable)),
            }
        })
    }

    fn features(&self) -> Vec<String> {
        vec![ns::DISCO_INFO.to_owned(), ns::DISCO_ITEMS.to_owned()]
    }
}

impl IqHandler for DiscoItems {
    fn handle(&self, router: &Router, req: IqRequest) -> IqFuture {
        if req.is_set() {
            return ready(Err(StanzaError::new(StanzaCondition::NotAllowed)));
        }
        if req.payload().attr("node").is_some() {
            return ready(Err(StanzaError::new(StanzaCondition::ItemNotFound)));
        }
        // An account lists its PEP nodes the asker may see.
        if req.target.node().is_some() && crate::xep::pep::enabled(router) {
            return crate::xep::pep::disco_items(router, req.target.clone(), req.from.to_bare());
        }
        let mut query = Element::new("query", ns::DISCO_ITEMS);
        // The server lists what is published on it (ejabberd's
        // get_vh_services, Prosody's subdomains); each service describes
        // itself when asked (disco#info to its domain).
        if req.target.node().is_none() {
            for service in router.services().list().into_iter().filter(|s| !s.hidden) {
                let mut item = Element::new("item", ns::DISCO_ITEMS).with_attr("jid", service.domain);
                if let Some(name) = service.name {
                    item.set_attr("name", name);
                }
                query.push_child(item);
            }
        }
        ready(Ok(Some(query)))
    }
}
