//! The roster storm: N users, each with a K-item roster of mutual
//! (`both`) subscriptions, log in at once; each fetches its roster and
//! sends initial presence, as every client does. A user has converged
//! when it holds its roster and the available presence of all K contacts,
//! whether that came as a probe answer or as the contact's own broadcast.
//!
//! The contacts form a ring: user i's are i ± 1 ..= i ± K/2 (mod N), so
//! every roster has exactly K items and every user is every contact's
//! contact.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_actors::codec::Frame;
use shoal_actors::ns;
use tokio::sync::{watch, Semaphore};

use super::client::{close_all, Conn, LoadError, Target};
use super::scenarios::{json_num, Meter};
use super::Spread;

/// Who is whose contact.
#[derive(Clone, Copy)]
struct Ring {
    users: usize,
    contacts: usize,
}

impl Ring {
    fn new(users: usize, contacts: usize) -> Result<Ring, LoadError> {
        if !contacts.is_multiple_of(2) || contacts >= users {
            return Err(LoadError::Unexpected(format!(
                "{contacts} contacts among {users} users: the ring needs an even number below the user count"
            )));
        }
        Ok(Ring { users, contacts })
    }

    fn neighbours(self, i: usize) -> impl Iterator<Item = usize> {
        let half = self.contacts / 2;
        (1..=half).flat_map(move |d| [(i + d) % self.users, (i + self.users - d) % self.users])
    }

    fn is_neighbour(self, i: usize, j: usize) -> bool {
        let d = (i + self.users - j) % self.users;
        d != 0 && d.min(self.users - d) <= self.contacts / 2
    }
}

/// The account number in `prefixN@domain/resource`.
fn user_index(jid: &str, prefix: &str) -> Option<usize> {
    jid.strip_prefix(prefix)?.split('@').next()?.parse().ok()
}

/// Quiet time after which a user looks at its roster again and asks the
/// contacts that have not approved yet: a server under a subscription
/// flood may drop some requests (ejabberd did, at 500 × 100). Quiet means
/// no approval for anyone: a busy server is not asked twice.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(10);
/// Quiet time after which befriending gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(180);

/// When anyone was last approved, in milliseconds since `epoch`.
#[derive(Clone)]
struct Progress {
    epoch: Instant,
    last_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            epoch: Instant::now(),
            last_ms: Arc::default(),
        }
    }

    fn made(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        let ms = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::Instant::from_std(self.epoch + Duration::from_millis(ms))
    }
}

/// What the befriending users share.
struct Everyone {
    /// Told when this user has all its approvals.
    done: tokio::sync::mpsc::UnboundedSender<()>,
    /// Set when every user has.
    all_done: watch::Receiver<bool>,
    progress: Progress,
}

/// Who has approved one user's requests.
struct Approvals {
    by: Vec<bool>,
    count: usize,
    needed: usize,
    /// Told once, when the last approval comes.
    done: tokio::sync::mpsc::UnboundedSender<()>,
}

impl Approvals {
    fn mark(&mut self, j: usize) {
        if !std::mem::replace(&mut self.by[j], true) {
            self.count += 1;
            if self.count == self.needed {
                let _ = self.done.send(());
            }
        }
    }
}

