//! XEP-0163 Personal Eventing Protocol: each account is a pubsub service
//! (the XEP-0060 subset of [`super::pubsub`]) whose subscribers are its
//! presence subscribers, each notified on the sessions that asked with a
//! `NODE+notify` caps feature (XEP-0115).
//!
//! Notification is fan-out to followers, and the owner's PresenceActor
//! shard holds them already: every operation on an account's nodes runs
//! there ([`PresenceMsg::Pep`]), one at a time per owner, so items are
//! committed and notified in the same order. Node configurations are
//! cached in the shard while the owner is online; items stay in storage.
//! A notification is serialised once, without `to`, and addressed per
//! session, as presence is.
//!
//! Also here: XEP-0172 (a nick published sets the profile's nickname) and
//! the last item sent to a session newly interested in a node
//! ([`last_items`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::bucket::Bucket;
use crate::error::{StanzaCondition, StanzaError};
use crate::iq_handler::{ready, IqFuture, IqHandler, IqRequest, IqResult, IqScope};
use crate::jid::BareJid;
use crate::ns;
use crate::presence::{addressed, template_of, PresenceHub, PresenceMsg};
use crate::router::Router;
use crate::session::{Origin, Session, SessionTable};
use crate::storage::{may_see, Storage, StorageError, StoredItem, StoredNode};
use crate::xep::mam::{format_stamp, now_ms};
use crate::xep::pubsub::{self, AccessModel, Affiliation, NodeConfig, NodeConfigPatch, PubsubError, Request};
use crate::xml::{parse_element, Element, NsBindings, ParseLimits};

/// `[pep]`: what one account may keep and do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PepSettings {
    /// Off: no last items at login either (the handler is not registered
    /// then, and what was published before stays unsent).
    pub enabled: bool,
    /// Nodes per account.
    pub max_nodes: usize,
    /// Largest payload, serialised.
    pub max_item_bytes: usize,
    /// What `max` means, and the largest `pubsub#max_items`.
    pub max_items: u32,
    /// Publishes per second per account (0: no limit), and the burst.
    pub publish_rate: u32,
    pub publish_burst: u32,
}

impl Default for PepSettings {
    fn default() -> Self {
        PepSettings {
            enabled: true,
            max_nodes: 100,
            max_item_bytes: 256 * 1024,
            max_items: 256,
            publish_rate: 10,
            publish_burst: 30,
        }
    }
}

/// Answers `pubsub` and `pubsub#owner` requests to an account (register
/// it for both, in [`IqScope::Account`]).
pub struct Pep;

impl IqHandler for Pep {
    fn handle(&self, router: &Router, req: IqRequest) -> IqFuture {
        let request = match pubsub::parse(req.payload(), req.is_set()) {
            Ok(r) => r,
            Err(e) => return ready(Err(e.into())),
        };
        // Refused here, before the owner's state is loaded for a stranger.
        if request.needs_owner() && !req.from_owner() {
            return ready(Err(PubsubError::Forbidden.into()));
        }
        // XEP-0411: the owner's legacy bookmarks node is a view of XEP-0402's.
        if req.from_owner() {
            if let Some(view) = super::bookmarks::legacy_pep(router, &req.target, &request) {
                return view;
            }
        }
        let viewer = req.from.to_bare();
        Box::pin(submit(
            router.presence().clone(),
            req.target.clone(),
            Some(viewer),
            PepOp::Iq(request),
        ))
    }

    fn features(&self) -> Vec<String> {
        let mut features = pubsub::features();
        features.push(super::avatar::CONVERSION.to_owned());
        features.push(super::bookmarks::COMPAT.to_owned());
        features.push(super::bookmarks::COMPAT_PEP.to_owned());
        features
    }
}

/// True when the server answers PEP requests (its account disco#info then
/// shows the `pubsub/pep` identity, without which Converse never
/// publishes, `api.js` `publish`).
pub fn enabled(router: &Router) -> bool {
    router.iq_handlers().get(IqScope::Account, pubsub::NS).is_some()
}

