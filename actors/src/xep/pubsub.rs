//! XEP-0060 Publish-Subscribe, the subset PEP (XEP-0163) needs: typed
//! requests (publish with publish-options, retract, items, create,
//! delete, purge, configure, default, affiliations), a node's
//! configuration and its data form, and the errors with their XEP-0060
//! application conditions. Explicit subscriptions are not offered: in PEP
//! the owner's presence subscribers are its subscribers.

use crate::error::{StanzaCondition, StanzaError};
use crate::jid::BareJid;
use crate::xep::forms::{self, Submitted};
use crate::xml::Element;

pub use crate::ns::{PUBSUB as NS, PUBSUB_ERRORS as ERRORS, PUBSUB_EVENT as EVENT, PUBSUB_OWNER as OWNER};

/// The FORM_TYPE of a node's configuration.
pub const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
/// What Converse sends as the configuration's FORM_TYPE (`api.js`
/// `config.set`); taken as [`NODE_CONFIG`].
pub const NODE_CONFIG_CONVERSE: &str = "http://jabber.org/protocol/pubsub#nodeconfig";
/// The FORM_TYPE of publish-options (XEP-0060 §7.1.5).
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";

/// Who may see a node's items and be notified of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessModel {
    Open,
    /// The owner's presence subscribers (PEP's default).
    Presence,
    /// Contacts in one of the node's roster groups.
    Roster,
    /// JIDs the owner made members.
    Whitelist,
}

impl AccessModel {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Whitelist => "whitelist",
        }
    }

    pub fn parse(s: &str) -> Option<AccessModel> {
        Some(match s {
            "open" => AccessModel::Open,
            "presence" => AccessModel::Presence,
            "roster" => AccessModel::Roster,
            "whitelist" => AccessModel::Whitelist,
            _ => return None,
        })
    }
}

/// `pubsub#max_items`, kept as written: `max` stays `max` (and matches a
/// node created with `max`), resolved to the server's cap when used, as
/// Prosody's `tonumber_max_items` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxItems {
    Count(u32),
    Max,
}

impl MaxItems {
    /// `1`..`cap`, or `max`.
    pub fn parse(s: &str, cap: u32) -> Option<MaxItems> {
        match s.trim() {
            "max" => Some(MaxItems::Max),
            n => n
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=cap).contains(n))
                .map(MaxItems::Count),
        }
    }

    /// How many items the node keeps.
    pub fn resolve(self, cap: u32) -> u32 {
        match self {
            MaxItems::Count(n) => n.min(cap),
            MaxItems::Max => cap,
        }
    }
}

impl std::fmt::Display for MaxItems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxItems::Count(n) => write!(f, "{n}"),
            MaxItems::Max => f.write_str("max"),
        }
    }
}

/// `pubsub#send_last_published_item`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendLast {
    Never,
    OnSub,
    /// The last item goes to each follower that comes online interested
    /// (`+notify`).
    OnSubAndPresence,
}

impl SendLast {
    pub fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }

    pub fn parse(s: &str) -> Option<SendLast> {
        Some(match s {
            "never" => SendLast::Never,
            "on_sub" => SendLast::OnSub,
            "on_sub_and_presence" => SendLast::OnSubAndPresence,
            _ => return None,
        })
    }
}

/// A node's configuration: the options PEP clients use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub access_model: AccessModel,
    /// For [`AccessModel::Roster`]: the owner's roster groups admitted.
    pub roster_groups: Vec<String>,
    pub max_items: MaxItems,
    /// Items are stored (and retrievable, and sent as last items); when
    /// not, they are only notified.
    pub persist_items: bool,
    pub send_last: SendLast,
    pub notify_retract: bool,
    pub notify_delete: bool,
    pub deliver_notifications: bool,
    pub deliver_payloads: bool,
    pub title: Option<String>,
    /// `pubsub#type`: the payload's namespace, usually.
    pub kind: Option<String>,
}

/// Prosody's PEP defaults (`mod_pep.lua` `get_pep_service`, and its node
/// form's defaults for the notification options).
impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            access_model: AccessModel::Presence,
            roster_groups: Vec::new(),
            max_items: MaxItems::Count(1),
            persist_items: true,
            send_last: SendLast::OnSubAndPresence,
            notify_retract: true,
            notify_delete: true,
            deliver_notifications: true,
            deliver_payloads: true,
            title: None,
            kind: None,
        }
    }
}

/// One configuration option, as its form field names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    AccessModel,
    RosterGroups,
    MaxItems,
    PersistItems,
    SendLast,
    NotifyRetract,
    NotifyDelete,
    DeliverNotifications,
    DeliverPayloads,
    Title,
    Type,
}