/// One user's side of befriending: ask every contact not yet approved (as
/// its roster shows), approve every request, until everyone is done.
async fn befriend_one(
    mut c: Conn,
    ring: Ring,
    i: usize,
    prefix: String,
    domain: String,
    everyone: Everyone,
) -> Result<Conn, LoadError> {
    let Everyone {
        done,
        mut all_done,
        progress,
    } = everyone;
    const ROSTER: &str = "<iq type='get' id='befriend-roster'><query xmlns='jabber:iq:roster'/></iq>";
    let mut approved = Approvals {
        by: vec![false; ring.users],
        count: 0,
        needed: ring.contacts,
        done,
    };
    c.send(ROSTER).await?;
    let mut asked = tokio::time::Instant::now();
    loop {
        let again = asked.max(progress.last()) + ASK_AGAIN_AFTER;
        let frame = tokio::select! {
            _ = all_done.changed() => return Ok(c),
            _ = tokio::time::sleep_until(again), if approved.count < approved.needed => {
                if progress.last() + ASK_AGAIN_AFTER <= tokio::time::Instant::now() {
                    asked = tokio::time::Instant::now();
                    c.send(ROSTER).await?;
                }
                continue;
            }
            frame = c.next("subscription traffic") => frame,
        };
        let el = match frame {
            Ok(Frame::Stanza(el)) => el,
            // Done users wait quietly for the others.
            Ok(_) | Err(LoadError::Timeout(_)) => continue,
            Err(e) => return Err(e),
        };
        let from = el.attr("from").unwrap_or_default().to_owned();
        match (el.name(), el.attr("type")) {
            ("iq", Some("result")) if el.attr("id") == Some("befriend-roster") => {
                // Contacts who approved earlier (or on an earlier run) need
                // not be asked: Prosody does not pass on a repeated approval.
                let items = el.get_child("query", ns::ROSTER).into_iter().flat_map(|q| q.children());
                for item in items {
                    let approved_now = matches!(item.attr("subscription"), Some("to" | "both"));
                    let j = item.attr("jid").and_then(|jid| user_index(jid, &prefix));
                    if let Some(j) = j.filter(|&j| approved_now && ring.is_neighbour(i, j)) {
                        approved.mark(j);
                    }
                }
                let asks: String = ring
                    .neighbours(i)
                    .filter(|&j| !approved.by[j])
                    .map(|j| format!("<presence to='{prefix}{j}@{domain}' type='subscribe'/>"))
                    .collect();
                if !asks.is_empty() {
                    c.send(&asks).await?;
                }
            }
            ("presence", Some("subscribe")) => {
                c.send(&format!("<presence to='{from}' type='subscribed'/>")).await?;
            }
            ("presence", Some("subscribed")) => {
                if let Some(j) = user_index(&from, &prefix).filter(|&j| ring.is_neighbour(i, j)) {
                    approved.mark(j);
                    progress.made();
                }
            }
            _ => {}
        }
    }
}

/// Makes the ring's subscriptions through the stanza path (RFC 6121 §3):
/// everyone online, everyone asks each contact and approves every request.
/// Done when every user has been approved by all its contacts. Safe to
/// repeat: an existing subscription is answered by the server itself.
pub async fn befriend(
    target: &Target,
    prefix: &str,
    users: usize,
    contacts: usize,
    parallel: usize,
) -> Result<(), LoadError> {
    let ring = Ring::new(users, contacts)?;
    let gate = Arc::new(Semaphore::new(parallel));
    let mut logins = Vec::new();
    for i in 0..users {
        let (target, prefix, gate) = (target.clone(), prefix.to_owned(), gate.clone());
        logins.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            Conn::online(&target, i, &format!("{prefix}{i}"), "setup", false).await
        }));
    }
    let mut conns = Vec::new();
    for l in logins {
        conns.push(l.await.map_err(|e| LoadError::Unexpected(e.to_string()))??);
    }
    let progress = Progress::new();
    // Everyone keeps approving until everyone is done.
    let (all_done_tx, all_done) = watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        let (prefix, domain, done, all_done) = (
            prefix.to_owned(),
            target.domain.clone(),
            done_tx.clone(),
            all_done.clone(),
        );
        let everyone = Everyone {
            done,
            all_done,
            progress: progress.clone(),
        };
        tasks.push(tokio::spawn(befriend_one(c, ring, i, prefix, domain, everyone)));
    }
    drop(done_tx);
    // However long the server takes, as long as someone is approved now
    // and then (Prosody needs minutes for 500 × 100).
    let mut done = 0;
    while done < users {
        match tokio::time::timeout(ASK_AGAIN_AFTER, done_rx.recv()).await {
            Ok(Some(())) => done += 1,
            // Every task has ended: the errors come out below.
            Ok(None) => break,
            Err(_) if progress.last().elapsed() > GIVE_UP_AFTER => {
                return Err(LoadError::Timeout("any subscription to be approved"));
            }
            Err(_) => {}
        }
    }
    let _ = all_done_tx.send(true);
    let mut conns = Vec::new();
    for t in tasks {
        conns.push(t.await.map_err(|e| LoadError::Unexpected(e.to_string()))??);
    }
    if done < users {
        return Err(LoadError::Unexpected(format!(
            "only {done} of {users} users were approved"
        )));
    }
    close_all(conns).await
}

