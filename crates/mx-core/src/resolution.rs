//! Steps 2–10 of docs/routing.md as a sans-io state machine.
//!
//! A [`Resolution`] says which DNS questions it needs ([`Resolution::questions`]), is fed
//! their outcomes ([`Resolution::answer`]), and when nothing is left to ask it yields the
//! [`Route`] ([`Resolution::finish`]). Whoever drives it owns the sockets, the clock and
//! the cache; the rules live here only, so `route`, the relay and `bulk` cannot disagree.

use std::net::IpAddr;

use rand::RngCore;
use rand::seq::SliceRandom;

use crate::CoreError;
use crate::IpText;
use crate::chase::{Chase, Resolved, Step};
use crate::dns::{Failure, Outcome, QType, Question, RecordData};
use crate::domain::{Target, name_as_ip, parse_target};
use crate::policy::{IpStrategy, Policy, StaticRoute};
use crate::route::{Attempt, Code, Diagnostic, Exchanger, Route, Status, Unusable};

pub struct Resolution<'p> {
    policy: &'p Policy,
    domain: String,
    stage: Stage,
    diagnostics: Vec<Diagnostic>,
    /// Lowest TTL of everything the route used so far.
    ttl: Option<u32>,
}

enum Stage {
    Mx(Chase),
    Addresses(Exchange),
    Done(Box<Route>),
}

/// The exchangers of a domain while their addresses are looked up.
struct Exchange {
    implicit: bool,
    candidates: Vec<Candidate>,
}

struct Candidate {
    preference: u16,
    host: String,
    port: u16,
    /// Set when the candidate is out before any address lookup.
    unusable: Option<Unusable>,
    v4: Family,
    v6: Family,
}

enum Family {
    NotWanted,
    Pending(Chase),
    Done(Chase, Resolved),
}

impl Family {
    fn start(wanted: bool, host: &str, qtype: QType) -> Family {
        if wanted {
            Family::Pending(Chase::new(host, qtype))
        } else {
            Family::NotWanted
        }
    }

    fn resolved(&self) -> Option<&Resolved> {
        match self {
            Family::Done(_, r) => Some(r),
            _ => None,
        }
    }

    fn addresses(&self) -> Vec<IpAddr> {
        let Some(Resolved::Found { data, .. }) = self.resolved() else {
            return Vec::new();
        };
        data.iter()
            .filter_map(|d| match *d {
                RecordData::A(ip) => Some(IpAddr::V4(ip)),
                RecordData::Aaaa(ip) => Some(IpAddr::V6(ip)),
                _ => None,
            })
            .collect()
    }

    fn followed_cname(&self) -> Option<&str> {
        match self {
            Family::Done(chase, _) if chase.hops() > 0 => Some(chase.end()),
            _ => None,
        }
    }
}

impl<'p> Resolution<'p> {
    /// Step 1 and 2: normalise the input and decide what to ask first.
    pub fn start(input: &str, policy: &'p Policy) -> Result<Self, CoreError> {
        let target = parse_target(input)?;
        let mut this = Resolution {
            policy,
            domain: target.display_name(),
            stage: Stage::Mx(Chase::placeholder()),
            diagnostics: Vec::new(),
            ttl: None,
        };
        this.stage = match target {
            Target::Literal(ip) => {
                this.note(
                    Code::DomainLiteral,
                    format!("address literal: delivered straight to {ip}, without DNS"),
                );
                this.direct(ip, policy.smtp_port)
            }
            Target::Domain(domain) => match policy.static_routes.get(&domain) {
                Some(StaticRoute::Address { ip, port }) => {
                    this.note(
                        Code::StaticRoute,
                        format!("static route to [{ip}] replaces MX lookup"),
                    );
                    this.direct(*ip, port.unwrap_or(policy.smtp_port))
                }
                Some(StaticRoute::Host { name, port }) => {
                    this.note(
                        Code::StaticRoute,
                        format!("static route to {name} replaces MX lookup"),
                    );
                    let port = port.unwrap_or(policy.smtp_port);
                    let candidate = this.candidate(0, name.clone(), port);
                    this.addresses_stage(false, vec![candidate])
                }
                None => Stage::Mx(Chase::new(&domain, QType::Mx)),
            },
        };
        Ok(this)
    }

