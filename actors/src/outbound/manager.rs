//! The outbound connection manager (after Message::Passing's
//! ConnectionManager): one actor per peer that connects, notices the
//! connection ending, waits, and connects again, with a connect timeout
//! and exponential backoff with jitter. Subscribers are told
//! [`ConnectionEvent::Connected`] with a handle to use the connection and
//! [`ConnectionEvent::Disconnected`] when it is gone; one that subscribes
//! while connected is told `Connected` at once, so nobody has to ask
//! first and subscribe second (and miss what happened in between). Each
//! failed attempt is told too ([`ConnectionEvent::AttemptFailed`], with the
//! error), so that whoever waits for the connection can give up on it.
//!
//! The manager knows nothing of XMPP: a [`Connector`] opens a connection
//! and hands over a handle and a future that resolves when the connection
//! ends.

use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

/// What [`Connector::connect`] returns: one attempt, run on the manager's
/// arbiter (so it need not be `Send`).
pub type ConnectFuture<H> = Pin<Box<dyn Future<Output = io::Result<Connection<H>>>>>;

/// An established connection, as a [`Connector`] hands it over.
pub struct Connection<H> {
    /// What subscribers are given to use the connection; cheap to clone.
    pub handle: H,
    /// Resolves when the connection has ended, for whatever reason.
    /// Dropping it must close the connection: that is how the manager
    /// closes it on [`Shutdown`].
    pub closed: Pin<Box<dyn Future<Output = ()>>>,
}

/// Opens connections of one kind to one peer.
pub trait Connector: 'static {
    /// Given to subscribers while the connection is up.
    type Handle: Clone + Send + 'static;

    /// One connection attempt. The manager bounds it with its connect
    /// timeout (and drops it when that passes, failing the attempt with
    /// [`ConnectTimedOut`]), so it need not time out by itself.
    fn connect(&self) -> ConnectFuture<Self::Handle>;

    /// The peer, for log lines ("component bot.example at 10.0.0.1:5347").
    fn target(&self) -> String;
}

/// When and how often to try.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagerSettings {
    /// How long one attempt may take before it counts as failed.
    pub connect_timeout: Duration,
    /// Wait before reconnecting after a connection ends, and after the
    /// first failed attempt; doubled after each further failure.
    pub reconnect_after: Duration,
    /// The longest wait between attempts (before jitter).
    pub max_backoff: Duration,
    /// Each wait is varied at random by up to this fraction either way
    /// (0.2: ±20 %), so that many clients of one restarted server do not
    /// all come back at the same instant. Clamped to 0..=1.
    pub jitter: f64,
}

impl Default for ManagerSettings {
    fn default() -> Self {
        ManagerSettings {
            connect_timeout: Duration::from_secs(30),
            reconnect_after: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

impl ManagerSettings {
    /// The wait before the next attempt after `failures` attempts failed
    /// in a row (0 after a connection that ended), with `unit` in -1..=1
    /// picking the jitter. Saturates rather than overflows.
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let factor = 2u32.saturating_pow(failures.min(31));
        let base = self.reconnect_after.saturating_mul(factor).min(self.max_backoff);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let unit = if unit.is_finite() { unit.clamp(-1.0, 1.0) } else { 0.0 };
        Duration::try_from_secs_f64(base.as_secs_f64() * (1.0 + jitter * unit)).unwrap_or(base)
    }
}

/// The error of an attempt that took longer than
/// [`ManagerSettings::connect_timeout`]: the manager dropped it. It is
/// the inner error of the `io::Error` (of kind `TimedOut`) that
/// [`ConnectionEvent::AttemptFailed`] carries; [`ConnectTimedOut::of`]
/// finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("connect timed out after {0:?}")]
pub struct ConnectTimedOut(pub Duration);

impl ConnectTimedOut {
    /// The manager's timeout, if that is what failed the attempt (and not,
    /// say, a TCP connect that timed out by itself).
    pub fn of(err: &io::Error) -> Option<&ConnectTimedOut> {
        err.get_ref()?.downcast_ref::<ConnectTimedOut>()
    }
}

/// What subscribers are told.
pub enum ConnectionEvent<H> {
    /// The connection is up; use it through this handle.
    Connected(H),
    /// The connection is gone; the handle given with `Connected` no longer
    /// works. The manager is already trying again (unless shut down).
    Disconnected,
    /// An attempt to connect failed, with this error (the connector's, or
    /// [`ConnectTimedOut`]). The manager tries again after its backoff
    /// (unless shut down); nothing was connected, so no `Disconnected`
    /// follows.
    AttemptFailed(Arc<io::Error>),
}

impl<H: Clone> Clone for ConnectionEvent<H> {
    fn clone(&self) -> Self {
        match self {
            ConnectionEvent::Connected(h) => ConnectionEvent::Connected(h.clone()),
            ConnectionEvent::Disconnected => ConnectionEvent::Disconnected,
            ConnectionEvent::AttemptFailed(e) => ConnectionEvent::AttemptFailed(e.clone()),
        }
    }
}

impl<H> fmt::Debug for ConnectionEvent<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionEvent::Connected(_) => f.write_str("Connected(..)"),
            ConnectionEvent::Disconnected => f.write_str("Disconnected"),
            ConnectionEvent::AttemptFailed(e) => write!(f, "AttemptFailed({e})"),
        }
    }
}

