//! XEP-0313: Message Archive Management (`urn:xmpp:mam:2`, with the
//! `#extended` fields and `<flip-page/>`). Every local account has an
//! archive of the `chat` messages it sent and received (and of `normal`
//! ones with a body), so that each of its devices can catch up on the
//! conversation, and its clients page through it with XEP-0059.
//!
//! A message is archived *before* it is delivered: [`prepare`] stamps the
//! recipient's XEP-0359 `<stanza-id/>` (the recipient's archive files the
//! message under that id, so a client can match what it was delivered
//! with what it finds in the archive) and builds the rows, and
//! [`Pending::run`] routes the message once storage has committed them. A
//! message a client was told the server has (XEP-0198) never exists only
//! in memory. Storage groups the commits of many messages (the SQLite
//! store commits up to hundreds in one transaction), so this costs no
//! fsync per message.
//!
//! What is kept is each owner's choice (§6, preferences): always, never,
//! or only with contacts in the roster, with lists of JIDs always and
//! never archived; the server's default applies until the owner chooses.
//! The storage applies the choice when it writes ([`keeps`]), in the same
//! transaction, so a message costs no extra look-ups on its way.
//! A message with a XEP-0334 `<no-store/>` or `<no-permanent-store/>`
//! hint is not archived, nor one from a JID the recipient blocked.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use quick_xml::escape::escape;

use crate::error::{StanzaCondition, StanzaError};
use crate::iq_handler::{ready, IqFuture, IqHandler, IqRequest};
use crate::jid::{BareJid, FullJid, Jid};
use crate::ns;
use crate::router::Router;
use crate::stanza::{Kind, MessageType, Stanza};
use crate::xep::blocking::Blocklist;
use crate::xep::{carbons, forms, offline, rsm, sid};
use crate::xml::Element;

pub const NS: &str = "urn:xmpp:mam:2";
/// The `before-id`, `after-id` and `ids` fields, and `<flip-page/>`.
pub const EXTENDED: &str = "urn:xmpp:mam:2#extended";
/// A page's size when the client does not say.
pub const DEFAULT_PAGE: usize = 50;
/// JIDs in each of a user's `always` and `never` lists, at most.
pub const MAX_PREFS_JIDS: usize = 1000;

/// What is archived for an owner who has not said (§6.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DefaultPolicy {
    /// Every message.
    #[default]
    Always,
    /// None.
    Never,
    /// Messages exchanged with contacts in the owner's roster.
    Roster,
}

impl DefaultPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::Always => "always",
            DefaultPolicy::Never => "never",
            DefaultPolicy::Roster => "roster",
        }
    }

    pub fn parse(s: &str) -> Option<DefaultPolicy> {
        match s {
            "always" => Some(DefaultPolicy::Always),
            "never" => Some(DefaultPolicy::Never),
            "roster" => Some(DefaultPolicy::Roster),
            _ => None,
        }
    }
}

/// The router's archiving settings. Off unless the host program turns
/// it on ([`Router::with_mam`]): an embedder's storage may keep no archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MamSettings {
    pub enabled: bool,
    /// For owners who have not set preferences.
    pub default: DefaultPolicy,
    /// The largest page a query gets, whatever it asks for.
    pub max_page: usize,
}

impl Default for MamSettings {
    fn default() -> Self {
        MamSettings {
            enabled: false,
            default: DefaultPolicy::Always,
            max_page: 250,
        }
    }
}

/// An owner's archiving preferences (§6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MamPrefs {
    pub default: DefaultPolicy,
    /// JIDs whose messages are always archived...
    pub always: Vec<Jid>,
    /// ...and never. A bare JID stands for all its resources.
    pub never: Vec<Jid>,
}

/// What preferences say of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    Yes,
    No,
    /// Yes if the other party is in the owner's roster.
    IfInRoster,
}

impl MamPrefs {
    /// The server's default, with empty lists.
    pub fn new(default: DefaultPolicy) -> MamPrefs {
        MamPrefs {
            default,
            always: Vec::new(),
            never: Vec::new(),
        }
    }

    /// Whether a message exchanged with `with` is archived. `never` wins
    /// over `always`: a JID on both lists is not archived.
    pub fn wants(&self, with: &Jid) -> Wanted {
        let bare = bare_str(with);
        let named = |list: &[Jid]| list.iter().any(|j| j == with || (j.is_bare() && j.as_str() == bare));
        if named(&self.never) {
            return Wanted::No;
        }
        if named(&self.always) {
            return Wanted::Yes;
        }
        match self.default {
            DefaultPolicy::Always => Wanted::Yes,
            DefaultPolicy::Never => Wanted::No,
            DefaultPolicy::Roster => Wanted::IfInRoster,
        }
    }
}