    /// The normalised domain (or bracketed literal) this resolution is for.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Questions still waiting for an outcome, without repeats, in order.
    pub fn questions(&self) -> Vec<Question> {
        let mut questions: Vec<Question> = match &self.stage {
            Stage::Mx(chase) => vec![chase.question()],
            Stage::Addresses(exchange) => exchange
                .candidates
                .iter()
                .flat_map(|c| [&c.v4, &c.v6])
                .filter_map(|f| match f {
                    Family::Pending(chase) => Some(chase.question()),
                    _ => None,
                })
                .collect(),
            Stage::Done(_) => Vec::new(),
        };
        // Sorted in place rather than through a set: this runs every round of every domain.
        questions.sort_unstable();
        questions.dedup();
        questions
    }

    pub fn is_complete(&self) -> bool {
        matches!(self.stage, Stage::Done(_))
            || matches!(&self.stage, Stage::Addresses(_) if self.questions().is_empty())
    }

    /// Feed the outcome of one question. Outcomes for questions not asked are ignored.
    pub fn answer(&mut self, question: &Question, outcome: Outcome) {
        self.answer_ref(question, &outcome);
    }

    /// [`Resolution::answer`] with a borrowed outcome, for a driver that shares one outcome
    /// between many resolutions (a cache): only the records the route keeps are copied.
    pub fn answer_ref(&mut self, question: &Question, outcome: &Outcome) {
        let stage = std::mem::replace(&mut self.stage, Stage::Mx(Chase::placeholder()));
        self.stage = match stage {
            Stage::Mx(mut chase) if chase.asks(question) => {
                match chase.feed(outcome, self.policy.max_cname_hops) {
                    Step::Ask => Stage::Mx(chase),
                    Step::Done(resolved) => self.mx_resolved(&chase, resolved),
                }
            }
            Stage::Addresses(mut exchange) => {
                let max_hops = self.policy.max_cname_hops;
                for family in exchange
                    .candidates
                    .iter_mut()
                    .flat_map(|c| [&mut c.v4, &mut c.v6])
                {
                    let Family::Pending(chase) = family else {
                        continue;
                    };
                    if !chase.asks(question) {
                        continue;
                    }
                    if let Step::Done(resolved) = chase.feed(outcome, max_hops) {
                        let chase = std::mem::replace(chase, Chase::placeholder());
                        *family = Family::Done(chase, resolved);
                    }
                }
                Stage::Addresses(exchange)
            }
            other => other,
        };
    }

    /// Steps 6–10: order the exchangers and produce the route. `rng` drives the shuffle of
    /// equal preferences. Questions still unanswered count as timed out.
    pub fn finish(mut self, rng: &mut dyn RngCore) -> Route {
        for question in self.questions() {
            self.answer(&question, Err(Failure::Timeout));
        }
        match std::mem::replace(&mut self.stage, Stage::Mx(Chase::placeholder())) {
            Stage::Done(route) => *route,
            Stage::Addresses(exchange) => self.conclude(exchange, rng),
            // Unreachable after the loop above, but a route is still owed.
            Stage::Mx(_) => self.failed(Status::Tempfail, false, Vec::new()),
        }
    }

    // --- step 3 and 4: the MX answer -------------------------------------------------------

