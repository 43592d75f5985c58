//! Queue ids.
//!
//! A generated id is 22 lowercase hex digits: 14 digits of microseconds since the Unix epoch
//! followed by 8 random digits, for example `000650a1b2c3d4e5f60718`. Fixed width makes the
//! string order the time order, so sorting file names sorts by arrival. (Twelve digits, a
//! first idea, hold only 2^48 µs, about 8.9 years: the epoch clock passed that in 1978.
//! Fourteen last until the year 4253.)
//!
//! Uniqueness without coordination: within a process the time part is strictly increasing
//! (a clock reading that is not past the previous id's is bumped by one microsecond), so two
//! ids of one process never collide and follow call order even within one microsecond.
//! Only one process has a spool open at a time (the lock file); the random part covers a
//! restart with a clock that went backwards, or a shared backend with several writers.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::SpoolError;

/// The longest id accepted from outside; generated ids are 22 characters.
pub const MAX_ID_LEN: usize = 64;

/// A message's id in the queue, also its file name stem, so only `[0-9A-Za-z]` is allowed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueId(String);

/// The time part of the last id this process generated (µs since the epoch).
static LAST_MICROS: AtomicU64 = AtomicU64::new(0);

impl QueueId {
    /// Validates an id taken from outside (a command line, a file name, a database row).
    pub fn new(id: impl Into<String>) -> Result<QueueId, SpoolError> {
        let id = id.into();
        if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(SpoolError::BadId(id));
        }
        Ok(QueueId(id))
    }

    /// A new id: later than every id this process made before, and unique.
    pub fn generate() -> QueueId {
        let micros = next_micros();
        QueueId(format!("{micros:014x}{:08x}", rand::random::<u32>()))
    }

    /// The id as text (also its file name stem).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The time a generated id was made, in microseconds since the epoch; `None` for an id
    /// not in the generated format.
    pub fn timestamp_micros(&self) -> Option<u64> {
        let time = self.0.get(..14)?;
        if self.0.len() != 22 {
            return None;
        }
        u64::from_str_radix(time, 16).ok()
    }
}

/// The clock in µs, but strictly after the previous value handed out by this process.
fn next_micros() -> u64 {
    // A clock before 1970 is nonsense; 0 still yields increasing, unique ids.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let mut last = LAST_MICROS.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST_MICROS.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => last = actual,
        }
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for QueueId {
    type Err = SpoolError;
    fn from_str(s: &str) -> Result<QueueId, SpoolError> {
        QueueId::new(s)
    }
}

impl TryFrom<String> for QueueId {
    type Error = SpoolError;
    fn try_from(s: String) -> Result<QueueId, SpoolError> {
        QueueId::new(s)
    }
}

impl From<QueueId> for String {
    fn from(id: QueueId) -> String {
        id.0
    }
}

impl AsRef<str> for QueueId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_sorted_and_timed() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let ids: Vec<QueueId> = (0..1000).map(|_| QueueId::generate()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
        for id in &ids {
            assert_eq!(id.as_str().len(), 22);
            assert_eq!(QueueId::new(id.as_str()).ok().as_ref(), Some(id));
            assert!(id.timestamp_micros().is_some_and(|t| t >= before));
        }
    }

    #[test]
    fn outside_ids_are_checked() {
        for bad in ["", "a.b", "../etc", "a/b", "ab cd", "é", &"a".repeat(65)] {
            assert!(
                matches!(QueueId::new(bad), Err(SpoolError::BadId(_))),
                "{bad:?}"
            );
        }
        for good in ["a", "Z9", &"a".repeat(64)] {
            assert!(QueueId::new(good).is_ok(), "{good:?}");
        }
        assert!(serde_json::from_str::<QueueId>("\"../x\"").is_err());
        assert_eq!(
            serde_json::to_string(&QueueId::new("abc1").ok())
                .ok()
                .as_deref(),
            Some("\"abc1\"")
        );
    }
}