/// Publishes `payload` to `owner`'s `node` on the owner's behalf (XEP-0398
/// conversions, XEP-0411 views), as the owner's own publish is notified.
/// `defaults` configure the node if this creates it, and are not
/// preconditions (Prosody's `_defaults_only`); no rate limit applies.
/// Returns the item's id (`item_id`, or a new one).
pub async fn publish_as_server(
    router: &Router,
    owner: &BareJid,
    node: &str,
    item_id: Option<String>,
    payload: Element,
    defaults: Option<NodeConfigPatch>,
) -> Result<String, StanzaError> {
    let op = PepOp::ServerPublish(Publish {
        node: node.to_owned(),
        item_id,
        payload,
        options: defaults,
        by_server: true,
    });
    let result = as_server(router, owner, op).await?;
    result
        .as_ref()
        .and_then(|r| r.get_child("publish", pubsub::NS))
        .and_then(|p| p.get_child("item", pubsub::NS))
        .and_then(|i| i.attr("id"))
        .map(str::to_owned)
        .ok_or_else(|| StanzaError::new(StanzaCondition::InternalServerError))
}

/// Retracts `owner`'s item `item_id` of `node` on the owner's behalf
/// (XEP-0411: a legacy bookmark removed), notified whatever the node's
/// `notify_retract` says. `<item-not-found/>` when there is no such item.
pub async fn retract_as_server(router: &Router, owner: &BareJid, node: &str, item_id: &str) -> Result<(), StanzaError> {
    let retract = Request::Retract {
        node: node.to_owned(),
        item_id: item_id.to_owned(),
        notify: true,
    };
    as_server(router, owner, PepOp::Iq(retract)).await?;
    Ok(())
}

/// `owner`'s items of `node`, oldest first, as (id, payload), read on the
/// server's behalf (XEP-0411 views). `<item-not-found/>` without the node.
pub async fn items_as_server(
    router: &Router,
    owner: &BareJid,
    node: &str,
) -> Result<Vec<(String, Element)>, StanzaError> {
    let items = Request::Items {
        node: node.to_owned(),
        max_items: None,
        ids: Vec::new(),
    };
    let result = as_server(router, owner, PepOp::Iq(items)).await?;
    let listed = result.as_ref().and_then(|r| r.get_child("items", pubsub::NS));
    Ok(listed
        .into_iter()
        .flat_map(|items| items.children())
        .filter_map(|i| Some((i.attr("id")?.to_owned(), i.children().next()?.clone())))
        .collect())
}

/// Runs `op` on `owner`'s nodes with the owner's rights, if PEP is on.
async fn as_server(router: &Router, owner: &BareJid, op: PepOp) -> IqResult {
    if !enabled(router) {
        return Err(StanzaError::new(StanzaCondition::FeatureNotImplemented));
    }
    submit(router.presence().clone(), owner.clone(), None, op).await
}

/// An account's disco#items (XEP-0030 on a PEP service): the nodes
/// `asker` may read, as Prosody's `account-disco-items` lists them.
pub(crate) fn disco_items(router: &Router, owner: BareJid, asker: BareJid) -> IqFuture {
    Box::pin(submit(router.presence().clone(), owner, Some(asker), PepOp::DiscoItems))
}

/// Runs `op` in `owner`'s shard and waits for its answer.
async fn submit(presence: PresenceHub, owner: BareJid, viewer: Option<BareJid>, op: PepOp) -> IqResult {
    fn internal<E>(_: E) -> StanzaError {
        StanzaError::new(StanzaCondition::InternalServerError)
    }
    let (reply, answer) = oneshot::channel();
    let job = PepJob { viewer, op, reply };
    presence
        .request(PresenceMsg::Pep { owner, job })
        .await
        .map_err(internal)?;
    answer.await.map_err(internal)?
}

/// One operation on an account's nodes, and where its answer goes.
pub struct PepJob {
    /// Who asks: `None` for the server itself (with the owner's rights).
    viewer: Option<BareJid>,
    op: PepOp,
    reply: oneshot::Sender<IqResult>,
}