impl Field {
    pub const ALL: &'static [Field] = &[
        Field::AccessModel,
        Field::RosterGroups,
        Field::MaxItems,
        Field::PersistItems,
        Field::SendLast,
        Field::NotifyRetract,
        Field::NotifyDelete,
        Field::DeliverNotifications,
        Field::DeliverPayloads,
        Field::Title,
        Field::Type,
    ];

    /// The field's `var`.
    pub fn var(self) -> &'static str {
        match self {
            Field::AccessModel => "pubsub#access_model",
            Field::RosterGroups => "pubsub#roster_groups_allowed",
            Field::MaxItems => "pubsub#max_items",
            Field::PersistItems => "pubsub#persist_items",
            Field::SendLast => "pubsub#send_last_published_item",
            Field::NotifyRetract => "pubsub#notify_retract",
            Field::NotifyDelete => "pubsub#notify_delete",
            Field::DeliverNotifications => "pubsub#deliver_notifications",
            Field::DeliverPayloads => "pubsub#deliver_payloads",
            Field::Title => "pubsub#title",
            Field::Type => "pubsub#type",
        }
    }

    /// The field a `var` names. Converse strips the `pubsub#` prefix from
    /// the form it read and sends it back so (`parsers.js`): both are taken.
    pub fn from_var(var: &str) -> Option<Field> {
        let var = var.strip_prefix("pubsub#").unwrap_or(var);
        Field::ALL.iter().copied().find(|f| &f.var()["pubsub#".len()..] == var)
    }

    /// Its XEP-0004 type.
    fn kind(self) -> &'static str {
        match self {
            Field::AccessModel | Field::SendLast => "list-single",
            Field::RosterGroups => "list-multi",
            Field::MaxItems | Field::Title | Field::Type => "text-single",
            _ => "boolean",
        }
    }

    /// The choices of a list-single field.
    fn options(self) -> &'static [&'static str] {
        match self {
            Field::AccessModel => &["open", "presence", "roster", "whitelist"],
            Field::SendLast => &["never", "on_sub", "on_sub_and_presence"],
            _ => &[],
        }
    }
}

/// XEP-0004 §3.3 booleans (`xs:boolean`).
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

fn bool_value(b: bool) -> String {
    String::from(if b { "1" } else { "0" })
}

impl NodeConfig {
    /// How many items a publish leaves stored under `cap` (`[pep]
    /// max_items`): `None` when the node persists none.
    pub fn kept(&self, cap: u32) -> Option<u32> {
        self.persist_items.then(|| self.max_items.resolve(cap))
    }

    /// The values of `field`, as its form field carries them.
    pub fn get(&self, field: Field) -> Vec<String> {
        let one = |s: String| vec![s];
        match field {
            Field::AccessModel => one(self.access_model.as_str().to_owned()),
            Field::RosterGroups => self.roster_groups.clone(),
            Field::MaxItems => one(self.max_items.to_string()),
            Field::PersistItems => one(bool_value(self.persist_items)),
            Field::SendLast => one(self.send_last.as_str().to_owned()),
            Field::NotifyRetract => one(bool_value(self.notify_retract)),
            Field::NotifyDelete => one(bool_value(self.notify_delete)),
            Field::DeliverNotifications => one(bool_value(self.deliver_notifications)),
            Field::DeliverPayloads => one(bool_value(self.deliver_payloads)),
            Field::Title => self.title.iter().cloned().collect(),
            Field::Type => self.kind.iter().cloned().collect(),
        }
    }

    /// Sets `field` from a form's `values`; `cap` bounds `max_items`.
    pub fn set(&mut self, field: Field, values: &[String], cap: u32) -> Result<(), PubsubError> {
        let invalid = || PubsubError::NotAcceptable(format!("{} cannot be {}", field.var(), values.join(",")));
        if field == Field::RosterGroups {
            self.roster_groups = values.iter().filter(|v| !v.is_empty()).cloned().collect();
            return Ok(());
        }
        let value = forms::single(values).map_err(|_| invalid())?;
        let text = |v: Option<&str>| v.map(str::to_owned);
        let boolean = |v: Option<&str>| v.and_then(parse_bool).ok_or_else(invalid);
        match field {
            Field::AccessModel => self.access_model = value.and_then(AccessModel::parse).ok_or_else(invalid)?,
            Field::MaxItems => self.max_items = value.and_then(|v| MaxItems::parse(v, cap)).ok_or_else(invalid)?,
            Field::SendLast => self.send_last = value.and_then(SendLast::parse).ok_or_else(invalid)?,
            Field::PersistItems => self.persist_items = boolean(value)?,
            Field::NotifyRetract => self.notify_retract = boolean(value)?,
            Field::NotifyDelete => self.notify_delete = boolean(value)?,
            Field::DeliverNotifications => self.deliver_notifications = boolean(value)?,
            Field::DeliverPayloads => self.deliver_payloads = boolean(value)?,
            Field::Title => self.title = text(value),
            Field::Type => self.kind = text(value),
            Field::RosterGroups => {}
        }
        Ok(())
    }