/// `node@domain` of a JID, without allocating: node and domain hold no
/// '/', so the first one starts the resource.
fn bare_str(jid: &Jid) -> &str {
    let s = jid.as_str();
    s.split('/').next().unwrap_or(s)
}

/// Which way an archived message went, from its owner's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received by the owner.
    In,
    /// Sent by the owner.
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "in" => Some(Direction::In),
            "out" => Some(Direction::Out),
            _ => None,
        }
    }
}

/// One copy of a message for one owner's archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveRow {
    /// The local account whose archive it is.
    pub owner: BareJid,
    /// Its id in that archive: unique there, random (XEP-0359 §6).
    pub id: String,
    /// When the server received it, in milliseconds since the epoch.
    pub ts_ms: i64,
    /// The other party: the sender of a received message, the recipient
    /// of a sent one, as the message names them (full or bare).
    pub with: Jid,
    pub direction: Direction,
    /// The message as serialised on a client stream.
    pub xml: String,
    /// The server's default, for an owner with no preferences.
    pub default: DefaultPolicy,
}

/// A query of one owner's archive: filters (§4.1), then a page of what
/// they leave (XEP-0059).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveQuery {
    /// A bare JID matches every resource of the other party; a full one,
    /// only that resource.
    pub with: Option<Jid>,
    /// Received at or after (ms since the epoch)...
    pub start_ms: Option<i64>,
    /// ...and at or before.
    pub end_ms: Option<i64>,
    /// Archived after (before) the message with this id, which must exist.
    pub after_id: Option<String>,
    pub before_id: Option<String>,
    /// Only these ids (ids not in the archive are left out).
    pub ids: Option<Vec<String>>,
    pub cursor: rsm::Cursor,
    /// Messages in the page, at most.
    pub max: usize,
}

impl ArchiveQuery {
    /// True when `row` passes the filters (the id bounds aside).
    pub fn matches(&self, row: &ArchiveRow) -> bool {
        let with = self.with.as_ref().is_none_or(|w| {
            if w.is_bare() {
                bare_str(&row.with) == w.as_str()
            } else {
                row.with == *w
            }
        });
        with && self.start_ms.is_none_or(|s| row.ts_ms >= s)
            && self.end_ms.is_none_or(|e| row.ts_ms <= e)
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&row.id))
    }
}

/// An archived message as a query finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedMessage {
    pub id: String,
    pub ts_ms: i64,
    pub xml: String,
}

/// A page of a query's results, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivePage {
    pub messages: Vec<ArchivedMessage>,
    /// Messages that pass the filters, in all.
    pub count: usize,
    /// How many of those come before the page's first.
    pub first_index: usize,
    /// The page reaches the end of the results in its direction: the
    /// newest paging forwards, the oldest paging backwards.
    pub complete: bool,
}

impl ArchivePage {
    /// No results at all.
    pub fn empty() -> ArchivePage {
        ArchivePage {
            messages: Vec::new(),
            count: 0,
            first_index: 0,
            complete: true,
        }
    }
}

/// Runs `query` over one owner's archive held in memory (oldest first):
/// [`crate::storage::MemoryStorage`]'s, and the reference any storage
/// answers as. `None`: an id the query names is not in the archive.
pub fn page_of(rows: &[ArchiveRow], query: &ArchiveQuery) -> Option<ArchivePage> {
    let pos = |id: &str| rows.iter().position(|r| r.id == id);
    let lo = match &query.after_id {
        Some(id) => pos(id)? + 1,
        None => 0,
    };
    let hi = match &query.before_id {
        Some(id) => pos(id)?,
        None => rows.len(),
    };
    let cursor = match &query.cursor {
        rsm::Cursor::After(id) | rsm::Cursor::Before(id) => Some(pos(id)?),
        _ => None,
    };
    // Positions in `rows` of the messages that pass the filters.
    let matching: Vec<usize> = (lo..hi.max(lo)).filter(|&i| query.matches(&rows[i])).collect();
    let count = matching.len();
    // The part of `matching` the cursor leaves.
    let (start, end) = match (&query.cursor, cursor) {
        (rsm::Cursor::Index(n), _) => ((*n).min(count), count),
        (rsm::Cursor::After(_), Some(p)) => (matching.partition_point(|&i| i <= p), count),
        (rsm::Cursor::Before(_), Some(p)) => (0, matching.partition_point(|&i| i < p)),
        _ => (0, count),
    };
    let take = query.max.min(end - start);
    let (from, to) = if query.cursor.backwards() {
        (end - take, end)
    } else {
        (start, start + take)
    };
    let messages = matching[from..to]
        .iter()
        .map(|&i| ArchivedMessage {
            id: rows[i].id.clone(),
            ts_ms: rows[i].ts_ms,
            xml: rows[i].xml.clone(),
        })
        .collect();
    Some(ArchivePage {
        messages,
        count,
        first_index: from,
        complete: if query.cursor.backwards() {
            from == start
        } else {
            to == end
        },
    })
}

