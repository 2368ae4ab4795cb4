//! XEP-0402 PEP Native Bookmarks are an account's one record of its
//! bookmarks: the items of its PEP node `urn:xmpp:bookmarks:1`, one per
//! room, the item id being the room's JID. XEP-0411 (XEP-0402's `#compat`
//! and `#compat-pep`) shows them to clients still on XEP-0048: their
//! `<storage xmlns='storage:bookmarks'/>`, as private XML (XEP-0049) or as
//! the item `current` of the PEP node `storage:bookmarks`, is generated
//! from the items when read, and a legacy set replaces the items: new and
//! changed rooms published, missing ones retracted with a notification.
//! As Prosody's mod_bookmarks, with four differences:
//! - a set of no rooms retracts each item (notified) rather than purging
//!   the node;
//! - a changed room keeps its XEP-0402 `<extensions/>`, which XEP-0048
//!   cannot carry (Prosody drops them);
//! - legacy bookmarks kept as private XML before (imported from another
//!   server) are the view while the account has no XEP-0402 node, and the
//!   first legacy set replaces them, rather than being converted at login;
//! - a change of the XEP-0402 items is not notified, as a legacy
//!   `<storage/>`, to sessions asking for `storage:bookmarks+notify`
//!   (Prosody's `legacy_broadcast`): legacy PEP clients read the view
//!   again at login.
//!
//! XEP-0048's `<url/>` bookmarks have no XEP-0402 form: a legacy set drops
//! them, as Prosody does.

use std::collections::{HashMap, HashSet};

use crate::error::{StanzaCondition, StanzaError};
use crate::iq_handler::{ready, IqFuture, IqResult};
use crate::jid::{BareJid, Jid};
use crate::ns;
use crate::router::Router;
use crate::xep::pubsub::{self, Field, NodeConfigPatch, PubsubError, Request};
use crate::xep::{pep, private};
use crate::xml::Element;

pub use crate::ns::BOOKMARKS2 as NS;

/// What legacy bookmarks are stored under as private XML.
pub const LEGACY_KEY: &str = "{storage:bookmarks}storage";
/// The one item of the legacy PEP node.
pub const LEGACY_ITEM: &str = "current";
/// XEP-0402's compatibility: private XML (XEP-0049) bookmarks are these.
pub const COMPAT: &str = "urn:xmpp:bookmarks:1#compat";
/// XEP-0402's compatibility: the XEP-0223 (PEP) legacy node is too.
pub const COMPAT_PEP: &str = "urn:xmpp:bookmarks:1#compat-pep";

/// The node's configuration as clients publish with it (XEP-0402's
/// publish-options, Prosody's `default_options`): a node a legacy set creates has it, and
/// Conversations' publish-options (these, with `notify_delete` and
/// `notify_retract`, already on by default) then match it.
pub fn node_defaults() -> NodeConfigPatch {
    NodeConfigPatch::default()
        .with(Field::PersistItems, "true")
        .with(Field::MaxItems, "max")
        .with(Field::SendLast, "never")
        .with(Field::AccessModel, "whitelist")
}

/// One room bookmarked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bookmark {
    pub room: BareJid,
    pub name: Option<String>,
    pub autojoin: bool,
    pub nick: Option<String>,
    pub password: Option<String>,
    /// XEP-0402 `<extensions/>`, which legacy bookmarks cannot carry.
    pub extensions: Option<Element>,
}

impl Bookmark {
    /// Equal in all XEP-0048 carries (extensions aside).
    fn same_legacy(&self, other: &Bookmark) -> bool {
        self.room == other.room
            && self.name == other.name
            && self.autojoin == other.autojoin
            && self.nick == other.nick
            && self.password == other.password
    }
}

