//! XEP-0363 HTTP File Upload. A published service (`upload.<domain>` by
//! default, the `service` module) gives a user of this server a **slot** for one
//! file of a declared size: a URL to PUT it to, and the same URL to GET it
//! from, over the HTTP listener ([`http::routes`]). The URL is the
//! capability: 128 random bits, and the PUT is accepted once, with exactly
//! the declared size, until the slot times out.
//!
//! On disk, under `[upload] dir`: `<id>/<filename>` (the file) and
//! `<id>.meta` (its owner, name, size, type and upload time). The `.meta`
//! is written last and removed first: it is what makes an upload exist,
//! and at start whatever of ours has none (an upload cut short) is
//! removed. Files and slots are also indexed in memory, for the quotas;
//! file I/O never runs on an actor's event loop (tokio's blocking pool).

pub mod http;
mod service;

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use shoal_actors::error::{StanzaCondition, StanzaError};
use shoal_actors::jid::BareJid;
use shoal_actors::router::Router;
use shoal_actors::services::PublishError;
use shoal_actors::xep::mam::{format_stamp, now_ms};
use shoal_actors::xml::Element;

use crate::config::Config;

/// XEP-0363's namespace.
pub const NS: &str = "urn:xmpp:http:upload:0";

/// What a URL path segment keeps unencoded: RFC 3986's unreserved
/// characters. Also fine for RFC 8187 `filename*` values.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Longest file name kept, in bytes (the usual file systems' limit).
const MAX_FILENAME_BYTES: usize = 255;

/// The service's settings, from `[upload]` and the HTTP listener.
#[derive(Clone, Debug)]
pub struct Settings {
    pub domain: String,
    pub dir: PathBuf,
    /// The slots' base URL, without a trailing slash: what clients reach
    /// the listener's `/upload` at.
    pub url: String,
    pub max_file_bytes: u64,
    /// Per user, stored and reserved; 0: no quota.
    pub quota_bytes: u64,
    /// `None`: files are kept until deleted by hand.
    pub expire_after: Option<Duration>,
    pub slot_timeout: Duration,
    /// Web origins whose pages may PUT (CORS); empty: any. The URL is the
    /// capability, so this only narrows which pages may use one.
    pub allowed_origins: Vec<String>,
}

impl Settings {
    /// `[upload]` as configured; `http_base_url` is the HTTP listener as
    /// clients reach it (`http://127.0.0.1:5280`), the default of
    /// `[upload] url` with `/upload` added.
    pub fn from_config(config: &Config, http_base_url: &str, allowed_origins: &[String]) -> Settings {
        let u = &config.upload;
        let url = match &u.url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("{}/upload", http_base_url.trim_end_matches('/')),
        };
        Settings {
            domain: config.upload_domain(),
            dir: config.upload_dir(),
            url,
            max_file_bytes: u.max_file_bytes,
            quota_bytes: u.quota_bytes,
            expire_after: (u.expire_after_secs > 0).then(|| Duration::from_secs(u.expire_after_secs)),
            slot_timeout: Duration::from_secs(u.slot_timeout_secs),
            allowed_origins: allowed_origins.to_vec(),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("[upload] domain: {0}")]
    Publish(#[from] PublishError),
    #[error("[upload] dir {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
}

/// Starts the upload service when `[upload] enabled`: loads what is
/// stored, publishes the domain and sweeps expired slots and files. Serve
/// [`http::routes`] with the returned handle as `web::Data<Arc<Upload>>`.
/// `http_base_url` and `allowed_origins` are as in [`Settings::from_config`].
/// Must run inside an actix System.
pub fn start(
    config: &Config,
    router: &Router,
    http_base_url: &str,
    allowed_origins: &[String],
) -> Result<Option<Arc<Upload>>, UploadError> {
    if !config.upload.enabled {
        return Ok(None);
    }
    start_with(Settings::from_config(config, http_base_url, allowed_origins), router).map(Some)
}

/// [`start`] with settings of the embedder's own.
pub fn start_with(settings: Settings, router: &Router) -> Result<Arc<Upload>, UploadError> {
    if ["://0.0.0.0", "://[::]"].iter().any(|any| settings.url.contains(*any)) {
        log::warn!(
            "upload URLs are {}/...: no client can reach that; set [upload] url",
            settings.url
        );
    }
    let upload = Arc::new(Upload::open(settings)?);
    service::publish(upload.clone(), router)?;
    log::info!(
        "HTTP upload at {} ({}), files in {}",
        upload.settings.domain,
        upload.settings.url,
        upload.settings.dir.display()
    );
    Ok(upload)
}

/// A slot's id: 128 random bits, written as 32 lower-case hex digits, the
/// part of its URL nobody can guess.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotId([u8; 16]);

impl SlotId {
    fn random() -> SlotId {
        let secret = shoal_actors::sasl::random_secret();
        let mut id = [0u8; 16];
        id.copy_from_slice(&secret[..16]);
        SlotId(id)
    }

