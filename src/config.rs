//! The TOML configuration file. Every key has a default, so an empty file
//! (or none) runs a loopback server for `localhost`. Unknown keys are
//! errors: a typo must not silently fall back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use shoal_actors::hosts::{Host, Hosts};
use shoal_actors::jid::BareJid;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The domain this server serves: the part after '@' in its JIDs. The
    /// one-domain form of `domains`; unset, and `domains` too: localhost.
    pub domain: Option<String>,
    /// The domains this server hosts (virtual hosts), the default first:
    /// each has its own accounts. Not together with `domain`.
    pub domains: Vec<String>,
    /// `[hosts."a.test"]`: one hosted domain's own settings.
    pub hosts: BTreeMap<String, HostConfig>,
    pub storage: StorageConfig,
    pub c2s: C2sConfig,
    pub registration: RegistrationConfig,
    pub auth: AuthConfig,
    pub sessions: SessionsConfig,
    pub limits: LimitsConfig,
    pub tls: TlsConfig,
    pub control: ControlConfig,
    pub components: ComponentsConfig,
    pub offline: OfflineConfig,
    pub sm: SmConfig,
    pub mam: MamConfig,
    pub s2s: S2sConfig,
    pub http: HttpConfig,
    pub upload: UploadConfig,
    pub caps: CapsConfig,
    pub pep: PepConfig,
    pub muc: MucConfig,
}

/// Entity capabilities (XEP-0115), `[caps]`: what clients' caps hashes
/// stand for, learned by asking one client per hash.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapsConfig {
    /// Verified hashes kept; the oldest are forgotten first, and asked
    /// about again when next seen. 0 keeps none: every session is asked.
    pub max_entries: usize,
}

impl Default for CapsConfig {
    fn default() -> Self {
        CapsConfig {
            max_entries: shoal_actors::xep::caps::DEFAULT_MAX_ENTRIES,
        }
    }
}

/// XEP-0045 Multi-User Chat, `[muc]`: chatrooms, a published service
/// (see [`shoal_actors::muc`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MucConfig {
    pub enabled: bool,
    /// The service's domain. Unset: `conference.` and the default domain.
    pub domain: Option<String>,
    /// Who may create rooms.
    pub create: MucCreate,
    /// Rooms one account may own at once; 0: no limit.
    pub max_rooms_per_user: u32,
    /// The largest `maxusers` a room may have (new rooms: 200 at most).
    pub max_occupants: u32,
    /// The largest `historylength` a room may have (new rooms: 20 at most).
    pub max_history: u32,
    /// Groupchat messages per second per occupant; 0: no limit.
    pub message_rate: u32,
    /// Messages an occupant may send at once, above the rate.
    pub message_burst: u32,
    /// Seconds an empty persistent room stays loaded.
    pub idle_unload_secs: u64,
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig {
            enabled: true,
            domain: None,
            create: MucCreate::Local,
            max_rooms_per_user: 20,
            max_occupants: 5000,
            max_history: 100,
            message_rate: 5,
            message_burst: 20,
            idle_unload_secs: 600,
        }
    }
}

/// `[muc] create`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MucCreate {
    /// Users of this server.
    Local,
    Anyone,
    Nobody,
}

/// XEP-0363 HTTP File Upload, `[upload]`: a published service that hands
/// out upload slots, served over the HTTP listener (see [`crate::upload`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// Off by default: it stores users' files on this machine, and its URLs
    /// must be reachable by clients (see `url`).
    pub enabled: bool,
    /// The service's domain. Unset: `upload.` and the default domain.
    pub domain: Option<String>,
    /// Where the files are kept. Unset: beside the database, with the
    /// extension `uploads` (`./shoal.uploads` for `./shoal.db`).
    pub dir: Option<PathBuf>,
    /// The public base URL of the slots (what the HTTP listener serves as
    /// `/upload`). Unset: `http://` and the first `[http]` address, then
    /// `/upload`.
    pub url: Option<String>,
    /// Largest file, in bytes; larger requests get `<file-too-large/>`.
    pub max_file_bytes: u64,
    /// Bytes one user may have stored (or reserved by slots not yet
    /// filled); 0: no quota.
    pub quota_bytes: u64,
    /// Seconds a file is kept after its upload; 0: forever.
    pub expire_after_secs: u64,
    /// Seconds a slot's PUT URL is valid for, from the slot being given.
    pub slot_timeout_secs: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            enabled: false,
            domain: None,
            dir: None,
            url: None,
            max_file_bytes: 10 * 1024 * 1024,
            quota_bytes: 100 * 1024 * 1024,
            expire_after_secs: 7 * 86_400,
            slot_timeout_secs: 300,
        }
    }
}

/// XEP-0163 PEP, `[pep]`: each account's pubsub nodes (avatars, nick,
/// bookmarks, OMEMO keys, tunes...), notified to its presence subscribers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PepConfig {
    pub enabled: bool,
    /// Nodes per account; one more gets `<max-nodes-exceeded/>`.
    pub max_nodes: usize,
    /// Largest payload, serialised; at most `[c2s] max_stanza_bytes`.
    pub max_item_bytes: usize,
    /// What `max` means, and the largest `pubsub#max_items` a node may have.
    pub max_items: u32,
    /// Publishes per second per account (0: no limit), and the burst.
    pub publish_rate: u32,
    pub publish_burst: u32,
}

impl Default for PepConfig {
    fn default() -> Self {
        let d = shoal_actors::xep::pep::PepSettings::default();
        PepConfig {
            enabled: true,
            max_nodes: d.max_nodes,
            max_item_bytes: d.max_item_bytes,
            max_items: d.max_items,
            publish_rate: d.publish_rate,
            publish_burst: d.publish_burst,
        }
    }
}

impl PepConfig {
    /// The presence shards' settings. An item comes in a stanza, so no
    /// larger than `max_stanza_bytes` allows.
    pub fn settings(&self, max_stanza_bytes: usize) -> shoal_actors::xep::pep::PepSettings {
        shoal_actors::xep::pep::PepSettings {
            enabled: self.enabled,
            max_nodes: self.max_nodes,
            max_item_bytes: self.max_item_bytes.min(max_stanza_bytes),
            max_items: self.max_items,
            publish_rate: self.publish_rate,
            publish_burst: self.publish_burst,
        }
    }
}

/// The message archive (XEP-0313).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MamConfig {
    /// Archive `chat` messages (and `normal` ones with a body), and answer
    /// archive queries.
    pub enabled: bool,
    /// What is archived for a user who has not chosen: "always", "never",
    /// or "roster" (messages with contacts in the user's roster).
    pub default: MamDefault,
    /// Days a message is kept; 0: forever.
    pub retention_days: u32,
    /// Messages in one page of results, at most (a client asking for more
    /// gets this many).
    pub max_page: usize,
}

impl Default for MamConfig {
    fn default() -> Self {
        MamConfig {
            enabled: true,
            default: MamDefault::Always,
            retention_days: 7,
            max_page: 250,
        }
    }
}

/// `[mam] default`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MamDefault {
    Always,
    Never,
    Roster,
}

impl MamConfig {
    /// The router's settings.
    pub fn settings(&self) -> shoal_actors::xep::mam::MamSettings {
        use shoal_actors::xep::mam::DefaultPolicy;
        shoal_actors::xep::mam::MamSettings {
            enabled: self.enabled,
            default: match self.default {
                MamDefault::Always => DefaultPolicy::Always,
                MamDefault::Never => DefaultPolicy::Never,
                MamDefault::Roster => DefaultPolicy::Roster,
            },
            max_page: self.max_page,
        }
    }
}

