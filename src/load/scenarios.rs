//! The scenarios: login, idle, messages, fan-out. Each prints a line of its table
//! and a JSON line (`{"scenario": ...}`) for scripts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_actors::codec::Frame;
use tokio::sync::Semaphore;

use super::client::{close_all, Conn, LoadError, Target};
use super::{cpu_seconds, rss_kib, Spread};

/// What every scenario reports besides its own figures.
pub struct Meter {
    /// The servers measured (two, federated, in the federation runs).
    pids: Vec<u32>,
    start: Instant,
    driver_cpu: f64,
    server_cpu: Option<f64>,
}

/// The CPU seconds of all of `pids`, if each is known.
fn cpu_of(pids: &[u32]) -> Option<f64> {
    (!pids.is_empty()).then(|| pids.iter().map(|p| cpu_seconds(*p)).sum::<Option<f64>>())?
}

impl Meter {
    pub fn start(server_pid: Option<u32>) -> Meter {
        let pids: Vec<u32> = server_pid.into_iter().collect();
        Meter {
            server_cpu: cpu_of(&pids),
            pids,
            start: Instant::now(),
            driver_cpu: cpu_seconds(std::process::id()).unwrap_or(0.0),
        }
    }

    /// Counts a second server's CPU too (the peer of a federated run).
    pub fn and(mut self, peer: Option<&Peer>) -> Meter {
        if let Some(pid) = peer.and_then(|p| p.pid) {
            self.pids.push(pid);
            self.server_cpu = cpu_of(&self.pids);
        }
        self
    }

    /// (wall seconds, driver CPU s, servers' CPU s if known)
    pub fn stop(&self) -> (f64, f64, Option<f64>) {
        let driver = cpu_seconds(std::process::id()).unwrap_or(0.0) - self.driver_cpu;
        let server = match (cpu_of(&self.pids), self.server_cpu) {
            (Some(now), Some(then)) => Some(now - then),
            _ => None,
        };
        (self.start.elapsed().as_secs_f64(), driver, server)
    }
}

/// A second server, federated with the first: the recipients (messages)
/// and followers (fan-out) are its users, so that everything crosses a
/// server-to-server link.
#[derive(Clone)]
pub struct Peer {
    pub target: Target,
    pub pid: Option<u32>,
}

pub(crate) fn json_num(v: Option<f64>) -> String {
    v.map_or("null".into(), |v| format!("{v:.3}"))
}

/// Prints what a fan-out scenario measured (fan-out, PEP, MUC):
/// `deliveries` copies received over `wall` seconds, each round's time to
/// its last recipient in `to_last`, and copies received twice
/// (`repeated`, when the scenario counts them). `size` names the
/// scenario's dimensions, as (field, value): the human line shows them
/// before the figures, the JSON line as fields.
pub(crate) fn report_deliveries(
    scenario: &str,
    size: &[(&str, usize)],
    deliveries: usize,
    (wall, driver_cpu, server_cpu): (f64, f64, Option<f64>),
    to_last: &mut [Duration],
    repeated: Option<usize>,
) {
    let latency = Spread::of(to_last);
    let deliveries = deliveries as f64;
    let rate = deliveries / wall;
    // CPU time comes in 10 ms ticks: 0.1 s is the least that says much.
    let per_cpu = server_cpu.filter(|s| *s >= 0.1).map(|s| deliveries / s);
    let dims: String = size.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    let repeats = repeated.map(|r| format!("  repeated {r}")).unwrap_or_default();
    println!(
        "{scenario:<8} {dims:<24} {rate:>9.0} deliveries/s  per server CPU-s {}  to-last p50 {:>7.2} ms  p99 {:>7.2} ms{repeats}   driver CPU {driver_cpu:.2}s  server CPU {}",
        per_cpu.map_or("n/a".into(), |v| format!("{v:.0}")),
        latency.p50,
        latency.p99,
        server_cpu.map_or("n/a".into(), |s| format!("{s:.2}s")),
    );
    let fields: String = size.iter().map(|(k, v)| format!("\"{k}\":{v},")).collect();
    let repeats = repeated.map(|r| format!("\"repeated\":{r},")).unwrap_or_default();
    println!(
        "{{\"scenario\":\"{scenario}\",{fields}\"deliveries_per_s\":{rate:.1},\"per_server_cpu_s\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},{repeats}\"driver_cpu_s\":{driver_cpu:.3},\"server_cpu_s\":{}}}",
        json_num(per_cpu),
        latency.p50,
        latency.p99,
        latency.max,
        json_num(server_cpu),
    );
}