/// Whether a storage keeps `row`: the owner's preferences (`None`: never
/// set, the row's default applies), then, for a received message, the
/// owner's blocklist (XEP-0191: what a blocked JID sends never reached
/// the owner). Each look-up runs only when needed.
pub fn keeps<E>(
    row: &ArchiveRow,
    prefs: Option<&MamPrefs>,
    in_roster: impl FnOnce() -> Result<bool, E>,
    blocklist: impl FnOnce() -> Result<Blocklist, E>,
) -> Result<bool, E> {
    let wanted = match prefs {
        Some(p) => p.wants(&row.with),
        None => MamPrefs::new(row.default).wants(&row.with),
    };
    let keep = match wanted {
        Wanted::Yes => true,
        Wanted::No => false,
        Wanted::IfInRoster => in_roster()?,
    };
    // The owner's own account and server are never blocked.
    let exempt =
        row.with.domain() == row.owner.domain() && (row.with.node().is_none() || row.with.node() == row.owner.node());
    if !keep || row.direction == Direction::Out || exempt {
        return Ok(keep);
    }
    Ok(!blocklist()?.blocks(&row.with))
}

/// True when `message` is one archives keep: `chat` with content (a chat
/// state or a receipt alone is not), or `normal` with a body; never
/// errors, headlines or groupchat; never with a hint against storing it.
pub fn archivable(message: &Stanza) -> bool {
    match message.kind {
        Kind::Message(MessageType::Chat) => worth_keeping(message),
        Kind::Message(MessageType::Normal) => message.element().has_child("body", ns::CLIENT) && !unstored(message),
        _ => false,
    }
}

/// True when a message has content ([`offline::storable`]) and no hint
/// against storing it (XEP-0334): what archives and room histories keep.
pub fn worth_keeping(message: &Stanza) -> bool {
    offline::storable(message) && !unstored(message)
}

fn unstored(message: &Stanza) -> bool {
    message
        .element()
        .children()
        .any(|c| c.ns() == carbons::HINTS && matches!(c.name(), "no-store" | "no-permanent-store"))
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A time as XEP-0082 writes it, to the millisecond (UTC).
pub fn format_stamp(ms: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

/// Reads a XEP-0082 DateTime (`CCYY-MM-DDThh:mm:ss[.sss]TZD`, TZD `Z` or
/// `±hh:mm`) as milliseconds since the epoch; digits past the
/// millisecond are dropped.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        let part = s.get(from..to)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let mut rest = &s[19..];
    let mut milli = 0u16;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for i in 0..3 {
            let d = fraction
                .as_bytes()
                .get(i)
                .filter(|_| i < digits)
                .map_or(0, |c| c - b'0');
            milli = milli * 10 + u16::from(d);
        }
        rest = &fraction[digits..];
    }
    let offset_ms: i64 = match rest.as_bytes() {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |c: &u8| c.is_ascii_digit().then(|| i64::from(c - b'0'));
            let (hours, minutes) = (digit(h1)? * 10 + digit(h2)?, digit(m1)? * 10 + digit(m2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let ms = (hours * 60 + minutes) * 60_000;
            if *sign == b'+' {
                ms
            } else {
                -ms
            }
        }
        _ => return None,
    };
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
    )
    .ok()?;
    let utc = time::PrimitiveDateTime::new(date, clock).assume_utc();
    Some(utc.unix_timestamp() * 1000 + i64::from(milli) - offset_ms)
}

/// A message on its way to the archive, then to its recipient.
pub struct Pending {
    router: Router,
    stanza: Stanza,
    rows: Vec<ArchiveRow>,
    /// The recipient's stanza id is on it already.
    stamped: bool,
}

