//! Abuse protection for client connections: the read shaper (a token
//! bucket, tighter before authentication, enforced by pausing reads), the
//! admission counters (per IP, and connections not yet authenticated), and
//! the login throttle (growing waits after failed logins, per account and
//! source network).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lock;
use crate::error::{StreamCondition, StreamError};

/// Limits on client connections.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Bytes per second read from an authenticated client, and its burst.
    pub rate: u32,
    pub burst: u32,
    /// The same before authentication.
    pub preauth_rate: u32,
    pub preauth_burst: u32,
    /// Open connections from one IP address (0: no limit).
    pub max_per_ip: usize,
    /// Connections that have not authenticated yet, in all (0: no limit).
    pub max_unauthenticated: usize,
    /// Silence after which the server pings the client (XEP-0199)...
    pub idle_timeout: Duration,
    /// ...and how long the client then has to say anything.
    pub ping_timeout: Duration,
    /// Time one write (or flush, or shutdown) to a client may take: a client
    /// that stops reading cannot hold its socket longer.
    pub write_timeout: Duration,
    /// Failed logins allowed per account from one source network, and per
    /// source network for all accounts (0: not counted). Once a count reaches
    /// its allowance, each failure makes the next attempt wait (see
    /// [`AuthThrottle`]).
    pub failures_per_account: u32,
    pub failures_per_network: u32,
    /// The longest such wait.
    pub max_failure_delay: Duration,
    /// How long after its wait ends a quiet count is forgotten.
    pub failure_window: Duration,
    /// Counts kept at most; past it the one touched longest ago goes.
    pub throttle_entries: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            rate: 256 * 1024,
            burst: 1024 * 1024,
            preauth_rate: 16 * 1024,
            preauth_burst: 64 * 1024,
            max_per_ip: 256,
            max_unauthenticated: 1024,
            idle_timeout: Duration::from_secs(300),
            ping_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            failures_per_account: 5,
            failures_per_network: 20,
            max_failure_delay: Duration::from_secs(300),
            failure_window: Duration::from_secs(300),
            throttle_entries: 65536,
        }
    }
}

/// What the transport task and the actor of one connection share.
#[derive(Debug)]
pub struct ConnState {
    /// The connection's place in the admission counts. Here, so that it is
    /// given back only once both the actor and the task that owns the socket
    /// are gone: a socket still open still counts.
    pub(crate) admitted: Admitted,
    pub(crate) authenticated: AtomicBool,
    /// Set by the transport once TLS is up.
    /// Boxed: most connections of a busy server are idle, and most
    /// connections' state is this struct.
    pub(crate) tls: Mutex<Option<Box<super::io::ChannelBindings>>>,
    /// Milliseconds since `epoch` at the last read.
    last_read: AtomicU64,
    /// Reads so far: any read after a ping answers it.
    reads: AtomicU64,
    epoch: Instant,
}

