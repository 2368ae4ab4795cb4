//! Every metric Shoal records, named here and nowhere else, through the
//! [`metrics`](::metrics) facade: whatever recorder the host program
//! installs (the `shoal` server installs a Prometheus exporter) gets them;
//! without one they cost next to nothing.
//!
//! # The scheme
//!
//! Names are `shoal_<subsystem>_<what>`, in Prometheus' conventions:
//! counters end in `_total`, quantities carry their unit (`_seconds`,
//! `_bytes`), gauges and histograms of counts are plain nouns. Label
//! values come from small fixed sets (never a JID or an address):
//! `transport`, `mechanism`, `result`, `kind`, `direction`, `condition`,
//! `operation`. [`ALL`] lists every metric with its type, labels and
//! meaning; the README's Metrics section is the same table.
//!
//! # Cost
//!
//! What is recorded often has its handles registered once, at first use,
//! and kept: recording it is an atomic operation, never a registry
//! look-up, a lock or an allocation (rare events, such as logins, are
//! registered on the spot). What is counted per stanza (the
//! `*_stanzas_total` counters and [`OUTBOUND_QUEUED_BYTES`]) is counted
//! per thread, with a plain load and store on a cache line no other
//! thread writes, and summed into the recorder by [`sample`], which the
//! exporter calls before each scrape. A recorder must therefore be
//! installed before the server starts: handles taken before that are
//! no-ops for good.

use std::sync::atomic::{fence, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use ::metrics::{Counter, Gauge, Histogram};

use crate::error::{wire_enum, StanzaCondition, StorageError};
use crate::sasl::Mechanism;
use crate::stanza::Kind;

/// What a metric is, in Prometheus' terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

/// One metric of the scheme.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricType,
    pub labels: &'static [&'static str],
    /// Its meaning (the `# HELP` line), as documented below.
    pub help: &'static str,
    /// A histogram's bucket bounds; empty for others.
    pub buckets: &'static [f64],
}