    /// Reads the written form (lower case only, so that each id has one).
    pub fn parse(s: &str) -> Option<SlotId> {
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        if s.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (byte, pair) in id.iter_mut().zip(s.as_bytes().chunks(2)) {
            *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
        }
        Some(SlotId(id))
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotId({self})")
    }
}

/// The last component of a client's file name, without control
/// characters; `None` when nothing usable is left (empty, `.`, `..`, or
/// longer than a file name may be).
pub fn sanitise_filename(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let clean: String = last.chars().filter(|c| !c.is_control()).collect();
    let clean = clean.trim();
    if clean.is_empty() || clean == "." || clean == ".." || clean.len() > MAX_FILENAME_BYTES {
        return None;
    }
    Some(clean.to_owned())
}

/// A media type fit for a header: `type/subtype`, printable ASCII.
fn valid_content_type(t: &str) -> bool {
    t.len() <= 255 && t.contains('/') && t.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A slot request (`<request/>`), checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRequest {
    pub filename: String,
    pub size: u64,
    pub content_type: Option<String>,
}

impl SlotRequest {
    pub fn parse(request: &Element) -> Result<SlotRequest, Refusal> {
        let filename = request
            .attr("filename")
            .ok_or(Refusal::BadRequest("the request needs a filename"))?;
        let filename = sanitise_filename(filename).ok_or(Refusal::BadRequest("the filename is not usable"))?;
        let size = request
            .attr("size")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or(Refusal::BadRequest("the request needs a size in bytes"))?;
        let content_type = match request.attr("content-type").map(str::trim) {
            None | Some("") => None,
            Some(t) if valid_content_type(t) => Some(t.to_owned()),
            Some(_) => return Err(Refusal::BadRequest("the content-type is not a media type")),
        };
        Ok(SlotRequest {
            filename,
            size,
            content_type,
        })
    }
}

/// Why a slot is refused (XEP-0363 §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a user of this server.
    NotLocal,
    BadRequest(&'static str),
    TooLarge {
        max: u64,
    },
    /// Over the user's quota; `retry_ms`: when enough of what they have
    /// stored or reserved expires, if anything does.
    OverQuota {
        used: u64,
        quota: u64,
        retry_ms: Option<i64>,
    },
}

impl Refusal {
    /// The stanza error, with XEP-0363's own element (`<file-too-large/>`,
    /// `<retry/>`) as its application condition.
    pub fn error(&self) -> StanzaError {
        match self {
            Refusal::NotLocal => StanzaError::with_text(
                StanzaCondition::NotAllowed,
                "only users of this server may upload files",
            ),
            Refusal::BadRequest(text) => StanzaError::with_text(StanzaCondition::BadRequest, *text),
            Refusal::TooLarge { max } => StanzaError::with_text(
                StanzaCondition::NotAcceptable,
                format!("File too large: the maximum is {max} bytes"),
            )
            .with_app(
                Element::new("file-too-large", NS)
                    .with_child(Element::new("max-file-size", NS).with_text(max.to_string())),
            ),
            Refusal::OverQuota { used, quota, retry_ms } => {
                let error = StanzaError::with_text(
                    StanzaCondition::ResourceConstraint,
                    format!("Quota reached: {used} of {quota} bytes in use"),
                );
                match retry_ms {
                    Some(at) => error.with_app(Element::new("retry", NS).with_attr("stamp", format_stamp(*at))),
                    None => error,
                }
            }
        }
    }
}

/// Why a PUT is refused; [`http`] gives each its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutRefusal {
    /// No such slot: never given, timed out, or another file name.
    NotFound,
    /// Filled already, or being filled.
    Conflict,
    /// No Content-Length: the size must be known before the body.
    LengthRequired,
    /// More than the slot's size.
    TooLarge,
    BadRequest(&'static str),
    /// The disk failed (logged).
    Internal,
}

impl PutRefusal {
    fn io(e: std::io::Error) -> PutRefusal {
        log::error!("upload: {e}");
        PutRefusal::Internal
    }
}

/// A stored file, as its `.meta` records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub owner: BareJid,
    pub filename: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub created_ms: i64,
}

impl Stored {
    /// `key=value` lines: no value holds a line break (file names and types
    /// are checked for control characters).
    fn to_meta(&self) -> String {
        let mut meta = String::new();
        let _ = write!(
            meta,
            "owner={}\nname={}\nsize={}\ncreated={}\n",
            self.owner, self.filename, self.size, self.created_ms
        );
        if let Some(t) = &self.content_type {
            let _ = writeln!(meta, "type={t}");
        }
        meta
    }