impl<H: Send + 'static> Message for ConnectionEvent<H> {
    type Result = ();
}

/// Subscribes a recipient to [`ConnectionEvent`]s. A subscriber that has
/// stopped is forgotten.
pub struct Subscribe<H: Send + 'static>(pub Recipient<ConnectionEvent<H>>);

impl<H: Send + 'static> Message for Subscribe<H> {
    type Result = ();
}

/// The handle of the current connection, if there is one.
pub struct CurrentHandle<H>(PhantomData<fn() -> H>);

impl<H> CurrentHandle<H> {
    pub fn new() -> Self {
        CurrentHandle(PhantomData)
    }
}

impl<H> Default for CurrentHandle<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: 'static> Message for CurrentHandle<H> {
    type Result = Option<H>;
}

/// Stops the manager: no more attempts, the current connection (if any) is
/// closed and subscribers are told `Disconnected`. The actor then stops.
#[derive(Clone, Copy, Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

enum State<H> {
    /// An attempt is running.
    Connecting(SpawnHandle),
    /// Up; the spawned future resolves when the connection ends.
    Connected { handle: H, watch: SpawnHandle },
    /// Waiting before the next attempt.
    Waiting(SpawnHandle),
    /// Before `started`, and after shutdown.
    Idle,
}

/// Keeps one connection up: see the [module documentation](self).
///
/// ```ignore
/// let manager = ConnectionManager::new(connector, ManagerSettings::default()).start();
/// manager.do_send(Subscribe(my_actor.recipient()));
/// ```
pub struct ConnectionManager<C: Connector> {
    connector: C,
    settings: ManagerSettings,
    subscribers: Vec<Recipient<ConnectionEvent<C::Handle>>>,
    state: State<C::Handle>,
    /// Attempts failed in a row since the last connection.
    failures: u32,
    shut_down: bool,
    target: String,
}

// Nothing is pinned inside the actor; the handle type need not be Unpin.
impl<C: Connector> Unpin for ConnectionManager<C> {}