/// A message to archive, or the stanza back when there is nothing to
/// archive (archiving is off, the message is not of a kind archives keep,
/// no local account sent or gets it, or it is refused on its way because
/// its sender blocked its recipient: routing it answers that). For a
/// local recipient the message gets its `<stanza-id/>` here, which is the
/// id of the recipient's row.
#[allow(clippy::result_large_err)]
pub fn prepare(router: &Router, mut stanza: Stanza) -> Result<Pending, Stanza> {
    let settings = router.mam();
    if !settings.enabled || !archivable(&stanza) {
        return Err(stanza);
    }
    let Some(from) = stanza.from().cloned() else {
        return Err(stanza);
    };
    let from_local = router.is_local_user(&from);
    let to = match stanza.to() {
        Some(to) => to.clone(),
        None if from_local => from.to_bare().into(),
        None => return Err(stanza),
    };
    if from_local && router.blocklists().blocks_outbound(&from, &to) {
        return Err(stanza);
    }
    let to_local = router.is_local_user(&to);
    // A message to one's own account is archived once, as received
    // (alice@a.test and alice@b.test are two accounts).
    let same_account = from_local && to_local && from.to_bare() == to.to_bare();
    // Sent copies only of what reaches someone: a local account (of any
    // hosted domain) or a published service (there are no
    // server-to-server links yet).
    let reaches = to_local || (!router.is_local_domain(to.domain()) && router.services().get(to.domain()).is_some());
    let outgoing = from_local && !same_account && reaches;
    if !outgoing && !to_local {
        return Err(stanza);
    }
    let (ts_ms, default) = (now_ms(), settings.default);
    let mut rows = Vec::with_capacity(2);
    if outgoing {
        // As sent: ids by others are for the recipient's archive.
        let mut sent = stanza.clone();
        sent.remove_payloads(|c| c.is("stanza-id", sid::NS));
        carbons::strip_private(&mut sent);
        rows.push(ArchiveRow {
            owner: from.to_bare(),
            id: sid::new_id(),
            ts_ms,
            with: to.clone(),
            direction: Direction::Out,
            xml: xml_of(&sent.to_bytes()),
            default,
        });
    }
    if to_local {
        let id = sid::stamp(&mut stanza, &to).unwrap_or_else(sid::new_id);
        // As delivered, `<private/>` removed (XEP-0280 §8).
        rows.push(ArchiveRow {
            owner: to.to_bare(),
            id,
            ts_ms,
            with: from,
            direction: Direction::In,
            xml: xml_of(&carbons::delivered(&stanza)),
            default,
        });
    }
    Ok(Pending {
        router: router.clone(),
        stanza,
        rows,
        stamped: to_local,
    })
}

fn xml_of(bytes: &[u8]) -> String {
    // The serialiser only writes UTF-8.
    String::from_utf8_lossy(bytes).into_owned()
}

impl Pending {
    /// Archives, then routes. Done once the rows are committed and the
    /// message routed (queued for sessions, or offline storage asked). A
    /// storage failure is logged and the message routed all the same: the
    /// sender is never left waiting.
    ///
    /// The rows are handed to storage when this is called, not when the
    /// future is first polled, so messages are committed in the order
    /// their `run()` was called: the SQLite writer commits its queue in
    /// order and completes the jobs of a group in order. Each future
    /// routes as soon as its rows are committed; on one (single-threaded)
    /// arbiter, the futures woken by one group run in the order they were
    /// woken, so one sender's messages are delivered in the order sent.
    /// The c2s stream also waits for each before reading on.
    pub fn run(self) -> Pin<Box<dyn Future<Output = ()> + 'static>> {
        let Pending {
            router,
            stanza,
            rows,
            stamped,
        } = self;
        let committed = router.storage().archive(rows);
        Box::pin(async move {
            let committed = committed.await;
            crate::metrics::archived(committed.is_ok());
            if let Err(e) = committed {
                log::error!("cannot archive a message (delivered anyway): {e}");
            }
            router.route_archived(stanza, stamped);
        })
    }

    /// The message, as it will be routed.
    pub fn stanza(&self) -> &Stanza {
        &self.stanza
    }
}

fn bad(text: &'static str) -> StanzaError {
    StanzaError::with_text(StanzaCondition::BadRequest, text)
}

/// The query form (§4.1.5).
fn query_form() -> Element {
    let ids = forms::field("ids", "list-multi").with_child(
        Element::new("validate", "http://jabber.org/protocol/xdata-validate")
            .with_attr("datatype", "xs:string")
            .with_child(Element::new("open", "http://jabber.org/protocol/xdata-validate")),
    );
    let fields = [
        forms::field("with", "jid-single"),
        forms::field("start", "text-single"),
        forms::field("end", "text-single"),
        forms::field("before-id", "text-single"),
        forms::field("after-id", "text-single"),
        ids,
    ];
    Element::new("query", NS).with_child(forms::form(NS, fields))
}

