//! The storage interface the actors use. Shoal's server ships a SQLite
//! implementation; embedders can plug in their own. Every method returns a
//! future so that a backend never blocks an actor's event loop.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

pub use crate::error::StorageError;
use crate::jid::{BareJid, Jid};
use crate::muc::{Affiliation, StoredRoom};
use crate::roster::{ItemChange, Roster, RosterChange, RosterItem, RosterLimit, RosterLimits, RosterUpdate};
use crate::sasl::Credentials;
use crate::xep::blocking::Blocklist;
use crate::xep::mam::{self, ArchivePage, ArchiveQuery, ArchiveRow, MamPrefs};
use crate::xep::private;
use crate::xep::pubsub::{AccessModel, NodeConfig, SendLast};

pub type StorageFuture<T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send + 'static>>;

/// Decides a roster record's change from its current value; runs inside
/// the storage transaction, so the read and the write are one step.
pub type RosterFn = Box<dyn FnOnce(Option<RosterItem>) -> ItemChange + Send>;

/// The second change of [`Storage::update_roster_pair`]: it sees the first
/// update (to do nothing when that one changed nothing, or was refused).
pub type PairFn = Box<dyn FnOnce(&RosterUpdate, Option<RosterItem>) -> ItemChange + Send>;

/// What a user shows of themselves: set by `shoal user set` and from the vCard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub nick: Option<String>,
    pub photo_url: Option<String>,
    /// SHA-1 (hex) of the vCard photo, for XEP-0153 presence.
    pub photo_hash: Option<String>,
}

/// A PEP node (XEP-0163) of an account: its configuration and whitelist;
/// its items are kept apart ([`StoredItem`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredNode {
    pub node: String,
    pub config: NodeConfig,
    /// The JIDs of a whitelist node's members, sorted.
    pub whitelist: Vec<BareJid>,
}

/// One item of a PEP node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredItem {
    pub id: String,
    /// The one payload element, serialised with its namespace.
    pub xml: String,
    pub publisher: Option<BareJid>,
    pub published_ms: i64,
}

