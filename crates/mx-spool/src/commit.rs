//! Group commit: many stores and removals share the flushes that make them durable.
//!
//! [`Spool::store`](crate::Spool::store) pays two disk flushes per message (the file, then
//! `queue/`). Under load a [`Committer`] does the same work for a whole batch with one
//! flush in all ([`SyncMode::Filesystem`], the default) or one per file and one for
//! `queue/` ([`SyncMode::Files`]). One thread takes every request waiting in its channel
//! (no waiting to fill a batch: while one batch is on its way to the disk, the next one
//! gathers), and for that batch:
//!
//! 1. writes every message file (under `tmp/` or over a spare file), not yet flushed, and
//!    moves the files of each removal out of `queue/` (to `spare/`);
//! 2. [`SyncMode::Files`] only: fsyncs each new file;
//! 3. renames each new file into `queue/`;
//! 4. flushes: [`SyncMode::Filesystem`] one `syncfs(2)` of the spool's file system, which
//!    makes every file's contents and every rename and removal of the batch durable at once;
//!    [`SyncMode::Files`] one fsync of `queue/`, for the renames and removals;
//! 5. only then completes each request: every 250 still waits for the flush that covers its
//!    own message.
//!
//! With one flush, a file's name can reach the disk before its contents do (a journal
//! commit of the rename ahead of the data), so a power loss before the flush returned can
//! leave in `queue/` a file whose bytes are short, zero, or an older message's (new files
//! are written over removed ones). None of those messages was acknowledged, and none can be
//! mistaken for mail: the length and id checks at open and the checksum at every read
//! (`format.rs`) put such a file in `quarantine/`. Two flushes per batch (content, then
//! names) were measured against one: the second cost a journal commit of its own, which
//! showed in the accept latency (bench/README.md).
//!
//! When it has nothing to do, the committer keeps a stock of spare files (see `file.rs`) so
//! that a burst of new messages writes over existing files instead of creating them on the
//! way to their 250.

use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use tracing::warn;

use crate::error::io_error;
use crate::{Envelope, FileSpool, QueueId, SpoolError};

/// How a batch is made durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// Renames first, then one `syncfs(2)` of the spool's file system for the whole batch,
    /// contents and names together: the fewest journal commits. It also flushes whatever
    /// else is dirty on that file system, so a spool on a file system of its own gives the
    /// steadiest latency.
    #[default]
    Filesystem,
    /// One `fsync(2)` per file before its rename, then one of `queue/`: nothing else on the
    /// file system is flushed, at the price of (on ext4) about one journal commit per file.
    Files,
}

/// Called once with the outcome of a request, from the committer's thread. It must not
/// block (send on a channel, wake a task).
pub type Done<T> = Box<dyn FnOnce(Result<T, SpoolError>) + Send>;

/// Called from the committer's thread with a new message's id once its file is written
/// (and, in [`SyncMode::Files`], flushed), just before the rename that makes it visible in
/// `queue/`. It must not block.
pub type Named = Box<dyn FnOnce(&QueueId) + Send>;

enum Job {
    Store {
        envelope: Envelope,
        body: Arc<Vec<u8>>,
        named: Option<Named>,
        done: Done<QueueId>,
    },
    Remove {
        id: QueueId,
        untried: bool,
        done: Done<()>,
    },
}

/// The most requests one batch takes; the rest wait for the next (bounds the time between
/// a request and its flush when thousands arrive at once).
const MAX_BATCH: usize = 256;