/// Why legacy bookmarks cannot be taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BookmarkError {
    #[error("legacy bookmarks are a <storage xmlns='storage:bookmarks'/>")]
    NotStorage,
    #[error("a bookmark's jid must be a room's bare JID, not '{0}'")]
    BadRoom(String),
    /// More rooms than the node keeps (`[pep] max_items`).
    #[error("{0} bookmarks, more than the {1} an account keeps")]
    TooMany(usize, u32),
}

impl From<BookmarkError> for StanzaError {
    fn from(err: BookmarkError) -> StanzaError {
        let condition = match err {
            BookmarkError::NotStorage | BookmarkError::BadRoom(_) => StanzaCondition::BadRequest,
            BookmarkError::TooMany(..) => StanzaCondition::PolicyViolation,
        };
        StanzaError::with_text(condition, err.to_string())
    }
}

/// A boolean attribute, false unless `true` or `1` (XEP-0048's and
/// XEP-0402's `autojoin`, both `xs:boolean`).
fn truthy(value: Option<&str>) -> bool {
    value.and_then(pubsub::parse_bool).unwrap_or(false)
}

/// An attribute's value, unless empty.
fn attr_of(el: &Element, name: &str) -> Option<String> {
    el.attr(name).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// The text of `el`'s child `name` in `ns`, unless empty: an empty nick
/// or password is none.
fn child_text(el: &Element, name: &str, ns: &str) -> Option<String> {
    el.get_child(name, ns).map(Element::text).filter(|t| !t.is_empty())
}

fn room_of(jid: Option<&str>) -> Result<BareJid, BookmarkError> {
    let raw = jid.unwrap_or_default();
    match Jid::parse(raw) {
        Ok(j) if j.is_bare() => Ok(j.to_bare()),
        _ => Err(BookmarkError::BadRoom(raw.to_owned())),
    }
}

/// Appends `<name>text</name>` in `ns` if there is a text.
fn push_text(el: &mut Element, name: &str, ns: &str, text: Option<&str>) {
    if let Some(t) = text {
        el.push_child(Element::new(name, ns).with_text(t));
    }
}

/// The rooms of a legacy `<storage/>`, in order; a room listed twice is
/// what its last entry says, where it first came. `<url/>`s are dropped.
pub fn from_legacy(storage: &Element) -> Result<Vec<Bookmark>, BookmarkError> {
    if !storage.is("storage", ns::BOOKMARKS) {
        return Err(BookmarkError::NotStorage);
    }
    let mut out: Vec<Bookmark> = Vec::new();
    let mut at: HashMap<BareJid, usize> = HashMap::new();
    for c in storage.children().filter(|c| c.is("conference", ns::BOOKMARKS)) {
        let bookmark = Bookmark {
            room: room_of(c.attr("jid"))?,
            name: attr_of(c, "name"),
            autojoin: truthy(c.attr("autojoin")),
            nick: child_text(c, "nick", ns::BOOKMARKS),
            password: child_text(c, "password", ns::BOOKMARKS),
            extensions: None,
        };
        match at.get(&bookmark.room) {
            Some(&i) => out[i] = bookmark,
            None => {
                at.insert(bookmark.room.clone(), out.len());
                out.push(bookmark);
            }
        }
    }
    Ok(out)
}

/// The legacy `<storage/>` of `bookmarks`: `autojoin` always written
/// (XEP-0048 clients differ on its default), extensions left out.
pub fn to_legacy<'a>(bookmarks: impl IntoIterator<Item = &'a Bookmark>) -> Element {
    let mut storage = Element::new("storage", ns::BOOKMARKS);
    for b in bookmarks {
        let mut c = Element::new("conference", ns::BOOKMARKS)
            .with_attr("jid", b.room.as_str())
            .with_attr("autojoin", if b.autojoin { "true" } else { "false" });
        if let Some(name) = &b.name {
            c.set_attr("name", name.as_str());
        }
        push_text(&mut c, "nick", ns::BOOKMARKS, b.nick.as_deref());
        push_text(&mut c, "password", ns::BOOKMARKS, b.password.as_deref());
        storage.push_child(c);
    }
    storage
}

