//! XEP-0227, the portable import/export format of XMPP servers: accounts
//! with their SCRAM keys (or passwords), rosters with subscription states,
//! vCards, offline messages, private XML and PEP nodes. [`AccountReader`]
//! reads files one account at a time (a file of millions is never held
//! whole); [`Writer`] writes one. `shoal import` and `shoal export`
//! ([`crate::migrate`]) run them.
//!
//! Besides the XEP's own examples, this reads what the real exporters
//! write (fixtures/migrate/ has both):
//! - ejabberd (`ejabberdctl export_piefxis DIR`) writes a file of
//!   `<xi:include/>`s (XInclude), one per host, each a `<host/>` file of its
//!   own beside it. Its SCRAM values are base64 twice over (its store keeps
//!   them in base64 already); a host that keeps passwords in plain text
//!   gives them as `password` attributes.
//! - Prosody (`prosody-migrator` to its `xep0227` store) writes one file
//!   per account. With Debian's default modules a vCard lives in PEP, as a
//!   vCard4 item (XEP-0292) and an avatar (XEP-0084): this makes the
//!   vcard-temp Prosody's mod_vcard_legacy made of them. Its waiting
//!   subscription requests are `<presence/>` without a namespace of their
//!   own. Prosody 0.12 cannot export offline messages.
//!
//! Private XML (XEP-0049) is a `<query xmlns='jabber:iq:private'/>` of
//! the elements, as both write it.
//!
//! PEP nodes (XEP-0163) are written as Prosody's `mod_storage_xep0227`
//! writes them, so that files move between the two: a `<pubsub
//! xmlns='…pubsub#owner'>` with, per node, a `<configure node/>` holding
//! the submitted `pubsub#node_config` form and `<affiliations node/>`
//! (the owner's, and a whitelist's members), then a `<pubsub
//! xmlns='…pubsub'>` with an `<items node/>` of `<item id/>`s per node,
//! oldest first. The format has no publication times: imported items are
//! stamped when imported. Explicit subscriptions are passed over (a PEP
//! node's subscribers are the owner's presence subscribers here).
//!
//! Only what Shoal keeps is read; anything else in a `<user/>` (privacy
//! lists, archives) is passed over unbuilt.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use quick_xml::events::{BytesStart, Event};
use shoal_actors::error::StreamError;
use shoal_actors::jid::{BareJid, Jid};
use shoal_actors::ns;
use shoal_actors::roster::presence::stored_request;
use shoal_actors::roster::{RosterItem, Subscription};
use shoal_actors::sasl::{Credentials, ScramCredentials, ScramHash};
use shoal_actors::storage::StoredNode;
use shoal_actors::xep::pubsub::{AccessModel, NodeConfig, PubsubError};
use shoal_actors::xep::{forms, private, vcard};
use shoal_actors::xml::{open_element, Element, Node, NsBindings, ParseLimits, TreeBuilder};

/// The format's namespace (XEP-0227 §2).
pub const NS: &str = "urn:xmpp:pie:0";
/// SCRAM keys of an account (XEP-0227 §3.1).
pub const NS_SCRAM: &str = "urn:xmpp:pie:0#scram";
const NS_XINCLUDE: &str = "http://www.w3.org/2001/XInclude";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_VCARD4: &str = "urn:ietf:params:xml:ns:vcard-4.0";
const NODE_VCARD4: &str = "urn:xmpp:vcard4";
const NODE_AVATAR_DATA: &str = "urn:xmpp:avatar:data";
const NODE_AVATAR_METADATA: &str = "urn:xmpp:avatar:metadata";

/// Shape limits of what is built of a file: as for stanzas, but deeper
/// (PEP items sit five levels under a `<user/>`).
const LIMITS: ParseLimits = ParseLimits {
    max_depth: 48,
    max_attrs: 64,
    max_name_bytes: 256,
};

/// The largest part of one account that is built in memory (its roster,
/// its vCard, its offline messages, each counted alone): far above what a
/// real account holds, and a bound on what a broken file costs.
pub const MAX_ELEMENT_BYTES: u64 = 64 << 20;

/// Files included in files included in ...: ejabberd's go one deep.
const MAX_INCLUDE_DEPTH: usize = 8;

/// How an account proves its password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    /// In the clear (a `password` attribute): keys are derived from it.
    Password(String),
    /// SCRAM keys, for one hash or both.
    Keys(Credentials),
}

/// One account as XEP-0227 carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub jid: BareJid,
    pub secret: Secret,
    /// The roster (`in_roster`), and requests waiting for the user's answer
    /// from contacts not in it (`in_roster` false, `pending_in`).
    pub roster: Vec<RosterItem>,
    /// A vcard-temp `<vCard/>`.
    pub vcard: Option<Element>,
    /// Offline messages (`jabber:client`), oldest first.
    pub offline: Vec<Element>,
    /// Private XML elements (XEP-0049), one per key.
    pub private: Vec<Element>,
    /// PEP nodes (XEP-0163), in file order.
    pub pep: Vec<PepNode>,
}

/// One PEP node of an account: its configuration and whitelist, and its
/// items, oldest first, as (id, payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PepNode {
    pub node: StoredNode,
    pub items: Vec<(String, Element)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PortableError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The file is not XML, not XEP-0227, or holds what cannot be imported.
    /// `line` and `column` (1-based, in bytes) are where reading stood.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
}

/// The accounts of XEP-0227 files, and of the files they include, one at a
/// time, in file order.
pub struct AccountReader {
    /// Files given, not yet begun.
    queue: VecDeque<PathBuf>,
    /// The file being read, then those that included it.
    stack: Vec<FileReader>,
    /// Every file begun (canonical paths): a file given twice, or given
    /// and included too (`shoal import dir/*.xml` of ejabberd's export), is
    /// read once.
    seen: HashSet<PathBuf>,
}

impl AccountReader {
    pub fn open(files: &[PathBuf]) -> AccountReader {
        AccountReader {
            queue: files.iter().cloned().collect(),
            stack: Vec::new(),
            seen: HashSet::new(),
        }
    }

    /// Reads `input`, called `name` in errors (includes are looked for
    /// beside it).
    pub fn from_reader(name: PathBuf, input: impl BufRead + 'static) -> AccountReader {
        AccountReader {
            queue: VecDeque::new(),
            stack: vec![FileReader::new(name, Box::new(input))],
            seen: HashSet::new(),
        }
    }

    /// The next account; `None` after the last.
    pub fn next_account(&mut self) -> Result<Option<Account>, PortableError> {
        loop {
            let depth = self.stack.len();
            let Some(file) = self.stack.last_mut() else {
                let Some(path) = self.queue.pop_front() else {
                    return Ok(None);
                };
                self.begin(&path)?;
                continue;
            };
            match file.advance()? {
                Next::Account(account) => return Ok(Some(*account)),
                Next::Include(href) => {
                    let path = file.include_path(&href)?;
                    if depth >= MAX_INCLUDE_DEPTH {
                        return Err(file.error(format!("files include each other more than {MAX_INCLUDE_DEPTH} deep")));
                    }
                    self.begin(&path)?;
                }
                Next::End => {
                    self.stack.pop();
                }
            }
        }
    }

    /// Starts reading `path`, unless it was read already.
    fn begin(&mut self, path: &Path) -> Result<(), PortableError> {
        let io_err = |source| PortableError::Io {
            path: path.to_owned(),
            source,
        };
        let canonical = path.canonicalize().map_err(io_err)?;
        if !self.seen.insert(canonical) {
            return Ok(());
        }
        let file = File::open(path).map_err(io_err)?;
        let input = BufReader::with_capacity(1 << 16, file);
        self.stack.push(FileReader::new(path.to_owned(), Box::new(input)));
        Ok(())
    }
}

/// What one file gives next.
enum Next {
    Account(Box<Account>),
    /// An `<xi:include href='…'/>`.
    Include(String),
    End,
}

