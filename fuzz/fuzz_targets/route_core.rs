//! Fuzz the pure routing core: an arbitrary input, an arbitrary table of DNS outcomes over a
//! small set of names (so CNAME chains, loops, shared exchangers and null MX really occur) and
//! an arbitrary policy go through `mx_core::route_from_outcomes`; the route must keep the
//! invariants every caller relies on.

#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mx_core::{
    Answer, Code, Failure, IpStrategy, Outcome, Policy, QType, Question, Record, RecordData, Route,
    StaticRoute, Status, normalize_domain, parse_target, reshuffle, route_from_outcomes,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Every name in the generated DNS world. "" is the root (a null MX exchange); two are IP
/// addresses, which an MX exchange must not be.
const NAMES: [&str; 11] = [
    "d.test",
    "alias.test",
    "mx1.d.test",
    "mx2.d.test",
    "mx3.d.test",
    "loop-a.test",
    "loop-b.test",
    "gone.test",
    "127.0.0.25",
    "::1",
    "",
];

const V4: [Ipv4Addr; 6] = [
    Ipv4Addr::new(127, 0, 0, 1),
    Ipv4Addr::new(127, 0, 0, 25),
    Ipv4Addr::new(10, 0, 0, 1),
    Ipv4Addr::new(192, 0, 2, 1),
    Ipv4Addr::new(1, 2, 3, 4),
    Ipv4Addr::new(0, 0, 0, 0),
];

const V6: [Ipv6Addr; 6] = [
    Ipv6Addr::LOCALHOST,
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x7f00, 1),
    Ipv6Addr::new(0x2606, 0x4700, 0, 0, 0, 0, 0, 0x1111),
    Ipv6Addr::UNSPECIFIED,
];

#[derive(Arbitrary, Debug, Clone, Copy)]
struct NameIx(u8);