enum PepOp {
    Iq(Request),
    ServerPublish(Publish),
    DiscoItems,
}

impl PepJob {
    /// A publish by the owner, which the rate limit counts.
    fn is_client_publish(&self) -> bool {
        self.viewer.is_some() && matches!(&self.op, PepOp::Iq(r) if r.is_publish())
    }
}

/// The owner's nodes as the shard caches them.
#[derive(Default)]
struct Nodes {
    loaded: bool,
    map: HashMap<String, StoredNode>,
}

/// Operations on one account's PEP waiting for the one running.
const MAX_QUEUED: usize = 64;

/// One account's PEP in its PresenceActor shard (dropped with the rest of
/// the owner's state once offline and idle: the configuration is read
/// again at the next operation). An owner without an available session
/// thus starts each operation with a full bucket; its operations each
/// load the owner's state, which the IQs in flight per session bound.
pub(crate) struct PepState {
    /// `None` while a job has them: the next waits in `queue`.
    nodes: Option<Nodes>,
    queue: VecDeque<PepJob>,
    bucket: Bucket,
}

/// A job under way: its storage work, off the shard's event loop.
pub(crate) type Running = Pin<Box<dyn Future<Output = Done>>>;

/// What a job did: its answer and notifications, with the nodes back.
pub(crate) struct Done {
    nodes: Nodes,
    reply: oneshot::Sender<IqResult>,
    result: IqResult,
    notices: Vec<Notice>,
    /// The vCard photo's new hash, when a client's avatar changed it.
    photo: Option<Option<String>>,
}

impl PepState {
    pub(crate) fn new(settings: &PepSettings) -> PepState {
        PepState {
            nodes: Some(Nodes::default()),
            queue: VecDeque::new(),
            bucket: Bucket::new(settings.publish_burst, Instant::now()),
        }
    }

    /// True while a job runs or waits: the owner's state must stay.
    pub(crate) fn busy(&self) -> bool {
        self.nodes.is_none() || !self.queue.is_empty()
    }

    /// Queues a job, unless the owner publishes too fast (answered at once).
    pub(crate) fn push(&mut self, job: PepJob, settings: &PepSettings) {
        if job.is_client_publish()
            && !self
                .bucket
                .take(settings.publish_rate, settings.publish_burst, Instant::now())
        {
            let _ = job.reply.send(Err(PubsubError::RateLimited.into()));
            return;
        }
        // Requests from other servers are not bounded per session as
        // local ones are: past this, wait and ask again.
        if self.queue.len() >= MAX_QUEUED && job.viewer.is_some() {
            let _ = job.reply.send(Err(PubsubError::Busy.into()));
            return;
        }
        self.queue.push_back(job);
    }

    /// Starts the next job unless one runs; the shard spawns it and hands
    /// its outcome to [`PepState::finish`].
    pub(crate) fn start(
        &mut self,
        owner: &BareJid,
        storage: &Arc<dyn Storage>,
        followers: &HashSet<BareJid>,
        settings: PepSettings,
    ) -> Option<Running> {
        self.nodes.as_ref()?;
        let job = self.queue.pop_front()?;
        let nodes = self.nodes.take()?;
        let cx = Cx {
            owner: owner.clone(),
            storage: storage.clone(),
            settings,
            follows: job.viewer.as_ref().is_some_and(|v| followers.contains(v)),
        };
        Some(Box::pin(run(cx, nodes, job)))
    }

    /// Takes back the nodes and notifies; the answer is the caller's to
    /// send after that (Prosody's and ejabberd's order: the publisher's own
    /// +notify session sees the event before the result). Returns the vCard
    /// photo's new hash (XEP-0153) when the operation changed it, for the
    /// presence that carries it to go out before the answer too.
    pub(crate) fn finish(
        &mut self,
        owner: &BareJid,
        done: Done,
        sessions: &SessionTable,
        followers: &HashSet<BareJid>,
    ) -> (Option<Option<String>>, Answer) {
        self.nodes = Some(done.nodes);
        for notice in &done.notices {
            notice.send(owner, sessions, followers);
        }
        let answer = Answer {
            reply: done.reply,
            result: done.result,
        };
        (done.photo, answer)
    }
}