/// The open elements above the accounts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    ServerData,
    /// A `<host/>`: its users' domain.
    Host,
}

struct FileReader {
    path: PathBuf,
    xml: quick_xml::Reader<Counting<Box<dyn BufRead>>>,
    /// The open elements, and the namespace bindings in scope inside each
    /// (`scopes[0]` outside the root): `scopes.len() == open.len() + 1`.
    open: Vec<Level>,
    scopes: Vec<NsBindings>,
    /// The domain of the `<host/>` being read.
    host: Option<String>,
    /// The root element has begun.
    rooted: bool,
}

impl FileReader {
    fn new(path: PathBuf, input: Box<dyn BufRead>) -> FileReader {
        let mut xml = quick_xml::Reader::from_reader(Counting::new(input));
        let config = xml.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        // Outside any declaration a name is in no namespace (so that a root
        // in none is reported as such, not as an unbound prefix).
        let mut outside = NsBindings::empty();
        outside.bind(None, "");
        FileReader {
            path,
            xml,
            open: Vec::new(),
            scopes: vec![outside],
            host: None,
            rooted: false,
        }
    }

    /// An error where reading stands.
    fn error(&self, message: impl Into<String>) -> PortableError {
        let (line, column) = self.xml.get_ref().position();
        PortableError::Invalid {
            path: self.path.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    fn read<'b>(&mut self, buf: &'b mut Vec<u8>) -> Result<Event<'b>, PortableError> {
        buf.clear();
        self.xml
            .read_event_into(buf)
            .map_err(|e| self.error(format!("not well-formed XML: {e}")))
    }

    /// A start tag with its namespace resolved, and the bindings inside it.
    fn open_tag(&self, start: &BytesStart<'_>, scope: &NsBindings) -> Result<(Element, NsBindings), PortableError> {
        let mut inner = scope.clone();
        let el = open_element(start, &mut inner, &LIMITS).map_err(|e| self.error(problem(&e)))?;
        Ok((el, inner))
    }

    fn scope(&self) -> NsBindings {
        self.scopes.last().cloned().unwrap_or_else(NsBindings::empty)
    }

    /// Reads on to the next account, include, or the end of the file.
    fn advance(&mut self) -> Result<Next, PortableError> {
        let mut buf = Vec::new();
        loop {
            let event = self.read(&mut buf)?;
            let (start, empty) = match &event {
                Event::Start(start) => (start, false),
                Event::Empty(start) => (start, true),
                Event::End(_) => {
                    if self.open.pop() == Some(Level::Host) {
                        self.host = None;
                    }
                    self.scopes.pop();
                    if self.open.is_empty() {
                        return Ok(Next::End);
                    }
                    continue;
                }
                Event::Decl(decl) => {
                    if let Some(Ok(encoding)) = decl.encoding() {
                        if !encoding.eq_ignore_ascii_case("utf-8") && !encoding.eq_ignore_ascii_case("utf8") {
                            return Err(self.error(format!("the file is in {encoding}; only UTF-8 is read")));
                        }
                    }
                    continue;
                }
                Event::DocType(_) => return Err(self.error("a DTD: not in XEP-0227, and not read")),
                Event::Eof if !self.rooted => return Err(self.error("no XML in the file")),
                Event::Eof => return Err(self.error("the file ends before its root element does")),
                // Text between elements, comments, processing instructions.
                _ => continue,
            };
            let (el, inner) = self.open_tag(start, &self.scope())?;
            if let Some(next) = self.enter(el, inner, empty)? {
                return Ok(next);
            }
            if empty && self.open.is_empty() {
                // An empty root: nothing in it.
                return Ok(Next::End);
            }
        }
    }

    /// Takes an element above the accounts' contents; a start tag (not
    /// `empty`) opens a level, or has its contents read or passed over.
    fn enter(&mut self, el: Element, inner: NsBindings, empty: bool) -> Result<Option<Next>, PortableError> {
        let level = self.open.last().copied();
        if level.is_none() {
            self.rooted = true;
            if el.is("server-data", NS) {
                self.push_level(Level::ServerData, inner, empty);
                return Ok(None);
            }
            if !el.is("host", NS) {
                return Err(self.error(format!(
                    "not a XEP-0227 file: its root is <{}/> in {:?}, not <server-data xmlns='{NS}'/>",
                    el.name(),
                    el.ns()
                )));
            }
        }
        if el.is("host", NS) && level != Some(Level::Host) {
            let domain = el.attr("jid").ok_or_else(|| self.error("<host/> without a jid"))?;
            let jid = BareJid::domain_jid(domain).map_err(|e| self.error(format!("host {domain:?}: {e}")))?;
            self.host = Some(jid.as_str().to_owned());
            self.push_level(Level::Host, inner, empty);
            return Ok(None);
        }
        if el.is("include", NS_XINCLUDE) {
            if !empty {
                // Its <xi:fallback/>: the file it names is read, or the import fails.
                self.skip()?;
            }
            if el.attr("parse").is_some_and(|p| p != "xml") {
                return Err(self.error("an <xi:include/> of text, not XML"));
            }
            let href = el
                .attr("href")
                .ok_or_else(|| self.error("an <xi:include/> without an href"))?;
            return Ok(Some(Next::Include(href.to_owned())));
        }
        if el.is("user", NS) {
            if level != Some(Level::Host) {
                return Err(self.error("a <user/> outside any <host/>: whose domain is it?"));
            }
            let account = self.read_user(&el, inner, empty)?;
            return Ok(Some(Next::Account(Box::new(account))));
        }
        // Anything else (a server's own data, an extension) is not migrated.
        if !empty {
            self.skip()?;
        }
        Ok(None)
    }

    /// A start tag (not `empty`) opens a level, with `inner` in scope in it.
    fn push_level(&mut self, level: Level, inner: NsBindings, empty: bool) {
        if !empty {
            self.open.push(level);
            self.scopes.push(inner);
        }
    }

    /// The file an `<xi:include/>` names: beside this one.
    fn include_path(&self, href: &str) -> Result<PathBuf, PortableError> {
        let relative = Path::new(href);
        let plain =
            !href.is_empty() && !href.contains(':') && relative.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(self.error(format!(
                "<xi:include href={href:?}/>: only files beside this one are read"
            )));
        }
        Ok(self.path.parent().unwrap_or(Path::new("")).join(relative))
    }

    /// Passes over the rest of an element whose start tag was read.
    fn skip(&mut self) -> Result<(), PortableError> {
        let mut buf = Vec::new();
        let mut depth = 1usize;
        while depth > 0 {
            match self.read(&mut buf)? {
                Event::Start(_) => depth += 1,
                Event::End(_) => depth -= 1,
                Event::Eof => return Err(self.error("the file ends inside an element")),
                _ => {}
            }
        }
        Ok(())
    }

    /// Builds the rest of an element whose first event is `first`.
    fn build(&mut self, first: Event<'_>, scope: &NsBindings) -> Result<Element, PortableError> {
        let began = self.xml.buffer_position();
        let mut builder = TreeBuilder::new(scope.clone(), LIMITS);
        if let Some(el) = builder.feed(first).map_err(|e| self.error(problem(&e)))? {
            return Ok(el);
        }
        let mut buf = Vec::new();
        loop {
            let event = self.read(&mut buf)?;
            if self.xml.buffer_position() - began > MAX_ELEMENT_BYTES {
                return Err(self.error(format!(
                    "an element of more than {} MiB in one account",
                    MAX_ELEMENT_BYTES >> 20
                )));
            }
            // A file may be commented; a stanza may not.
            if matches!(event, Event::Comment(_) | Event::PI(_)) {
                continue;
            }
            if let Some(el) = builder.feed(event).map_err(|e| self.error(problem(&e)))? {
                return Ok(el);
            }
        }
    }

    /// One `<user/>`, whose start tag was read: what Shoal keeps is built,
    /// the rest passed over.
    fn read_user(&mut self, user: &Element, scope: NsBindings, empty: bool) -> Result<Account, PortableError> {
        let host = self.host.clone().unwrap_or_default();
        let name = user
            .attr("name")
            .ok_or_else(|| self.error(format!("a <user/> of {host} without a name")))?;
        let jid = BareJid::new(name, &host).map_err(|e| self.error(format!("user {name:?} of {host}: {e}")))?;
        // Errors about its contents are reported where the account begins.
        let at = self.error("");
        let mut parts = Vec::new();
        let mut buf = Vec::new();
        // An empty <user/> has no children to read.
        if !empty {
            loop {
                let event = self.read(&mut buf)?;
                let (start, child_empty) = match &event {
                    Event::Start(start) => (start, false),
                    Event::Empty(start) => (start, true),
                    Event::End(_) => break,
                    Event::Eof => return Err(self.error(format!("the file ends inside the account {jid}"))),
                    _ => continue,
                };
                let (child, _) = self.open_tag(start, &scope)?;
                if kept(&child) {
                    parts.push(self.build(event, &scope)?);
                } else if !child_empty {
                    self.skip()?;
                }
            }
        }
        account(jid.clone(), user.attr("password"), parts).map_err(|message| match at {
            PortableError::Invalid { path, line, column, .. } => PortableError::Invalid {
                path,
                line,
                column,
                message: format!("account {jid}: {message}"),
            },
            other => other,
        })
    }
}