/// XEP-0198 stream management: acknowledgements and resumption.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmConfig {
    /// Offer stream management at all.
    pub enabled: bool,
    /// Seconds a dropped session waits to be resumed (0: not resumable).
    pub resume_timeout_secs: u64,
    /// Stanzas a client may leave unacknowledged before it is cut off.
    pub max_unacked: usize,
    /// The server asks for an acknowledgement after this many stanzas...
    pub ack_request_stanzas: u32,
    /// ...or when a stanza has waited this many seconds for one.
    pub ack_request_secs: u64,
}

impl Default for SmConfig {
    fn default() -> Self {
        SmConfig {
            enabled: true,
            resume_timeout_secs: 300,
            max_unacked: 5000,
            ack_request_stanzas: 5,
            ack_request_secs: 30,
        }
    }
}

/// Messages kept for users who are offline (XEP-0160).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineConfig {
    /// Messages one user may have waiting; past it the sender gets
    /// `<service-unavailable/>`. 0: no limit.
    pub max_messages: usize,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig { max_messages: 1000 }
    }
}

/// External components (XEP-0114); see the README's "Components".
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComponentsConfig {
    /// Addresses to accept component connections on; bound only when at
    /// least one service is configured.
    pub listen: Vec<SocketAddr>,
    /// A second connection for a connected component: who gets `<conflict/>`.
    pub conflict: ComponentConflict,
    /// Seconds a component has to answer a request before the requester
    /// gets `<remote-server-timeout/>`.
    pub iq_timeout_secs: u64,
    /// Component domains left out of the server's disco#items listing.
    pub hidden: Vec<String>,
    /// Requests waiting for one component's answers, in all and from one
    /// requester; one more gets `<resource-constraint/>`.
    pub max_pending: usize,
    pub max_pending_per_requester: usize,
    /// `[[components.service]]`: the components that may connect.
    #[serde(rename = "service")]
    pub services: Vec<ComponentServiceConfig>,
}

impl Default for ComponentsConfig {
    fn default() -> Self {
        ComponentsConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5347))],
            conflict: ComponentConflict::KickOld,
            iq_timeout_secs: 30,
            hidden: Vec::new(),
            max_pending: 1000,
            max_pending_per_requester: 100,
            services: Vec::new(),
        }
    }
}

/// Which connection stays when a component's domain connects twice.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ComponentConflict {
    /// The new one; the old one gets `<conflict/>`.
    KickOld,
    /// The old one; the new one gets `<conflict/>`.
    KickNew,
}

/// One component: its domain and secret, and its own limits (unset: the
/// clients').
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentServiceConfig {
    pub domain: String,
    pub secret: String,
    /// A name for the listing of services.
    pub name: Option<String>,
    pub max_stanza_bytes: Option<usize>,
    pub max_outbound_bytes: Option<usize>,
    pub rate_bytes_per_sec: Option<u32>,
    pub burst_bytes: Option<u32>,
}

/// Everything but the secret: configurations get logged.
impl std::fmt::Debug for ComponentServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentServiceConfig")
            .field("domain", &self.domain)
            .field("secret", &"<hidden>")
            .field("name", &self.name)
            .field("max_stanza_bytes", &self.max_stanza_bytes)
            .field("max_outbound_bytes", &self.max_outbound_bytes)
            .field("rate_bytes_per_sec", &self.rate_bytes_per_sec)
            .field("burst_bytes", &self.burst_bytes)
            .finish()
    }
}

/// The HTTP listener, `[http]`: WebSocket clients, their discovery, the
/// chat page.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Plain HTTP addresses (WebSocket clients use `ws://`); `[]`: none.
    pub listen: Vec<SocketAddr>,
    /// HTTPS addresses, with the hosted domains' certificates (`wss://`).
    pub tls_listen: Vec<SocketAddr>,
    /// Origins of web pages, besides the server's own, whose scripts may
    /// open XMPP streams (`"https://chat.example.com"`; `"*"`: any page).
    pub allowed_origins: Vec<String>,
    /// Converse.js's `dist` directory, served for the page at `/chat`.
    pub conversejs_dir: PathBuf,
    /// Prometheus metrics at `/metrics`; false: none are kept at all.
    pub metrics: bool,
    /// Networks besides loopback that may read `/metrics`.
    pub metrics_allow: Vec<crate::metrics::Network>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5280))],
            tls_listen: Vec::new(),
            allowed_origins: Vec::new(),
            conversejs_dir: PathBuf::from("conversejs"),
            metrics: true,
            metrics_allow: Vec::new(),
        }
    }
}

/// Server-to-server federation, `[s2s]`: off unless `listen` is set.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S2sConfig {
    /// Addresses to accept connections from other servers on. None (the
    /// default): federation is off.
    pub listen: Vec<SocketAddr>,
    /// "required" (the default): TLS before anything else, both ways;
    /// "optional": dialback is offered, and used, without TLS too.
    pub tls: S2sTls,
    /// PEM file of CA certificates trusted for peers' certificates, besides
    /// the system's.
    pub ca_file: Option<PathBuf>,
    /// Seconds one outbound attempt may take: resolution, TCP, TLS and
    /// authentication.
    pub connect_timeout_secs: u64,
    /// Seconds before trying a remote domain again after its link failed
    /// or closed (doubling after each further failure).
    pub reconnect_after_secs: u64,
    /// Seconds without traffic after which a link is closed.
    pub idle_timeout_secs: u64,
    /// Stanzas queued for one remote domain while its link comes up; past
    /// it, senders get `<resource-constraint/>`.
    pub max_queued: usize,
    /// Largest stanza a remote server may send once authenticated, in bytes.
    pub max_stanza_bytes: usize,
    /// Streams one remote domain may have authenticated to us at once;
    /// past it, another is refused (`<resource-constraint/>` to its
    /// dialback, `<temporary-auth-failure/>` to its SASL EXTERNAL).
    pub max_streams_per_domain: usize,
    /// Seconds a user's IQ request to another domain waits for its answer;
    /// then the user gets `<remote-server-timeout/>`.
    pub iq_timeout_secs: u64,
    /// Bytes per second read from one stream another server opened, and
    /// the burst above that rate (ejabberd's s2s shaper, Prosody's s2sin).
    pub rate_bytes_per_sec: u32,
    pub burst_bytes: u32,
    /// Remote domains neither connected to nor accepted from: their
    /// senders and ours get `<policy-violation/>`.
    pub blocked: Vec<String>,
    /// `[s2s.hosts]`: remote domains reached at a fixed "ip:port" (with
    /// STARTTLS), without DNS.
    pub hosts: BTreeMap<String, SocketAddr>,
}

impl Default for S2sConfig {
    fn default() -> Self {
        S2sConfig {
            listen: Vec::new(),
            tls: S2sTls::Required,
            ca_file: None,
            connect_timeout_secs: 10,
            reconnect_after_secs: 5,
            idle_timeout_secs: 600,
            max_queued: 1000,
            max_stanza_bytes: 256 * 1024,
            max_streams_per_domain: 8,
            iq_timeout_secs: 30,
            rate_bytes_per_sec: 1 << 20,
            burst_bytes: 1 << 20,
            blocked: Vec::new(),
            hosts: BTreeMap::new(),
        }
    }
}