/// A finished job's answer, not yet sent.
pub(crate) struct Answer {
    reply: oneshot::Sender<IqResult>,
    result: IqResult,
}

impl Answer {
    pub(crate) fn send(self) {
        let _ = self.reply.send(self.result);
    }
}

/// A notification to send once the job's changes are committed.
struct Notice {
    node: String,
    /// Who among the followers it reaches: `None` for all of them.
    only: Option<HashSet<BareJid>>,
    /// The `<event/>`.
    event: Element,
}

/// `<message from=owner type='headline'>` around `event`: ejabberd's
/// notification has no `id`, so tests can assert whole stanzas.
fn headline(owner: &BareJid, event: Element) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("from", owner.as_str())
        .with_attr("type", "headline")
        .with_child(event)
}

impl Notice {
    /// To the owner's and the admitted followers' available sessions that
    /// want `node`'s notifications.
    fn send(&self, owner: &BareJid, sessions: &SessionTable, followers: &HashSet<BareJid>) {
        let template = template_of(&headline(owner, self.event.clone()));
        let origin = Origin::of(Some(owner.as_jid()));
        notify(sessions, owner, owner, origin, &self.node, &template);
        let admitted = |f: &&BareJid| self.only.as_ref().is_none_or(|only| only.contains(*f));
        for follower in followers.iter().filter(admitted) {
            notify(sessions, owner, follower, origin, &self.node, &template);
        }
    }
}

/// Queues a notification of `owner`'s for each available session of
/// `user` interested in `node` (`+notify`), with presence's blocklist
/// checks (`to_available`'s); how many took it. A session too far behind
/// drops it, as it drops presence.
fn notify(
    sessions: &SessionTable,
    owner: &BareJid,
    user: &BareJid,
    origin: Origin<'_>,
    node: &str,
    template: &Bytes,
) -> usize {
    let lists = sessions.blocklists();
    // XEP-0191 §3.3: nothing to someone the owner blocked.
    if lists.blocks_outbound(owner.as_jid(), user.as_jid()) {
        return 0;
    }
    sessions.with_resources(user, |all| {
        if lists.blocks_inbound(user, all, origin.jid()) {
            return 0;
        }
        all.iter()
            .filter(|s| s.priority().is_some() && s.notifies(node))
            .filter(|s| s.deliver_from(origin, addressed(template, s.jid.as_str())).is_ok())
            .count()
    })
}

/// A stored payload, read back: written by this server, under its limits
/// at the time (which may have been wider than the defaults).
pub(crate) fn parse_stored(xml: &str) -> Option<Element> {
    parse_element(xml.as_bytes(), &NsBindings::empty(), &ParseLimits::UNBOUNDED).ok()
}

/// Sends `session` the last item of each of `owners`' `nodes` it may see
/// (design §2.3): on its initial presence with caps, or when its caps
/// newly name `NODE+notify`. One storage query; each item as its
/// notification with `<delay/>` (ejabberd's `send_items(.., last)`).
///
/// A publish racing a login may be followed by this older item, read
/// before the publish committed; the next publish repairs it, as the next
/// presence repairs presence dropped under backpressure.
pub(crate) async fn last_items(
    storage: Arc<dyn Storage>,
    sessions: SessionTable,
    session: Arc<Session>,
    owners: Vec<BareJid>,
    nodes: Vec<String>,
) {
    let viewer = session.jid.to_bare();
    let rows = match storage.pep_last_items(&viewer, owners, nodes).await {
        Ok(rows) => rows,
        Err(e) => return log::warn!("{viewer}: cannot read the last PEP items: {e}"),
    };
    let lists = sessions.blocklists();
    for (owner, node, item) in rows {
        // Still available and interested: caps may have changed meanwhile.
        if session.priority().is_none() || !session.notifies(&node) {
            continue;
        }
        if lists.blocks_outbound(owner.as_jid(), session.jid.as_jid())
            || lists.blocks_inbound(&viewer, std::slice::from_ref(&session), Some(owner.as_jid()))
        {
            continue;
        }
        let payload = parse_stored(&item.xml);
        let items = pubsub::event_items(&node, [pubsub::item(pubsub::EVENT, &item.id, payload)]);
        let delay = Element::new("delay", ns::DELAY).with_attr("stamp", format_stamp(item.published_ms));
        let message = headline(&owner, pubsub::event(items)).with_child(delay);
        let bytes = addressed(&template_of(&message), session.jid.as_str());
        let _ = session.deliver_from(Origin::of(Some(owner.as_jid())), bytes);
    }
}

