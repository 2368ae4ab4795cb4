//! The archive writer: group commit for XEP-0313. Every message is
//! archived before it is delivered, so the archive is written once per
//! message; one transaction (and, with `durability = "full"`, one fsync)
//! per message would cap the server at the disk's sync rate. Instead one
//! thread with a connection of its own takes every job queued, waits up to
//! a millisecond for more while others are writing too, writes them all in
//! one transaction, commits, and only then tells each job it is done, in
//! the order they were queued: each sender's message is delivered only
//! once its group has committed.
//!
//! The queue is bounded: a job takes a place (an async semaphore, as the
//! store threads' queue does) before it is queued, and gives it back once
//! done, so callers wait without blocking an event loop and memory stays
//! bounded. A job that finds a place free, with nobody waiting for one, is
//! queued at once, when `archive` is called; otherwise it waits its turn
//! behind those waiting already. Either way, on one thread, jobs reach the
//! writer in the order of the calls.
//!
//! The retention's purges go through the same thread, a chunk between two
//! groups, so that deleting a long-due backlog never holds up messages.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_actors::metrics::{StorageOp, StorageTimer};
use shoal_actors::storage::{StorageError, StorageFuture};
use shoal_actors::xep::mam::ArchiveRow;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::store::{SqliteStore, StoreError};

/// Jobs queued or being written, at most; more wait for a place.
pub const ARCHIVE_QUEUE: usize = 4096;
/// Jobs in one transaction, at most.
const MAX_GROUP: usize = 512;
/// A group smaller than this waits for more, up to [`GATHER`], while
/// others are writing too (the last group had several jobs, or this one
/// has). A lone message on a quiet server is committed at once.
const SMALL_GROUP: usize = 64;
const GATHER: Duration = Duration::from_millis(1);
/// Expired messages deleted per transaction.
const PURGE_CHUNK: usize = 1000;

enum Work {
    /// One message's rows.
    Archive(Vec<ArchiveRow>),
    /// Forget what was received before this time (ms since the epoch).
    Purge(i64),
}

struct Job {
    work: Work,
    done: oneshot::Sender<Result<(), StorageError>>,
    /// Given back when the job is dropped, once answered.
    _place: OwnedSemaphorePermit,
}

/// The handle to the writer thread; the thread ends when the last one goes.
#[derive(Clone)]
pub struct ArchiveWriter {
    queue: SyncSender<Job>,
    places: Arc<Semaphore>,
    /// Jobs that found no place and are waiting for one: while there are
    /// any, a new job waits behind them rather than take a place freed
    /// before they got to it.
    waiting: Arc<AtomicUsize>,
}