/// `[s2s] tls`: there is no "off" between servers.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum S2sTls {
    Required,
    Optional,
}

impl S2sConfig {
    /// Whether federation is on: something to listen on.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// Checks the settings for a server hosting the domains `hosted`.
    pub fn validate(&self, hosted: &[&str]) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let zero = [
            ("connect_timeout_secs", self.connect_timeout_secs),
            ("reconnect_after_secs", self.reconnect_after_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("max_queued", self.max_queued as u64),
            ("iq_timeout_secs", self.iq_timeout_secs),
            ("max_streams_per_domain", self.max_streams_per_domain as u64),
            ("rate_bytes_per_sec", u64::from(self.rate_bytes_per_sec)),
            ("burst_bytes", u64::from(self.burst_bytes)),
        ];
        if let Some((key, _)) = zero.iter().find(|(_, v)| *v == 0) {
            return invalid(format!("[s2s] {key} must be at least 1"));
        }
        if self.max_stanza_bytes < 10_000 {
            return invalid("[s2s] max_stanza_bytes must be at least 10000 (RFC 6120 §13.12)".into());
        }
        // A remote domain, written as its JIDs are, and not ours.
        let remote = |section: &str, d: &str| -> Result<(), ConfigError> {
            match BareJid::domain_jid(d) {
                Ok(j) if j.as_str() == d => {}
                Ok(j) => return invalid(format!("{section} {d:?} should be written {:?}", j.as_str())),
                Err(e) => return invalid(format!("{section} {d:?}: {e}")),
            }
            if hosted.contains(&d) {
                return invalid(format!("{section} {d:?} is one of the server's own domains"));
            }
            Ok(())
        };
        for d in &self.blocked {
            remote("[s2s] blocked:", d)?;
        }
        for (d, addr) in &self.hosts {
            remote("[s2s.hosts]", d)?;
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return invalid(format!("[s2s.hosts] {d:?} = \"{addr}\" is no address to connect to"));
            }
            if self.blocked.contains(d) {
                return invalid(format!("[s2s.hosts] {d:?} is also in [s2s] blocked"));
            }
        }
        Ok(())
    }
}

/// The control channel between the `shoal` command and the running server
/// (see [`crate::control`]).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// The Unix socket. Unset: the database path with the extension
    /// `sock`, so that it follows the database; see [`Config::control_socket`].
    pub socket: Option<PathBuf>,
}

/// One hosted domain's own settings, `[hosts."a.test"]`; what is left
/// out is the top-level setting.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// `[hosts."a.test".registration]`: the keys of `[registration]`.
    pub registration: HostRegistrationConfig,
    /// PEM: the domain's certificate chain, leaf first, and its key. Unset:
    /// `[tls]`'s (which must name the domain too), or without that one
    /// generated for the domain.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// `[registration]` for one domain: each key unset is the top-level one.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostRegistrationConfig {
    pub enabled: Option<bool>,
    pub max_per_network: Option<u32>,
}

/// The certificate. Without `cert` and `key`, Shoal generates a
/// self-signed one for each domain beside the database.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM: the full chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// STARTTLS on the plain listeners.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StartTlsMode {
    Off,
    Optional,
    Required,
}

/// Abuse protection; see the README's "Limits and abuse protection".
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Deepest element nesting in a stanza (the stanza itself is 1).
    pub max_depth: usize,
    /// Most attributes on one element.
    pub max_attributes: usize,
    /// Longest element or attribute name, in bytes.
    pub max_name_bytes: usize,
    /// Largest stream header, in bytes.
    pub max_header_bytes: usize,
    /// Bytes per second read from an authenticated client, and the burst.
    pub rate_bytes_per_sec: u32,
    pub burst_bytes: u32,
    /// The same before authentication.
    pub preauth_rate_bytes_per_sec: u32,
    pub preauth_burst_bytes: u32,
    /// Open connections from one IP address (0: no limit).
    pub max_connections_per_ip: usize,
    /// Connections not yet authenticated, in all (0: no limit).
    pub max_unauthenticated: usize,
    /// Silence after which a client is pinged (XEP-0199), and the time it
    /// then has to answer before `<connection-timeout/>`.
    pub idle_timeout_secs: u64,
    pub ping_timeout_secs: u64,
    /// Seconds one write to a client may take. A client that stops reading
    /// fills the socket's buffers; past this its connection is closed, and
    /// its place in the connection counts given back.
    pub write_timeout_secs: u64,
    /// Failed logins allowed per account from one source network (an IPv4
    /// /24, an IPv6 /64, a single loopback address), and per source network
    /// for all accounts (0: not counted). Once a count reaches its allowance,
    /// each failure makes the next attempt wait: 1 s, then 2 s, 4 s... up to
    /// `auth_throttle_max_delay_secs`.
    pub auth_failures_per_account: u32,
    pub auth_failures_per_network: u32,
    pub auth_throttle_max_delay_secs: u64,
    /// Seconds after its wait ends that a quiet count is forgotten.
    pub auth_failure_window_secs: u64,
    /// Counts kept at most; past it the one touched longest ago goes.
    pub auth_throttle_entries: usize,
    /// Items in one roster (0: no limit). A roster set adding one more
    /// gets `<not-allowed/>`.
    pub max_roster_items: usize,
    /// Subscription requests waiting from contacts not in the roster
    /// (0: no limit). More are dropped unanswered.
    pub max_pending_requests: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let parse = shoal_actors::xml::ParseLimits::default();
        let conn = shoal_actors::c2s::limits::ConnectionLimits::default();
        let roster = shoal_actors::roster::RosterLimits::default();
        LimitsConfig {
            max_depth: parse.max_depth,
            max_attributes: parse.max_attrs,
            max_name_bytes: parse.max_name_bytes,
            max_header_bytes: shoal_actors::codec::CodecLimits::default().max_header_bytes,
            rate_bytes_per_sec: conn.rate,
            burst_bytes: conn.burst,
            preauth_rate_bytes_per_sec: conn.preauth_rate,
            preauth_burst_bytes: conn.preauth_burst,
            max_connections_per_ip: conn.max_per_ip,
            max_unauthenticated: conn.max_unauthenticated,
            idle_timeout_secs: conn.idle_timeout.as_secs(),
            ping_timeout_secs: conn.ping_timeout.as_secs(),
            write_timeout_secs: conn.write_timeout.as_secs(),
            auth_failures_per_account: conn.failures_per_account,
            auth_failures_per_network: conn.failures_per_network,
            auth_throttle_max_delay_secs: conn.max_failure_delay.as_secs(),
            auth_failure_window_secs: conn.failure_window.as_secs(),
            auth_throttle_entries: conn.throttle_entries,
            max_roster_items: roster.max_items,
            max_pending_requests: roster.max_pending,
        }
    }
}

impl LimitsConfig {
    /// The caps the store enforces on each roster.
    pub fn roster_limits(&self) -> shoal_actors::roster::RosterLimits {
        shoal_actors::roster::RosterLimits {
            max_items: self.max_roster_items,
            max_pending: self.max_pending_requests,
        }
    }

