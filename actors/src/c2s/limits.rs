//! Abuse protection for client connections: the read shaper (a token
//! bucket, tighter before authentication, enforced by pausing reads), the
//! admission counters (per IP, and connections not yet authenticated), and
//! the login throttle (failed attempts per account and per IP).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Failed logins allowed per account, and per IP, within `failure_window`.
    pub failures_per_account: u32,
    pub failures_per_ip: u32,
    pub failure_window: Duration,
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
            failures_per_account: 5,
            failures_per_ip: 20,
            failure_window: Duration::from_secs(300),
        }
    }
}

/// What the transport task and the actor of one connection share.
#[derive(Debug)]
pub struct ConnState {
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
    pub(crate) fn new() -> ConnState {
        ConnState {
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

/// Failed logins per account and per IP, in fixed windows.
#[derive(Default)]
pub struct AuthThrottle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl AuthThrottle {
    fn keys(user: &str, ip: IpAddr) -> [String; 2] {
        [format!("user {user}"), format!("ip {ip}")]
    }

    /// True when `user` or `ip` has failed too often lately.
    pub fn blocked(&self, user: &str, ip: IpAddr, limits: &ConnectionLimits, now: Instant) -> bool {
        let Ok(failures) = self.failures.lock() else {
            return false;
        };
        let [u, i] = Self::keys(user, ip);
        let over = |key: &str, max: u32| {
            failures
                .get(key)
                .is_some_and(|(n, since)| *n >= max && now.duration_since(*since) < limits.failure_window)
        };
        over(&u, limits.failures_per_account) || over(&i, limits.failures_per_ip)
    }

    pub fn failed(&self, user: &str, ip: IpAddr, limits: &ConnectionLimits, now: Instant) {
        let Ok(mut failures) = self.failures.lock() else { return };
        // Forget old windows now and then, so the table stays small.
        if failures.len() > 10_000 {
            failures.retain(|_, (_, since)| now.duration_since(*since) < limits.failure_window);
        }
        for key in Self::keys(user, ip) {
            let entry = failures.entry(key).or_insert((0, now));
            if now.duration_since(entry.1) >= limits.failure_window {
                *entry = (0, now);
            }
            entry.0 += 1;
        }
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

    #[test]
    fn throttle_by_account_and_ip_in_windows() {
        let t = AuthThrottle::default();
        let limits = ConnectionLimits {
            failures_per_account: 2,
            failures_per_ip: 3,
            ..ConnectionLimits::default()
        };
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let now = Instant::now();
        t.failed("alice", ip, &limits, now);
        assert!(!t.blocked("alice", ip, &limits, now));
        t.failed("alice", other, &limits, now);
        assert!(
            t.blocked("alice", ip, &limits, now),
            "account limit, whatever the address"
        );
        assert!(!t.blocked("bob", ip, &limits, now));
        t.failed("bob", ip, &limits, now);
        assert!(!t.blocked("carol", ip, &limits, now), "two failures from this address");
        t.failed("dave", ip, &limits, now);
        assert!(
            t.blocked("carol", ip, &limits, now),
            "address limit, whatever the account"
        );
        let later = now + limits.failure_window;
        assert!(!t.blocked("alice", ip, &limits, later));
    }
}
