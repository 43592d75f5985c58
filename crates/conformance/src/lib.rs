//! The conformance table of docs/routing.md: each case is a few lines of zone text, a target and
//! the route expected. [`run_case`] checks one case against any nameserver speaking real DNS.

mod cases;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mx_core::{Code, Policy, Route, Status};
use mx_dns::{ClientOptions, HickoryClient, Nameservers, Router};

pub use cases::cases;

pub struct Case {
    /// Named after the rule's step in docs/routing.md.
    pub name: &'static str,
    pub zone: &'static str,
    pub input: &'static str,
    pub policy: fn(&mut Policy),
    pub status: Status,
    pub domain: Option<&'static str>,
    pub implicit: bool,
    pub ttl: Option<u32>,
    /// "PREF HOST STATE", STATE being `usable` or the unusable reason.
    pub exchangers: Option<&'static [&'static str]>,
    /// "PREF HOST IP:PORT", in order (hosts of one preference compared as a set).
    pub attempts: &'static [&'static str],
    /// The exact set of diagnostic codes.
    pub codes: &'static [Code],
}

impl Case {
    /// The zone text as a server should load it (the table indents it for reading).
    pub fn zone_text(&self) -> String {
        let lines: Vec<&str> = self.zone.lines().map(str::trim).collect();
        lines.join("\n")
    }

    /// Fault switches (`$FAULT`) are the lab server's own: other servers cannot play them.
    pub fn needs_faults(&self) -> bool {
        self.zone.contains("$FAULT")
    }
}

fn no_policy_change(_: &mut Policy) {}

pub(crate) const fn case(name: &'static str, input: &'static str, zone: &'static str) -> Case {
    Case {
        name,
        zone,
        input,
        policy: no_policy_change,
        status: Status::Ok,
        domain: None,
        implicit: false,
        ttl: None,
        exchangers: None,
        attempts: &[],
        codes: &[],
    }
}

/// Route `case.input` through `nameserver` and compare with the expectation.
pub async fn run_case(case: &Case, nameserver: SocketAddr) -> Result<Route, String> {
    let mut policy = Policy::default();
    (case.policy)(&mut policy);
    let options = ClientOptions {
        timeout: Duration::from_millis(1500),
        attempts: 1,
    };
    let client = HickoryClient::new(&Nameservers::Explicit(vec![nameserver]), &options)
        .map_err(|e| e.to_string())?;
    let router = Router::new(Arc::new(client), policy).with_seed(5321);
    let route = router.route(case.input).await.map_err(|e| e.to_string())?;
    check(case, &route).map(|()| route)
}

pub fn check(case: &Case, route: &Route) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut expect = |what: &str, want: String, got: String| {
        if want != got {
            problems.push(format!("{what}: expected {want}, got {got}"));
        }
    };
    expect("status", case.status.to_string(), route.status.to_string());
    if let Some(domain) = case.domain {
        expect("domain", domain.into(), route.domain.clone());
    }
    expect(
        "implicit",
        case.implicit.to_string(),
        route.implicit.to_string(),
    );
    if let Some(ttl) = case.ttl {
        expect("ttl", ttl.to_string(), route.ttl.to_string());
    }
    let expected_reply = case
        .status
        .reply()
        .map(|r| format!("{} {}", r.code, r.enhanced));
    let reply = route
        .reply
        .as_ref()
        .map(|r| format!("{} {}", r.code, r.enhanced));
    expect("reply", format!("{expected_reply:?}"), format!("{reply:?}"));
    if let Some(exchangers) = case.exchangers {
        let mut want: Vec<String> = exchangers.iter().map(|s| s.to_string()).collect();
        let mut got: Vec<String> = route
            .exchangers
            .iter()
            .map(|e| {
                let state = match e.unusable {
                    None => "usable".to_string(),
                    Some(why) => format!("{why:?}"),
                };
                format!("{} {} {state}", e.preference, e.host)
            })
            .collect();
        want.sort_by_key(|s| preference_key(s));
        got.sort_by_key(|s| preference_key(s));
        expect("exchangers", format!("{want:?}"), format!("{got:?}"));
    }
    let got: Vec<String> = route
        .attempts
        .iter()
        .map(|a| {
            let addr = SocketAddr::new(a.ip, a.port);
            format!("{} {} {addr}", a.preference, a.host)
        })
        .collect();
    expect(
        "attempts",
        format!(
            "{:?}",
            canonical(case.attempts.iter().map(|s| s.to_string()).collect())
        ),
        format!("{:?}", canonical(got)),
    );
    let mut want_codes: Vec<&str> = case.codes.iter().map(|c| c.as_str()).collect();
    let mut got_codes: Vec<&str> = route.diagnostics.iter().map(|d| d.code.as_str()).collect();
    want_codes.sort();
    want_codes.dedup();
    got_codes.sort();
    got_codes.dedup();
    expect("codes", format!("{want_codes:?}"), format!("{got_codes:?}"));
    if problems.is_empty() {
        Ok(())
    } else {
        let diagnostics: Vec<String> = route
            .diagnostics
            .iter()
            .map(|d| format!("{} {}: {}", d.level.as_str(), d.code, d.message))
            .collect();
        Err(format!(
            "{}:\n  {}\n  (route diagnostics: {})",
            case.name,
            problems.join("\n  "),
            diagnostics.join("; ")
        ))
    }
}

/// (preference, host): the shuffle only moves hosts within one preference.
fn preference_key(line: &str) -> (u16, String) {
    let mut parts = line.split(' ');
    let pref = parts
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(u16::MAX);
    (pref, parts.next().unwrap_or_default().to_string())
}

/// Attempts with hosts of equal preference in name order, each host's addresses kept in order.
fn canonical(mut attempts: Vec<String>) -> Vec<String> {
    attempts.sort_by_key(|s| preference_key(s));
    attempts
}

/// Every code the table expects somewhere (for the test that all codes are covered).
pub fn codes_covered() -> std::collections::BTreeSet<Code> {
    cases()
        .iter()
        .flat_map(|c| c.codes.iter().copied())
        .collect()
}