impl Metric {
    /// The help text on one line.
    pub fn help_line(&self) -> String {
        self.help.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Bounds for durations: 100 µs to 10 s.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bounds for how many recipients a broadcast had.
const RECIPIENTS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];
/// Bounds for how many messages one archive commit held.
const GROUP: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Declares each metric's name as a constant documented by its meaning,
/// and [`ALL`] from the same text.
macro_rules! scheme {
    ($(
        $(#[doc = $doc:literal])+
        $kind:ident $constant:ident = $name:literal [$($label:literal),*] $(, $buckets:expr)?;
    )+) => {
        $(
            $(#[doc = $doc])+
            pub const $constant: &str = $name;
        )+
        /// Every metric, in the order of the scheme.
        pub const ALL: &[Metric] = &[$(Metric {
            name: $name,
            kind: MetricType::$kind,
            labels: &[$($label),*],
            help: concat!($($doc),+),
            buckets: scheme!(@buckets $($buckets)?),
        }),+];
    };
    (@buckets) => { &[] };
    (@buckets $buckets:expr) => { $buckets };
}

scheme! {
    /// Client sessions bound now, by the transport of their connection
    /// (`tcp`, `tls`, `websocket`). A session waiting to be resumed
    /// (XEP-0198) still counts.
    Gauge C2S_SESSIONS = "shoal_c2s_sessions" ["transport"];
    /// SASL authentications that ended, by mechanism (`PLAIN`,
    /// `SCRAM-SHA-1`, `SCRAM-SHA-256`, their `-PLUS` variants, or `none`
    /// when the client named no mechanism Shoal knows) and result
    /// (`success`, `failure`). Aborted exchanges are not counted.
    Counter C2S_LOGINS = "shoal_c2s_logins_total" ["mechanism", "result"];
    /// Stanzas received from bound clients (`direction="in"`) and queued
    /// for clients (`out`: routed to their sessions, or the server's own
    /// answers on their streams), by kind (`message`, `presence`, `iq`).
    Counter C2S_STANZAS = "shoal_c2s_stanzas_total" ["direction", "kind"];
    /// Stanzas the router sent back to their sender with an error, as it
    /// could not deliver them, by the error's condition
    /// (`service-unavailable`, `remote-server-not-found`,
    /// `resource-constraint`, ...).
    Counter ROUTER_BOUNCES = "shoal_router_bounces_total" ["condition"];
    /// Recipients of one presence broadcast: the sessions it was queued
    /// for, and the copies sent to other servers.
    Histogram PRESENCE_FANOUT_RECIPIENTS = "shoal_presence_fanout_recipients" [], RECIPIENTS;
    /// Time from the start of one presence broadcast to its last copy
    /// queued.
    Histogram PRESENCE_FANOUT_SECONDS = "shoal_presence_fanout_seconds" [], SECONDS;
    /// Bytes queued for writing and not yet written, on every connection
    /// (clients, components, other servers).
    Gauge OUTBOUND_QUEUED_BYTES = "shoal_outbound_queued_bytes" [];
    /// Time a storage operation took as its caller waited for it (waiting
    /// for a storage thread included), by operation: the `Storage` method
    /// (`credentials`, `roster`, `archive`, ...).
    Histogram STORAGE_OPERATION_SECONDS = "shoal_storage_operation_seconds" ["operation"], SECONDS;
    /// Storage operations that failed, by operation.
    Counter STORAGE_ERRORS = "shoal_storage_errors_total" ["operation"];
    /// Domains published now (external components, in-process services),
    /// by kind (`component`, `in-process`).
    Gauge SERVICES_PUBLISHED = "shoal_services_published" ["kind"];
    /// Stanzas queued for published services (`direction="out"`) and sent
    /// by them (`in`), by kind.
    Counter SERVICES_STANZAS = "shoal_services_stanzas_total" ["direction", "kind"];
    /// IQ requests to a published service that were not answered in time
    /// (the requester got `<remote-server-timeout/>`).
    Counter SERVICES_IQ_TIMEOUTS = "shoal_services_iq_timeouts_total" [];
    /// External component handshakes (XEP-0114), by result (`success`,
    /// `failure`: a wrong secret).
    Counter COMPONENT_HANDSHAKES = "shoal_component_handshakes_total" ["result"];
    /// Streams with other servers that are up: links this server opened
    /// (`direction="out"`), and streams others opened that authenticated
    /// (`in`).
    Gauge S2S_STREAMS = "shoal_s2s_streams" ["direction"];
    /// Stanzas received from other servers (`direction="in"`) and queued
    /// for them (`out`), by kind.
    Counter S2S_STANZAS = "shoal_s2s_stanzas_total" ["direction", "kind"];
    /// Attempts to reach another server that failed, by the condition the
    /// stanzas waiting for it were returned with
    /// (`remote-server-not-found`, `remote-server-timeout`, ...).
    Counter S2S_CONNECT_FAILURES = "shoal_s2s_connect_failures_total" ["condition"];
    /// IQ requests to other servers that were not answered in time (the
    /// requester got `<remote-server-timeout/>`).
    Counter S2S_IQ_TIMEOUTS = "shoal_s2s_iq_timeouts_total" [];
    /// Messages through the archive (XEP-0313) before delivery, by result:
    /// `archived` once committed, `failed` when storage failed (the
    /// message is delivered all the same). The owners' preferences may
    /// still keep a message out of their archive.
    Counter MAM_MESSAGES = "shoal_mam_messages_total" ["result"];
    /// Messages the archive writer committed together in one transaction
    /// (the `shoal` server's SQLite storage).
    Histogram MAM_COMMIT_GROUP_MESSAGES = "shoal_mam_commit_group_messages" [], GROUP;
    /// Rooms of the MUC service (XEP-0045) whose actor runs now: rooms
    /// with occupants, and empty persistent rooms not yet unloaded.
    Gauge MUC_ROOMS = "shoal_muc_rooms" [];
    /// Room messages and presence not delivered to an occupant's session
    /// that was too far behind: dropped for that occupant, as a contact's
    /// presence is.
    Counter MUC_DROPPED = "shoal_muc_dropped_total" [];
}

/// What a client connection runs over: the `transport` label, as
/// `shoal session list` names it.
pub use crate::session::Transport;

wire_enum! {
    /// Which way a stanza or a stream goes: the `direction` label.
    Direction { In => "in", Out => "out" }
}

wire_enum! {
    /// A stanza's kind: the `kind` label.
    StanzaKind { Message => "message", Presence => "presence", Iq => "iq" }
}

wire_enum! {
    /// Where stanzas are counted: the subsystem of a `*_stanzas_total`
    /// counter.
    Stream { C2s => "c2s", S2s => "s2s", Services => "services" }
}

wire_enum! {
    /// A storage operation: the `operation` label, a
    /// [`Storage`](crate::storage::Storage) method.
    StorageOp {
        Credentials => "credentials",
        CreateUser => "create_user",
        SetCredentials => "set_credentials",
        DeleteUser => "delete_user",
        ListUsers => "list_users",
        Roster => "roster",
        RosterChanges => "roster_changes",
        RosterItem => "roster_item",
        UpdateRosterItem => "update_roster_item",
        UpdateRosterPair => "update_roster_pair",
        PendingRequests => "pending_requests",
        Vcard => "vcard",
        SetVcard => "set_vcard",
        Profile => "profile",
        SetProfile => "set_profile",
        StoreOffline => "store_offline",
        OfflineMessages => "offline_messages",
        DeleteOffline => "delete_offline",
        Blocklist => "blocklist",
        Block => "block",
        Unblock => "unblock",
        Archive => "archive",
        ArchiveQuery => "archive_query",
        MamPrefs => "mam_prefs",
        SetMamPrefs => "set_mam_prefs",
        PurgeArchive => "purge_archive",
        PrivateXml => "private_xml",
        SetPrivateXml => "set_private_xml",
        PepNodes => "pep_nodes",
        PepSetNode => "pep_set_node",
        PepDeleteNode => "pep_delete_node",
        PepPublish => "pep_publish",
        PepItems => "pep_items",
        PepRetract => "pep_retract",
        PepPurge => "pep_purge",
        PepLastItems => "pep_last_items",
        MucRooms => "muc_rooms",
        MucSaveRoom => "muc_save_room",
        MucDeleteRoom => "muc_delete_room",
        MucSetAffiliation => "muc_set_affiliation",
    }
}

impl From<Kind> for StanzaKind {
    fn from(kind: Kind) -> StanzaKind {
        match kind {
            Kind::Message(_) => StanzaKind::Message,
            Kind::Presence(_) => StanzaKind::Presence,
            Kind::Iq(_) => StanzaKind::Iq,
        }
    }
}

impl StanzaKind {
    /// The kind of a stanza serialised by Shoal (`<message`, `<presence`,
    /// `<iq`); `None` for anything else.
    pub fn of_bytes(bytes: &[u8]) -> Option<StanzaKind> {
        match bytes {
            [b'<', b'm', ..] => Some(StanzaKind::Message),
            [b'<', b'p', b'r', b'e', ..] => Some(StanzaKind::Presence),
            [b'<', b'i', b'q', ..] => Some(StanzaKind::Iq),
            _ => None,
        }
    }
}

/// Gives every metric its `# HELP` text. Call once, right after
/// installing a recorder.
pub fn describe() {
    for m in ALL {
        let help = m.help_line();
        match m.kind {
            MetricType::Counter => ::metrics::describe_counter!(m.name, help),
            MetricType::Gauge => ::metrics::describe_gauge!(m.name, help),
            MetricType::Histogram => ::metrics::describe_histogram!(m.name, help),
        }
    }
}

/// The registered handles, indexed by label values (`value as usize`).
struct Handles {
    sessions: Vec<Gauge>,
    /// By [`Stream`], then [`Direction`], then [`StanzaKind`].
    stanzas: Vec<Counter>,
    queued_bytes: Gauge,
    bounces: Vec<Counter>,
    fanout_recipients: Histogram,
    fanout_seconds: Histogram,
    storage_seconds: Vec<Histogram>,
    storage_errors: Vec<Counter>,
    services_iq_timeouts: Counter,
    s2s_streams: Vec<Gauge>,
    s2s_connect_failures: Vec<Counter>,
    s2s_iq_timeouts: Counter,
    /// `archived`, `failed`.
    mam_messages: [Counter; 2],
    mam_group: Histogram,
    muc_rooms: Gauge,
    muc_dropped: Counter,
}

impl Handles {
    fn register() -> Handles {
        let mut stanzas = Vec::new();
        for stream in Stream::ALL {
            let name = match stream {
                Stream::C2s => C2S_STANZAS,
                Stream::S2s => S2S_STANZAS,
                Stream::Services => SERVICES_STANZAS,
            };
            for direction in Direction::ALL {
                for kind in StanzaKind::ALL {
                    let labels = [("direction", direction.as_str()), ("kind", kind.as_str())];
                    stanzas.push(::metrics::counter!(name, &labels));
                }
            }
        }
        let conditions = |name: &'static str| -> Vec<Counter> {
            StanzaCondition::ALL
                .iter()
                .map(|c| ::metrics::counter!(name, "condition" => c.as_str()))
                .collect()
        };
        Handles {
            sessions: Transport::ALL
                .iter()
                .map(|t| ::metrics::gauge!(C2S_SESSIONS, "transport" => t.as_str()))
                .collect(),
            stanzas,
            queued_bytes: ::metrics::gauge!(OUTBOUND_QUEUED_BYTES),
            bounces: conditions(ROUTER_BOUNCES),
            fanout_recipients: ::metrics::histogram!(PRESENCE_FANOUT_RECIPIENTS),
            fanout_seconds: ::metrics::histogram!(PRESENCE_FANOUT_SECONDS),
            storage_seconds: StorageOp::ALL
                .iter()
                .map(|op| ::metrics::histogram!(STORAGE_OPERATION_SECONDS, "operation" => op.as_str()))
                .collect(),
            storage_errors: StorageOp::ALL
                .iter()
                .map(|op| ::metrics::counter!(STORAGE_ERRORS, "operation" => op.as_str()))
                .collect(),
            services_iq_timeouts: ::metrics::counter!(SERVICES_IQ_TIMEOUTS),
            s2s_streams: Direction::ALL
                .iter()
                .map(|d| ::metrics::gauge!(S2S_STREAMS, "direction" => d.as_str()))
                .collect(),
            s2s_connect_failures: conditions(S2S_CONNECT_FAILURES),
            s2s_iq_timeouts: ::metrics::counter!(S2S_IQ_TIMEOUTS),
            mam_messages: [
                ::metrics::counter!(MAM_MESSAGES, "result" => "archived"),
                ::metrics::counter!(MAM_MESSAGES, "result" => "failed"),
            ],
            mam_group: ::metrics::histogram!(MAM_COMMIT_GROUP_MESSAGES),
            muc_rooms: ::metrics::gauge!(MUC_ROOMS),
            muc_dropped: ::metrics::counter!(MUC_DROPPED),
        }
    }
}

static HANDLES: OnceLock<Handles> = OnceLock::new();

/// The handles, registered with the recorder installed at the first call.
fn handles() -> &'static Handles {
    HANDLES.get_or_init(Handles::register)
}

// The per-thread counts: one slot per (stream, direction, kind), then the
// queued bytes.
const STANZA_SLOTS: usize = 6;
const QUEUED_SLOT: usize = 3 * STANZA_SLOTS;
const SLOTS: usize = QUEUED_SLOT + 1;

/// One thread's counts, on cache lines of their own. Only that thread
/// writes them.
#[repr(align(64))]
struct Slots([AtomicI64; SLOTS]);

impl Slots {
    fn new() -> Slots {
        Slots(std::array::from_fn(|_| AtomicI64::new(0)))
    }
}

/// Every thread's counts, and what threads that ended had counted.
struct Shards {
    live: Vec<Arc<Slots>>,
    retired: [i64; SLOTS],
}

impl Shards {
    /// Every count so far. The slots of threads that ended (only this
    /// table holds them now) are forgotten, what they counted kept.
    fn sum(&mut self) -> [i64; SLOTS] {
        let Shards { live, retired } = self;
        let mut totals = *retired;
        live.retain(|slots| {
            let ended = Arc::strong_count(slots) == 1;
            if ended {
                // Its last stores happened before it let its `Arc` go.
                fence(Ordering::Acquire);
            }
            for (i, slot) in slots.0.iter().enumerate() {
                let value = slot.load(Ordering::Relaxed);
                totals[i] = totals[i].wrapping_add(value);
                if ended {
                    retired[i] = retired[i].wrapping_add(value);
                }
            }
            !ended
        });
        totals
    }
}

static SHARDS: Mutex<Shards> = Mutex::new(Shards {
    live: Vec::new(),
    retired: [0; SLOTS],
});

thread_local! {
    static MINE: Arc<Slots> = {
        let slots = Arc::new(Slots::new());
        let mut shards = crate::c2s::lock(&SHARDS);
        // Threads that ended are folded in here too: without an exporter
        // nothing else would, and short-lived threads would pile up.
        shards.sum();
        shards.live.push(slots.clone());
        slots
    };
}

/// Adds `n` to this thread's `slot`.
fn bump(slot: usize, n: i64) {
    // A thread being torn down counts nowhere, rather than panic.
    let _ = MINE.try_with(|slots| {
        let slot = &slots.0[slot];
        // This thread is the only writer: no read-modify-write needed.
        slot.store(slot.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    });
}

/// Sums every thread's counts into the recorder: the `*_stanzas_total`
/// counters and [`OUTBOUND_QUEUED_BYTES`]. The exporter calls it before
/// each scrape (and now and then besides).
pub fn sample() {
    let totals = crate::c2s::lock(&SHARDS).sum();
    let h = handles();
    for (counter, total) in h.stanzas.iter().zip(&totals[..QUEUED_SLOT]) {
        counter.absolute(u64::try_from(*total).unwrap_or(0));
    }
    h.queued_bytes.set(totals[QUEUED_SLOT] as f64);
}

/// A stanza through `stream`, going `direction`.
pub fn stanza(stream: Stream, direction: Direction, kind: StanzaKind) {
    bump(
        stream as usize * STANZA_SLOTS + direction as usize * StanzaKind::ALL.len() + kind as usize,
        1,
    );
}

/// `n` more bytes queued for writing (negative: written or dropped).
pub fn queued_bytes(n: i64) {
    bump(QUEUED_SLOT, n);
}

/// A bound client session, counted in [`C2S_SESSIONS`] while this lives.
#[derive(Debug)]
pub struct LiveSession(Transport);

impl LiveSession {
    pub fn new(transport: Transport) -> LiveSession {
        handles().sessions[transport as usize].increment(1.0);
        LiveSession(transport)
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        handles().sessions[self.0 as usize].decrement(1.0);
    }
}

/// A SASL exchange ended: `mechanism` is `None` when the client named
/// none that is offered.
pub fn login(mechanism: Option<Mechanism>, success: bool) {
    let mechanism = mechanism.map_or("none", Mechanism::name);
    let result = if success { "success" } else { "failure" };
    // Not per stanza: registered on the spot.
    ::metrics::counter!(C2S_LOGINS, "mechanism" => mechanism, "result" => result).increment(1);
}

/// The router sent a stanza back to its sender with `condition`.
pub fn bounce(condition: StanzaCondition) {
    handles().bounces[condition as usize].increment(1);
}

/// One presence broadcast, from its start.
pub struct Fanout(Instant);

impl Fanout {
    pub fn start() -> Fanout {
        Fanout(Instant::now())
    }

    /// The broadcast is over; it reached `recipients`.
    pub fn done(self, recipients: usize) {
        let h = handles();
        h.fanout_seconds.record(self.0.elapsed().as_secs_f64());
        h.fanout_recipients.record(recipients as f64);
    }
}

/// One storage operation, from when its caller asked.
pub struct StorageTimer {
    op: StorageOp,
    started: Instant,
}

impl StorageTimer {
    pub fn start(op: StorageOp) -> StorageTimer {
        StorageTimer {
            op,
            started: Instant::now(),
        }
    }

    /// Awaits `operation`, then [`StorageTimer::finish`]es.
    pub async fn time<T>(
        self,
        operation: impl std::future::Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        let result = operation.await;
        self.finish(&result);
        result
    }

    /// The operation is over, with `result`.
    pub fn finish<T>(self, result: &Result<T, StorageError>) {
        let h = handles();
        let i = self.op as usize;
        h.storage_seconds[i].record(self.started.elapsed().as_secs_f64());
        if result.is_err() {
            h.storage_errors[i].increment(1);
        }
    }
}

/// A domain of this `kind` was published (`published`) or rescinded.
pub fn service(kind: &'static str, published: bool) {
    // Not per stanza: registered on the spot.
    let gauge = ::metrics::gauge!(SERVICES_PUBLISHED, "kind" => kind);
    if published {
        gauge.increment(1.0);
    } else {
        gauge.decrement(1.0);
    }
}

/// A request to a published service was not answered in time.
pub fn service_iq_timeout() {
    handles().services_iq_timeouts.increment(1);
}

/// A component's handshake succeeded or failed.
pub fn component_handshake(success: bool) {
    let result = if success { "success" } else { "failure" };
    ::metrics::counter!(COMPONENT_HANDSHAKES, "result" => result).increment(1);
}

/// A stream with another server came up (`up`) or went down.
pub fn s2s_stream(direction: Direction, up: bool) {
    let gauge = &handles().s2s_streams[direction as usize];
    if up {
        gauge.increment(1.0);
    } else {
        gauge.decrement(1.0);
    }
}

/// An attempt to reach another server failed; what waited got `condition`.
pub fn s2s_connect_failure(condition: StanzaCondition) {
    handles().s2s_connect_failures[condition as usize].increment(1);
}

/// A request to another server was not answered in time.
pub fn s2s_iq_timeout() {
    handles().s2s_iq_timeouts.increment(1);
}

/// A message went through the archive: committed, or not.
pub fn archived(committed: bool) {
    handles().mam_messages[usize::from(!committed)].increment(1);
}

/// The archive writer committed `messages` together.
pub fn archive_group(messages: usize) {
    handles().mam_group.record(messages as f64);
}

/// A room's actor started (`loaded`) or stopped.
pub fn muc_room(loaded: bool) {
    let gauge = &handles().muc_rooms;
    if loaded {
        gauge.increment(1.0);
    } else {
        gauge.decrement(1.0);
    }
}

/// A room's copy was not delivered to a session too far behind.
pub fn muc_dropped() {
    handles().muc_dropped.increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_follows_the_conventions() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a name is declared twice");
        for m in ALL {
            assert!(m.name.starts_with("shoal_"), "{}", m.name);
            assert!(
                m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                m.name
            );
            assert_eq!(m.kind == MetricType::Counter, m.name.ends_with("_total"), "{}", m.name);
            assert_eq!(m.kind == MetricType::Histogram, !m.buckets.is_empty(), "{}", m.name);
            assert!(m.buckets.windows(2).all(|w| w[0] < w[1]), "{}", m.name);
            assert!(!m.help_line().is_empty() && !m.help_line().contains("  "), "{}", m.name);
        }
    }

    #[test]
    fn stanza_kinds_are_read_from_the_serialised_bytes() {
        assert_eq!(StanzaKind::of_bytes(b"<message to='a'/>"), Some(StanzaKind::Message));
        assert_eq!(StanzaKind::of_bytes(b"<presence/>"), Some(StanzaKind::Presence));
        assert_eq!(StanzaKind::of_bytes(b"<iq type='get'/>"), Some(StanzaKind::Iq));
        assert_eq!(
            StanzaKind::of_bytes(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
            None
        );
        assert_eq!(StanzaKind::of_bytes(b"<r xmlns='urn:xmpp:sm:3'/>"), None);
        assert_eq!(StanzaKind::of_bytes(b""), None);
    }

    #[test]
    fn what_ended_threads_counted_stays_in_the_sum() {
        let mut shards = Shards {
            live: Vec::new(),
            retired: [0; SLOTS],
        };
        let (a, b) = (Arc::new(Slots::new()), Arc::new(Slots::new()));
        shards.live.extend([a.clone(), b.clone()]);
        a.0[QUEUED_SLOT].store(5, Ordering::Relaxed);
        b.0[QUEUED_SLOT].store(7, Ordering::Relaxed);
        b.0[0].store(-2, Ordering::Relaxed);
        assert_eq!(shards.sum()[QUEUED_SLOT], 12);
        // b's thread ends: its counts stay, its slots go.
        drop(b);
        assert_eq!(shards.sum()[QUEUED_SLOT], 12);
        assert_eq!(shards.live.len(), 1);
        a.0[QUEUED_SLOT].store(6, Ordering::Relaxed);
        let totals = shards.sum();
        assert_eq!((totals[QUEUED_SLOT], totals[0]), (13, -2));
    }

    #[test]
    fn a_thread_bumps_its_own_slots() {
        let read = || MINE.with(|s| s.0[STANZA_SLOTS].load(Ordering::Relaxed));
        let before = read();
        stanza(Stream::S2s, Direction::In, StanzaKind::Message);
        stanza(Stream::S2s, Direction::In, StanzaKind::Message);
        assert_eq!(read() - before, 2);
    }
}