/// One user's storm: (time to roster from its own connect, time to
/// convergence from its own connect, time to convergence from the storm's
/// start), and the connection, held until everyone has converged.
async fn storm_one(
    target: &Target,
    prefix: &str,
    ring: Ring,
    i: usize,
    storm_start: Instant,
) -> Result<(Duration, Duration, Duration, Conn), LoadError> {
    let t0 = Instant::now();
    let (mut c, _) = Conn::login(target, i, &format!("{prefix}{i}"), "storm", None).await?;
    c.send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq><presence/>")
        .await?;
    let mut roster_at = None;
    let mut seen = vec![false; ring.users];
    let mut available = 0;
    while roster_at.is_none() || available < ring.contacts {
        let Frame::Stanza(el) = c.next("roster and contacts' presence").await? else {
            continue;
        };
        match el.name() {
            "iq" if el.attr("id") == Some("roster") => {
                let items = el
                    .get_child("query", ns::ROSTER)
                    .map(|q| {
                        q.children()
                            .filter(|it| it.attr("subscription") == Some("both"))
                            .count()
                    })
                    .unwrap_or(0);
                if items != ring.contacts {
                    return Err(LoadError::Unexpected(format!(
                        "{prefix}{i} has {items} mutual roster items, not {}: provision with --register",
                        ring.contacts
                    )));
                }
                roster_at = Some(t0.elapsed());
            }
            "presence" if el.attr("type").is_none() => {
                let from = el.attr("from").and_then(|f| user_index(f, prefix));
                if let Some(j) = from.filter(|&j| ring.is_neighbour(i, j)) {
                    if !std::mem::replace(&mut seen[j], true) {
                        available += 1;
                    }
                }
            }
            _ => {}
        }
    }
    let roster = roster_at.unwrap_or_default();
    Ok((roster, t0.elapsed(), storm_start.elapsed(), c))
}

/// N users with K-item rosters log in at once.
pub async fn storm(
    target: &Target,
    prefix: &str,
    users: usize,
    contacts: usize,
    server_pid: Option<u32>,
) -> Result<(), LoadError> {
    let ring = Ring::new(users, contacts)?;
    let meter = Meter::start(server_pid);
    let start = Instant::now();
    let tasks: Vec<_> = (0..users)
        .map(|i| {
            let (target, prefix) = (target.clone(), prefix.to_owned());
            tokio::spawn(async move { storm_one(&target, &prefix, ring, i, start).await })
        })
        .collect();
    let (mut to_roster, mut own, mut converged, mut conns) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in tasks {
        let (r, o, s, c) = t.await.map_err(|e| LoadError::Unexpected(e.to_string()))??;
        to_roster.push(r);
        own.push(o);
        converged.push(s);
        conns.push(c);
    }
    let (wall, driver_cpu, server_cpu) = meter.stop();
    close_all(conns).await?;
    let (to_roster, own, converged) = (
        Spread::of(&mut to_roster),
        Spread::of(&mut own),
        Spread::of(&mut converged),
    );
    let deliveries = (users * contacts) as f64;
    println!(
        "roster   N={users:<5} K={contacts:<4} roster p50 {:>7.1} ms  p99 {:>7.1} ms   converged p50 {:>7.1} ms  p99 {:>7.1} ms  (from own login p99 {:>7.1} ms)   all in {wall:.2}s   driver CPU {driver_cpu:.2}s  server CPU {}",
        to_roster.p50,
        to_roster.p99,
        converged.p50,
        converged.p99,
        own.p99,
        server_cpu.map_or("n/a".into(), |s| format!("{s:.2}s")),
    );
    println!(
        "{{\"scenario\":\"roster\",\"users\":{users},\"contacts\":{contacts},\"roster_p50_ms\":{:.3},\"roster_p99_ms\":{:.3},\"converged_p50_ms\":{:.3},\"p99_ms\":{:.3},\"own_p99_ms\":{:.3},\"wall_s\":{wall:.3},\"presence_per_server_cpu_s\":{},\"driver_cpu_s\":{driver_cpu:.3},\"server_cpu_s\":{}}}",
        to_roster.p50,
        to_roster.p99,
        converged.p50,
        converged.p99,
        own.p99,
        json_num(server_cpu.filter(|s| *s >= 0.1).map(|s| deliveries / s)),
        json_num(server_cpu),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_symmetric_and_k_regular() {
        let ring = Ring::new(7, 4).unwrap();
        for i in 0..7 {
            let mut n: Vec<usize> = ring.neighbours(i).collect();
            n.sort();
            n.dedup();
            assert_eq!(n.len(), 4, "user {i}: {n:?}");
            for j in 0..7 {
                assert_eq!(ring.is_neighbour(i, j), n.contains(&j), "{i} {j}");
                assert_eq!(ring.is_neighbour(i, j), ring.is_neighbour(j, i));
            }
        }
        assert!(Ring::new(100, 100).is_err());
        assert!(Ring::new(100, 3).is_err());
    }

    #[test]
    fn user_index_reads_the_number() {
        assert_eq!(user_index("r12@localhost/storm", "r"), Some(12));
        assert_eq!(user_index("x12@localhost", "r"), None);
    }
}
