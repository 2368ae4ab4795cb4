//! The control channel between the `shoal` command and a running server:
//! a Unix socket, owner-only, beside the database by default
//! ([`Config::control_socket`](crate::Config::control_socket)). Account
//! changes made in the store by `shoal user del|passwd|set` reach the live
//! sessions through it.
//!
//! The protocol is line-based. A client connects, sends one request line
//! (UTF-8, at most [`MAX_REQUEST_BYTES`], within [`TIMEOUT`]); the server
//! answers with zero or more lines, then `ok` or `error: <message>`, and
//! closes the connection. Requests are [`ControlCommand`]s:
//!
//! ```text
//! kick-user <user@domain> [password-changed|account-deleted|admin]
//!     -> sessions <n>
//!     -> ok
//! delete-user <user@domain>
//!     -> removed <true|false>
//!     -> sessions <n>
//!     -> ok
//! publish-nick <user@domain> [nickname]
//!     -> published <true|false>
//!     -> ok
//! list-services
//!     -> service <domain> <kind> <listed|hidden> <since> <in flight> [name]
//!     -> ok
//! list-s2s
//!     -> s2s <in|out> <local> <remote> <auth> <tls> <seconds> <queued> <state>
//!     -> ok
//! list-sessions [<user@domain>|<user@domain/resource>]
//!     -> session <transport> <ip:port> <since> <priority> <presence> <sm> <full JID>
//!     -> ok
//! kick-session [password-changed|account-deleted|admin] <user@domain/resource>
//!     -> sessions <0|1>
//!     -> ok
//! stats
//!     -> stat <name> <value>
//!     -> ok
//! reload
//!     -> <what changed, one line each>
//!     -> [needs a restart: <the keys that differ but do not reload>]
//!     -> ok
//! ```
//!
//! A JID that ends a request or a line may hold spaces (a resource may), as
//! may the nickname that ends `publish-nick`.
//!
//! Unix only, like the rest of the server (see `rlimit`).

use std::fmt;
use std::future::Future;
use std::io::{BufRead, ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use actix::Addr;
use shoal_actors::error::{StreamCondition, StreamError};
use shoal_actors::jid::{BareJid, FullJid, Jid};
use shoal_actors::router::Router;
use shoal_actors::s2s::{Direction, LinkInfo, S2sContext};
use shoal_actors::services::ServiceSummary;
use shoal_actors::session::{Control, Session, Transport};
use shoal_actors::session_manager::{KickUser, SessionManager};
use shoal_actors::xep::{pep, register};
use shoal_actors::xml::{parse_element, NsBindings, ParseLimits};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::reload::Reloader;

/// Longest request line, without its line end.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// Time allowed for a request to arrive, and for an answer to be read or
/// written, on both sides.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a kicked account's sessions end: the stream error they get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KickReason {
    PasswordChanged,
    AccountDeleted,
    /// No reason given: the administrator ended the sessions.
    Admin,
}

impl KickReason {
    const ALL: [KickReason; 3] = [
        KickReason::PasswordChanged,
        KickReason::AccountDeleted,
        KickReason::Admin,
    ];

    /// The reason's word in a request line.
    pub fn keyword(self) -> &'static str {
        match self {
            KickReason::PasswordChanged => "password-changed",
            KickReason::AccountDeleted => "account-deleted",
            KickReason::Admin => "admin",
        }
    }

    fn from_keyword(word: &str) -> Option<KickReason> {
        KickReason::ALL.into_iter().find(|r| r.keyword() == word)
    }

    /// The stream error the sessions are closed with.
    pub fn stream_error(self) -> StreamError {
        match self {
            // RFC 6120 §4.9.3.16: the stream's security context is void and
            // authentication must be negotiated again. A client that knows
            // the new password reconnects; a stolen session cannot.
            KickReason::PasswordChanged => register::password_changed(),
            // What an account cancelled in-band (XEP-0077) gets too.
            KickReason::AccountDeleted => register::account_removed(),
            KickReason::Admin => {
                StreamError::with_text(StreamCondition::PolicyViolation, "session ended by the administrator")
            }
        }
    }
}