/// Accounts, each keyed by its bare JID (`user@domain`): every hosted
/// domain has accounts of its own.
pub trait Storage: Send + Sync + 'static {
    /// The stored keys of a user, or `None` when there is no such user.
    fn credentials(&self, user: &BareJid) -> StorageFuture<Option<Credentials>>;

    /// Creates an account; `false` when it exists already.
    fn create_user(&self, user: &BareJid, credentials: Credentials) -> StorageFuture<bool>;

    /// Replaces an account's keys; `false` when there is no such user.
    fn set_credentials(&self, user: &BareJid, credentials: Credentials) -> StorageFuture<bool>;

    /// Deletes an account and everything stored for it; `false` when there
    /// was no such user.
    fn delete_user(&self, user: &BareJid) -> StorageFuture<bool>;

    /// All accounts, of every domain, sorted.
    fn list_users(&self) -> StorageFuture<Vec<BareJid>>;

    /// The roster the user sees (records with `in_roster`), and its version.
    fn roster(&self, user: &BareJid) -> StorageFuture<Roster>;

    /// The changes since roster version `since`, with the current version;
    /// `None` when that version is unknown (the client gets the whole roster).
    fn roster_changes(&self, user: &BareJid, since: u64) -> StorageFuture<Option<(u64, Vec<RosterChange>)>>;

    /// One record, hidden ones (pending requests) included.
    fn roster_item(&self, user: &BareJid, contact: &BareJid) -> StorageFuture<Option<RosterItem>>;

    /// Changes one record in one transaction, bumping the roster version
    /// when what the user sees changes. For an unknown user nothing changes.
    /// A change that would take the user past the store's [`RosterLimits`]
    /// changes nothing and comes back with `refused` set.
    fn update_roster_item(&self, user: &BareJid, contact: &BareJid, change: RosterFn) -> StorageFuture<RosterUpdate>;

    /// Two local users' records for each other, in one transaction: first
    /// `user`'s record for `contact`, then `contact`'s record for `user`.
    /// Both commit or neither does, so that a crash cannot leave one side
    /// of a subscription changed and the other not. Limits as in
    /// [`Storage::update_roster_item`], for each side.
    fn update_roster_pair(
        &self,
        user: &BareJid,
        contact: &BareJid,
        change_user: RosterFn,
        change_contact: PairFn,
    ) -> StorageFuture<(RosterUpdate, RosterUpdate)>;

    /// Records with an inbound request waiting for the user's answer.
    fn pending_requests(&self, user: &BareJid) -> StorageFuture<Vec<RosterItem>>;

    /// The stored vCard (XEP-0054), as XML.
    fn vcard(&self, user: &BareJid) -> StorageFuture<Option<String>>;

    /// Stores a vCard and the profile derived from it.
    fn set_vcard(&self, user: &BareJid, vcard: String, profile: Profile) -> StorageFuture<()>;

    fn profile(&self, user: &BareJid) -> StorageFuture<Profile>;

    /// Sets nickname and photo URL (the photo hash comes from the vCard);
    /// `false` when there is no such user.
    fn set_profile(&self, user: &BareJid, nick: Option<String>, photo_url: Option<String>) -> StorageFuture<bool>;

    /// Stores a message for a user who is offline (XEP-0160), after those
    /// stored before; `false` when there is no such user or `max` are
    /// stored already (0: no limit). A storage without offline messages
    /// keeps nothing, and the sender gets an error.
    fn store_offline(&self, _user: &BareJid, _message: String, _max: usize) -> StorageFuture<bool> {
        Box::pin(std::future::ready(Ok(false)))
    }

    /// The user's stored messages, oldest first, each with its sequence
    /// number.
    fn offline_messages(&self, _user: &BareJid) -> StorageFuture<Vec<(i64, String)>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Forgets the user's stored messages up to sequence number `upto`
    /// (delivered).
    fn delete_offline(&self, _user: &BareJid, _upto: i64) -> StorageFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// The JIDs the user blocked (XEP-0191), sorted. A storage without
    /// blocklists has none.
    fn blocklist(&self, _user: &BareJid) -> StorageFuture<Vec<Jid>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Adds JIDs to the user's blocklist; `false` when there is no such
    /// user, or the storage keeps no blocklists (the client is told).
    fn block(&self, _user: &BareJid, _jids: Vec<Jid>) -> StorageFuture<bool> {
        Box::pin(std::future::ready(Ok(false)))
    }

    /// Removes JIDs from the user's blocklist (`None`: all of them); the
    /// ones that were there.
    fn unblock(&self, _user: &BareJid, _jids: Option<Vec<Jid>>) -> StorageFuture<Vec<Jid>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Archives one message (XEP-0313): its rows (the recipient's copy,
    /// the sender's, or both), all committed or none. Each row is kept only
    /// where [`mam::keeps`] says so (the owner's preferences, roster and
    /// blocklist, as stored when the row is written) and where its owner
    /// exists. Rows are taken in the order of the calls, so the rows
    /// should be queued when this is called, not when the future is first
    /// polled. A storage without an archive keeps nothing.
    fn archive(&self, _rows: Vec<ArchiveRow>) -> StorageFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// A page of the user's archive, answered as [`mam::page_of`] answers
    /// it; `None` when an id the query names is not in the archive.
    fn archive_query(&self, _user: &BareJid, _query: ArchiveQuery) -> StorageFuture<Option<ArchivePage>> {
        Box::pin(std::future::ready(Ok(Some(ArchivePage::empty()))))
    }

    /// The user's archiving preferences; `None` when never set.
    fn mam_prefs(&self, _user: &BareJid) -> StorageFuture<Option<MamPrefs>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Stores the user's archiving preferences; `false` when there is no
    /// such user, or the storage keeps no archive.
    fn set_mam_prefs(&self, _user: &BareJid, _prefs: MamPrefs) -> StorageFuture<bool> {
        Box::pin(std::future::ready(Ok(false)))
    }

    /// Forgets archived messages received before `before_ms` (ms since
    /// the epoch): the archive's retention.
    fn purge_archive(&self, _before_ms: i64) -> StorageFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// The owner's PEP nodes (XEP-0163), without their items. A storage
    /// without PEP keeps nothing: nodes live until the owner's state is
    /// dropped, and items are only notified.
    fn pep_nodes(&self, _owner: &BareJid) -> StorageFuture<Vec<StoredNode>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Creates a node, or replaces its configuration and whitelist.
    fn pep_set_node(&self, _owner: &BareJid, _node: StoredNode) -> StorageFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Deletes a node and its items; `false` when there was none.
    fn pep_delete_node(&self, _owner: &BareJid, _node: &str) -> StorageFuture<bool> {
        Box::pin(std::future::ready(Ok(false)))
    }

    /// Stores an item in one transaction: the node first if `create` is
    /// given, then the item (an id published again becomes the newest),
    /// then removes the oldest items past `keep`, whose ids it returns.
    fn pep_publish(
        &self,
        _owner: &BareJid,
        _node: &str,
        _create: Option<StoredNode>,
        _item: StoredItem,
        _keep: u32,
    ) -> StorageFuture<Vec<String>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// A node's items, newest first: those of `ids` if given, at most
    /// `max` if given.
    fn pep_items(
        &self,
        _owner: &BareJid,
        _node: &str,
        _ids: Option<Vec<String>>,
        _max: Option<u32>,
    ) -> StorageFuture<Vec<StoredItem>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Removes one item; `false` when there was none.
    fn pep_retract(&self, _owner: &BareJid, _node: &str, _id: &str) -> StorageFuture<bool> {
        Box::pin(std::future::ready(Ok(false)))
    }

    /// Removes all of a node's items.
    fn pep_purge(&self, _owner: &BareJid, _node: &str) -> StorageFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// The newest item of each of `nodes` of each of `owners` that sends
    /// its last item on presence (`on_sub_and_presence`), where the viewer
    /// is the owner or [`may_see`] it: what a session newly interested in
    /// those nodes gets. `owners` are the viewer's followees (and the
    /// viewer), so the presence model admits the viewer.
    fn pep_last_items(
        &self,
        _viewer: &BareJid,
        _owners: Vec<BareJid>,
        _nodes: Vec<String>,
    ) -> StorageFuture<Vec<(BareJid, String, StoredItem)>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// The user's private XML element (XEP-0049) stored under `key`
    /// ([`private::key_of`]), as XML. A storage without private XML has none.
    fn private_xml(&self, _user: &BareJid, _key: &str) -> StorageFuture<Option<String>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Stores (`Some`) or forgets (`None`) the user's element under `key`.
    /// `false` when nothing was stored: there is no such user, the user
    /// has [`private::MAX_KEYS`] other keys already, or the storage keeps
    /// no private XML (the client is told).
    fn set_private_xml(&self, _user: &BareJid, _key: &str, _xml: Option<String>) -> StorageFuture<bool> {
        Box::pin(std::future::ready(Ok(false)))
    }

    /// The persistent rooms of the MUC service at `service` (XEP-0045),
    /// each with its affiliations. A storage without rooms keeps none:
    /// every room is then temporary across restarts.
    fn muc_rooms(&self, _service: &str) -> StorageFuture<Vec<StoredRoom>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    /// Stores a persistent room (created, or its configuration and
    /// subject replaced), and adds the affiliations `room` carries (a
    /// room made persistent gives them all, later saves none).
    fn muc_save_room(&self, _service: &str, _room: StoredRoom) -> StorageFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Forgets a room and its affiliations.
    fn muc_delete_room(&self, _service: &str, _name: &str) -> StorageFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Sets one user's affiliation with a stored room, with its reason;
    /// `None` removes it. Nothing changes for a room not stored.
    fn muc_set_affiliation(
        &self,
        _service: &str,
        _room: &str,
        _jid: &BareJid,
        _affiliation: Option<(Affiliation, Option<String>)>,
    ) -> StorageFuture<()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// True when the access model of `node` admits `viewer`, one of its
/// owner's followers (not the owner): any follower, or a whitelisted one,
/// or one in an admitted roster group (`groups`: the viewer's groups in
/// the owner's roster, `None` when not in it).
pub fn may_see(node: &StoredNode, viewer: &BareJid, groups: Option<&[String]>) -> bool {
    match node.config.access_model {
        AccessModel::Open | AccessModel::Presence => true,
        AccessModel::Whitelist => node.whitelist.contains(viewer),
        AccessModel::Roster => groups.is_some_and(|g| g.iter().any(|g| node.config.roster_groups.contains(g))),
    }
}

/// Everything in memory: for tests and for embedders that keep nothing.
/// Roster changes are not journalled: a versioned roster get that is out
/// of date gets the whole roster. Rosters are capped by
/// [`RosterLimits::default`] unless set otherwise.
#[derive(Default)]
pub struct MemoryStorage {
    users: Mutex<BTreeMap<BareJid, MemoryUser>>,
    limits: RosterLimits,
    /// MUC rooms by service and name: not accounts' data.
    muc: Mutex<MemoryRooms>,
}

/// MUC rooms by (service, name).
type MemoryRooms = BTreeMap<(String, String), StoredRoom>;

struct MemoryUser {
    credentials: Credentials,
    roster_version: u64,
    roster: HashMap<BareJid, RosterItem>,
    vcard: Option<String>,
    profile: Profile,
    /// Offline messages with their sequence numbers, oldest first.
    offline: std::collections::VecDeque<(i64, String)>,
    next_offline: i64,
    blocklist: std::collections::BTreeSet<Jid>,
    /// The message archive, oldest first.
    archive: Vec<ArchiveRow>,
    mam_prefs: Option<MamPrefs>,
    /// Private XML (XEP-0049) by key.
    private: BTreeMap<String, String>,
    /// PEP nodes by name, each with its items, oldest first.
    pep: BTreeMap<String, (StoredNode, Vec<StoredItem>)>,
}

/// One record change against a user held in memory.
fn update_memory_item(
    user: Option<&mut MemoryUser>,
    contact: &BareJid,
    limits: &RosterLimits,
    change: impl FnOnce(Option<RosterItem>) -> ItemChange,
) -> RosterUpdate {
    let Some(user) = user else {
        return RosterUpdate {
            before: None,
            after: None,
            version: 0,
            refused: None,
        };
    };
    let before = user.roster.get(contact).cloned();
    let after = match change(before.clone()) {
        ItemChange::Keep => before.clone(),
        ItemChange::Put(item) => Some(item),
        ItemChange::Delete => None,
    };
    let count = |limit: RosterLimit| -> Result<usize, ()> {
        let hidden = match limit {
            RosterLimit::Items => false,
            RosterLimit::Pending => true,
        };
        Ok(user.roster.values().filter(|i| i.in_roster != hidden).count())
    };
    let refused = limits.exceeded(&before, &after, count).unwrap_or(None);
    if refused.is_some() {
        return RosterUpdate {
            after: before.clone(),
            before,
            version: user.roster_version,
            refused,
        };
    }
    match &after {
        Some(item) => {
            user.roster.insert(contact.clone(), item.clone());
        }
        None => {
            user.roster.remove(contact);
        }
    }
    let mut update = RosterUpdate {
        before,
        after,
        version: user.roster_version,
        refused: None,
    };
    if update.visible_change().is_some() {
        user.roster_version += 1;
        update.version = user.roster_version;
    }
    update
}

impl MemoryStorage {
    /// Caps rosters at `limits` instead of the defaults.
    pub fn with_roster_limits(mut self, limits: RosterLimits) -> Self {
        self.limits = limits;
        self
    }

    fn with_rooms<T: Send + 'static>(&self, f: impl FnOnce(&mut MemoryRooms) -> T) -> StorageFuture<T> {
        let out = match self.muc.lock() {
            Ok(mut rooms) => Ok(f(&mut rooms)),
            Err(_) => Err(StorageError::Unavailable),
        };
        Box::pin(std::future::ready(out))
    }

    fn with<T: Send + 'static>(&self, f: impl FnOnce(&mut BTreeMap<BareJid, MemoryUser>) -> T) -> StorageFuture<T> {
        let out = match self.users.lock() {
            Ok(mut users) => Ok(f(&mut users)),
            Err(_) => Err(StorageError::Unavailable),
        };
        Box::pin(std::future::ready(out))
    }
}

