//! Presence fan-out over TCP: one publisher followed by F online
//! followers changes presence; measures the time from sending until the
//! last follower has it, and deliveries per second. Not a test: a figure.
//!
//!     cargo bench --bench fanout            (or make bench)
//!     SHOAL_FANOUT=10,100 SHOAL_ROUNDS=20 cargo bench --bench fanout
//!
//! The server and this driver share the machine's cores; the server's own
//! CPU time is reported beside the figures.

use std::time::Instant;

use shoal::load::client::{Conn, Target};
use shoal::load::{cpu_seconds_of, Spread};
use shoal::store::SqliteStore;
use shoal::{Config, ServerBuilder};
use shoal_actors::codec::Frame;
use shoal_actors::jid::BareJid;
use shoal_actors::roster::{ItemChange, RosterItem, SubState, Subscription};
use shoal_actors::sasl::Credentials;

/// Logs in with PLAIN, binds, and sends initial presence.
async fn online(target: &Target, n: usize, user: &str) -> Conn {
    let (mut c, _) = Conn::login(target, n, user, "b", None).await.expect("login");
    c.send("<presence/>").await.expect("presence");
    c
}

/// This process hosts the server and the driver; the driver runs on the
/// main thread, whose time is subtracted.
fn server_cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/self/stat").unwrap_or(0.0)
}

fn thread_cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/thread-self/stat").unwrap_or(0.0)
}

fn setup(db: &std::path::Path, followers: usize) {
    let mut store = SqliteStore::open(db).unwrap();
    let creds = Credentials::derive("pw", 4096);
    let publisher = BareJid::new("pub", "localhost").unwrap();
    store.create_user(&publisher, &creds).unwrap();
    for i in 0..followers {
        let follower = BareJid::new(&format!("f{i}"), "localhost").unwrap();
        store.create_user(&follower, &creds).unwrap();
        let item = |jid: &BareJid, s| RosterItem {
            state: SubState {
                subscription: s,
                ..SubState::default()
            },
            in_roster: true,
            ..RosterItem::new(jid.clone())
        };
        let (a, b) = (item(&follower, Subscription::From), item(&publisher, Subscription::To));
        store
            .update_roster_item(&publisher, &follower, Box::new(move |_| ItemChange::Put(a)))
            .unwrap();
        store
            .update_roster_item(&follower, &publisher, Box::new(move |_| ItemChange::Put(b)))
            .unwrap();
    }
}

fn run(followers: usize, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    setup(&db, followers);
    let mut config = Config::default();
    config.storage.sqlite = db;
    config.c2s.listen = vec!["127.0.0.1:0".parse().unwrap()];
    config.http.listen = Vec::new();
    // Every follower connects from 127.0.0.1 at once.
    config.limits.max_connections_per_ip = 0;
    config.limits.max_unauthenticated = 0;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = ServerBuilder::new(config).start().await.unwrap();
            addr_tx.send(server.local_addrs()[0]).unwrap();
            let _ = stop_rx.await;
            server.shutdown().await;
        })
    });
    let addr = addr_rx.recv().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut to_last, cpu, driver_cpu, wall) = rt.block_on(async move {
        let mut conns = Vec::new();
        let target = Target {
            addr,
            domain: "localhost".into(),
            password: "pw".into(),
            sources: 1,
            scram: false,
            websocket: None,
        };
        let names: Vec<String> = (0..followers).map(|i| format!("f{i}")).collect();
        for chunk in names.chunks(50) {
            let logins = chunk.iter().enumerate().map(|(i, user)| online(&target, i, user));
            conns.extend(futures_util::future::join_all(logins).await);
        }
        for c in conns.iter_mut() {
            c.next("own presence").await.expect("presence echo");
        }
        let mut publisher = online(&target, 0, "pub").await;
        // Own echo plus nothing else (the publisher follows no one).
        publisher.next("own presence").await.expect("presence echo");
        // Each follower waits for every round's status and reports when.
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
        let local = tokio::task::LocalSet::new();
        for mut c in conns {
            let done = done_tx.clone();
            local.spawn_local(async move {
                let mut round = 0;
                while round < rounds {
                    // A follower that loses its connection stops; the driver
                    // then waits in vain and the run fails loudly.
                    let Ok(frame) = c.next("a presence").await else { return };
                    if let Frame::Stanza(el) = frame {
                        let status = el.children().find(|s| s.name() == "status").map(|s| s.text());
                        if status.as_deref() == Some(format!("r{round}").as_str()) {
                            let _ = done.send((round, Instant::now()));
                            round += 1;
                        }
                    }
                }
            });
        }
        let cpu0 = server_cpu_seconds();
        let dcpu0 = thread_cpu_seconds();
        let start = Instant::now();
        let mut to_last = Vec::new();
        local
            .run_until(async {
                for round in 0..rounds {
                    let t0 = Instant::now();
                    publisher
                        .send(&format!("<presence><status>r{round}</status></presence>"))
                        .await
                        .expect("send");
                    let mut last = t0;
                    for _ in 0..followers {
                        let (r, at) = done_rx.recv().await.unwrap();
                        assert_eq!(r, round);
                        last = last.max(at);
                    }
                    to_last.push(last - t0);
                }
            })
            .await;
        let wall = start.elapsed();
        (to_last, server_cpu_seconds() - cpu0, thread_cpu_seconds() - dcpu0, wall)
    });
    let _ = stop_tx.send(());
    server.join().unwrap();

    let latency = Spread::of(&mut to_last);
    let deliveries = (followers * rounds) as f64;
    let server_cpu = cpu - driver_cpu;
    // CPU time comes in 10 ms ticks: below a few tenths it says nothing.
    let per_cpu = if server_cpu >= 0.3 {
        format!("{:>9.0}", deliveries / server_cpu)
    } else {
        format!("{:>9}", "n/a")
    };
    println!(
        "fan-out F={followers:<5} rounds={rounds:<3} to-last p50 {:>7.2} ms  p99 {:>7.2} ms  deliveries/s {:>9.0}  \
         per server CPU-s {per_cpu}  (server CPU {server_cpu:.2}s, driver CPU {driver_cpu:.2}s)",
        latency.p50,
        latency.p99,
        deliveries / wall.as_secs_f64(),
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing
    // useful either: both run the whole thing, small when under test.
    let quick = std::env::args().all(|a| a != "--bench");
    let sizes: Vec<usize> = std::env::var("SHOAL_FANOUT")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| if quick { vec![10] } else { vec![10, 100, 1000] });
    let rounds: usize = std::env::var("SHOAL_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if quick { 3 } else { 50 });
    for f in sizes {
        run(f, rounds);
    }
}