    /// The configuration as a form to fill in (`type='form'`).
    pub fn to_form(&self) -> Element {
        self.form(true)
    }

    /// The configuration submitted (`type='submit'`, values only), as
    /// XEP-0227 files carry it (Prosody's `mod_storage_xep0227`).
    pub fn to_submitted(&self) -> Element {
        let mut x = self.form(false);
        x.set_attr("type", "submit");
        x
    }

    /// Every field with its values, and with its choices if `options`.
    fn form(&self, options: bool) -> Element {
        forms::form(
            NODE_CONFIG,
            Field::ALL.iter().map(|&f| {
                let mut el = forms::field(f.var(), f.kind());
                for value in self.get(f) {
                    el.push_child(Element::new("value", forms::NS).with_text(value));
                }
                let choices: &[&str] = if options { f.options() } else { &[] };
                for option in choices {
                    let value = Element::new("value", forms::NS).with_text(*option);
                    el.push_child(Element::new("option", forms::NS).with_child(value));
                }
                el
            }),
        )
    }

    /// A configuration another server submitted (a XEP-0227 file): the
    /// defaults, with each field that has a value set from it; `cap`
    /// bounds `max_items`. Prosody writes every field of its form, unset
    /// ones without a value, and some Shoal has no option for
    /// (`pubsub#description`, `#publish_model`, `#notification_type`):
    /// those are passed over. A value Shoal cannot take is refused.
    pub fn from_submitted(x: &Element, cap: u32) -> Result<NodeConfig, PubsubError> {
        let mut patch = NodeConfigPatch::from_form(x, CONFIG_TYPES)?;
        patch.unknown.clear();
        patch.fields.retain(|(_, values)| !values.is_empty());
        patch.apply(&NodeConfig::default(), cap)
    }
}

/// Options a form asks for: each known field with its values, in the
/// order given, and the vars no node option has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeConfigPatch {
    pub fields: Vec<(Field, Vec<String>)>,
    pub unknown: Vec<String>,
}

impl NodeConfigPatch {
    /// Reads a submitted form of one of the types `accepted` (a form
    /// without FORM_TYPE is taken for what it came in).
    pub fn from_form(x: &Element, accepted: &[&str]) -> Result<NodeConfigPatch, PubsubError> {
        let form = Submitted::parse(x).map_err(PubsubError::Stanza)?;
        if form.form_type().is_some_and(|t| !accepted.contains(&t)) {
            return Err(PubsubError::BadRequest("the form's FORM_TYPE is not the expected one"));
        }
        let mut patch = NodeConfigPatch::default();
        for (var, values) in form.fields() {
            match Field::from_var(var) {
                Some(f) => patch.fields.push((f, values.to_vec())),
                None => patch.unknown.push(var.to_owned()),
            }
        }
        Ok(patch)
    }

    /// A patch setting `field` to `value` (for the server's own publishes).
    pub fn with(mut self, field: Field, value: &str) -> Self {
        self.fields.push((field, vec![value.to_owned()]));
        self
    }

    /// `config` with these options set: for a new node, or an owner's
    /// configuration. An unknown field or a bad value is refused.
    pub fn apply(&self, config: &NodeConfig, cap: u32) -> Result<NodeConfig, PubsubError> {
        if let Some(var) = self.unknown.first() {
            return Err(PubsubError::NotAcceptable(format!("{var} is not a node option")));
        }
        let mut out = config.clone();
        for (field, values) in &self.fields {
            out.set(*field, values, cap)?;
        }
        Ok(out)
    }

    /// Publish-options against an existing node (XEP-0060 §7.1.5): each
    /// must be what the node has. Since XEP-0060 1.13.6 a service "MUST
    /// reject publications with unknown fields" too.
    pub fn check(&self, config: &NodeConfig, cap: u32) -> Result<(), PubsubError> {
        if let Some(var) = self.unknown.first() {
            return Err(PubsubError::Precondition(format!("{var} is not a node option")));
        }
        for (field, values) in &self.fields {
            let mut wanted = config.clone();
            wanted.set(*field, values, cap)?;
            let have = config.get(*field);
            if wanted.get(*field) != have {
                return Err(PubsubError::Precondition(format!(
                    "{} is {}",
                    field.var(),
                    have.join(",")
                )));
            }
        }
        Ok(())
    }
}