/// The children of a `<user/>` that Shoal keeps.
fn kept(child: &Element) -> bool {
    child.is("scram-credentials", NS_SCRAM)
        || child.is("query", ns::ROSTER)
        || child.is("vCard", vcard::NS)
        || child.is("offline-messages", NS)
        || child.is("query", ns::PRIVATE)
        || child.is("presence", ns::CLIENT)
        || child.is("presence", NS)
        || child.is("pubsub", NS_PUBSUB)
        || child.is("pubsub", ns::PUBSUB_OWNER)
}

/// What a parse error says, for a file's reader.
fn problem(e: &StreamError) -> String {
    match &e.text {
        Some(text) => text.to_string(),
        None => e.condition.as_str().to_owned(),
    }
}

/// An account from its `<user/>`'s password attribute and kept children.
fn account(jid: BareJid, password: Option<&str>, parts: Vec<Element>) -> Result<Account, String> {
    let mut keys = Credentials {
        sha1: None,
        sha256: None,
    };
    let mut unusable = Vec::new();
    let mut roster: Vec<RosterItem> = Vec::new();
    let mut requests = Vec::new();
    let mut vcard_temp = None;
    let mut pubsub = Vec::new();
    let mut offline = Vec::new();
    let mut private_xml: Vec<Element> = Vec::new();
    for part in parts {
        if part.is("scram-credentials", NS_SCRAM) {
            let mechanism = part.attr("mechanism").unwrap_or_default();
            let hash = match mechanism {
                "SCRAM-SHA-1" => ScramHash::Sha1,
                "SCRAM-SHA-256" => ScramHash::Sha256,
                other => {
                    unusable.push(other.to_owned());
                    continue;
                }
            };
            let slot = match hash {
                ScramHash::Sha1 => &mut keys.sha1,
                ScramHash::Sha256 => &mut keys.sha256,
            };
            if slot.is_some() {
                return Err(format!("two sets of {mechanism} keys"));
            }
            *slot = Some(scram_keys(&part, hash).map_err(|e| format!("{mechanism} keys: {e}"))?);
        } else if part.is("query", ns::ROSTER) {
            for item in part.children().filter(|c| c.is("item", ns::ROSTER)) {
                let Some(item) = roster_item(item, &jid)? else { continue };
                if roster.iter().any(|i| i.jid == item.jid) {
                    return Err(format!("{} is in the roster twice", item.jid));
                }
                roster.push(item);
            }
        } else if part.name() == "presence" {
            requests.push(renamespaced(&part, NS, ns::CLIENT));
        } else if part.is("vCard", vcard::NS) {
            vcard_temp = Some(renamespaced(&part, "", ""));
        } else if part.is("offline-messages", NS) {
            for message in part.children().filter(|c| c.name() == "message") {
                let message = renamespaced(message, NS, ns::CLIENT);
                if message.ns() != ns::CLIENT {
                    return Err(format!("an offline message in {:?}, not jabber:client", message.ns()));
                }
                offline.push(message);
            }
        } else if part.is("query", ns::PRIVATE) {
            for el in part.children() {
                private::storable(el).map_err(|e| format!("private XML <{}/>: {e}", el.name()))?;
                // An empty element stands for nothing stored.
                if private::is_empty(el) {
                    continue;
                }
                let key = private::key_of(el);
                if private_xml.iter().any(|p| private::key_of(p) == key) {
                    return Err(format!("private XML {key} twice"));
                }
                private_xml.push(renamespaced(el, "", ""));
            }
            if private_xml.len() > private::MAX_KEYS {
                return Err(format!(
                    "{} private XML elements, more than the {} an account keeps",
                    private_xml.len(),
                    private::MAX_KEYS
                ));
            }
        } else {
            pubsub.push(part);
        }
    }
    for request in requests {
        if request.attr("type") != Some("subscribe") {
            continue;
        }
        let from = request.attr("from").ok_or("a subscription request without a from")?;
        let contact = Jid::parse(from)
            .map(|j| j.to_bare())
            .map_err(|e| format!("a subscription request from {from:?}: {e}"))?;
        if contact == jid {
            continue;
        }
        let stored = stored_request(&request, &jid, &contact);
        let index = match roster.iter().position(|i| i.jid == contact) {
            Some(index) => index,
            // Someone not in the roster: a record of the request alone.
            None => {
                roster.push(RosterItem::new(contact));
                roster.len() - 1
            }
        };
        roster[index].state.pending_in = true;
        roster[index].pending_request = Some(stored);
    }
    let secret = match password.filter(|p| !p.is_empty()) {
        Some(password) => Secret::Password(password.to_owned()),
        None if keys.sha1.is_some() || keys.sha256.is_some() => Secret::Keys(keys),
        None if !unusable.is_empty() => {
            return Err(format!(
                "only {} keys, which Shoal cannot use (it has SCRAM-SHA-1 and SCRAM-SHA-256): \
                 have the old server keep SCRAM-SHA-1 or SCRAM-SHA-256 keys, or set a new password after importing",
                unusable.join(" and ")
            ))
        }
        None => return Err("neither a password nor SCRAM keys".into()),
    };
    let pep = pep_nodes(&jid, &pubsub)?;
    Ok(Account {
        jid,
        secret,
        roster,
        vcard: vcard_temp.or_else(|| vcard_from_pep(&pubsub)),
        offline,
        private: private_xml,
        pep,
    })
}

