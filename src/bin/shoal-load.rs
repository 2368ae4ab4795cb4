//! `shoal-load`: drives any XMPP server over TCP with raw stanzas and
//! reports rates and latencies, with its own CPU beside the server's.
//!
//!     shoal-load --register login --clients 1000
//!     shoal-load --server-pid $(pidof shoal) messages --pairs 100 --window 8 --count 1000
//!     shoal-load --prefix a --register messages --sm --pairs 100 --window 8 --count 1000
//!     shoal-load --prefix o --register offline --sm --recipients 5 --count 1000
//!     shoal-load --prefix r --register roster --users 500 --contacts 100
//!     shoal-load --prefix c --register components --component-port 5347 --component-secret SECRET --pairs 100
//!     shoal-load --prefix muc --register muc --occupants 1000 --talkers 10 --rounds 50
//!     shoal-load --prefix pep --register pep --followers 1000 --rounds 100
//!
//! Accounts are PREFIX0..PREFIXn with one password; --register creates
//! them first by XEP-0077 (not timed).

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal::load::client::{LoadError, Target};
use shoal::load::components::{self, ComponentTarget, Mode, Requests};
use shoal::load::scenarios::Peer;
use shoal::load::{muc, offline, pep, raise_open_files, roster_storm, rss_kib, scenarios};

