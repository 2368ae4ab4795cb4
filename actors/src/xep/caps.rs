//! XEP-0115: Entity Capabilities. A client's presence carries `<c/>`, the
//! hash (`ver`) of its disco#info. The server asks one client per unknown
//! ver what it stands for, checks that the answer hashes to it (§5.4),
//! and keeps it: every session announcing that ver then has its features
//! without being asked, PEP's `+notify` filters among them (XEP-0163).
//!
//! Only SHA-1 hashes are understood (the one every client sends); legacy
//! caps (no `hash`) and other hashes count as none.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha1::{Digest, Sha1};

use crate::error::StanzaError;
use crate::ns;
use crate::presence::PresenceMsg;
use crate::router::Router;
use crate::session::Session;
use crate::stanza::{IqType, Stanza};
use crate::xep::forms;
use crate::xml::Element;

/// The node of the server's own caps.
pub const SERVER_NODE: &str = "urn:xmpp:shoal";

/// Verified vers kept by default (`[caps] max_entries`; ejabberd's
/// mod_caps `cache_size`).
pub const DEFAULT_MAX_ENTRIES: usize = 1000;

/// A ver nobody answered for truly is not asked about again for this long
/// (ejabberd's `BAD_HASH_LIFETIME`).
const FAILED_FOR: Duration = Duration::from_secs(600);
/// Failed vers remembered at most.
const MAX_FAILED: usize = 1000;
/// Vers being asked about at once, and sessions waiting for one.
const MAX_PENDING: usize = 1000;
const MAX_WAITERS: usize = 1000;
/// Sessions asked about one ver before it counts as failed: a client that
/// lies cannot deny the honest ones announcing the same ver (ejabberd
/// gives up after one).
const MAX_ATTEMPTS: u32 = 3;
/// Time a client has to answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an answer does not tell what a ver stands for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CapsError {
    #[error("the answer is not a disco#info query")]
    NotDiscoInfo,
    #[error("the answer is for node {0:?}, not the one asked about")]
    WrongNode(Option<String>),
    #[error("an identity is listed twice")]
    DuplicateIdentity,
    #[error("a feature is listed twice")]
    DuplicateFeature,
    #[error("two forms have the same FORM_TYPE")]
    DuplicateForm,
    #[error("a FORM_TYPE has several values")]
    AmbiguousFormType,
    #[error("the answer hashes to {0}, not to the ver asked about")]
    Mismatch(String),
    #[error("no answer: {0}")]
    NoAnswer(StanzaError),
}

/// What a presence says of its sender's caps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advertised<'a> {
    /// No `<c/>`: the caps stay as they were (as Prosody keeps them).
    Nothing,
    /// Legacy caps, another hash, or no usable ver: no caps.
    Unusable,
    Sha1 {
        node: &'a str,
        ver: &'a str,
    },
}

impl<'a> Advertised<'a> {
    pub fn of(presence: &'a Element) -> Advertised<'a> {
        let Some(c) = presence.get_child("c", ns::CAPS) else {
            return Advertised::Nothing;
        };
        match (c.attr("hash"), c.attr("node"), c.attr("ver")) {
            // A SHA-1 hash in base64 is 28 characters: nothing else is asked about.
            (Some("sha-1"), Some(node), Some(ver)) if ver.len() == 28 => Advertised::Sha1 { node, ver },
            _ => Advertised::Unusable,
        }
    }
}

/// What a ver stands for: the features of a disco#info answer, and the
/// PEP nodes whose notifications it wants.
#[derive(Debug, PartialEq, Eq)]
pub struct Features {
    ver: Box<str>,
    /// Sorted.
    features: Box<[Box<str>]>,
    notify: HashSet<Box<str>>,
}

impl Features {
    /// The features `query` (a disco#info `<query/>`) lists, under the ver
    /// it hashes to; unchecked (see [`verify`]).
    pub fn of(query: &Element) -> Features {
        Features::with_ver(query, ver_of(query).into())
    }

    fn with_ver(query: &Element, ver: Box<str>) -> Features {
        let mut features: Vec<Box<str>> = feature_vars(query).map(Into::into).collect();
        features.sort_unstable();
        features.dedup();
        let notify = features
            .iter()
            .filter_map(|f| f.strip_suffix("+notify"))
            .map(Into::into)
            .collect();
        Features {
            ver,
            features: features.into_boxed_slice(),
            notify,
        }
    }

