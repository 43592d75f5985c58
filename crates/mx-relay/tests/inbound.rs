//! Local delivery from a real spool into a real Maildir.

use std::sync::Arc;

use mx_relay::inbound::{LocalDelivery, Pass};
use mx_relay::policy::RelayPolicy;
use mx_relay::users::Users;
use mx_spool::{Envelope, FileSpool, RecipientStatus, Spool};

fn setup(dir: &std::path::Path) -> (Arc<FileSpool>, LocalDelivery) {
    let (spool, _) = FileSpool::open(&dir.join("spool")).unwrap();
    let spool = Arc::new(spool);
    let policy = RelayPolicy::new(
        &["example.com".into()],
        &[],
        &["127.0.0.0/8".parse().unwrap()],
        "mx.example.com",
    );
    let delivery = LocalDelivery {
        spool: spool.clone(),
        policy: Arc::new(policy),
        users: Arc::new(Users::parse("alice@example.com\nbob@example.com\n", "<t>").unwrap()),
        maildir_root: dir.join("maildir"),
        hostname: "mx.example.com".into(),
    };
    (spool, delivery)
}

fn new_files(dir: &std::path::Path, mailbox: &str) -> Vec<Vec<u8>> {
    let new = dir.join("maildir/example.com").join(mailbox).join("new");
    std::fs::read_dir(new)
        .map(|entries| {
            entries
                .map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

const BODY: &[u8] = b"Received: from x\r\nSubject: t\r\n\r\nline one\r\n.leading dot kept\r\n";

#[test]
fn local_copies_land_byte_for_byte_and_the_entry_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, delivery) = setup(dir.path());
    let id = spool
        .store(
            Envelope::new(
                "sender@elsewhere.example",
                vec!["alice@example.com".into(), "Bob@Example.com".into()],
            ),
            BODY,
        )
        .unwrap();
    let pass = delivery.deliver(&id).unwrap();
    assert_eq!(
        pass,
        Pass {
            delivered: 2,
            failed: 0,
            remote: 0,
            removed: true
        }
    );
    let mut expected = b"Return-Path: <sender@elsewhere.example>\r\n".to_vec();
    expected.extend_from_slice(BODY);
    assert_eq!(new_files(dir.path(), "alice"), vec![expected.clone()]);
    assert_eq!(new_files(dir.path(), "bob"), vec![expected]);
    assert!(spool.list().unwrap().is_empty());
}

#[test]
fn remote_recipients_stay_queued_after_local_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, delivery) = setup(dir.path());
    let id = spool
        .store(
            Envelope::new(
                "",
                vec!["alice@example.com".into(), "carol@elsewhere.example".into()],
            ),
            BODY,
        )
        .unwrap();
    let pass = delivery.deliver(&id).unwrap();
    assert_eq!(
        pass,
        Pass {
            delivered: 1,
            failed: 0,
            remote: 1,
            removed: false
        }
    );
    let state = spool.load(&id).unwrap().state;
    assert_eq!(state.recipients[0].status, RecipientStatus::Delivered);
    assert_eq!(state.recipients[1].status, RecipientStatus::Pending);
    // A second pass (after a restart, say) delivers nothing twice.
    let again = delivery.deliver(&id).unwrap();
    assert_eq!(again.delivered, 0);
    assert_eq!(new_files(dir.path(), "alice").len(), 1);
    assert!(new_files(dir.path(), "alice")[0].starts_with(b"Return-Path: <>\r\n"));
}

#[test]
fn a_failed_maildir_write_keeps_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, delivery) = setup(dir.path());
    // A file where the domain folder should be makes every Maildir write fail.
    std::fs::create_dir_all(dir.path().join("maildir")).unwrap();
    std::fs::write(dir.path().join("maildir/example.com"), b"in the way").unwrap();
    let id = spool
        .store(
            Envelope::new("s@x.example", vec!["alice@example.com".into()]),
            BODY,
        )
        .unwrap();
    let pass = delivery.deliver(&id).unwrap();
    assert_eq!(pass.failed, 1);
    assert!(!pass.removed);
    assert_eq!(spool.list().unwrap(), vec![id.clone()]);
    std::fs::remove_file(dir.path().join("maildir/example.com")).unwrap();
    assert!(delivery.deliver(&id).unwrap().removed);
    assert_eq!(new_files(dir.path(), "alice").len(), 1);
}