impl<C: Connector> ConnectionManager<C> {
    /// A manager that starts connecting when started.
    pub fn new(connector: C, settings: ManagerSettings) -> Self {
        let target = connector.target();
        ConnectionManager {
            connector,
            settings,
            subscribers: Vec::new(),
            state: State::Idle,
            failures: 0,
            shut_down: false,
            target,
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.shut_down {
            return;
        }
        log::debug!("{}: connecting", self.target);
        let attempt = self.connector.connect();
        let timeout = self.settings.connect_timeout;
        let bounded = async move {
            match actix_rt::time::timeout(timeout, attempt).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, ConnectTimedOut(timeout))),
            }
        };
        let spawned = ctx.spawn(
            bounded
                .into_actor(self)
                .map(|result, act, ctx| act.attempted(result, ctx)),
        );
        self.state = State::Connecting(spawned);
    }

    fn attempted(&mut self, result: io::Result<Connection<C::Handle>>, ctx: &mut Context<Self>) {
        if self.shut_down {
            // A late success is dropped, which closes it.
            return;
        }
        match result {
            Ok(Connection { handle, closed }) => {
                log::info!("{}: connected", self.target);
                self.failures = 0;
                let watch = ctx.spawn(closed.into_actor(self).map(|(), act, ctx| act.lost(ctx)));
                self.state = State::Connected {
                    handle: handle.clone(),
                    watch,
                };
                self.notify(ConnectionEvent::Connected(handle));
            }
            Err(e) => {
                let delay = self.settings.delay(self.failures, jitter_unit());
                self.failures = self.failures.saturating_add(1);
                log::warn!(
                    "{}: connection attempt {} failed: {e}; retrying in {delay:?}",
                    self.target,
                    self.failures
                );
                self.wait(delay, ctx);
                self.notify(ConnectionEvent::AttemptFailed(Arc::new(e)));
            }
        }
    }

    fn lost(&mut self, ctx: &mut Context<Self>) {
        if self.shut_down {
            return;
        }
        let delay = self.settings.delay(0, jitter_unit());
        // The wait after the next failure is the doubled one.
        self.failures = 1;
        log::warn!("{}: connection lost; reconnecting in {delay:?}", self.target);
        self.wait(delay, ctx);
        self.notify(ConnectionEvent::Disconnected);
    }

    fn wait(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        let spawned = ctx.run_later(delay, |act, ctx| act.connect(ctx));
        self.state = State::Waiting(spawned);
    }

    fn notify(&mut self, event: ConnectionEvent<C::Handle>) {
        self.subscribers.retain(|s| s.connected());
        for s in &self.subscribers {
            // do_send: an event is never dropped for a full mailbox.
            s.do_send(event.clone());
        }
    }
}

/// A uniform pick in -1..=1.
fn jitter_unit() -> f64 {
    use rand::Rng;
    rand::rng().random_range(-1.0..=1.0)
}

impl<C: Connector> Actor for ConnectionManager<C> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.connect(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.shut_down = true;
        // Stopped for whatever reason (Shutdown, the system going down):
        // whoever holds the handle must learn it is dead.
        if let State::Connected { .. } = std::mem::replace(&mut self.state, State::Idle) {
            self.notify(ConnectionEvent::Disconnected);
        }
        log::debug!("{}: connection manager stopped", self.target);
    }
}

impl<C: Connector> Handler<Subscribe<C::Handle>> for ConnectionManager<C> {
    type Result = ();

    fn handle(&mut self, msg: Subscribe<C::Handle>, _ctx: &mut Context<Self>) {
        if let State::Connected { handle, .. } = &self.state {
            msg.0.do_send(ConnectionEvent::Connected(handle.clone()));
        }
        self.subscribers.push(msg.0);
    }
}

impl<C: Connector> Handler<CurrentHandle<C::Handle>> for ConnectionManager<C> {
    type Result = Option<C::Handle>;

    fn handle(&mut self, _msg: CurrentHandle<C::Handle>, _ctx: &mut Context<Self>) -> Option<C::Handle> {
        match &self.state {
            State::Connected { handle, .. } => Some(handle.clone()),
            _ => None,
        }
    }
}

impl<C: Connector> Handler<Shutdown> for ConnectionManager<C> {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Context<Self>) {
        log::info!("{}: shutting down", self.target);
        self.shut_down = true;
        let was_connected = match std::mem::replace(&mut self.state, State::Idle) {
            State::Connecting(spawned) | State::Waiting(spawned) => {
                ctx.cancel_future(spawned);
                false
            }
            // Cancelling drops the `closed` future, which closes the connection.
            State::Connected { watch, .. } => {
                ctx.cancel_future(watch);
                true
            }
            State::Idle => false,
        };
        if was_connected {
            self.notify(ConnectionEvent::Disconnected);
        }
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;
    use std::time::Instant;
    use tokio::sync::{mpsc, oneshot};