#[derive(Parser)]
#[command(name = "shoal-load", about = "Load driver for XMPP servers")]
struct Cli {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 5222)]
    port: u16,
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Account names are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "load")]
    prefix: String,
    #[arg(long, default_value = "load-password")]
    password: String,
    /// Create the accounts first (XEP-0077); existing ones are fine.
    #[arg(long)]
    register: bool,
    /// SCRAM-SHA-256 instead of PLAIN (salted passwords cached per account).
    #[arg(long)]
    scram: bool,
    /// Connect over WebSocket (RFC 7395) at this path of --host:--port
    /// (e.g. /xmpp-websocket on Shoal's and Prosody's 5280, /ws on
    /// ejabberd's), instead of TCP.
    #[arg(long)]
    websocket: Option<String>,
    /// Spread connections over source addresses 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// The server's process id, to report its CPU time and memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A second server, federated with the first, whose users are the
    /// recipients (messages) and followers (fanout): everything crosses a
    /// server-to-server link. Its c2s address...
    #[arg(long)]
    peer_host: Option<String>,
    #[arg(long, default_value_t = 5222)]
    peer_port: u16,
    /// ...its domain...
    #[arg(long, default_value = "localhost")]
    peer_domain: String,
    /// ...and its process id (the CPU reported is both servers').
    #[arg(long)]
    peer_pid: Option<u32>,
    /// Logins or registrations in flight at once.
    #[arg(long, default_value_t = 200)]
    parallel: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// C clients log in and send initial presence; then, with
    /// --server-pid, the idle memory per session while they stay. With
    /// several counts (--clients 10000,19000) they log in in waves, the
    /// earlier ones held, and memory is read after each.
    Login {
        #[arg(long, default_value = "1000", value_delimiter = ',')]
        clients: Vec<usize>,
    },
    /// P pairs exchange chat messages, each sender with a bounded window.
    Messages {
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        #[arg(long, default_value_t = 8)]
        window: usize,
        /// Messages per pair.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Stream management (XEP-0198) on every client: each answers the
        /// server's acknowledgement requests, and each sender asks for one
        /// once a window.
        #[arg(long)]
        sm: bool,
    },
    /// Offline delivery: COUNT chat messages are sent to each of R
    /// recipients while it is offline; then it logs in, and the time runs
    /// from its initial presence to the last message. PREFIX0 sends,
    /// PREFIX1 ..= PREFIXR receive, one after another.
    Offline {
        #[arg(long, default_value_t = 5)]
        recipients: usize,
        /// Messages stored for each recipient.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Stream management (XEP-0198) on the sender and the recipients.
        #[arg(long)]
        sm: bool,
    },
    /// One publisher with F online followers changes presence ROUNDS times
    /// (subscriptions made through subscribe/subscribed on the first run).
    Fanout {
        #[arg(long, default_value_t = 1000)]
        followers: usize,
        #[arg(long, default_value_t = 50)]
        rounds: usize,
    },
    /// Only creates accounts PREFIX0 .. PREFIX(N-1) (with --register), e.g.
    /// before restarting the server to measure idle memory from a fresh
    /// process.
    Provision {
        #[arg(long)]
        accounts: usize,
    },
    /// N users with K-item rosters (mutual subscriptions, made through
    /// subscribe/subscribed with --register) log in at once: time to
    /// roster and until every contact's presence is in.
    Roster {
        #[arg(long, default_value_t = 500)]
        users: usize,
        #[arg(long, default_value_t = 100)]
        contacts: usize,
    },
    /// P clients send IQ pings (--messages: chat messages) to
    /// echo@DOMAIN, W in flight each, COUNT each. The driver is the
    /// component (XEP-0114) serving DOMAIN: it answers every IQ with an
    /// empty result and echoes every message.
    Components {
        /// The server's port for external components.
        #[arg(long, default_value_t = 5347)]
        component_port: u16,
        #[arg(long, default_value = "bench.localhost")]
        component_domain: String,
        /// The handshake's shared secret, as configured on the server.
        #[arg(long, default_value = "bench-secret")]
        component_secret: String,
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        #[arg(long, default_value_t = 8)]
        window: usize,
        /// Requests per client.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Chat messages, echoed back, instead of IQs.
        #[arg(long)]
        messages: bool,
    },
    /// N occupants (PREFIXo0 ...) join bench@conference.DOMAIN; each round
    /// T of them send one groupchat message each at once: time from each
    /// sending until every occupant has it.
    Muc {
        #[arg(long, default_value_t = 1000)]
        occupants: usize,
        #[arg(long, default_value_t = 10)]
        talkers: usize,
        #[arg(long, default_value_t = 50)]
        rounds: usize,
    },
    /// A publisher (PREFIXpub) with F followers (PREFIXf0 ...) wanting its
    /// tune (caps with +notify) publishes ROUNDS times: time from each
    /// publish until the last follower has it. The subscriptions are made
    /// mutual with --register.
    Pep {
        #[arg(long, default_value_t = 1000)]
        followers: usize,
        #[arg(long, default_value_t = 100)]
        rounds: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(addr): Option<SocketAddr> = (cli.host.as_str(), cli.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        eprintln!("shoal-load: cannot resolve {}:{}", cli.host, cli.port);
        return ExitCode::FAILURE;
    };
    let files = raise_open_files();
    let target = Target {
        addr,
        domain: cli.domain.clone(),
        password: cli.password.clone(),
        sources: cli.sources.max(1),
        scram: cli.scram,
        websocket: cli.websocket.clone(),
    };
    let peer_addr = cli
        .peer_host
        .as_deref()
        .map(|h| (h, cli.peer_port).to_socket_addrs().ok().and_then(|mut a| a.next()));
    let peer = match peer_addr {
        None => None,
        Some(Some(addr)) => Some(Peer {
            target: Target {
                addr,
                domain: cli.peer_domain.clone(),
                ..target.clone()
            },
            pid: cli.peer_pid,
        }),
        Some(None) => {
            eprintln!(
                "shoal-load: cannot resolve the peer {:?}:{}",
                cli.peer_host, cli.peer_port
            );
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let accounts = match cli.scenario {
            Scenario::Login { ref clients } => clients.iter().copied().max().unwrap_or(0),
            Scenario::Messages { pairs, .. } => 2 * pairs,
            Scenario::Offline { recipients, .. } => recipients + 1,
            // Fan-out accounts are named PREFIXpub and PREFIXf0...: registered below.
            Scenario::Fanout { followers, .. } => followers + 1,
            Scenario::Roster { users, .. } => users,
            // One account per client; the component needs none.
            Scenario::Components { pairs, .. } => pairs,
            Scenario::Provision { accounts } => accounts,
            // PREFIXo0...; PREFIXpub and PREFIXf0...: registered below.
            Scenario::Muc { occupants, .. } => occupants,
            Scenario::Pep { followers, .. } => followers + 1,
        };
        if accounts + 64 > files as usize {
            eprintln!("shoal-load: warning: {accounts} connections but only {files} open files allowed");
        }
        if peer.is_some() && matches!(cli.scenario, Scenario::Muc { .. } | Scenario::Pep { .. }) {
            return Err(LoadError::Unexpected(
                "muc and pep run on one server: no --peer-host".into(),
            ));
        }
        if cli.register {
            if let Some(peer) = &peer {
                // Every account on both: harmless, and simple.
                scenarios::provision(&peer.target, &cli.prefix, accounts, cli.parallel).await?;
            }
            let followers_at = peer.as_ref().map_or(&target, |p| &p.target);
            match cli.scenario {
                Scenario::Fanout { followers, .. } => {
                    scenarios::provision(followers_at, &format!("{}f", cli.prefix), followers, cli.parallel).await?;
                    scenarios::provision_one(&target, &format!("{}pub", cli.prefix)).await?;
                }
                Scenario::Roster { users, contacts } => {
                    scenarios::provision(&target, &cli.prefix, users, cli.parallel).await?;
                    roster_storm::befriend(&target, &cli.prefix, users, contacts, cli.parallel).await?;
                }
                Scenario::Muc { occupants, .. } => {
                    scenarios::provision(&target, &format!("{}o", cli.prefix), occupants, cli.parallel).await?;
                }
                Scenario::Pep { followers, .. } => {
                    scenarios::provision(&target, &format!("{}f", cli.prefix), followers, cli.parallel).await?;
                    scenarios::provision_one(&target, &format!("{}pub", cli.prefix)).await?;
                    pep::befriend(&target, &cli.prefix, followers, cli.parallel).await?;
                }
                _ => scenarios::provision(&target, &cli.prefix, accounts, cli.parallel).await?,
            }
        }
        match cli.scenario {
            Scenario::Login { clients } => {
                let before = cli.server_pid.and_then(rss_kib);
                let mut held = Vec::new();
                for upto in clients {
                    let from = held.len();
                    if upto <= from {
                        return Err(LoadError::Unexpected("--clients must be increasing".into()));
                    }
                    let wave = scenarios::login(&target, &cli.prefix, from..upto, cli.parallel, cli.server_pid).await?;
                    held.extend(wave);
                    if cli.server_pid.is_some() {
                        scenarios::idle(held.len(), before, cli.server_pid);
                    }
                }
                Ok(())
            }
            Scenario::Messages {
                pairs,
                window,
                count,
                sm,
            } => {
                let peer = peer.as_ref();
                scenarios::messages(&target, peer, &cli.prefix, pairs, window, count, sm, cli.server_pid).await
            }
            Scenario::Offline { recipients, count, sm } => {
                offline::offline(&target, &cli.prefix, recipients, count, sm, cli.server_pid).await
            }
            Scenario::Fanout { followers, rounds } => {
                let peer = peer.as_ref();
                scenarios::fanout(
                    &target,
                    peer,
                    &cli.prefix,
                    followers,
                    rounds,
                    cli.parallel,
                    cli.server_pid,
                )
                .await
            }
            Scenario::Roster { users, contacts } => {
                roster_storm::storm(&target, &cli.prefix, users, contacts, cli.server_pid).await
            }
            Scenario::Components {
                component_port,
                component_domain,
                component_secret,
                pairs,
                window,
                count,
                messages,
            } => {
                let component = ComponentTarget {
                    addr: SocketAddr::new(target.addr.ip(), component_port),
                    domain: component_domain,
                    secret: component_secret,
                };
                let mode = if messages { Mode::Message } else { Mode::Iq };
                let requests = Requests {
                    mode,
                    pairs,
                    window,
                    count,
                };
                components::components(&target, &component, &cli.prefix, requests, cli.parallel, cli.server_pid).await
            }
            Scenario::Muc {
                occupants,
                talkers,
                rounds,
            } => {
                muc::muc(
                    &target,
                    &cli.prefix,
                    occupants,
                    talkers,
                    rounds,
                    cli.parallel,
                    cli.server_pid,
                )
                .await
            }
            Scenario::Pep { followers, rounds } => {
                pep::pep(&target, &cli.prefix, followers, rounds, cli.parallel, cli.server_pid).await
            }
            Scenario::Provision { .. } if !cli.register => {
                Err(LoadError::Unexpected("provision needs --register".into()))
            }
            Scenario::Provision { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-load: {e}");
            ExitCode::FAILURE
        }
    }
}