impl Storage for MemoryStorage {
    fn credentials(&self, account: &BareJid) -> StorageFuture<Option<Credentials>> {
        let account = account.clone();
        self.with(move |u| u.get(&account).map(|u| u.credentials.clone()))
    }

    fn create_user(&self, account: &BareJid, credentials: Credentials) -> StorageFuture<bool> {
        let account = account.clone();
        self.with(move |u| match u.entry(account) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(MemoryUser {
                    credentials,
                    roster_version: 0,
                    roster: HashMap::new(),
                    vcard: None,
                    profile: Profile::default(),
                    offline: Default::default(),
                    next_offline: 1,
                    blocklist: Default::default(),
                    archive: Vec::new(),
                    mam_prefs: None,
                    private: BTreeMap::new(),
                    pep: BTreeMap::new(),
                });
                true
            }
        })
    }

    fn set_credentials(&self, account: &BareJid, credentials: Credentials) -> StorageFuture<bool> {
        let account = account.clone();
        self.with(move |u| match u.get_mut(&account) {
            Some(c) => {
                c.credentials = credentials;
                true
            }
            None => false,
        })
    }

    fn delete_user(&self, account: &BareJid) -> StorageFuture<bool> {
        let account = account.clone();
        self.with(move |u| u.remove(&account).is_some())
    }

    fn list_users(&self) -> StorageFuture<Vec<BareJid>> {
        self.with(|u| u.keys().cloned().collect())
    }

    fn roster(&self, account: &BareJid) -> StorageFuture<Roster> {
        let account = account.clone();
        self.with(move |u| match u.get(&account) {
            None => Roster::default(),
            Some(user) => {
                let mut items: Vec<RosterItem> = user.roster.values().filter(|i| i.in_roster).cloned().collect();
                items.sort_by(|a, b| a.jid.cmp(&b.jid));
                Roster {
                    version: user.roster_version,
                    items,
                }
            }
        })
    }

    fn roster_changes(&self, account: &BareJid, since: u64) -> StorageFuture<Option<(u64, Vec<RosterChange>)>> {
        let account = account.clone();
        self.with(move |u| {
            let version = u.get(&account).map_or(0, |u| u.roster_version);
            (since == version).then(|| (version, Vec::new()))
        })
    }

    fn roster_item(&self, account: &BareJid, contact: &BareJid) -> StorageFuture<Option<RosterItem>> {
        let (account, contact) = (account.clone(), contact.clone());
        self.with(move |u| u.get(&account).and_then(|u| u.roster.get(&contact).cloned()))
    }

    fn update_roster_item(
        &self,
        account: &BareJid,
        contact: &BareJid,
        change: RosterFn,
    ) -> StorageFuture<RosterUpdate> {
        let (account, contact, limits) = (account.clone(), contact.clone(), self.limits);
        self.with(move |u| update_memory_item(u.get_mut(&account), &contact, &limits, change))
    }

    fn update_roster_pair(
        &self,
        user: &BareJid,
        contact: &BareJid,
        change_user: RosterFn,
        change_contact: PairFn,
    ) -> StorageFuture<(RosterUpdate, RosterUpdate)> {
        let (user, contact, limits) = (user.clone(), contact.clone(), self.limits);
        // One lock held for both: nobody sees one side changed alone.
        self.with(move |u| {
            let first = update_memory_item(u.get_mut(&user), &contact, &limits, change_user);
            let second = update_memory_item(u.get_mut(&contact), &user, &limits, |item| change_contact(&first, item));
            (first, second)
        })
    }

    fn pending_requests(&self, account: &BareJid) -> StorageFuture<Vec<RosterItem>> {
        let account = account.clone();
        self.with(move |u| {
            u.get(&account)
                .map(|u| u.roster.values().filter(|i| i.state.pending_in).cloned().collect())
                .unwrap_or_default()
        })
    }

    fn vcard(&self, account: &BareJid) -> StorageFuture<Option<String>> {
        let account = account.clone();
        self.with(move |u| u.get(&account).and_then(|u| u.vcard.clone()))
    }

    fn set_vcard(&self, account: &BareJid, vcard: String, profile: Profile) -> StorageFuture<()> {
        let account = account.clone();
        self.with(move |u| {
            if let Some(user) = u.get_mut(&account) {
                user.vcard = Some(vcard);
                user.profile = profile;
            }
        })
    }

    fn profile(&self, account: &BareJid) -> StorageFuture<Profile> {
        let account = account.clone();
        self.with(move |u| u.get(&account).map(|u| u.profile.clone()).unwrap_or_default())
    }

    fn set_profile(&self, account: &BareJid, nick: Option<String>, photo_url: Option<String>) -> StorageFuture<bool> {
        let account = account.clone();
        self.with(move |u| match u.get_mut(&account) {
            Some(user) => {
                user.profile.nick = nick;
                user.profile.photo_url = photo_url;
                true
            }
            None => false,
        })
    }

    fn store_offline(&self, account: &BareJid, message: String, max: usize) -> StorageFuture<bool> {
        let account = account.clone();
        self.with(move |u| match u.get_mut(&account) {
            Some(user) if max == 0 || user.offline.len() < max => {
                user.offline.push_back((user.next_offline, message));
                user.next_offline += 1;
                true
            }
            _ => false,
        })
    }

    fn offline_messages(&self, account: &BareJid) -> StorageFuture<Vec<(i64, String)>> {
        let account = account.clone();
        self.with(move |u| {
            u.get(&account)
                .map(|u| u.offline.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    fn delete_offline(&self, account: &BareJid, upto: i64) -> StorageFuture<()> {
        let account = account.clone();
        self.with(move |u| {
            if let Some(user) = u.get_mut(&account) {
                user.offline.retain(|(seq, _)| *seq > upto);
            }
        })
    }

    fn blocklist(&self, account: &BareJid) -> StorageFuture<Vec<Jid>> {
        let account = account.clone();
        self.with(move |u| {
            u.get(&account)
                .map(|u| u.blocklist.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    fn block(&self, account: &BareJid, jids: Vec<Jid>) -> StorageFuture<bool> {
        let account = account.clone();
        self.with(move |u| match u.get_mut(&account) {
            Some(user) => {
                user.blocklist.extend(jids);
                true
            }
            None => false,
        })
    }

    fn unblock(&self, account: &BareJid, jids: Option<Vec<Jid>>) -> StorageFuture<Vec<Jid>> {
        let account = account.clone();
        self.with(move |u| {
            let Some(user) = u.get_mut(&account) else {
                return Vec::new();
            };
            match jids {
                None => std::mem::take(&mut user.blocklist).into_iter().collect(),
                Some(jids) => jids.into_iter().filter(|j| user.blocklist.remove(j)).collect(),
            }
        })
    }

    fn archive(&self, rows: Vec<ArchiveRow>) -> StorageFuture<()> {
        self.with(move |u| {
            for row in rows {
                let Some(user) = u.get_mut(&row.owner) else {
                    continue;
                };
                let in_roster = || {
                    let contact = row.with.to_bare();
                    Ok::<_, ()>(user.roster.get(&contact).is_some_and(|i| i.in_roster))
                };
                let blocklist = || Ok(Blocklist::new(user.blocklist.iter().cloned()));
                if mam::keeps(&row, user.mam_prefs.as_ref(), in_roster, blocklist) == Ok(true) {
                    user.archive.push(row);
                }
            }
        })
    }

    fn archive_query(&self, account: &BareJid, query: ArchiveQuery) -> StorageFuture<Option<ArchivePage>> {
        let account = account.clone();
        self.with(move |u| match u.get(&account) {
            Some(user) => mam::page_of(&user.archive, &query),
            None => Some(ArchivePage::empty()),
        })
    }

    fn mam_prefs(&self, account: &BareJid) -> StorageFuture<Option<MamPrefs>> {
        let account = account.clone();
        self.with(move |u| u.get(&account).and_then(|u| u.mam_prefs.clone()))
    }

    fn set_mam_prefs(&self, account: &BareJid, prefs: MamPrefs) -> StorageFuture<bool> {
        let account = account.clone();
        self.with(move |u| match u.get_mut(&account) {
            Some(user) => {
                user.mam_prefs = Some(prefs);
                true
            }
            None => false,
        })
    }

    fn purge_archive(&self, before_ms: i64) -> StorageFuture<()> {
        self.with(move |u| {
            for user in u.values_mut() {
                user.archive.retain(|r| r.ts_ms >= before_ms);
            }
        })
    }

    fn pep_nodes(&self, owner: &BareJid) -> StorageFuture<Vec<StoredNode>> {
        let owner = owner.clone();
        self.with(move |u| {
            u.get(&owner)
                .map(|u| u.pep.values().map(|(n, _)| n.clone()).collect())
                .unwrap_or_default()
        })
    }

    fn pep_set_node(&self, owner: &BareJid, node: StoredNode) -> StorageFuture<()> {
        let owner = owner.clone();
        self.with(move |u| {
            if let Some(user) = u.get_mut(&owner) {
                match user.pep.get_mut(&node.node) {
                    Some((stored, _)) => *stored = node,
                    None => {
                        user.pep.insert(node.node.clone(), (node, Vec::new()));
                    }
                }
            }
        })
    }

    fn pep_delete_node(&self, owner: &BareJid, node: &str) -> StorageFuture<bool> {
        let (owner, node) = (owner.clone(), node.to_owned());
        self.with(move |u| u.get_mut(&owner).is_some_and(|user| user.pep.remove(&node).is_some()))
    }

    fn pep_publish(
        &self,
        owner: &BareJid,
        node: &str,
        create: Option<StoredNode>,
        item: StoredItem,
        keep: u32,
    ) -> StorageFuture<Vec<String>> {
        let (owner, node) = (owner.clone(), node.to_owned());
        self.with(move |u| {
            let Some(user) = u.get_mut(&owner) else {
                return Vec::new();
            };
            if let Some(created) = create {
                user.pep.entry(node.clone()).or_insert_with(|| (created, Vec::new()));
            }
            let Some((_, items)) = user.pep.get_mut(&node) else {
                return Vec::new();
            };
            items.retain(|i| i.id != item.id);
            items.push(item);
            let excess = items.len().saturating_sub(keep as usize);
            items.drain(..excess).map(|i| i.id).collect()
        })
    }

    fn pep_items(
        &self,
        owner: &BareJid,
        node: &str,
        ids: Option<Vec<String>>,
        max: Option<u32>,
    ) -> StorageFuture<Vec<StoredItem>> {
        let (owner, node) = (owner.clone(), node.to_owned());
        self.with(move |u| {
            let items = u.get(&owner).and_then(|u| u.pep.get(&node)).map(|(_, i)| i.as_slice());
            let wanted = |i: &&StoredItem| ids.as_ref().is_none_or(|ids| ids.contains(&i.id));
            let newest_first = items.unwrap_or_default().iter().rev().filter(wanted).cloned();
            newest_first.take(max.map_or(usize::MAX, |m| m as usize)).collect()
        })
    }

    fn pep_retract(&self, owner: &BareJid, node: &str, id: &str) -> StorageFuture<bool> {
        let (owner, node, id) = (owner.clone(), node.to_owned(), id.to_owned());
        self.with(move |u| {
            let Some((_, items)) = u.get_mut(&owner).and_then(|u| u.pep.get_mut(&node)) else {
                return false;
            };
            let before = items.len();
            items.retain(|i| i.id != id);
            items.len() < before
        })
    }

    fn pep_purge(&self, owner: &BareJid, node: &str) -> StorageFuture<()> {
        let (owner, node) = (owner.clone(), node.to_owned());
        self.with(move |u| {
            if let Some((_, items)) = u.get_mut(&owner).and_then(|u| u.pep.get_mut(&node)) {
                items.clear();
            }
        })
    }

    fn pep_last_items(
        &self,
        viewer: &BareJid,
        owners: Vec<BareJid>,
        nodes: Vec<String>,
    ) -> StorageFuture<Vec<(BareJid, String, StoredItem)>> {
        let viewer = viewer.clone();
        self.with(move |u| {
            let mut out = Vec::new();
            for owner in &owners {
                let Some(user) = u.get(owner) else { continue };
                let groups = user
                    .roster
                    .get(&viewer)
                    .filter(|i| i.in_roster)
                    .map(|i| i.groups.as_slice());
                for name in &nodes {
                    let Some((node, items)) = user.pep.get(name) else {
                        continue;
                    };
                    let Some(last) = items.last() else { continue };
                    let sends = node.config.send_last == SendLast::OnSubAndPresence;
                    if sends && (*owner == viewer || may_see(node, &viewer, groups)) {
                        out.push((owner.clone(), name.clone(), last.clone()));
                    }
                }
            }
            out
        })
    }

    fn private_xml(&self, account: &BareJid, key: &str) -> StorageFuture<Option<String>> {
        let (account, key) = (account.clone(), key.to_owned());
        self.with(move |u| u.get(&account).and_then(|u| u.private.get(&key).cloned()))
    }

    fn set_private_xml(&self, account: &BareJid, key: &str, xml: Option<String>) -> StorageFuture<bool> {
        let (account, key) = (account.clone(), key.to_owned());
        self.with(move |u| {
            let Some(user) = u.get_mut(&account) else {
                return false;
            };
            match xml {
                None => {
                    user.private.remove(&key);
                    true
                }
                Some(_) if !user.private.contains_key(&key) && user.private.len() >= private::MAX_KEYS => false,
                Some(xml) => {
                    user.private.insert(key, xml);
                    true
                }
            }
        })
    }

    fn muc_rooms(&self, service: &str) -> StorageFuture<Vec<StoredRoom>> {
        let service = service.to_owned();
        self.with_rooms(move |rooms| {
            rooms
                .iter()
                .filter(|((s, _), _)| *s == service)
                .map(|(_, room)| room.clone())
                .collect()
        })
    }

    fn muc_save_room(&self, service: &str, room: StoredRoom) -> StorageFuture<()> {
        let key = (service.to_owned(), room.name.clone());
        self.with_rooms(move |rooms| match rooms.get_mut(&key) {
            Some(stored) => {
                for (jid, affiliation, reason) in room.affiliations {
                    stored.affiliations.retain(|(j, _, _)| *j != jid);
                    stored.affiliations.push((jid, affiliation, reason));
                }
                stored.config = room.config;
                stored.subject = room.subject;
                stored.subject_by = room.subject_by;
            }
            None => {
                rooms.insert(key, room);
            }
        })
    }

    fn muc_delete_room(&self, service: &str, name: &str) -> StorageFuture<()> {
        let key = (service.to_owned(), name.to_owned());
        self.with_rooms(move |rooms| {
            rooms.remove(&key);
        })
    }

    fn muc_set_affiliation(
        &self,
        service: &str,
        room: &str,
        jid: &BareJid,
        affiliation: Option<(Affiliation, Option<String>)>,
    ) -> StorageFuture<()> {
        let (key, jid) = ((service.to_owned(), room.to_owned()), jid.clone());
        self.with_rooms(move |rooms| {
            if let Some(stored) = rooms.get_mut(&key) {
                stored.affiliations.retain(|(j, _, _)| *j != jid);
                if let Some((a, reason)) = affiliation {
                    stored.affiliations.push((jid, a, reason));
                }
            }
        })
    }
}
