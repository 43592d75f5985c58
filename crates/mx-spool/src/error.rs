use std::io;
use std::path::{Path, PathBuf};

use crate::QueueId;

/// Everything that can go wrong in the spool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// The spool's file system is full or the quota is exhausted (ENOSPC or EDQUOT, at any
    /// step). Nothing of the failed operation is left behind; an SMTP server answers
    /// 452 4.3.1 and the client retries later.
    #[error("no space left on the spool's file system")]
    NoSpace,
    /// Any other I/O failure, with the file or directory it happened on.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A queued message's file does not have the spool format (truncated, damaged or written
    /// by something else). At open such files are quarantined instead.
    #[error("message {id} is corrupt: {reason}")]
    Corrupt {
        /// The message.
        id: QueueId,
        /// What is wrong with it.
        reason: String,
    },
    /// The spool directory was written by another (or no) version of the format.
    #[error(
        "spool format version {found:?} is not supported (this build reads \"mxroute-spool 2\" and \"mxroute-spool 1\")"
    )]
    Version {
        /// The content of the `VERSION` file, trimmed, or a description of why there is none.
        found: String,
    },
    /// No message with this id is queued.
    #[error("no message {0} in the spool")]
    NotFound(QueueId),
    /// A queue id taken from outside is not 1 to 64 ASCII letters and digits.
    #[error("bad queue id {0:?}: an id is 1 to 64 ASCII letters and digits")]
    BadId(String),
    /// Another process (or another `FileSpool` in this one) has the spool open.
    #[error("{path}: the spool is in use by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The spool was opened with [`FileSpool::open_readonly`](crate::FileSpool::open_readonly).
    #[error("{path}: the spool is open read-only")]
    ReadOnly {
        /// The spool root.
        path: PathBuf,
    },
    /// [`Spool::update_state`](crate::Spool::update_state) was given a state whose recipients
    /// are not the envelope's.
    #[error("delivery state for {id} does not match its envelope: {reason}")]
    StateMismatch {
        /// The message.
        id: QueueId,
        /// Which recipient differs.
        reason: String,
    },
}

/// True for "the disk is full" in every spelling: the `io::ErrorKind`s recent Rust maps
/// ENOSPC and EDQUOT to, and the raw errno in case a wrapper lost the kind.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || e.raw_os_error().is_some_and(|code| {
        code == rustix::io::Errno::NOSPC.raw_os_error()
            || code == rustix::io::Errno::DQUOT.raw_os_error()
    })
}

/// Wraps an I/O error with its path, turning a full disk into [`SpoolError::NoSpace`].
pub(crate) fn io_error(path: &Path, source: io::Error) -> SpoolError {
    if is_no_space(&source) {
        SpoolError::NoSpace
    } else {
        SpoolError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_and_edquot_are_no_space() {
        for code in [28, 122] {
            let e = io::Error::from_raw_os_error(code);
            assert!(is_no_space(&e), "errno {code}");
            assert!(matches!(io_error(Path::new("/x"), e), SpoolError::NoSpace));
        }
        // A kind without errno (as a wrapper might produce) counts too.
        assert!(is_no_space(&io::Error::from(io::ErrorKind::StorageFull)));
        assert!(is_no_space(&io::Error::from(io::ErrorKind::QuotaExceeded)));
    }

    #[test]
    fn other_errors_keep_their_path() {
        let e = io_error(Path::new("/spool/queue"), io::Error::from_raw_os_error(5));
        match e {
            SpoolError::Io { path, source } => {
                assert_eq!(path, Path::new("/spool/queue"));
                assert_eq!(source.raw_os_error(), Some(5));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
