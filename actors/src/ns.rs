//! XML namespaces used on the wire, in one place.

pub const STREAM: &str = "http://etherx.jabber.org/streams";
pub const CLIENT: &str = "jabber:client";
/// XEP-0114: the content namespace of an external component's stream.
pub const COMPONENT_ACCEPT: &str = "jabber:component:accept";
/// The content namespace of a server-to-server stream (RFC 6120 §4.8.2).
pub const SERVER: &str = "jabber:server";
/// XEP-0220: Server Dialback's elements, written with the `db:` prefix.
pub const DIALBACK: &str = "jabber:server:dialback";
/// XEP-0220 §2.4.2: the stream feature of dialback with error handling.
pub const DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";

pub const STREAMS_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const STANZAS_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";

pub const ROSTER: &str = "jabber:iq:roster";
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const PING: &str = "urn:xmpp:ping";
pub const VERSION: &str = "jabber:iq:version";
/// XEP-0012: Last Activity.
pub const LAST: &str = "jabber:iq:last";
pub const REGISTER: &str = "jabber:iq:register";
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
pub const ROSTERVER_FEATURE: &str = "urn:xmpp:features:rosterver";
/// RFC 6121 §3.4: subscription pre-approval.
pub const PRE_APPROVAL_FEATURE: &str = "urn:xmpp:features:pre-approval";
/// Shoal's bind extension: nickname and photo URL in the bind result.
pub const BIND_EXTVAL: &str = "urn:xmpp:shoal:bind-extval:0";
pub const NICK: &str = "http://jabber.org/protocol/nick";
/// XEP-0440: SASL channel-binding type capability.
pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
/// XEP-0115: Entity Capabilities.
pub const CAPS: &str = "http://jabber.org/protocol/caps";
/// XEP-0060: Publish-Subscribe, and its event, owner and error namespaces.
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// XEP-0045: Multi-User Chat.
pub const MUC: &str = "http://jabber.org/protocol/muc";
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// XEP-0049: Private XML Storage.
pub const PRIVATE: &str = "jabber:iq:private";
/// XEP-0402: PEP Native Bookmarks.
pub const BOOKMARKS2: &str = "urn:xmpp:bookmarks:1";
/// XEP-0048: Bookmarks, the legacy ones (private XML, or a PEP node).
pub const BOOKMARKS: &str = "storage:bookmarks";
/// XEP-0084: User Avatar's two nodes.
pub const AVATAR_DATA: &str = "urn:xmpp:avatar:data";
pub const AVATAR_METADATA: &str = "urn:xmpp:avatar:metadata";
/// XEP-0203: Delayed Delivery.
pub const DELAY: &str = "urn:xmpp:delay";
