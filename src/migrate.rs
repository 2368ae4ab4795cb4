//! `shoal import` and `shoal export`: accounts moved between servers in
//! the XEP-0227 format ([`crate::portable`]), written to and read from the
//! database directly, as `shoal user` does (SQLite in WAL mode: safe while
//! the server runs).
//!
//! An import reads its files twice: first to check them whole (well-formed,
//! every account of a hosted domain and not yet here, PEP nodes within
//! `[pep]`'s limits), then to write, one transaction per account. Nothing
//! is written unless the check passes.

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_actors::jid::BareJid;
use shoal_actors::ns;
use shoal_actors::sasl::Credentials;
use shoal_actors::storage::StoredItem;
use shoal_actors::xep::mam::now_ms;
use shoal_actors::xep::pep::PepSettings;
use shoal_actors::xep::private::key_of;
use shoal_actors::xep::pubsub::MaxItems;
use shoal_actors::xep::vcard::profile_of;
use shoal_actors::xml::{parse_element, NsBindings, ParseLimits};

use crate::config::Config;
use crate::portable::{Account, AccountReader, PepNode, PortableError, Secret, Writer};
use crate::store::{AccountData, SqliteStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    File(#[from] PortableError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The files are sound, but importing them is refused; nothing was written.
    #[error("{0}; nothing was imported")]
    Refused(String),
    #[error("{}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    /// A stored value that no longer parses.
    #[error("account {jid}: its stored {what} is not XML: {problem}")]
    Stored {
        jid: BareJid,
        what: &'static str,
        problem: String,
    },
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ImportOptions {
    /// Accounts that exist already are replaced (deleted first, with all
    /// they had), instead of refusing the import.
    pub replace: bool,
    /// Accounts of domains this server does not host are left out,
    /// instead of refusing the import.
    pub skip_unhosted: bool,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub imported: usize,
    /// Accounts that existed and were replaced (`--replace`): a running
    /// server should end their sessions.
    pub replaced: Vec<BareJid>,
    /// Accounts of domains not hosted, left out (`--skip-unhosted`).
    pub skipped: usize,
    /// Accounts whose keys were derived from a password in the clear.
    pub from_passwords: usize,
    /// Accounts with SCRAM-SHA-1 keys alone (or SHA-256 alone): they get
    /// the other hash's at their first PLAIN login or password change.
    pub one_hash: usize,
    /// Accounts made meanwhile (by a running server's in-band
    /// registration) between the check and the write: not imported.
    pub taken: Vec<BareJid>,
}

/// Imports every account of `files` (and of the files they include).
pub fn import(config: &Config, files: &[PathBuf], options: ImportOptions) -> Result<ImportReport, MigrateError> {
    let mut store = SqliteStore::open_for_domain(
        &config.storage.sqlite,
        config.storage.durability,
        config.default_domain(),
    )?;
    let hosted: HashSet<String> = config
        .domain_list()
        .iter()
        .filter_map(|d| BareJid::domain_jid(d).ok())
        .map(|d| d.as_str().to_owned())
        .collect();

    let pep = config.pep.settings(config.c2s.max_stanza_bytes);

    // The check: every file read whole before anything is written.
    let mut seen = HashSet::new();
    let mut unhosted: BTreeMap<String, Vec<BareJid>> = BTreeMap::new();
    let mut existing = Vec::new();
    let mut progress = Progress::new("checking");
    let mut reader = AccountReader::open(files);
    while let Some(account) = reader.next_account()? {
        let jid = &account.jid;
        if !hosted.contains(jid.domain()) {
            unhosted.entry(jid.domain().to_owned()).or_default().push(jid.clone());
        } else {
            check_pep(&account, &pep).map_err(|e| MigrateError::Refused(format!("account {jid}: {e}")))?;
            if store.credentials(jid)?.is_some() {
                existing.push(jid.clone());
            }
        }
        if !seen.insert(jid.clone()) {
            return Err(MigrateError::Refused(format!(
                "the account {jid} is in the files twice"
            )));
        }
        progress.tick(seen.len(), None);
    }
    progress.finish();
    if seen.is_empty() {
        return Err(MigrateError::Refused("there are no accounts in the files".into()));
    }
    if !unhosted.is_empty() && !options.skip_unhosted {
        let domains: Vec<String> = unhosted
            .iter()
            .map(|(domain, jids)| format!("{domain} ({})", listed(jids)))
            .collect();
        return Err(MigrateError::Refused(format!(
            "accounts of domains this server does not host: {}; add the domains to the configuration \
             (`domains`), or leave their accounts out with --skip-unhosted",
            domains.join(", ")
        )));
    }
    if !existing.is_empty() && !options.replace {
        return Err(MigrateError::Refused(format!(
            "{} account(s) exist already: {}; --replace replaces them, deleting all they had",
            existing.len(),
            listed(&existing)
        )));
    }

    let total = seen.len() - unhosted.values().map(Vec::len).sum::<usize>();
    let existing: HashSet<BareJid> = existing.into_iter().collect();
    let mut report = ImportReport {
        skipped: seen.len() - total,
        ..ImportReport::default()
    };
    let mut progress = Progress::new("importing");
    let mut reader = AccountReader::open(files);
    let mut done = 0;
    while let Some(account) = reader.next_account()? {
        if !hosted.contains(account.jid.domain()) {
            continue;
        }
        if matches!(account.secret, Secret::Password(_)) {
            report.from_passwords += 1;
        }
        let data = account_data(account, config.auth.scram_iterations, &pep);
        if !data.credentials.is_complete() {
            report.one_hash += 1;
        }
        let replace = options.replace && existing.contains(&data.jid);
        if store.import_account(&data, replace)? {
            report.imported += 1;
            if replace {
                report.replaced.push(data.jid);
            }
        } else {
            report.taken.push(data.jid);
        }
        done += 1;
        progress.tick(done, Some(total));
    }
    progress.finish();
    Ok(report)
}

/// The first few of `jids`, and how many more.
fn listed(jids: &[BareJid]) -> String {
    const SHOWN: usize = 5;
    let mut out: Vec<String> = jids.iter().take(SHOWN).map(ToString::to_string).collect();
    if jids.len() > SHOWN {
        out.push(format!("and {} more", jids.len() - SHOWN));
    }
    out.join(", ")
}

/// An account's PEP nodes against `[pep]`: as many as an account may
/// have, `max_items` within the cap, items no larger than a publish may
/// be. (More items than a node keeps is no error: the oldest go, as at a
/// publish.)
fn check_pep(account: &Account, pep: &PepSettings) -> Result<(), String> {
    if account.pep.len() > pep.max_nodes {
        return Err(format!(
            "{} PEP nodes, more than [pep] max_nodes ({})",
            account.pep.len(),
            pep.max_nodes
        ));
    }
    for PepNode { node, items } in &account.pep {
        if let MaxItems::Count(n) = node.config.max_items {
            if n > pep.max_items {
                return Err(format!(
                    "PEP node {}: pubsub#max_items {n}, more than [pep] max_items ({})",
                    node.node, pep.max_items
                ));
            }
        }
        for (id, payload) in items {
            let bytes = payload.to_string().len();
            if bytes > pep.max_item_bytes {
                return Err(format!(
                    "PEP node {}: item {id} of {bytes} bytes, more than [pep] max_item_bytes ({})",
                    node.node, pep.max_item_bytes
                ));
            }
        }
    }
    Ok(())
}

/// What the store keeps of an account read from a file: keys derived from
/// a password in the clear, XML serialised as stored. PEP items are
/// stamped now (the format has no times), published by the owner; a node
/// keeps its newest `max_items`, and none if it persists none.
fn account_data(account: Account, iterations: u32, pep: &PepSettings) -> AccountData {
    let credentials = match account.secret {
        Secret::Password(password) => Credentials::derive(&password, iterations),
        Secret::Keys(keys) => keys,
    };
    let now = now_ms();
    let owner = account.jid.clone();
    let nodes = account
        .pep
        .into_iter()
        .map(|PepNode { node, items }| {
            let keep = node.config.kept(pep.max_items).unwrap_or(0) as usize;
            let skip = items.len().saturating_sub(keep);
            let items = items
                .into_iter()
                .skip(skip)
                .map(|(id, payload)| StoredItem {
                    id,
                    xml: payload.to_string(),
                    publisher: Some(owner.clone()),
                    published_ms: now,
                })
                .collect();
            (node, items)
        })
        .collect();
    AccountData {
        jid: account.jid,
        credentials,
        roster: account.roster,
        vcard: account.vcard.map(|v| (v.to_string(), profile_of(&v))),
        offline: account.offline.iter().map(|m| m.to_xml_in(ns::CLIENT)).collect(),
        private: account.private.iter().map(|el| (key_of(el), el.to_string())).collect(),
        pep: nodes,
    }
}

/// Exports every account, of every domain, to `path` (`-`: standard
/// output); how many. A file is created readable by its owner only (it
/// holds the keys to every account), and never over an existing one.
pub fn export(config: &Config, path: &Path) -> Result<usize, MigrateError> {
    let store = SqliteStore::open_for_domain(
        &config.storage.sqlite,
        config.storage.durability,
        config.default_domain(),
    )?;
    let write_err = |source| MigrateError::Write {
        path: path.to_owned(),
        source,
    };
    let out: Box<dyn Write> = if path == Path::new("-") {
        Box::new(std::io::stdout().lock())
    } else {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(write_err)?;
        Box::new(std::io::BufWriter::new(file))
    };
    let mut writer = Writer::new(out).map_err(write_err)?;
    // One snapshot: every roster as of one moment, whatever a running
    // server writes meanwhile.
    let _snapshot = store.snapshot()?;
    let mut users = store.list_users()?;
    // Grouped by domain: one <host/> each.
    users.sort_by(|a, b| (a.domain(), a.node()).cmp(&(b.domain(), b.node())));
    let mut progress = Progress::new("exporting");
    let mut exported = 0;
    for user in &users {
        let Some(data) = store.account_data(user)? else {
            continue;
        };
        writer.account(&portable_account(data)?).map_err(write_err)?;
        exported += 1;
        progress.tick(exported, Some(users.len()));
    }
    progress.finish();
    writer.finish().map_err(write_err)?;
    Ok(exported)
}

/// An account as stored, for the file.
fn portable_account(data: AccountData) -> Result<Account, MigrateError> {
    let jid = data.jid;
    let parse = |what: &'static str, xml: &str, bindings: &NsBindings, limits: &ParseLimits| {
        parse_element(xml.as_bytes(), bindings, limits).map_err(|e| MigrateError::Stored {
            jid: jid.clone(),
            what,
            problem: e.to_string(),
        })
    };
    let vcard = match &data.vcard {
        Some((xml, _)) => Some(parse("vCard", xml, &NsBindings::empty(), &ParseLimits::default())?),
        None => None,
    };
    let offline = data
        .offline
        .iter()
        .map(|xml| parse("offline message", xml, &NsBindings::client(), &ParseLimits::default()))
        .collect::<Result<_, _>>()?;
    let private = data
        .private
        .iter()
        .map(|(_, xml)| parse("private XML", xml, &NsBindings::empty(), &ParseLimits::default()))
        .collect::<Result<_, _>>()?;
    // Payloads were written by this server (a publish, or an import from a
    // file, deeper than a stanza allows), under its limits at the time.
    let mut pep = Vec::new();
    for (node, stored) in data.pep {
        let items = stored
            .into_iter()
            .map(|item| {
                let payload = parse("PEP item", &item.xml, &NsBindings::empty(), &ParseLimits::UNBOUNDED)?;
                Ok((item.id, payload))
            })
            .collect::<Result<_, MigrateError>>()?;
        pep.push(PepNode { node, items });
    }
    Ok(Account {
        jid: jid.clone(),
        secret: Secret::Keys(data.credentials),
        roster: data.roster,
        vcard,
        offline,
        private,
        pep,
    })
}

/// A count on one line of standard error, redrawn at most ten times a
/// second, when standard error is a terminal (not in logs or pipes).
struct Progress {
    label: &'static str,
    enabled: bool,
    drawn: Option<Instant>,
}

impl Progress {
    fn new(label: &'static str) -> Progress {
        Progress {
            label,
            enabled: std::io::stderr().is_terminal(),
            drawn: None,
        }
    }

    fn tick(&mut self, done: usize, total: Option<usize>) {
        if !self.enabled || self.drawn.is_some_and(|at| at.elapsed() < Duration::from_millis(100)) {
            return;
        }
        self.drawn = Some(Instant::now());
        match total {
            Some(total) => {
                let percent = (done * 100).checked_div(total).unwrap_or(100);
                eprint!("\r{}: {done}/{total} accounts ({percent}%)", self.label);
            }
            None => eprint!("\r{}: {done} accounts", self.label),
        }
    }

    /// Ends the line, if one was drawn.
    fn finish(&mut self) {
        if self.drawn.take().is_some() {
            eprintln!("\r{}: done{}", self.label, " ".repeat(24));
        }
    }
}