/// A request on the control socket. A new command is a new variant, a
/// case in [`ControlCommand::from_str`](std::str::FromStr), one in
/// [`fmt::Display`] and one in [`ControlCommand::execute`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlCommand {
    /// `kick-user <user@domain> [reason]`: closes every session of the
    /// account; answers `sessions <n>`, the number closed.
    KickUser { user: BareJid, reason: KickReason },
    /// `delete-user <user@domain>`: ends every subscription of the account
    /// (its contacts are told), deletes it, and closes its sessions;
    /// answers `removed <true|false>` and `sessions <n>`.
    DeleteUser { user: BareJid },
    /// `publish-nick <user@domain> [nickname]`: publishes the account's
    /// XEP-0172 nickname with PEP (empty: none), so its followers are
    /// notified, and sets the profile's; answers `published <true|false>`,
    /// false when PEP is off. The nickname is the rest of the line.
    PublishNick { user: BareJid, nick: String },
    /// `list-services`: what is published, one line each:
    /// `service <domain> <kind> <listed|hidden> <since, Unix seconds> <requests in flight> [name]`.
    ListServices,
    /// `list-s2s`: the streams between this server and others, one line
    /// each: `s2s <in|out> <local> <remote> <dialback|external|-> <tls|plain|->
    /// <seconds in this state> <queued> <state>`, the state last (a failed
    /// link's says why, in words). Nothing when federation is off.
    ListS2s,
    /// `list-sessions [jid]`: the live sessions (of one account, or the
    /// one session a full JID names), sorted by JID, one line each; see
    /// [`session_line`].
    ListSessions { of: Option<Jid> },
    /// `kick-session [reason] <user@domain/resource>`: closes one session;
    /// answers `sessions <n>`, 1 or 0.
    KickSession { jid: FullJid, reason: KickReason },
    /// `stats`: `stat <name> <value>` lines; see [`ControlContext::stats`].
    Stats,
    /// `reload`: reads the configuration file again; answers what changed
    /// (see [`crate::reload`]). A configuration that does not load is
    /// refused with the reason, and nothing changes.
    Reload,
}

/// An account, named by its bare JID: with several hosted domains a
/// username alone names none.
fn account_arg(user: &str) -> Result<BareJid, String> {
    match BareJid::parse(user) {
        Ok(jid) if jid.node().is_some() && !user.contains('/') => Ok(jid),
        Ok(_) => Err(format!("invalid account {user:?}: give user@domain")),
        Err(e) => Err(format!("invalid account {user:?}: {e}")),
    }
}

/// An account or one of its sessions: `user@domain[/resource]`.
fn user_arg(jid: &str) -> Result<Jid, String> {
    match Jid::parse(jid) {
        Ok(j) if j.node().is_some() => Ok(j),
        Ok(_) => Err(format!("invalid JID {jid:?}: give user@domain or user@domain/resource")),
        Err(e) => Err(format!("invalid JID {jid:?}: {e}")),
    }
}

fn reason_arg(word: &str) -> Result<KickReason, String> {
    KickReason::from_keyword(word).ok_or_else(|| {
        let known: Vec<&str> = KickReason::ALL.iter().map(|r| r.keyword()).collect();
        format!("unknown reason {word:?}; expected one of {}", known.join(", "))
    })
}

impl std::str::FromStr for ControlCommand {
    type Err = String;

    fn from_str(line: &str) -> Result<ControlCommand, String> {
        let line = line.trim();
        // What follows the name: words, or one JID that may hold spaces.
        let (name, rest) = line
            .split_once(|c: char| c.is_ascii_whitespace())
            .map_or((line, ""), |(name, rest)| (name, rest.trim()));
        if name.is_empty() {
            return Err("empty request".into());
        }
        let args: Vec<&str> = rest.split_ascii_whitespace().collect();
        match name {
            "kick-user" => {
                let (user, reason) = match args.as_slice() {
                    [user] => (*user, KickReason::Admin),
                    [user, word] => (*user, reason_arg(word)?),
                    _ => return Err("usage: kick-user <user@domain> [password-changed|account-deleted|admin]".into()),
                };
                Ok(ControlCommand::KickUser {
                    user: account_arg(user)?,
                    reason,
                })
            }
            "list-services" if args.is_empty() => Ok(ControlCommand::ListServices),
            "list-s2s" if args.is_empty() => Ok(ControlCommand::ListS2s),
            "stats" if args.is_empty() => Ok(ControlCommand::Stats),
            "reload" if args.is_empty() => Ok(ControlCommand::Reload),
            "list-sessions" if rest.is_empty() => Ok(ControlCommand::ListSessions { of: None }),
            "list-sessions" => Ok(ControlCommand::ListSessions {
                of: Some(user_arg(rest)?),
            }),
            "kick-session" => {
                let usage = "usage: kick-session [password-changed|account-deleted|admin] <user@domain/resource>";
                let (reason, jid) = match rest.split_once(|c: char| c.is_ascii_whitespace()) {
                    Some((word, jid)) if KickReason::from_keyword(word).is_some() => (reason_arg(word)?, jid.trim()),
                    _ if rest.is_empty() => return Err(usage.into()),
                    _ => (KickReason::Admin, rest),
                };
                match user_arg(jid)?.try_into_full() {
                    Ok(jid) => Ok(ControlCommand::KickSession { jid, reason }),
                    Err(_) => Err(format!("{jid:?} names no session: give user@domain/resource")),
                }
            }
            "publish-nick" => {
                let (user, nick) = rest
                    .split_once(|c: char| c.is_ascii_whitespace())
                    .map_or((rest, ""), |(user, nick)| (user, nick.trim()));
                if user.is_empty() {
                    return Err("usage: publish-nick <user@domain> [nickname]".into());
                }
                Ok(ControlCommand::PublishNick {
                    user: account_arg(user)?,
                    nick: nick.to_owned(),
                })
            }
            "delete-user" => match args.as_slice() {
                [user] => Ok(ControlCommand::DeleteUser {
                    user: account_arg(user)?,
                }),
                _ => Err("usage: delete-user <user@domain>".into()),
            },
            other => Err(format!("unknown command {other:?}")),
        }
    }
}

