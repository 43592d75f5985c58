//! Fault switches and the name/type normalisation shared by the fault table and the query counter.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};

use crate::LabError;

/// What the lab does instead of answering normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer RCODE SERVFAIL, no records.
    ServFail,
    /// Answer RCODE REFUSED.
    Refused,
    /// Never answer (drop the query, UDP and TCP).
    Timeout,
    /// Over UDP: an empty response with TC=1 (same id/question); over TCP: close the
    /// connection at once without answering, with a reset.
    TruncateThenRefuseTcp,
    /// Answer normally after this delay.
    Delay(Duration),
    /// Drop this share (0–100) of the UDP queries, a lossy path: the k-th UDP query
    /// (k = 0, 1, ...) for a (name, type) is dropped when `(k + offset) * percent % 100 <
    /// percent`, `offset` being a fixed hash of the name. Deterministic, evenly spread, and
    /// for a share up to 50 never two drops in a row for one question, so a client that
    /// retries once always gets its answer. TCP is never dropped (TCP retransmits).
    Drop(u8),
}

impl Fault {
    /// Parses the `$FAULT` spelling: `servfail`, `refused`, `timeout`, `truncate`, `delay:<ms>`,
    /// `drop:<percent>`.
    pub fn parse(kind: &str) -> Option<Fault> {
        let kind = kind.to_ascii_lowercase();
        match kind.as_str() {
            "servfail" => Some(Fault::ServFail),
            "refused" => Some(Fault::Refused),
            "timeout" => Some(Fault::Timeout),
            "truncate" => Some(Fault::TruncateThenRefuseTcp),
            _ => {
                if let Some(percent) = kind.strip_prefix("drop:") {
                    return percent
                        .parse::<u8>()
                        .ok()
                        .filter(|p| *p <= 100)
                        .map(Fault::Drop);
                }
                let ms = kind.strip_prefix("delay:")?;
                ms.parse::<u64>()
                    .ok()
                    .map(|ms| Fault::Delay(Duration::from_millis(ms)))
            }
        }
    }

    /// Whether the `nth` UDP query (0-based) for `name` falls in a `Drop(percent)` share.
    pub(crate) fn drops(percent: u8, name: &str, nth: u64) -> bool {
        let percent = u64::from(percent);
        // FNV-1a: a fixed hash, so the pattern is the same on every run and every machine.
        let offset = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        }) % 100;
        (nth.wrapping_add(offset)).wrapping_mul(percent) % 100 < percent
    }
}

impl std::fmt::Display for Fault {
    /// The `$FAULT` spelling, which [`Fault::parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::ServFail => f.write_str("servfail"),
            Fault::Refused => f.write_str("refused"),
            Fault::Timeout => f.write_str("timeout"),
            Fault::TruncateThenRefuseTcp => f.write_str("truncate"),
            Fault::Delay(d) => write!(f, "delay:{}", d.as_millis()),
            Fault::Drop(percent) => write!(f, "drop:{percent}"),
        }
    }
}

/// Key of the fault table and the query counter: normalised owner name and optional type code.
type FaultKey = (String, Option<u16>);

/// Shared, live-switchable fault table (clone = same table). Thread-safe.
#[derive(Clone, Default)]
pub struct Faults {
    table: Arc<RwLock<HashMap<FaultKey, Fault>>>,
    /// Server-wide [`Fault::Drop`] share for every name without a fault of its own (0: off).
    loss: Arc<AtomicU8>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        f.debug_map().entries(table.iter()).finish()
    }
}

impl Faults {
    /// Installs `fault` for `name` and `rtype` (`None` = every query type for that name).
    /// Name matching is case-insensitive and absolute (the trailing dot is optional).
    ///
    /// An unknown record type is logged and ignored; use [`Faults::try_set`] to see the error.
    pub fn set(&self, name: &str, rtype: Option<&str>, fault: Fault) {
        if let Err(error) = self.try_set(name, rtype, fault) {
            tracing::warn!(%error, name, "fault not installed");
        }
    }

    /// Like [`Faults::set`], but reports an unknown record type instead of ignoring it.
    pub fn try_set(&self, name: &str, rtype: Option<&str>, fault: Fault) -> Result<(), LabError> {
        let key = (normalize_name(name), rtype.map(parse_rtype).transpose()?);
        tracing::debug!(name = %key.0, rtype = ?rtype, ?fault, "fault set");
        self.write().insert(key, fault);
        Ok(())
    }

    /// Removes the fault for exactly this (`name`, `rtype`) key; a fault set for every type is
    /// only removed by `rtype = None`.
    pub fn clear(&self, name: &str, rtype: Option<&str>) {
        let Ok(rtype) = rtype.map(parse_rtype).transpose() else {
            return;
        };
        self.write().remove(&(normalize_name(name), rtype));
    }

    /// Removes every fault, the server-wide loss included.
    pub fn clear_all(&self) {
        self.write().clear();
        self.set_loss(0);
    }

    /// Drops this share (0–100) of the UDP queries for every name that has no fault of its
    /// own, with the deterministic pattern of [`Fault::Drop`]: a lossy path to the server.
    pub fn set_loss(&self, percent: u8) {
        self.loss.store(percent.min(100), Ordering::Relaxed);
    }