/// The account's PEP nodes from its `<pubsub/>`s (the module's header says
/// how Prosody writes them). A node with items and no `<configure/>` has
/// the defaults, as Prosody reads it. The owner needs no affiliation;
/// others with one that lets them read (member, publisher, owner) make
/// the whitelist. An outcast is refused unless the node is a whitelist
/// (which leaves them out anyway): Shoal has no outcasts to keep them out
/// of another node.
fn pep_nodes(owner: &BareJid, pubsub: &[Element]) -> Result<Vec<PepNode>, String> {
    let mut nodes: Vec<PepNode> = Vec::new();
    // The nodes configured so far, and the outcasts met.
    let mut configured: HashSet<String> = HashSet::new();
    // (node, item id): each item once, whatever the number of items.
    let mut item_ids = HashSet::new();
    let mut outcasts: Vec<(String, BareJid)> = Vec::new();
    for (part, child) in pubsub.iter().flat_map(|p| p.children().map(move |c| (p, c))) {
        let known = if part.is("pubsub", ns::PUBSUB_OWNER) {
            child.is("configure", ns::PUBSUB_OWNER) || child.is("affiliations", ns::PUBSUB_OWNER)
        } else {
            child.is("items", NS_PUBSUB)
        };
        if !known {
            continue;
        }
        let name = child
            .attr("node")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("a PEP <{}/> without a node", child.name()))?;
        let at = match nodes.iter().position(|n| n.node.node == name) {
            Some(at) => at,
            None => {
                nodes.push(PepNode {
                    node: StoredNode {
                        node: name.to_owned(),
                        config: NodeConfig::default(),
                        whitelist: Vec::new(),
                    },
                    items: Vec::new(),
                });
                nodes.len() - 1
            }
        };
        let node = &mut nodes[at];
        let bad = |what: String| format!("PEP node {name}: {what}");
        match child.name() {
            "configure" => {
                if !configured.insert(name.to_owned()) {
                    return Err(bad("configured twice".into()));
                }
                let form = child
                    .get_child("x", forms::NS)
                    .ok_or_else(|| bad("a <configure/> without a form".into()))?;
                // Any count here; [pep] max_items is the importer's to check.
                node.node.config = NodeConfig::from_submitted(form, u32::MAX).map_err(|e| bad(pubsub_problem(e)))?;
            }
            "affiliations" => {
                for a in child.children().filter(|a| a.is("affiliation", ns::PUBSUB_OWNER)) {
                    let raw = a
                        .attr("jid")
                        .ok_or_else(|| bad("an affiliation without a jid".into()))?;
                    let jid = Jid::parse(raw)
                        .map(|j| j.to_bare())
                        .map_err(|e| bad(format!("affiliation of {raw:?}: {e}")))?;
                    match a.attr("affiliation").unwrap_or_default() {
                        _ if jid == *owner => {}
                        "member" | "publisher" | "owner" => {
                            if !node.node.whitelist.contains(&jid) {
                                node.node.whitelist.push(jid);
                            }
                        }
                        "none" | "publish-only" => {}
                        "outcast" => outcasts.push((name.to_owned(), jid)),
                        other => return Err(bad(format!("affiliation {other:?} of {jid}"))),
                    }
                }
            }
            _ => {
                for item in child.children().filter(|i| i.is("item", NS_PUBSUB)) {
                    let id = item
                        .attr("id")
                        .filter(|id| !id.is_empty())
                        .ok_or_else(|| bad("an item without an id".into()))?;
                    if !item_ids.insert((name, id)) {
                        return Err(bad(format!("item {id} twice")));
                    }
                    let mut payloads = item.children();
                    let (Some(payload), None) = (payloads.next(), payloads.next()) else {
                        return Err(bad(format!("item {id}: not exactly one payload element")));
                    };
                    node.items.push((id.to_owned(), renamespaced(payload, "", "")));
                }
            }
        }
    }
    for (name, jid) in outcasts {
        let node = nodes.iter().find(|n| n.node.node == name);
        if node.is_some_and(|n| n.node.config.access_model != AccessModel::Whitelist) {
            return Err(format!(
                "PEP node {name}: {jid} is an outcast, which Shoal cannot keep out of a node that is not a whitelist"
            ));
        }
    }
    for node in &mut nodes {
        node.node.whitelist.sort();
    }
    Ok(nodes)
}

/// What a pubsub error says, for a file's reader.
fn pubsub_problem(e: PubsubError) -> String {
    let e = shoal_actors::error::StanzaError::from(e);
    e.text
        .map_or_else(|| e.condition.as_str().to_owned(), |t| t.into_owned())
}

/// One hash's keys. ejabberd writes each value base64 twice over: a key
/// of the wrong length that decodes again to the right one says so, and
/// then the salt was encoded twice too.
fn scram_keys(el: &Element, hash: ScramHash) -> Result<ScramCredentials, String> {
    let field = |name: &str| -> Result<String, String> {
        let text: String = el
            .get_child(name, NS_SCRAM)
            .ok_or_else(|| format!("no <{name}/>"))?
            .text()
            .split_whitespace()
            .collect();
        Ok(text)
    };
    let decode = |name: &str, value: &[u8]| B64.decode(value).map_err(|e| format!("<{name}/> is not base64: {e}"));
    let iterations = field("iter-count")?
        .parse::<u32>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or("<iter-count/> is not a count")?;
    let key_len = match hash {
        ScramHash::Sha1 => 20,
        ScramHash::Sha256 => 32,
    };
    let mut salt = decode("salt", field("salt")?.as_bytes())?;
    let mut stored_key = decode("stored-key", field("stored-key")?.as_bytes())?;
    let mut server_key = decode("server-key", field("server-key")?.as_bytes())?;
    let twice = |v: &[u8]| B64.decode(v).ok().filter(|k| k.len() == key_len);
    if stored_key.len() != key_len {
        let (Some(stored), Some(server)) = (twice(&stored_key), twice(&server_key)) else {
            return Err(format!(
                "<stored-key/> is {} bytes, not the {key_len} of the hash",
                stored_key.len()
            ));
        };
        salt = B64
            .decode(salt.as_slice())
            .map_err(|e| format!("<salt/> is not base64 (twice): {e}"))?;
        (stored_key, server_key) = (stored, server);
    }
    if server_key.len() != key_len || salt.is_empty() {
        return Err(format!(
            "a <server-key/> of {} bytes, or an empty <salt/>",
            server_key.len()
        ));
    }
    Ok(ScramCredentials {
        salt,
        iterations,
        stored_key,
        server_key,
    })
}

/// A roster `<item/>`; `None` for the user itself (Prosody leaves those out).
fn roster_item(el: &Element, user: &BareJid) -> Result<Option<RosterItem>, String> {
    let raw = el.attr("jid").ok_or("a roster item without a jid")?;
    let jid = Jid::parse(raw).map_err(|e| format!("roster item {raw:?}: {e}"))?;
    if !jid.is_bare() {
        return Err(format!("roster item {raw:?}: a roster holds bare JIDs"));
    }
    let jid = jid.to_bare();
    if &jid == user {
        return Ok(None);
    }
    let bad = |what: &str, value: &str| format!("roster item {jid}: {what} {value:?}");
    let mut item = RosterItem::new(jid.clone());
    item.in_roster = true;
    item.name = el.attr("name").filter(|n| !n.is_empty()).map(str::to_owned);
    if let Some(s) = el.attr("subscription") {
        item.state.subscription = Subscription::parse(s).ok_or_else(|| bad("subscription", s))?;
    }
    item.state.pending_out = match el.attr("ask") {
        None => false,
        Some("subscribe") => true,
        Some(other) => return Err(bad("ask", other)),
    };
    item.state.approved = match el.attr("approved") {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => return Err(bad("approved", other)),
    };
    for group in el.children().filter(|c| c.is("group", ns::ROSTER)) {
        let name = group.text();
        if !name.is_empty() && !item.groups.contains(&name) {
            item.groups.push(name);
        }
    }
    Ok(Some(item))
}

/// `el` rebuilt: itself and descendants in `from` moved to `to` (what a
/// file wrote without a namespace of its own, inheriting the file's, is
/// a stanza in `jabber:client`), and white space laid out between
/// elements dropped.
fn renamespaced(el: &Element, from: &str, to: &str) -> Element {
    let ns = if el.ns() == from { to } else { el.ns() };
    let mut out = Element::new(el.name(), ns);
    for (k, v) in el.attrs() {
        out.set_attr(k, v);
    }
    let layout = el.children().next().is_some();
    for node in el.nodes() {
        match node {
            Node::Element(child) => out.push_child(renamespaced(child, from, to)),
            Node::Text(t) if layout && t.trim().is_empty() => {}
            Node::Text(t) => out.push_text(t.as_str()),
        }
    }
    out
}

/// The last item of a PEP node, from `<pubsub><items node='…'>`.
fn pep_item<'a>(pubsub: &'a [Element], node: &str) -> Option<&'a Element> {
    pubsub
        .iter()
        .flat_map(|p| p.children())
        .filter(|items| items.is("items", NS_PUBSUB) && items.attr("node") == Some(node))
        .flat_map(|items| items.children().filter(|i| i.is("item", NS_PUBSUB)))
        .last()
}