/// The bookmark an XEP-0402 item is; `None` for anything else published
/// there (not shown in the legacy views, and retracted by a legacy set).
pub fn from_item(id: &str, payload: &Element) -> Option<Bookmark> {
    if !payload.is("conference", NS) {
        return None;
    }
    Some(Bookmark {
        room: room_of(Some(id)).ok()?,
        name: attr_of(payload, "name"),
        autojoin: truthy(payload.attr("autojoin")),
        nick: child_text(payload, "nick", NS),
        password: child_text(payload, "password", NS),
        extensions: payload.get_child("extensions", NS).cloned(),
    })
}

/// An XEP-0402 item's payload (its id is the room's JID): `autojoin` only
/// when true, its default being false.
pub fn to_payload(b: &Bookmark) -> Element {
    let mut c = Element::new("conference", NS);
    if let Some(name) = &b.name {
        c.set_attr("name", name.as_str());
    }
    if b.autojoin {
        c.set_attr("autojoin", "true");
    }
    push_text(&mut c, "nick", NS, b.nick.as_deref());
    push_text(&mut c, "password", NS, b.password.as_deref());
    if let Some(extensions) = &b.extensions {
        c.push_child(extensions.clone());
    }
    c
}

/// The legacy view of the XEP-0402 items `current` (id, payload).
pub fn view(current: &[(String, Element)]) -> Element {
    let bookmarks: Vec<Bookmark> = current.iter().filter_map(|(id, p)| from_item(id, p)).collect();
    to_legacy(&bookmarks)
}

/// What a legacy set changes in the XEP-0402 items.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// (id, payload), in the order the legacy set lists them.
    pub publish: Vec<(String, Element)>,
    pub retract: Vec<String>,
}

/// The changes that make the items `current` (id, payload) the rooms
/// `wanted`: a room unchanged stays as it is (not notified again), a
/// changed one is republished under its id with its extensions, a new
/// one published under its JID; every other item is retracted.
pub fn plan(current: &[(String, Element)], wanted: Vec<Bookmark>) -> Changes {
    let existing: HashMap<BareJid, (&str, Bookmark)> = current
        .iter()
        .filter_map(|(id, p)| Some((id.as_str(), from_item(id, p)?)))
        .map(|(id, b)| (b.room.clone(), (id, b)))
        .collect();
    let mut changes = Changes::default();
    let mut kept: HashSet<String> = HashSet::new();
    for mut b in wanted {
        let id = match existing.get(&b.room) {
            Some((id, old)) if old.same_legacy(&b) => {
                kept.insert((*id).to_owned());
                continue;
            }
            Some((id, old)) => {
                b.extensions = old.extensions.clone();
                (*id).to_owned()
            }
            None => b.room.as_str().to_owned(),
        };
        kept.insert(id.clone());
        changes.publish.push((id, to_payload(&b)));
    }
    changes.retract = current
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !kept.contains(id.as_str()))
        .cloned()
        .collect();
    changes
}