    /// The fault that applies to a query: the type-specific one wins over the any-type one.
    /// With no fault for the name, the server-wide loss applies.
    pub(crate) fn lookup(&self, name: &str, qtype: u16) -> Option<Fault> {
        let loss = match self.loss.load(Ordering::Relaxed) {
            0 => None,
            percent => Some(Fault::Drop(percent)),
        };
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        if table.is_empty() {
            return loss;
        }
        let mut key = (name.to_owned(), Some(qtype));
        if let Some(fault) = table.get(&key) {
            return Some(*fault);
        }
        key.1 = None;
        table.get(&key).copied().or(loss)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<FaultKey, Fault>> {
        // A panic while holding the lock cannot leave the map half-updated (all updates are a
        // single insert/remove), so a poisoned lock is still consistent.
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Lower-case, absolute, presentation-format name, matching what `LowerName`'s `Display` gives
/// for query names, so user input and wire names compare equal.
pub(crate) fn normalize_name(name: &str) -> String {
    let name = name.trim();
    let parsed = Name::from_ascii(name).or_else(|_| Name::from_utf8(name));
    match parsed {
        Ok(mut n) => {
            n.set_fqdn(true);
            n.to_lowercase().to_string()
        }
        Err(_) => {
            let mut s = name.to_ascii_lowercase();
            if !s.ends_with('.') {
                s.push('.');
            }
            s
        }
    }
}

/// Record type mnemonic (any case) or RFC 3597 `TYPEnnn` to its code.
pub(crate) fn parse_rtype(rtype: &str) -> Result<u16, LabError> {
    let upper = rtype.trim().to_ascii_uppercase();
    if let Ok(t) = RecordType::from_str(&upper) {
        return Ok(u16::from(t));
    }
    upper
        .strip_prefix("TYPE")
        .and_then(|n| n.parse::<u16>().ok())
        .ok_or_else(|| LabError::RecordType(rtype.to_owned()))
}

/// Canonical mnemonic for a type code, e.g. "AAAA", or "TYPE65432" for unknown codes.
pub(crate) fn rtype_name(code: u16) -> String {
    match RecordType::from(code) {
        RecordType::Unknown(n) => format!("TYPE{n}"),
        t => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        assert_eq!(normalize_name("Example.COM"), "example.com.");
        assert_eq!(normalize_name("example.com."), "example.com.");
        assert_eq!(normalize_name("."), ".");
    }

    #[test]
    fn types_parse() {
        assert_eq!(parse_rtype("aaaa").unwrap(), 28);
        assert_eq!(parse_rtype("TYPE28").unwrap(), 28);
        assert!(parse_rtype("AAA").is_err());
        assert_eq!(rtype_name(28), "AAAA");
        assert_eq!(rtype_name(65432), "TYPE65432");
    }

    #[test]
    fn fault_kinds_parse() {
        assert_eq!(Fault::parse("SERVFAIL"), Some(Fault::ServFail));
        assert_eq!(Fault::parse("truncate"), Some(Fault::TruncateThenRefuseTcp));
        assert_eq!(
            Fault::parse("delay:250"),
            Some(Fault::Delay(Duration::from_millis(250)))
        );
        assert_eq!(Fault::parse("delay:"), None);
        for f in [
            Fault::ServFail,
            Fault::Refused,
            Fault::Timeout,
            Fault::TruncateThenRefuseTcp,
            Fault::Delay(Duration::from_millis(7)),
            Fault::Drop(30),
        ] {
            assert_eq!(Fault::parse(&f.to_string()), Some(f));
        }
        assert_eq!(Fault::parse("slow"), None);
        assert_eq!(Fault::parse("drop:101"), None);
    }

    #[test]
    fn drop_share_is_exact_and_never_twice_in_a_row_up_to_half() {
        for percent in [1u8, 10, 30, 50] {
            for name in ["a.example.", "mx.provider.example."] {
                let dropped: Vec<bool> =
                    (0..1000).map(|k| Fault::drops(percent, name, k)).collect();
                let count = dropped.iter().filter(|d| **d).count();
                assert_eq!(count, usize::from(percent) * 10, "{percent}% of {name}");
                assert!(
                    !dropped.windows(2).any(|w| w[0] && w[1]),
                    "{percent}% of {name}: two drops in a row"
                );
            }
        }
        assert!((0..100).all(|k| Fault::drops(100, "x.", k)));
        assert!((0..100).all(|k| !Fault::drops(0, "x.", k)));
    }

    #[test]
    fn server_wide_loss_yields_to_a_name_fault() {
        let f = Faults::default();
        f.set_loss(20);
        assert_eq!(f.lookup("a.example.", 1), Some(Fault::Drop(20)));
        f.set("a.example", None, Fault::ServFail);
        assert_eq!(f.lookup("a.example.", 1), Some(Fault::ServFail));
        f.clear_all();
        assert_eq!(f.lookup("b.example.", 1), None);
    }

    #[test]
    fn typed_fault_wins_and_clear_is_exact() {
        let f = Faults::default();
        f.set("a.example", None, Fault::Refused);
        f.set("A.example.", Some("aaaa"), Fault::ServFail);
        assert_eq!(f.lookup("a.example.", 28), Some(Fault::ServFail));
        assert_eq!(f.lookup("a.example.", 1), Some(Fault::Refused));
        f.clear("a.example", Some("AAAA"));
        assert_eq!(f.lookup("a.example.", 28), Some(Fault::Refused));
        f.clear_all();
        assert_eq!(f.lookup("a.example.", 1), None);
        assert!(f.try_set("x", Some("nope"), Fault::Timeout).is_err());
    }
}