/// An owner's change of one JID's affiliation with a node: members and
/// publishers are the whitelist (PEP has one publisher, the owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Affiliation {
    Member,
    None,
}

/// A pubsub request to an account (`<pubsub/>` or `<pubsub xmlns='…#owner'/>`).
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Publish {
        node: String,
        item_id: Option<String>,
        payload: Element,
        options: Option<NodeConfigPatch>,
    },
    Retract {
        node: String,
        item_id: String,
        /// `notify='true'`: notified whatever `notify_retract` says.
        notify: bool,
    },
    Items {
        node: String,
        max_items: Option<u32>,
        ids: Vec<String>,
    },
    Create {
        node: String,
        config: Option<NodeConfigPatch>,
    },
    Delete {
        node: String,
    },
    Purge {
        node: String,
    },
    ConfigureGet {
        node: String,
    },
    /// `None`: a cancelled form, which changes nothing.
    ConfigureSet {
        node: String,
        config: Option<NodeConfigPatch>,
    },
    Default,
    AffiliationsGet {
        node: String,
    },
    AffiliationsSet {
        node: String,
        changes: Vec<(BareJid, Affiliation)>,
    },
}

impl Request {
    /// True when only the account itself may ask.
    pub fn needs_owner(&self) -> bool {
        !matches!(self, Request::Items { .. } | Request::Default)
    }

    /// True for a request that stores something.
    pub fn is_publish(&self) -> bool {
        matches!(self, Request::Publish { .. })
    }
}