impl fmt::Display for ControlCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlCommand::KickUser { user, reason } => write!(f, "kick-user {user} {}", reason.keyword()),
            ControlCommand::DeleteUser { user } => write!(f, "delete-user {user}"),
            ControlCommand::PublishNick { user, nick } => write!(f, "publish-nick {user} {nick}"),
            ControlCommand::ListServices => write!(f, "list-services"),
            ControlCommand::ListS2s => write!(f, "list-s2s"),
            ControlCommand::ListSessions { of: None } => write!(f, "list-sessions"),
            ControlCommand::ListSessions { of: Some(jid) } => write!(f, "list-sessions {jid}"),
            ControlCommand::KickSession { jid, reason } => write!(f, "kick-session {} {jid}", reason.keyword()),
            ControlCommand::Stats => write!(f, "stats"),
            ControlCommand::Reload => write!(f, "reload"),
        }
    }
}

/// What commands act on: the running server's actors.
pub struct ControlContext {
    pub sm: Addr<SessionManager>,
    pub router: Router,
    /// Federation, when on.
    pub s2s: Option<Arc<S2sContext>>,
    pub reloader: Arc<Reloader>,
    /// When the server started.
    pub started: Instant,
}

impl ControlContext {
    /// `user`, if it is an account of a hosted domain.
    fn local(&self, user: BareJid) -> Result<BareJid, String> {
        if self.router.is_local_user(user.as_jid()) {
            Ok(user)
        } else {
            Err(format!("{user} is not on a domain of this server"))
        }
    }
}

impl ControlCommand {
    /// Runs the command; returns the answer's lines before `ok`, or the
    /// message of the `error:` line.
    /// How long the client waits for the answer: removing an account tells
    /// each of its contacts first, which can take a while.
    pub fn answer_within(&self) -> Duration {
        match self {
            ControlCommand::DeleteUser { .. } => Duration::from_secs(600),
            // Certificates are read (or generated) and checked.
            ControlCommand::Reload => Duration::from_secs(60),
            ControlCommand::KickUser { .. }
            | ControlCommand::PublishNick { .. }
            | ControlCommand::KickSession { .. }
            | ControlCommand::ListServices
            | ControlCommand::ListS2s
            | ControlCommand::ListSessions { .. }
            | ControlCommand::Stats => TIMEOUT,
        }
    }

