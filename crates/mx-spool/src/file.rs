//! The embedded backend: plain files in one directory tree.
//!
//! ```text
//! <root>/VERSION        "mxroute-spool 2\n" (a version 1 spool is upgraded at open)
//! <root>/lock           held with flock(2) while a FileSpool has the spool open
//! <root>/tmp/           files being written; anything here at open was never acknowledged
//! <root>/queue/<id>.msg    the message (see the `format` module), written once
//! <root>/queue/<id>.state  delivery state JSON; absent means "initial"
//! <root>/quarantine/    files recovery could not use, kept for a human
//! <root>/spare/         files of removed messages, kept to be rewritten for new ones
//! ```
//!
//! Removing a message renames its files into `spare/` rather than unlinking them, and a new
//! file is written over a spare one rather than created: creating and deleting an inode per
//! message is the most expensive thing a busy spool does on ext4. A spare file is reused
//! only after the removal that put it there is durable, so no name in `queue/` can ever
//! point at a file being rewritten. What is in `spare/` is never read as mail.
//!
//! Durability rests on one pattern, used for every file written alone: write it under
//! `tmp/`, `fsync` the file (data and metadata), `rename` it into `queue/` (atomic: readers
//! and crashes see the old name or the new, never a half file), then `fsync` the `queue/`
//! directory so the rename itself is on disk. Once those four steps returned, the file
//! survives a crash or a power loss; before the rename completes, a crash leaves at most a
//! file in `tmp/`, which the next open deletes. The group committer (`commit.rs`) renames
//! before its one flush instead; what a power loss can leave then is caught by the message
//! file's checksum (`format.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::error::io_error;
use crate::format::{self, Head, HeadError};
use crate::{DeliveryState, Envelope, QueueId, QueuedMessage, Spool, SpoolError};

/// The content of `VERSION` for this format.
const VERSION_TEXT: &str = "mxroute-spool 2\n";
/// The version before message files had checksums: read, and upgraded at open, since an
/// older build would quarantine the version 2 files it cannot read.
const VERSION_1: &str = "mxroute-spool 1";
/// Mail is private: the spool is readable by its owner only.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
/// A state file larger than this is damaged (real ones are a few hundred bytes per
/// recipient).
const MAX_STATE_LEN: u64 = 64 << 20;
/// Per-message locks, picked by hashing the id: `update_state` and `remove` of one message
/// must not interleave (or a state could be renamed in after its message was removed,
/// leaving an orphan), but different messages must not wait for each other's fsyncs.
const LOCK_STRIPES: usize = 64;
/// Spare files kept for reuse; more removals than this unlink.
const MAX_SPARE: usize = 4096;
/// Spare files the group committer makes in its idle time, for a burst of new messages.
const STOCK_SPARE: usize = 512;

/// What [`FileSpool::open`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Complete messages kept in the queue.
    pub recovered: usize,
    /// Leftover files deleted from `tmp/` (writes that were never acknowledged).
    pub removed_tmp: usize,
    /// Files moved to `quarantine/`: (file name in `queue/`, reason).
    pub quarantined: Vec<(String, String)>,
}

/// The embedded spool: plain files under one root directory.
///
/// At most one `FileSpool` has a given root open at a time (a `flock` on `<root>/lock`,
/// released when the value is dropped or the process dies), because recovery deletes
/// `tmp/`, which would destroy another writer's work in progress.
#[derive(Debug)]
pub struct FileSpool {
    root: PathBuf,
    tmp: PathBuf,
    queue: PathBuf,
    quarantine: PathBuf,
    spare: PathBuf,
    /// Names in `spare/` free to be rewritten (their removal is durable), oldest first.
    spares: Mutex<VecDeque<OsString>>,
    /// No spare files are made before this (set when making one failed).
    stock_paused: Mutex<Option<Instant>>,
    /// Holds the flock for as long as the spool is open; None when opened read-only.
    _lock: Option<File>,
    stripes: Box<[Mutex<()>]>,
    /// `queue/`, opened at its first flush and kept for the next ones.
    queue_dir: OnceLock<File>,
}