/// A group-commit writer over a [`FileSpool`]: see the module documentation. Dropping it
/// finishes the requests already submitted, then stops its thread.
pub struct Committer {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the committer's thread. `min_free_bytes` (0: no check) refuses a batch's new
    /// messages with [`SpoolError::NoSpace`] when the spool's file system has less free
    /// space than that.
    pub fn start(
        spool: Arc<FileSpool>,
        mode: SyncMode,
        min_free_bytes: u64,
    ) -> Result<Committer, SpoolError> {
        spool.check_writable()?;
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || {
                loop {
                    let first = match rx.try_recv() {
                        Ok(job) => job,
                        Err(mpsc::TryRecvError::Disconnected) => break,
                        // Idle: make a spare file now rather than create one on the way to
                        // a 250 (one at a time, so a request waits for one at most).
                        Err(mpsc::TryRecvError::Empty) if spool.wants_spare() => {
                            spool.make_spare();
                            continue;
                        }
                        Err(mpsc::TryRecvError::Empty) => match rx.recv() {
                            Ok(job) => job,
                            Err(_) => break,
                        },
                    };
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    commit(&spool, mode, min_free_bytes, batch);
                }
            })
            .map_err(|e| io_error(&PathBuf::from("spool-commit thread"), e))?;
        Ok(Committer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Stores a message like [`Spool::store`](crate::Spool::store), in the next batch.
    /// `done` gets the new id once the message is durable, or the error (nothing of the
    /// message is left then).
    pub fn store(&self, envelope: Envelope, body: Arc<Vec<u8>>, done: Done<QueueId>) {
        self.send(Job::Store {
            envelope,
            body,
            named: None,
            done,
        });
    }

    /// [`Committer::store`], and `named` gets the new id before the message appears in
    /// `queue/` (so before any scan of the queue can see it), which lets a caller hand the
    /// message to others under its id ahead of every reader of the spool. If `done` then
    /// gets an error, the message was never acknowledged: the caller takes back what it
    /// handed over.
    pub fn store_named(
        &self,
        envelope: Envelope,
        body: Arc<Vec<u8>>,
        named: Named,
        done: Done<QueueId>,
    ) {
        self.send(Job::Store {
            envelope,
            body,
            named: Some(named),
            done,
        });
    }

    /// Removes a message like [`Spool::remove`](crate::Spool::remove), in the next batch.
    pub fn remove(&self, id: QueueId, done: Done<()>) {
        self.send(Job::Remove {
            id,
            untried: false,
            done,
        });
    }

    /// [`Committer::remove`] for a message the caller knows has no state file (it was
    /// never tried before the run that delivered it, and only that run wrote to it): the
    /// state file's rename, which would fail, is not attempted.
    pub fn remove_untried(&self, id: QueueId, done: Done<()>) {
        self.send(Job::Remove {
            id,
            untried: true,
            done,
        });
    }

    fn send(&self, job: Job) {
        let Some(tx) = &self.tx else { return };
        if let Err(mpsc::SendError(job)) = tx.send(job) {
            // The thread is gone (it only ends when the sender is dropped, or by a panic).
            let gone = || {
                io_error(
                    &PathBuf::from("spool-commit thread"),
                    io::Error::other("stopped"),
                )
            };
            match job {
                Job::Store { done, .. } => done(Err(gone())),
                Job::Remove { done, .. } => done(Err(gone())),
            }
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

/// A message written under `tmp/`, waiting for its flush and rename.
struct Written {
    id: QueueId,
    path: PathBuf,
    file: Option<File>,
    named: Option<Named>,
    done: Done<QueueId>,
}

fn commit(spool: &FileSpool, mode: SyncMode, min_free_bytes: u64, batch: Vec<Job>) {
    let low_space = min_free_bytes > 0
        && batch.iter().any(|j| matches!(j, Job::Store { .. }))
        && match spool.free_bytes() {
            Ok(free) => free < min_free_bytes,
            Err(e) => {
                warn!(error = %e, "spool: cannot read the free space");
                false
            }
        };
    let mut written: Vec<Written> = Vec::new();
    let mut removed: Vec<Done<()>> = Vec::new();
    let mut spares = Vec::new();
    for job in batch {
        match job {
            Job::Store {
                envelope,
                body,
                named,
                done,
            } => {
                if low_space {
                    done(Err(SpoolError::NoSpace));
                    continue;
                }
                match spool.write_tmp(envelope, &body) {
                    Ok((id, path, file)) => written.push(Written {
                        id,
                        path,
                        file: Some(file),
                        named,
                        done,
                    }),
                    Err(e) => done(Err(e)),
                }
            }
            Job::Remove { id, untried, done } => match spool.retire(&id, untried) {
                Ok(names) => {
                    spares.extend(names);
                    removed.push(done);
                }
                Err(e) => done(Err(e)),
            },
        }
    }

    let fail = |w: Written, e: SpoolError| {
        drop(w.file);
        crate::file::remove_quietly(&w.path);
        (w.done)(Err(e));
    };
    if mode == SyncMode::Files {
        // Step 2: each file's contents and size reach the disk before its name can.
        let mut kept = Vec::with_capacity(written.len());
        for w in written.drain(..) {
            match w.file.as_ref().map_or(Ok(()), File::sync_all) {
                Ok(()) => kept.push(w),
                Err(e) => {
                    let e = io_error(&w.path, e);
                    fail(w, e);
                }
            }
        }
        written = kept;
    }

    // Step 3: the renames (the removals' moves are done already). Filesystem mode keeps the
    // files open: syncfs on the first reports any write-back error since it was opened.
    let mut renamed = Vec::with_capacity(written.len());
    for mut w in written {
        if mode == SyncMode::Files {
            drop(w.file.take());
        }
        if let Some(named) = w.named.take() {
            named(&w.id);
        }
        let to = spool.msg_path(&w.id);
        match fs::rename(&w.path, &to) {
            Ok(()) => renamed.push(w),
            Err(e) => fail(w, io_error(&to, e)),
        }
    }
    if renamed.is_empty() && removed.is_empty() {
        return;
    }

    // Step 4: the batch's one flush (two in Files mode, counting step 2).
    let first_file = renamed.first().and_then(|w| w.file.as_ref());
    let flushed = match (mode, first_file) {
        (SyncMode::Filesystem, Some(file)) => rustix::fs::syncfs(file)
            .map_err(|e| io_error(&spool.root().join("queue"), io::Error::from(e))),
        // Removals only, or Files mode: the names are all that is left to flush.
        _ => spool.sync_queue_dir(),
    };
    for w in &mut renamed {
        drop(w.file.take());
    }
    match flushed {
        Ok(()) => {
            spool.recycle(spares);
            for w in renamed {
                (w.done)(Ok(w.id));
            }
            for done in removed {
                done(Ok(()));
            }
        }
        Err(e) => {
            // None of these is acknowledged: take the messages back (best effort; one that
            // survives a crash anyway is delivered, and the client's retry makes a
            // duplicate, never a loss). A removal may or may not persist: it reports the
            // error, and a message that comes back is delivered again, never lost.
            for w in &renamed {
                crate::file::remove_quietly(&spool.msg_path(&w.id));
            }
            if !renamed.is_empty() {
                let _ = spool.sync_queue_dir();
            }
            for w in renamed {
                (w.done)(Err(replicate(&e)));
            }
            for done in removed {
                done(Err(replicate(&e)));
            }
        }
    }
}

/// The same error again, for each request of a failed batch.
fn replicate(e: &SpoolError) -> SpoolError {
    match e {
        SpoolError::NoSpace => SpoolError::NoSpace,
        SpoolError::Io { path, source } => SpoolError::Io {
            path: path.clone(),
            source: io::Error::new(source.kind(), source.to_string()),
        },
        other => SpoolError::Io {
            path: PathBuf::new(),
            source: io::Error::other(other.to_string()),
        },
    }
}