    fn from_meta(text: &str) -> Option<Stored> {
        let (mut owner, mut filename, mut size, mut created, mut content_type) = (None, None, None, None, None);
        for line in text.lines() {
            let (key, value) = line.split_once('=')?;
            match key {
                "owner" => owner = BareJid::parse(value).ok(),
                // Only a name this module would have written.
                "name" => filename = sanitise_filename(value).filter(|n| n == value),
                "size" => size = value.parse().ok(),
                "created" => created = value.parse().ok(),
                "type" => content_type = valid_content_type(value).then(|| value.to_owned()),
                _ => {}
            }
        }
        Some(Stored {
            owner: owner?,
            filename: filename?,
            size: size?,
            content_type,
            created_ms: created?,
        })
    }
}

/// A slot given and not filled yet.
struct Slot {
    owner: BareJid,
    filename: String,
    size: u64,
    content_type: Option<String>,
    expires_ms: i64,
    /// A PUT is under way: another is refused, and the slot does not time
    /// out under it.
    uploading: bool,
}

#[derive(Default)]
struct State {
    slots: HashMap<SlotId, Slot>,
    files: HashMap<SlotId, Stored>,
    /// Bytes each user has stored or reserved by a slot.
    usage: HashMap<BareJid, u64>,
}

impl State {
    fn release(&mut self, owner: &BareJid, size: u64) {
        if let Some(used) = self.usage.get_mut(owner) {
            *used = used.saturating_sub(size);
            if *used == 0 {
                self.usage.remove(owner);
            }
        }
    }
}

/// Nothing that holds the state's lock can panic, so a poisoned one is
/// still sound.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The upload service's state, shared by its XMPP side and its HTTP side.
pub struct Upload {
    settings: Settings,
    state: Mutex<State>,
    /// Tells one PUT's partial file from another's.
    next_part: AtomicU64,
}

impl Upload {
    /// Creates the directory if needed and loads what it holds; what an
    /// interrupted upload left is removed (only names of this module's
    /// making: anything else there is left alone).
    pub fn open(settings: Settings) -> Result<Upload, UploadError> {
        let dir = settings.dir.clone();
        let failed = |source| UploadError::Dir {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(failed)?;
        let (files, stale) = load(&dir).map_err(failed)?;
        for path in &stale {
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            if let Err(e) = removed {
                log::warn!("cannot remove {}: {e}", path.display());
            }
        }
        if !stale.is_empty() {
            log::info!("removed {} leftovers of unfinished uploads", stale.len());
        }
        let mut state = State::default();
        for file in files.values() {
            *state.usage.entry(file.owner.clone()).or_default() += file.size;
        }
        state.files = files;
        Ok(Upload {
            settings,
            state: Mutex::new(state),
            next_part: AtomicU64::new(0),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The URL (for PUT and GET alike) of `filename` in slot `id`.
    pub fn url_of(&self, id: SlotId, filename: &str) -> String {
        format!("{}/{id}/{}", self.settings.url, utf8_percent_encode(filename, SEGMENT))
    }

    /// Bytes `owner` has stored or reserved.
    pub fn usage(&self, owner: &BareJid) -> u64 {
        lock(&self.state).usage.get(owner).copied().unwrap_or(0)
    }

    /// Gives `owner` a slot for the file `request` describes, reserving its
    /// size against their quota until it is filled or times out; returns
    /// its URL.
    pub fn request_slot(&self, owner: &BareJid, request: SlotRequest) -> Result<String, Refusal> {
        let max = self.settings.max_file_bytes;
        if request.size > max {
            return Err(Refusal::TooLarge { max });
        }
        let now = now_ms();
        let quota = self.settings.quota_bytes;
        let mut state = lock(&self.state);
        let used = state.usage.get(owner).copied().unwrap_or(0);
        let wanted = used.saturating_add(request.size);
        if quota > 0 && wanted > quota {
            let retry_ms = self.retry_at(&state, owner, wanted - quota);
            return Err(Refusal::OverQuota { used, quota, retry_ms });
        }
        let id = SlotId::random();
        let url = self.url_of(id, &request.filename);
        *state.usage.entry(owner.clone()).or_default() = wanted;
        state.slots.insert(
            id,
            Slot {
                owner: owner.clone(),
                filename: request.filename,
                size: request.size,
                content_type: request.content_type,
                expires_ms: now.saturating_add(millis(self.settings.slot_timeout)),
                uploading: false,
            },
        );
        Ok(url)
    }

    /// When `excess` bytes of what `owner` has will have gone: slots time
    /// out, files expire (if they do).
    fn retry_at(&self, state: &State, owner: &BareJid, excess: u64) -> Option<i64> {
        let slots = state.slots.values().filter(|s| &s.owner == owner && !s.uploading);
        let mut going: Vec<(i64, u64)> = slots.map(|s| (s.expires_ms, s.size)).collect();
        if let Some(after) = self.settings.expire_after {
            let files = state.files.values().filter(|f| &f.owner == owner);
            going.extend(files.map(|f| (f.created_ms.saturating_add(millis(after)), f.size)));
        }
        going.sort_unstable();
        let mut freed = 0u64;
        going.into_iter().find_map(|(at, size)| {
            freed += size;
            (freed >= excess).then_some(at)
        })
    }

    fn expired(&self, file: &Stored, now: i64) -> bool {
        self.settings
            .expire_after
            .is_some_and(|after| file.created_ms.saturating_add(millis(after)) <= now)
    }

    /// Takes slot `id` for a PUT of `length` bytes (its Content-Length) of
    /// type `content_type`, to the URL naming `filename`: they must be the
    /// slot's (XEP-0363 §6). The slot is the PUT's until [`Upload::commit`],
    /// or given back if the [`Claim`] is dropped first.
    pub fn claim(
        self: &Arc<Self>,
        id: SlotId,
        filename: &str,
        length: Option<u64>,
        content_type: Option<&str>,
    ) -> Result<Claim, PutRefusal> {
        let now = now_ms();
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if state.files.contains_key(&id) {
            return Err(PutRefusal::Conflict);
        }
        let slot = match state.slots.get_mut(&id) {
            Some(slot) if slot.expires_ms > now && slot.filename == filename => slot,
            _ => return Err(PutRefusal::NotFound),
        };
        if slot.uploading {
            return Err(PutRefusal::Conflict);
        }
        match length {
            None => return Err(PutRefusal::LengthRequired),
            Some(n) if n > slot.size => return Err(PutRefusal::TooLarge),
            Some(n) if n < slot.size => {
                return Err(PutRefusal::BadRequest(
                    "Content-Length is not the size the slot was given for",
                ))
            }
            Some(_) => {}
        }
        let given = content_type.map(str::trim).filter(|t| !t.is_empty());
        let content_type = match (&slot.content_type, given) {
            (Some(declared), Some(given)) if declared.eq_ignore_ascii_case(given) => Some(declared.clone()),
            (Some(_), _) => {
                return Err(PutRefusal::BadRequest(
                    "Content-Type is not the one the slot was given for",
                ))
            }
            (None, Some(given)) if valid_content_type(given) => Some(given.to_owned()),
            (None, Some(_)) => return Err(PutRefusal::BadRequest("Content-Type is not a media type")),
            (None, None) => None,
        };
        slot.uploading = true;
        let part = self
            .settings
            .dir
            .join(format!("{id}.{}.part", self.next_part.fetch_add(1, Ordering::Relaxed)));
        Ok(Claim {
            upload: self.clone(),
            id,
            size: slot.size,
            content_type,
            part,
            committed: false,
        })
    }

    /// Makes a claimed upload, its bytes written and synced to
    /// [`Claim::part`], a stored file: moved into place, then its `.meta`
    /// written, then served.
    pub async fn commit(&self, mut claim: Claim) -> Result<(), PutRefusal> {
        let (owner, filename) = {
            let state = lock(&self.state);
            let slot = state.slots.get(&claim.id).ok_or(PutRefusal::Internal)?;
            (slot.owner.clone(), slot.filename.clone())
        };
        let stored = Stored {
            owner,
            filename,
            size: claim.size,
            content_type: claim.content_type.clone(),
            created_ms: now_ms(),
        };
        let dir = self.settings.dir.join(claim.id.to_string());
        tokio::fs::create_dir_all(&dir).await.map_err(PutRefusal::io)?;
        tokio::fs::rename(&claim.part, dir.join(&stored.filename))
            .await
            .map_err(PutRefusal::io)?;
        let meta = self.meta_path(claim.id);
        let tmp = meta.with_extension("meta.tmp");
        write_synced(&tmp, stored.to_meta().as_bytes())
            .await
            .map_err(PutRefusal::io)?;
        tokio::fs::rename(&tmp, &meta).await.map_err(PutRefusal::io)?;
        log::info!("{}: uploaded a file of {} bytes", stored.owner, stored.size);
        let mut state = lock(&self.state);
        // The slot's reservation becomes the file's: usage is unchanged.
        state.slots.remove(&claim.id);
        state.files.insert(claim.id, stored);
        claim.committed = true;
        Ok(())
    }

    /// The file stored in slot `id` under `filename`, unless it expired.
    pub fn stored(&self, id: SlotId, filename: &str) -> Option<Stored> {
        let state = lock(&self.state);
        let file = state.files.get(&id)?;
        (file.filename == filename && !self.expired(file, now_ms())).then(|| file.clone())
    }

    /// Where the bytes of a stored file are.
    pub fn file_path(&self, id: SlotId, filename: &str) -> PathBuf {
        self.settings.dir.join(id.to_string()).join(filename)
    }

    fn meta_path(&self, id: SlotId) -> PathBuf {
        self.settings.dir.join(format!("{id}.meta"))
    }

    /// How often [`Upload::sweep`] runs: often enough that a slot's
    /// reservation and an expired file outlive their time by little.
    pub fn sweep_every(&self) -> Duration {
        let mut every = Duration::from_secs(60).min(self.settings.slot_timeout);
        if let Some(after) = self.settings.expire_after {
            every = every.min(after);
        }
        every.max(Duration::from_secs(1))
    }

    /// Forgets timed-out slots (their reservations with them) and deletes
    /// expired files: out of the index first, so that they are no longer
    /// served, then the `.meta`, then the bytes.
    pub async fn sweep(&self) {
        let now = now_ms();
        let expired: Vec<SlotId> = {
            let mut guard = lock(&self.state);
            let state = &mut *guard;
            let mut freed = Vec::new();
            state.slots.retain(|_, s| {
                let keep = s.uploading || s.expires_ms > now;
                if !keep {
                    freed.push((s.owner.clone(), s.size));
                }
                keep
            });
            let expired: Vec<SlotId> = state
                .files
                .iter()
                .filter(|(_, f)| self.expired(f, now))
                .map(|(id, _)| *id)
                .collect();
            for id in &expired {
                if let Some(f) = state.files.remove(id) {
                    freed.push((f.owner, f.size));
                }
            }
            for (owner, size) in freed {
                state.release(&owner, size);
            }
            expired
        };
        for id in expired {
            let meta = tokio::fs::remove_file(self.meta_path(id)).await;
            let bytes = tokio::fs::remove_dir_all(self.settings.dir.join(id.to_string())).await;
            if let Err(e) = meta.and(bytes) {
                log::warn!("upload {id}: cannot delete the expired file: {e}");
            } else {
                log::debug!("upload {id}: expired and deleted");
            }
        }
    }
}

/// A slot whose PUT is under way. Dropped before [`Upload::commit`] (the
/// upload failed, or the client went away) it gives the slot back, for
/// another try while it is valid, and removes the partial file.
pub struct Claim {
    upload: Arc<Upload>,
    id: SlotId,
    /// The slot's size: exactly this many bytes are expected.
    pub size: u64,
    content_type: Option<String>,
    /// Where the body is written, before it is moved into place.
    pub part: PathBuf,
    committed: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Some(slot) = lock(&self.upload.state).slots.get_mut(&self.id) {
            slot.uploading = false;
        }
        let part = std::mem::take(&mut self.part);
        let remove = move || {
            if let Err(e) = std::fs::remove_file(&part) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!("cannot remove {}: {e}", part.display());
                }
            }
        };
        // Off the event loop when there is one (never inside an actor's).
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Writes a file and syncs it to disk.
async fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::create(path).await?;
    file.write_all(bytes).await?;
    file.sync_all().await
}

/// `.<n>.part`: what follows a slot id in the name of a partial file.
fn is_part_suffix(rest: &str) -> bool {
    let n = rest.strip_prefix('.').and_then(|r| r.strip_suffix(".part"));
    n.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The stored files in `dir`, and what of ours is stale there: partial
/// files, `.meta` files without their file (or unreadable), and file
/// directories without their `.meta`.
fn load(dir: &Path) -> std::io::Result<(HashMap<SlotId, Stored>, Vec<PathBuf>)> {
    let mut metas = Vec::new();
    let mut dirs = Vec::new();
    let mut stale = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(id) = name.get(..32).and_then(SlotId::parse) else {
            continue;
        };
        match &name[32..] {
            ".meta" => metas.push(id),
            "" => dirs.push(id),
            ".meta.tmp" => stale.push(entry.path()),
            rest if is_part_suffix(rest) => stale.push(entry.path()),
            _ => {}
        }
    }
    let mut files = HashMap::new();
    for id in metas {
        let meta = dir.join(format!("{id}.meta"));
        let stored = std::fs::read_to_string(&meta).ok().and_then(|t| Stored::from_meta(&t));
        let intact = stored.filter(|s| {
            let bytes = dir.join(id.to_string()).join(&s.filename);
            std::fs::metadata(bytes).is_ok_and(|m| m.is_file() && m.len() == s.size)
        });
        match intact {
            Some(stored) => {
                files.insert(id, stored);
            }
            None => {
                log::warn!("upload {id}: its file is missing or damaged; removing it");
                stale.push(meta);
            }
        }
    }
    stale.extend(
        dirs.into_iter()
            .filter(|id| !files.contains_key(id))
            .map(|id| dir.join(id.to_string())),
    );
    Ok((files, stale))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Settings {
        Settings {
            domain: "upload.localhost".into(),
            dir: dir.to_owned(),
            url: "https://files.test/upload".into(),
            max_file_bytes: 100,
            quota_bytes: 150,
            expire_after: Some(Duration::from_secs(3600)),
            slot_timeout: Duration::from_secs(300),
            allowed_origins: Vec::new(),
        }
    }

    fn jid(s: &str) -> BareJid {
        BareJid::parse(s).unwrap()
    }

    fn request(filename: &str, size: u64) -> SlotRequest {
        SlotRequest {
            filename: filename.into(),
            size,
            content_type: None,
        }
    }

    #[test]
    fn file_names_keep_their_last_component_without_control_characters() {
        assert_eq!(sanitise_filename("très cool.jpg").as_deref(), Some("très cool.jpg"));
        assert_eq!(sanitise_filename("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(sanitise_filename("C:\\Users\\a\\b.png").as_deref(), Some("b.png"));
        assert_eq!(sanitise_filename(" a\r\nb\u{0}.txt ").as_deref(), Some("ab.txt"));
        for bad in ["", "  ", ".", "..", "dir/", "a/..", "\u{7}"] {
            assert_eq!(sanitise_filename(bad), None, "{bad:?}");
        }
        assert!(sanitise_filename(&"x".repeat(255)).is_some());
        assert_eq!(sanitise_filename(&"x".repeat(256)), None);
    }

    #[test]
    fn slot_ids_are_128_bits_of_lower_case_hex() {
        let id = SlotId::random();
        let written = id.to_string();
        assert_eq!(written.len(), 32);
        assert_eq!(SlotId::parse(&written), Some(id));
        assert_ne!(SlotId::random(), id);
        assert_eq!(
            SlotId::parse("00ff10aa00ff10aa00ff10aa00ff10aa").map(|id| id.to_string()),
            Some("00ff10aa00ff10aa00ff10aa00ff10aa".to_owned())
        );
        let long = format!("{written}0");
        let wide = format!("{}é", &written[..30]);
        for bad in [
            "",
            "0123",
            "00FF10AA00FF10AA00FF10AA00FF10AA",
            &long,
            &"g".repeat(32),
            &wide,
        ] {
            assert_eq!(SlotId::parse(bad), None, "{bad:?}");
        }
        assert!(is_part_suffix(".12.part") && !is_part_suffix(".part") && !is_part_suffix("..part"));
    }

    #[test]
    fn requests_are_read_and_checked() {
        let el = |attrs: &str| {
            let xml = format!("<request xmlns='{NS}' {attrs}/>");
            shoal_actors::xml::parse_element(
                xml.as_bytes(),
                &shoal_actors::xml::NsBindings::client(),
                &Default::default(),
            )
            .unwrap()
        };
        assert_eq!(
            SlotRequest::parse(&el("filename='a/b.jpg' size='12' content-type=' image/jpeg '")),
            Ok(SlotRequest {
                filename: "b.jpg".into(),
                size: 12,
                content_type: Some("image/jpeg".into())
            })
        );
        for (attrs, problem) in [
            ("size='1'", "the request needs a filename"),
            ("filename='..' size='1'", "the filename is not usable"),
            ("filename='a' size='-1'", "the request needs a size in bytes"),
            ("filename='a'", "the request needs a size in bytes"),
            (
                "filename='a' size='1' content-type='jpeg'",
                "the content-type is not a media type",
            ),
        ] {
            assert_eq!(
                SlotRequest::parse(&el(attrs)),
                Err(Refusal::BadRequest(problem)),
                "{attrs}"
            );
        }
    }

    #[test]
    fn refusals_carry_the_xeps_elements() {
        let error = Refusal::TooLarge { max: 20000 }.error();
        assert_eq!(error.condition, StanzaCondition::NotAcceptable);
        assert_eq!(
            error.app.map(|e| e.to_xml_in("")),
            Some(format!(
                "<file-too-large xmlns='{NS}'><max-file-size>20000</max-file-size></file-too-large>"
            ))
        );
        let over = Refusal::OverQuota {
            used: 5,
            quota: 5,
            retry_ms: Some(1_512_344_525_000),
        };
        let error = over.error();
        assert_eq!(error.kind, shoal_actors::error::StanzaErrorType::Wait);
        assert_eq!(
            error.app.map(|e| e.to_xml_in("")),
            Some(format!("<retry xmlns='{NS}' stamp='2017-12-03T23:42:05.000Z'/>"))
        );
        let error = Refusal::NotLocal.error();
        assert_eq!(
            (error.condition, error.kind, error.app),
            (
                StanzaCondition::NotAllowed,
                shoal_actors::error::StanzaErrorType::Cancel,
                None
            )
        );
    }

    #[test]
    fn quotas_count_reservations_and_say_when_to_retry() {
        let dir = tempfile::tempdir().unwrap();
        let upload = Upload::open(settings(dir.path())).unwrap();
        let (alice, bob) = (jid("alice@localhost"), jid("bob@localhost"));
        assert_eq!(
            upload.request_slot(&alice, request("big", 101)),
            Err(Refusal::TooLarge { max: 100 })
        );
        let url = upload.request_slot(&alice, request("a b.txt", 100)).unwrap();
        let id = url
            .strip_prefix("https://files.test/upload/")
            .and_then(|rest| rest.strip_suffix("/a%20b.txt"))
            .and_then(SlotId::parse);
        assert!(id.is_some(), "{url}");
        assert_eq!(upload.usage(&alice), 100);
        let refused = upload.request_slot(&alice, request("more", 60));
        let expires = lock(&upload.state).slots.values().map(|s| s.expires_ms).next();
        assert_eq!(
            refused,
            Err(Refusal::OverQuota {
                used: 100,
                quota: 150,
                retry_ms: expires
            })
        );
        // Quotas are each user's own.
        upload.request_slot(&bob, request("more", 60)).unwrap();
        upload.request_slot(&alice, request("less", 50)).unwrap();
        assert_eq!((upload.usage(&alice), upload.usage(&bob)), (150, 60));
    }

    #[actix_rt::test]
    async fn a_put_is_claimed_once_with_the_declared_size_and_type() {
        let dir = tempfile::tempdir().unwrap();
        let upload = Arc::new(Upload::open(settings(dir.path())).unwrap());
        let alice = jid("alice@localhost");
        let typed = SlotRequest {
            content_type: Some("text/plain".into()),
            ..request("a.txt", 5)
        };
        let url = upload.request_slot(&alice, typed).unwrap();
        let id = SlotId::parse(url.rsplit('/').nth(1).unwrap()).unwrap();
        let claim = |name: &str, length: Option<u64>, t: Option<&str>| upload.claim(id, name, length, t).err();
        assert_eq!(claim("b.txt", Some(5), Some("text/plain")), Some(PutRefusal::NotFound));
        assert_eq!(
            claim("a.txt", None, Some("text/plain")),
            Some(PutRefusal::LengthRequired)
        );
        assert_eq!(claim("a.txt", Some(6), Some("text/plain")), Some(PutRefusal::TooLarge));
        assert!(matches!(
            claim("a.txt", Some(4), Some("text/plain")),
            Some(PutRefusal::BadRequest(_))
        ));
        assert!(matches!(
            claim("a.txt", Some(5), Some("text/html")),
            Some(PutRefusal::BadRequest(_))
        ));
        let first = upload.claim(id, "a.txt", Some(5), Some("Text/Plain")).unwrap();
        assert_eq!(claim("a.txt", Some(5), Some("text/plain")), Some(PutRefusal::Conflict));
        // Given back when the PUT fails, and claimed again.
        drop(first);
        let again = upload.claim(id, "a.txt", Some(5), Some("text/plain")).unwrap();
        tokio::fs::write(&again.part, b"hello").await.unwrap();
        upload.commit(again).await.unwrap();
        assert_eq!(claim("a.txt", Some(5), Some("text/plain")), Some(PutRefusal::Conflict));
        let stored = upload.stored(id, "a.txt").unwrap();
        assert_eq!(
            (stored.size, stored.content_type.as_deref(), stored.owner.clone()),
            (5, Some("text/plain"), alice.clone())
        );
        assert_eq!(std::fs::read(upload.file_path(id, "a.txt")).unwrap(), b"hello");
        assert_eq!(upload.usage(&alice), 5);

        // Reopened, the directory gives the same file back; leftovers of
        // unfinished uploads go, and what is not ours stays.
        let leftover_part = dir.path().join(format!("{}.7.part", SlotId::random()));
        let orphan = dir.path().join(SlotId::random().to_string());
        let foreign = dir.path().join("notes.txt");
        std::fs::write(&leftover_part, b"x").unwrap();
        std::fs::create_dir(&orphan).unwrap();
        std::fs::write(&foreign, b"mine").unwrap();
        drop(upload);
        let reopened = Upload::open(settings(dir.path())).unwrap();
        assert_eq!(reopened.stored(id, "a.txt"), Some(stored));
        assert_eq!(reopened.usage(&alice), 5);
        assert!(!leftover_part.exists() && !orphan.exists() && foreign.exists());
    }

    #[test]
    fn meta_files_round_trip() {
        let stored = Stored {
            owner: jid("alice@localhost"),
            filename: "a=b c.txt".into(),
            size: 7,
            content_type: Some("text/plain; charset=utf-8".into()),
            created_ms: 1_700_000_000_123,
        };
        assert_eq!(Stored::from_meta(&stored.to_meta()), Some(stored.clone()));
        let untyped = Stored {
            content_type: None,
            ..stored
        };
        assert_eq!(Stored::from_meta(&untyped.to_meta()), Some(untyped));
        assert_eq!(
            Stored::from_meta("owner=alice@localhost\nname=../x\nsize=1\ncreated=1\n"),
            None
        );
        assert_eq!(Stored::from_meta("garbage"), None);
    }
}
