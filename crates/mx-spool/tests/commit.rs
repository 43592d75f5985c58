//! The group committer: many stores and removals from many threads, each completed only
//! once durable, every message readable exactly as given; removed messages' files are
//! written over for new ones instead of new files being created.

use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, mpsc};

use mx_spool::{Committer, Envelope, FileSpool, QueueId, Spool, SpoolError, SyncMode};

fn envelope(i: usize) -> Envelope {
    let mut env = Envelope::new("alice@example.com", vec![format!("bob{i}@example.org")]);
    env.helo = Some(format!("m{i}"));
    env
}

fn body(i: usize) -> Vec<u8> {
    format!("Subject: {i}\r\n\r\n{}\r\n", "x".repeat(i * 37 % 3000)).into_bytes()
}

/// Store through the committer and wait for the outcome.
fn store(c: &Committer, env: Envelope, body: Vec<u8>) -> Result<QueueId, SpoolError> {
    let (tx, rx) = mpsc::channel();
    c.store(
        env,
        Arc::new(body),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().unwrap()
}

fn remove(c: &Committer, id: QueueId) -> Result<(), SpoolError> {
    let (tx, rx) = mpsc::channel();
    c.remove(
        id,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().unwrap()
}

fn many_threads(mode: SyncMode) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let (spool, _) = FileSpool::open(&root).unwrap();
    let spool = Arc::new(spool);
    let committer = Arc::new(Committer::start(spool.clone(), mode, 0).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let c = committer.clone();
            std::thread::spawn(move || {
                (0..40)
                    .map(|k| {
                        let i = t * 100 + k;
                        (i, store(&c, envelope(i), body(i)).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let stored: Vec<(usize, QueueId)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(spool.list().unwrap().len(), 320);
    for (i, id) in &stored {
        assert_eq!(spool.body(id).unwrap(), body(*i));
        assert_eq!(spool.load(id).unwrap().envelope.helo, Some(format!("m{i}")));
    }
    // Remove half through the committer, from several threads.
    let halves: Vec<_> = stored
        .chunks(40)
        .map(|chunk| {
            let c = committer.clone();
            let ids: Vec<QueueId> = chunk.iter().step_by(2).map(|(_, id)| id.clone()).collect();
            std::thread::spawn(move || ids.into_iter().for_each(|id| remove(&c, id).unwrap()))
        })
        .collect();
    halves.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(spool.list().unwrap().len(), 160);
    let gone = stored[0].1.clone();
    assert!(matches!(
        remove(&committer, gone.clone()),
        Err(SpoolError::NotFound(id)) if id == gone
    ));
    drop(committer);
    drop(spool);
    // A reopened spool needs no recovery and has every remaining message.
    let (spool, report) = FileSpool::open(&root).unwrap();
    assert_eq!(report.recovered, 160);
    assert_eq!(report.removed_tmp, 0);
    assert!(report.quarantined.is_empty());
    for (i, id) in stored.iter().skip(1).step_by(2) {
        assert_eq!(spool.body(id).unwrap(), body(*i));
    }
}

#[test]
fn many_writers_share_flushes_syncfs() {
    many_threads(SyncMode::Filesystem);
}

#[test]
fn many_writers_share_flushes_fsync_per_file() {
    many_threads(SyncMode::Files);
}

fn inode(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn removed_files_are_written_over_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let (spool, _) = FileSpool::open(&root).unwrap();
    let queued = |id: &QueueId| root.join("queue").join(format!("{id}.msg"));
    // Without a committer (no stock of spares): a removed message's file goes to spare/
    // and the next message is written over it, cut to its own length.
    let big = spool.store(envelope(1), &[b'a'; 5000]).unwrap();
    let big_inode = inode(&queued(&big));
    spool.remove(&big).unwrap();
    assert!(!queued(&big).exists());
    assert_eq!(
        inode(&root.join("spare").join(format!("{big}.msg"))),
        big_inode
    );
    let small = spool
        .store(envelope(2), b"Subject: s\r\n\r\nsmall\r\n")
        .unwrap();
    assert_eq!(inode(&queued(&small)), big_inode);
    assert_eq!(spool.body(&small).unwrap(), b"Subject: s\r\n\r\nsmall\r\n");
    // State updates are written over spare files too.
    spool.remove(&small).unwrap();
    let third = spool.store(envelope(3), b"third".as_slice()).unwrap();
    assert_eq!(inode(&queued(&third)), big_inode);
    let other = spool.store(envelope(5), b"other".as_slice()).unwrap();
    let other_inode = inode(&queued(&other));
    spool.remove(&other).unwrap();
    let mut state = spool.load(&third).unwrap().state;
    state.attempts = 1;
    spool.update_state(&third, &state).unwrap();
    assert_eq!(
        inode(&root.join("queue").join(format!("{third}.state"))),
        other_inode
    );
    assert_eq!(spool.load(&third).unwrap().state, state);

    // The committer keeps a stock of spare files while idle; its messages use them.
    let spool = Arc::new(spool);
    let committer = Committer::start(spool.clone(), SyncMode::default(), 0).unwrap();
    let spares = |root: &std::path::Path| -> std::collections::HashSet<u64> {
        std::fs::read_dir(root.join("spare"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().ino())
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while spares(&root).len() < 100 {
        assert!(std::time::Instant::now() < deadline, "no stock of spares");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before = spares(&root);
    let fourth = store(&committer, envelope(4), body(4)).unwrap();
    assert!(before.contains(&inode(&queued(&fourth))));
    assert_eq!(spool.body(&fourth).unwrap(), body(4));
    drop(committer);
    drop(spool);
    let (spool, report) = FileSpool::open(&root).unwrap();
    assert_eq!(report.recovered, 2);
    assert!(report.quarantined.is_empty());
    assert_eq!(report.removed_tmp, 0);
    assert_eq!(spool.body(&third).unwrap(), b"third");
    assert_eq!(spool.body(&fourth).unwrap(), body(4));
}

#[test]
fn a_full_disk_threshold_refuses_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = FileSpool::open(&dir.path().join("spool")).unwrap();
    let spool = Arc::new(spool);
    let committer = Committer::start(spool.clone(), SyncMode::default(), u64::MAX).unwrap();
    assert!(matches!(
        store(&committer, envelope(1), body(1)),
        Err(SpoolError::NoSpace)
    ));
    assert!(spool.list().unwrap().is_empty());
}

/// The engine takes a new message in memory under the id `named` gives it, and relies on
/// that happening before any reader of `queue/` can see the message; a message delivered
/// from that copy is removed without its (absent) state file.
#[test]
fn named_before_visible_and_untried_removal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let (spool, _) = FileSpool::open(&root).unwrap();
    let spool = Arc::new(spool);
    let committer = Committer::start(spool.clone(), SyncMode::default(), 0).unwrap();
    let (named_tx, named_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let seen = spool.clone();
    committer.store_named(
        envelope(1),
        Arc::new(body(1)),
        Box::new(move |id: &QueueId| {
            let visible = seen.list().unwrap().contains(id);
            let _ = named_tx.send((id.clone(), visible));
        }),
        Box::new(move |r| {
            let _ = done_tx.send(r);
        }),
    );
    let (named, visible_when_named) = named_rx.recv().unwrap();
    let id = done_rx.recv().unwrap().unwrap();
    assert_eq!(named, id);
    assert!(!visible_when_named, "named after the rename into queue/");
    assert!(spool.is_untried(&id));

    let (tx, rx) = mpsc::channel();
    committer.remove_untried(
        id.clone(),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().unwrap().unwrap();
    assert!(spool.list().unwrap().is_empty());
    assert!(matches!(spool.load(&id), Err(SpoolError::NotFound(_))));
    assert!(
        !std::fs::read_dir(root.join("queue")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(&id.to_string())),
        "no file of the message left in queue/"
    );
}