/// Accounts `prefix0 .. prefixN` exist (XEP-0077), registered `parallel` at a time.
pub async fn provision(target: &Target, prefix: &str, n: usize, parallel: usize) -> Result<(), LoadError> {
    let gate = Arc::new(Semaphore::new(parallel));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (target, user, gate) = (target.clone(), format!("{prefix}{i}"), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            Conn::register(&target, i, &user).await
        }));
    }
    for t in tasks {
        t.await.map_err(|e| LoadError::Unexpected(e.to_string()))??;
    }
    Ok(())
}

/// One named account exists (XEP-0077).
pub async fn provision_one(target: &Target, user: &str) -> Result<(), LoadError> {
    Conn::register(target, 0, user).await
}

/// Accounts `accounts` (e.g. `0..1000`) log in at once (at most
/// `parallel` in flight), bind and send initial presence; the connections
/// are returned for the idle scenario.
pub async fn login(
    target: &Target,
    prefix: &str,
    accounts: std::ops::Range<usize>,
    parallel: usize,
    server_pid: Option<u32>,
) -> Result<Vec<Conn>, LoadError> {
    let (held, clients) = (accounts.start, accounts.end);
    // SCRAM: one untimed login per account fills the salted-password cache,
    // so the driver's own PBKDF2 does not limit the rate.
    let gate = Arc::new(Semaphore::new(parallel));
    let mut cache: Vec<(usize, Option<Vec<u8>>)> = accounts.clone().map(|i| (i, None)).collect();
    if target.scram {
        let warming: Vec<_> = accounts
            .map(|i| {
                let (target, user, gate) = (target.clone(), format!("{prefix}{i}"), gate.clone());
                tokio::spawn(async move {
                    let _permit = gate.acquire().await;
                    let (c, salted) = Conn::login(&target, i, &user, "warm", None).await?;
                    c.close().await?;
                    Ok::<_, LoadError>(salted)
                })
            })
            .collect();
        for ((_, slot), w) in cache.iter_mut().zip(warming) {
            *slot = w.await.map_err(|e| LoadError::Unexpected(e.to_string()))??;
        }
    }
    let wave = cache.len();
    let meter = Meter::start(server_pid);
    let mut tasks = Vec::new();
    for (i, salted) in cache {
        let (target, user, gate) = (target.clone(), format!("{prefix}{i}"), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            let t0 = Instant::now();
            let (mut c, _) = Conn::login(&target, i, &user, "load", salted).await?;
            c.available().await?;
            Ok::<_, LoadError>((c, t0.elapsed()))
        }));
    }
    let mut conns = Vec::new();
    let mut latencies = Vec::new();
    for t in tasks {
        let (c, d) = t.await.map_err(|e| LoadError::Unexpected(e.to_string()))??;
        conns.push(c);
        latencies.push(d);
    }
    let (wall, driver_cpu, server_cpu) = meter.stop();
    let latency = Spread::of(&mut latencies);
    let mech = if target.scram {
        super::client::scram_mechanism(target).await?
    } else {
        "PLAIN"
    };
    let rate = wave as f64 / wall;
    println!(
        "login    C={clients:<6} (+{wave} to {held} held) {mech:<13} {rate:>9.0} logins/s   p50 {:>7.1} ms  p99 {:>7.1} ms   driver CPU {driver_cpu:.2}s  server CPU {}",
        latency.p50,
        latency.p99,
        server_cpu.map_or("n/a".into(), |s| format!("{s:.2}s")),
    );
    println!(
        "{{\"scenario\":\"login\",\"clients\":{clients},\"held\":{held},\"mechanism\":\"{mech}\",\"logins_per_s\":{rate:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"driver_cpu_s\":{driver_cpu:.3},\"server_cpu_s\":{}}}",
        latency.p50,
        latency.p99,
        json_num(server_cpu),
    );
    Ok(conns)
}

