//! Final delivery into Maildir: write in `tmp/`, fsync, rename into `new/`, fsync the folder.
//! Once `deliver` returns, the copy survives a crash.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Deliver one copy into `root/<domain>/<mailbox>/`, creating the folders as needed.
/// `prefix` (trace headers) is written before `message`. Returns the file's final path.
pub fn deliver(
    root: &Path,
    domain: &str,
    mailbox: &str,
    hostname: &str,
    prefix: &[u8],
    message: &[u8],
) -> std::io::Result<PathBuf> {
    let folder = root.join(domain).join(mailbox);
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(folder.join(sub))?;
    }
    let name = unique_name(hostname);
    let tmp = folder.join("tmp").join(&name);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(prefix)?;
        file.write_all(message)?;
        file.sync_all()?;
        let new = folder.join("new").join(&name);
        fs::rename(&tmp, &new)?;
        File::open(folder.join("new"))?.sync_all()?;
        Ok(new)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The Maildir unique name: time, a per-process counter and the pid make it unique on this
/// host; the host name makes it unique across hosts sharing the folder.
fn unique_name(hostname: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let host: String = hostname
        .chars()
        .map(|c| if c == '/' || c == ':' { '_' } else { c })
        .collect();
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        n,
        host
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_byte_for_byte_into_new() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"Subject: hi\r\n\r\nbody\r\n";
        let a = deliver(
            dir.path(),
            "example.com",
            "alice",
            "mx.test",
            b"Return-Path: <a@b>\r\n",
            body,
        )
        .unwrap();
        let b = deliver(dir.path(), "example.com", "alice", "mx.test", b"", body).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(dir.path().join("example.com/alice/new")));
        let mut expected = b"Return-Path: <a@b>\r\n".to_vec();
        expected.extend_from_slice(body);
        assert_eq!(fs::read(&a).unwrap(), expected);
        assert_eq!(
            fs::read_dir(dir.path().join("example.com/alice/tmp"))
                .unwrap()
                .count(),
            0
        );
        assert!(dir.path().join("example.com/alice/cur").is_dir());
    }
}