    pub async fn execute(self, cx: &ControlContext) -> Result<Vec<String>, String> {
        match self {
            ControlCommand::KickUser { user, reason } => {
                let user = cx.local(user)?;
                let kick = KickUser {
                    user: user.clone(),
                    error: reason.stream_error(),
                };
                let ended = cx
                    .sm
                    .send(kick)
                    .await
                    .map_err(|e| format!("the session manager did not answer: {e}"))?;
                log::info!("{user}: {ended} session(s) ended ({})", reason.keyword());
                Ok(vec![format!("sessions {ended}")])
            }
            ControlCommand::DeleteUser { user } => {
                let user = cx.local(user)?;
                let removed = shoal_actors::roster::account::remove_account(cx.router.clone(), user.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                let ended = cx.router.sessions().kick(&user, &register::account_removed(), None);
                Ok(vec![format!("removed {removed}"), format!("sessions {ended}")])
            }
            ControlCommand::PublishNick { user, nick } => {
                let user = cx.local(user)?;
                if !pep::enabled(&cx.router) {
                    return Ok(vec!["published false".to_owned()]);
                }
                pep::publish_nick(&cx.router, &user, &nick)
                    .await
                    .map_err(|e| format!("publishing the nickname of {user}: {e}"))?;
                Ok(vec!["published true".to_owned()])
            }
            ControlCommand::ListServices => Ok(cx.router.services().list().iter().map(service_line).collect()),
            ControlCommand::ListS2s => Ok(cx
                .s2s
                .iter()
                .flat_map(|s2s| s2s.links())
                .map(|l| s2s_line(&l))
                .collect()),
            ControlCommand::ListSessions { of } => {
                let mut sessions = match &of {
                    None => cx.router.sessions().all(),
                    Some(jid) => cx.router.sessions().resources(&jid.to_bare()),
                };
                if let Some(resource) = of.as_ref().and_then(Jid::resource) {
                    sessions.retain(|s| s.jid.resource() == resource);
                }
                sessions.sort_by(|a, b| a.jid.cmp(&b.jid));
                Ok(sessions.iter().map(|s| session_line(s)).collect())
            }
            ControlCommand::KickSession { jid, reason } => {
                let ended = match cx.router.sessions().get(&jid) {
                    Some(session) => {
                        session.control(Control::Kick(reason.stream_error()));
                        log::info!("{jid}: session ended ({})", reason.keyword());
                        1
                    }
                    None => 0,
                };
                Ok(vec![format!("sessions {ended}")])
            }
            ControlCommand::Stats => Ok(cx
                .stats()
                .into_iter()
                .map(|(name, value)| format!("stat {name} {value}"))
                .collect()),
            ControlCommand::Reload => cx
                .reloader
                .reload()
                .map_err(|e| format!("{e}; the configuration in force is unchanged")),
        }
    }
}

impl ControlContext {
    /// The server's counts, by name: `uptime-secs`; `sessions`, and those
    /// of each transport (`sessions-tcp`...) and waiting to be resumed
    /// (`sessions-detached`); `accounts-online`; `services` published, of
    /// which `components`; `s2s-in` and `s2s-out`, the authenticated
    /// streams with other servers; `memory-rss-bytes` where the system
    /// tells it.
    fn stats(&self) -> Vec<(String, u64)> {
        let sessions = self.router.sessions().all();
        let mut out = vec![
            ("uptime-secs".to_owned(), self.started.elapsed().as_secs()),
            ("sessions".to_owned(), sessions.len() as u64),
        ];
        for transport in Transport::ALL {
            let n = sessions
                .iter()
                .filter(|s| s.link().is_some_and(|l| l.transport == transport))
                .count();
            out.push((format!("sessions-{}", transport.as_str()), n as u64));
        }
        let detached = sessions
            .iter()
            .filter(|s| s.sm_status() == shoal_actors::session::SmStatus::Detached)
            .count();
        out.push(("sessions-detached".to_owned(), detached as u64));
        let mut accounts: Vec<BareJid> = sessions.iter().map(|s| s.jid.to_bare()).collect();
        accounts.sort_unstable();
        accounts.dedup();
        out.push(("accounts-online".to_owned(), accounts.len() as u64));
        let services = self.router.services().list();
        let components = services.iter().filter(|s| s.kind == "component").count();
        out.push(("services".to_owned(), services.len() as u64));
        out.push(("components".to_owned(), components as u64));
        let links: Vec<LinkInfo> = self.s2s.iter().flat_map(|s2s| s2s.links()).collect();
        for direction in [Direction::In, Direction::Out] {
            // Authenticated: up, not connecting nor failed.
            let n = links
                .iter()
                .filter(|l| l.direction == direction && l.auth.is_some())
                .count();
            out.push((format!("s2s-{}", direction.as_str()), n as u64));
        }
        if let Some(rss) = resident_bytes() {
            out.push(("memory-rss-bytes".to_owned(), rss));
        }
        out
    }
}

/// This process's resident set, from /proc/self/statm (Linux).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it answers -1 for an unknown name.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).ok().map(|page| pages * page)
}

/// One session as `list-sessions` answers it: `session <tcp|tls|websocket|
/// websocket-tls|-> <peer ip:port|-> <bound at, Unix seconds> <priority|->
/// <presence> <off|enabled|resumable|detached> <full JID>`. The presence is
/// `-` before the first available presence and after unavailable, else its
/// `<show/>` (`available` without one). The JID is last: a resource may
/// hold spaces.
fn session_line(s: &Session) -> String {
    let link = s.link();
    let transport = link.map_or("-", |l| l.transport.as_str());
    let peer = link.map_or_else(|| "-".to_owned(), |l| l.peer.to_string());
    let since = s.since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let priority = s.priority().map_or_else(|| "-".to_owned(), |p| p.to_string());
    let presence = match s.priority() {
        None => "-",
        Some(_) => s.last_presence().as_deref().map_or("available", show),
    };
    format!(
        "session {transport} {peer} {since} {priority} {presence} {} {}",
        s.sm_status().as_str(),
        s.jid
    )
}