/// A query's filters and page, checked.
fn parse_query(query: &Element, settings: &MamSettings) -> Result<ArchiveQuery, StanzaError> {
    let mut q = ArchiveQuery::default();
    if let Some(x) = query.get_child("x", forms::NS) {
        let form = forms::Submitted::parse(x)?;
        form.check_type(NS)?;
        for (var, values) in form.fields() {
            if var == "ids" {
                let ids: Vec<String> = values.iter().filter(|v| !v.is_empty()).cloned().collect();
                if ids.len() > settings.max_page.max(DEFAULT_PAGE) {
                    return Err(StanzaError::with_text(StanzaCondition::PolicyViolation, "too many ids"));
                }
                // No values: no filter.
                q.ids = Some(ids).filter(|ids| !ids.is_empty());
                continue;
            }
            if !matches!(var, "with" | "start" | "end" | "after-id" | "before-id") {
                return Err(bad("unsupported field"));
            }
            let Some(value) = forms::single(values)? else { continue };
            match var {
                "with" => q.with = Some(Jid::parse(value).map_err(|_| bad("'with' is not a JID"))?),
                "start" => {
                    q.start_ms = Some(parse_datetime(value).ok_or_else(|| bad("'start' is not a XEP-0082 DateTime"))?)
                }
                "end" => q.end_ms = Some(parse_datetime(value).ok_or_else(|| bad("'end' is not a XEP-0082 DateTime"))?),
                "after-id" => q.after_id = Some(value.to_owned()),
                _ => q.before_id = Some(value.to_owned()),
            }
        }
    }
    let page = match query.get_child("set", rsm::NS) {
        Some(set) => rsm::Request::parse(set)?,
        None => rsm::Request::default(),
    };
    q.max = page.max.unwrap_or(DEFAULT_PAGE).min(settings.max_page);
    q.cursor = page.cursor;
    Ok(q)
}

/// One result (§4.2): the archived message forwarded with its time, to
/// the requesting session, from the archive. The stored message is
/// spliced in as stored; inside `<forwarded/>` it must name its namespace.
fn result(to: &FullJid, owner: &BareJid, queryid: Option<&str>, m: &ArchivedMessage) -> Option<Bytes> {
    let Some(rest) = m.xml.strip_prefix("<message") else {
        log::error!("{owner}: archived message {} is not a message", m.id);
        return None;
    };
    let mut out = String::with_capacity(m.xml.len() + 320);
    out.push_str(&format!(
        "<message to='{}' from='{}'><result xmlns='{NS}'",
        escape(to.as_str()),
        escape(owner.as_str())
    ));
    if let Some(q) = queryid {
        out.push_str(&format!(" queryid='{}'", escape(q)));
    }
    out.push_str(&format!(
        " id='{}'><forwarded xmlns='{}'><delay xmlns='{}' stamp='{}'/><message xmlns='{}'",
        escape(m.id.as_str()),
        carbons::FORWARD,
        offline::DELAY,
        format_stamp(m.ts_ms),
        ns::CLIENT
    ));
    out.push_str(rest);
    out.push_str("</forwarded></result></message>");
    Some(Bytes::from(out))
}

/// The IQ result's payload (§4.3): whether the page is the last one in
/// its direction, and where it stands (XEP-0059).
fn fin(page: &ArchivePage) -> Element {
    let first = page.messages.first().map(|m| (m.id.as_str(), page.first_index));
    let last = page.messages.last().map(|m| m.id.as_str());
    Element::new("fin", NS)
        .with_attr("complete", if page.complete { "true" } else { "false" })
        .with_child(rsm::reply(first, last, Some(page.count)))
}

fn prefs_element(prefs: &MamPrefs) -> Element {
    let list = |name: &str, jids: &[Jid]| {
        let mut el = Element::new(name, NS);
        for j in jids {
            el.push_child(Element::new("jid", NS).with_text(j.as_str()));
        }
        el
    };
    Element::new("prefs", NS)
        .with_attr("default", prefs.default.as_str())
        .with_child(list("always", &prefs.always))
        .with_child(list("never", &prefs.never))
}

fn parse_prefs(p: &Element) -> Result<MamPrefs, StanzaError> {
    let default = p
        .attr("default")
        .and_then(DefaultPolicy::parse)
        .ok_or_else(|| bad("'default' must be always, never or roster"))?;
    let list = |name: &str| -> Result<Vec<Jid>, StanzaError> {
        let mut jids = Vec::new();
        if let Some(l) = p.get_child(name, NS) {
            for j in l.children().filter(|c| c.is("jid", NS)) {
                jids.push(Jid::parse(j.text().trim()).map_err(|_| bad("not a JID"))?);
            }
        }
        jids.sort();
        jids.dedup();
        if jids.len() > MAX_PREFS_JIDS {
            return Err(StanzaError::with_text(StanzaCondition::NotAcceptable, "too many JIDs"));
        }
        Ok(jids)
    };
    Ok(MamPrefs {
        default,
        always: list("always")?,
        never: list("never")?,
    })
}

/// The IQ handler, for the account (`to` absent or the user's bare JID):
/// `<query/>` get (the form) and set (a query), `<prefs/>` get and set.
/// Only the owner reads or changes an archive.
pub struct Mam;