/// The vcard-temp Prosody's mod_vcard_legacy answers for an account whose
/// profile is in PEP: its vCard4 (XEP-0292) and avatar (XEP-0084).
fn vcard_from_pep(pubsub: &[Element]) -> Option<Element> {
    let v = |name: &str| Element::new(name, vcard::NS);
    let text = |el: &Element, child: &str| {
        el.get_child(child, NS_VCARD4)
            .map(Element::text)
            .filter(|t| !t.is_empty())
    };
    // HOME or WORK, from <parameters><type><text>.
    let place = |el: &Element| {
        let kind = el
            .get_child("parameters", NS_VCARD4)
            .and_then(|p| p.get_child("type", NS_VCARD4))
            .and_then(|t| text(t, "text"));
        match kind.as_deref() {
            Some("home") => Some(v("HOME")),
            Some("work") => Some(v("WORK")),
            _ => None,
        }
    };
    let mut out = v("vCard");
    let card = pep_item(pubsub, NODE_VCARD4).and_then(|i| i.get_child("vcard", NS_VCARD4));
    if let Some(card) = card {
        if let Some(fn_) = card.get_child("fn", NS_VCARD4).and_then(|f| text(f, "text")) {
            out.push_child(v("FN").with_text(fn_));
        }
        if let Some(n) = card.get_child("n", NS_VCARD4) {
            let mut name = v("N");
            for (from, to) in [
                ("surname", "FAMILY"),
                ("given", "GIVEN"),
                ("additional", "MIDDLE"),
                ("prefix", "PREFIX"),
                ("suffix", "SUFFIX"),
            ] {
                if let Some(t) = text(n, from) {
                    name.push_child(v(to).with_text(t));
                }
            }
            if name.children().next().is_some() {
                out.push_child(name);
            }
        }
        for field in card.children() {
            let simple = match field.name() {
                "nickname" | "title" | "role" | "categories" | "note" => Some("text"),
                "url" => Some("uri"),
                "bday" => Some("date"),
                _ => None,
            };
            if let Some(kind) = simple {
                if let Some(t) = text(field, kind) {
                    out.push_child(v(&field.name().to_uppercase()).with_text(t));
                }
                continue;
            }
            match field.name() {
                "email" => {
                    if let Some(t) = text(field, "text") {
                        let mut email = v("EMAIL")
                            .with_child(v("USERID").with_text(t))
                            .with_child(v("INTERNET"));
                        if let Some(p) = place(field) {
                            email.push_child(p);
                        }
                        out.push_child(email);
                    }
                }
                "tel" => {
                    if let Some(t) = text(field, "uri") {
                        let number = t.strip_prefix("tel:").unwrap_or(&t).to_owned();
                        let mut tel = v("TEL").with_child(v("NUMBER").with_text(number));
                        if let Some(p) = place(field) {
                            tel.push_child(p);
                        }
                        out.push_child(tel);
                    }
                }
                "adr" => {
                    let mut adr = v("ADR");
                    for (from, to) in [
                        ("pobox", "POBOX"),
                        ("ext", "EXTADD"),
                        ("street", "STREET"),
                        ("locality", "LOCALITY"),
                        ("region", "REGION"),
                        ("code", "PCODE"),
                        ("country", "CTRY"),
                    ] {
                        if let Some(t) = text(field, from) {
                            adr.push_child(v(to).with_text(t));
                        }
                    }
                    if let Some(p) = place(field) {
                        adr.push_child(p);
                    }
                    out.push_child(adr);
                }
                "impp" => {
                    if let Some(jid) = text(field, "uri").and_then(|u| u.strip_prefix("xmpp:").map(str::to_owned)) {
                        out.push_child(v("JABBERID").with_text(jid));
                    }
                }
                "org" => {
                    if let Some(t) = text(field, "text") {
                        out.push_child(v("ORG").with_child(v("ORGNAME").with_text(t)));
                    }
                }
                _ => {}
            }
        }
    } else if let Some(nick) = pep_item(pubsub, ns::NICK).and_then(|i| i.get_child("nick", ns::NICK)) {
        out.push_child(v("NICKNAME").with_text(nick.text()));
    }
    let info = pep_item(pubsub, NODE_AVATAR_METADATA)
        .and_then(|i| i.get_child("metadata", NODE_AVATAR_METADATA))
        .and_then(|m| m.get_child("info", NODE_AVATAR_METADATA));
    if let Some(info) = info {
        let mut photo = v("PHOTO");
        if let Some(kind) = info.attr("type") {
            photo.push_child(v("TYPE").with_text(kind));
        }
        if let Some(url) = info.attr("url") {
            photo.push_child(v("EXTVAL").with_text(url));
        } else if let Some(id) = info.attr("id") {
            let data = pubsub
                .iter()
                .flat_map(|p| p.children())
                .filter(|items| items.is("items", NS_PUBSUB) && items.attr("node") == Some(NODE_AVATAR_DATA))
                .flat_map(|items| items.children())
                .find(|i| i.is("item", NS_PUBSUB) && i.attr("id") == Some(id))
                .and_then(|i| i.get_child("data", NODE_AVATAR_DATA));
            if let Some(data) = data {
                photo.push_child(v("BINVAL").with_text(data.text()));
            }
        }
        out.push_child(photo);
    }
    let found = out.children().next().is_some();
    found.then_some(out)
}

/// Writes a XEP-0227 file: one `<server-data/>`, a `<host/>` per domain, a
/// line per account. SCRAM keys are written as the XEP says (base64 of
/// the bytes, as Prosody reads them); a password, only if one was given.
pub struct Writer<W: Write> {
    out: W,
    /// The domain of the open `<host/>`.
    host: Option<String>,
}

impl<W: Write> Writer<W> {
    pub fn new(mut out: W) -> io::Result<Writer<W>> {
        out.write_all(b"<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='urn:xmpp:pie:0'>\n")?;
        Ok(Writer { out, host: None })
    }

    /// Writes one account. Accounts come grouped by domain: one of a
    /// domain seen before its last opens another `<host/>` for it.
    pub fn account(&mut self, account: &Account) -> io::Result<()> {
        let domain = account.jid.domain();
        if self.host.as_deref() != Some(domain) {
            if self.host.is_some() {
                self.out.write_all(b"</host>\n")?;
            }
            let host = Element::new("host", NS).with_attr("jid", domain).to_xml_in(NS);
            // `<host jid='…'/>` made an open tag.
            let open = host.strip_suffix("/>").unwrap_or(&host);
            writeln!(self.out, "{open}>")?;
            self.host = Some(domain.to_owned());
        }
        let mut line = Vec::new();
        user_element(account).write_to(&mut line, NS);
        line.push(b'\n');
        self.out.write_all(&line)
    }