    /// The verification string's hash these features were learned under.
    pub fn ver(&self) -> &str {
        &self.ver
    }

    /// True when the entity has feature `var`.
    pub fn has(&self, var: &str) -> bool {
        self.features.binary_search_by(|f| (**f).cmp(var)).is_ok()
    }

    /// True when it wants notifications of PEP node `node` (`node+notify`).
    pub fn notifies(&self, node: &str) -> bool {
        self.notify.contains(node)
    }

    /// The nodes it wants notifications of, in no order.
    pub fn notify_nodes(&self) -> impl Iterator<Item = &str> {
        self.notify.iter().map(|n| &**n)
    }
}

fn identities(query: &Element) -> impl Iterator<Item = [&str; 4]> {
    query.children().filter(|c| c.is("identity", ns::DISCO_INFO)).map(|i| {
        let attr = |name| i.attr(name).unwrap_or_default();
        [attr("category"), attr("type"), attr("xml:lang"), attr("name")]
    })
}

fn feature_vars(query: &Element) -> impl Iterator<Item = &str> {
    query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.attr("var"))
}

/// The XEP-0128 forms of `query` that count (§5.4: a form whose
/// `FORM_TYPE` is not hidden is ignored), with their `FORM_TYPE` values.
fn forms_of(query: &Element) -> impl Iterator<Item = (Vec<String>, &Element)> {
    query.children().filter(|c| c.is("x", forms::NS)).filter_map(|x| {
        let form_type = x
            .children()
            .find(|f| f.is("field", forms::NS) && f.attr("var") == Some("FORM_TYPE"))?;
        if form_type.attr("type") != Some("hidden") {
            return None;
        }
        Some((values(form_type), x))
    })
}

fn values(field: &Element) -> Vec<String> {
    field
        .children()
        .filter(|v| v.is("value", forms::NS))
        .map(Element::text)
        .collect()
}

/// XEP-0115 §5.1's verification string S.
fn verification_string(query: &Element) -> String {
    let mut s = String::new();
    let mut push = |part: &str| {
        s.push_str(part);
        s.push('<');
    };
    let mut ids: Vec<[&str; 4]> = identities(query).collect();
    ids.sort_unstable();
    for [category, kind, lang, name] in ids {
        push(&format!("{category}/{kind}/{lang}/{name}"));
    }
    let mut features: Vec<&str> = feature_vars(query).collect();
    features.sort_unstable();
    for f in features {
        push(f);
    }
    let mut forms: Vec<(String, &Element)> = forms_of(query)
        .map(|(types, x)| (types.into_iter().next().unwrap_or_default(), x))
        .collect();
    forms.sort_by(|a, b| a.0.cmp(&b.0));
    for (form_type, x) in forms {
        push(&form_type);
        let mut fields: Vec<(&str, Vec<String>)> = x
            .children()
            .filter(|f| f.is("field", forms::NS))
            .filter_map(|f| f.attr("var").filter(|v| *v != "FORM_TYPE").map(|v| (v, values(f))))
            .collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        for (var, mut values) in fields {
            push(var);
            values.sort_unstable();
            for v in &values {
                push(v);
            }
        }
    }
    s
}

/// The ver of a disco#info `<query/>` (XEP-0115 §5.1): the SHA-1 of its
/// verification string, in base64.
pub fn ver_of(query: &Element) -> String {
    B64.encode(Sha1::digest(verification_string(query).as_bytes()))
}