/// `owner`'s XEP-0402 items, oldest first; `None` without the node.
async fn items(router: &Router, owner: &BareJid) -> Result<Option<Vec<(String, Element)>>, StanzaError> {
    match pep::items_as_server(router, owner, NS).await {
        Ok(items) => Ok(Some(items)),
        Err(e) if e.condition == StanzaCondition::ItemNotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The legacy `<storage/>` of `owner`'s bookmarks.
async fn legacy_view(router: &Router, owner: &BareJid) -> Result<Element, StanzaError> {
    if let Some(current) = items(router, owner).await? {
        return Ok(view(&current));
    }
    // No XEP-0402 node yet: what a legacy client kept as private XML
    // before (or what was imported), if anything.
    let kept = private::read(&**router.storage(), owner, LEGACY_KEY).await?;
    Ok(kept.unwrap_or_else(|| Element::new("storage", ns::BOOKMARKS)))
}

/// Makes `owner`'s XEP-0402 items the rooms of the `legacy` storage, and
/// forgets legacy bookmarks kept as private XML: this set replaces them.
/// Each change is a PEP operation of its own, notified as it is done.
async fn replace(router: &Router, owner: &BareJid, legacy: &Element) -> Result<(), StanzaError> {
    let wanted = from_legacy(legacy)?;
    let cap = router.presence().pep_settings().max_items;
    if wanted.len() > cap as usize {
        return Err(BookmarkError::TooMany(wanted.len(), cap).into());
    }
    let current = items(router, owner).await?.unwrap_or_default();
    let changes = plan(&current, wanted);
    for (id, payload) in changes.publish {
        pep::publish_as_server(router, owner, NS, Some(id), payload, Some(node_defaults())).await?;
    }
    for id in changes.retract {
        if let Err(e) = pep::retract_as_server(router, owner, NS, &id).await {
            // Not found: retracted meanwhile, by another session, as wanted.
            if e.condition != StanzaCondition::ItemNotFound {
                return Err(e);
            }
        }
    }
    // Read first: most accounts have none, and a read costs no write.
    let storage = router.storage();
    if storage.private_xml(owner, LEGACY_KEY).await?.is_some() {
        storage.set_private_xml(owner, LEGACY_KEY, None).await?;
    }
    Ok(())
}

/// The owner's get or set of `storage:bookmarks` as private XML.
pub fn private_xml(router: Router, owner: BareJid, set: bool, storage: Element) -> IqFuture {
    Box::pin(private_answer(router, owner, set, storage))
}

async fn private_answer(router: Router, owner: BareJid, set: bool, storage: Element) -> IqResult {
    if set {
        replace(&router, &owner, &storage).await?;
        return Ok(None);
    }
    Ok(Some(private::query_of(legacy_view(&router, &owner).await?)))
}

/// The owner's request on the legacy PEP node `storage:bookmarks`, if this
/// view answers it: an items get (any ids or `max_items` asked aside), or
/// a publish (its item id and publish-options ignored, as in Prosody).
/// Anything else goes to the node as to any other.
pub fn legacy_pep(router: &Router, owner: &BareJid, request: &Request) -> Option<IqFuture> {
    let published = match request {
        Request::Items { node, .. } if node == ns::BOOKMARKS => None,
        Request::Publish { node, payload, .. } if node == ns::BOOKMARKS => Some(payload),
        _ => return None,
    };
    let (router, owner) = (router.clone(), owner.clone());
    let answer: IqFuture = match published {
        None => Box::pin(legacy_items(router, owner)),
        Some(storage) if storage.is("storage", ns::BOOKMARKS) => {
            Box::pin(legacy_publish(router, owner, storage.clone()))
        }
        Some(_) => ready(Err(PubsubError::InvalidPayload.into())),
    };
    Some(answer)
}

/// The legacy node's one item, generated.
async fn legacy_items(router: Router, owner: BareJid) -> IqResult {
    let item = pubsub::item(pubsub::NS, LEGACY_ITEM, Some(legacy_view(&router, &owner).await?));
    let items = Element::new("items", pubsub::NS)
        .with_attr("node", ns::BOOKMARKS)
        .with_child(item);
    Ok(Some(pubsub::wrap(pubsub::NS, items)))
}

/// A publish to the legacy node: the result names the one item.
async fn legacy_publish(router: Router, owner: BareJid, storage: Element) -> IqResult {
    replace(&router, &owner, &storage).await?;
    let publish = Element::new("publish", pubsub::NS)
        .with_attr("node", ns::BOOKMARKS)
        .with_child(pubsub::item(pubsub::NS, LEGACY_ITEM, None));
    Ok(Some(pubsub::wrap(pubsub::NS, publish)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{parse_element, NsBindings, ParseLimits};

    fn el(xml: &str) -> Element {
        parse_element(xml.as_bytes(), &NsBindings::empty(), &ParseLimits::default()).unwrap()
    }

    fn room(jid: &str) -> BareJid {
        BareJid::parse(jid).unwrap()
    }

    const LEGACY: &str = "<storage xmlns='storage:bookmarks'>\
        <conference jid='council@conference.localhost' autojoin='true' name='Council of Verona'>\
        <nick>Jules</nick><password>montague</password></conference>\
        <conference jid='balcony@conference.localhost' autojoin='false'/></storage>";

    fn council() -> Bookmark {
        Bookmark {
            room: room("council@conference.localhost"),
            name: Some("Council of Verona".into()),
            autojoin: true,
            nick: Some("Jules".into()),
            password: Some("montague".into()),
            extensions: None,
        }
    }

    fn balcony() -> Bookmark {
        Bookmark {
            room: room("balcony@conference.localhost"),
            name: None,
            autojoin: false,
            nick: None,
            password: None,
            extensions: None,
        }
    }

    #[test]
    fn legacy_storage_round_trips() {
        let bookmarks = from_legacy(&el(LEGACY)).unwrap();
        assert_eq!(bookmarks, [council(), balcony()]);
        assert_eq!(to_legacy(&bookmarks).to_string(), LEGACY);
    }

    #[test]
    fn items_round_trip_with_their_extensions() {
        let payload = "<conference xmlns='urn:xmpp:bookmarks:1' name='Council of Verona' autojoin='true'>\
                       <nick>Jules</nick><password>montague</password>\
                       <extensions><state xmlns='http://myclient.example/bookmark/state' minimized='true'/>\
                       </extensions></conference>";
        let b = from_item("council@conference.localhost", &el(payload)).unwrap();
        assert_eq!(
            b.extensions.as_ref().map(Element::to_string).as_deref(),
            Some(
                "<extensions xmlns='urn:xmpp:bookmarks:1'>\
                 <state xmlns='http://myclient.example/bookmark/state' minimized='true'/></extensions>"
            )
        );
        assert!(b.same_legacy(&council()));
        assert_eq!(to_payload(&b).to_string(), payload);
        // The default, false, is not written.
        assert_eq!(
            to_payload(&balcony()).to_string(),
            "<conference xmlns='urn:xmpp:bookmarks:1'/>"
        );
        // Not a bookmark: another payload, or an id that is not a room's.
        assert_eq!(
            from_item("council@conference.localhost", &el("<x xmlns='urn:example'/>")),
            None
        );
        assert_eq!(
            from_item(
                "council@conference.localhost/Jules",
                &el("<conference xmlns='urn:xmpp:bookmarks:1'/>")
            ),
            None
        );
    }

    #[test]
    fn autojoin_names_urls_and_repeats() {
        let storage = el("<storage xmlns='storage:bookmarks'>\
             <conference jid='a@conference.localhost' autojoin='1' name=''><nick/></conference>\
             <url name='Verona' url='https://verona.example/'/>\
             <conference jid='b@conference.localhost' autojoin='yes'/>\
             <conference jid='A@conference.localhost' name='Again'/></storage>");
        let bookmarks = from_legacy(&storage).unwrap();
        // `1` is true, anything but `true` and `1` false; an empty name or
        // nick is none; the URL is gone; a repeated room (JIDs compare
        // normalised) is its last entry, where it first came.
        assert_eq!(
            to_legacy(&bookmarks).to_string(),
            "<storage xmlns='storage:bookmarks'>\
             <conference jid='a@conference.localhost' autojoin='false' name='Again'/>\
             <conference jid='b@conference.localhost' autojoin='false'/></storage>"
        );
        let first = from_legacy(&el("<storage xmlns='storage:bookmarks'>\
             <conference jid='a@conference.localhost' autojoin='1'/></storage>"))
        .unwrap();
        assert!(first[0].autojoin);
        assert_eq!(first[0].name, None);
    }

    #[test]
    fn bad_legacy_storage_is_refused() {
        let refused = |xml: &str| from_legacy(&el(xml)).unwrap_err();
        assert_eq!(refused("<storage xmlns='urn:example'/>"), BookmarkError::NotStorage);
        assert_eq!(
            refused("<storage xmlns='storage:bookmarks'><conference/></storage>"),
            BookmarkError::BadRoom(String::new())
        );
        let full = "<storage xmlns='storage:bookmarks'><conference jid='a@conference.localhost/Jules'/></storage>";
        assert_eq!(
            refused(full),
            BookmarkError::BadRoom("a@conference.localhost/Jules".into())
        );
        let err = StanzaError::from(refused(full));
        assert_eq!(err.condition, StanzaCondition::BadRequest);
        assert_eq!(
            err.text.as_deref(),
            Some("a bookmark's jid must be a room's bare JID, not 'a@conference.localhost/Jules'")
        );
        let too_many = StanzaError::from(BookmarkError::TooMany(300, 256));
        assert_eq!(too_many.condition, StanzaCondition::PolicyViolation);
    }

    #[test]
    fn a_legacy_set_publishes_what_changed_and_retracts_the_rest() {
        let item = |b: &Bookmark| (b.room.as_str().to_owned(), to_payload(b));
        let with_extensions = Bookmark {
            extensions: Some(Element::new("extensions", NS).with_child(Element::new("x", "urn:example"))),
            ..balcony()
        };
        let orchard = Bookmark {
            room: room("orchard@conference.localhost"),
            ..balcony()
        };
        let current = vec![
            item(&council()),
            item(&with_extensions),
            item(&orchard),
            ("junk".to_owned(), el("<x xmlns='urn:example'/>")),
        ];
        assert_eq!(view(&current), to_legacy(&[council(), balcony(), orchard.clone()]));

        let renamed = Bookmark {
            name: Some("The balcony".into()),
            ..balcony()
        };
        let verona = Bookmark {
            room: room("verona@conference.localhost"),
            autojoin: true,
            ..balcony()
        };
        let changes = plan(&current, vec![orchard.clone(), renamed.clone(), verona.clone()]);
        // Orchard is unchanged: not published again. The balcony keeps its
        // extensions; council and the junk go.
        let kept = Bookmark {
            extensions: with_extensions.extensions.clone(),
            ..renamed
        };
        assert_eq!(
            changes,
            Changes {
                publish: vec![item(&kept), item(&verona)],
                retract: vec!["council@conference.localhost".into(), "junk".into()],
            }
        );
        // Nothing: everything goes; the same: nothing changes.
        assert_eq!(plan(&current, Vec::new()).retract.len(), 4);
        let same = plan(&current[..3], vec![council(), balcony(), orchard]);
        assert_eq!(same, Changes::default());
    }

    #[test]
    fn an_item_published_under_another_spelling_is_republished_under_it() {
        let payload = el("<conference xmlns='urn:xmpp:bookmarks:1' name='Old'/>");
        let current = vec![("Council@Conference.Localhost".to_owned(), payload)];
        let changes = plan(&current, vec![council()]);
        assert_eq!(
            changes.publish,
            vec![("Council@Conference.Localhost".to_owned(), to_payload(&council()))]
        );
        assert!(changes.retract.is_empty());
    }

    #[test]
    fn the_node_defaults_are_xep_0402s() {
        let config = node_defaults().apply(&pubsub::NodeConfig::default(), 256).unwrap();
        assert_eq!(config.access_model, pubsub::AccessModel::Whitelist);
        assert_eq!(config.max_items, pubsub::MaxItems::Max);
        assert_eq!(config.send_last, pubsub::SendLast::Never);
        assert!(config.persist_items && config.notify_retract && config.notify_delete);
    }
}
