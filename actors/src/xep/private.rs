//! XEP-0049 Private XML Storage: an account keeps elements on the server,
//! one per name and namespace, that only it reads back. Legacy clients keep
//! their XEP-0048 bookmarks (`storage:bookmarks`) and preferences here.
//!
//! As Prosody's mod_private: a get of nothing stored answers the element
//! asked for, empty; a set of an empty element forgets it. With PEP on,
//! `storage:bookmarks` is a view of the XEP-0402 bookmarks instead
//! ([`super::bookmarks`], XEP-0411).

use std::sync::Arc;

use crate::error::{StanzaCondition, StanzaError};
use crate::iq_handler::{ready, IqFuture, IqHandler, IqRequest, IqResult};
use crate::jid::BareJid;
use crate::ns;
use crate::router::Router;
use crate::storage::{Storage, StorageError};
use crate::xep::{bookmarks, pep};
use crate::xml::{parse_element, Element, NsBindings, ParseLimits};

/// Most elements one account keeps. Each is bounded by the stanza that
/// brought it (`[c2s] max_stanza_bytes`); this bounds their number.
pub const MAX_KEYS: usize = 100;

/// Why a request's `<query/>` holds nothing to store or fetch (XEP-0049 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrivateError {
    /// Not a `<query/>`, or not exactly one element in it.
    #[error("exactly one element is stored or fetched at a time")]
    NotOneElement,
    /// An element in `jabber:iq:private` or `jabber:client`: reserved.
    #[error("elements in jabber:iq:private or jabber:client are not stored")]
    ReservedNamespace,
}

impl From<PrivateError> for StanzaError {
    fn from(err: PrivateError) -> StanzaError {
        let condition = match err {
            PrivateError::NotOneElement => StanzaCondition::BadRequest,
            PrivateError::ReservedNamespace => StanzaCondition::NotAcceptable,
        };
        StanzaError::with_text(condition, err.to_string())
    }
}

/// The one element a request's `<query/>` is about.
pub fn requested(query: &Element) -> Result<&Element, PrivateError> {
    let mut children = query.children();
    let (true, Some(el), None) = (query.is("query", ns::PRIVATE), children.next(), children.next()) else {
        return Err(PrivateError::NotOneElement);
    };
    storable(el)?;
    Ok(el)
}

/// Whether `el` may be stored: its namespace is its own (§3).
pub fn storable(el: &Element) -> Result<(), PrivateError> {
    match el.ns() {
        ns::PRIVATE | ns::CLIENT => Err(PrivateError::ReservedNamespace),
        _ => Ok(()),
    }
}

/// What an element is stored under: `{namespace}name`.
pub fn key_of(el: &Element) -> String {
    format!("{{{}}}{}", el.ns(), el.name())
}

/// True for an element with nothing in it (white space aside): a set of
/// one forgets what was stored (Prosody's mod_private).
pub fn is_empty(el: &Element) -> bool {
    el.children().next().is_none() && el.text().trim().is_empty()
}

pub struct Private;

impl IqHandler for Private {
    fn handle(&self, router: &Router, req: IqRequest) -> IqFuture {
        // Private to the account: nobody else reads or writes it.
        if !req.from_owner() {
            return ready(Err(StanzaError::new(StanzaCondition::Forbidden)));
        }
        let el = match requested(req.payload()) {
            Ok(el) => el.clone(),
            Err(e) => return ready(Err(e.into())),
        };
        // XEP-0411: with PEP, legacy bookmarks are the XEP-0402 ones.
        if el.is("storage", ns::BOOKMARKS) && pep::enabled(router) {
            return bookmarks::private_xml(router.clone(), req.target.clone(), req.is_set(), el);
        }
        Box::pin(answer(router.storage().clone(), req.target.clone(), req.is_set(), el))
    }

    fn features(&self) -> Vec<String> {
        vec![ns::PRIVATE.to_owned()]
    }
}

/// The answer to the owner's get or set of `el`.
async fn answer(storage: Arc<dyn Storage>, user: BareJid, set: bool, el: Element) -> IqResult {
    let key = key_of(&el);
    if set {
        let xml = (!is_empty(&el)).then(|| el.to_string());
        if !storage.set_private_xml(&user, &key, xml).await? {
            return Err(StanzaError::with_text(
                StanzaCondition::PolicyViolation,
                format!("no room for it: at most {MAX_KEYS} private XML elements per account"),
            ));
        }
        return Ok(None);
    }
    // Nothing stored: the element asked for, empty.
    let found = read(&*storage, &user, &key)
        .await?
        .unwrap_or_else(|| Element::new(el.name(), el.ns()));
    Ok(Some(query_of(found)))
}

/// What `user` keeps under `key`, if anything.
pub(crate) async fn read(storage: &dyn Storage, user: &BareJid, key: &str) -> Result<Option<Element>, StorageError> {
    let stored = storage.private_xml(user, key).await?;
    Ok(stored.and_then(|xml| parse_element(xml.as_bytes(), &NsBindings::empty(), &ParseLimits::default()).ok()))
}