/// The `<show/>` of a serialised presence: `available` without one (or
/// with one RFC 6121 §4.7.2.1 does not define).
fn show(presence: &[u8]) -> &'static str {
    let limits = ParseLimits::default();
    let shown = parse_element(presence, &NsBindings::client(), &limits)
        .ok()
        .and_then(|p| p.get_child("show", shoal_actors::ns::CLIENT).map(|s| s.text()));
    match shown.as_deref().map(str::trim) {
        Some("away") => "away",
        Some("chat") => "chat",
        Some("dnd") => "dnd",
        Some("xa") => "xa",
        _ => "available",
    }
}

/// One stream between servers as `list-s2s` answers it.
fn s2s_line(l: &LinkInfo) -> String {
    let auth = l.auth.map_or("-", |a| a.as_str());
    let tls = match (l.auth, l.tls) {
        (None, _) => "-",
        (Some(_), true) => "tls",
        (Some(_), false) => "plain",
    };
    format!(
        "s2s {} {} {} {auth} {tls} {} {} {}",
        l.direction.as_str(),
        l.local,
        l.remote,
        l.since.as_secs(),
        l.queued,
        l.state
    )
}

/// One published service as `list-services` answers it.
fn service_line(s: &ServiceSummary) -> String {
    let since = s.since.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let listed = if s.hidden { "hidden" } else { "listed" };
    let mut line = format!("service {} {} {listed} {since} {}", s.domain, s.kind, s.in_flight);
    if let Some(name) = &s.name {
        line.push(' ');
        line.push_str(name);
    }
    line
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "another Shoal server answers on the control socket {0} (it likely uses the same database); \
         stop it first, or set [control] socket"
    )]
    InUse(PathBuf),
    #[error("the control socket path {0} exists and is not a socket; remove it or set [control] socket")]
    NotASocket(PathBuf),
    #[error("the control socket's directory {dir} does not exist (socket {path})")]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The socket file as bound, told apart from a later file at the same
/// path: only ours is ever removed.
#[derive(Clone, Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn remove(&self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("cannot remove the control socket {}: {e}", self.path.display());
            }
        }
    }
}

/// A bound control socket, not serving yet. Dropped unserved (the server
/// failed to start), it removes its file.
pub struct ControlListener {
    listener: UnixListener,
    file: SocketFile,
    armed: bool,
}

impl ControlListener {
    /// Binds `path`, owner-only. A socket file left by a server that did
    /// not stop cleanly is replaced; one a server still answers on is an
    /// error, since two servers on one database would not see each
    /// other's sessions.
    pub async fn bind(path: &Path) -> Result<ControlListener, ControlError> {
        let io = |source: std::io::Error| ControlError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => return Err(ControlError::NotASocket(path.to_owned())),
            Ok(_) => {
                if answers(path).await.map_err(io)? {
                    return Err(ControlError::InUse(path.to_owned()));
                }
                log::info!("removing the stale control socket {}", path.display());
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    // Another server starting at the same moment was first.
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io(e)),
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(ControlError::NoDirectory {
                path: path.to_owned(),
                dir: dir.to_owned(),
            });
        }
        let listener = UnixListener::bind(path).map_err(|e| match e.kind() {
            // Another server bound it since the check above.
            ErrorKind::AddrInUse => ControlError::InUse(path.to_owned()),
            _ => io(e),
        })?;
        // Until this, the mode follows the umask; peer credentials are
        // checked on every connection as well, which covers that moment.
        let owner_only = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::symlink_metadata(path));
        let meta = match owner_only {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(io(e));
            }
        };
        log::info!("control socket {}", path.display());
        Ok(ControlListener {
            listener,
            file: SocketFile {
                path: path.to_owned(),
                dev: meta.dev(),
                ino: meta.ino(),
            },
            armed: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        if self.armed {
            self.file.remove();
        }
    }
}

/// Whether a server accepts connections on the socket at `path`: `false`
/// for a stale file (connection refused).
async fn answers(path: &Path) -> std::io::Result<bool> {
    match tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => Ok(false),
        Ok(Err(e)) => Err(e),
        // A full accept queue: a server is there, just busy.
        Err(_) => Ok(true),
    }
}

/// A serving control socket.
pub struct ControlServer {
    shutdown: CancellationToken,
    file: SocketFile,
}

impl ControlServer {
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Stops accepting and removes the socket file, so that the `shoal`
    /// command sees no server running. Requests being answered finish.
    pub fn stop(self) {
        self.shutdown.cancel();
        self.file.remove();
    }
}