/// What a running job knows of the shard.
struct Cx {
    owner: BareJid,
    storage: Arc<dyn Storage>,
    settings: PepSettings,
    /// The asker follows the owner (presence subscription `from`).
    follows: bool,
}

/// A publish, by the owner or by the server.
struct Publish {
    node: String,
    item_id: Option<String>,
    payload: Element,
    options: Option<NodeConfigPatch>,
    /// The server's: its options only configure a node it creates, and
    /// it is not converted (XEP-0398) back.
    by_server: bool,
}

async fn run(cx: Cx, mut nodes: Nodes, job: PepJob) -> Done {
    let PepJob { viewer, op, reply } = job;
    let mut out = Outcome::default();
    let result = match load(&cx, &mut nodes).await {
        Ok(()) => perform(&cx, &mut nodes.map, viewer.as_ref(), op, &mut out).await,
        Err(e) => Err(e.into()),
    };
    let Outcome { mut notices, photo } = out;
    // A failed operation notifies nothing (a node deleted is notified
    // before the deletion is stored, with the audience it had).
    if result.is_err() {
        notices.clear();
    }
    Done {
        nodes,
        reply,
        result,
        notices,
        photo,
    }
}

/// What an operation leaves to do once it is answered.
#[derive(Default)]
struct Outcome {
    notices: Vec<Notice>,
    photo: Option<Option<String>>,
}

/// Reads the owner's nodes at the first operation.
async fn load(cx: &Cx, nodes: &mut Nodes) -> Result<(), StorageError> {
    if !nodes.loaded {
        let stored = cx.storage.pep_nodes(&cx.owner).await?;
        nodes.map = stored.into_iter().map(|n| (n.node.clone(), n)).collect();
        nodes.loaded = true;
    }
    Ok(())
}

type NodeMap = HashMap<String, StoredNode>;

