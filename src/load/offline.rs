//! Offline delivery (XEP-0160): messages sent to a user with no available
//! resource are kept, and delivered at the user's next initial presence.
//! A sender sends COUNT chat messages to a recipient who is offline; once
//! the server has handled them, the recipient logs in, and the time runs
//! from its initial presence to the COUNT-th message. The recipients go
//! one after another, so that each login is measured alone.
//!
//! Accounts: PREFIX0 sends, PREFIX1 ..= PREFIXR receive. A recipient is
//! offline because it has never logged in, or logged out at the end of an
//! earlier round or run.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoal_actors::codec::Frame;

use super::client::{Conn, LoadError, Target};
use super::scenarios::{json_num, Meter};
use super::{cpu_seconds, Spread};

/// The server has done with the messages when it has used at most one
/// clock tick of CPU (10 ms) in this long...
const QUIET: Duration = Duration::from_millis(200);
/// ...or when this much time has passed.
const QUIET_AT_MOST: Duration = Duration::from_secs(30);

/// One recipient's round.
struct Round {
    /// From the first message sent to the answer to a ping after the last.
    store: Duration,
    /// The server's CPU for storing: until it was quiet again.
    store_server_cpu: Option<f64>,
    /// From initial presence to the COUNT-th message, if all came.
    to_last: Option<Duration>,
    delivered: usize,
    out_of_order: usize,
    /// Messages of earlier rounds or runs that came at this login.
    stale: usize,
    /// Messages the server refused to keep (an error came back).
    refused: usize,
    server_cpu: Option<f64>,
    driver_cpu: f64,
}

/// Waits until the server is idle again: whatever it does after answering
/// (writing to its storage) is done by then. Without its pid, a second.
async fn settle(server_pid: Option<u32>) {
    let Some(pid) = server_pid else {
        tokio::time::sleep(Duration::from_secs(1)).await;
        return;
    };
    let start = Instant::now();
    let mut before = cpu_seconds(pid);
    while start.elapsed() < QUIET_AT_MOST {
        tokio::time::sleep(QUIET).await;
        let now = cpu_seconds(pid);
        match (before, now) {
            (Some(b), Some(n)) if n - b > 0.015 => before = now,
            _ => return,
        }
    }
}

