//! What a computed route looks like: status, exchangers, ordered attempts, TTL, diagnostics.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// The outcome class of a route (docs/routing.md, status table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    NullMx,
    Nxdomain,
    Unroutable,
    Loop,
    Tempfail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NullMx => "null_mx",
            Status::Nxdomain => "nxdomain",
            Status::Unroutable => "unroutable",
            Status::Loop => "loop",
            Status::Tempfail => "tempfail",
        }
    }

    /// The SMTP reply a relay uses when it bounces or defers for this status.
    pub fn reply(self) -> Option<Reply> {
        let (code, enhanced, text) = match self {
            Status::Ok => return None,
            Status::NullMx => (
                556,
                "5.1.10",
                "Recipient domain does not accept mail (null MX)",
            ),
            Status::Nxdomain => (550, "5.1.2", "Recipient domain does not exist"),
            Status::Unroutable => (554, "5.4.4", "Unable to route: no usable mail exchanger"),
            Status::Loop => (554, "5.4.6", "Routing loop: we are the best mail exchanger"),
            Status::Tempfail => (451, "4.4.3", "Temporary DNS failure looking up the route"),
        };
        Some(Reply {
            code,
            enhanced: enhanced.to_string(),
            text: text.to_string(),
        })
    }

    /// sysexits-style exit code; where several routes are printed the highest one wins.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Nxdomain => 68,
            Status::NullMx | Status::Unroutable | Status::Loop => 69,
            Status::Tempfail => 75,
        }
    }

    /// Permanent statuses bounce at once; only `tempfail` is retried.
    pub fn is_permanent_failure(self) -> bool {
        !matches!(self, Status::Ok | Status::Tempfail)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An SMTP reply with its enhanced status code (RFC 3463).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reply {
    pub code: u16,
    pub enhanced: String,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// Stable diagnostic codes. The names are a public interface: never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    DomainLiteral,
    StaticRoute,
    DomainCname,
    CnameLoop,
    MxLookupFailed,
    ImplicitMx,
    NullMx,
    NullMxMixed,
    NullMxNonzeroPreference,
    MxTargetIpLiteral,
    DuplicateMx,
    MxIsLocal,
    MxTargetCname,
    MxTargetNxdomain,
    MxTargetNoAddress,
    MxTargetTempfail,
    MxTargetPrivateAddress,
    AddressLimit,
}

impl Code {
    /// Every code, for documentation and for tests that each one is produced somewhere.
    pub const ALL: [Code; 18] = [
        Code::DomainLiteral,
        Code::StaticRoute,
        Code::DomainCname,
        Code::CnameLoop,
        Code::MxLookupFailed,
        Code::ImplicitMx,
        Code::NullMx,
        Code::NullMxMixed,
        Code::NullMxNonzeroPreference,
        Code::MxTargetIpLiteral,
        Code::DuplicateMx,
        Code::MxIsLocal,
        Code::MxTargetCname,
        Code::MxTargetNxdomain,
        Code::MxTargetNoAddress,
        Code::MxTargetTempfail,
        Code::MxTargetPrivateAddress,
        Code::AddressLimit,
    ];

    pub fn level(self) -> Level {
        use Code::*;
        match self {
            DomainLiteral | StaticRoute | DomainCname | ImplicitMx | NullMx | MxIsLocal
            | AddressLimit => Level::Info,
            NullMxNonzeroPreference
            | DuplicateMx
            | MxTargetCname
            | MxTargetTempfail
            | MxTargetPrivateAddress => Level::Warning,
            CnameLoop | MxLookupFailed | NullMxMixed | MxTargetIpLiteral | MxTargetNxdomain
            | MxTargetNoAddress => Level::Error,
        }
    }

    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            DomainLiteral => "domain_literal",
            StaticRoute => "static_route",
            DomainCname => "domain_cname",
            CnameLoop => "cname_loop",
            MxLookupFailed => "mx_lookup_failed",
            ImplicitMx => "implicit_mx",
            NullMx => "null_mx",
            NullMxMixed => "null_mx_mixed",
            NullMxNonzeroPreference => "null_mx_nonzero_preference",
            MxTargetIpLiteral => "mx_target_ip_literal",
            DuplicateMx => "duplicate_mx",
            MxIsLocal => "mx_is_local",
            MxTargetCname => "mx_target_cname",
            MxTargetNxdomain => "mx_target_nxdomain",
            MxTargetNoAddress => "mx_target_no_address",
            MxTargetTempfail => "mx_target_tempfail",
            MxTargetPrivateAddress => "mx_target_private_address",
            AddressLimit => "address_limit",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub level: Level,
    pub code: Code,
    pub message: String,
    /// The exchanger host the diagnostic is about; absent when it is about the domain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            level: code.level(),
            code,
            message: message.into(),
            subject: None,
        }
    }

    /// A diagnostic about one exchanger host.
    pub fn about(code: Code, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            subject: Some(subject.into()),
            ..Diagnostic::new(code, message)
        }
    }
}

/// Why an exchanger gets no attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unusable {
    NullMx,
    IpLiteral,
    Nxdomain,
    NoAddress,
    Tempfail,
    /// This exchanger is us.
    Local,
    /// Preference equal to or worse than ours: sending there could loop back.
    NotBetterThanLocal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exchanger {
    pub preference: u16,
    /// Host name without trailing dot; "." for a null MX.
    pub host: String,
    #[serde(serialize_with = "crate::ip_text::serialize_ips")]
    pub addresses: Vec<IpAddr>,
    /// SMTP port the attempts at this exchanger use.
    pub port: u16,
    pub usable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unusable: Option<Unusable>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attempt {
    pub preference: u16,
    pub host: String,
    #[serde(serialize_with = "crate::ip_text::serialize_ip")]
    pub ip: IpAddr,
    pub port: u16,
}

/// A computed route (docs/routing.md, "Inputs and outputs").
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// The normalised domain, or the bracketed literal.
    pub domain: String,
    pub status: Status,
    pub implicit: bool,
    /// Seconds this route may be cached.
    pub ttl: u32,
    pub reply: Option<Reply>,
    pub exchangers: Vec<Exchanger>,
    pub attempts: Vec<Attempt>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Route {
    pub fn has_code(&self, code: Code) -> bool {
        self.diagnostics.iter().any(|d| d.code == code)
    }
}