/// A get's result: `el` in a `<query xmlns='jabber:iq:private'/>`.
pub fn query_of(el: Element) -> Element {
    Element::new("query", ns::PRIVATE).with_child(el)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::Credentials;
    use crate::storage::MemoryStorage;

    fn el(xml: &str) -> Element {
        parse_element(xml.as_bytes(), &NsBindings::client(), &ParseLimits::default()).unwrap()
    }

    #[test]
    fn a_query_holds_one_element_in_a_namespace_of_its_own() {
        let q = el("<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>");
        assert_eq!(requested(&q).unwrap().name(), "storage");
        let cases = [
            ("<query xmlns='jabber:iq:private'/>", PrivateError::NotOneElement),
            (
                "<query xmlns='jabber:iq:private'><a xmlns='x'/><b xmlns='y'/></query>",
                PrivateError::NotOneElement,
            ),
            (
                "<query xmlns='jabber:iq:other'><a xmlns='x'/></query>",
                PrivateError::NotOneElement,
            ),
            // Without a namespace of its own it is in jabber:iq:private.
            (
                "<query xmlns='jabber:iq:private'><a/></query>",
                PrivateError::ReservedNamespace,
            ),
            (
                "<query xmlns='jabber:iq:private'><a xmlns='jabber:client'/></query>",
                PrivateError::ReservedNamespace,
            ),
        ];
        for (xml, expected) in cases {
            assert_eq!(requested(&el(xml)), Err(expected), "{xml}");
        }
        let err = StanzaError::from(PrivateError::ReservedNamespace);
        assert_eq!(err.condition, StanzaCondition::NotAcceptable);
        assert_eq!(
            StanzaError::from(PrivateError::NotOneElement).condition,
            StanzaCondition::BadRequest
        );
    }

    #[test]
    fn keys_and_emptiness() {
        assert_eq!(key_of(&el("<exodus xmlns='exodus:prefs'/>")), "{exodus:prefs}exodus");
        assert!(is_empty(&el("<storage xmlns='storage:bookmarks' a='1'>\n  </storage>")));
        assert!(!is_empty(&el("<exodus xmlns='exodus:prefs'>x</exodus>")));
        assert!(!is_empty(&el(
            "<storage xmlns='storage:bookmarks'><conference jid='a@b'/></storage>"
        )));
    }

    /// Memory storage with one account, Juliet's.
    async fn juliets_storage() -> (Arc<dyn Storage>, BareJid) {
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::default());
        let juliet = BareJid::new("juliet", "localhost").unwrap();
        assert!(storage
            .create_user(&juliet, Credentials::derive("pw", 4096))
            .await
            .unwrap());
        (storage, juliet)
    }

    #[actix_rt::test]
    async fn set_get_and_forget() {
        let (storage, juliet) = juliets_storage().await;
        let prefs = el("<exodus xmlns='exodus:prefs'><defaultnick>Jules</defaultnick></exodus>");
        let get = || {
            answer(
                storage.clone(),
                juliet.clone(),
                false,
                el("<exodus xmlns='exodus:prefs'/>"),
            )
        };
        let query = |inner: &str| format!("<query xmlns='jabber:iq:private'>{inner}</query>");
        assert_eq!(
            get().await.unwrap().unwrap().to_string(),
            query("<exodus xmlns='exodus:prefs'/>")
        );
        assert_eq!(answer(storage.clone(), juliet.clone(), true, prefs).await, Ok(None));
        assert_eq!(
            get().await.unwrap().unwrap().to_string(),
            query("<exodus xmlns='exodus:prefs'><defaultnick>Jules</defaultnick></exodus>")
        );
        let empty = el("<exodus xmlns='exodus:prefs'/>");
        assert_eq!(answer(storage.clone(), juliet.clone(), true, empty).await, Ok(None));
        assert_eq!(
            get().await.unwrap().unwrap().to_string(),
            query("<exodus xmlns='exodus:prefs'/>")
        );
    }

    #[actix_rt::test]
    async fn an_account_keeps_at_most_max_keys() {
        let (storage, juliet) = juliets_storage().await;
        let item = |i: usize| el(&format!("<p xmlns='urn:test:{i}'>{i}</p>"));
        for i in 0..MAX_KEYS {
            assert_eq!(answer(storage.clone(), juliet.clone(), true, item(i)).await, Ok(None));
        }
        let full = answer(storage.clone(), juliet.clone(), true, item(MAX_KEYS)).await;
        assert_eq!(full.unwrap_err().condition, StanzaCondition::PolicyViolation);
        // One already kept may still change, or go to make room.
        assert_eq!(answer(storage.clone(), juliet.clone(), true, item(0)).await, Ok(None));
        let forget = el("<p xmlns='urn:test:0'/>");
        assert_eq!(answer(storage.clone(), juliet.clone(), true, forget).await, Ok(None));
        assert_eq!(
            answer(storage.clone(), juliet.clone(), true, item(MAX_KEYS)).await,
            Ok(None)
        );
    }
}