async fn perform(cx: &Cx, nodes: &mut NodeMap, viewer: Option<&BareJid>, op: PepOp, out: &mut Outcome) -> IqResult {
    let request = match op {
        PepOp::DiscoItems => return disco_items_of(cx, nodes, viewer).await,
        PepOp::ServerPublish(p) => return publish(cx, nodes, p, out).await,
        PepOp::Iq(request) => request,
    };
    let cap = cx.settings.max_items;
    match request {
        Request::Publish {
            node,
            item_id,
            payload,
            options,
        } => {
            let p = Publish {
                node,
                item_id,
                payload,
                options,
                by_server: false,
            };
            publish(cx, nodes, p, out).await
        }
        Request::Items { node, max_items, ids } => {
            let n = nodes.get(&node).ok_or(PubsubError::ItemNotFound)?;
            check_access(cx, n, viewer).await?;
            let ids = (!ids.is_empty()).then_some(ids);
            let stored = cx.storage.pep_items(&cx.owner, &node, ids, max_items).await?;
            let mut items = Element::new("items", pubsub::NS).with_attr("node", node.as_str());
            // Oldest first, as they were published.
            for i in stored.into_iter().rev() {
                items.push_child(pubsub::item(pubsub::NS, &i.id, parse_stored(&i.xml)));
            }
            Ok(Some(pubsub::wrap(pubsub::NS, items)))
        }
        Request::Retract {
            node,
            item_id,
            notify: forced,
        } => {
            let n = nodes.get(&node).ok_or(PubsubError::ItemNotFound)?;
            if !cx.storage.pep_retract(&cx.owner, &node, &item_id).await? {
                return Err(PubsubError::ItemNotFound.into());
            }
            // `notify='true'` forces it (XEP-0402 relies on it).
            if forced || n.config.notify_retract {
                let retract = Element::new("retract", pubsub::EVENT).with_attr("id", item_id.as_str());
                notice(cx, n, pubsub::event_items(&node, [retract]), &mut out.notices).await?;
            }
            Ok(None)
        }
        Request::Purge { node } => {
            let n = nodes.get(&node).ok_or(PubsubError::ItemNotFound)?;
            cx.storage.pep_purge(&cx.owner, &node).await?;
            if n.config.notify_retract {
                let purge = Element::new("purge", pubsub::EVENT).with_attr("node", node.as_str());
                notice(cx, n, purge, &mut out.notices).await?;
            }
            Ok(None)
        }
        Request::Delete { node } => {
            let n = nodes.get(&node).ok_or(PubsubError::ItemNotFound)?;
            if n.config.notify_delete {
                // Its audience is computed while the node is still there.
                let delete = Element::new("delete", pubsub::EVENT).with_attr("node", node.as_str());
                notice(cx, n, delete, &mut out.notices).await?;
            }
            cx.storage.pep_delete_node(&cx.owner, &node).await?;
            nodes.remove(&node);
            Ok(None)
        }
        Request::Create { node, config } => {
            if nodes.contains_key(&node) {
                return Err(PubsubError::NodeExists.into());
            }
            if nodes.len() >= cx.settings.max_nodes {
                return Err(PubsubError::MaxNodesExceeded.into());
            }
            let config = match config {
                Some(patch) => patch.apply(&NodeConfig::default(), cap)?,
                None => NodeConfig::default(),
            };
            let created = StoredNode {
                node: node.clone(),
                config,
                whitelist: Vec::new(),
            };
            cx.storage.pep_set_node(&cx.owner, created.clone()).await?;
            nodes.insert(node, created);
            Ok(None)
        }
        Request::ConfigureGet { node } => {
            let n = nodes.get(&node).ok_or(PubsubError::ItemNotFound)?;
            let configure = Element::new("configure", pubsub::OWNER)
                .with_attr("node", node.as_str())
                .with_child(n.config.to_form());
            Ok(Some(pubsub::wrap(pubsub::OWNER, configure)))
        }
        Request::ConfigureSet { node, config } => {
            let mut changed = nodes.get(&node).ok_or(PubsubError::ItemNotFound)?.clone();
            let Some(patch) = config else {
                return Ok(None);
            };
            changed.config = patch.apply(&changed.config, cap)?;
            cx.storage.pep_set_node(&cx.owner, changed.clone()).await?;
            nodes.insert(node, changed);
            Ok(None)
        }
        Request::Default => {
            let default = Element::new("default", pubsub::OWNER).with_child(NodeConfig::default().to_form());
            Ok(Some(pubsub::wrap(pubsub::OWNER, default)))
        }
        Request::AffiliationsGet { node } => {
            let n = nodes.get(&node).ok_or(PubsubError::ItemNotFound)?;
            let affiliation = |jid: &BareJid, a: &str| {
                Element::new("affiliation", pubsub::OWNER)
                    .with_attr("jid", jid.as_str())
                    .with_attr("affiliation", a)
            };
            let mut list = Element::new("affiliations", pubsub::OWNER).with_attr("node", node.as_str());
            list.push_child(affiliation(&cx.owner, "owner"));
            for jid in &n.whitelist {
                list.push_child(affiliation(jid, "member"));
            }
            Ok(Some(pubsub::wrap(pubsub::OWNER, list)))
        }
        Request::AffiliationsSet { node, changes } => {
            let mut changed = nodes.get(&node).ok_or(PubsubError::ItemNotFound)?.clone();
            for (jid, affiliation) in changes {
                if jid == cx.owner {
                    return Err(PubsubError::NotAcceptable("the owner stays the owner".into()).into());
                }
                changed.whitelist.retain(|j| *j != jid);
                if affiliation == Affiliation::Member {
                    changed.whitelist.push(jid);
                }
            }
            changed.whitelist.sort();
            cx.storage.pep_set_node(&cx.owner, changed.clone()).await?;
            nodes.insert(node, changed);
            Ok(None)
        }
    }
}