/// Sends `count` messages to `to` (offline), then a ping, and, with stream
/// management, waits until the server has acknowledged them all. Returns
/// the time that took and the messages refused.
async fn send_to_offline(
    sender: &mut Conn,
    to: &str,
    token: &str,
    count: usize,
    domain: &str,
) -> Result<(Duration, usize), LoadError> {
    let t0 = Instant::now();
    for seq in 0..count {
        sender
            .send_stanza(format!(
                "<message to='{to}' type='chat' id='{token}-{seq}'><body>{seq}</body></message>"
            ))
            .await?;
    }
    let ping = format!("{token}-ping");
    sender
        .send_stanza(format!(
            "<iq type='get' id='{ping}' to='{domain}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await?;
    if sender.sm_enabled() {
        sender.request_ack().await?;
    }
    let (mut refused, mut pinged) = (0, false);
    while !pinged || sender.unacked() > 0 {
        let Frame::Stanza(el) = sender.next("the ping's answer").await? else {
            continue;
        };
        let ours = el.attr("id").is_some_and(|id| id.starts_with(token));
        match (el.name(), el.attr("type")) {
            ("message", Some("error")) if ours => refused += 1,
            ("iq", _) if el.attr("id") == Some(ping.as_str()) => pinged = true,
            _ => {}
        }
    }
    let took = t0.elapsed();
    // Nothing left for the server to ask about while the sender waits for
    // the next round (ejabberd closes a stream whose requests go
    // unanswered for 60 s).
    sender.send_ack().await?;
    Ok((took, refused))
}

/// One recipient: COUNT messages stored for it, then its login.
async fn round(
    target: &Target,
    sender: &mut Conn,
    recipient: (usize, &str),
    count: usize,
    sm: bool,
    server_pid: Option<u32>,
) -> Result<Round, LoadError> {
    let (n, user) = recipient;
    // Tells this round's messages from any left by an earlier one.
    let token = format!(
        "o{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let meter = Meter::start(server_pid);
    let to = format!("{user}@{}", target.domain);
    let (store, refused) = send_to_offline(sender, &to, &token, count, &target.domain).await?;
    settle(server_pid).await;
    let (_, _, store_server_cpu) = meter.stop();

    let (mut c, _) = Conn::login(target, n, user, "o", None).await?;
    if sm {
        c.enable_sm().await?;
    }
    let meter = Meter::start(server_pid);
    let t0 = Instant::now();
    c.send_stanza("<presence/>".to_owned()).await?;
    let (mut delivered, mut expected, mut out_of_order, mut stale) = (0, 0, 0, 0);
    let mut last = None;
    while delivered < count {
        // A message that never comes is lost: stop waiting, count it.
        let frame = match c.next("a stored message").await {
            Ok(f) => f,
            Err(LoadError::Timeout(_)) => break,
            Err(e) => return Err(e),
        };
        let Frame::Stanza(el) = frame else { continue };
        if el.name() != "message" || el.attr("type") == Some("error") {
            continue;
        }
        let seq = el
            .attr("id")
            .and_then(|id| id.strip_prefix(token.as_str()))
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|seq| seq.parse::<usize>().ok());
        let Some(seq) = seq else {
            stale += 1;
            continue;
        };
        if seq != expected {
            out_of_order += 1;
        }
        expected = seq + 1;
        delivered += 1;
        last = Some(t0.elapsed());
    }
    let (_, driver_cpu, server_cpu) = meter.stop();
    c.close().await?;
    Ok(Round {
        store,
        store_server_cpu,
        to_last: last.filter(|_| delivered == count),
        delivered,
        out_of_order,
        stale,
        refused,
        server_cpu,
        driver_cpu,
    })
}

/// `recipients` recipients, one after another: `count` messages stored for
/// each while it is offline, then its login. With `sm`, every client
/// enables stream management (the sender's messages are acknowledged
/// before the recipient logs in; the recipient acknowledges as it reads).
pub async fn offline(
    target: &Target,
    prefix: &str,
    recipients: usize,
    count: usize,
    sm: bool,
    server_pid: Option<u32>,
) -> Result<(), LoadError> {
    let mut sender = Conn::online(target, 0, &format!("{prefix}0"), "o", sm).await?;
    let mut rounds = Vec::with_capacity(recipients);
    for n in 1..=recipients {
        let user = format!("{prefix}{n}");
        rounds.push(round(target, &mut sender, (n, &user), count, sm, server_pid).await?);
    }
    sender.close().await?;

    let mut complete: Vec<Duration> = rounds.iter().filter_map(|r| r.to_last).collect();
    let to_last = (!complete.is_empty()).then(|| Spread::of(&mut complete));
    let mut stores: Vec<Duration> = rounds.iter().map(|r| r.store).collect();
    let store = Spread::of(&mut stores);
    let delivered: usize = rounds.iter().map(|r| r.delivered).sum();
    let lost = recipients * count - delivered;
    let out_of_order: usize = rounds.iter().map(|r| r.out_of_order).sum();
    let stale: usize = rounds.iter().map(|r| r.stale).sum();
    let refused: usize = rounds.iter().map(|r| r.refused).sum();
    let driver_cpu: f64 = rounds.iter().map(|r| r.driver_cpu).sum();
    // Summed, if known for every round.
    let server_cpu: Option<f64> = rounds.iter().map(|r| r.server_cpu).sum();
    let store_server_cpu: Option<f64> = rounds.iter().map(|r| r.store_server_cpu).sum();
    // CPU time comes in 10 ms ticks: per login, summed over the logins.
    let per_login_ms = server_cpu
        .filter(|_| recipients > 0)
        .map(|s| s * 1000.0 / recipients as f64);
    let stored_per_cpu = store_server_cpu
        .filter(|s| *s >= 0.1)
        .map(|s| (recipients * count) as f64 / s);
    println!(
        "offline  R={recipients:<4} K={count:<6} to last p50 {} ms  max {} ms   server CPU per login {} ms   lost {lost}  out of order {out_of_order}  stale {stale}  refused {refused}   stored in p50 {:.0} ms, per server CPU-s {}   driver CPU {driver_cpu:.2}s",
        to_last.map_or("n/a".into(), |s| format!("{:.1}", s.p50)),
        to_last.map_or("n/a".into(), |s| format!("{:.1}", s.max)),
        per_login_ms.map_or("n/a".into(), |v| format!("{v:.0}")),
        store.p50,
        stored_per_cpu.map_or("n/a".into(), |v| format!("{v:.0}")),
    );
    println!(
        "{{\"scenario\":\"offline\",\"recipients\":{recipients},\"count\":{count},\"sm\":{sm},\"delivered\":{delivered},\"p50_ms\":{},\"max_ms\":{},\"lost\":{lost},\"out_of_order\":{out_of_order},\"stale\":{stale},\"refused\":{refused},\"server_cpu_ms_per_login\":{},\"store_p50_ms\":{:.3},\"stored_per_server_cpu_s\":{},\"store_server_cpu_s\":{},\"driver_cpu_s\":{driver_cpu:.3},\"server_cpu_s\":{}}}",
        json_num(to_last.map(|s| s.p50)),
        json_num(to_last.map(|s| s.max)),
        json_num(per_login_ms),
        store.p50,
        json_num(stored_per_cpu),
        json_num(store_server_cpu),
        json_num(server_cpu),
    );
    Ok(())
}
