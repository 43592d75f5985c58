//! DNS outcomes as plain data: what the I/O layer reports back for one question.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// The record types routing ever asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum QType {
    Mx,
    A,
    Aaaa,
}

impl fmt::Display for QType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QType::Mx => "MX",
            QType::A => "A",
            QType::Aaaa => "AAAA",
        })
    }
}

/// One question to put to DNS. Names are lower-case, without the trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Question {
    pub name: String,
    pub qtype: QType,
}

impl Question {
    pub fn new(name: impl Into<String>, qtype: QType) -> Self {
        Question {
            name: name.into(),
            qtype,
        }
    }
}

impl fmt::Display for Question {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.qtype)
    }
}

/// The parts of a record that routing reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordData {
    /// `exchange` is normalised; the root (null MX) is the empty string.
    Mx {
        preference: u16,
        exchange: String,
    },
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    /// Any other type that showed up in the answer section; ignored by routing.
    Other,
}

/// One answer-section record; `name` is the owner, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub data: RecordData,
}

/// A response that answered the question (NOERROR or NXDOMAIN).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Answer {
    /// RCODE was NXDOMAIN (the last name of any CNAME chain does not exist).
    pub nxdomain: bool,
    /// The answer section (may hold a CNAME chain before the records asked for).
    pub records: Vec<Record>,
    /// RFC 2308 negative TTL, min(SOA TTL, SOA minimum), when the response carried an SOA.
    pub negative_ttl: Option<u32>,
}

/// Why DNS gave no usable answer. Every one of these is temporary for routing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Failure {
    ServFail,
    Refused,
    Timeout,
    /// The UDP answer was truncated and the TCP retry failed.
    Truncated,
    /// The response could not be parsed or did not match the question.
    Malformed(String),
    /// Anything else the transport reported (no route, socket error, ...).
    Network(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::ServFail => f.write_str("SERVFAIL"),
            Failure::Refused => f.write_str("REFUSED"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Truncated => f.write_str("truncated answer and TCP retry failed"),
            Failure::Malformed(d) => write!(f, "malformed answer: {d}"),
            Failure::Network(d) => write!(f, "network error: {d}"),
        }
    }
}

impl Failure {
    /// How much a failure tells the operator: a server's own answer beats silence. Every
    /// client that asks several servers reports the most telling failure when all failed.
    pub fn telling(&self) -> u8 {
        match self {
            Failure::ServFail => 6,
            Failure::Refused => 5,
            Failure::Truncated => 4,
            Failure::Malformed(_) => 3,
            Failure::Timeout => 2,
            Failure::Network(_) => 1,
        }
    }

    /// Keeps in `worst` whichever of it and `self` tells more (the first on a tie).
    pub fn keep_most_telling(self, worst: &mut Option<Failure>) {
        if worst.as_ref().is_none_or(|w| self.telling() > w.telling()) {
            *worst = Some(self);
        }
    }
}

/// What one question produced.
pub type Outcome = Result<Answer, Failure>;