/// What went wrong, as XEP-0060 §§7-8 answer it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PubsubError {
    /// Another account asked for the owner's operation.
    Forbidden,
    NodeIdRequired,
    ItemRequired,
    /// Not exactly one payload element.
    InvalidPayload,
    PayloadTooBig,
    MaxNodesExceeded,
    /// Too many operations wait for this account's PEP.
    Busy,
    /// Too many publishes too fast.
    RateLimited,
    /// Publish-options the node does not have: the text says which.
    Precondition(String),
    /// A configuration value or field that cannot be.
    NotAcceptable(String),
    PresenceSubscriptionRequired,
    NotInRosterGroup,
    /// A whitelist node, and the asker is not on it.
    ClosedNode,
    ItemNotFound,
    /// `create` of a node that exists.
    NodeExists,
    /// A XEP-0060 feature not offered (explicit subscriptions).
    Unsupported(&'static str),
    BadRequest(&'static str),
    Stanza(StanzaError),
}

impl From<PubsubError> for StanzaError {
    fn from(err: PubsubError) -> StanzaError {
        use StanzaCondition as C;
        let app = |name: &str| Element::new(name, ERRORS);
        match err {
            PubsubError::Forbidden => StanzaError::new(C::Forbidden),
            PubsubError::NodeIdRequired => StanzaError::new(C::BadRequest).with_app(app("nodeid-required")),
            PubsubError::ItemRequired => StanzaError::new(C::BadRequest).with_app(app("item-required")),
            PubsubError::InvalidPayload => StanzaError::new(C::BadRequest).with_app(app("invalid-payload")),
            PubsubError::PayloadTooBig => StanzaError::new(C::NotAcceptable).with_app(app("payload-too-big")),
            PubsubError::MaxNodesExceeded => StanzaError::new(C::NotAllowed).with_app(app("max-nodes-exceeded")),
            PubsubError::RateLimited => StanzaError::with_text(C::ResourceConstraint, "publishing too fast"),
            PubsubError::Busy => StanzaError::with_text(C::ResourceConstraint, "too many requests waiting"),
            PubsubError::Precondition(text) => {
                StanzaError::with_text(C::Conflict, text).with_app(app("precondition-not-met"))
            }
            PubsubError::NotAcceptable(text) => StanzaError::with_text(C::NotAcceptable, text),
            PubsubError::PresenceSubscriptionRequired => {
                StanzaError::new(C::NotAuthorized).with_app(app("presence-subscription-required"))
            }
            PubsubError::NotInRosterGroup => StanzaError::new(C::NotAuthorized).with_app(app("not-in-roster-group")),
            PubsubError::ClosedNode => StanzaError::new(C::NotAllowed).with_app(app("closed-node")),
            PubsubError::ItemNotFound => StanzaError::new(C::ItemNotFound),
            PubsubError::NodeExists => StanzaError::new(C::Conflict),
            PubsubError::Unsupported(feature) => {
                StanzaError::new(C::FeatureNotImplemented).with_app(app("unsupported").with_attr("feature", feature))
            }
            PubsubError::BadRequest(text) => StanzaError::with_text(C::BadRequest, text),
            PubsubError::Stanza(err) => err,
        }
    }
}

/// The `node` attribute, which every request but `default` needs.
fn node_of(el: &Element) -> Result<String, PubsubError> {
    match el.attr("node") {
        Some(n) if !n.is_empty() => Ok(n.to_owned()),
        _ => Err(PubsubError::NodeIdRequired),
    }
}

/// The form inside `<configure/>` or `<publish-options/>`, if any.
fn form_in(el: Option<&Element>) -> Option<&Element> {
    el.and_then(|e| e.get_child("x", forms::NS))
}

/// The configuration forms accepted, Converse's FORM_TYPE included.
const CONFIG_TYPES: &[&str] = &[NODE_CONFIG, NODE_CONFIG_CONVERSE];

/// Reads a pubsub request (`set`: an IQ set, else a get).
pub fn parse(payload: &Element, set: bool) -> Result<Request, PubsubError> {
    let owner = match payload.ns() {
        NS => false,
        OWNER => true,
        _ => return Err(PubsubError::BadRequest("not a pubsub request")),
    };
    if payload.name() != "pubsub" {
        return Err(PubsubError::BadRequest("not a pubsub request"));
    }
    let ns = payload.ns();
    let Some(first) = payload.children().next() else {
        return Err(PubsubError::BadRequest("an empty pubsub request"));
    };
    let sibling = |name: &str| payload.get_child(name, ns);
    match (owner, set, first.name()) {
        (false, true, "publish") => parse_publish(first, sibling("publish-options")),
        (false, true, "retract") => {
            let node = node_of(first)?;
            let item_id = first
                .get_child("item", ns)
                .and_then(|i| i.attr("id"))
                .filter(|id| !id.is_empty())
                .ok_or(PubsubError::ItemRequired)?
                .to_owned();
            let notify = first.attr("notify").and_then(parse_bool).unwrap_or(false);
            Ok(Request::Retract { node, item_id, notify })
        }
        (false, true, "create") => {
            let node = node_of(first)?;
            let config = form_in(sibling("configure"))
                .map(|x| NodeConfigPatch::from_form(x, CONFIG_TYPES))
                .transpose()?;
            Ok(Request::Create { node, config })
        }
        (false, false, "items") => {
            let node = node_of(first)?;
            let max_items = match first.attr("max_items") {
                None => None,
                Some(m) => Some(
                    m.parse::<u32>()
                        .map_err(|_| PubsubError::BadRequest("max_items is not a number"))?,
                ),
            };
            let ids = first
                .children()
                .filter(|c| c.is("item", ns))
                .filter_map(|c| c.attr("id"))
                .map(str::to_owned)
                .collect();
            Ok(Request::Items { node, max_items, ids })
        }
        (_, _, "subscribe" | "unsubscribe" | "subscriptions" | "options") => Err(PubsubError::Unsupported("subscribe")),
        (false, _, "affiliations") => Err(PubsubError::Unsupported("retrieve-affiliations")),
        // Owner requests; a configure in plain pubsub is Converse's
        // (`api.js` `config.get` and `config.set`).
        (_, false, "configure") => Ok(Request::ConfigureGet { node: node_of(first)? }),
        (_, true, "configure") => {
            let node = node_of(first)?;
            let x = form_in(Some(first)).ok_or(PubsubError::BadRequest("configure without a form"))?;
            if x.attr("type") == Some("cancel") {
                return Ok(Request::ConfigureSet { node, config: None });
            }
            let config = Some(NodeConfigPatch::from_form(x, CONFIG_TYPES)?);
            Ok(Request::ConfigureSet { node, config })
        }
        (_, false, "default") => Ok(Request::Default),
        (true, true, "delete") => Ok(Request::Delete { node: node_of(first)? }),
        (true, true, "purge") => Ok(Request::Purge { node: node_of(first)? }),
        (true, false, "affiliations") => Ok(Request::AffiliationsGet { node: node_of(first)? }),
        (true, true, "affiliations") => {
            let node = node_of(first)?;
            let mut changes = Vec::new();
            for a in first.children().filter(|c| c.is("affiliation", ns)) {
                let jid = a
                    .attr("jid")
                    .and_then(|j| BareJid::parse(j).ok())
                    .ok_or(PubsubError::BadRequest("an affiliation needs a bare JID"))?;
                let affiliation = match a.attr("affiliation") {
                    Some("member" | "publisher") => Affiliation::Member,
                    Some("none") => Affiliation::None,
                    Some(other) => {
                        return Err(PubsubError::NotAcceptable(format!(
                            "a personal node has no {other} affiliation"
                        )))
                    }
                    None => return Err(PubsubError::BadRequest("an affiliation needs a value")),
                };
                changes.push((jid, affiliation));
            }
            Ok(Request::AffiliationsSet { node, changes })
        }
        _ => Err(PubsubError::BadRequest("not a pubsub request this server answers")),
    }
}

fn parse_publish(publish: &Element, options: Option<&Element>) -> Result<Request, PubsubError> {
    let node = node_of(publish)?;
    let mut items = publish.children().filter(|c| c.is("item", NS));
    let item = items.next().ok_or(PubsubError::ItemRequired)?;
    if items.next().is_some() {
        return Err(PubsubError::InvalidPayload);
    }
    let mut payloads = item.children();
    let (Some(payload), None) = (payloads.next(), payloads.next()) else {
        return Err(PubsubError::InvalidPayload);
    };
    let options = form_in(options)
        .map(|x| NodeConfigPatch::from_form(x, &[PUBLISH_OPTIONS]))
        .transpose()?;
    Ok(Request::Publish {
        node,
        item_id: item.attr("id").filter(|id| !id.is_empty()).map(str::to_owned),
        payload: payload.clone(),
        options,
    })
}

/// `<pubsub xmlns=ns>child</pubsub>`: a result's payload.
pub fn wrap(ns: &str, child: Element) -> Element {
    Element::new("pubsub", ns).with_child(child)
}

/// An `<item id/>` with its payload, if any, in namespace `ns`.
pub fn item(ns: &str, id: &str, payload: Option<Element>) -> Element {
    let mut el = Element::new("item", ns).with_attr("id", id);
    if let Some(p) = payload {
        el.push_child(p);
    }
    el
}

/// The `<event/>` of a notification.
pub fn event(child: Element) -> Element {
    Element::new("event", EVENT).with_child(child)
}

/// A notification's `<items node>` with these children (`<item/>`s or
/// `<retract/>`s), in the event namespace.
pub fn event_items(node: &str, children: impl IntoIterator<Item = Element>) -> Element {
    let mut el = Element::new("items", EVENT).with_attr("node", node);
    for c in children {
        el.push_child(c);
    }
    el
}

/// The features a PEP service with this subset advertises (XEP-0060 §10).
pub fn features() -> Vec<String> {
    let mut out = vec![NS.to_owned()];
    for f in [
        "publish",
        "publish-options",
        "access-open",
        "access-presence",
        "access-roster",
        "access-whitelist",
        "auto-create",
        "create-and-configure",
        "config-node",
        "delete-items",
        "delete-nodes",
        "purge-nodes",
        "retrieve-items",
        "persistent-items",
        "item-ids",
        "filtered-notifications",
        "last-published",
        "presence-notifications",
        "retrieve-default",
        "modify-affiliations",
    ] {
        out.push(format!("{NS}#{f}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::client_element;

    fn req(xml: &str, set: bool) -> Result<Request, PubsubError> {
        let iq = client_element(xml);
        let payload = iq.children().next().unwrap();
        parse(payload, set)
    }

    const TUNE: &str = "<tune xmlns='http://jabber.org/protocol/tune'><title>Fire</title></tune>";

    #[test]
    fn a_publish_with_options() {
        let xml = format!(
            "<iq type='set' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <publish node='http://jabber.org/protocol/tune'><item id='current'>{TUNE}</item></publish>\
             <publish-options><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='pubsub#access_model'><value>open</value></field></x></publish-options></pubsub></iq>"
        );
        let Request::Publish {
            node,
            item_id,
            payload,
            options,
        } = req(&xml, true).unwrap()
        else {
            panic!("not a publish")
        };
        assert_eq!(node, "http://jabber.org/protocol/tune");
        assert_eq!(item_id.as_deref(), Some("current"));
        assert_eq!(payload.to_string(), TUNE);
        let options = options.unwrap();
        assert_eq!(options.fields, [(Field::AccessModel, vec!["open".to_owned()])]);
        let config = options.apply(&NodeConfig::default(), 256).unwrap();
        assert_eq!(config.access_model, AccessModel::Open);
    }

    #[test]
    fn publish_shapes_are_checked() {
        let publish = |inner: &str| {
            req(
                &format!(
                    "<iq type='set' id='p'><pubsub xmlns='http://jabber.org/protocol/pubsub'>{inner}</pubsub></iq>"
                ),
                true,
            )
        };
        assert_eq!(
            publish(&format!("<publish><item>{TUNE}</item></publish>")),
            Err(PubsubError::NodeIdRequired)
        );
        assert_eq!(publish("<publish node='n'/>"), Err(PubsubError::ItemRequired));
        assert_eq!(
            publish("<publish node='n'><item id='a'/></publish>"),
            Err(PubsubError::InvalidPayload)
        );
        assert_eq!(
            publish(&format!("<publish node='n'><item>{TUNE}{TUNE}</item></publish>")),
            Err(PubsubError::InvalidPayload)
        );
        // No id: the service makes one.
        assert!(matches!(
            publish(&format!("<publish node='n'><item>{TUNE}</item></publish>")),
            Ok(Request::Publish { item_id: None, .. })
        ));
        assert_eq!(
            publish("<subscribe node='n' jid='a@b'/>"),
            Err(PubsubError::Unsupported("subscribe"))
        );
        let err: StanzaError = PubsubError::Unsupported("subscribe").into();
        assert_eq!(
            err.to_element().to_string(),
            "<error xmlns='jabber:client' type='cancel'>\
             <feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <unsupported xmlns='http://jabber.org/protocol/pubsub#errors' feature='subscribe'/></error>"
        );
    }

    #[test]
    fn retract_items_and_owner_requests() {
        assert_eq!(
            req(
                "<iq type='set' id='r'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
                 <retract node='n' notify='true'><item id='a'/></retract></pubsub></iq>",
                true
            ),
            Ok(Request::Retract {
                node: "n".into(),
                item_id: "a".into(),
                notify: true
            })
        );
        assert_eq!(
            req(
                "<iq type='get' id='i'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
                 <items node='n' max_items='2'><item id='a'/><item id='b'/></items></pubsub></iq>",
                false
            ),
            Ok(Request::Items {
                node: "n".into(),
                max_items: Some(2),
                ids: vec!["a".into(), "b".into()]
            })
        );
        let owner = |inner: &str, set| {
            req(
                &format!("<iq id='o'><pubsub xmlns='http://jabber.org/protocol/pubsub#owner'>{inner}</pubsub></iq>"),
                set,
            )
        };
        assert_eq!(
            owner("<delete node='n'/>", true),
            Ok(Request::Delete { node: "n".into() })
        );
        assert_eq!(
            owner("<purge node='n'/>", true),
            Ok(Request::Purge { node: "n".into() })
        );
        assert_eq!(owner("<purge/>", true), Err(PubsubError::NodeIdRequired));
        assert_eq!(owner("<default/>", false), Ok(Request::Default));
        assert_eq!(
            owner(
                "<affiliations node='n'><affiliation jid='romeo@localhost' affiliation='member'/>\
                 <affiliation jid='nurse@localhost' affiliation='none'/></affiliations>",
                true
            ),
            Ok(Request::AffiliationsSet {
                node: "n".into(),
                changes: vec![
                    (BareJid::parse("romeo@localhost").unwrap(), Affiliation::Member),
                    (BareJid::parse("nurse@localhost").unwrap(), Affiliation::None)
                ]
            })
        );
        assert!(matches!(
            owner(
                "<affiliations node='n'><affiliation jid='romeo@localhost' affiliation='owner'/></affiliations>",
                true
            ),
            Err(PubsubError::NotAcceptable(_))
        ));
        // Converse: a configure in plain pubsub, its FORM_TYPE, no prefixes.
        let set = req(
            "<iq type='set' id='c'><pubsub xmlns='http://jabber.org/protocol/pubsub'><configure node='n'>\
             <x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#nodeconfig</value></field>\
             <field var='access_model'><value>whitelist</value></field>\
             <field var='max_items'><value>max</value></field></x></configure></pubsub></iq>",
            true,
        )
        .unwrap();
        let Request::ConfigureSet {
            config: Some(patch), ..
        } = set
        else {
            panic!("{set:?}")
        };
        let config = patch.apply(&NodeConfig::default(), 256).unwrap();
        assert_eq!(config.access_model, AccessModel::Whitelist);
        assert_eq!(config.max_items, MaxItems::Max);
        assert_eq!(config.max_items.resolve(256), 256);
    }

    #[test]
    fn preconditions_compare_as_written() {
        let patch = |fields: &[(&str, &str)]| NodeConfigPatch {
            fields: fields
                .iter()
                .map(|(f, v)| (Field::from_var(f).unwrap(), vec![(*v).to_owned()]))
                .collect(),
            unknown: Vec::new(),
        };
        let node = NodeConfig::default();
        assert_eq!(
            patch(&[("pubsub#access_model", "open")]).check(&node, 256),
            Err(PubsubError::Precondition("pubsub#access_model is presence".into()))
        );
        patch(&[("pubsub#access_model", "presence"), ("pubsub#persist_items", "true")])
            .check(&node, 256)
            .unwrap();
        let max = patch(&[("pubsub#max_items", "max")]).apply(&node, 256).unwrap();
        patch(&[("pubsub#max_items", "max")]).check(&max, 256).unwrap();
        assert!(patch(&[("pubsub#max_items", "256")]).check(&max, 256).is_err());
        assert!(matches!(
            patch(&[("pubsub#max_items", "257")]).apply(&node, 256),
            Err(PubsubError::NotAcceptable(_))
        ));
        assert!(matches!(
            patch(&[("pubsub#access_model", "authorize")]).apply(&node, 256),
            Err(PubsubError::NotAcceptable(_))
        ));
        let unknown = NodeConfigPatch {
            unknown: vec!["pubsub#frobnicate".into()],
            ..NodeConfigPatch::default()
        };
        assert_eq!(
            unknown.check(&node, 256),
            Err(PubsubError::Precondition(
                "pubsub#frobnicate is not a node option".into()
            ))
        );
        let err: StanzaError = PubsubError::Precondition("pubsub#access_model is presence".into()).into();
        assert_eq!(
            err.to_element().to_xml_in(crate::ns::CLIENT),
            "<error type='cancel'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>pubsub#access_model is presence</text>\
             <precondition-not-met xmlns='http://jabber.org/protocol/pubsub#errors'/></error>"
        );
    }

    #[test]
    fn the_configuration_form_reads_back() {
        let config = NodeConfig {
            access_model: AccessModel::Roster,
            roster_groups: vec!["Friends".into(), "Family".into()],
            max_items: MaxItems::Max,
            title: Some("Tunes".into()),
            ..NodeConfig::default()
        };
        let form = config.to_form();
        let mut submitted = form.clone();
        submitted.set_attr("type", "submit");
        let patch = NodeConfigPatch::from_form(&submitted, &[NODE_CONFIG]).unwrap();
        assert!(patch.unknown.is_empty());
        assert_eq!(patch.apply(&NodeConfig::default(), 10).unwrap(), config);
        // The form lists the options of its list fields.
        assert!(form.to_string().contains(
            "<field type='list-single' var='pubsub#access_model'><value>roster</value>\
             <option><value>open</value></option>"
        ));
        // Submitted, it has the values alone, and reads back the same.
        let submitted = config.to_submitted();
        assert!(!submitted.to_string().contains("<option>"), "{submitted}");
        assert_eq!(submitted.attr("type"), Some("submit"));
        assert_eq!(NodeConfig::from_submitted(&submitted, 10), Ok(config));
    }

    /// Prosody's form as its XEP-0227 store writes it: unset fields without
    /// a value, and fields Shoal has no option for, passed over.
    #[test]
    fn another_servers_submitted_configuration() {
        let x = client_element(
            "<x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE' type='hidden'>\
             <value>http://jabber.org/protocol/pubsub#node_config</value></field>\
             <field var='pubsub#title' type='text-single'/><field var='pubsub#description' type='text-single'/>\
             <field var='pubsub#max_items' type='text-single'><value>1</value></field>\
             <field var='pubsub#persist_items' type='boolean'><value>0</value></field>\
             <field var='pubsub#access_model' type='list-single'><value>whitelist</value></field>\
             <field var='pubsub#publish_model' type='list-single'/>\
             <field var='pubsub#send_last_published_item' type='list-single'><value>never</value></field>\
             <field var='pubsub#notification_type' type='list-single'/></x>",
        );
        let expected = NodeConfig {
            access_model: AccessModel::Whitelist,
            persist_items: false,
            send_last: SendLast::Never,
            ..NodeConfig::default()
        };
        assert_eq!(NodeConfig::from_submitted(&x, 256), Ok(expected));
        let authorize = client_element(
            "<x type='submit' xmlns='jabber:x:data'>\
             <field var='pubsub#access_model'><value>authorize</value></field></x>",
        );
        assert_eq!(
            NodeConfig::from_submitted(&authorize, 256),
            Err(PubsubError::NotAcceptable(
                "pubsub#access_model cannot be authorize".into()
            ))
        );
    }
}