    pub fn connection_limits(&self) -> shoal_actors::c2s::limits::ConnectionLimits {
        use std::time::Duration;
        shoal_actors::c2s::limits::ConnectionLimits {
            rate: self.rate_bytes_per_sec,
            burst: self.burst_bytes,
            preauth_rate: self.preauth_rate_bytes_per_sec,
            preauth_burst: self.preauth_burst_bytes,
            max_per_ip: self.max_connections_per_ip,
            max_unauthenticated: self.max_unauthenticated,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            ping_timeout: Duration::from_secs(self.ping_timeout_secs),
            write_timeout: Duration::from_secs(self.write_timeout_secs),
            failures_per_account: self.auth_failures_per_account,
            failures_per_network: self.auth_failures_per_network,
            max_failure_delay: Duration::from_secs(self.auth_throttle_max_delay_secs),
            failure_window: Duration::from_secs(self.auth_failure_window_secs),
            throttle_entries: self.auth_throttle_entries,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Path of the SQLite database; created if missing.
    pub sqlite: PathBuf,
    /// "normal" (a commit survives the server being killed) or "full"
    /// (it survives power loss too); see [`crate::store::Durability`].
    pub durability: crate::store::Durability,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C2sConfig {
    /// Addresses to accept client connections on.
    pub listen: Vec<SocketAddr>,
    /// Largest stanza a client may send, in bytes.
    pub max_stanza_bytes: usize,
    /// Bytes queued for a client that is not reading before it is disconnected.
    pub max_outbound_bytes: usize,
    /// Seconds from connecting to a bound resource.
    pub negotiation_timeout_secs: u64,
    /// "off", "optional" or "required". Unset: required unless every
    /// listener is loopback, then optional.
    pub starttls: Option<StartTlsMode>,
    /// Direct TLS listeners (XEP-0368), TLS from the first byte.
    pub direct_tls_listen: Vec<SocketAddr>,
    /// Offer SASL PLAIN before TLS. Unset: only if every listener is loopback.
    pub allow_plain_without_tls: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// XEP-0077 in-band registration. Unset: on only when every listener
    /// is a loopback address.
    pub enabled: Option<bool>,
    /// Accounts one source network may register before each further
    /// registration waits (1 s, 2 s, 4 s, ... as for failed logins); 0: no
    /// limit.
    pub max_per_network: u32,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            enabled: None,
            max_per_network: 5,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// PBKDF2 iterations for newly set passwords (at least 4096).
    pub scram_iterations: u32,
    /// Failed SASL attempts allowed on one stream before it is closed.
    pub max_failures: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Sessions (resources) one account may have at once.
    pub max_per_user: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            sqlite: PathBuf::from("./shoal.db"),
            durability: crate::store::Durability::Normal,
        }
    }
}

impl Default for C2sConfig {
    fn default() -> Self {
        C2sConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5222))],
            max_stanza_bytes: 256 * 1024,
            max_outbound_bytes: 1024 * 1024,
            negotiation_timeout_secs: 30,
            starttls: None,
            direct_tls_listen: Vec::new(),
            allow_plain_without_tls: None,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            scram_iterations: 4096,
            max_failures: 3,
        }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig { max_per_user: 10 }
    }
}