impl ConnState {
    pub(crate) fn new(admitted: Admitted) -> ConnState {
        ConnState {
            admitted,
            authenticated: AtomicBool::new(false),
            tls: Mutex::new(None),
            last_read: AtomicU64::new(0),
            reads: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn touch(&self) {
        self.last_read
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// The channel bindings, if the connection is encrypted.
    pub(crate) fn tls(&self) -> Option<super::io::ChannelBindings> {
        self.tls.lock().ok().and_then(|t| t.as_deref().cloned())
    }

    /// True once TLS is up (without copying the bindings).
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.lock().is_ok_and(|t| t.is_some())
    }

    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Time since the peer last sent anything.
    pub(crate) fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_read.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// A token bucket over bytes read.
#[derive(Debug)]
pub(crate) struct Shaper {
    tokens: f64,
    last: Instant,
}

impl Shaper {
    pub(crate) fn new(now: Instant, burst: u32) -> Shaper {
        Shaper {
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes `n` bytes read at `now`; returns when reading may go on (now,
    /// unless the bucket ran dry).
    pub(crate) fn take(&mut self, n: usize, now: Instant, rate: u32, burst: u32) -> Instant {
        let rate = f64::from(rate.max(1));
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(f64::from(burst));
        self.last = now;
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            now
        } else {
            // Wait until the debt is paid back.
            now + Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

/// Counts connections per IP and those not yet authenticated.
#[derive(Debug, Default)]
pub struct Admission {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    unauthenticated: AtomicUsize,
}

/// A connection's place in the [`Admission`] counts, given back on drop.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
    unauthenticated: AtomicBool,
}

impl Admission {
    /// Lets a connection from `ip` in, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limits: &ConnectionLimits) -> Result<Admitted, StreamError> {
        let mut per_ip = self
            .per_ip
            .lock()
            .map_err(|_| StreamError::new(StreamCondition::InternalServerError))?;
        let count = per_ip.entry(ip).or_default();
        if limits.max_per_ip > 0 && *count >= limits.max_per_ip {
            return Err(StreamError::with_text(
                StreamCondition::PolicyViolation,
                "too many connections from your address",
            ));
        }
        let unauth = self.unauthenticated.fetch_add(1, Ordering::AcqRel);
        if limits.max_unauthenticated > 0 && unauth >= limits.max_unauthenticated {
            self.unauthenticated.fetch_sub(1, Ordering::AcqRel);
            return Err(StreamError::with_text(
                StreamCondition::ResourceConstraint,
                "too many connections are logging in",
            ));
        }
        *count += 1;
        Ok(Admitted {
            admission: self.clone(),
            ip,
            unauthenticated: AtomicBool::new(true),
        })
    }

    pub fn unauthenticated(&self) -> usize {
        self.unauthenticated.load(Ordering::Relaxed)
    }
}

impl Admitted {
    /// The connection authenticated: it no longer counts as logging in.
    pub fn authenticated(&self) {
        if self.unauthenticated.swap(false, Ordering::AcqRel) {
            self.admission.unauthenticated.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.authenticated();
        if let Ok(mut per_ip) = self.admission.per_ip.lock() {
            if let Some(n) = per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
    }
}

/// Failed logins, counted per (account, source network) and per source
/// network for all accounts. Once a key's count reaches its allowance, each
/// failure makes the key wait before its next attempt, twice as long as the
/// last time (1 s, 2 s, 4 s, ... up to a cap). Counting per network means a
/// guesser elsewhere never slows the owner down; waits rather than a
/// lock-out mean nobody is kept out for long. The table keeps a fixed number
/// of keys, forgetting the one touched longest ago, and every call is O(1)
/// under its lock.
#[derive(Default)]
pub struct AuthThrottle {
    /// Keys the digests that stand for the keys, so that nobody can choose
    /// names that collide with someone else's.
    hasher: RandomState,
    table: Mutex<Lru>,
}

impl AuthThrottle {
    /// The digests of the keys (account, network) and (network).
    fn keys(&self, user: &str, ip: IpAddr) -> (u64, u64) {
        let network = network(ip);
        (
            self.hasher.hash_one((Some(user), network)),
            self.hasher.hash_one((None::<&str>, network)),
        )
    }

    /// True while `user` from `ip`'s network, or that network for any
    /// account, must wait before trying again.
    pub fn blocked(&self, user: &str, ip: IpAddr, limits: &ConnectionLimits, now: Instant) -> bool {
        let (account, network) = self.keys(user, ip);
        let table = lock(&self.table);
        let waiting = |key: u64, free: u32| free > 0 && table.get(key).is_some_and(|f| now < f.until);
        waiting(account, limits.failures_per_account) || waiting(network, limits.failures_per_network)
    }

    /// A wrong password for `user` from `ip`: both counts go up, and past
    /// their allowance so does the wait.
    pub fn failed(&self, user: &str, ip: IpAddr, limits: &ConnectionLimits, now: Instant) {
        let (account, network) = self.keys(user, ip);
        let mut table = lock(&self.table);
        for (key, free) in [
            (account, limits.failures_per_account),
            (network, limits.failures_per_network),
        ] {
            if free == 0 {
                continue;
            }
            let f = table.touch(key, limits.throttle_entries, Failures { count: 0, until: now });
            if expired(*f, now, limits.failure_window) {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.until = now
                .checked_add(wait(f.count, free, limits.max_failure_delay))
                .unwrap_or(now);
        }
        table.forget_expired(now, limits.failure_window);
    }

    /// `user` logged in from `ip`: its failures from that network are
    /// forgotten. The network's own count stays, or a guesser with an
    /// account of its own could reset it at will.
    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        let (account, _) = self.keys(user, ip);
        lock(&self.table).remove(account);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.table).index.len()
    }
}

/// The network an address stands for: its /24 (IPv4) or /64 (IPv6), about
/// one household or NAT, so that an address-hopping guesser is still one
/// network. A loopback address is this machine, where every address is as
/// good as another: each stands for itself, so that a local process guessing
/// from 127.0.0.2 never slows down the owner on 127.0.0.1.
fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        ip if ip.is_loopback() => ip,
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & !0xff)),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
    }
}

/// The wait after a key's `count`th failure: none before the `free`th, then
/// 1 s, doubling with each failure, up to `max`.
fn wait(count: u32, free: u32, max: Duration) -> Duration {
    match count.checked_sub(free.max(1)) {
        // Past 2^32 s the cap has long been reached; the shift stays in range.
        Some(doublings) => Duration::from_secs(1u64 << doublings.min(32)).min(max),
        None => Duration::ZERO,
    }
}

/// True when a key has been quiet for `window` since its wait ended.
fn expired(f: Failures, now: Instant, window: Duration) -> bool {
    now.saturating_duration_since(f.until) >= window
}

/// One key's failures.
#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    /// No attempt before this (the last failure's time if it cost nothing).
    until: Instant,
}

/// No slot: the ends of an empty list.
const NIL: usize = usize::MAX;

/// A key in the table, linked into the list by last touch.
struct Slot {
    key: u64,
    failures: Failures,
    /// The slots touched just more and just less recently, or NIL.
    prev: usize,
    next: usize,
}

/// A map from key digests to failures, its entries in a doubly linked list
/// by last touch (in one vector, so nothing is allocated per entry): an LRU
/// cache with O(1) look-up, touch, eviction and removal.
struct Lru {
    index: HashMap<u64, usize>,
    slots: Vec<Slot>,
    /// Slots given back by `remove`, for the next new keys.
    free: Vec<usize>,
    /// Touched most and least recently, or NIL.
    head: usize,
    tail: usize,
}

impl Default for Lru {
    fn default() -> Self {
        Lru {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }
}

impl Lru {
    fn get(&self, key: u64) -> Option<Failures> {
        self.index.get(&key).map(|&i| self.slots[i].failures)
    }

    /// The failures of `key` (`fresh` if it is new), now touched most
    /// recently. A new key in a full table takes the slot of the key
    /// touched longest ago.
    fn touch(&mut self, key: u64, capacity: usize, fresh: Failures) -> &mut Failures {
        let found = self.index.get(&key).copied();
        let i = match found {
            Some(i) => {
                self.unlink(i);
                i
            }
            None => {
                let i = if self.index.len() >= capacity.max(1) && self.tail != NIL {
                    let i = self.tail;
                    self.unlink(i);
                    let old = self.slots[i].key;
                    self.index.remove(&old);
                    i
                } else if let Some(i) = self.free.pop() {
                    i
                } else {
                    self.slots.push(Slot {
                        key,
                        failures: fresh,
                        prev: NIL,
                        next: NIL,
                    });
                    self.slots.len() - 1
                };
                self.slots[i].key = key;
                self.slots[i].failures = fresh;
                self.index.insert(key, i);
                i
            }
        };
        self.push_front(i);
        &mut self.slots[i].failures
    }

    fn remove(&mut self, key: u64) {
        if let Some(i) = self.index.remove(&key) {
            self.unlink(i);
            self.free.push(i);
        }
    }

    /// Forgets the key touched longest ago if it has expired, twice at
    /// most: a little at each failure, so that a quiet table empties
    /// without a sweep over it.
    fn forget_expired(&mut self, now: Instant, window: Duration) {
        for _ in 0..2 {
            let i = self.tail;
            if i == NIL || !expired(self.slots[i].failures, now, window) {
                return;
            }
            let key = self.slots[i].key;
            self.remove(key);
        }
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slots[i].prev, self.slots[i].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next].prev = prev;
        }
    }

    fn push_front(&mut self, i: usize) {
        self.slots[i].prev = NIL;
        self.slots[i].next = self.head;
        if self.head == NIL {
            self.tail = i;
        } else {
            let head = self.head;
            self.slots[head].prev = i;
        }
        self.head = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_pauses_reads_for_the_debt() {
        let t0 = Instant::now();
        let mut s = Shaper::new(t0, 1000);
        assert_eq!(s.take(1000, t0, 100, 1000), t0);
        // 500 bytes over: 5 s at 100 B/s.
        assert_eq!(s.take(500, t0, 100, 1000), t0 + Duration::from_secs(5));
        // After 10 s the debt is paid and 500 bytes are back.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(s.take(500, t1, 100, 1000), t1);
        // Tokens never exceed the burst.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!(s.take(1000, t2, 100, 1000), t2);
        assert!(s.take(1, t2, 100, 1000) > t2);
    }

    #[test]
    fn admission_per_ip_and_unauthenticated() {
        let a = Arc::new(Admission::default());
        let limits = ConnectionLimits {
            max_per_ip: 2,
            max_unauthenticated: 3,
            ..ConnectionLimits::default()
        };
        let ip1: IpAddr = "10.0.0.1".parse().unwrap();
        let ip2: IpAddr = "10.0.0.2".parse().unwrap();
        let x = a.admit(ip1, &limits).unwrap();
        let y = a.admit(ip1, &limits).unwrap();
        assert_eq!(
            a.admit(ip1, &limits).unwrap_err().condition,
            StreamCondition::PolicyViolation
        );
        let z = a.admit(ip2, &limits).unwrap();
        assert_eq!(
            a.admit(ip2, &limits).unwrap_err().condition,
            StreamCondition::ResourceConstraint
        );
        z.authenticated();
        let w = a.admit(ip2, &limits).unwrap();
        drop((x, y));
        assert_eq!(a.unauthenticated(), 1);
        assert!(a.admit(ip1, &limits).is_ok());
        drop((z, w));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_guesser_on_another_network_never_slows_the_owner() {
        let t = AuthThrottle::default();
        let limits = ConnectionLimits::default();
        let now = Instant::now();
        // The measurement: ten wrong passwords from 127.0.0.2.
        for _ in 0..10 {
            t.failed("admin", ip("127.0.0.2"), &limits, now);
        }
        assert!(t.blocked("admin", ip("127.0.0.2"), &limits, now));
        assert!(
            !t.blocked("admin", ip("127.0.0.1"), &limits, now),
            "each loopback address is a network of its own"
        );
        for _ in 0..10 {
            t.failed("admin", ip("10.0.0.1"), &limits, now);
        }
        assert!(t.blocked("admin", ip("10.0.0.200"), &limits, now), "the same /24");
        assert!(
            t.blocked("admin", ip("::ffff:10.0.0.7"), &limits, now),
            "an IPv4-mapped address is the IPv4 address"
        );
        assert!(!t.blocked("admin", ip("10.0.1.1"), &limits, now), "another /24");
        assert!(
            !t.blocked("bob", ip("10.0.0.1"), &limits, now),
            "other accounts from that network, within its allowance"
        );
        for _ in 0..10 {
            t.failed("admin", ip("2001:db8:0:1::1"), &limits, now);
        }
        assert!(
            t.blocked("admin", ip("2001:db8:0:1:ffff::2"), &limits, now),
            "the same /64"
        );
        assert!(!t.blocked("admin", ip("2001:db8:0:2::1"), &limits, now), "another /64");
    }

    #[test]
    fn a_network_guessing_many_accounts_waits_for_all_of_them() {
        let t = AuthThrottle::default();
        let limits = ConnectionLimits::default();
        let now = Instant::now();
        for n in 0..limits.failures_per_network {
            t.failed(&format!("user{n}"), ip("10.0.0.1"), &limits, now);
        }
        assert!(t.blocked("carol", ip("10.0.0.9"), &limits, now));
        assert!(!t.blocked("carol", ip("10.0.1.1"), &limits, now));
        // Counting per network can be turned off, for a widely shared one.
        let off = ConnectionLimits {
            failures_per_network: 0,
            ..limits
        };
        assert!(!t.blocked("carol", ip("10.0.0.9"), &off, now));
    }

    #[test]
    fn waits_double_up_to_the_cap_and_end() {
        let t = AuthThrottle::default();
        let limits = ConnectionLimits {
            failures_per_account: 3,
            max_failure_delay: Duration::from_secs(8),
            ..ConnectionLimits::default()
        };
        let a = ip("10.0.0.1");
        let mut now = Instant::now();
        for _ in 0..2 {
            t.failed("alice", a, &limits, now);
            assert!(!t.blocked("alice", a, &limits, now), "free failures");
        }
        for secs in [1, 2, 4, 8, 8] {
            t.failed("alice", a, &limits, now);
            let wait = Duration::from_secs(secs);
            assert!(
                t.blocked("alice", a, &limits, now + wait - Duration::from_millis(1)),
                "{secs} s"
            );
            now += wait;
            assert!(!t.blocked("alice", a, &limits, now), "free again after {secs} s");
        }
        // Quiet for the window after the wait: forgotten, the free failures
        // are back.
        now += limits.failure_window;
        t.failed("alice", a, &limits, now);
        t.failed("alice", a, &limits, now);
        assert!(!t.blocked("alice", a, &limits, now));
    }

    #[test]
    fn the_table_keeps_a_fixed_number_of_keys() {
        let t = AuthThrottle::default();
        let limits = ConnectionLimits {
            throttle_entries: 1000,
            ..ConnectionLimits::default()
        };
        let now = Instant::now();
        for _ in 0..4 {
            t.failed("alice", ip("10.9.9.9"), &limits, now);
        }
        // Two keys per failure (account and network), each network new.
        for n in 0..2000u32 {
            t.failed("x", IpAddr::V4(Ipv4Addr::from(n << 8)), &limits, now);
            assert!(t.len() <= 1000);
        }
        assert_eq!(t.len(), 1000);
        // The key touched longest ago went; the latest stayed.
        t.failed("alice", ip("10.9.9.9"), &limits, now);
        assert!(!t.blocked("alice", ip("10.9.9.9"), &limits, now), "forgotten");
        let last = IpAddr::V4(Ipv4Addr::from(1999u32 << 8));
        for _ in 0..4 {
            t.failed("x", last, &limits, now);
        }
        assert!(t.blocked("x", last, &limits, now), "still counted");
    }

    #[test]
    fn the_key_touched_longest_ago_goes_first() {
        let mut lru = Lru::default();
        let f = Failures {
            count: 0,
            until: Instant::now(),
        };
        for k in [1, 2, 3] {
            lru.touch(k, 3, f);
        }
        lru.touch(1, 3, f);
        lru.touch(4, 3, f);
        assert!(lru.get(2).is_none());
        assert!([1, 3, 4].iter().all(|k| lru.get(*k).is_some()));
        // A removed key's slot is reused without evicting anyone.
        lru.remove(3);
        lru.touch(5, 3, f);
        assert!([1, 4, 5].iter().all(|k| lru.get(*k).is_some()));
        lru.touch(6, 3, f);
        assert!(lru.get(1).is_none());
        assert!([4, 5, 6].iter().all(|k| lru.get(*k).is_some()));
        assert_eq!(lru.slots.len(), 3);
    }

    #[test]
    fn success_forgets_the_account_from_that_network_only() {
        let t = AuthThrottle::default();
        let limits = ConnectionLimits::default();
        let a = ip("10.0.0.1");
        let now = Instant::now();
        for _ in 0..limits.failures_per_account {
            t.failed("alice", a, &limits, now);
        }
        assert!(t.blocked("alice", a, &limits, now));
        assert_eq!(t.len(), 2);
        t.succeeded("alice", a);
        assert!(!t.blocked("alice", a, &limits, now));
        assert_eq!(t.len(), 1, "the network's count stays");
        // The free failures are back.
        for _ in 1..limits.failures_per_account {
            t.failed("alice", a, &limits, now);
            assert!(!t.blocked("alice", a, &limits, now));
        }
        t.failed("alice", a, &limits, now);
        assert!(t.blocked("alice", a, &limits, now));
        t.succeeded("nobody", a);
    }
}