/// Checks an answer to a caps query (XEP-0115 §5.4): well formed, and
/// hashing to `ver`. Gives what `ver` stands for.
pub fn verify(query: &Element, ver: &str) -> Result<Features, CapsError> {
    if !query.is("query", ns::DISCO_INFO) {
        return Err(CapsError::NotDiscoInfo);
    }
    let mut seen = HashSet::new();
    if !identities(query).all(|i| seen.insert(i)) {
        return Err(CapsError::DuplicateIdentity);
    }
    let mut seen = HashSet::new();
    if !feature_vars(query).all(|f| seen.insert(f)) {
        return Err(CapsError::DuplicateFeature);
    }
    let mut seen = HashSet::new();
    for (types, _) in forms_of(query) {
        let Some(first) = types.first() else {
            return Err(CapsError::AmbiguousFormType);
        };
        if types.iter().any(|t| t != first) {
            return Err(CapsError::AmbiguousFormType);
        }
        if !seen.insert(first.clone()) {
            return Err(CapsError::DuplicateForm);
        }
    }
    let computed = ver_of(query);
    if computed != ver {
        return Err(CapsError::Mismatch(computed));
    }
    Ok(Features::with_ver(query, ver.into()))
}

/// The server's own caps, for its stream features: `<c/>` over the
/// disco#info of a hosted domain (`registration`: one that offers in-band
/// registration, which changes its features).
pub fn server_caps(router: &Router, registration: bool) -> Element {
    let info = crate::xep::disco::server_info(router, registration);
    Element::new("c", ns::CAPS)
        .with_attr("hash", "sha-1")
        .with_attr("node", SERVER_NODE)
        .with_attr("ver", ver_of(&info))
}

/// What the cache says of a ver a session announced.
#[derive(Debug)]
pub enum Lookup {
    Known(Arc<Features>),
    /// Nobody could tell lately, or too much is being asked: no caps.
    Failed,
    /// Being asked about: the session is told when it is known.
    Waiting,
    /// Unknown: the session is to be asked (and waits, as above).
    Ask,
}

/// After a failed query: the next session to ask, or the ones that waited
/// in vain.
enum Retry {
    Ask(Arc<Session>, Box<str>),
    GiveUp(Vec<Arc<Session>>),
}

struct Pending {
    /// Queries sent so far.
    attempts: u32,
    /// Sessions that announced the ver, with the node each gave.
    waiters: Vec<(Weak<Session>, Box<str>)>,
}

#[derive(Default)]
struct CacheState {
    known: HashMap<Box<str>, Arc<Features>>,
    /// `known`'s vers, oldest first: the first forgotten.
    order: VecDeque<Box<str>>,
    failed: HashMap<Box<str>, Instant>,
    pending: HashMap<Box<str>, Pending>,
}

/// What vers stand for, server-wide, bounded: the router holds it.
pub struct CapsCache {
    state: Mutex<CacheState>,
    max_entries: usize,
}

fn is(weak: &Weak<Session>, session: &Arc<Session>) -> bool {
    std::ptr::eq(weak.as_ptr(), Arc::as_ptr(session))
}

impl CapsCache {
    /// A cache keeping `max_entries` verified vers (the oldest forgotten
    /// first; 0 keeps none, so every session is asked).
    pub fn new(max_entries: usize) -> CapsCache {
        CapsCache {
            state: Mutex::new(CacheState::default()),
            max_entries,
        }
    }