    fn mx_resolved(&mut self, chase: &Chase, resolved: Resolved) -> Stage {
        if chase.hops() > 0 && resolved != Resolved::CnameLoop {
            self.note(
                Code::DomainCname,
                format!(
                    "{} is a CNAME chain to {}; routed as {}",
                    self.domain,
                    chase.end(),
                    chase.end()
                ),
            );
        }
        match resolved {
            Resolved::Failed(failure) => {
                self.note(
                    Code::MxLookupFailed,
                    format!("MX query for {} failed: {failure}", chase.end()),
                );
                let truncated = failure == Failure::Truncated;
                Stage::Done(Box::new(self.failed(
                    Status::Tempfail,
                    truncated,
                    Vec::new(),
                )))
            }
            Resolved::CnameLoop => {
                self.note(
                    Code::CnameLoop,
                    format!(
                        "CNAME chain from {} loops or is longer than {} hops",
                        self.domain, self.policy.max_cname_hops
                    ),
                );
                Stage::Done(Box::new(self.failed(Status::Tempfail, false, Vec::new())))
            }
            Resolved::NxDomain { negative_ttl } => {
                self.use_negative_ttl(negative_ttl);
                Stage::Done(Box::new(self.failed(Status::Nxdomain, false, Vec::new())))
            }
            Resolved::NoData { negative_ttl } => {
                self.use_negative_ttl(negative_ttl);
                let host = chase.end().to_string();
                self.note(
                    Code::ImplicitMx,
                    format!("no MX records: {host} itself is the implicit MX (RFC 5321 §5.1)"),
                );
                let candidate = self.candidate(0, host, self.policy.smtp_port);
                self.addresses_stage(true, vec![candidate])
            }
            Resolved::Found { data, ttl } => {
                self.use_ttl(ttl);
                let mut mx: Vec<(u16, String)> = data
                    .into_iter()
                    .filter_map(|d| match d {
                        RecordData::Mx {
                            preference,
                            exchange,
                        } => Some((preference, exchange)),
                        _ => None,
                    })
                    .collect();
                mx.sort();
                if mx.iter().any(|(_, host)| host.is_empty()) {
                    return Stage::Done(Box::new(self.null_mx(&mx)));
                }
                self.exchangers_from_mx(mx)
            }
        }
    }

    fn null_mx(&mut self, mx: &[(u16, String)]) -> Route {
        self.note(
            Code::NullMx,
            format!(
                "{} publishes a null MX: it accepts no mail (RFC 7505)",
                self.domain
            ),
        );
        if mx.len() > 1 {
            self.note(
                Code::NullMxMixed,
                "null MX stands beside other MX records; they are ignored and no mail is sent",
            );
        }
        if let Some((pref, _)) = mx.iter().find(|(p, host)| host.is_empty() && *p != 0) {
            self.note(
                Code::NullMxNonzeroPreference,
                format!("null MX has preference {pref}; RFC 7505 asks for 0"),
            );
        }
        let exchangers = mx
            .iter()
            .map(|(preference, host)| Exchanger {
                preference: *preference,
                host: if host.is_empty() {
                    ".".into()
                } else {
                    host.clone()
                },
                addresses: Vec::new(),
                port: self.policy.smtp_port,
                usable: false,
                unusable: Some(Unusable::NullMx),
            })
            .collect();
        self.failed(Status::NullMx, false, exchangers)
    }

    /// Step 5 and the name half of step 7, on MX records sorted by preference then name.
    fn exchangers_from_mx(&mut self, mx: Vec<(u16, String)>) -> Stage {
        let mut candidates: Vec<Candidate> = Vec::new();
        for (preference, host) in mx {
            // Every host seen so far is a candidate already: no separate list of them.
            if candidates.iter().any(|c| c.host == host) {
                self.note_on(
                    Code::DuplicateMx,
                    &host,
                    format!("{host} is listed more than once; kept at its lowest preference"),
                );
                continue;
            }
            let ip = name_as_ip(&host);
            let mut candidate = self.candidate(preference, host, self.policy.smtp_port);
            let host = candidate.host.as_str();
            if let Some(ip) = ip {
                self.note_on(
                    Code::MxTargetIpLiteral,
                    host,
                    format!("MX {preference} {host}. is an IP address, not a host name"),
                );
                candidate.v4 = Family::NotWanted;
                candidate.v6 = Family::NotWanted;
                if self.policy.allow_mx_to_ip {
                    candidate.v4 = literal_family(ip, QType::A, host);
                    candidate.v6 = literal_family(ip, QType::Aaaa, host);
                } else {
                    candidate.unusable = Some(Unusable::IpLiteral);
                }
            }
            candidates.push(candidate);
        }
        // An exchanger that is us by name: everything at or after its preference is out,
        // and needs no address lookup.
        let local_pref = candidates
            .iter()
            .filter(|c| self.policy.local_names.contains(&c.host))
            .map(|c| c.preference)
            .min();
        if let Some(local_pref) = local_pref {
            for c in &mut candidates {
                if c.preference >= local_pref {
                    let why = if self.policy.local_names.contains(&c.host) {
                        Unusable::Local
                    } else {
                        Unusable::NotBetterThanLocal
                    };
                    c.unusable.get_or_insert(why);
                    c.v4 = Family::NotWanted;
                    c.v6 = Family::NotWanted;
                }
            }
        }
        self.addresses_stage(false, candidates)
    }