impl NameIx {
    fn get(self) -> &'static str {
        NAMES[self.0 as usize % NAMES.len()]
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct AddrIx(u8);

impl AddrIx {
    fn v4(self) -> Ipv4Addr {
        V4[self.0 as usize % V4.len()]
    }
    fn v6(self) -> Ipv6Addr {
        V6[self.0 as usize % V6.len()]
    }
    /// Either family: the local-address and static-route pool.
    fn any(self) -> IpAddr {
        if self.0.is_multiple_of(2) {
            IpAddr::V4(AddrIx(self.0 / 2).v4())
        } else {
            IpAddr::V6(AddrIx(self.0 / 2).v6())
        }
    }
}

#[derive(Arbitrary, Debug)]
enum InputSpec {
    Domain(NameIx),
    Address(NameIx),
    Literal(AddrIx),
    Raw(String),
}

impl InputSpec {
    fn text(&self) -> String {
        match self {
            InputSpec::Domain(n) => n.get().to_owned(),
            InputSpec::Address(n) => format!("user@{}", n.get()),
            InputSpec::Literal(a) => match a.any() {
                IpAddr::V4(ip) => format!("<user@[{ip}]>"),
                IpAddr::V6(ip) => format!("user@[IPv6:{ip}]"),
            },
            InputSpec::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum QTypeSpec {
    Mx,
    A,
    Aaaa,
}

#[derive(Arbitrary, Debug)]
enum DataSpec {
    Mx { preference: u16, exchange: NameIx },
    A(AddrIx),
    Aaaa(AddrIx),
    Cname(NameIx),
    Other,
}

#[derive(Arbitrary, Debug)]
struct RecordSpec {
    /// `None`: the name the question asked about.
    owner: Option<NameIx>,
    ttl: u32,
    data: DataSpec,
}

#[derive(Arbitrary, Debug)]
enum OutcomeSpec {
    Answer {
        nxdomain: bool,
        records: Vec<RecordSpec>,
        negative_ttl: Option<u32>,
    },
    ServFail,
    Refused,
    Timeout,
    Truncated,
    Malformed,
    Network,
}

#[derive(Arbitrary, Debug)]
struct Entry {
    name: NameIx,
    qtype: QTypeSpec,
    outcome: OutcomeSpec,
}

#[derive(Arbitrary, Debug)]
enum StrategySpec {
    Ipv4ThenIpv6,
    Ipv6ThenIpv4,
    Ipv4Only,
    Ipv6Only,
    Any,
}

#[derive(Arbitrary, Debug)]
enum StaticSpec {
    Address(AddrIx, Option<u16>),
    Host(NameIx, Option<u16>),
}

#[derive(Arbitrary, Debug)]
struct PolicySpec {
    strategy: StrategySpec,
    mx_address_limit: u8,
    local_names: Vec<NameIx>,
    local_addresses: Vec<AddrIx>,
    allow_mx_to_ip: bool,
    max_cname_hops: u8,
    negative_ttl_cap: u32,
    tempfail_ttl: u32,
    smtp_port: u16,
    static_route: Option<(NameIx, StaticSpec)>,
}

#[derive(Arbitrary, Debug)]
struct FuzzInput {
    input: InputSpec,
    entries: Vec<Entry>,
    policy: PolicySpec,
    seed: u64,
}

fn with_port(route: String, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("{route}:{p}"),
        None => route,
    }
}

/// A policy as the CLI would build it: names normalised, static routes parsed from text.
fn policy(spec: &PolicySpec) -> Policy {
    let mut policy = Policy {
        ip_strategy: match spec.strategy {
            StrategySpec::Ipv4ThenIpv6 => IpStrategy::Ipv4ThenIpv6,
            StrategySpec::Ipv6ThenIpv4 => IpStrategy::Ipv6ThenIpv4,
            StrategySpec::Ipv4Only => IpStrategy::Ipv4Only,
            StrategySpec::Ipv6Only => IpStrategy::Ipv6Only,
            StrategySpec::Any => IpStrategy::Any,
        },
        local_names: spec
            .local_names
            .iter()
            .filter_map(|n| normalize_domain(n.get()).ok())
            .collect(),
        local_addresses: spec.local_addresses.iter().map(|a| a.any()).collect(),
        allow_mx_to_ip: spec.allow_mx_to_ip,
        mx_address_limit: usize::from(spec.mx_address_limit),
        max_cname_hops: usize::from(spec.max_cname_hops % 12),
        negative_ttl_cap: spec.negative_ttl_cap,
        tempfail_ttl: spec.tempfail_ttl,
        smtp_port: spec.smtp_port,
        ..Policy::default()
    };
    if let Some((domain, route)) = &spec.static_route {
        let text = match route {
            StaticSpec::Address(a, port) => match a.any() {
                IpAddr::V4(ip) => with_port(format!("[{ip}]"), *port),
                IpAddr::V6(ip) => with_port(format!("[IPv6:{ip}]"), *port),
            },
            StaticSpec::Host(n, port) => with_port(n.get().to_owned(), *port),
        };
        if let (Ok(domain), Ok(route)) =
            (normalize_domain(domain.get()), text.parse::<StaticRoute>())
        {
            policy.static_routes.insert(domain, route);
        }
    }
    policy
}

fn outcome(question: &str, spec: &OutcomeSpec) -> Outcome {
    match spec {
        OutcomeSpec::Answer {
            nxdomain,
            records,
            negative_ttl,
        } => Ok(Answer {
            nxdomain: *nxdomain,
            negative_ttl: *negative_ttl,
            records: records
                .iter()
                .map(|r| Record {
                    name: r.owner.map_or(question, |n| n.get()).to_owned(),
                    ttl: r.ttl,
                    data: match &r.data {
                        DataSpec::Mx {
                            preference,
                            exchange,
                        } => RecordData::Mx {
                            preference: *preference,
                            exchange: exchange.get().to_owned(),
                        },
                        DataSpec::A(a) => RecordData::A(a.v4()),
                        DataSpec::Aaaa(a) => RecordData::Aaaa(a.v6()),
                        DataSpec::Cname(n) => RecordData::Cname(n.get().to_owned()),
                        DataSpec::Other => RecordData::Other,
                    },
                })
                .collect(),
        }),
        OutcomeSpec::ServFail => Err(Failure::ServFail),
        OutcomeSpec::Refused => Err(Failure::Refused),
        OutcomeSpec::Timeout => Err(Failure::Timeout),
        OutcomeSpec::Truncated => Err(Failure::Truncated),
        OutcomeSpec::Malformed => Err(Failure::Malformed("fuzz".into())),
        OutcomeSpec::Network => Err(Failure::Network("fuzz".into())),
    }
}

/// The invariants of docs/routing.md that hold for every route, whatever DNS said.
fn check(route: &Route) {
    assert_eq!(
        route.status == Status::Ok,
        !route.attempts.is_empty(),
        "status ok iff there are attempts: {route:#?}"
    );
    assert_eq!(
        route.status == Status::Ok,
        route.reply.is_none(),
        "a reply iff the status is not ok: {route:#?}"
    );
    for pair in route.attempts.windows(2) {
        assert!(
            pair[0].preference <= pair[1].preference,
            "attempt preferences decrease: {route:#?}"
        );
    }
    if route.status == Status::NullMx {
        assert!(
            route.attempts.is_empty(),
            "null MX with attempts: {route:#?}"
        );
        assert!(
            route.has_code(Code::NullMx),
            "null MX without its diagnostic: {route:#?}"
        );
    }
    for attempt in &route.attempts {
        assert!(
            route.exchangers.iter().any(|e| e.usable
                && e.host == attempt.host
                && e.preference == attempt.preference
                && e.port == attempt.port
                && e.addresses.contains(&attempt.ip)),
            "attempt {attempt:?} is not an address of a usable exchanger: {route:#?}"
        );
    }
}

fuzz_target!(|data: FuzzInput| {
    let input = data.input.text();
    let policy = policy(&data.policy);
    let mut table: HashMap<Question, Outcome> = HashMap::new();
    for entry in &data.entries {
        let name = entry.name.get();
        let qtype = match entry.qtype {
            QTypeSpec::Mx => QType::Mx,
            QTypeSpec::A => QType::A,
            QTypeSpec::Aaaa => QType::Aaaa,
        };
        table
            .entry(Question::new(name, qtype))
            .or_insert_with(|| outcome(name, &entry.outcome));
    }
    let outcomes = |q: &Question| table.get(q).cloned();

    let mut rng = ChaCha8Rng::seed_from_u64(data.seed);
    let route = match route_from_outcomes(&input, &policy, &outcomes, &mut rng) {
        Ok(route) => route,
        Err(e) => {
            // Only bad input is an error, and it is found before any DNS.
            assert!(
                parse_target(&input).is_err(),
                "{input:?} parses as a target but routing failed: {e}"
            );
            return;
        }
    };
    check(&route);

    // The same seed gives the same route.
    let mut rng = ChaCha8Rng::seed_from_u64(data.seed);
    let again = route_from_outcomes(&input, &policy, &outcomes, &mut rng).expect("worked once");
    assert_eq!(route, again, "same seed, different route");

    // A cached route gets a fresh shuffle; it must still be a valid route.
    let mut cached = route;
    let mut rng = ChaCha8Rng::seed_from_u64(data.seed.wrapping_add(1));
    reshuffle(&mut cached, &policy, &mut rng);
    check(&cached);
});