impl IqHandler for Mam {
    fn handle(&self, router: &Router, req: IqRequest) -> IqFuture {
        if !req.from_owner() {
            return ready(Err(StanzaError::new(StanzaCondition::Forbidden)));
        }
        let user = req.target.clone();
        let settings = router.mam().clone();
        let router = router.clone();
        match (req.payload().name(), req.is_set()) {
            ("query", false) => ready(Ok(Some(query_form()))),
            ("query", true) => {
                let query = match parse_query(req.payload(), &settings) {
                    Ok(q) => q,
                    Err(e) => return ready(Err(e)),
                };
                let queryid = req.payload().attr("queryid").map(str::to_owned);
                let flip = req.payload().has_child("flip-page", NS);
                let (owner, requester) = (req.target.clone(), req.from.clone());
                Box::pin(async move {
                    let Some(page) = router.storage().archive_query(&user, query).await? else {
                        return Err(StanzaError::new(StanzaCondition::ItemNotFound));
                    };
                    // Before the IQ result, through the same queue (§4.2).
                    let session = requester.try_into_full().ok().and_then(|f| router.sessions().get(&f));
                    if let Some(session) = session {
                        let mut order: Vec<&ArchivedMessage> = page.messages.iter().collect();
                        if flip {
                            order.reverse();
                        }
                        for m in order {
                            let Some(bytes) = result(&session.jid, &owner, queryid.as_deref(), m) else {
                                continue;
                            };
                            // Over its queue's limit, the session is being closed.
                            if !session.deliver(bytes) {
                                break;
                            }
                        }
                    }
                    Ok(Some(fin(&page)))
                })
            }
            ("prefs", false) => Box::pin(async move {
                let prefs = router.storage().mam_prefs(&user).await?;
                Ok(Some(prefs_element(
                    &prefs.unwrap_or_else(|| MamPrefs::new(settings.default)),
                )))
            }),
            ("prefs", true) => {
                let prefs = match parse_prefs(req.payload()) {
                    Ok(p) => p,
                    Err(e) => return ready(Err(e)),
                };
                Box::pin(async move {
                    if !router.storage().set_mam_prefs(&user, prefs.clone()).await? {
                        return Err(StanzaError::new(StanzaCondition::FeatureNotImplemented));
                    }
                    Ok(Some(prefs_element(&prefs)))
                })
            }
            _ => ready(Err(StanzaError::new(StanzaCondition::BadRequest))),
        }
    }