/// XEP-0060 §7.1 as XEP-0163 §7.1 has it: checks, auto-create (with the
/// publish-options as its configuration), storage with trimming, then
/// the notification of the item. Items trimmed past `max_items` go
/// silently, as in Prosody and ejabberd: a retraction of the avatar
/// replaced would make clients drop the new one.
async fn publish(cx: &Cx, nodes: &mut NodeMap, p: Publish, out: &mut Outcome) -> IqResult {
    let cap = cx.settings.max_items;
    let xml = p.payload.to_string();
    if xml.len() > cx.settings.max_item_bytes {
        return Err(PubsubError::PayloadTooBig.into());
    }
    let create = match (nodes.get(&p.node), &p.options) {
        (Some(node), Some(options)) if !p.by_server => {
            options.check(&node.config, cap)?;
            None
        }
        (Some(_), _) => None,
        (None, _) if nodes.len() >= cx.settings.max_nodes => return Err(PubsubError::MaxNodesExceeded.into()),
        (None, options) => {
            let config = match options {
                Some(options) => options.apply(&NodeConfig::default(), cap)?,
                None => NodeConfig::default(),
            };
            Some(StoredNode {
                node: p.node.clone(),
                config,
                whitelist: Vec::new(),
            })
        }
    };
    let id = p.item_id.unwrap_or_else(crate::xep::sid::new_id);
    let item = StoredItem {
        id: id.clone(),
        xml,
        publisher: Some(cx.owner.clone()),
        published_ms: now_ms(),
    };
    let node = match &create {
        Some(created) => created.clone(),
        None => nodes[&p.node].clone(),
    };
    let config = &node.config;
    if let Some(keep) = config.kept(cap) {
        cx.storage
            .pep_publish(&cx.owner, &p.node, create.clone(), item, keep)
            .await?;
    } else if let Some(created) = &create {
        cx.storage.pep_set_node(&cx.owner, created.clone()).await?;
    }
    if let Some(created) = create {
        nodes.insert(p.node.clone(), created);
    }
    if p.node == ns::NICK {
        set_nick(cx, &p.payload).await;
    }
    if p.node == ns::AVATAR_METADATA && !p.by_server {
        match super::avatar::to_vcard(&*cx.storage, &cx.owner, &p.payload).await {
            Ok(photo) => out.photo = photo,
            Err(e) => log::error!("{}: the avatar published is not the vCard's photo: {e}", cx.owner),
        }
    }
    let payload = config.deliver_payloads.then_some(p.payload);
    let published = pubsub::event_items(&p.node, [pubsub::item(pubsub::EVENT, &id, payload)]);
    notice(cx, &node, published, &mut out.notices).await?;
    let publish = Element::new("publish", pubsub::NS)
        .with_attr("node", p.node.as_str())
        .with_child(pubsub::item(pubsub::NS, &id, None));
    Ok(Some(pubsub::wrap(pubsub::NS, publish)))
}

/// Queues the notification `child` of `node`'s event, unless the node
/// delivers none.
async fn notice(cx: &Cx, node: &StoredNode, child: Element, notices: &mut Vec<Notice>) -> Result<(), StanzaError> {
    if !node.config.deliver_notifications {
        return Ok(());
    }
    notices.push(Notice {
        node: node.node.clone(),
        only: audience(cx, node).await?,
        event: pubsub::event(child),
    });
    Ok(())
}