impl FileSpool {
    /// Opens the spool at `root`, creating it if absent, and recovers from any crash.
    ///
    /// Recovery: deletes everything in `tmp/`; checks every message file (header, envelope
    /// and length) and moves a bad one to `quarantine/`; moves a `.state` without its
    /// message to `quarantine/`; moves an unreadable `.state` beside a good message to
    /// `quarantine/`, which gives that message its initial state again (all recipients
    /// pending: better delivered twice than lost). Nothing is ever deleted from `queue/`.
    ///
    /// Errors: [`SpoolError::Version`] for a spool of another format version,
    /// [`SpoolError::Locked`] if it is open elsewhere, [`SpoolError::Io`] when the file
    /// system fails (a file that cannot be *read* is not quarantined: the fault may be the
    /// disk's or the permissions', and an operator should look).
    pub fn open(root: &Path) -> Result<(FileSpool, RecoveryReport), SpoolError> {
        create_root(root)?;
        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(SpoolError::Locked { path: lock_path }),
            Err(TryLockError::Error(e)) => return Err(io_error(&lock_path, e)),
        }
        let spool = FileSpool::at(root, Some(lock));
        spool.check_or_create_layout()?;
        let report = spool.recover()?;
        info!(
            root = %root.display(),
            recovered = report.recovered,
            removed_tmp = report.removed_tmp,
            quarantined = report.quarantined.len(),
            "spool opened"
        );
        Ok((spool, report))
    }

    /// The handle on the spool at `root`; `lock` is the held flock of a writer, `None` for
    /// a reader.
    fn at(root: &Path, lock: Option<File>) -> FileSpool {
        FileSpool {
            root: root.to_path_buf(),
            tmp: root.join("tmp"),
            queue: root.join("queue"),
            quarantine: root.join("quarantine"),
            spare: root.join("spare"),
            spares: Mutex::new(VecDeque::new()),
            stock_paused: Mutex::new(None),
            _lock: lock,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            queue_dir: OnceLock::new(),
        }
    }

    /// Opens an existing spool for reading only, beside a relay that may hold it open: no
    /// lock, no recovery, and every change is refused with [`SpoolError::ReadOnly`]. Reads
    /// are safe against the writer because message files are immutable once in `queue/` and
    /// state files are replaced by rename, never rewritten in place.
    pub fn open_readonly(root: &Path) -> Result<FileSpool, SpoolError> {
        let version_path = root.join("VERSION");
        let text = fs::read_to_string(&version_path).map_err(|e| io_error(&version_path, e))?;
        let found = text.trim().to_string();
        if found != VERSION_TEXT.trim() && found != VERSION_1 {
            return Err(SpoolError::Version { found });
        }
        Ok(FileSpool::at(root, None))
    }

    pub(crate) fn check_writable(&self) -> Result<(), SpoolError> {
        self.writable()
    }

    fn writable(&self) -> Result<(), SpoolError> {
        if self._lock.is_some() {
            Ok(())
        } else {
            Err(SpoolError::ReadOnly {
                path: self.root.clone(),
            })
        }
    }

    /// The spool's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Bytes available to this (unprivileged) process on the spool's file system, so a
    /// server can refuse new mail early, below a threshold of its choosing.
    pub fn free_bytes(&self) -> Result<u64, SpoolError> {
        let st = rustix::fs::statvfs(&self.root).map_err(|e| io_error(&self.root, e.into()))?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    pub(crate) fn msg_path(&self, id: &QueueId) -> PathBuf {
        self.queue.join(format!("{id}.msg"))
    }

    /// A file to write a new message or state into, and its path: a spare file when there
    /// is one (written over from the start; the caller sets the length), else `fresh`,
    /// created.
    fn scratch(&self, fresh: &Path) -> io::Result<(PathBuf, File)> {
        loop {
            let name = self
                .spares
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some(name) = name else { break };
            let path = self.spare.join(name);
            // Not a regular file of ours any more (an operator's hand): skip it.
            if let Ok(file) = OpenOptions::new().write(true).open(&path) {
                return Ok((path, file));
            }
        }
        // create_new: names are unique, so an existing file would be a bug; refuse to
        // write through it.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(fresh)?;
        Ok((fresh.to_path_buf(), file))
    }

    /// Writes `parts` into a scratch file and cuts it to their length; on error the file is
    /// removed.
    fn write_scratch(&self, fresh: &Path, parts: &[&[u8]]) -> Result<(PathBuf, File), SpoolError> {
        let (path, mut file) = self.scratch(fresh).map_err(|e| io_error(fresh, e))?;
        let written = (|| {
            // One write for head and body together (a message is its head and its body):
            // a syscall per part is a syscall more per message.
            let len: usize = parts.iter().map(|p| p.len()).sum();
            let mut slices: Vec<io::IoSlice<'_>> =
                parts.iter().map(|p| io::IoSlice::new(p)).collect();
            let mut rest = &mut slices[..];
            while !rest.is_empty() {
                match file.write_vectored(rest) {
                    Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                    Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            file.set_len(len as u64)
        })();
        match written {
            Ok(()) => Ok((path, file)),
            Err(e) => {
                drop(file);
                remove_quietly(&path);
                Err(io_error(&path, e))
            }
        }
    }

    /// Whether the stock of spare files is below what the group committer keeps ready.
    pub(crate) fn wants_spare(&self) -> bool {
        let paused = *self.stock_paused.lock().unwrap_or_else(|p| p.into_inner());
        self._lock.is_some()
            && paused.is_none_or(|until| Instant::now() >= until)
            && self.spares.lock().unwrap_or_else(|p| p.into_inner()).len() < STOCK_SPARE
    }

    /// Creates one empty spare file. Nothing needs to be durable: a spare file is never
    /// read, and one lost in a crash is simply not there to be reused.
    pub(crate) fn make_spare(&self) {
        let name = OsString::from(format!("new-{}", QueueId::generate()));
        let path = self.spare.join(&name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)
        {
            Ok(_) => self.recycle(vec![name]),
            Err(e) => {
                // A full disk or the like: the next message creates its own file and
                // reports the problem; no more stocking for a while.
                warn!(path = %path.display(), error = %e, "spool: cannot make a spare file");
                *self.stock_paused.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Instant::now() + Duration::from_secs(10));
            }
        }
    }

    /// Names that removals put in `spare/` and that are now durable removals: free to be
    /// written over.
    pub(crate) fn recycle(&self, names: Vec<OsString>) {
        if !names.is_empty() {
            self.spares
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(names);
        }
    }

    /// Whether message `id` is in the queue and has never been tried (it has no state file
    /// yet). An error reading either counts as "no": the caller then leaves the message to
    /// the queue scan, which reads it from the spool.
    pub fn is_untried(&self, id: &QueueId) -> bool {
        fs::symlink_metadata(self.msg_path(id)).is_ok()
            && matches!(fs::symlink_metadata(self.state_path(id)), Err(e) if e.kind() == io::ErrorKind::NotFound)
    }

    fn state_path(&self, id: &QueueId) -> PathBuf {
        self.queue.join(format!("{id}.state"))
    }

    fn stripe(&self, id: &QueueId) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        let i = (h.finish() % self.stripes.len() as u64) as usize;
        // The mutex guards no data, so a panic of another holder leaves nothing to repair.
        self.stripes[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes this build's `VERSION`, by the same four steps as every file.
    fn write_version(&self) -> Result<(), SpoolError> {
        write_durably(
            &self.root.join("VERSION.tmp"),
            &self.root.join("VERSION"),
            VERSION_TEXT.as_bytes(),
            &self.root,
        )
    }

    /// Checks `VERSION`, or creates the layout in a new spool.
    fn check_or_create_layout(&self) -> Result<(), SpoolError> {
        let version_path = self.root.join("VERSION");
        match fs::File::open(&version_path) {
            Ok(f) => {
                let mut text = Vec::new();
                f.take(256)
                    .read_to_end(&mut text)
                    .map_err(|e| io_error(&version_path, e))?;
                // Lenient about surrounding white space (an operator's editor may drop the
                // newline or add a CR), strict about everything else.
                let found = String::from_utf8_lossy(&text).trim().to_string();
                if found == VERSION_1 {
                    // Its message files stay as they are (version 1 is still read); from
                    // now on new ones have checksums, which an older build must not meet.
                    self.write_version()?;
                    info!(root = %self.root.display(), "spool upgraded from version 1 to 2");
                } else if found != VERSION_TEXT.trim() {
                    return Err(SpoolError::Version { found });
                }
                // A missing subdirectory (an operator's cleanup) is recreated, not an error.
                let mut created = false;
                for dir in [&self.tmp, &self.queue, &self.quarantine, &self.spare] {
                    created |= create_dir(dir, false)?;
                }
                if created {
                    sync_dir(&self.root)?;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Messages without a VERSION are of an unknown format: refuse rather than
                // guess. (A crash while creating a spool cannot leave messages: they are
                // only written after open returned, and VERSION is written last.)
                if dir_has_entries(&self.queue)? {
                    return Err(SpoolError::Version {
                        found: "none (VERSION is missing but queue/ is not empty)".to_string(),
                    });
                }
                for dir in [&self.tmp, &self.queue, &self.quarantine, &self.spare] {
                    create_dir(dir, false)?;
                }
                sync_dir(&self.root)?;
                self.write_version()
            }
            Err(e) => Err(io_error(&version_path, e)),
        }
    }

    fn recover(&self) -> Result<RecoveryReport, SpoolError> {
        let mut report = RecoveryReport::default();

        // Whatever is in tmp/ never completed its rename, so it was never acknowledged.
        for entry in read_dir(&self.tmp)? {
            let path = self.tmp.join(&entry);
            let removed = match fs::remove_file(&path) {
                Err(e) if e.kind() == io::ErrorKind::IsADirectory => fs::remove_dir_all(&path),
                other => other,
            };
            removed.map_err(|e| io_error(&path, e))?;
            report.removed_tmp += 1;
        }
        if report.removed_tmp > 0 {
            // Not needed for correctness (a deleted file that a power loss brings back is
            // deleted again at the next open); it keeps tmp/ empty on disk, not just in cache.
            sync_dir(&self.tmp)?;
        }

        // Spare files are whatever they are (old messages, a rewrite cut short): never read,
        // only written over. But never one that has another name too: a file system that
        // does not rename atomically (ext4 without a journal, after fsck) can leave a file
        // both in spare/ and in queue/, and writing over it would destroy the message.
        let mut spares = VecDeque::new();
        for name in read_dir(&self.spare)? {
            let path = self.spare.join(&name);
            let single = fs::symlink_metadata(&path)
                .is_ok_and(|m| m.file_type().is_file() && m.nlink() == 1);
            if single && spares.len() < MAX_SPARE {
                spares.push_back(name);
            } else {
                remove_quietly(&path);
            }
        }
        *self.spares.lock().unwrap_or_else(|p| p.into_inner()) = spares;

        let mut msgs = BTreeSet::new();
        let mut states = BTreeSet::new();
        let mut moved = false;
        for name in read_dir(&self.queue)? {
            match classify(&name) {
                Some((id, Kind::Msg)) => {
                    msgs.insert(id);
                }
                Some((id, Kind::State)) => {
                    states.insert(id);
                }
                None => {
                    self.quarantine(&name, "unexpected file name in queue/", &mut report)?;
                    moved = true;
                }
            }
        }

        let mut good = BTreeMap::new();
        let mut bad = BTreeSet::new();
        for id in msgs {
            match self.read_head(&id) {
                Ok((head, _)) => {
                    good.insert(id, head.envelope);
                }
                Err(SpoolError::Corrupt { reason, .. }) => {
                    self.quarantine(&OsString::from(format!("{id}.msg")), &reason, &mut report)?;
                    bad.insert(id);
                    moved = true;
                }
                Err(e) => return Err(e),
            }
        }
        report.recovered = good.len();

        for id in states {
            let name = OsString::from(format!("{id}.state"));
            let Some(envelope) = good.get(&id) else {
                let reason = if bad.contains(&id) {
                    "its message was quarantined"
                } else {
                    // remove() unlinks the message first, so a crash inside remove() leaves
                    // exactly this; the state alone cannot be delivered and is only kept
                    // for inspection.
                    "state without its message (an interrupted removal leaves this)"
                };
                self.quarantine(&name, reason, &mut report)?;
                moved = true;
                continue;
            };
            match self.read_state(&id, envelope) {
                Ok(_) => {}
                Err(SpoolError::Corrupt { reason, .. }) => {
                    // Without the file the message has its initial state again.
                    let reason = format!(
                        "{reason}; the message is kept with its initial state \
                         (recipients already delivered may be delivered again)"
                    );
                    self.quarantine(&name, &reason, &mut report)?;
                    moved = true;
                }
                Err(e) => return Err(e),
            }
        }

        if moved {
            sync_dir(&self.quarantine)?;
            sync_dir(&self.queue)?;
        }
        Ok(report)
    }

    /// Moves `queue/<name>` to `quarantine/`, under a new name if that one is taken.
    fn quarantine(
        &self,
        name: &OsString,
        reason: &str,
        report: &mut RecoveryReport,
    ) -> Result<(), SpoolError> {
        let from = self.queue.join(name);
        let mut to = self.quarantine.join(name);
        let mut n = 1u32;
        while to.try_exists().map_err(|e| io_error(&to, e))? {
            let mut alt = name.clone();
            alt.push(format!(".{n}"));
            to = self.quarantine.join(alt);
            n += 1;
        }
        fs::rename(&from, &to).map_err(|e| io_error(&from, e))?;
        let shown = name.to_string_lossy().into_owned();
        warn!(file = %shown, reason, to = %to.display(), "spool: quarantined");
        report.quarantined.push((shown, reason.to_string()));
        Ok(())
    }

    /// [`FileSpool::quarantine`] for a message found bad while running: its message file,
    /// then its state file if it has one. Best effort: a failure is logged, and the file
    /// that stays is checked again at the next read or open.
    fn quarantine_message(&self, id: &QueueId, reason: &str) {
        if self.writable().is_err() {
            return; // a reader beside the relay: the relay will find it
        }
        let mut report = RecoveryReport::default();
        let msg = OsString::from(format!("{id}.msg"));
        let moved = self.quarantine(&msg, reason, &mut report).and_then(|()| {
            if self.state_path(id).exists() {
                let state = OsString::from(format!("{id}.state"));
                self.quarantine(&state, "its message was quarantined", &mut report)?;
            }
            sync_dir(&self.quarantine)?;
            sync_dir(&self.queue)
        });
        if let Err(e) = moved {
            warn!(queue_id = %id, error = %e, "spool: cannot quarantine a corrupt message");
        }
    }

    /// Opens a message file and reads its head, checking the file length against it.
    fn read_head(&self, id: &QueueId) -> Result<(Head, BufReader<File>), SpoolError> {
        let path = self.msg_path(id);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SpoolError::NotFound(id.clone()));
            }
            Err(e) => return Err(io_error(&path, e)),
        };
        let len = file.metadata().map_err(|e| io_error(&path, e))?.len();
        let mut reader = BufReader::new(file);
        let corrupt = |reason: String| SpoolError::Corrupt {
            id: id.clone(),
            reason,
        };
        let head = match format::read_head(&mut reader) {
            Ok(head) => head,
            Err(HeadError::Corrupt(reason)) => return Err(corrupt(reason)),
            Err(HeadError::Io(e)) => return Err(io_error(&path, e)),
        };
        if head.envelope.id != *id {
            return Err(corrupt(format!(
                "the envelope inside names another id, {}",
                head.envelope.id
            )));
        }
        head.check_len(len).map_err(corrupt)?;
        Ok((head, reader))
    }

    /// The state of a message whose envelope is known; no file means the initial state.
    fn read_state(&self, id: &QueueId, envelope: &Envelope) -> Result<DeliveryState, SpoolError> {
        let path = self.state_path(id);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(DeliveryState::initial(envelope));
            }
            Err(e) => return Err(io_error(&path, e)),
        };
        let mut json = Vec::new();
        file.take(MAX_STATE_LEN)
            .read_to_end(&mut json)
            .map_err(|e| io_error(&path, e))?;
        let corrupt = |reason: String| SpoolError::Corrupt {
            id: id.clone(),
            reason,
        };
        let state: DeliveryState = serde_json::from_slice(&json)
            .map_err(|e| corrupt(format!("unreadable state file: {e}")))?;
        state
            .check_matches(envelope)
            .map_err(|e| corrupt(format!("state file does not match the envelope: {e}")))?;
        Ok(state)
    }

    /// Writes a message file, not yet flushed (under `tmp/`, or over a spare file), and
    /// returns its new id, the file's path and the open file. The caller makes it durable,
    /// renames it to [`FileSpool::msg_path`] and fsyncs `queue/`, in that order:
    /// [`Spool::store`] for one message, the group committer for many.
    ///
    /// On error nothing is left: the temporary file is removed.
    pub(crate) fn write_tmp(
        &self,
        mut envelope: Envelope,
        body: &[u8],
    ) -> Result<(QueueId, PathBuf, File), SpoolError> {
        self.writable()?;
        let id = QueueId::generate();
        envelope.id = id.clone();
        envelope.size = body.len() as u64;
        let fresh = self.tmp.join(format!("{id}.msg"));
        let head = format::encode_head(&envelope, body).map_err(|e| SpoolError::Io {
            path: fresh.clone(),
            source: io::Error::other(e),
        })?;
        let (path, file) = self.write_scratch(&fresh, &[&head, body])?;
        Ok((id, path, file))
    }

    /// Writes a message file, fsyncs it and renames it into `queue/`: everything of `store`
    /// except the final fsync of `queue/`.
    ///
    /// On error nothing is left: the temporary file is removed.
    fn write_message(&self, envelope: Envelope, body: &[u8]) -> Result<QueueId, SpoolError> {
        let (id, tmp_path, file) = self.write_tmp(envelope, body)?;
        let final_path = self.msg_path(&id);
        // fsync, not fdatasync: the file's size (metadata) must be durable too, or a
        // power loss could leave a renamed file whose length is still zero.
        let written = file.sync_all().map_err(|e| (&tmp_path, e)).and_then(|()| {
            drop(file);
            fs::rename(&tmp_path, &final_path).map_err(|e| (&final_path, e))
        });
        match written {
            Ok(()) => Ok(id),
            Err((path, e)) => {
                remove_quietly(&tmp_path);
                Err(io_error(path, e))
            }
        }
    }

    /// Takes a message's files out of `queue/`, the message first, without the fsync of
    /// `queue/` that makes it durable ([`Spool::remove`] adds it, the group committer shares
    /// one among many). The files go to `spare/` (or are unlinked when there are spares
    /// enough); the names returned may be given to [`FileSpool::recycle`] once `queue/` has
    /// been fsynced, not before. `untried`: the caller knows there is no state file, and
    /// its rename (a failed path lookup) is skipped.
    pub(crate) fn retire(&self, id: &QueueId, untried: bool) -> Result<Vec<OsString>, SpoolError> {
        self.writable()?;
        let _guard = self.stripe(id);
        let keep = self.spares.lock().unwrap_or_else(|p| p.into_inner()).len() < MAX_SPARE;
        let mut spares = Vec::new();
        // The message first: if we crash between the two, what is left is a state without a
        // message (quarantined at the next open), not a message without its state (which
        // would be delivered again to everyone).
        let kinds: &[&str] = if untried { &["msg"] } else { &["msg", "state"] };
        for &kind in kinds {
            let path = self.queue.join(format!("{id}.{kind}"));
            let name = OsString::from(format!("{id}.{kind}"));
            let gone = if keep {
                fs::rename(&path, self.spare.join(&name))
            } else {
                fs::remove_file(&path)
            };
            match gone {
                Ok(()) if keep => spares.push(name),
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if kind == "msg" {
                        return Err(SpoolError::NotFound(id.clone()));
                    }
                }
                Err(e) => return Err(io_error(&path, e)),
            }
        }
        Ok(spares)
    }

    /// Makes every rename into (and unlink from) `queue/` so far durable.
    pub(crate) fn sync_queue_dir(&self) -> Result<(), SpoolError> {
        // Kept open: the group committer flushes `queue/` once per batch, and an open and a
        // close per batch were two syscalls per message at 1 KB. fsync makes the directory
        // inode durable whichever descriptor it comes through.
        let dir = match self.queue_dir.get() {
            Some(dir) => dir,
            None => {
                let dir = File::open(&self.queue).map_err(|e| io_error(&self.queue, e))?;
                let _ = self.queue_dir.set(dir);
                self.queue_dir
                    .get()
                    .expect("set just above, or by another thread")
            }
        };
        dir.sync_all().map_err(|e| io_error(&self.queue, e))
    }
}