/// One job waiting for a place, counted until it has one (or is dropped).
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn new(count: &Arc<AtomicUsize>) -> Waiting {
        count.fetch_add(1, Ordering::AcqRel);
        Waiting(count.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ArchiveWriter {
    /// Starts the writer thread on `store`, a connection of its own, and
    /// the checkpointing thread on `checkpoints`, another.
    pub fn start(mut store: SqliteStore, mut checkpoints: SqliteStore) -> Result<ArchiveWriter, StoreError> {
        store.tune_for_archive()?;
        let (queue, jobs) = mpsc::sync_channel(ARCHIVE_QUEUE);
        let (committed, commits) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("shoal-checkpoint".into())
            .spawn(move || checkpoint(&mut checkpoints, commits))
            .map_err(StoreError::Thread)?;
        std::thread::Builder::new()
            .name("shoal-archive".into())
            .spawn(move || run(store, jobs, committed))
            .map_err(StoreError::Thread)?;
        Ok(ArchiveWriter {
            queue,
            places: Arc::new(Semaphore::new(ARCHIVE_QUEUE)),
            waiting: Arc::default(),
        })
    }

    /// Archives one message's rows; done once they are committed.
    pub fn archive(&self, rows: Vec<ArchiveRow>) -> StorageFuture<()> {
        self.submit(Work::Archive(rows), StorageTimer::start(StorageOp::Archive))
    }

    /// Deletes what was received before `before_ms`; done once all is gone.
    pub fn purge(&self, before_ms: i64) -> StorageFuture<()> {
        self.submit(Work::Purge(before_ms), StorageTimer::start(StorageOp::PurgeArchive))
    }

    /// Queues `work`; `timer` runs until it is done.
    fn submit(&self, work: Work, timer: StorageTimer) -> StorageFuture<()> {
        // Queued now, in the order of the calls, when a place is free and
        // no job is waiting for one.
        if self.waiting.load(Ordering::Acquire) == 0 {
            match self.places.clone().try_acquire_owned() {
                Ok(place) => {
                    let done = self.send(work, place);
                    return Box::pin(timer.time(async move { done?.await.map_err(|_| StorageError::Unavailable)? }));
                }
                Err(TryAcquireError::Closed) => {
                    return Box::pin(timer.time(std::future::ready(Err::<(), _>(StorageError::Unavailable))))
                }
                Err(TryAcquireError::NoPermits) => {}
            }
        }
        // Otherwise in turn: the semaphore serves its waiters in order, and
        // one thread's futures first ask in the order they were made.
        let waiting = Waiting::new(&self.waiting);
        let this = self.clone();
        Box::pin(timer.time(async move {
            let place = this.places.clone().acquire_owned().await;
            drop(waiting);
            let place = place.map_err(|_| StorageError::Unavailable)?;
            this.send(work, place)?.await.map_err(|_| StorageError::Unavailable)?
        }))
    }

    fn send(
        &self,
        work: Work,
        place: OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<Result<(), StorageError>>, StorageError> {
        let (done, answer) = oneshot::channel();
        // Never full: each job queued holds one of as many places as the
        // channel has room for. An error means the writer is gone.
        self.queue
            .try_send(Job {
                work,
                done,
                _place: place,
            })
            .map_err(|_| StorageError::Unavailable)?;
        Ok(answer)
    }
}

/// Copies the WAL back into the database, beside the writer rather than
/// in its way: a checkpoint at a commit (SQLite's default) holds that
/// group, and every message waiting behind it, for as long as it takes.
/// A passive checkpoint at most every [`CHECKPOINT_EVERY`] while groups
/// are being committed; it ends when the writer does.
fn checkpoint(store: &mut SqliteStore, commits: Receiver<()>) {
    while commits.recv().is_ok() {
        if let Err(e) = store.checkpoint() {
            log::warn!("archive: checkpoint: {e}");
        }
        std::thread::sleep(CHECKPOINT_EVERY);
    }
}

/// How often the WAL is checkpointed, at most, under load.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The writer thread; `committed` tells the checkpointer of each commit.
fn run(mut store: SqliteStore, jobs: Receiver<Job>, committed: SyncSender<()>) {
    // Archived times never go back (see migration 7).
    let mut clock = store.last_archive_ts().unwrap_or_else(|e| {
        log::error!("archive: {e}");
        0
    });
    let mut purge: Option<i64> = None;
    let mut purged = 0usize;
    let mut purge_waiters: Vec<Job> = Vec::new();
    let mut last_group = 0;
    loop {
        let mut group = Vec::new();
        // With a purge under way, only what is queued: the purge goes on.
        if purge.is_none() {
            match jobs.recv() {
                Ok(job) => group.push(job),
                Err(_) => return,
            }
        }
        gather(&jobs, &mut group, last_group > 1);
        last_group = group.len();
        let mut messages = Vec::with_capacity(group.len());
        for job in group {
            let cut = match job.work {
                Work::Purge(before) => Some(before),
                Work::Archive(_) => None,
            };
            match cut {
                Some(before) => {
                    purge = Some(purge.map_or(before, |p| p.max(before)));
                    purge_waiters.push(job);
                }
                None => messages.push(job),
            }
        }
        if !messages.is_empty() {
            write(&mut store, &mut clock, messages);
            // Full: one is pending already, and will see this commit too.
            let _ = committed.try_send(());
        }
        if let Some(before) = purge {
            let outcome = match store.purge_archive_chunk(before, PURGE_CHUNK) {
                // More to do, after the next group.
                Ok(n) if n == PURGE_CHUNK => {
                    purged += n;
                    continue;
                }
                Ok(n) => {
                    purged += n;
                    if purged > 0 {
                        log::info!("archive: {purged} messages past their retention deleted");
                    }
                    Ok(())
                }
                Err(e) => {
                    log::error!("archive: cannot delete expired messages: {e}");
                    Err(StorageError::from(e))
                }
            };
            for job in purge_waiters.drain(..) {
                let answer = match &outcome {
                    Ok(()) => Ok(()),
                    Err(e) => Err(StorageError::Backend(e.to_string())),
                };
                let _ = job.done.send(answer);
            }
            purge = None;
            purged = 0;
        }
    }
}

/// Adds to `group` whatever else is queued, waiting up to [`GATHER`] for
/// more while the group is small and others are writing too (`busy`).
fn gather(jobs: &Receiver<Job>, group: &mut Vec<Job>, busy: bool) {
    let deadline = Instant::now() + GATHER;
    while group.len() < MAX_GROUP {
        match jobs.try_recv() {
            Ok(job) => {
                group.push(job);
                continue;
            }
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => {}
        }
        let waits = !group.is_empty() && group.len() < SMALL_GROUP && (busy || group.len() > 1);
        let now = Instant::now();
        if !waits || now >= deadline {
            return;
        }
        match jobs.recv_timeout(deadline - now) {
            Ok(job) => group.push(job),
            Err(_) => return,
        }
    }
}

/// Writes one group in one transaction, then answers its jobs in order.
fn write(store: &mut SqliteStore, clock: &mut i64, messages: Vec<Job>) {
    shoal_actors::metrics::archive_group(messages.len());
    let rows: Vec<&[ArchiveRow]> = messages
        .iter()
        .map(|job| match &job.work {
            Work::Archive(rows) => rows.as_slice(),
            Work::Purge(_) => &[],
        })
        .collect();
    let written = store.archive_group(clock, &rows);
    drop(rows);
    match written {
        Ok(each) => {
            for (job, result) in messages.into_iter().zip(each) {
                if let Err(e) = &result {
                    log::error!("archive: cannot archive a message: {e}");
                }
                let _ = job.done.send(result.map_err(StorageError::from));
            }
        }
        Err(e) => {
            log::error!("archive: cannot commit {} messages: {e}", messages.len());
            for job in messages {
                let _ = job.done.send(Err(StorageError::Backend(e.to_string())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_actors::jid::{BareJid, Jid};
    use shoal_actors::sasl::Credentials;
    use shoal_actors::xep::mam::{ArchiveQuery, DefaultPolicy, Direction};

    fn row(owner: &str, id: &str, ts_ms: i64) -> ArchiveRow {
        ArchiveRow {
            owner: BareJid::new(owner, "localhost").unwrap(),
            id: id.into(),
            ts_ms,
            with: Jid::parse("romeo@localhost/orchard").unwrap(),
            direction: Direction::In,
            xml: format!("<message><body>{id}</body></message>"),
            default: DefaultPolicy::Always,
        }
    }

    /// Many messages from many tasks at once: each is committed, in the
    /// order queued, in fewer transactions than messages; times never
    /// go back even when the clock does.
    #[test]
    fn groups_commit_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let juliet = BareJid::new("juliet", "localhost").unwrap();
        store.create_user(&juliet, &Credentials::derive("pw", 4096)).unwrap();
        let writer =
            ArchiveWriter::start(SqliteStore::open(&path).unwrap(), SqliteStore::open(&path).unwrap()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            // Queued in this order by the calls; the later ones older.
            let futures: Vec<_> = (0..300)
                .map(|i| writer.archive(vec![row("juliet", &format!("m{i}"), 1000 - i)]))
                .collect();
            for f in futures {
                f.await.unwrap();
            }
            // Nobody there: nothing written, and no error.
            writer.archive(vec![row("nobody", "x", 5)]).await.unwrap();
        });
        let q = ArchiveQuery {
            max: 1000,
            ..ArchiveQuery::default()
        };
        let page = store.archive_query(&juliet, &q).unwrap().unwrap();
        let ids: Vec<String> = page.messages.iter().map(|m| m.id.clone()).collect();
        let expected: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
        assert_eq!(ids, expected);
        assert!(page.messages.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
        assert_eq!(page.messages[0].ts_ms, 1000);
        runtime.block_on(async { writer.purge(1001).await.unwrap() });
        assert_eq!(store.archive_query(&juliet, &q).unwrap().unwrap().count, 0);
    }
}