/// Who among the owner's followers `node`'s access model admits: `None`
/// for all of them (`presence`, and `open`, explicit subscriptions not
/// being offered). Roster groups are read at each use: they change
/// without the shard being told.
async fn audience(cx: &Cx, node: &StoredNode) -> Result<Option<HashSet<BareJid>>, StanzaError> {
    Ok(match node.config.access_model {
        AccessModel::Open | AccessModel::Presence => None,
        AccessModel::Whitelist => Some(node.whitelist.iter().cloned().collect()),
        AccessModel::Roster => {
            let roster = cx.storage.roster(&cx.owner).await?;
            let admitted = roster
                .items
                .into_iter()
                .filter(|i| may_see(node, &i.jid, Some(i.groups.as_slice())));
            Some(admitted.map(|i| i.jid).collect())
        }
    })
}

/// Refuses `viewer` (not the owner) a node's items, as XEP-0060 §6.5.7
/// to §6.5.9 answer.
async fn check_access(cx: &Cx, node: &StoredNode, viewer: Option<&BareJid>) -> Result<(), StanzaError> {
    let Some(viewer) = viewer.filter(|v| **v != cx.owner) else {
        return Ok(());
    };
    let refused: PubsubError = match node.config.access_model {
        AccessModel::Open => return Ok(()),
        AccessModel::Presence if cx.follows => return Ok(()),
        AccessModel::Presence => PubsubError::PresenceSubscriptionRequired,
        AccessModel::Whitelist if node.whitelist.contains(viewer) => return Ok(()),
        AccessModel::Whitelist => PubsubError::ClosedNode,
        AccessModel::Roster => {
            let item = cx.storage.roster_item(&cx.owner, viewer).await?;
            let groups = item.filter(|i| i.in_roster).map(|i| i.groups);
            if may_see(node, viewer, groups.as_deref()) {
                return Ok(());
            }
            PubsubError::NotInRosterGroup
        }
    };
    Err(refused.into())
}

async fn disco_items_of(cx: &Cx, nodes: &NodeMap, viewer: Option<&BareJid>) -> IqResult {
    let mut visible: Vec<&StoredNode> = nodes.values().collect();
    visible.sort_by(|a, b| a.node.cmp(&b.node));
    let mut query = Element::new("query", ns::DISCO_ITEMS);
    for node in visible {
        if check_access(cx, node, viewer).await.is_ok() {
            let item = Element::new("item", ns::DISCO_ITEMS)
                .with_attr("jid", cx.owner.as_str())
                .with_attr("node", node.node.as_str());
            query.push_child(item);
        }
    }
    Ok(Some(query))
}

/// XEP-0172's item id: one nickname per account, as clients publish it.
pub const NICK_ITEM: &str = "current";

/// XEP-0172's payload: `<nick/>` holding `nick`, empty for none (what a
/// client publishes to stop showing one).
pub fn nick_payload(nick: &str) -> Element {
    Element::new("nick", ns::NICK).with_text(nick)
}

/// XEP-0172 on the owner's behalf (`shoal user set --nick`): item
/// [`NICK_ITEM`] of node `ns::NICK`, notified as the owner's own publish
/// is, and the profile's nickname through [`set_nick`].
pub async fn publish_nick(router: &Router, owner: &BareJid, nick: &str) -> Result<(), StanzaError> {
    let item = Some(NICK_ITEM.to_owned());
    publish_as_server(router, owner, ns::NICK, item, nick_payload(nick), None).await?;
    Ok(())
}

/// XEP-0172: the nickname published is the profile's (the bind
/// extension's `nick`). Committed already: a failure here is logged.
async fn set_nick(cx: &Cx, payload: &Element) {
    if !payload.is("nick", ns::NICK) {
        return;
    }
    let nick = Some(payload.text().trim().to_owned()).filter(|n| !n.is_empty());
    let set = async {
        let profile = cx.storage.profile(&cx.owner).await?;
        if profile.nick != nick {
            cx.storage.set_profile(&cx.owner, nick, profile.photo_url).await?;
        }
        Ok::<_, StorageError>(())
    };
    if let Err(e) = set.await {
        log::error!("{}: cannot set the nickname published: {e}", cx.owner);
    }
}