    /// Closes the document; the output, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        if self.host.is_some() {
            self.out.write_all(b"</host>\n")?;
        }
        self.out.write_all(b"</server-data>\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// An account's `<user/>`.
fn user_element(account: &Account) -> Element {
    let mut user = Element::new("user", NS).with_attr("name", account.jid.node().unwrap_or_default());
    match &account.secret {
        Secret::Password(password) => user.set_attr("password", password.as_str()),
        Secret::Keys(keys) => {
            for (hash, mechanism) in [(ScramHash::Sha1, "SCRAM-SHA-1"), (ScramHash::Sha256, "SCRAM-SHA-256")] {
                let Some(k) = keys.for_hash(hash) else { continue };
                let field = |name: &str, value: String| Element::new(name, NS_SCRAM).with_text(value);
                user.push_child(
                    Element::new("scram-credentials", NS_SCRAM)
                        .with_attr("mechanism", mechanism)
                        .with_child(field("iter-count", k.iterations.to_string()))
                        .with_child(field("salt", B64.encode(&k.salt)))
                        .with_child(field("server-key", B64.encode(&k.server_key)))
                        .with_child(field("stored-key", B64.encode(&k.stored_key))),
                );
            }
        }
    }
    let mut query = Element::new("query", ns::ROSTER);
    for item in account.roster.iter().filter(|i| i.in_roster) {
        query.push_child(item.to_element());
    }
    if query.children().next().is_some() {
        user.push_child(query);
    }
    for item in account.roster.iter().filter(|i| i.state.pending_in) {
        user.push_child(request_element(item, &account.jid));
    }
    if let Some(card) = &account.vcard {
        user.push_child(card.clone());
    }
    if !account.offline.is_empty() {
        let mut messages = Element::new("offline-messages", NS);
        for message in &account.offline {
            messages.push_child(message.clone());
        }
        user.push_child(messages);
    }
    if !account.private.is_empty() {
        let mut query = Element::new("query", ns::PRIVATE);
        for el in &account.private {
            query.push_child(el.clone());
        }
        user.push_child(query);
    }
    if !account.pep.is_empty() {
        let (configs, items) = pep_elements(&account.jid, &account.pep);
        user.push_child(configs);
        if items.children().next().is_some() {
            user.push_child(items);
        }
    }
    user
}

/// PEP nodes as Prosody writes them: the `<pubsub xmlns='…#owner'/>` of
/// their configurations and affiliations (the owner's, as Prosody records
/// it, then the whitelist's members), and the `<pubsub/>` of their items.
fn pep_elements(owner: &BareJid, nodes: &[PepNode]) -> (Element, Element) {
    let mut configs = Element::new("pubsub", ns::PUBSUB_OWNER);
    let mut items = Element::new("pubsub", NS_PUBSUB);
    for PepNode { node, items: stored } in nodes {
        let name = node.node.as_str();
        configs.push_child(
            Element::new("configure", ns::PUBSUB_OWNER)
                .with_attr("node", name)
                .with_child(node.config.to_submitted()),
        );
        let affiliation = |jid: &BareJid, kind: &str| {
            Element::new("affiliation", ns::PUBSUB_OWNER)
                .with_attr("jid", jid.as_str())
                .with_attr("affiliation", kind)
        };
        let mut affiliations = Element::new("affiliations", ns::PUBSUB_OWNER)
            .with_attr("node", name)
            .with_child(affiliation(owner, "owner"));
        for member in &node.whitelist {
            affiliations.push_child(affiliation(member, "member"));
        }
        configs.push_child(affiliations);
        if !stored.is_empty() {
            let mut list = Element::new("items", NS_PUBSUB).with_attr("node", name);
            for (id, payload) in stored {
                list.push_child(
                    Element::new("item", NS_PUBSUB)
                        .with_attr("id", id.as_str())
                        .with_child(payload.clone()),
                );
            }
            items.push_child(list);
        }
    }
    (configs, items)
}

/// A waiting subscription request as XEP-0227 gives it: the presence as
/// stored, or one made from the record.
fn request_element(item: &RosterItem, user: &BareJid) -> Element {
    item.pending_request
        .as_deref()
        .and_then(|xml| {
            shoal_actors::xml::parse_element(xml.as_bytes(), &NsBindings::client(), &ParseLimits::default()).ok()
        })
        .unwrap_or_else(|| {
            Element::new("presence", ns::CLIENT)
                .with_attr("to", user.as_str())
                .with_attr("type", "subscribe")
                .with_attr("from", item.jid.as_str())
        })
}

/// A `BufRead` that counts the lines and columns of what was consumed:
/// where a parser reading through it stands.
struct Counting<R> {
    inner: R,
    line: u64,
    /// Bytes consumed since the last newline.
    column: u64,
}

impl<R: BufRead> Counting<R> {
    fn new(inner: R) -> Counting<R> {
        Counting {
            inner,
            line: 1,
            column: 0,
        }
    }

    /// (line, column), both from 1.
    fn position(&self) -> (u64, u64) {
        (self.line, self.column + 1)
    }
}

impl<R: BufRead> Read for Counting<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        // What fill_buf gave is still buffered: no reading happens here.
        if let Ok(buffered) = self.inner.fill_buf() {
            let seen = &buffered[..amount.min(buffered.len())];
            match seen.iter().rposition(|b| *b == b'\n') {
                Some(last) => {
                    self.line += seen.iter().filter(|b| **b == b'\n').count() as u64;
                    self.column = (seen.len() - last - 1) as u64;
                }
                None => self.column += seen.len() as u64,
            }
        }
        self.inner.consume(amount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_actors::xep::pubsub::{MaxItems, SendLast};

    fn read_all(xml: &str) -> Result<Vec<Account>, PortableError> {
        let mut reader = AccountReader::from_reader(PathBuf::from("test.xml"), io::Cursor::new(xml.to_owned()));
        let mut accounts = Vec::new();
        while let Some(a) = reader.next_account()? {
            accounts.push(a);
        }
        Ok(accounts)
    }

    fn message(e: PortableError) -> String {
        match e {
            PortableError::Invalid {
                line, column, message, ..
            } => format!("{line}:{column}: {message}"),
            other => panic!("{other}"),
        }
    }

    fn jid(s: &str) -> BareJid {
        BareJid::parse(s).unwrap()
    }

    const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";

    /// The XEP's example form, pretty-printed and commented: a password,
    /// a roster, private XML, a waiting request, a vCard and an offline
    /// message.
    #[test]
    fn reads_the_xeps_form() {
        let xml = "<?xml version='1.0' encoding='UTF-8'?>\n<!-- exported -->\n\
            <server-data xmlns='urn:xmpp:pie:0'>\n  <host jid='Capulet.lit'>\n\
            <user name='Juliet' password='s3crEt'>\n\
              <query xmlns='jabber:iq:roster'>\n\
                <item jid='romeo@montague.lit' name='Romeo' subscription='both'><group>Friends</group></item>\n\
                <item jid='nurse@capulet.lit' ask='subscribe'/>\n\
                <item jid='juliet@capulet.lit' subscription='both'/>\n\
              </query>\n\
              <query xmlns='jabber:iq:private'><exodus xmlns='exodus:prefs'><defaultnick>Jules</defaultnick></exodus></query>\n\
              <presence xmlns='jabber:client' from='tybalt@capulet.lit/x' to='juliet@capulet.lit' type='subscribe'>\
                <status>hi</status></presence>\n\
              <vCard xmlns='vcard-temp'>\n  <FN>Juliet Capulet</FN>\n</vCard>\n\
              <offline-messages>\n\
                <message xmlns='jabber:client' from='romeo@montague.lit/orchard' to='juliet@capulet.lit' type='chat'>\
                  <body>Wherefore art thou?</body></message>\n\
              </offline-messages>\n\
            </user>\n  </host>\n</server-data>\n";
        let [juliet] = read_all(xml).unwrap().try_into().unwrap();
        assert_eq!(juliet.jid, jid("juliet@capulet.lit"));
        assert_eq!(juliet.secret, Secret::Password("s3crEt".into()));
        let items: Vec<(String, &str, bool, bool, Vec<String>)> = juliet
            .roster
            .iter()
            .map(|i| {
                (
                    i.jid.to_string(),
                    i.state.subscription.as_str(),
                    i.state.pending_out,
                    i.in_roster,
                    i.groups.clone(),
                )
            })
            .collect();
        let expected: Vec<(String, &str, bool, bool, Vec<String>)> = vec![
            ("romeo@montague.lit".into(), "both", false, true, vec!["Friends".into()]),
            ("nurse@capulet.lit".into(), "none", true, true, vec![]),
            ("tybalt@capulet.lit".into(), "none", false, false, vec![]),
        ];
        assert_eq!(items, expected);
        assert!(juliet.roster[2].state.pending_in);
        assert_eq!(
            juliet.roster[2].pending_request.as_deref(),
            Some("<presence to='juliet@capulet.lit' type='subscribe' from='tybalt@capulet.lit'><status>hi</status></presence>")
        );
        assert_eq!(
            juliet.vcard.unwrap().to_string(),
            "<vCard xmlns='vcard-temp'><FN>Juliet Capulet</FN></vCard>"
        );
        assert_eq!(
            juliet
                .offline
                .iter()
                .map(|m| m.to_xml_in(ns::CLIENT))
                .collect::<Vec<_>>(),
            [
                "<message from='romeo@montague.lit/orchard' to='juliet@capulet.lit' type='chat'>\
              <body>Wherefore art thou?</body></message>"
            ]
        );
        assert_eq!(
            juliet.private.iter().map(Element::to_string).collect::<Vec<_>>(),
            ["<exodus xmlns='exodus:prefs'><defaultnick>Jules</defaultnick></exodus>"]
        );
    }

    /// ejabberd's SCRAM values are base64 of its base64 text; Prosody's
    /// (and the XEP's) are base64 of the bytes. Both give the same keys.
    #[test]
    fn scram_keys_in_either_encoding() {
        let keys = ScramCredentials::derive(ScramHash::Sha1, "pw", b"salty", 4096);
        let encodings: [fn(&[u8]) -> String; 2] = [|b| B64.encode(b), |b| B64.encode(B64.encode(b))];
        for encode in encodings {
            let xml = format!(
                "<server-data xmlns='urn:xmpp:pie:0'><host jid='a.test'><user name='u'>\
                 <scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-1'>\
                 <iter-count>4096</iter-count><salt>{}</salt><server-key>{}</server-key>\
                 <stored-key>{}</stored-key></scram-credentials>\
                 <scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='SCRAM-SHA-512'/>\
                 </user></host></server-data>",
                encode(&keys.salt),
                encode(&keys.server_key),
                encode(&keys.stored_key)
            );
            let [u] = read_all(&xml).unwrap().try_into().unwrap();
            let Secret::Keys(got) = u.secret else { panic!() };
            assert_eq!(got.sha1.as_ref(), Some(&keys));
            assert_eq!(got.sha256, None);
            assert!(got.verify_password("pw") && !got.verify_password("px"));
        }
    }

    #[test]
    fn pep_profiles_become_vcard_temp() {
        let xml = "<server-data xmlns='urn:xmpp:pie:0'><host jid='a.test'><user name='u' password='p'>\
            <pubsub xmlns='http://jabber.org/protocol/pubsub'>\
            <items node='urn:xmpp:vcard4'><item id='current'><vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'>\
            <fn><text>Romeo Montague</text></fn><n><surname>Montague</surname><given/></n>\
            <nickname><text>Romeo</text></nickname><url><uri>https://montague.example/romeo</uri></url>\
            <email><parameters><type><text>work</text></type></parameters><text>r@montague.example</text></email>\
            <tel><uri>tel:+1-555</uri></tel></vcard></item></items>\
            <items node='urn:xmpp:avatar:metadata'><item id='abc'><metadata xmlns='urn:xmpp:avatar:metadata'>\
            <info id='abc' type='image/png' bytes='5'/></metadata></item></items>\
            <items node='urn:xmpp:avatar:data'><item id='abc'><data xmlns='urn:xmpp:avatar:data'>aGVsbG8=</data>\
            </item></items></pubsub></user></host></server-data>";
        let [u] = read_all(xml).unwrap().try_into().unwrap();
        assert_eq!(
            u.vcard.unwrap().to_string(),
            "<vCard xmlns='vcard-temp'><FN>Romeo Montague</FN><N><FAMILY>Montague</FAMILY></N>\
             <NICKNAME>Romeo</NICKNAME><URL>https://montague.example/romeo</URL>\
             <EMAIL><USERID>r@montague.example</USERID><INTERNET/><WORK/></EMAIL>\
             <TEL><NUMBER>+1-555</NUMBER></TEL>\
             <PHOTO><TYPE>image/png</TYPE><BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard>"
        );
    }

    /// What is written reads back the same.
    #[test]
    fn written_accounts_read_back() {
        let mut romeo = RosterItem::new(jid("romeo@montague.lit"));
        romeo.in_roster = true;
        romeo.name = Some("Romeo & co".into());
        romeo.groups = vec!["Friends".into(), "Montagues".into()];
        romeo.state.subscription = Subscription::Both;
        let mut nurse = RosterItem::new(jid("nurse@capulet.lit"));
        nurse.in_roster = true;
        nurse.state.pending_out = true;
        nurse.state.pending_in = true;
        nurse.pending_request = Some(
            "<presence to='juliet@capulet.lit' type='subscribe' from='nurse@capulet.lit'><status>?</status></presence>"
                .into(),
        );
        let mut tybalt = RosterItem::new(jid("tybalt@capulet.lit"));
        tybalt.state.pending_in = true;
        tybalt.pending_request =
            Some("<presence to='juliet@capulet.lit' type='subscribe' from='tybalt@capulet.lit'/>".into());
        let mut friar = RosterItem::new(jid("friar@verona.lit"));
        friar.in_roster = true;
        friar.state.approved = true;
        let message = shoal_actors::xml::parse_element(
            b"<message to='juliet@capulet.lit' type='chat'><body>x &lt; y</body>\
              <delay xmlns='urn:xmpp:delay' stamp='2026-01-01T00:00:00Z'/></message>",
            &NsBindings::client(),
            &ParseLimits::default(),
        )
        .unwrap();
        let accounts = [
            Account {
                jid: jid("juliet@capulet.lit"),
                secret: Secret::Keys(Credentials::derive("pw", 4096)),
                roster: vec![romeo, nurse, tybalt, friar],
                vcard: Some(Element::new("vCard", vcard::NS).with_child(Element::new("FN", vcard::NS).with_text("J"))),
                offline: vec![message],
                private: vec![
                    Element::new("storage", "storage:bookmarks").with_child(
                        Element::new("conference", "storage:bookmarks")
                            .with_attr("jid", "balcony@conference.capulet.lit")
                            .with_attr("autojoin", "true"),
                    ),
                    Element::new("exodus", "exodus:prefs")
                        .with_child(Element::new("defaultnick", "exodus:prefs").with_text("Jules")),
                ],
                pep: vec![
                    PepNode {
                        node: StoredNode {
                            node: BOOKMARKS.into(),
                            config: NodeConfig {
                                access_model: AccessModel::Whitelist,
                                max_items: MaxItems::Max,
                                send_last: SendLast::Never,
                                title: Some("Rooms & more".into()),
                                ..NodeConfig::default()
                            },
                            whitelist: vec![jid("nurse@capulet.lit"), jid("romeo@montague.lit")],
                        },
                        items: vec![
                            (
                                "balcony@conference.capulet.lit".into(),
                                Element::new("conference", BOOKMARKS).with_attr("name", "Balcony"),
                            ),
                            (
                                "crypt@conference.capulet.lit".into(),
                                Element::new("conference", BOOKMARKS).with_attr("autojoin", "true"),
                            ),
                        ],
                    },
                    PepNode {
                        node: StoredNode {
                            node: "http://jabber.org/protocol/tune".into(),
                            config: NodeConfig::default(),
                            whitelist: vec![],
                        },
                        items: vec![],
                    },
                ],
            },
            Account {
                jid: jid("romeo@montague.lit"),
                secret: Secret::Keys(Credentials {
                    sha1: Some(ScramCredentials::derive(ScramHash::Sha1, "r", b"s", 4096)),
                    sha256: None,
                }),
                roster: vec![],
                vcard: None,
                offline: vec![],
                private: vec![],
                pep: vec![],
            },
            Account {
                jid: jid("tybalt@capulet.lit"),
                secret: Secret::Password("t".into()),
                roster: vec![],
                vcard: None,
                offline: vec![],
                private: vec![],
                pep: vec![],
            },
        ];
        let mut writer = Writer::new(Vec::new()).unwrap();
        for a in &accounts {
            writer.account(a).unwrap();
        }
        let xml = String::from_utf8(writer.finish().unwrap()).unwrap();
        assert_eq!(xml.matches("<host ").count(), 3, "{xml}");
        let mut read = read_all(&xml).unwrap();
        // A record is read back in the order the file gives it: the roster,
        // then the waiting requests.
        read[0].roster.sort_by(|a, b| a.jid.cmp(&b.jid));
        let mut expected = accounts.to_vec();
        expected[0].roster.sort_by(|a, b| a.jid.cmp(&b.jid));
        assert_eq!(read, expected);
    }

    #[test]
    fn bad_files_are_refused_saying_where_and_why() {
        let user = |body: &str| {
            format!(
                "<server-data xmlns='urn:xmpp:pie:0'>\n<host jid='a.test'>\n<user name='u'>{body}</user></host></server-data>"
            )
        };
        let scram = |mechanism: &str, key: &str| {
            user(&format!(
                "<scram-credentials xmlns='urn:xmpp:pie:0#scram' mechanism='{mechanism}'><iter-count>1</iter-count>\
                 <salt>cw==</salt><server-key>{key}</server-key><stored-key>{key}</stored-key></scram-credentials>"
            ))
        };
        let roster = |item: &str| user(&format!("<query xmlns='jabber:iq:roster'>{item}</query>"));
        let cases = [
            (
                "<server-data xmlns='urn:xmpp:pie:0'><host jid='a.test'>".to_owned(),
                1,
                "the file ends before its root element does",
            ),
            (
                "<roster/>".to_owned(),
                1,
                "not a XEP-0227 file: its root is <roster/> in \"\", not <server-data xmlns='urn:xmpp:pie:0'/>",
            ),
            (
                "<server-data xmlns='urn:xmpp:pie:0'><host jid='a.test'><user/></host></server-data>".to_owned(),
                1,
                "a <user/> of a.test without a name",
            ),
            (
                "<server-data xmlns='urn:xmpp:pie:0'><user name='u' password='p'/></server-data>".to_owned(),
                1,
                "a <user/> outside any <host/>",
            ),
            (user(""), 3, "account u@a.test: neither a password nor SCRAM keys"),
            (
                roster("<item jid='v@a.test' subscription='maybe'/>"),
                3,
                "account u@a.test: roster item v@a.test: subscription \"maybe\"",
            ),
            (
                roster("<item jid='v@a.test/r'/>"),
                3,
                "account u@a.test: roster item \"v@a.test/r\": a roster holds bare JIDs",
            ),
            (
                scram("SCRAM-SHA-1", "AA=="),
                3,
                "account u@a.test: SCRAM-SHA-1 keys: <stored-key/> is 1 bytes, not the 20 of the hash",
            ),
            (
                scram("SCRAM-SHA-512", "AA=="),
                3,
                "account u@a.test: only SCRAM-SHA-512 keys, which Shoal cannot use",
            ),
            (roster("<item jid='v@a.test'>"), 3, "not well-formed XML"),
        ];
        for (xml, line, expected) in cases {
            let got = message(read_all(&xml).unwrap_err());
            let (at, text) = got.split_once(": ").unwrap();
            assert!(
                at.starts_with(&format!("{line}:")) && text.starts_with(expected),
                "{xml}\n{got}\nnot line {line}: {expected}"
            );
        }
        let outside = "<server-data xmlns='urn:xmpp:pie:0' xmlns:xi='http://www.w3.org/2001/XInclude'>\
                       <xi:include href='../x.xml'/></server-data>";
        assert!(message(read_all(outside).unwrap_err()).ends_with("only files beside this one are read"));
    }

    /// PEP nodes as Prosody's mod_storage_xep0227 writes them: its
    /// configuration form (unset fields without a value, fields Shoal has
    /// no option for), the owner's affiliation, a member, an outcast of a
    /// whitelist, subscriptions (passed over), and items, oldest first; a
    /// node with items alone has the defaults. What cannot be kept is
    /// refused, saying which node.
    #[test]
    fn reads_prosodys_pep_nodes() {
        const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
        const TUNE: &str = "http://jabber.org/protocol/tune";
        let file = |pubsub: &str| {
            format!(
                "<server-data xmlns='urn:xmpp:pie:0'><host jid='prosody.test'>\
                 <user name='juliet' password='p'>{pubsub}</user></host></server-data>"
            )
        };
        let xml = file(&format!(
            "<pubsub xmlns='{OWNER}'><configure node='{BOOKMARKS}'><x type='submit' xmlns='jabber:x:data'>\
             <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
             <field var='pubsub#title' type='text-single'/><field var='pubsub#description' type='text-single'/>\
             <field var='pubsub#max_items' type='text-single'><value>max</value></field>\
             <field var='pubsub#access_model' type='list-single'><value>whitelist</value></field>\
             <field var='pubsub#publish_model' type='list-single'/>\
             <field var='pubsub#send_last_published_item' type='list-single'><value>never</value></field>\
             </x></configure>\
             <affiliations node='{BOOKMARKS}'><affiliation affiliation='owner' jid='juliet@prosody.test'/>\
             <affiliation affiliation='member' jid='romeo@prosody.test'/>\
             <affiliation affiliation='outcast' jid='tybalt@prosody.test'/></affiliations>\
             <subscriptions node='{BOOKMARKS}'><subscription jid='romeo@prosody.test' subscribed='subscribed'/>\
             </subscriptions></pubsub>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{BOOKMARKS}'>\
             <item id='a@conference.prosody.test'><conference xmlns='{BOOKMARKS}' name='A'/></item>\
             <item id='b@conference.prosody.test'><conference xmlns='{BOOKMARKS}' name='B'/></item></items>\
             <items node='{TUNE}'><item id='current'><tune xmlns='{TUNE}'/></item></items></pubsub>"
        ));
        let juliet = read_all(&xml).unwrap().remove(0);
        let conference = |name: &str| Element::new("conference", BOOKMARKS).with_attr("name", name);
        assert_eq!(
            juliet.pep,
            [
                PepNode {
                    node: StoredNode {
                        node: BOOKMARKS.into(),
                        config: NodeConfig {
                            access_model: AccessModel::Whitelist,
                            max_items: MaxItems::Max,
                            send_last: SendLast::Never,
                            ..NodeConfig::default()
                        },
                        whitelist: vec![jid("romeo@prosody.test")],
                    },
                    items: vec![
                        ("a@conference.prosody.test".into(), conference("A")),
                        ("b@conference.prosody.test".into(), conference("B")),
                    ],
                },
                PepNode {
                    node: StoredNode {
                        node: TUNE.into(),
                        config: NodeConfig::default(),
                        whitelist: vec![],
                    },
                    items: vec![("current".into(), Element::new("tune", TUNE))],
                },
            ]
        );

        for (pubsub, expected) in [
            (
                "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='n'><item id='i'/></items></pubsub>"
                    .to_owned(),
                "PEP node n: item i: not exactly one payload element",
            ),
            (
                format!(
                    "<pubsub xmlns='{OWNER}'><affiliations node='n'>\
                     <affiliation affiliation='outcast' jid='tybalt@prosody.test'/></affiliations></pubsub>"
                ),
                "PEP node n: tybalt@prosody.test is an outcast, which Shoal cannot keep out of a node that is not a \
                 whitelist",
            ),
            (
                format!(
                    "<pubsub xmlns='{OWNER}'><configure node='n'><x xmlns='jabber:x:data' type='submit'>\
                     <field var='pubsub#access_model'><value>authorize</value></field></x></configure></pubsub>"
                ),
                "PEP node n: pubsub#access_model cannot be authorize",
            ),
            (
                "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items><item id='i'/></items></pubsub>".to_owned(),
                "a PEP <items/> without a node",
            ),
        ] {
            let got = message(read_all(&file(&pubsub)).unwrap_err());
            assert!(
                got.ends_with(&format!("account juliet@prosody.test: {expected}")),
                "{got}"
            );
        }
    }
}
