//! The `shoal` command: serve, or manage accounts and the running server.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal::control::{self, ControlCommand, KickReason};
use shoal::migrate::{self, ImportOptions};
use shoal::store::SqliteStore;
use shoal::{Config, ServerBuilder, ServerHandle};
use shoal_actors::jid::{BareJid, Jid};
use shoal_actors::ns;
use shoal_actors::sasl::Credentials;
use shoal_actors::storage::{StoredItem, StoredNode};
use shoal_actors::xep::mam::now_ms;
use shoal_actors::xep::pep;
use shoal_actors::xep::pubsub::NodeConfig;

#[derive(Parser)]
#[command(name = "shoal", version, about = "An actor-based XMPP server")]
struct Cli {
    /// TOML configuration file (without one: localhost on 127.0.0.1:5222, ./shoal.db)
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Manage accounts (works while the server runs)
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Print the TLS certificate of each hosted domain (generating the
    /// self-signed one if there is none yet), its expiry and fingerprint,
    /// then its PEM
    Cert,
    /// Published services of the running server
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Federation: the running server's streams with other servers
    S2s {
        #[command(subcommand)]
        command: S2sCommand,
    },
    /// Import accounts from XEP-0227 files (ejabberd's export_piefxis,
    /// Prosody's xep0227 store, shoal export): their passwords or SCRAM
    /// keys, rosters, vCards, offline messages, private XML and PEP nodes.
    /// The files are checked whole first: nothing is imported if one is
    /// malformed, or an account exists already or is of a domain this
    /// server does not host
    Import {
        /// The files: for ejabberd the one that includes the others, for
        /// Prosody every account's (a file given twice, or given and
        /// included too, is read once)
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Replace accounts that exist already, deleting all they had
        #[arg(long)]
        replace: bool,
        /// Leave out accounts of domains this server does not host
        #[arg(long)]
        skip_unhosted: bool,
    },
    /// Export every account to a XEP-0227 file (`-`: standard output):
    /// SCRAM keys, roster, vCard and offline messages. The file is made
    /// readable by its owner only, and never over an existing one
    Export { file: PathBuf },
    /// The running server's client sessions
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// The running server's counts: sessions, accounts online, services,
    /// links with other servers, uptime, memory
    Stats,
    /// Have the running server read its configuration file again (as
    /// SIGHUP does): certificates, limits, registration and components
    /// change without dropping a session
    Reload,
}

#[derive(Subcommand)]
enum SessionCommand {
    /// Each live session: JID, transport, address, since when, priority,
    /// presence, stream management
    List {
        /// Only this account's sessions (user@domain), or this one
        /// (user@domain/resource)
        #[arg(long)]
        user: Option<String>,
    },
    /// End a session (user@domain/resource), or all of an account's
    /// (user@domain), with a <policy-violation/> stream error
    Kick { jid: String },
}

#[derive(Subcommand)]
enum S2sCommand {
    /// Each stream: who opened it, the domains, how the remote domain
    /// authenticated, TLS, since when, what is queued, and its state (a
    /// failed link says why)
    List,
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// What is published (components, in-process services), since when,
    /// and how many requests each has in flight
    List,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account, user@domain (a bare user when one domain is
    /// hosted); the password is read from stdin when omitted
    Add { jid: String, password: Option<String> },
    /// Delete an account and everything stored for it
    Del { jid: String },
    /// Set an account's password (read from stdin when omitted)
    Passwd { jid: String, password: Option<String> },
    /// List accounts
    List,
    /// Set the nickname and photo URL returned by the bind extension; the
    /// nickname is published with PEP too (XEP-0172), which notifies the
    /// account's contacts when the server runs
    Set {
        jid: String,
        /// Nickname (empty to clear)
        #[arg(long)]
        nick: Option<String>,
        /// Photo URL (empty to clear)
        #[arg(long)]
        photo_url: Option<String>,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = load_config(cli.config.as_deref()).and_then(|config| match cli.command {
        None => serve(config, cli.config),
        Some(Command::User { command }) => user(&config, command),
        Some(Command::Cert) => cert(&config),
        Some(Command::Service { command }) => service(&config, command),
        Some(Command::S2s {
            command: S2sCommand::List,
        }) => s2s_list(&config),
        Some(Command::Import {
            files,
            replace,
            skip_unhosted,
        }) => import(&config, &files, ImportOptions { replace, skip_unhosted }),
        Some(Command::Export { file }) => export(&config, &file),
        Some(Command::Session { command }) => session(&config, command),
        Some(Command::Stats) => stats(&config),
        Some(Command::Reload) => reload(&config),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shoal: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    }
}

/// Serves `config`, read from `path` (which SIGHUP reads again).
fn serve(config: Config, path: Option<PathBuf>) -> Result<(), String> {
    log::info!("open files limit: {}", shoal::rlimit::raise_open_files());
    actix_rt::System::new().block_on(async move {
        let mut builder = ServerBuilder::new(config);
        if let Some(path) = path {
            builder = builder.config_file(path);
        }
        let server = builder.start().await.map_err(|e| e.to_string())?;
        run_until_stopped(&server).await;
        server.shutdown().await;
        Ok(())
    })
}

/// Until Ctrl-C or SIGTERM; each SIGHUP reloads the configuration, as
/// `shoal reload` does (its answer goes to the log).
async fn run_until_stopped(server: &ServerHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
            (Ok(mut term), Ok(mut hup)) => loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = term.recv() => return,
                    _ = hup.recv() => {
                        log::info!("SIGHUP: reloading the configuration");
                        // The reload logs what changed.
                        if let Err(e) = server.reload() {
                            log::error!("reload refused: {e}; the configuration in force is unchanged");
                        }
                    }
                }
            },
            (term, hup) => {
                if let Err(e) = term.and(hup) {
                    log::warn!("cannot handle SIGTERM and SIGHUP: {e}");
                }
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = server;
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn cert(config: &Config) -> Result<(), String> {
    let certs = shoal::tls::load_all(config).map_err(|e| e.to_string())?;
    for (i, cert) in certs.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{}", shoal::tls::describe(cert));
        let pem = std::fs::read_to_string(&cert.cert_path).map_err(|e| format!("{}: {e}", cert.cert_path.display()))?;
        print!("{pem}");
    }
    Ok(())
}

/// The account `user@domain` names, at a hosted domain; a bare `user` is
/// one only when a single domain is hosted.
fn account(config: &Config, jid: &str) -> Result<BareJid, String> {
    let domains = config.domain_list();
    if !jid.contains('@') {
        let [domain] = domains.as_slice() else {
            return Err(format!(
                "{jid:?} names no domain, and this server hosts several ({}): give user@domain",
                domains.join(", ")
            ));
        };
        return BareJid::new(jid, domain).map_err(|e| format!("invalid username {jid:?}: {e}"));
    }
    let parsed = Jid::parse(jid).map_err(|e| format!("invalid JID {jid:?}: {e}"))?;
    if parsed.resource().is_some() {
        return Err(format!(
            "{jid:?} has a resource; give a bare JID like alice@{}",
            domains[0]
        ));
    }
    if !domains.contains(&parsed.domain()) {
        let plural = if domains.len() > 1 { "s" } else { "" };
        return Err(format!(
            "{jid:?} is not on this server's domain{plural} ({})",
            domains.join(", ")
        ));
    }
    Ok(parsed.to_bare())
}

fn password(given: Option<String>) -> Result<String, String> {
    let password = match given {
        Some(p) => p,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("reading the password: {e}"))?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    Ok(password)
}

fn user(config: &Config, command: UserCommand) -> Result<(), String> {
    // Accounts of a database from before several domains were hosted
    // become the first domain's.
    let mut store = SqliteStore::open_for_domain(
        &config.storage.sqlite,
        config.storage.durability,
        config.default_domain(),
    )
    .map_err(|e| e.to_string())?;
    let iterations = config.auth.scram_iterations;
    match command {
        UserCommand::Add { jid, password: pw } => {
            let user = account(config, &jid)?;
            let creds = Credentials::derive(&password(pw)?, iterations);
            if !store.create_user(&user, &creds).map_err(|e| e.to_string())? {
                return Err(format!("{user} exists already"));
            }
            println!("created {user}");
        }
        UserCommand::Del { jid } => {
            let user = account(config, &jid)?;
            let command = ControlCommand::DeleteUser { user: user.clone() };
            let (removed, answer) = match control::request(&config.control_socket(), &command.to_string()) {
                // A running server tells the contacts and ends the sessions.
                Ok(Some(lines)) => (lines.iter().any(|l| l == "removed true"), lines),
                Ok(None) => (store.delete_account(&user).map_err(|e| e.to_string())?, Vec::new()),
                Err(e) => return Err(format!("the running server could not delete {user}: {e}")),
            };
            if !removed {
                return Err(format!("no such user: {user}"));
            }
            println!("deleted {user}");
            report_ended(&answer);
        }
        UserCommand::Passwd { jid, password: pw } => {
            let user = account(config, &jid)?;
            let creds = Credentials::derive(&password(pw)?, iterations);
            if !store.set_credentials(&user, &creds).map_err(|e| e.to_string())? {
                return Err(format!("no such user: {user}"));
            }
            println!("password of {user} changed");
            end_sessions(config, &user, KickReason::PasswordChanged);
        }
        UserCommand::Set { jid, nick, photo_url } => {
            let user = account(config, &jid)?;
            if nick.is_none() && photo_url.is_none() {
                return Err("nothing to set: give --nick and/or --photo-url".into());
            }
            let nick = nick.map(|n| n.trim().to_owned());
            // It goes to a running server on one control line.
            if nick.as_deref().is_some_and(|n| n.chars().any(char::is_control)) {
                return Err("the nickname holds a line break or another control character".into());
            }
            let given = nick.clone();
            let current = store.profile(&user).map_err(|e| e.to_string())?;
            // An option left out keeps its value; an empty one clears it.
            let pick = |given: Option<String>, old: Option<String>| match given {
                Some(v) if v.is_empty() => None,
                Some(v) => Some(v),
                None => old,
            };
            let nick = pick(nick, current.nick);
            let photo_url = pick(photo_url, current.photo_url);
            if !store
                .set_profile(&user, nick.as_deref(), photo_url.as_deref())
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no such user: {user}"));
            }
            println!("profile of {user} set");
            if let Some(nick) = given {
                publish_nick(config, &mut store, &user, &nick)?;
            }
        }
        UserCommand::List => {
            for user in store.list_users().map_err(|e| e.to_string())? {
                println!("{user}");
            }
        }
    }
    Ok(())
}

/// XEP-0172: the nickname `user set` stored is published with PEP too
/// (item `current`, empty for none): by the running server, which notifies
/// the followers, or straight into the store when none runs, as the server
/// would have stored it (nobody is online to be told). Not with `[pep]`
/// off.
fn publish_nick(config: &Config, store: &mut SqliteStore, user: &BareJid, nick: &str) -> Result<(), String> {
    if !config.pep.enabled {
        return Ok(());
    }
    let command = ControlCommand::PublishNick {
        user: user.clone(),
        nick: nick.to_owned(),
    };
    match control::request(&config.control_socket(), &command.to_string()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => store_nick(config, store, user, nick),
        Err(e) => Err(format!(
            "the profile of {user} is stored, but the running server answered: {e}"
        )),
    }
}

/// The nickname's PEP item written as a publish by the server writes it:
/// the node created with the defaults if missing (within `[pep]
/// max_nodes`), the item within `[pep] max_item_bytes`, older items past
/// the node's `max_items` gone, in one transaction.
fn store_nick(config: &Config, store: &mut SqliteStore, user: &BareJid, nick: &str) -> Result<(), String> {
    let settings = config.pep.settings(config.c2s.max_stanza_bytes);
    let xml = pep::nick_payload(nick).to_string();
    if xml.len() > settings.max_item_bytes {
        return Err(format!(
            "the nickname is larger than [pep] max_item_bytes ({}) allows",
            settings.max_item_bytes
        ));
    }
    let nodes = store.pep_nodes(user).map_err(|e| e.to_string())?;
    let count = nodes.len();
    let (create, config) = match nodes.into_iter().find(|n| n.node == ns::NICK) {
        Some(node) => (None, node.config),
        None if count >= settings.max_nodes => {
            return Err(format!(
                "{user} has [pep] max_nodes ({}) nodes already: the nickname is not published",
                settings.max_nodes
            ));
        }
        None => {
            let created = StoredNode {
                node: ns::NICK.to_owned(),
                config: NodeConfig::default(),
                whitelist: Vec::new(),
            };
            (Some(created), NodeConfig::default())
        }
    };
    // A node that keeps no items only notifies, and nobody is online.
    let Some(keep) = config.kept(settings.max_items) else {
        return Ok(());
    };
    let item = StoredItem {
        id: pep::NICK_ITEM.to_owned(),
        xml,
        publisher: Some(user.clone()),
        published_ms: now_ms(),
    };
    store
        .pep_publish(user, ns::NICK, create.as_ref(), &item, keep)
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn import(config: &Config, files: &[PathBuf], options: ImportOptions) -> Result<(), String> {
    let report = migrate::import(config, files, options).map_err(|e| e.to_string())?;
    println!("imported {} account(s)", report.imported);
    if report.from_passwords > 0 {
        println!(
            "{} from passwords in the clear (Shoal keeps SCRAM keys derived from them)",
            report.from_passwords
        );
    }
    if report.one_hash > 0 {
        println!(
            "{} with keys for one SCRAM hash only (SCRAM-SHA-1 from ejabberd and Prosody): they log in with that \
             mechanism or PLAIN until their first PLAIN login or password change adds the other",
            report.one_hash
        );
    }
    if report.skipped > 0 {
        println!("{} of domains not hosted here left out", report.skipped);
    }
    for user in &report.replaced {
        // The sessions of what was there before must not outlive it.
        end_sessions(config, user, KickReason::Admin);
    }
    if !report.taken.is_empty() {
        let taken: Vec<String> = report.taken.iter().map(ToString::to_string).collect();
        return Err(format!(
            "{} account(s) were made on the running server while importing, and were not imported: {}",
            taken.len(),
            taken.join(", ")
        ));
    }
    Ok(())
}

fn export(config: &Config, file: &std::path::Path) -> Result<(), String> {
    let count = migrate::export(config, file).map_err(|e| e.to_string())?;
    let message = format!("exported {count} account(s)");
    // Standard output may be the export itself.
    if file == std::path::Path::new("-") {
        eprintln!("{message}");
    } else {
        println!("{message} to {}", file.display());
    }
    Ok(())
}

/// Has a running server end the account's sessions: a session opened with
/// the old password, or of a deleted account, must not outlive the change.
/// The store has changed already, so a failure here is only a warning.
fn end_sessions(config: &Config, user: &BareJid, reason: KickReason) {
    let path = config.control_socket();
    let command = ControlCommand::KickUser {
        user: user.clone(),
        reason,
    };
    match control::request(&path, &command.to_string()) {
        // No server runs: there are no sessions to end.
        Ok(None) => {}
        Ok(Some(lines)) => report_ended(&lines),
        Err(e) => eprintln!("shoal: warning: the change is stored, but ending the live sessions of {user} failed: {e}"),
    }
}

/// How many sessions a running server says it ended.
fn ended(lines: &[String]) -> usize {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("sessions ")?.parse::<usize>().ok())
        .unwrap_or(0)
}

/// Says how many sessions a running server ended, if any.
fn report_ended(lines: &[String]) {
    let n = ended(lines);
    if n > 0 {
        println!("ended {n} session(s) on the running server");
    }
}

/// Asks the running server; an error when none runs.
fn ask(config: &Config, command: &ControlCommand) -> Result<Vec<String>, String> {
    let path = config.control_socket();
    control::request(&path, &command.to_string())?.ok_or_else(|| not_running(&path))
}

fn not_running(socket: &Path) -> String {
    format!("the server is not running (no answer on {})", socket.display())
}

fn service(config: &Config, command: ServiceCommand) -> Result<(), String> {
    match command {
        ServiceCommand::List => {
            let lines = ask(config, &ControlCommand::ListServices)?;
            println!(
                "{:<32} {:<10} {:<7} {:<20} {:>9}  name",
                "domain", "kind", "listing", "since (UTC)", "in flight"
            );
            for line in lines {
                let fields: Vec<&str> = line.splitn(7, ' ').collect();
                if let ["service", domain, kind, listing, since, in_flight, rest @ ..] = fields.as_slice() {
                    let since = since.parse::<u64>().map_or_else(|_| since.to_string(), utc);
                    let name = rest.first().copied().unwrap_or("");
                    println!("{domain:<32} {kind:<10} {listing:<7} {since:<20} {in_flight:>9}  {name}");
                }
            }
        }
    }
    Ok(())
}

fn s2s_list(config: &Config) -> Result<(), String> {
    let lines = ask(config, &ControlCommand::ListS2s)?;
    println!(
        "{:<4} {:<24} {:<24} {:<9} {:<5} {:>8} {:>8}  state",
        "dir", "local", "remote", "auth", "tls", "for (s)", "queued"
    );
    for line in lines {
        let fields: Vec<&str> = line.splitn(9, ' ').collect();
        if let ["s2s", dir, local, remote, auth, tls, secs, queued, state] = fields.as_slice() {
            println!("{dir:<4} {local:<24} {remote:<24} {auth:<9} {tls:<5} {secs:>8} {queued:>8}  {state}");
        }
    }
    Ok(())
}

/// An account (see [`account`]), or one of its sessions: `JID/resource`.
fn account_or_session(config: &Config, jid: &str) -> Result<Jid, String> {
    match jid.split_once('/') {
        None => Ok(Jid::from(account(config, jid)?)),
        Some((user, resource)) => account(config, user)?
            .with_resource(resource)
            .map(Jid::from)
            .map_err(|e| format!("invalid resource {resource:?}: {e}")),
    }
}

fn session(config: &Config, command: SessionCommand) -> Result<(), String> {
    match command {
        SessionCommand::List { user } => {
            let of = user.map(|u| account_or_session(config, &u)).transpose()?;
            let lines = ask(config, &ControlCommand::ListSessions { of })?;
            println!(
                "{:<40} {:<13} {:<22} {:<19} {:>8}  {:<11} sm",
                "jid", "transport", "peer", "since (UTC)", "priority", "presence"
            );
            for line in lines {
                let fields: Vec<&str> = line.splitn(8, ' ').collect();
                if let ["session", transport, peer, since, priority, presence, sm, jid] = fields.as_slice() {
                    let since = since.parse::<u64>().map_or_else(|_| since.to_string(), utc);
                    println!("{jid:<40} {transport:<13} {peer:<22} {since:<19} {priority:>8}  {presence:<11} {sm}");
                }
            }
        }
        SessionCommand::Kick { jid } => {
            let target = account_or_session(config, &jid)?;
            let command = match target.clone().try_into_full() {
                Ok(jid) => ControlCommand::KickSession {
                    jid,
                    reason: KickReason::Admin,
                },
                Err(_) => ControlCommand::KickUser {
                    user: target.to_bare(),
                    reason: KickReason::Admin,
                },
            };
            match ended(&ask(config, &command)?) {
                0 => return Err(format!("no live session of {target}")),
                n => println!("ended {n} session(s) of {target}"),
            }
        }
    }
    Ok(())
}

fn stats(config: &Config) -> Result<(), String> {
    for line in ask(config, &ControlCommand::Stats)? {
        if let Some((name, value)) = line.strip_prefix("stat ").and_then(|l| l.split_once(' ')) {
            println!("{name:<20} {value}");
        }
    }
    Ok(())
}

fn reload(config: &Config) -> Result<(), String> {
    for line in ask(config, &ControlCommand::Reload)? {
        println!("{line}");
    }
    Ok(())
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
fn utc(secs: u64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| secs.to_string())
}