    // --- step 8 to 10 ---------------------------------------------------------------------

    fn conclude(mut self, exchange: Exchange, rng: &mut dyn RngCore) -> Route {
        let strategy = self.policy.ip_strategy;
        let mut exchangers: Vec<(Exchanger, bool)> = Vec::new(); // (exchanger, failed temporarily)
        let implicit = exchange.implicit;
        for c in exchange.candidates {
            let (exchanger, tempfailed) = self.judge(c, strategy);
            exchangers.push((exchanger, tempfailed));
        }

        // Step 7, by address: an exchanger resolving to one of our addresses is us too.
        let local_pref = exchangers
            .iter()
            .filter(|(e, _)| {
                e.unusable == Some(Unusable::Local)
                    || e.addresses
                        .iter()
                        .any(|ip| self.policy.local_addresses.contains(ip))
            })
            .map(|(e, _)| e.preference)
            .min();
        if let Some(local_pref) = local_pref {
            let mut dropped = 0;
            for (e, _) in exchangers.iter_mut() {
                if e.preference >= local_pref {
                    dropped += 1;
                    let is_us = self.policy.local_names.contains(&e.host)
                        || e.addresses
                            .iter()
                            .any(|ip| self.policy.local_addresses.contains(ip));
                    let why = if is_us {
                        Unusable::Local
                    } else {
                        Unusable::NotBetterThanLocal
                    };
                    e.usable = false;
                    e.unusable = Some(why);
                }
            }
            self.note(
                Code::MxIsLocal,
                format!(
                    "we are an exchanger at preference {local_pref}: {dropped} exchanger(s) at that preference or worse dropped"
                ),
            );
        }

        let any_usable = exchangers.iter().any(|(e, _)| e.usable);
        let any_tempfail = exchangers
            .iter()
            .filter(|(e, _)| local_pref.is_none_or(|p| e.preference < p))
            .any(|(_, t)| *t);
        let mut exchangers: Vec<Exchanger> = exchangers.into_iter().map(|(e, _)| e).collect();
        order_exchangers(&mut exchangers, rng);
        if !any_usable {
            let status = if any_tempfail {
                Status::Tempfail
            } else if local_pref.is_some() {
                Status::Loop
            } else {
                Status::Unroutable
            };
            let mut route = self.failed(status, false, exchangers);
            route.implicit = implicit;
            return route;
        }

        let (attempts, cut) = build_attempts(&exchangers, self.policy.mx_address_limit);
        if cut > 0 {
            self.note(
                Code::AddressLimit,
                format!(
                    "{cut} address(es) beyond the limit of {} left out (one kept per preference level)",
                    self.policy.mx_address_limit.max(1)
                ),
            );
        }
        Route {
            domain: self.domain,
            status: Status::Ok,
            implicit,
            ttl: self.ttl.unwrap_or(0),
            reply: None,
            exchangers,
            attempts,
            diagnostics: self.diagnostics,
        }
    }