impl Spool for FileSpool {
    fn store(&self, envelope: Envelope, body: &[u8]) -> Result<QueueId, SpoolError> {
        self.writable()?;
        let id = self.write_message(envelope, body)?;
        if let Err(e) = self.sync_queue_dir() {
            // We will not acknowledge this message, so take it back (best effort: if it
            // survives a crash anyway, it is delivered, and the client's retry makes a
            // duplicate, never a loss).
            remove_quietly(&self.msg_path(&id));
            let _ = self.sync_queue_dir();
            return Err(e);
        }
        Ok(id)
    }

    fn list(&self) -> Result<Vec<QueueId>, SpoolError> {
        let mut ids: Vec<QueueId> = read_dir(&self.queue)?
            .iter()
            .filter_map(|name| match classify(name) {
                Some((id, Kind::Msg)) => Some(id),
                _ => None,
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn load(&self, id: &QueueId) -> Result<QueuedMessage, SpoolError> {
        let (head, _) = self.read_head(id)?;
        let state = self.read_state(id, &head.envelope)?;
        Ok(QueuedMessage {
            envelope: head.envelope,
            state,
        })
    }

    fn body(&self, id: &QueueId) -> Result<Vec<u8>, SpoolError> {
        let (head, reader) = self.read_head(id)?;
        let size = head.envelope.size;
        let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        // The length was checked against the file; read no more than promised even if the
        // file grew since (it must not, but a reader should not trust that).
        reader
            .take(size)
            .read_to_end(&mut body)
            .map_err(|e| io_error(&self.msg_path(id), e))?;
        if body.len() as u64 != size {
            return Err(SpoolError::Corrupt {
                id: id.clone(),
                reason: format!("body is {} bytes, envelope says {size}", body.len()),
            });
        }
        if let Err(reason) = head.verify_body(&body) {
            // Never acknowledged (a power loss before its batch's flush: see format.rs) or
            // damaged since; either way not something to send. Out of the queue, so that no
            // run tries it again, and kept for a human.
            self.quarantine_message(id, &reason);
            return Err(SpoolError::Corrupt {
                id: id.clone(),
                reason,
            });
        }
        Ok(body)
    }

    fn update_state(&self, id: &QueueId, state: &DeliveryState) -> Result<(), SpoolError> {
        self.writable()?;
        let _guard = self.stripe(id);
        let (head, _) = self.read_head(id)?;
        state
            .check_matches(&head.envelope)
            .map_err(|reason| SpoolError::StateMismatch {
                id: id.clone(),
                reason,
            })?;
        let fresh = self.tmp.join(format!("{id}.state"));
        let mut json = serde_json::to_vec(state).map_err(|e| SpoolError::Io {
            path: fresh.clone(),
            source: io::Error::other(e),
        })?;
        json.push(b'\n');
        let (tmp_path, file) = self.write_scratch(&fresh, &[&json])?;
        let final_path = self.state_path(id);
        let written = file.sync_all().map_err(|e| (&tmp_path, e)).and_then(|()| {
            drop(file);
            fs::rename(&tmp_path, &final_path).map_err(|e| (&final_path, e))
        });
        if let Err((path, e)) = written {
            remove_quietly(&tmp_path);
            return Err(io_error(path, e));
        }
        self.sync_queue_dir()
    }

    fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        let spares = self.retire(id, false)?;
        // One fsync for both. Journaling file systems commit directory operations in order;
        // should one persist only the second, the message comes back with its initial
        // state: delivered twice, never lost.
        self.sync_queue_dir()?;
        self.recycle(spares);
        Ok(())
    }
}

/// The two kinds of files in `queue/`.
enum Kind {
    Msg,
    State,
}

/// `<id>.msg` or `<id>.state` with a valid id; anything else is not ours.
fn classify(name: &OsString) -> Option<(QueueId, Kind)> {
    let (stem, ext) = name.to_str()?.split_once('.')?;
    let kind = match ext {
        "msg" => Kind::Msg,
        "state" => Kind::State,
        _ => return None,
    };
    Some((QueueId::new(stem).ok()?, kind))
}

/// Write `bytes` to `tmp_path`, fsync, rename to `final_path`, fsync `dir` (the directory
/// of `final_path`). The old `final_path`, if any, stays until the rename replaces it
/// atomically. On error the temporary file is removed.
fn write_durably(
    tmp_path: &Path,
    final_path: &Path,
    bytes: &[u8],
    dir: &Path,
) -> Result<(), SpoolError> {
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(tmp_path)
            .map_err(|e| (tmp_path, e))?;
        file.write_all(bytes).map_err(|e| (tmp_path, e))?;
        file.sync_all().map_err(|e| (tmp_path, e))?;
        drop(file);
        fs::rename(tmp_path, final_path).map_err(|e| (final_path, e))
    })();
    if let Err((path, e)) = written {
        remove_quietly(tmp_path);
        return Err(io_error(path, e));
    }
    sync_dir(dir)
}