    const WAIT: Duration = Duration::from_secs(10);

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Outcome {
        Fail,
        Succeed,
        /// Never completes: only the connect timeout ends it.
        Hang,
    }

    #[derive(Default)]
    struct Script {
        outcomes: VecDeque<Outcome>,
        attempts: Vec<Instant>,
        /// Ends connection n when dropped or sent to (n = its attempt).
        enders: Vec<(u32, oneshot::Sender<()>)>,
        /// Connections whose `closed` future was dropped.
        closed: Vec<u32>,
    }

    /// Connects according to a script; the handle is the attempt's number.
    struct Fake {
        script: Rc<RefCell<Script>>,
        attempts: mpsc::UnboundedSender<u32>,
    }

    struct DropFlag(u32, Rc<RefCell<Script>>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.1.borrow_mut().closed.push(self.0);
        }
    }

    impl Connector for Fake {
        type Handle = u32;

        fn connect(&self) -> ConnectFuture<u32> {
            let mut script = self.script.borrow_mut();
            script.attempts.push(Instant::now());
            let n = script.attempts.len() as u32;
            let outcome = script.outcomes.pop_front().unwrap_or(Outcome::Fail);
            let _ = self.attempts.send(n);
            match outcome {
                Outcome::Fail => Box::pin(async { Err(io::ErrorKind::ConnectionRefused.into()) }),
                Outcome::Hang => Box::pin(std::future::pending()),
                Outcome::Succeed => {
                    let (tx, rx) = oneshot::channel();
                    script.enders.push((n, tx));
                    let flag = DropFlag(n, self.script.clone());
                    let closed = Box::pin(async move {
                        let _flag = flag;
                        let _ = rx.await;
                    });
                    Box::pin(async move { Ok(Connection { handle: n, closed }) })
                }
            }
        }

        fn target(&self) -> String {
            "fake".into()
        }
    }

    struct Recorder(mpsc::UnboundedSender<ConnectionEvent<u32>>);

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<ConnectionEvent<u32>> for Recorder {
        type Result = ();
        fn handle(&mut self, msg: ConnectionEvent<u32>, _ctx: &mut Context<Self>) {
            let _ = self.0.send(msg);
        }
    }

    fn fast() -> ManagerSettings {
        ManagerSettings {
            connect_timeout: Duration::from_millis(50),
            reconnect_after: Duration::from_millis(5),
            max_backoff: Duration::from_secs(1),
            jitter: 0.0,
        }
    }

    struct Rig {
        script: Rc<RefCell<Script>>,
        attempts: mpsc::UnboundedReceiver<u32>,
        manager: Addr<ConnectionManager<Fake>>,
    }

    fn rig(outcomes: &[Outcome], settings: ManagerSettings) -> Rig {
        let script = Rc::new(RefCell::new(Script {
            outcomes: outcomes.iter().copied().collect(),
            ..Script::default()
        }));
        let (tx, attempts) = mpsc::unbounded_channel();
        let fake = Fake {
            script: script.clone(),
            attempts: tx,
        };
        let manager = ConnectionManager::new(fake, settings).start();
        Rig {
            script,
            attempts,
            manager,
        }
    }

    fn subscribe(manager: &Addr<ConnectionManager<Fake>>) -> mpsc::UnboundedReceiver<ConnectionEvent<u32>> {
        let (tx, rx) = mpsc::unbounded_channel();
        manager.do_send(Subscribe(Recorder(tx).start().recipient()));
        rx
    }

    async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("timed out")
            .expect("channel closed")
    }

    fn end_connection(script: &Rc<RefCell<Script>>, n: u32) {
        let mut s = script.borrow_mut();
        let i = s.enders.iter().position(|(m, _)| *m == n).expect("no such connection");
        let (_, tx) = s.enders.remove(i);
        let _ = tx.send(());
    }

    /// The error of an `AttemptFailed`, or a panic.
    fn failure(event: ConnectionEvent<u32>) -> Arc<io::Error> {
        match event {
            ConnectionEvent::AttemptFailed(e) => e,
            other => panic!("expected AttemptFailed, got {other:?}"),
        }
    }

    async fn wait_stopped(manager: &Addr<ConnectionManager<Fake>>) {
        let deadline = Instant::now() + WAIT;
        while manager.connected() {
            assert!(Instant::now() < deadline, "the manager did not stop");
            actix_rt::task::yield_now().await;
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_and_jitter_stays_in_bounds() {
        let s = ManagerSettings::default();
        let secs = |n| s.delay(n, 0.0).as_secs();
        assert_eq!([secs(0), secs(1), secs(2), secs(3), secs(4)], [2, 4, 8, 16, 32]);
        assert_eq!(secs(5), 60);
        assert_eq!(secs(u32::MAX), 60);
        assert_eq!(s.delay(0, 1.0), Duration::from_millis(2400));
        assert_eq!(s.delay(0, -1.0), Duration::from_millis(1600));
        // Out-of-range picks and settings are clamped, never a panic.
        assert_eq!(s.delay(0, 7.0), Duration::from_millis(2400));
        assert_eq!(s.delay(0, f64::NAN), Duration::from_secs(2));
        let wild = ManagerSettings {
            jitter: f64::INFINITY,
            max_backoff: Duration::MAX,
            reconnect_after: Duration::MAX,
            ..ManagerSettings::default()
        };
        assert_eq!(wild.delay(40, 1.0), Duration::MAX);
        let huge = ManagerSettings {
            jitter: 5.0,
            ..ManagerSettings::default()
        };
        assert_eq!(huge.delay(0, -1.0), Duration::ZERO);
        for _ in 0..100 {
            let d = s.delay(1, jitter_unit());
            assert!(
                d >= Duration::from_millis(3200) && d <= Duration::from_millis(4800),
                "{d:?}"
            );
        }
    }

    #[actix_rt::test]
    async fn connects_after_failures() {
        let mut r = rig(&[Outcome::Fail, Outcome::Fail, Outcome::Succeed], fast());
        // Subscribed before the first attempt ends: every failure is told.
        let mut events = subscribe(&r.manager);
        for _ in 0..2 {
            let e = failure(next(&mut events).await);
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
            assert!(ConnectTimedOut::of(&e).is_none());
        }
        assert!(matches!(next(&mut events).await, ConnectionEvent::Connected(3)));
        assert_eq!(r.script.borrow().attempts.len(), 3);
        assert_eq!(r.manager.send(CurrentHandle::new()).await.unwrap(), Some(3));
        for n in 1..=3 {
            assert_eq!(next(&mut r.attempts).await, n);
        }
    }

    #[actix_rt::test]
    async fn a_hung_attempt_times_out_and_is_retried() {
        let r = rig(&[Outcome::Hang, Outcome::Succeed], fast());
        let mut events = subscribe(&r.manager);
        // The manager's own timeout, said as such.
        let e = failure(next(&mut events).await);
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            ConnectTimedOut::of(&e),
            Some(&ConnectTimedOut(Duration::from_millis(50)))
        );
        assert_eq!(e.to_string(), "connect timed out after 50ms");
        assert!(matches!(next(&mut events).await, ConnectionEvent::Connected(2)));
        // A connector's own timeout is not the manager's.
        let own = io::Error::new(io::ErrorKind::TimedOut, "tcp connect timed out");
        assert!(ConnectTimedOut::of(&own).is_none());
    }

    #[actix_rt::test]
    async fn backoff_grows_and_resets_after_a_connection() {
        use Outcome::*;
        let settings = ManagerSettings {
            reconnect_after: Duration::from_millis(20),
            ..fast()
        };
        let r = rig(&[Fail, Fail, Fail, Fail, Succeed, Succeed], settings);
        let mut events = subscribe(&r.manager);
        for _ in 0..4 {
            failure(next(&mut events).await);
        }
        assert!(matches!(next(&mut events).await, ConnectionEvent::Connected(5)));
        {
            let s = r.script.borrow();
            let gaps: Vec<Duration> = s.attempts.windows(2).map(|w| w[1] - w[0]).collect();
            for (gap, at_least) in gaps.iter().zip([20, 40, 80, 160]) {
                assert!(*gap >= Duration::from_millis(at_least), "{gaps:?}");
            }
        }
        let lost_at = Instant::now();
        end_connection(&r.script, 5);
        assert!(matches!(next(&mut events).await, ConnectionEvent::Disconnected));
        assert!(matches!(next(&mut events).await, ConnectionEvent::Connected(6)));
        // Back to the first wait (20 ms), not the next doubling (320 ms).
        let gap = r.script.borrow().attempts[5] - lost_at;
        assert!(
            gap >= Duration::from_millis(20) && gap < Duration::from_millis(250),
            "{gap:?}"
        );
    }

    #[actix_rt::test]
    async fn a_late_subscriber_is_told_at_once() {
        let r = rig(&[Outcome::Succeed], fast());
        let mut first = subscribe(&r.manager);
        assert!(matches!(next(&mut first).await, ConnectionEvent::Connected(1)));
        let mut late = subscribe(&r.manager);
        assert!(matches!(next(&mut late).await, ConnectionEvent::Connected(1)));
        // Both hear of the disconnection.
        end_connection(&r.script, 1);
        assert!(matches!(next(&mut first).await, ConnectionEvent::Disconnected));
        assert!(matches!(next(&mut late).await, ConnectionEvent::Disconnected));
    }

    #[actix_rt::test]
    async fn disconnection_then_reconnection() {
        let r = rig(&[Outcome::Succeed, Outcome::Fail, Outcome::Succeed], fast());
        let mut events = subscribe(&r.manager);
        assert!(matches!(next(&mut events).await, ConnectionEvent::Connected(1)));
        end_connection(&r.script, 1);
        assert!(matches!(next(&mut events).await, ConnectionEvent::Disconnected));
        assert_eq!(r.manager.send(CurrentHandle::new()).await.unwrap(), None);
        // Attempt 2 fails: told, with no second Disconnected.
        failure(next(&mut events).await);
        assert!(matches!(next(&mut events).await, ConnectionEvent::Connected(3)));
        assert_eq!(r.manager.send(CurrentHandle::new()).await.unwrap(), Some(3));
    }

    #[actix_rt::test]
    async fn shutdown_while_waiting_stops_retrying() {
        let mut r = rig(
            &[],
            ManagerSettings {
                reconnect_after: Duration::from_millis(30),
                ..fast()
            },
        );
        assert_eq!(next(&mut r.attempts).await, 1);
        r.manager.do_send(Shutdown);
        wait_stopped(&r.manager).await;
        // A stopped actor has no timers left: the count is final.
        assert_eq!(r.script.borrow().attempts.len(), 1);
    }

    #[actix_rt::test]
    async fn an_attempt_cut_short_by_shutdown_is_not_told() {
        let settings = ManagerSettings {
            connect_timeout: WAIT,
            ..fast()
        };
        let mut r = rig(&[Outcome::Hang], settings);
        let mut events = subscribe(&r.manager);
        assert_eq!(next(&mut r.attempts).await, 1);
        r.manager.do_send(Shutdown);
        wait_stopped(&r.manager).await;
        // Neither a failure nor a disconnection: nothing was connected,
        // and nothing failed by itself.
        assert!(events.try_recv().is_err());
    }

    #[actix_rt::test]
    async fn shutdown_while_connected_closes_and_tells_subscribers() {
        let r = rig(&[Outcome::Succeed], fast());
        let mut events = subscribe(&r.manager);
        assert!(matches!(next(&mut events).await, ConnectionEvent::Connected(1)));
        r.manager.do_send(Shutdown);
        assert!(matches!(next(&mut events).await, ConnectionEvent::Disconnected));
        wait_stopped(&r.manager).await;
        assert_eq!(r.script.borrow().closed, vec![1]);
        assert_eq!(r.script.borrow().attempts.len(), 1);
        // Exactly one Disconnected: `stopped` does not repeat it.
        assert!(events.try_recv().is_err());
    }
}
