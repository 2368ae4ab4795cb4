//! One timer per server rather than two per connection. Every period the
//! sweeper asks each live connection to check its liveness (XEP-0199
//! pings, then `<connection-timeout/>`), and at shutdown it tells each to
//! close with `<system-shutdown/>`. A connection costs it one weak
//! address; an actix timer and a shutdown watch cost a connection about
//! 250 bytes for its whole life.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix::{Message, WeakAddr};

use super::actor::C2s;
use super::C2sContext;
use crate::error::{StreamCondition, StreamError};
use crate::session::Control;

/// Asks a connection to check whether its peer is still there.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct CheckIdle;

/// The live connections of one server.
#[derive(Default)]
pub struct Connections {
    live: Mutex<Vec<WeakAddr<C2s>>>,
    sweeping: AtomicBool,
}

impl Connections {
    fn with<R>(&self, f: impl FnOnce(&mut Vec<WeakAddr<C2s>>) -> R) -> R {
        f(&mut super::lock(&self.live))
    }
}

/// Adds a connection; the first one starts the sweeper on this arbiter.
pub(super) fn track(cx: &Arc<C2sContext>, addr: WeakAddr<C2s>) {
    cx.connections.with(|live| live.push(addr));
    if !cx.connections.sweeping.swap(true, Ordering::AcqRel) {
        actix_rt::spawn(sweep(Arc::downgrade(cx)));
    }
}

async fn sweep(cx: Weak<C2sContext>) {
    let (period, shutdown) = match cx.upgrade() {
        Some(cx) => {
            let limits = cx.limits();
            let period = (limits.idle_timeout.min(limits.ping_timeout) / 4).max(Duration::from_millis(100));
            (period, cx.shutdown.clone())
        }
        None => return,
    };
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = ticks.tick() => false,
        };
        // The server is gone once nothing holds its context.
        let Some(cx) = cx.upgrade() else { return };
        cx.connections.with(|live| {
            live.retain(|conn| match conn.upgrade() {
                Some(addr) if stopping => {
                    addr.do_send(Control::Kick(StreamError::new(StreamCondition::SystemShutdown)));
                    false
                }
                Some(addr) => {
                    addr.do_send(CheckIdle);
                    true
                }
                None => false,
            })
        });
        if stopping {
            return;
        }
    }
}