/// `[mam] max_page`, at most: results are queued for the client at once,
/// within its `[c2s] max_outbound_bytes`.
pub const MAX_MAM_PAGE: usize = 1000;
/// `[mam] retention_days`, at most (about a hundred years): 0 is forever.
pub const MAX_RETENTION_DAYS: u32 = 36_500;
/// `[upload] expire_after_secs`, at most (about a hundred years): 0 is forever.
pub const MAX_UPLOAD_EXPIRY_SECS: u64 = 36_500 * 86_400;
/// `[muc] max_history`, at most: history is kept in memory, per room.
pub const MAX_MUC_HISTORY: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        self.validate_domains()?;
        if self.c2s.listen.is_empty() {
            return invalid("[c2s] listen needs at least one address".into());
        }
        if self.c2s.max_stanza_bytes < 10_000 {
            return invalid("[c2s] max_stanza_bytes must be at least 10000 (RFC 6120 §13.12)".into());
        }
        if self.c2s.max_outbound_bytes < self.c2s.max_stanza_bytes {
            return invalid("[c2s] max_outbound_bytes must be at least max_stanza_bytes".into());
        }
        self.s2s.validate(&self.domain_list())?;
        if self.sm.max_unacked == 0 || self.sm.ack_request_stanzas == 0 {
            return invalid("[sm] max_unacked and ack_request_stanzas must be at least 1".into());
        }
        if self.auth.scram_iterations < 4096 {
            return invalid("[auth] scram_iterations must be at least 4096 (RFC 7677)".into());
        }
        let l = &self.limits;
        let zero = [
            ("max_depth", l.max_depth as u64),
            ("max_attributes", l.max_attributes as u64),
            ("max_name_bytes", l.max_name_bytes as u64),
            ("max_header_bytes", l.max_header_bytes as u64),
            ("rate_bytes_per_sec", l.rate_bytes_per_sec.into()),
            ("burst_bytes", l.burst_bytes.into()),
            ("preauth_rate_bytes_per_sec", l.preauth_rate_bytes_per_sec.into()),
            ("preauth_burst_bytes", l.preauth_burst_bytes.into()),
            ("idle_timeout_secs", l.idle_timeout_secs),
            ("ping_timeout_secs", l.ping_timeout_secs),
            ("write_timeout_secs", l.write_timeout_secs),
            ("auth_failures_per_account", l.auth_failures_per_account.into()),
            ("auth_throttle_max_delay_secs", l.auth_throttle_max_delay_secs),
            ("auth_failure_window_secs", l.auth_failure_window_secs),
            ("auth_throttle_entries", l.auth_throttle_entries as u64),
        ];
        if let Some((key, _)) = zero.iter().find(|(_, v)| *v == 0) {
            return invalid(format!("[limits] {key} must be at least 1"));
        }
        if l.max_header_bytes < 512 {
            return invalid("[limits] max_header_bytes must be at least 512".into());
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return invalid("[tls] cert and key go together: give both or neither".into());
        }
        for (d, h) in &self.hosts {
            if h.tls_cert.is_some() != h.tls_key.is_some() {
                return invalid(format!(
                    "[hosts.{d:?}] tls_cert and tls_key go together: give both or neither"
                ));
            }
        }
        if self.auth.max_failures == 0 || self.sessions.max_per_user == 0 {
            return invalid("[auth] max_failures and [sessions] max_per_user must be at least 1".into());
        }
        if !(1..=MAX_MAM_PAGE).contains(&self.mam.max_page) {
            return invalid(format!(
                "[mam] max_page must be from 1 to {MAX_MAM_PAGE} (a page is queued for the client at once)"
            ));
        }
        if self.mam.retention_days > MAX_RETENTION_DAYS {
            return invalid(format!(
                "[mam] retention_days must be at most {MAX_RETENTION_DAYS} (0 keeps messages forever)"
            ));
        }
        self.validate_components()?;
        self.validate_upload()?;
        self.validate_pep()?;
        self.validate_muc()
    }

    fn validate_pep(&self) -> Result<(), ConfigError> {
        let p = &self.pep;
        if p.max_nodes == 0 || p.max_item_bytes == 0 || p.max_items == 0 {
            return Err(ConfigError::Invalid(
                "[pep] max_nodes, max_item_bytes and max_items must be at least 1".into(),
            ));
        }
        if p.publish_rate > 0 && p.publish_burst == 0 {
            return Err(ConfigError::Invalid(
                "[pep] publish_burst must be at least 1 (or publish_rate 0: no limit)".into(),
            ));
        }
        Ok(())
    }

    fn validate_muc(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let m = &self.muc;
        if m.max_occupants == 0 || m.message_burst == 0 || m.idle_unload_secs == 0 {
            return invalid("[muc] max_occupants, message_burst and idle_unload_secs must be at least 1".into());
        }
        if m.max_history > MAX_MUC_HISTORY {
            return invalid(format!("[muc] max_history must be at most {MAX_MUC_HISTORY}"));
        }
        if !m.enabled {
            return Ok(());
        }
        let domain = self.muc_domain();
        match BareJid::domain_jid(&domain) {
            Ok(j) if j.as_str() == domain => {}
            Ok(j) => return invalid(format!("[muc] domain {domain:?} should be written {:?}", j.as_str())),
            Err(e) => return invalid(format!("[muc] domain {domain:?}: {e}")),
        }
        if self.domain_list().contains(&domain.as_str()) {
            return invalid(format!("[muc] domain {domain:?} is one of the server's own domains"));
        }
        if self.components.services.iter().any(|s| s.domain == domain) {
            return invalid(format!("[muc] domain {domain:?} is also a component's"));
        }
        if self.upload.enabled && self.upload_domain() == domain {
            return invalid(format!("[muc] domain {domain:?} is also [upload]'s"));
        }
        Ok(())
    }

    /// The MUC service's domain: `[muc] domain`, or `conference.` and the
    /// default domain.
    pub fn muc_domain(&self) -> String {
        self.muc
            .domain
            .clone()
            .unwrap_or_else(|| format!("conference.{}", self.default_domain()))
    }

    /// The MUC service's settings, as configured.
    pub fn muc_settings(&self) -> shoal_actors::muc::MucSettings {
        use shoal_actors::muc::{CreatePolicy, MucSettings};
        let m = &self.muc;
        MucSettings {
            domain: self.muc_domain(),
            create: match m.create {
                MucCreate::Local => CreatePolicy::Local,
                MucCreate::Anyone => CreatePolicy::Anyone,
                MucCreate::Nobody => CreatePolicy::Nobody,
            },
            max_rooms_per_user: m.max_rooms_per_user,
            max_occupants: m.max_occupants,
            max_history: m.max_history,
            message_rate: m.message_rate,
            message_burst: m.message_burst,
            idle_unload: std::time::Duration::from_secs(m.idle_unload_secs),
        }
    }

    fn validate_upload(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let u = &self.upload;
        if u.enabled && self.http.listen.is_empty() && self.http.tls_listen.is_empty() {
            return invalid("[upload] enabled needs an HTTP listener ([http] listen or tls_listen)".into());
        }
        if u.max_file_bytes == 0 || u.slot_timeout_secs == 0 {
            return invalid("[upload] max_file_bytes and slot_timeout_secs must be at least 1".into());
        }
        if u.quota_bytes != 0 && u.quota_bytes < u.max_file_bytes {
            return invalid("[upload] quota_bytes must be 0 (no quota) or at least max_file_bytes".into());
        }
        if u.expire_after_secs > MAX_UPLOAD_EXPIRY_SECS {
            return invalid(format!(
                "[upload] expire_after_secs must be at most {MAX_UPLOAD_EXPIRY_SECS} (0 keeps files forever)"
            ));
        }
        let domain = self.upload_domain();
        match BareJid::domain_jid(&domain) {
            Ok(j) if j.as_str() == domain => {}
            Ok(j) => return invalid(format!("[upload] domain {domain:?} should be written {:?}", j.as_str())),
            Err(e) => return invalid(format!("[upload] domain {domain:?}: {e}")),
        }
        if self.domain_list().contains(&domain.as_str()) {
            return invalid(format!("[upload] domain {domain:?} is one of the server's own domains"));
        }
        if self.components.services.iter().any(|s| s.domain == domain) {
            return invalid(format!("[upload] domain {domain:?} is also a component's"));
        }
        if let Some(url) = &u.url {
            let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
            let host = rest.map(|r| r.split('/').next().unwrap_or(""));
            if host.is_none_or(str::is_empty) || url.contains(['?', '#']) || url.chars().any(char::is_whitespace) {
                return invalid(format!(
                    "[upload] url {url:?} must be an http:// or https:// URL without query or fragment"
                ));
            }
        }
        Ok(())
    }

    /// The upload service's domain: `[upload] domain`, or `upload.` and
    /// the default domain.
    pub fn upload_domain(&self) -> String {
        self.upload
            .domain
            .clone()
            .unwrap_or_else(|| format!("upload.{}", self.default_domain()))
    }

    /// Where uploaded files are kept: `[upload] dir`, or beside the
    /// database (`./shoal.uploads` for `./shoal.db`), so that they follow it.
    pub fn upload_dir(&self) -> PathBuf {
        self.upload
            .dir
            .clone()
            .unwrap_or_else(|| self.storage.sqlite.with_extension("uploads"))
    }

    fn validate_components(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let c = &self.components;
        if c.iq_timeout_secs == 0 || c.max_pending == 0 || c.max_pending_per_requester == 0 {
            return invalid(
                "[components] iq_timeout_secs, max_pending and max_pending_per_requester must be at least 1".into(),
            );
        }
        if !c.services.is_empty() && c.listen.is_empty() {
            return invalid("[components] listen needs an address when services are configured".into());
        }
        let mut seen = std::collections::HashSet::new();
        for s in &c.services {
            let d = &s.domain;
            match BareJid::domain_jid(d) {
                Ok(j) if j.as_str() == d => {}
                Ok(j) => {
                    return invalid(format!(
                        "[[components.service]] domain {d:?} should be written {:?}",
                        j.as_str()
                    ))
                }
                Err(e) => return invalid(format!("[[components.service]] domain {d:?}: {e}")),
            }
            if self.domain_list().contains(&d.as_str()) {
                return invalid(format!(
                    "[[components.service]] {d:?} is one of the server's own domains"
                ));
            }
            if !seen.insert(d.as_str()) {
                return invalid(format!("[[components.service]] {d:?} is configured twice"));
            }
            // The secret is never shown, even here.
            if s.secret.is_empty() {
                return invalid(format!("[[components.service]] {d:?} needs a secret"));
            }
            let stanza = s.max_stanza_bytes.unwrap_or(self.c2s.max_stanza_bytes);
            if stanza < 10_000 {
                return invalid(format!(
                    "[[components.service]] {d:?}: max_stanza_bytes must be at least 10000 (RFC 6120 §13.12)"
                ));
            }
            if s.max_outbound_bytes.unwrap_or(self.c2s.max_outbound_bytes) < stanza {
                return invalid(format!(
                    "[[components.service]] {d:?}: max_outbound_bytes must be at least max_stanza_bytes"
                ));
            }
            if s.rate_bytes_per_sec == Some(0) || s.burst_bytes == Some(0) {
                return invalid(format!(
                    "[[components.service]] {d:?}: rate_bytes_per_sec and burst_bytes must be at least 1"
                ));
            }
        }
        if let Some(h) = c.hidden.iter().find(|h| !seen.contains(h.as_str())) {
            return invalid(format!(
                "[components] hidden names {h:?}, which is not a configured service"
            ));
        }
        Ok(())
    }

    /// `domain` and `domains`, written as JIDs are, each once; every
    /// `[hosts]` table for one of them.
    fn validate_domains(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.domain.is_some() && !self.domains.is_empty() {
            return invalid(
                "domain and domains are both set: domain is the one-domain form of domains; keep one".into(),
            );
        }
        let key = if self.domains.is_empty() { "domain" } else { "domains:" };
        let list = self.domain_list();
        for (i, d) in list.iter().enumerate() {
            match BareJid::domain_jid(d) {
                Ok(j) if j.as_str() == *d => {}
                Ok(j) => return invalid(format!("{key} {d:?} should be written {:?}", j.as_str())),
                Err(e) => return invalid(format!("{key} {d:?}: {e}")),
            }
            if list[..i].contains(d) {
                return invalid(format!("domains: {d:?} is listed twice"));
            }
        }
        if let Some(d) = self.hosts.keys().find(|d| !list.contains(&d.as_str())) {
            return invalid(format!(
                "[hosts.{d:?}] is not a hosted domain (not in domain or domains)"
            ));
        }
        Ok(())
    }

    /// The hosted domains, the default first: `domains`, or `domain`, or
    /// localhost.
    pub fn domain_list(&self) -> Vec<&str> {
        match (&self.domain, self.domains.is_empty()) {
            (_, false) => self.domains.iter().map(String::as_str).collect(),
            (Some(d), true) => vec![d.as_str()],
            (None, true) => vec!["localhost"],
        }
    }

    /// The default domain: the first hosted one.
    pub fn default_domain(&self) -> &str {
        self.domain_list()[0]
    }

    /// The hosted domains with their registration policies, for the router.
    pub fn hosted(&self) -> Result<Hosts, ConfigError> {
        let mut hosts = Vec::new();
        for d in self.domain_list() {
            let domain = BareJid::domain_jid(d).map_err(|e| ConfigError::Invalid(format!("domain {d:?}: {e}")))?;
            let (registration, registrations_per_network) = self.registration_of(d);
            hosts.push(Host {
                domain,
                registration,
                registrations_per_network,
            });
        }
        Hosts::new(hosts).map_err(|e| ConfigError::Invalid(format!("domains: {e}")))
    }

    /// Whether in-band registration is on at `domain`, and how many
    /// accounts one source network may register there before waiting:
    /// `[hosts."domain".registration]`, else `[registration]`.
    pub fn registration_of(&self, domain: &str) -> (bool, u32) {
        let own = self.hosts.get(domain).map(|h| &h.registration);
        let enabled = own
            .and_then(|r| r.enabled)
            .unwrap_or_else(|| self.registration_enabled());
        let per_network = own
            .and_then(|r| r.max_per_network)
            .unwrap_or(self.registration.max_per_network);
        (enabled, per_network)
    }

    /// The configured certificate and key of `domain`: its own, else
    /// `[tls]`'s; `None` when Shoal is to generate one.
    pub fn tls_files_of(&self, domain: &str) -> Option<(&Path, &Path)> {
        let own = self
            .hosts
            .get(domain)
            .and_then(|h| h.tls_cert.as_deref().zip(h.tls_key.as_deref()));
        own.or_else(|| self.tls.cert.as_deref().zip(self.tls.key.as_deref()))
    }

    /// True when no listener is reachable from another machine.
    pub fn loopback_only(&self) -> bool {
        self.c2s
            .listen
            .iter()
            .chain(&self.c2s.direct_tls_listen)
            // WebSocket clients are clients too.
            .chain(&self.http.listen)
            .chain(&self.http.tls_listen)
            .all(|a| a.ip().is_loopback())
    }

    /// Whether in-band registration is on where no domain says otherwise
    /// (see [`Config::registration_of`]): as configured, or by default
    /// only when no listener is reachable from another machine.
    pub fn registration_enabled(&self) -> bool {
        self.registration.enabled.unwrap_or_else(|| self.loopback_only())
    }

    pub fn starttls(&self) -> StartTlsMode {
        self.c2s.starttls.unwrap_or(if self.loopback_only() {
            StartTlsMode::Optional
        } else {
            StartTlsMode::Required
        })
    }

    pub fn allow_plain_without_tls(&self) -> bool {
        self.c2s.allow_plain_without_tls.unwrap_or_else(|| self.loopback_only())
    }

    /// The control socket: as configured, or beside the database
    /// (`./shoal.sock` for `./shoal.db`), so that the `shoal` command finds
    /// the server that uses the database it changes.
    pub fn control_socket(&self) -> PathBuf {
        self.control
            .socket
            .clone()
            .unwrap_or_else(|| self.storage.sqlite.with_extension("sock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_registration_rule() {
        let c = Config::default();
        c.validate().unwrap();
        assert!(c.registration_enabled());
        let public: Config = toml::from_str("[c2s]\nlisten = ['0.0.0.0:5222']").unwrap();
        assert!(!public.registration_enabled());
        let forced: Config =
            toml::from_str("[c2s]\nlisten = ['0.0.0.0:5222']\n[registration]\nenabled = true").unwrap();
        assert!(forced.registration_enabled());
    }

    #[test]
    fn the_example_file_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/shoal.example.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.domain_list(), ["localhost"]);
    }

    /// The production example and the systemd unit beside it agree: the
    /// files it names are in the directories the unit makes.
    #[test]
    fn the_systemd_example_is_valid_and_matches_its_unit() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/systemd");
        let c = Config::load(&dir.join("shoal.toml")).unwrap();
        assert_eq!(c.domain_list(), ["example.com"]);
        assert!(!c.loopback_only());
        assert!(!c.registration_enabled());
        assert_eq!(c.starttls(), StartTlsMode::Required);
        assert!(!c.allow_plain_without_tls());
        // Behind a reverse proxy.
        assert!(c.http.listen.iter().all(|a| a.ip().is_loopback()));
        let unit = std::fs::read_to_string(dir.join("shoal.service")).unwrap();
        let setting = |key: &str| {
            unit.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("shoal.service sets no {key}"))
        };
        let config_dir = format!("/etc/{}", setting("ConfigurationDirectory"));
        for exec in ["ExecStart", "ExecReload"] {
            assert!(
                setting(exec).contains(&format!(" --config {config_dir}/shoal.toml")),
                "{exec}"
            );
        }
        let state_dir = format!("/var/lib/{}", setting("StateDirectory"));
        assert!(c.storage.sqlite.starts_with(&state_dir) && c.upload_dir().starts_with(&state_dir));
        let runtime_dir = format!("/run/{}", setting("RuntimeDirectory"));
        assert!(c.control_socket().starts_with(&runtime_dir));
        let (cert, key) = c.tls_files_of("example.com").unwrap();
        assert!(cert.starts_with(&config_dir) && key.starts_with(&config_dir));
    }

    #[test]
    fn the_control_socket_follows_the_database_unless_set() {
        assert_eq!(Config::default().control_socket(), Path::new("./shoal.sock"));
        let moved: Config = toml::from_str("[storage]\nsqlite = '/var/lib/shoal/data.db'").unwrap();
        assert_eq!(moved.control_socket(), Path::new("/var/lib/shoal/data.sock"));
        let set: Config =
            toml::from_str("[storage]\nsqlite = 'a.db'\n[control]\nsocket = '/run/shoal/ctl.sock'").unwrap();
        assert_eq!(set.control_socket(), Path::new("/run/shoal/ctl.sock"));
        let typo = toml::from_str::<Config>("[control]\nsocked = 'x'")
            .unwrap_err()
            .to_string();
        assert!(typo.contains("unknown field `socked`"), "{typo}");
    }

    #[test]
    fn components_are_checked_and_their_secrets_never_shown() {
        let ok: Config = toml::from_str(
            "[components]\nconflict = 'kick_new'\nhidden = ['bot.localhost']\n\
             [[components.service]]\ndomain = 'bot.localhost'\nsecret = 'sausages'\nmax_stanza_bytes = 20000\n",
        )
        .unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.components.conflict, ComponentConflict::KickNew);
        assert_eq!(ok.components.listen, [SocketAddr::from(([127, 0, 0, 1], 5347))]);
        assert!(!format!("{ok:?}").contains("sausages"));
        for (bad, problem) in [
            ("domain = 'localhost'\nsecret = 's'", "own domain"),
            ("domain = 'Bot.localhost'\nsecret = 's'", "should be written"),
            ("domain = 'bot.localhost'\nsecret = ''", "needs a secret"),
            (
                "domain = 'bot.localhost'\nsecret = 's'\nmax_stanza_bytes = 10",
                "max_stanza_bytes",
            ),
        ] {
            let c: Config = toml::from_str(&format!("[[components.service]]\n{bad}")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(problem), "{err}");
        }
        let twice = "[[components.service]]\ndomain = 'a.localhost'\nsecret = 's'\n\
                     [[components.service]]\ndomain = 'a.localhost'\nsecret = 't'\n";
        let c: Config = toml::from_str(twice).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
        let hidden: Config = toml::from_str("[components]\nhidden = ['x.localhost']").unwrap();
        assert!(hidden.validate().unwrap_err().to_string().contains("hidden"));
        let typo = toml::from_str::<Config>("[[components.service]]\ndomain = 'a.localhost'\nsecrte = 's'")
            .unwrap_err()
            .to_string();
        assert!(typo.contains("unknown field `secrte`"), "{typo}");
    }

    #[test]
    fn the_archive_and_durability_are_checked() {
        let c = Config::default();
        assert!(c.mam.enabled);
        assert_eq!(
            (c.mam.default, c.mam.retention_days, c.mam.max_page),
            (MamDefault::Always, 7, 250)
        );
        assert_eq!(c.storage.durability, crate::store::Durability::Normal);
        let set: Config = toml::from_str(
            "[storage]\ndurability = 'full'\n[mam]\nenabled = false\ndefault = 'roster'\n\
             retention_days = 0\nmax_page = 100",
        )
        .unwrap();
        set.validate().unwrap();
        assert_eq!(set.storage.durability, crate::store::Durability::Full);
        let settings = set.mam.settings();
        assert!(!settings.enabled);
        assert_eq!(settings.default, shoal_actors::xep::mam::DefaultPolicy::Roster);
        assert_eq!(settings.max_page, 100);
        for (bad, problem) in [
            ("[mam]\nmax_page = 0", "max_page"),
            ("[mam]\nmax_page = 5000", "max_page"),
            ("[mam]\nretention_days = 100000", "retention_days"),
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(problem), "{err}");
        }
        for (bad, problem) in [
            ("[mam]\ndefault = 'sometimes'", "unknown variant `sometimes`"),
            ("[storage]\ndurability = 'extra'", "unknown variant `extra`"),
            ("[mam]\nretention = 3", "unknown field `retention`"),
        ] {
            let err = toml::from_str::<Config>(bad).unwrap_err().to_string();
            assert!(err.contains(problem), "{err}");
        }
    }

    #[test]
    fn s2s_settings_have_defaults_and_are_checked() {
        let d: S2sConfig = toml::from_str("").unwrap();
        d.validate(&["a.test"]).unwrap();
        assert!(!d.enabled());
        assert_eq!(d.tls, S2sTls::Required);
        assert_eq!(
            (
                d.connect_timeout_secs,
                d.reconnect_after_secs,
                d.idle_timeout_secs,
                d.max_queued,
                d.max_stanza_bytes
            ),
            (10, 5, 600, 1000, 262_144)
        );
        assert!(d.ca_file.is_none() && d.blocked.is_empty() && d.hosts.is_empty());

        let set: S2sConfig = toml::from_str(
            "listen = ['127.0.0.2:5269']\ntls = 'optional'\nca_file = 'fixtures/tls/ca.pem'\n\
             idle_timeout_secs = 60\nblocked = ['spam.example']\n\
             [hosts]\n\"prosody.test\" = \"127.0.0.4:5269\"\n\"ejabberd.test\" = \"[::1]:5270\"\n",
        )
        .unwrap();
        set.validate(&["a.test"]).unwrap();
        assert!(set.enabled());
        assert_eq!(set.tls, S2sTls::Optional);
        assert_eq!(set.ca_file.as_deref(), Some(Path::new("fixtures/tls/ca.pem")));
        assert_eq!(set.idle_timeout_secs, 60);
        assert_eq!(set.blocked, ["spam.example"]);
        assert_eq!(set.hosts["prosody.test"], SocketAddr::from(([127, 0, 0, 4], 5269)));
        assert_eq!(set.hosts["ejabberd.test"], "[::1]:5270".parse::<SocketAddr>().unwrap());

        for (bad, problem) in [
            ("connect_timeout_secs = 0", "connect_timeout_secs must be at least 1"),
            ("reconnect_after_secs = 0", "reconnect_after_secs"),
            ("idle_timeout_secs = 0", "idle_timeout_secs"),
            ("max_queued = 0", "max_queued"),
            ("max_stanza_bytes = 9999", "max_stanza_bytes"),
            ("blocked = ['Spam.example']", "should be written \"spam.example\""),
            ("blocked = ['a@b.test']", "\"a@b.test\""),
            ("blocked = ['a.test']", "own domain"),
            ("[hosts]\n\"a.test\" = \"127.0.0.3:5269\"", "own domain"),
            (
                "[hosts]\n\"B.test\" = \"127.0.0.3:5269\"",
                "should be written \"b.test\"",
            ),
            ("[hosts]\n\"b.test\" = \"0.0.0.0:5269\"", "no address to connect to"),
            ("[hosts]\n\"b.test\" = \"127.0.0.3:0\"", "no address to connect to"),
            (
                "blocked = ['b.test']\n[hosts]\n\"b.test\" = \"127.0.0.3:5269\"",
                "also in [s2s] blocked",
            ),
        ] {
            let c: S2sConfig = toml::from_str(bad).unwrap();
            let err = c.validate(&["a.test"]).unwrap_err().to_string();
            assert!(err.contains(problem), "{bad}: {err}");
            assert!(err.contains("[s2s"), "{err}");
        }
        for (bad, problem) in [
            ("tls = 'off'", "unknown variant `off`"),
            ("idle_timeout = 5", "unknown field `idle_timeout`"),
            ("[hosts]\n\"b.test\" = \"b.test:5269\"", "socket address"),
            ("[hosts]\n\"b.test\" = \"127.0.0.3\"", "socket address"),
        ] {
            let err = toml::from_str::<S2sConfig>(bad).unwrap_err().to_string();
            assert!(err.contains(problem), "{bad}: {err}");
        }
        // A key of the configuration file, checked with the rest.
        let config =
            toml::from_str::<Config>("domain = 'a.test'\n[s2s]\nlisten = ['127.0.0.1:5269']\nblocked = ['a.test']")
                .unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("the server's own domain"), "{err}");
    }

    #[test]
    fn hosted_domains_and_their_own_settings_are_checked() {
        assert_eq!(Config::default().domain_list(), ["localhost"]);
        let single: Config = toml::from_str("domain = 'a.test'").unwrap();
        single.validate().unwrap();
        assert_eq!(
            (single.domain_list(), single.default_domain()),
            (vec!["a.test"], "a.test")
        );
        let two: Config = toml::from_str(
            "domains = ['a.test', 'b.test']\n[registration]\nenabled = false\nmax_per_network = 3\n\
             [hosts.'b.test']\ntls_cert = 'b.pem'\ntls_key = 'b.key'\n\
             [hosts.'b.test'.registration]\nenabled = true\n",
        )
        .unwrap();
        two.validate().unwrap();
        assert_eq!(two.default_domain(), "a.test");
        assert_eq!(two.registration_of("a.test"), (false, 3));
        assert_eq!(two.registration_of("b.test"), (true, 3));
        assert_eq!(two.tls_files_of("a.test"), None);
        assert_eq!(
            two.tls_files_of("b.test"),
            Some((Path::new("b.pem"), Path::new("b.key")))
        );
        let hosts = two.hosted().unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts.default_host().domain.as_str(), "a.test");
        assert!(hosts.get("b.test").unwrap().registration && !hosts.get("a.test").unwrap().registration);
        for (bad, problem) in [
            ("domain = 'a.test'\ndomains = ['b.test']", "both set"),
            ("domains = ['a.test', 'a.test']", "listed twice"),
            ("domains = ['A.test']", "should be written \"a.test\""),
            ("domains = ['a.test']\n[hosts.'b.test']", "not a hosted domain"),
            (
                "domains = ['a.test']\n[hosts.'a.test']\ntls_cert = 'a.pem'",
                "go together",
            ),
            (
                "domains = ['a.test', 'bot.test']\n[[components.service]]\ndomain = 'bot.test'\nsecret = 's'",
                "own domains",
            ),
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(problem), "{bad}: {err}");
        }
        for (bad, problem) in [
            ("[hosts.'a.test']\ntls_crt = 'x'", "unknown field `tls_crt`"),
            ("[hosts.'a.test'.registration]\nenable = true", "unknown field `enable`"),
        ] {
            let err = toml::from_str::<Config>(bad).unwrap_err().to_string();
            assert!(err.contains(problem), "{bad}: {err}");
        }
    }

    #[test]
    fn upload_settings_have_defaults_and_are_checked() {
        let d = Config::default();
        d.validate().unwrap();
        assert!(!d.upload.enabled);
        assert_eq!(d.upload_domain(), "upload.localhost");
        assert_eq!(d.upload_dir(), Path::new("./shoal.uploads"));
        assert_eq!(
            (
                d.upload.max_file_bytes,
                d.upload.quota_bytes,
                d.upload.expire_after_secs,
                d.upload.slot_timeout_secs
            ),
            (10_485_760, 104_857_600, 604_800, 300)
        );
        let set: Config = toml::from_str(
            "domain = 'a.test'\n[storage]\nsqlite = '/var/lib/shoal/data.db'\n\
             [upload]\nenabled = true\nurl = 'https://files.a.test/xmpp'\nquota_bytes = 0",
        )
        .unwrap();
        set.validate().unwrap();
        assert_eq!(set.upload_domain(), "upload.a.test");
        assert_eq!(set.upload_dir(), Path::new("/var/lib/shoal/data.uploads"));
        for (bad, problem) in [
            ("[upload]\nmax_file_bytes = 0", "max_file_bytes"),
            ("[upload]\nslot_timeout_secs = 0", "slot_timeout_secs"),
            ("[upload]\nmax_file_bytes = 200\nquota_bytes = 100", "quota_bytes"),
            ("[upload]\nexpire_after_secs = 99999999999", "expire_after_secs"),
            ("[upload]\ndomain = 'localhost'", "own domains"),
            (
                "[upload]\ndomain = 'Up.localhost'",
                "should be written \"up.localhost\"",
            ),
            (
                "[upload]\ndomain = 'bot.localhost'\n[[components.service]]\ndomain = 'bot.localhost'\nsecret = 's'",
                "component",
            ),
            ("[upload]\nurl = 'ftp://x/upload'", "http:// or https://"),
            ("[upload]\nurl = 'https:///upload'", "http:// or https://"),
            ("[upload]\nurl = 'https://x/upload?a=b'", "without query"),
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(problem), "{bad}: {err}");
        }
        let typo = toml::from_str::<Config>("[upload]\nmax_file_size = 5")
            .unwrap_err()
            .to_string();
        assert!(typo.contains("unknown field `max_file_size`"), "{typo}");
    }

    #[test]
    fn muc_settings_have_defaults_and_are_checked() {
        let d = Config::default();
        d.validate().unwrap();
        assert!(d.muc.enabled);
        assert_eq!(d.muc_domain(), "conference.localhost");
        let s = d.muc_settings();
        assert_eq!(s.domain, "conference.localhost");
        assert_eq!(s.create, shoal_actors::muc::CreatePolicy::Local);
        assert_eq!(
            (
                s.max_rooms_per_user,
                s.max_occupants,
                s.max_history,
                s.message_rate,
                s.message_burst
            ),
            (20, 5000, 100, 5, 20)
        );
        assert_eq!(s.idle_unload, std::time::Duration::from_secs(600));
        let set: Config = toml::from_str("domain = 'a.test'\n[muc]\ncreate = 'anyone'\nmessage_rate = 0").unwrap();
        set.validate().unwrap();
        assert_eq!(set.muc_domain(), "conference.a.test");
        assert_eq!(set.muc_settings().create, shoal_actors::muc::CreatePolicy::Anyone);
        // Off, its domain may be anything.
        let off: Config = toml::from_str("[muc]\nenabled = false\ndomain = 'localhost'").unwrap();
        off.validate().unwrap();
        for (bad, problem) in [
            ("[muc]\ndomain = 'localhost'", "own domains"),
            (
                "[muc]\ndomain = 'Chat.localhost'",
                "should be written \"chat.localhost\"",
            ),
            (
                "[muc]\ndomain = 'bot.localhost'\n[[components.service]]\ndomain = 'bot.localhost'\nsecret = 's'",
                "component",
            ),
            (
                "[http]\nlisten = ['127.0.0.1:0']\n[upload]\nenabled = true\ndomain = 'x.localhost'\n\
                 [muc]\ndomain = 'x.localhost'",
                "[upload]",
            ),
            ("[muc]\nmax_occupants = 0", "max_occupants"),
            ("[muc]\nmax_history = 10001", "max_history"),
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(problem), "{bad}: {err}");
        }
        let typo = toml::from_str::<Config>("[muc]\ncreate = 'everyone'")
            .unwrap_err()
            .to_string();
        assert!(typo.contains("unknown variant"), "{typo}");
    }

    #[test]
    fn errors_name_the_problem() {
        let typo = toml::from_str::<Config>("domian = 'x'").unwrap_err().to_string();
        assert!(typo.contains("unknown field `domian`"), "{typo}");
        let bad: Config = toml::from_str("domain = 'Example.COM'").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("example.com"));
        let small: Config = toml::from_str("[c2s]\nmax_stanza_bytes = 10").unwrap();
        assert!(small.validate().unwrap_err().to_string().contains("max_stanza_bytes"));
    }
}