/// Server memory per idle session: RSS with the sessions held, against
/// RSS before they logged in.
pub fn idle(sessions: usize, rss_before: Option<u64>, server_pid: Option<u32>) {
    let rss_after = server_pid.and_then(rss_kib);
    let per = match (rss_before, rss_after) {
        (Some(b), Some(a)) if sessions > 0 => Some((a.saturating_sub(b) as f64 * 1024.0) / sessions as f64),
        _ => None,
    };
    println!(
        "idle     C={sessions:<6} server RSS {} KiB -> {} KiB   {} bytes per session",
        rss_before.map_or("n/a".into(), |v| v.to_string()),
        rss_after.map_or("n/a".into(), |v| v.to_string()),
        per.map_or("n/a".into(), |v| format!("{v:.0}")),
    );
    println!(
        "{{\"scenario\":\"idle\",\"sessions\":{sessions},\"rss_before_kib\":{},\"rss_after_kib\":{},\"bytes_per_session\":{}}}",
        rss_before.map_or("null".into(), |v| v.to_string()),
        rss_after.map_or("null".into(), |v| v.to_string()),
        json_num(per),
    );
}

/// P pairs: each sender keeps at most `window` messages unreceived and
/// sends `count`; latency, loss and order are checked per message.
///
/// With `sm`, every client enables stream management (XEP-0198) before its
/// initial presence, as a mobile client does: each answers the server's
/// `<r/>`, and each sender asks for an acknowledgement once a window and
/// after its last message, keeps what it sent until acknowledged, and is
/// done when all of it is.
#[allow(clippy::too_many_arguments)]
pub async fn messages(
    target: &Target,
    peer: Option<&Peer>,
    prefix: &str,
    pairs: usize,
    window: usize,
    count: usize,
    sm: bool,
    server_pid: Option<u32>,
) -> Result<(), LoadError> {
    let receiving = peer.map_or(target, |p| &p.target);
    let epoch = Instant::now();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for p in 0..pairs {
        let (a, b) = (format!("{prefix}{}", 2 * p), format!("{prefix}{}", 2 * p + 1));
        // Available, so that nothing is bounced.
        let sa = Conn::online(target, 2 * p, &a, "m", sm).await?;
        let sb = Conn::online(receiving, 2 * p + 1, &b, "m", sm).await?;
        senders.push((sa, format!("{b}@{}/m", receiving.domain)));
        receivers.push(sb);
    }
    let out_of_order = Arc::new(AtomicU64::new(0));
    let ack_every = window.max(1);
    let meter = Meter::start(server_pid).and(peer);
    let mut tasks = Vec::new();
    for ((mut sender, to), mut receiver) in senders.into_iter().zip(receivers) {
        let gate = Arc::new(Semaphore::new(window));
        let (recv_gate, disorder) = (gate.clone(), out_of_order.clone());
        let recv = tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            let mut expected = 0usize;
            while latencies.len() < count {
                // A message that never comes is lost: stop waiting, count it.
                let frame = match receiver.next("a message").await {
                    Ok(f) => f,
                    Err(LoadError::Timeout(_)) => break,
                    Err(e) => return Err(e),
                };
                let Frame::Stanza(el) = frame else { continue };
                if el.name() != "message" {
                    continue;
                }
                let seq: usize = el.attr("id").and_then(|i| i.parse().ok()).unwrap_or(usize::MAX);
                let sent_ns: u64 = el
                    .children()
                    .next()
                    .map(|b| b.text())
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                if seq != expected {
                    disorder.fetch_add(1, Ordering::Relaxed);
                }
                expected = seq + 1;
                latencies.push(epoch.elapsed().saturating_sub(Duration::from_nanos(sent_ns)));
                recv_gate.add_permits(1);
            }
            // Without stream management the connection is dropped here, as
            // ever. With it, what came is acknowledged at once, so that no
            // request of the server's waits unanswered (ejabberd closes a
            // stream after 60 s of that); the connection stays until the
            // end, and is then closed with a last acknowledgement: dropped,
            // the server would send again (or keep offline) what it had not
            // seen acknowledged.
            if sm {
                receiver.send_ack().await?;
            }
            Ok::<_, LoadError>((latencies, sm.then_some(receiver)))
        });
        let send = tokio::spawn(async move {
            let mut seq = 0;
            // Until all is sent and, with stream management, acknowledged.
            while seq < count || sender.unacked() > 0 {
                tokio::select! {
                    permit = gate.acquire(), if seq < count => {
                        permit.map_err(|e| LoadError::Unexpected(e.to_string()))?.forget();
                        let t = epoch.elapsed().as_nanos();
                        sender
                            .send_stanza(format!(
                                "<message to='{to}' type='chat' id='{seq}'><body>{t}</body></message>"
                            ))
                            .await?;
                        seq += 1;
                        if sm && (seq % ack_every == 0 || seq == count) {
                            sender.request_ack().await?;
                        }
                    }
                    // The server's acknowledgements (and requests), as they come.
                    frame = sender.next("an acknowledgement"), if sm => match frame {
                        Ok(_) => {}
                        // Nothing for a whole timeout, neither a permit nor
                        // an answer: the receiver has given up too.
                        Err(LoadError::Timeout(_)) => break,
                        Err(e) => return Err(e),
                    },
                }
            }
            Ok::<_, LoadError>(sender)
        });
        tasks.push((send, recv));
    }
    let mut all = Vec::with_capacity(pairs * count);
    let mut keep = Vec::new();
    for (send, recv) in tasks {
        keep.push(send.await.map_err(|e| LoadError::Unexpected(e.to_string()))??);
        let (latencies, receiver) = recv.await.map_err(|e| LoadError::Unexpected(e.to_string()))??;
        all.extend(latencies);
        keep.extend(receiver);
    }
    let (wall, driver_cpu, server_cpu) = meter.stop();
    let latency = Spread::of(&mut all);
    let delivered = all.len();
    let rate = delivered as f64 / wall;
    let per_cpu = server_cpu.filter(|s| *s >= 0.3).map(|s| delivered as f64 / s);
    let lost = pairs * count - delivered;
    let disorder = out_of_order.load(Ordering::Relaxed);
    let mode = if sm { "sm" } else { "" };
    println!(
        "messages P={pairs:<4} window={window:<3} {mode:<2} {rate:>9.0} msgs/s  per server CPU-s {}  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  lost {lost}  out of order {disorder}   driver CPU {driver_cpu:.2}s  server CPU {}",
        per_cpu.map_or("n/a".into(), |v| format!("{v:.0}")),
        latency.p50,
        latency.p99,
        latency.max,
        server_cpu.map_or("n/a".into(), |s| format!("{s:.2}s")),
    );
    println!(
        "{{\"scenario\":\"messages\",\"pairs\":{pairs},\"window\":{window},\"sm\":{sm},\"delivered\":{delivered},\"msgs_per_s\":{rate:.1},\"per_server_cpu_s\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"lost\":{lost},\"out_of_order\":{disorder},\"driver_cpu_s\":{driver_cpu:.3},\"server_cpu_s\":{}}}",
        json_num(per_cpu),
        latency.p50,
        latency.p99,
        latency.max,
        json_num(server_cpu),
    );
    if sm {
        close_all(keep).await?;
    }
    Ok(())
}

