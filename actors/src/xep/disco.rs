//! XEP-0030: Service Discovery. Each hosted domain is a `server/im`,
//! answering as itself with its own features (in-band registration is
//! per domain); an account is `account/registered` (and `pubsub/pep`
//! with PEP, its items its nodes), answered by the server on the
//! account's behalf.

use crate::error::{StanzaCondition, StanzaError};
use crate::iq_handler::{ready, IqFuture, IqHandler, IqRequest, IqScope};
use crate::ns;
use crate::router::Router;
use crate::xep::caps;
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

/// The disco#info `<query/>` of a hosted domain: `server/im` and the
/// server's features, in-band registration among them only if
/// `registration` (the domain's policy). Its hash is the server's caps
/// ver (XEP-0115).
pub fn server_info(router: &Router, registration: bool) -> Element {
    let mut query = Element::new("query", ns::DISCO_INFO).with_child(identity("server", "im", Some("Shoal")));
    for feature in router.iq_handlers().features(IqScope::Server) {
        if feature == ns::REGISTER && !registration {
            continue;
        }
        query.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", feature));
    }
    query
}

impl IqHandler for DiscoInfo {
    fn handle(&self, router: &Router, req: IqRequest) -> IqFuture {
        if req.is_set() {
            return ready(Err(StanzaError::new(StanzaCondition::NotAllowed)));
        }
        let node = req.payload().attr("node");
        if req.target.node().is_none() {
            // The target is a hosted domain.
            let registration = router.hosts().get(req.target.domain()).is_some_and(|h| h.registration);
            let mut query = server_info(router, registration);
            // XEP-0115: the node of the server's caps is its plain
            // disco#info, named in the answer.
            if let Some(node) = node {
                let ver = node.strip_prefix(caps::SERVER_NODE).and_then(|v| v.strip_prefix('#'));
                if ver.is_none_or(|v| v != caps::ver_of(&query)) {
                    return ready(Err(StanzaError::new(StanzaCondition::ItemNotFound)));
                }
                query.set_attr("node", node);
            }
            return ready(Ok(Some(query)));
        }
        if node.is_some() {
            return ready(Err(StanzaError::new(StanzaCondition::ItemNotFound)));
        }
        let mut query = Element::new("query", ns::DISCO_INFO).with_child(identity("account", "registered", None));
        // XEP-0163 §6.1: an account with PEP is also a pubsub/pep service.
        if crate::xep::pep::enabled(router) {
            query.push_child(identity("pubsub", "pep", None));
        }
        for feature in router.iq_handlers().features(IqScope::Account) {
            query.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", feature));
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