    /// Verified vers kept now.
    pub fn len(&self) -> usize {
        crate::c2s::lock(&self.state).known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What `ver` stands for, as `session` announced it with `node`; an
    /// unknown ver is recorded as being asked about, `session` first.
    pub fn lookup(&self, ver: &str, node: &str, session: &Arc<Session>) -> Lookup {
        let mut st = crate::c2s::lock(&self.state);
        if let Some(f) = st.known.get(ver) {
            return Lookup::Known(f.clone());
        }
        if let Some(at) = st.failed.get(ver) {
            if at.elapsed() < FAILED_FOR {
                return Lookup::Failed;
            }
            st.failed.remove(ver);
        }
        if let Some(p) = st.pending.get_mut(ver) {
            // Past the bound a session does not learn this ver's features
            // until its next presence.
            if p.waiters.len() < MAX_WAITERS && !p.waiters.iter().any(|(w, _)| is(w, session)) {
                p.waiters.push((Arc::downgrade(session), node.into()));
            }
            return Lookup::Waiting;
        }
        if st.pending.len() >= MAX_PENDING {
            return Lookup::Failed;
        }
        let pending = Pending {
            attempts: 1,
            waiters: vec![(Arc::downgrade(session), node.into())],
        };
        st.pending.insert(ver.into(), pending);
        Lookup::Ask
    }

    /// `ver` stands for `features`: kept, and the sessions that waited for
    /// it given back.
    fn learned(&self, ver: &str, features: &Arc<Features>) -> Vec<Arc<Session>> {
        let mut st = crate::c2s::lock(&self.state);
        let waiters = st.pending.remove(ver).map(|p| p.waiters).unwrap_or_default();
        st.failed.remove(ver);
        if self.max_entries > 0 && !st.known.contains_key(ver) {
            while st.order.len() >= self.max_entries {
                let Some(oldest) = st.order.pop_front() else { break };
                st.known.remove(&oldest);
            }
            st.order.push_back(ver.into());
            st.known.insert(ver.into(), features.clone());
        }
        drop(st);
        waiters.into_iter().filter_map(|(w, _)| w.upgrade()).collect()
    }

    /// `asked` did not tell what `ver` stands for: another waiting session
    /// is asked, or the ver counts as failed.
    fn failed(&self, ver: &str, asked: &Arc<Session>) -> Retry {
        let mut st = crate::c2s::lock(&self.state);
        let Some(p) = st.pending.get_mut(ver) else {
            return Retry::GiveUp(Vec::new());
        };
        p.waiters.retain(|(w, _)| !is(w, asked) && w.strong_count() > 0);
        if p.attempts < MAX_ATTEMPTS {
            let next = p
                .waiters
                .iter()
                .find_map(|(w, node)| Some((w.upgrade()?, node.clone())));
            if let Some((session, node)) = next {
                p.attempts += 1;
                return Retry::Ask(session, node);
            }
        }
        let waiters = st.pending.remove(ver).map(|p| p.waiters).unwrap_or_default();
        if st.failed.len() >= MAX_FAILED {
            st.failed.retain(|_, at| at.elapsed() < FAILED_FOR);
        }
        // Still full: this one may be asked about again sooner.
        if st.failed.len() < MAX_FAILED {
            st.failed.insert(ver.into(), Instant::now());
        }
        drop(st);
        Retry::GiveUp(waiters.into_iter().filter_map(|(w, _)| w.upgrade()).collect())
    }
}

/// A session's available presence, before it goes to the session's shard:
/// its caps now, or a query for what an unknown ver stands for.
pub(crate) fn on_available(router: &Router, session: &Arc<Session>, presence: &Element) {
    let (node, ver) = match Advertised::of(presence) {
        Advertised::Nothing => return,
        Advertised::Unusable => return session.set_caps(None),
        Advertised::Sha1 { node, ver } => (node, ver),
    };
    let current = session.caps();
    if current.as_ref().is_some_and(|f| f.ver() == ver) {
        // The same again (forgetting one announced in between).
        return session.set_caps(current);
    }
    // Awaiting before the lookup: an answer verified in between then
    // finds this session waiting.
    session.await_caps(ver);
    match router.caps().lookup(ver, node, session) {
        Lookup::Known(features) => session.set_caps(Some(features)),
        Lookup::Failed => session.set_caps(None),
        Lookup::Waiting => {}
        Lookup::Ask => ask(router, session.clone(), node, ver.into()),
    }
}

/// Sends `session` the disco#info query for `node#ver` (XEP-0115),
/// from its domain, straight to it: it announced the ver itself.
fn ask(router: &Router, session: Arc<Session>, node: &str, ver: Arc<str>) {
    let query = Element::new("query", ns::DISCO_INFO).with_attr("node", format!("{node}#{ver}"));
    let from = router
        .hosts()
        .get(session.jid.domain())
        .map_or_else(|| router.default_domain().clone(), |h| h.domain.clone());
    let then = {
        let (router, asked, node, ver) = (router.clone(), session.clone(), Box::<str>::from(node), ver.clone());
        Box::new(move |answer| answered(&router, &asked, &node, ver, answer))
    };
    let to = session.jid.clone().into();
    match router
        .requests()
        .register(IqType::Get, from.into(), to, query, QUERY_TIMEOUT, then)
    {
        // A session gone by now makes the request time out.
        Ok(request) => {
            session.deliver(request.to_bytes());
        }
        Err(e) => answered(router, &session, node, ver, Err(e)),
    }
}

/// The answer of `asked` about `node#ver`, or its failure.
fn answered(router: &Router, asked: &Arc<Session>, node: &str, ver: Arc<str>, answer: crate::requests::Answer) {
    let checked = answer
        .map_err(CapsError::NoAnswer)
        .and_then(|stanza| check(&stanza, node, &ver));
    match checked {
        Ok(features) => {
            let features = Arc::new(features);
            for s in router.caps().learned(&ver, &features) {
                if let Some(before) = s.caps_learned(&ver, &features) {
                    router.presence().send(PresenceMsg::CapsLearned { session: s, before });
                }
            }
        }
        Err(e) => {
            log::debug!("{}: caps {node}#{ver}: {e}", asked.jid);
            match router.caps().failed(&ver, asked) {
                Retry::Ask(next, node) => ask(router, next, &node, ver),
                Retry::GiveUp(waiters) => {
                    for s in waiters {
                        s.caps_failed(&ver);
                    }
                }
            }
        }
    }
}

/// An answer's query, for the node asked about, verified.
fn check(answer: &Stanza, node: &str, ver: &str) -> Result<Features, CapsError> {
    let query = answer
        .payload()
        .filter(|q| q.is("query", ns::DISCO_INFO))
        .ok_or(CapsError::NotDiscoInfo)?;
    // Dino answers without the node; the hash is what makes it trusted
    // (Prosody ignores the node too). Another node is another question.
    let asked = format!("{node}#{ver}");
    if query.attr("node").is_some_and(|n| n != asked) {
        return Err(CapsError::WrongNode(query.attr("node").map(str::to_owned)));
    }
    verify(query, ver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::client_element;

    const EXODUS: &str = "<query xmlns='http://jabber.org/protocol/disco#info' \
         node='http://code.google.com/p/exodus#QgayPKawpkPSDYmwT/WM94uAlu0='>\
         <identity category='client' name='Exodus 0.9.1' type='pc'/>\
         <feature var='http://jabber.org/protocol/caps'/>\
         <feature var='http://jabber.org/protocol/disco#info'/>\
         <feature var='http://jabber.org/protocol/disco#items'/>\
         <feature var='http://jabber.org/protocol/muc'/></query>";

    /// XEP-0115 §5.3, features in another order than the XEP's.
    const PSI: &str = "<query xmlns='http://jabber.org/protocol/disco#info' \
         node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>\
         <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
         <identity xml:lang='el' category='client' name='\u{3a8} 0.11' type='pc'/>\
         <feature var='http://jabber.org/protocol/muc'/>\
         <feature var='http://jabber.org/protocol/caps'/>\
         <feature var='http://jabber.org/protocol/disco#info'/>\
         <feature var='http://jabber.org/protocol/disco#items'/>\
         <x xmlns='jabber:x:data' type='result'>\
         <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
         <field var='os_version'><value>10.5.1</value></field>\
         <field var='ip_version'><value>ipv6</value><value>ipv4</value></field>\
         <field var='os'><value>Mac</value></field>\
         <field var='software'><value>Psi</value></field>\
         <field var='software_version'><value>0.11</value></field></x></query>";

    fn test_client(extra: &[&str]) -> Element {
        let mut query = Element::new("query", ns::DISCO_INFO).with_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "client")
                .with_attr("type", "pc")
                .with_attr("name", "Test"),
        );
        for var in [ns::CAPS, ns::DISCO_INFO].iter().chain(extra) {
            query.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *var));
        }
        query
    }

    #[test]
    fn the_xeps_examples() {
        assert_eq!(ver_of(&client_element(EXODUS)), "QgayPKawpkPSDYmwT/WM94uAlu0=");
        let psi = client_element(PSI);
        assert_eq!(
            verification_string(&psi),
            "client/pc/el/\u{3a8} 0.11<client/pc/en/Psi 0.11<http://jabber.org/protocol/caps<\
             http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<\
             http://jabber.org/protocol/muc<urn:xmpp:dataforms:softwareinfo<ip_version<ipv4<ipv6<os<Mac<\
             os_version<10.5.1<software<Psi<software_version<0.11<"
        );
        assert_eq!(ver_of(&psi), "q07IKJEyjvHSyhy//CH0CxmKi8w=");
        let features = verify(&psi, "q07IKJEyjvHSyhy//CH0CxmKi8w=").unwrap();
        assert!(features.has(ns::CAPS) && features.has("http://jabber.org/protocol/muc"));
        assert!(!features.has("http://jabber.org/protocol/muc#user"));
        assert_eq!(features.notify_nodes().count(), 0);
    }

    #[test]
    fn the_test_clients_vers() {
        assert_eq!(ver_of(&test_client(&[])), "ODuPyQ1h8v1iAv4fE0SHDPad53M=");
        let tune = test_client(&["http://jabber.org/protocol/tune+notify"]);
        assert_eq!(ver_of(&tune), "O6adgBW9UPnFI3MFnRY+n5uAOGE=");
        let avatar = test_client(&["urn:xmpp:avatar:metadata+notify"]);
        assert_eq!(ver_of(&avatar), "JvAhegdKq109kCET2JidctrEEJA=");
        let features = verify(&tune, "O6adgBW9UPnFI3MFnRY+n5uAOGE=").unwrap();
        assert_eq!(features.ver(), "O6adgBW9UPnFI3MFnRY+n5uAOGE=");
        assert!(features.notifies("http://jabber.org/protocol/tune"));
        assert!(!features.notifies("urn:xmpp:avatar:metadata"));
        assert_eq!(
            features.notify_nodes().collect::<Vec<_>>(),
            ["http://jabber.org/protocol/tune"]
        );
        assert_eq!(Features::of(&tune), features);
    }

    #[test]
    fn ill_formed_or_lying_answers_are_refused() {
        let ver = "O6adgBW9UPnFI3MFnRY+n5uAOGE=";
        let tune = test_client(&["http://jabber.org/protocol/tune+notify"]);
        let other = test_client(&["urn:xmpp:avatar:metadata+notify"]);
        assert_eq!(
            verify(&other, ver),
            Err(CapsError::Mismatch("JvAhegdKq109kCET2JidctrEEJA=".into()))
        );
        let mut twice = tune.clone();
        twice.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::CAPS));
        assert_eq!(verify(&twice, ver), Err(CapsError::DuplicateFeature));
        let identity = tune.children().next().unwrap().clone();
        let mut twice = tune.clone();
        twice.push_child(identity);
        assert_eq!(verify(&twice, ver), Err(CapsError::DuplicateIdentity));
        let form = |form_type: &str| {
            client_element(&format!(
                "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>{form_type}</field></x>"
            ))
        };
        let mut forms = tune.clone();
        forms.push_child(form("<value>urn:a</value>"));
        forms.push_child(form("<value>urn:a</value>"));
        assert_eq!(verify(&forms, &ver_of(&forms)), Err(CapsError::DuplicateForm));
        let mut forms = tune.clone();
        forms.push_child(form("<value>urn:a</value><value>urn:b</value>"));
        assert_eq!(verify(&forms, &ver_of(&forms)), Err(CapsError::AmbiguousFormType));
        // A form whose FORM_TYPE is not hidden is left out, hash included.
        let mut ignored = tune.clone();
        ignored.push_child(client_element(
            "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'><value>urn:a</value></field></x>",
        ));
        assert_eq!(ver_of(&ignored), ver);
        assert!(verify(&ignored, ver).is_ok());
        assert_eq!(
            verify(&Element::new("query", ns::DISCO_ITEMS), ver),
            Err(CapsError::NotDiscoInfo)
        );
    }

    #[test]
    fn what_presence_advertises() {
        let presence = |c: &str| client_element(&format!("<presence xmlns='jabber:client'>{c}</presence>"));
        let ver = "O6adgBW9UPnFI3MFnRY+n5uAOGE=";
        let sha1 = presence(&format!(
            "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://test' ver='{ver}'/>"
        ));
        assert_eq!(
            Advertised::of(&sha1),
            Advertised::Sha1 {
                node: "http://test",
                ver
            }
        );
        assert_eq!(Advertised::of(&presence("<show>away</show>")), Advertised::Nothing);
        for unusable in [
            "<c xmlns='http://jabber.org/protocol/caps' node='http://test' ver='1.0' ext='a b'/>",
            "<c xmlns='http://jabber.org/protocol/caps' hash='sha-256' node='n' ver='O6adgBW9UPnFI3MFnRY+n5uAOGE='/>",
            "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' ver='O6adgBW9UPnFI3MFnRY+n5uAOGE='/>",
        ] {
            assert_eq!(Advertised::of(&presence(unusable)), Advertised::Unusable, "{unusable}");
        }
    }

    fn session(name: &str) -> Arc<Session> {
        struct Nobody;
        impl actix::Actor for Nobody {
            type Context = actix::Context<Self>;
        }
        impl actix::Handler<crate::session::Control> for Nobody {
            type Result = ();
            fn handle(&mut self, _: crate::session::Control, _: &mut actix::Context<Self>) {}
        }
        use actix::Actor;
        let (out, _) = crate::c2s::Outbound::detached(1 << 16);
        let jid = crate::jid::FullJid::parse(&format!("{name}@localhost/r")).unwrap();
        Arc::new(Session::new(jid, out, Nobody.start().recipient()))
    }

    #[test]
    fn the_cache_asks_once_retries_others_and_forgets_the_oldest() {
        actix::System::new().block_on(async {
            let cache = CapsCache::new(2);
            let (romeo, juliet, nurse) = (session("romeo"), session("juliet"), session("nurse"));
            let ver = |n: &str| format!("{n:0>28}");
            assert!(matches!(cache.lookup(&ver("a"), "n", &romeo), Lookup::Ask));
            assert!(matches!(cache.lookup(&ver("a"), "n", &juliet), Lookup::Waiting));
            assert!(matches!(cache.lookup(&ver("a"), "m", &nurse), Lookup::Waiting));
            // Romeo lied: Juliet is asked next, then the nurse; then it failed.
            match cache.failed(&ver("a"), &romeo) {
                Retry::Ask(s, node) => assert_eq!((s.id, &*node), (juliet.id, "n")),
                Retry::GiveUp(_) => panic!("nobody else asked"),
            }
            match cache.failed(&ver("a"), &juliet) {
                Retry::Ask(s, node) => assert_eq!((s.id, &*node), (nurse.id, "m")),
                Retry::GiveUp(_) => panic!("nobody else asked"),
            }
            match cache.failed(&ver("a"), &nurse) {
                Retry::Ask(..) => panic!("asked a fourth time"),
                Retry::GiveUp(waiting) => assert!(waiting.is_empty()),
            }
            assert!(matches!(cache.lookup(&ver("a"), "n", &romeo), Lookup::Failed));

            let features = |v: &str| Arc::new(Features::with_ver(&test_client(&[]), v.into()));
            for v in ["b", "c", "d"] {
                assert!(matches!(cache.lookup(&ver(v), "n", &romeo), Lookup::Ask));
                assert!(matches!(cache.lookup(&ver(v), "n", &juliet), Lookup::Waiting));
                let waiters = cache.learned(&ver(v), &features(&ver(v)));
                assert_eq!(waiters.iter().map(|s| s.id).collect::<Vec<_>>(), [romeo.id, juliet.id]);
                assert!(matches!(cache.lookup(&ver(v), "n", &nurse), Lookup::Known(_)));
            }
            assert_eq!(cache.len(), 2);
            assert!(matches!(cache.lookup(&ver("b"), "n", &nurse), Lookup::Ask));
        });
    }

    #[test]
    fn sessions_learn_only_the_ver_they_await() {
        actix::System::new().block_on(async {
            let romeo = session("romeo");
            let tune = Arc::new(Features::of(&test_client(&["http://jabber.org/protocol/tune+notify"])));
            assert_eq!(romeo.caps_learned(tune.ver(), &tune), None);
            romeo.await_caps(tune.ver());
            assert_eq!(romeo.caps_learned(tune.ver(), &tune), Some(None));
            assert!(romeo.notifies("http://jabber.org/protocol/tune"));
            romeo.await_caps("another");
            romeo.caps_failed("another");
            assert_eq!(romeo.caps(), None);
            romeo.set_caps(Some(tune.clone()));
            romeo.set_unavailable();
            assert!(!romeo.notifies("http://jabber.org/protocol/tune"));
        });
    }
}