    /// Step 8 for one candidate: its addresses, whether it is usable, and its diagnostics.
    /// Takes the candidate whole: its host becomes the exchanger's without a copy.
    fn judge(&mut self, c: Candidate, strategy: IpStrategy) -> (Exchanger, bool) {
        let v4 = c.v4.addresses();
        let v6 = c.v6.addresses();
        for family in [&c.v4, &c.v6] {
            if let Some(Resolved::Found { ttl, .. }) = family.resolved() {
                self.use_ttl(*ttl);
            }
            if let Some(Resolved::NoData { negative_ttl } | Resolved::NxDomain { negative_ttl }) =
                family.resolved()
            {
                self.use_negative_ttl(*negative_ttl);
            }
        }
        if let Some(end) = c.v4.followed_cname().or(c.v6.followed_cname()) {
            self.note_on(
                Code::MxTargetCname,
                &c.host,
                format!(
                    "MX target {} is a CNAME to {end} (RFC 2181 §10.3 forbids it; followed anyway)",
                    c.host
                ),
            );
        }
        let mut tempfailed = false;
        for (family, name) in [(&c.v4, "A"), (&c.v6, "AAAA")] {
            match family.resolved() {
                Some(Resolved::Failed(failure)) => {
                    tempfailed = true;
                    self.note_on(
                        Code::MxTargetTempfail,
                        &c.host,
                        format!("{name} lookup for {} failed: {failure}", c.host),
                    );
                }
                Some(Resolved::CnameLoop) => {
                    tempfailed = true;
                    self.note_on(
                        Code::MxTargetTempfail,
                        &c.host,
                        format!("{name} lookup for {} hit a CNAME loop", c.host),
                    );
                }
                _ => {}
            }
        }
        let addresses = order_addresses(v4, v6, strategy);
        let mut private = addresses
            .iter()
            .filter(|ip| is_special_purpose(ip))
            .peekable();
        if private.peek().is_some() {
            // Written into the message directly: a string per address and their join cost
            // as much again, for every exchanger of a private or documentation range.
            let mut message = format!("{} has non-public address(es) ", c.host);
            for (i, ip) in private.enumerate() {
                if i > 0 {
                    message.push_str(", ");
                }
                message.push_str(&IpText::new(ip));
            }
            self.note_on(Code::MxTargetPrivateAddress, &c.host, message);
        }
        let mut unusable = c.unusable;
        if unusable.is_none() && addresses.is_empty() {
            let wanted = [&c.v4, &c.v6]
                .into_iter()
                .filter(|f| !matches!(f, Family::NotWanted));
            let all_nx = wanted
                .clone()
                .all(|f| matches!(f.resolved(), Some(Resolved::NxDomain { .. })));
            unusable = Some(if tempfailed {
                Unusable::Tempfail
            } else if all_nx {
                self.note_on(
                    Code::MxTargetNxdomain,
                    &c.host,
                    format!("MX target {} does not exist (NXDOMAIN)", c.host),
                );
                Unusable::Nxdomain
            } else {
                let families = match strategy {
                    IpStrategy::Ipv4Only => "A",
                    IpStrategy::Ipv6Only => "AAAA",
                    _ => "A or AAAA",
                };
                self.note_on(
                    Code::MxTargetNoAddress,
                    &c.host,
                    format!("MX target {} has no {families} record", c.host),
                );
                Unusable::NoAddress
            });
        }
        let exchanger = Exchanger {
            preference: c.preference,
            host: c.host,
            addresses,
            port: c.port,
            usable: unusable.is_none(),
            unusable,
        };
        (exchanger, tempfailed)
    }

    // --- helpers ---------------------------------------------------------------------------

    fn candidate(&self, preference: u16, host: String, port: u16) -> Candidate {
        let strategy = self.policy.ip_strategy;
        Candidate {
            preference,
            v4: Family::start(strategy.wants_ipv4(), &host, QType::A),
            v6: Family::start(strategy.wants_ipv6(), &host, QType::Aaaa),
            host,
            port,
            unusable: None,
        }
    }

    fn addresses_stage(&mut self, implicit: bool, candidates: Vec<Candidate>) -> Stage {
        Stage::Addresses(Exchange {
            implicit,
            candidates,
        })
    }

    /// A route with one attempt and no DNS (literal or static address).
    fn direct(&mut self, ip: IpAddr, port: u16) -> Stage {
        let host = self.domain.clone();
        Stage::Done(Box::new(Route {
            domain: self.domain.clone(),
            status: Status::Ok,
            implicit: false,
            ttl: 0,
            reply: None,
            exchangers: vec![Exchanger {
                preference: 0,
                host: host.clone(),
                addresses: vec![ip],
                port,
                usable: true,
                unusable: None,
            }],
            attempts: vec![Attempt {
                preference: 0,
                host,
                ip,
                port,
            }],
            diagnostics: std::mem::take(&mut self.diagnostics),
        }))
    }

    fn failed(&mut self, status: Status, truncated: bool, exchangers: Vec<Exchanger>) -> Route {
        let ttl = match status {
            // A truncated answer whose TCP retry failed says nothing about the next try.
            Status::Tempfail if truncated => 0,
            Status::Tempfail => self.policy.tempfail_ttl,
            _ => self.ttl.unwrap_or(0),
        };
        Route {
            domain: self.domain.clone(),
            status,
            implicit: false,
            ttl,
            reply: status.reply(),
            exchangers,
            attempts: Vec::new(),
            diagnostics: std::mem::take(&mut self.diagnostics),
        }
    }