/// One publisher followed by F online followers changes presence `rounds`
/// times; measures the time from sending until the last follower has it.
/// The subscriptions are made through the stanza path (RFC 6121 §3): every
/// follower asks, the publisher approves; on later runs they exist already
/// and the follower just gets the publisher's presence.
pub async fn fanout(
    target: &Target,
    peer: Option<&Peer>,
    prefix: &str,
    followers: usize,
    rounds: usize,
    parallel: usize,
    server_pid: Option<u32>,
) -> Result<(), LoadError> {
    let following = peer.map_or(target, |p| &p.target);
    let publisher_name = format!("{prefix}pub");
    let publisher_jid = format!("{publisher_name}@{}", target.domain);
    let (mut publisher, _) = Conn::login(target, 0, &publisher_name, "p", None).await?;
    publisher
        .send("<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq><presence/>")
        .await?;
    // The publisher approves every request while the followers come online.
    let (approving_tx, mut approving_rx) = tokio::sync::oneshot::channel::<()>();
    let approver = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut approving_rx => return Ok::<_, LoadError>(publisher),
                frame = publisher.next("subscription requests") => {
                    if let Frame::Stanza(el) = frame? {
                        if el.name() == "presence" && el.attr("type") == Some("subscribe") {
                            let from = el.attr("from").unwrap_or_default().to_owned();
                            publisher.send(&format!("<presence to='{from}' type='subscribed'/>")).await?;
                        }
                    }
                }
            }
        }
    });
    let gate = Arc::new(Semaphore::new(parallel));
    let mut joins = Vec::new();
    for i in 0..followers {
        let (target, gate, publisher_jid) = (following.clone(), gate.clone(), publisher_jid.clone());
        let user = format!("{prefix}f{i}");
        joins.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            let (mut c, _) = Conn::login(&target, i + 1, &user, "f", None).await?;
            c.send(&format!("<presence/><presence to='{publisher_jid}' type='subscribe'/>"))
                .await?;
            // Online and following once the publisher's presence arrives.
            loop {
                if let Frame::Stanza(el) = c.next("the publisher's presence").await? {
                    let from_publisher = el.attr("from").is_some_and(|f| f.starts_with(publisher_jid.as_str()));
                    if el.name() == "presence" && el.attr("type").is_none() && from_publisher {
                        return Ok::<_, LoadError>(c);
                    }
                }
            }
        }));
    }
    let mut conns = Vec::new();
    for j in joins {
        conns.push(j.await.map_err(|e| LoadError::Unexpected(e.to_string()))??);
    }
    let _ = approving_tx.send(());
    let mut publisher = approver.await.map_err(|e| LoadError::Unexpected(e.to_string()))??;

    // Each follower reports when it sees each round's status.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let mut watchers = Vec::new();
    for mut c in conns {
        let (done, publisher_jid) = (done_tx.clone(), publisher_jid.clone());
        watchers.push(tokio::spawn(async move {
            let mut round = 0;
            while round < rounds {
                let Frame::Stanza(el) = c.next("a round's presence").await? else {
                    continue;
                };
                if el.name() != "presence" || !el.attr("from").is_some_and(|f| f.starts_with(publisher_jid.as_str())) {
                    continue;
                }
                let status = el.children().find(|s| s.name() == "status").map(|s| s.text());
                if status.as_deref() == Some(format!("r{round}").as_str()) {
                    let _ = done.send((round, Instant::now()));
                    round += 1;
                }
            }
            Ok::<_, LoadError>(c)
        }));
    }
    drop(done_tx);
    let meter = Meter::start(server_pid).and(peer);
    let mut to_last = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let t0 = Instant::now();
        publisher
            .send(&format!("<presence><status>r{round}</status></presence>"))
            .await?;
        let mut last = t0;
        for _ in 0..followers {
            let (r, at) = tokio::time::timeout(super::client::REPLY_TIMEOUT, done_rx.recv())
                .await
                .map_err(|_| LoadError::Timeout("a follower's presence"))?
                .ok_or(LoadError::Closed("the other tasks"))?;
            if r != round {
                return Err(LoadError::Unexpected(format!("round {r} during round {round}")));
            }
            last = last.max(at);
        }
        to_last.push(last - t0);
    }
    let (wall, driver_cpu, server_cpu) = meter.stop();
    for w in watchers {
        w.await.map_err(|e| LoadError::Unexpected(e.to_string()))??;
    }
    report_deliveries(
        "fanout",
        &[("followers", followers), ("rounds", rounds)],
        followers * rounds,
        (wall, driver_cpu, server_cpu),
        &mut to_last,
        None,
    );
    Ok(())
}