/// fsync a directory: makes the creations, renames and unlinks in it durable.
fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// Creates the root directory and any missing parents, and makes their directory entries
/// durable: a spool whose own directory could vanish in a power loss would take its
/// acknowledged messages with it.
fn create_root(root: &Path) -> Result<(), SpoolError> {
    let mut missing = Vec::new();
    for dir in root.ancestors().filter(|d| !d.as_os_str().is_empty()) {
        if dir.try_exists().map_err(|e| io_error(dir, e))? {
            break;
        }
        missing.push(dir);
    }
    create_dir(root, true)?;
    for dir in missing {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)?;
    }
    Ok(())
}

/// Creates a directory (mode 0700) unless it exists; true if it was created.
fn create_dir(dir: &Path, recursive: bool) -> Result<bool, SpoolError> {
    match DirBuilder::new()
        .recursive(recursive)
        .mode(DIR_MODE)
        .create(dir)
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) => Err(io_error(dir, e)),
    }
}

/// The names in a directory.
fn read_dir(dir: &Path) -> Result<Vec<OsString>, SpoolError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        names.push(entry.map_err(|e| io_error(dir, e))?.file_name());
    }
    Ok(names)
}

fn dir_has_entries(dir: &Path) -> Result<bool, SpoolError> {
    match fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(dir, e)),
    }
}

/// Cleanup on an error path: the original error is what the caller needs; a file we fail
/// to remove here is in `tmp/` (deleted at the next open) or an unacknowledged message.
pub(crate) fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "spool: could not remove after a failed write");
    }
}