    fn note(&mut self, code: Code, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::new(code, message));
    }

    fn note_on(&mut self, code: Code, host: &str, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::about(code, host, message));
    }

    fn use_ttl(&mut self, ttl: u32) {
        self.ttl = Some(self.ttl.map_or(ttl, |t| t.min(ttl)));
    }

    /// RFC 2308: a negative answer without an SOA must not be cached at all.
    fn use_negative_ttl(&mut self, negative_ttl: Option<u32>) {
        self.use_ttl(negative_ttl.unwrap_or(0).min(self.policy.negative_ttl_cap));
    }
}

/// Step 6: sort by preference, shuffle uniformly inside each preference.
fn order_exchangers(exchangers: &mut [Exchanger], rng: &mut dyn RngCore) {
    exchangers.sort_by_key(|e| e.preference);
    for group in exchangers.chunk_by_mut(|a, b| a.preference == b.preference) {
        group.shuffle(rng);
    }
}

/// Step 9: attempts in order, cut at the limit, but one address kept for every preference
/// level so a multi-homed primary never starves the backup. Returns how many were cut.
fn build_attempts(exchangers: &[Exchanger], limit: usize) -> (Vec<Attempt>, usize) {
    let limit = limit.max(1);
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut cut = 0;
    let addresses = exchangers
        .iter()
        .filter(|e| e.usable)
        .flat_map(|e| e.addresses.iter().map(move |ip| (e, *ip)));
    for (i, (e, ip)) in addresses.enumerate() {
        // The levels kept so far are exactly those of the attempts kept so far, so no set of
        // them is built: one pass, and only the attempts kept are allocated.
        if i < limit || !attempts.iter().any(|a| a.preference == e.preference) {
            attempts.push(Attempt {
                preference: e.preference,
                host: e.host.clone(),
                ip,
                port: e.port,
            });
        } else {
            cut += 1;
        }
    }
    (attempts, cut)
}

/// Give a route taken from a cache the fresh shuffle that step 6 asks of every route.
pub fn reshuffle(route: &mut Route, policy: &Policy, rng: &mut dyn RngCore) {
    order_exchangers(&mut route.exchangers, rng);
    if route.status == Status::Ok && !route.attempts.is_empty() {
        route.attempts = build_attempts(&route.exchangers, policy.mx_address_limit).0;
    }
}

/// An `allow_mx_to_ip` exchange: the address is already known, no query needed.
fn literal_family(ip: IpAddr, qtype: QType, host: &str) -> Family {
    let data = match (ip, qtype) {
        (IpAddr::V4(v4), QType::A) => RecordData::A(v4),
        (IpAddr::V6(v6), QType::Aaaa) => RecordData::Aaaa(v6),
        _ => return Family::NotWanted,
    };
    Family::Done(
        Chase::new(host, qtype),
        Resolved::Found {
            data: vec![data],
            ttl: u32::MAX,
        },
    )
}

/// Step 8: one host's addresses in the family strategy's order, DNS order kept within a family.
pub fn order_addresses(v4: Vec<IpAddr>, v6: Vec<IpAddr>, strategy: IpStrategy) -> Vec<IpAddr> {
    match strategy {
        IpStrategy::Ipv4ThenIpv6 => v4.into_iter().chain(v6).collect(),
        IpStrategy::Ipv6ThenIpv4 => v6.into_iter().chain(v4).collect(),
        IpStrategy::Ipv4Only => v4,
        IpStrategy::Ipv6Only => v6,
        IpStrategy::Any => {
            let mut out = Vec::with_capacity(v4.len() + v6.len());
            let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
            loop {
                match (a.next(), b.next()) {
                    (None, None) => break out,
                    (x, y) => out.extend(x.into_iter().chain(y)),
                }
            }
        }
    }
}

/// Loopback, private, link-local, unspecified, shared (CGNAT) or documentation ranges.
pub fn is_special_purpose(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_special_purpose(&IpAddr::V4(v4)))
        }
    }
}
