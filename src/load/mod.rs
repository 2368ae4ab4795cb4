//! The load driver behind `shoal-load`: raw XMPP over TCP against any
//! server (Shoal, ejabberd, Prosody), with its own CPU reported beside the
//! server's so that a driver bottleneck is never mistaken for a server
//! limit.

pub mod client;
pub mod components;
pub mod muc;
pub mod offline;
pub mod pep;
pub mod roster_storm;
pub mod rounds;
pub mod scenarios;
pub mod websocket;

use std::time::Duration;

/// User + system CPU seconds of a process (`/proc/PID/stat`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_seconds_of(&format!("/proc/{pid}/stat"))
}

/// User + system CPU seconds from a `stat` file of /proc (a process's, or
/// a thread's: `/proc/thread-self/stat`).
pub fn cpu_seconds_of(stat: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13)?.iter().filter_map(|x| x.parse::<f64>().ok()).sum();
    Some(ticks / 100.0)
}

/// Resident set of a process, in KiB (`/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub use crate::rlimit::raise_open_files;

/// The median, 99th percentile and maximum of some durations, in
/// milliseconds: what every scenario reports, in its table line and its
/// JSON line.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    /// Sorts `durations` and reads the spread off them.
    pub fn of(durations: &mut [Duration]) -> Spread {
        durations.sort();
        Spread {
            p50: percentile_ms(durations, 0.5),
            p99: percentile_ms(durations, 0.99),
            max: percentile_ms(durations, 1.0),
        }
    }
}

/// Percentile of sorted durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}