    fn features(&self) -> Vec<String> {
        vec![NS.to_owned(), EXTENDED.to_owned()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::client_element;

    fn el(xml: &str) -> Element {
        client_element(xml)
    }

    fn message(xml: &str) -> Stanza {
        Stanza::from_element(el(xml)).unwrap()
    }

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn row(id: &str, ts_ms: i64, with: &str) -> ArchiveRow {
        ArchiveRow {
            owner: BareJid::parse("juliet@localhost").unwrap(),
            id: id.into(),
            ts_ms,
            with: jid(with),
            direction: Direction::In,
            xml: format!("<message><body>{id}</body></message>"),
            default: DefaultPolicy::Always,
        }
    }

    /// A page of at most 2 of `rows`, for the query `edit` makes.
    fn query(rows: &[ArchiveRow], edit: impl FnOnce(&mut ArchiveQuery)) -> Option<ArchivePage> {
        let mut q = ArchiveQuery {
            max: 2,
            ..ArchiveQuery::default()
        };
        edit(&mut q);
        page_of(rows, &q)
    }

    fn ids(page: &ArchivePage) -> Vec<&str> {
        page.messages.iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn what_is_archived() {
        for xml in [
            "<message type='chat'><body>hi</body></message>",
            "<message type='chat'><x xmlns='jabber:x:oob'><url>u</url></x></message>",
            "<message><body>hi</body></message>",
        ] {
            assert!(archivable(&message(xml)), "{xml}");
        }
        for xml in [
            "<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message><subject>s</subject></message>",
            "<message type='headline'><body>x</body></message>",
            "<message type='groupchat'><body>x</body></message>",
            "<message type='error'><body>x</body></message>",
            "<message type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>",
            "<message type='chat'><body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>",
        ] {
            assert!(!archivable(&message(xml)), "{xml}");
        }
    }

    #[test]
    fn preferences_decide_never_over_always() {
        let prefs = MamPrefs {
            default: DefaultPolicy::Roster,
            always: vec![jid("romeo@montague.lit"), jid("nurse@capulet.lit/kitchen")],
            never: vec![jid("romeo@montague.lit/hall")],
        };
        assert_eq!(prefs.wants(&jid("romeo@montague.lit/orchard")), Wanted::Yes);
        assert_eq!(prefs.wants(&jid("romeo@montague.lit")), Wanted::Yes);
        assert_eq!(prefs.wants(&jid("romeo@montague.lit/hall")), Wanted::No);
        assert_eq!(prefs.wants(&jid("nurse@capulet.lit/kitchen")), Wanted::Yes);
        assert_eq!(prefs.wants(&jid("nurse@capulet.lit/hall")), Wanted::IfInRoster);
        assert_eq!(MamPrefs::new(DefaultPolicy::Never).wants(&jid("a@b")), Wanted::No);
    }

    #[test]
    fn storages_keep_by_prefs_roster_and_blocklist() {
        let r = row("1", 0, "romeo@montague.lit/orchard");
        let ok = |v: bool| move || Ok::<_, ()>(v);
        let list = |items: &[&str]| {
            let l = Blocklist::new(items.iter().map(|i| jid(i)));
            move || Ok::<_, ()>(l)
        };
        assert_eq!(keeps(&r, None, ok(false), list(&[])), Ok(true));
        assert_eq!(keeps(&r, None, ok(false), list(&["romeo@montague.lit"])), Ok(false));
        let out = ArchiveRow {
            direction: Direction::Out,
            ..r.clone()
        };
        assert_eq!(keeps(&out, None, ok(false), list(&["romeo@montague.lit"])), Ok(true));
        let roster = MamPrefs::new(DefaultPolicy::Roster);
        assert_eq!(keeps(&r, Some(&roster), ok(false), list(&[])), Ok(false));
        assert_eq!(keeps(&r, Some(&roster), ok(true), list(&[])), Ok(true));
        let never = ArchiveRow {
            default: DefaultPolicy::Never,
            ..r.clone()
        };
        assert_eq!(keeps(&never, None, ok(true), list(&[])), Ok(false));
        // Blocking one's own domain leaves one's own account archived.
        let own = row("2", 0, "juliet@localhost/balcony");
        assert_eq!(keeps(&own, None, ok(false), list(&["localhost"])), Ok(true));
    }

    #[test]
    fn filters_and_pages_in_memory() {
        let rows: Vec<ArchiveRow> = (0..6)
            .map(|i| {
                let with = if i % 2 == 0 {
                    "romeo@montague.lit/orchard"
                } else {
                    "nurse@capulet.lit"
                };
                row(&format!("m{i}"), 1000 * i, with)
            })
            .collect();
        let first = query(&rows, |_| {}).unwrap();
        assert_eq!(
            (ids(&first), first.count, first.first_index, first.complete),
            (vec!["m0", "m1"], 6, 0, false)
        );
        let next = query(&rows, |q| q.cursor = rsm::Cursor::After("m1".into())).unwrap();
        assert_eq!(
            (ids(&next), next.first_index, next.complete),
            (vec!["m2", "m3"], 2, false)
        );
        let end = query(&rows, |q| q.cursor = rsm::Cursor::After("m3".into())).unwrap();
        assert_eq!((ids(&end), end.first_index, end.complete), (vec!["m4", "m5"], 4, true));
        let last = query(&rows, |q| q.cursor = rsm::Cursor::Last).unwrap();
        assert_eq!(
            (ids(&last), last.first_index, last.complete),
            (vec!["m4", "m5"], 4, false)
        );
        let back = query(&rows, |q| q.cursor = rsm::Cursor::Before("m2".into())).unwrap();
        assert_eq!(
            (ids(&back), back.first_index, back.complete),
            (vec!["m0", "m1"], 0, true)
        );
        let index = query(&rows, |q| q.cursor = rsm::Cursor::Index(3)).unwrap();
        assert_eq!((ids(&index), index.first_index), (vec!["m3", "m4"], 3));
        let romeo = query(&rows, |q| {
            q.with = Some(jid("romeo@montague.lit"));
            q.max = 10
        })
        .unwrap();
        assert_eq!((ids(&romeo), romeo.complete), (vec!["m0", "m2", "m4"], true));
        let full = query(&rows, |q| q.with = Some(jid("romeo@montague.lit/hall"))).unwrap();
        assert_eq!(full.count, 0);
        let time = query(&rows, |q| {
            q.start_ms = Some(1000);
            q.end_ms = Some(3000);
            q.max = 10
        })
        .unwrap();
        assert_eq!(ids(&time), ["m1", "m2", "m3"]);
        let between = query(&rows, |q| {
            q.after_id = Some("m1".into());
            q.before_id = Some("m4".into())
        })
        .unwrap();
        assert_eq!((ids(&between), between.count), (vec!["m2", "m3"], 2));
        let chosen = query(&rows, |q| q.ids = Some(vec!["m5".into(), "m1".into(), "zz".into()])).unwrap();
        assert_eq!(ids(&chosen), ["m1", "m5"]);
        let counted = query(&rows, |q| q.max = 0).unwrap();
        assert_eq!((counted.messages.len(), counted.count), (0, 6));
        assert_eq!(query(&rows, |q| q.after_id = Some("zz".into())), None);
        assert_eq!(query(&rows, |q| q.before_id = Some("zz".into())), None);
        assert_eq!(query(&rows, |q| q.cursor = rsm::Cursor::After("zz".into())), None);
        assert_eq!(query(&rows, |q| q.cursor = rsm::Cursor::Before("zz".into())), None);
    }

    #[test]
    fn dates_follow_xep_0082() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_datetime("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_datetime("1970-01-01T00:00:01.123456Z"), Some(1123));
        assert_eq!(parse_datetime("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_datetime("1969-12-31T23:00:00-01:00"), Some(0));
        assert_eq!(parse_datetime("2010-07-10T23:08:25Z"), Some(1_278_803_305_000));
        for bad in [
            "",
            "2010-07-10",
            "2010-07-10T23:08:25",
            "2010-13-10T23:08:25Z",
            "2010-02-30T23:08:25Z",
            "2010-07-10T24:08:25Z",
            "2010-07-10T23:08:25.Z",
            "2010-07-10T23:08:25+1:00",
            "2010-07-10 23:08:25Z",
            "2010-07-10T23:08:2éZ",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
        assert_eq!(format_stamp(1_278_803_305_042), "2010-07-10T23:08:25.042Z");
        assert_eq!(
            parse_datetime(&format_stamp(1_278_803_305_042)),
            Some(1_278_803_305_042)
        );
    }

    #[test]
    fn queries_are_checked() {
        let settings = MamSettings {
            enabled: true,
            ..MamSettings::default()
        };
        let parse = |xml: &str| parse_query(&el(xml), &settings);
        let q = parse(
            "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>\
             <field var='with'><value>romeo@montague.lit</value></field>\
             <field var='start'><value>2010-06-07T00:00:00Z</value></field>\
             <field var='ids'><value>a</value><value>b</value></field></x>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>1000</max><before/></set></query>",
        )
        .unwrap();
        assert_eq!(q.with, Some(jid("romeo@montague.lit")));
        assert_eq!(q.start_ms, Some(1_275_868_800_000));
        assert_eq!(q.ids, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!((q.max, q.cursor), (250, rsm::Cursor::Last));
        assert_eq!(parse("<query xmlns='urn:xmpp:mam:2'/>").unwrap().max, DEFAULT_PAGE);
        for bad in [
            "<field var='start'><value>yesterday</value></field>",
            "<field var='with'><value>a@b@c</value></field>",
            "<field var='colour'><value>red</value></field>",
            "<field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field>",
        ] {
            let xml = format!("<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>{bad}</x></query>");
            assert_eq!(parse(&xml).unwrap_err().condition, StanzaCondition::BadRequest, "{bad}");
        }
    }

    #[test]
    fn a_result_forwards_the_stored_message() {
        let m = ArchivedMessage {
            id: "A1".into(),
            ts_ms: 1_278_803_305_042,
            xml: "<message from='romeo@montague.lit/o' type='chat'><body>a&amp;b</body></message>".into(),
        };
        let to = FullJid::parse("juliet@localhost/balcony").unwrap();
        let owner = BareJid::parse("juliet@localhost").unwrap();
        let bytes = result(&to, &owner, Some("q'1"), &m).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "<message to='juliet@localhost/balcony' from='juliet@localhost'>\
             <result xmlns='urn:xmpp:mam:2' queryid='q&apos;1' id='A1'><forwarded xmlns='urn:xmpp:forward:0'>\
             <delay xmlns='urn:xmpp:delay' stamp='2010-07-10T23:08:25.042Z'/>\
             <message xmlns='jabber:client' from='romeo@montague.lit/o' type='chat'><body>a&amp;b</body></message>\
             </forwarded></result></message>"
        );
        // What the splice gives parses as the element it claims to be.
        let parsed = el(std::str::from_utf8(&bytes).unwrap());
        let inner = parsed
            .get_child("result", NS)
            .unwrap()
            .get_child("forwarded", carbons::FORWARD)
            .unwrap();
        assert!(inner.has_child("message", ns::CLIENT));
    }

    #[test]
    fn prefs_round_trip() {
        let p = parse_prefs(&el(
            "<prefs xmlns='urn:xmpp:mam:2' default='roster'>\
             <always><jid>romeo@montague.lit</jid><jid>Romeo@montague.lit</jid></always><never/></prefs>",
        ))
        .unwrap();
        assert_eq!(p.always, [jid("romeo@montague.lit")]);
        assert_eq!(
            prefs_element(&p).to_string(),
            "<prefs xmlns='urn:xmpp:mam:2' default='roster'><always><jid>romeo@montague.lit</jid></always>\
             <never/></prefs>"
        );
        assert!(parse_prefs(&el("<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>")).is_err());
        assert!(parse_prefs(&el("<prefs xmlns='urn:xmpp:mam:2'/>")).is_err());
    }
}