/// Serves commands against the server's actors. Must be called inside
/// the actix System (the connections are local tasks).
pub fn serve(listener: ControlListener, cx: ControlContext) -> ControlServer {
    let cx = Rc::new(cx);
    serve_with(listener, move |command: ControlCommand| {
        let cx = cx.clone();
        async move { command.execute(&cx).await }
    })
}

/// [`serve`] with any way of running a command (the tests use a fake).
fn serve_with<H, F>(mut listener: ControlListener, handler: H) -> ControlServer
where
    H: Fn(ControlCommand) -> F + Clone + 'static,
    F: Future<Output = Result<Vec<String>, String>> + 'static,
{
    // From here the file is the ControlServer's to remove.
    listener.armed = false;
    let server = ControlServer {
        shutdown: CancellationToken::new(),
        file: listener.file.clone(),
    };
    let shutdown = server.shutdown.clone();
    actix_rt::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.listener.accept() => r,
            };
            match accepted {
                Ok((stream, _)) => {
                    actix_rt::spawn(answer(stream, handler.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, typically: back off rather than spin.
                    log::warn!("control socket {}: accept failed: {e}", listener.file.path.display());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    server
}

/// The effective user id of this process.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Reads one request, runs it, writes the answer.
async fn answer<H, F>(mut stream: UnixStream, handler: H)
where
    H: Fn(ControlCommand) -> F,
    F: Future<Output = Result<Vec<String>, String>>,
{
    // Only this server's user (or root, who could act on the process
    // anyway) may give commands, whatever the file's mode.
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == euid() || cred.uid() == 0 => {}
        Ok(cred) => {
            log::warn!("control socket: refused a connection from uid {}", cred.uid());
            return;
        }
        Err(e) => {
            log::warn!("control socket: cannot tell who connected: {e}");
            return;
        }
    }
    let result = match tokio::time::timeout(TIMEOUT, read_request(&mut stream)).await {
        Err(_) => Err(format!("no request within {} s", TIMEOUT.as_secs())),
        // Connected and left: a starting server checking for this one.
        Ok(Ok(None)) => return,
        Ok(Ok(Some(line))) => match line.parse::<ControlCommand>() {
            Ok(command) => {
                log::debug!("control: {command}");
                handler(command).await
            }
            Err(e) => Err(e),
        },
        Ok(Err(e)) => Err(e),
    };
    let reply = match result {
        Ok(lines) => {
            let mut reply = String::new();
            for line in lines {
                reply.push_str(&one_line(&line));
                reply.push('\n');
            }
            reply.push_str("ok\n");
            reply
        }
        Err(e) => {
            log::warn!("control: {e}");
            format!("error: {}\n", one_line(&e))
        }
    };
    match tokio::time::timeout(TIMEOUT, stream.write_all(reply.as_bytes())).await {
        Ok(Ok(())) => {
            let _ = stream.shutdown().await;
        }
        Ok(Err(e)) => log::debug!("control: writing the answer: {e}"),
        Err(_) => log::debug!("control: the client did not read the answer"),
    }
}

/// Keeps a line of the answer on one line.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// The request line without its line end; `None` if the client closed
/// without sending anything.
async fn read_request<R: AsyncRead + Unpin>(reader: R) -> Result<Option<String>, String> {
    let mut buf = Vec::new();
    // One byte past the limit tells a line at the limit from a longer one.
    let mut limited = tokio::io::BufReader::new(reader.take(MAX_REQUEST_BYTES as u64 + 1));
    limited
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > MAX_REQUEST_BYTES {
        return Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
    } else if buf.is_empty() {
        return Ok(None);
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| "the request is not UTF-8".to_owned())
}

/// Sends one request to the server running at `path` and returns the
/// lines of its answer before `ok`. `Ok(None)`: no server runs there (no
/// socket, or a stale one). Blocking; for the `shoal` command.
pub fn request(path: &Path, line: &str) -> Result<Option<Vec<String>>, String> {
    if line.contains(['\r', '\n']) || line.len() > MAX_REQUEST_BYTES {
        return Err(format!("a request is one line of at most {MAX_REQUEST_BYTES} bytes"));
    }
    let stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => return Ok(None),
        Err(e) => return Err(format!("cannot connect to the control socket {}: {e}", path.display())),
    };
    let wait = line.parse::<ControlCommand>().map_or(TIMEOUT, |c| c.answer_within());
    let fail = |e: std::io::Error| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!(
            "control socket {}: no answer within {} s",
            path.display(),
            wait.as_secs()
        ),
        _ => format!("control socket {}: {e}", path.display()),
    };
    stream.set_read_timeout(Some(wait)).map_err(fail)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(fail)?;
    (&stream).write_all(format!("{line}\n").as_bytes()).map_err(fail)?;
    let mut lines = Vec::new();
    for answer in std::io::BufReader::new(&stream).lines() {
        let answer = answer.map_err(fail)?;
        if answer == "ok" {
            return Ok(Some(lines));
        }
        if let Some(message) = answer.strip_prefix("error: ") {
            return Err(format!("the running server refused {line:?}: {message}"));
        }
        lines.push(answer);
    }
    Err(format!(
        "control socket {}: the server closed the connection without finishing its answer",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_print_back() {
        let kick = |user: &str, reason| ControlCommand::KickUser {
            user: BareJid::parse(user).unwrap(),
            reason,
        };
        assert_eq!(
            "kick-user Alice@A.test password-changed".parse::<ControlCommand>(),
            Ok(kick("alice@a.test", KickReason::PasswordChanged))
        );
        assert_eq!(
            "  kick-user bob@b.test   account-deleted ".parse::<ControlCommand>(),
            Ok(kick("bob@b.test", KickReason::AccountDeleted))
        );
        assert_eq!(
            "kick-user carol@a.test".parse::<ControlCommand>(),
            Ok(kick("carol@a.test", KickReason::Admin))
        );
        for reason in KickReason::ALL {
            let command = kick("alice@a.test", reason);
            assert_eq!(command.to_string().parse::<ControlCommand>(), Ok(command));
        }
        let delete = ControlCommand::DeleteUser {
            user: BareJid::parse("alice@b.test").unwrap(),
        };
        assert_eq!(delete.to_string().parse::<ControlCommand>(), Ok(delete));

        // A nickname may hold spaces: it ends the request; none clears it.
        let nick = |nick: &str| ControlCommand::PublishNick {
            user: BareJid::parse("alice@a.test").unwrap(),
            nick: nick.to_owned(),
        };
        assert_eq!(
            "publish-nick alice@A.test  Alice  Liddell ".parse::<ControlCommand>(),
            Ok(nick("Alice  Liddell"))
        );
        assert_eq!("publish-nick alice@a.test".parse::<ControlCommand>(), Ok(nick("")));
        for command in [nick("Alice Liddell"), nick("")] {
            assert_eq!(command.to_string().parse::<ControlCommand>(), Ok(command));
        }

        // A session's JID may hold spaces: it ends the request.
        let phone = FullJid::parse("alice@a.test/My Phone").unwrap();
        assert_eq!(
            "kick-session alice@A.test/My Phone".parse::<ControlCommand>(),
            Ok(ControlCommand::KickSession {
                jid: phone.clone(),
                reason: KickReason::Admin
            })
        );
        for command in [
            ControlCommand::KickSession {
                jid: phone.clone(),
                reason: KickReason::PasswordChanged,
            },
            ControlCommand::ListSessions { of: None },
            ControlCommand::ListSessions {
                of: Some(phone.as_jid().clone()),
            },
            ControlCommand::ListSessions {
                of: Some(Jid::parse("bob@b.test").unwrap()),
            },
            ControlCommand::Stats,
            ControlCommand::Reload,
        ] {
            assert_eq!(command.to_string().parse::<ControlCommand>(), Ok(command));
        }
    }

    #[test]
    fn bad_commands_are_refused_with_the_reason() {
        let err = |line: &str| line.parse::<ControlCommand>().unwrap_err();
        assert_eq!(err(""), "empty request");
        assert_eq!(err("   "), "empty request");
        assert_eq!(err("reboot now"), "unknown command \"reboot\"");
        assert!(err("kick-user").starts_with("usage: kick-user"));
        assert!(err("kick-user a b c").starts_with("usage: kick-user"));
        assert!(err("kick-user alice@localhost sideways").starts_with("unknown reason \"sideways\""));
        // A username alone names no account once several domains are hosted.
        assert!(err("kick-user alice").starts_with("invalid account \"alice\""));
        assert!(err("delete-user localhost").starts_with("invalid account \"localhost\""));
        assert!(err("kick-user alice@localhost/phone").starts_with("invalid account"));
        assert!(err("kick-session").starts_with("usage: kick-session"));
        assert!(err("publish-nick").starts_with("usage: publish-nick"));
        assert!(err("publish-nick alice Al").starts_with("invalid account \"alice\""));
        assert_eq!(
            err("kick-session admin alice@localhost"),
            "\"alice@localhost\" names no session: give user@domain/resource"
        );
        assert!(err("list-sessions localhost").starts_with("invalid JID \"localhost\""));
        assert_eq!(err("reload now"), "unknown command \"reload\"");
    }

    #[tokio::test]
    async fn requests_are_one_bounded_utf8_line() {
        let read = |bytes: Vec<u8>| async move { read_request(&bytes[..]).await };
        assert_eq!(
            read(b"kick-user alice\n".to_vec()).await,
            Ok(Some("kick-user alice".into()))
        );
        assert_eq!(
            read(b"kick-user alice\r\nmore".to_vec()).await,
            Ok(Some("kick-user alice".into()))
        );
        // The client may half-close instead of ending the line.
        assert_eq!(
            read(b"kick-user alice".to_vec()).await,
            Ok(Some("kick-user alice".into()))
        );
        assert_eq!(read(Vec::new()).await, Ok(None));
        let mut at_limit = vec![b'a'; MAX_REQUEST_BYTES];
        at_limit.push(b'\n');
        assert_eq!(
            read(at_limit).await.map(|l| l.map(|l| l.len())),
            Ok(Some(MAX_REQUEST_BYTES))
        );
        let mut over = vec![b'a'; MAX_REQUEST_BYTES + 1];
        over.push(b'\n');
        assert_eq!(read(over).await, Err("request longer than 4096 bytes".into()));
        assert_eq!(
            read(b"kick-user \xff\n".to_vec()).await,
            Err("the request is not UTF-8".into())
        );
    }

    /// Runs the blocking client off the runtime's only thread.
    async fn ask(path: &Path, line: &str) -> Result<Option<Vec<String>>, String> {
        let (path, line) = (path.to_owned(), line.to_owned());
        tokio::task::spawn_blocking(move || request(&path, &line))
            .await
            .unwrap()
    }

    #[test]
    fn serves_owner_only_refuses_a_second_server_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shoal.sock");
        actix_rt::System::new().block_on(async {
            let listener = ControlListener::bind(&path).await.unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
            let server = serve_with(listener, |command: ControlCommand| async move {
                Ok::<_, String>(vec![format!("ran {command}"), "second line".into()])
            });

            assert_eq!(
                ask(&path, "kick-user Alice@localhost").await,
                Ok(Some(vec![
                    "ran kick-user alice@localhost admin".into(),
                    "second line".into()
                ]))
            );
            assert_eq!(
                ask(&path, "reboot").await,
                Err("the running server refused \"reboot\": unknown command \"reboot\"".into())
            );
            assert!(ask(&path, &"a".repeat(MAX_REQUEST_BYTES + 1)).await.is_err());

            // A client that ignores the limit is told so.
            let p = path.clone();
            let raw = tokio::task::spawn_blocking(move || {
                let mut s = std::os::unix::net::UnixStream::connect(&p).unwrap();
                s.set_read_timeout(Some(TIMEOUT)).unwrap();
                let mut long = vec![b'a'; MAX_REQUEST_BYTES * 2];
                long.push(b'\n');
                s.write_all(&long).unwrap();
                let mut answer = String::new();
                std::io::BufReader::new(s).read_line(&mut answer).unwrap();
                answer
            })
            .await
            .unwrap();
            assert_eq!(raw, "error: request longer than 4096 bytes\n");

            // A second server on the same path is refused, and leaves the
            // first one's socket alone.
            let second = ControlListener::bind(&path).await.err().unwrap();
            assert!(matches!(second, ControlError::InUse(_)), "{second}");
            assert!(second.to_string().contains("shoal.sock"), "{second}");
            assert!(ask(&path, "kick-user alice@localhost").await.unwrap().is_some());

            server.stop();
            assert!(!path.exists());
            assert_eq!(ask(&path, "kick-user alice@localhost").await, Ok(None));
        });
    }

    #[test]
    fn a_stale_socket_is_replaced_and_other_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shoal.sock");
        // What a server that was killed leaves behind.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert_eq!(
            request(&path, "kick-user alice@localhost"),
            Ok(None),
            "a stale socket means no server"
        );
        actix_rt::System::new().block_on(async {
            let listener = ControlListener::bind(&path).await.unwrap();
            assert_eq!(listener.path(), path.as_path());
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
            // Never served (the server failed to start): the file goes too.
            drop(listener);
            assert!(!path.exists());

            std::fs::write(&path, "data").unwrap();
            let err = ControlListener::bind(&path).await.err().unwrap();
            assert!(err.to_string().contains("exists and is not a socket"), "{err}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");

            let err = ControlListener::bind(&dir.path().join("missing/shoal.sock"))
                .await
                .err()
                .unwrap();
            assert!(err.to_string().contains("does not exist"), "{err}");
        });
    }
}
