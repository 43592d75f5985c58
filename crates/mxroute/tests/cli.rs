//! End to end: the real `mxroute` binary against the lab's DNS server (`--zone`, or a
//! `lab dns` child), checked on its JSON, its human output, its stderr and its exit codes.
//!
//! Every address these tests reach is on loopback. They wait on events (a child's output, its
//! exit), never on sleeps; each wait is bounded so a hung child fails the test instead of the run.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;

use serde_json::Value;

mod run;
use run::{BIN, DEADLINE, Run, mxroute};
const ZONE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/lab.zone");

/// `mxroute route --zone examples/lab.zone EXTRA...`
fn route(extra: &[&str]) -> Run {
    let mut args = vec!["route", "--zone", ZONE];
    args.extend_from_slice(extra);
    mxroute(&args)
}

fn codes(route: &Value) -> BTreeSet<String> {
    route["diagnostics"]
        .as_array()
        .expect("diagnostics")
        .iter()
        .map(|d| d["code"].as_str().expect("code").to_owned())
        .collect()
}

fn set(codes: &[&str]) -> BTreeSet<String> {
    codes.iter().map(|c| (*c).to_owned()).collect()
}

/// (preference, host, ip) of every attempt.
fn attempts(route: &Value) -> Vec<(u64, String, String)> {
    route["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            (
                a["preference"].as_u64().expect("preference"),
                a["host"].as_str().expect("host").to_owned(),
                a["ip"].as_str().expect("ip").to_owned(),
            )
        })
        .collect()
}

fn attempt_ips(route: &Value) -> Vec<String> {
    attempts(route).into_iter().map(|(_, _, ip)| ip).collect()
}

fn reply(route: &Value) -> (u64, String) {
    let reply = &route["reply"];
    (
        reply["code"].as_u64().expect("reply code"),
        reply["enhanced"]
            .as_str()
            .expect("enhanced code")
            .to_owned(),
    )
}

/// The JSON shape of one route, as documented for `--json`.
fn check_shape(route: &Value) {
    let ctx = || route.to_string();
    assert!(route["domain"].is_string(), "{}", ctx());
    assert!(route["status"].is_string(), "{}", ctx());
    assert!(route["implicit"].is_boolean(), "{}", ctx());
    assert!(route["ttl"].is_u64(), "{}", ctx());
    let ok = route["status"] == "ok";
    if ok {
        assert!(route["reply"].is_null(), "ok with a reply: {}", ctx());
    } else {
        let reply = &route["reply"];
        assert!(reply["code"].is_u64(), "{}", ctx());
        assert!(reply["enhanced"].is_string(), "{}", ctx());
        assert!(reply["text"].is_string(), "{}", ctx());
    }
    for e in route["exchangers"].as_array().expect("exchangers") {
        assert!(e["preference"].is_u64(), "{}", ctx());
        assert!(e["host"].is_string(), "{}", ctx());
        assert!(e["usable"].is_boolean(), "{}", ctx());
        for a in e["addresses"].as_array().expect("addresses") {
            let text = a.as_str().expect("address text");
            text.parse::<std::net::IpAddr>()
                .unwrap_or_else(|_| panic!("bad address {text:?}: {}", ctx()));
        }
    }
    for a in route["attempts"].as_array().expect("attempts") {
        assert!(a["preference"].is_u64(), "{}", ctx());
        assert!(a["host"].is_string(), "{}", ctx());
        let ip = a["ip"].as_str().expect("ip");
        ip.parse::<std::net::IpAddr>()
            .unwrap_or_else(|_| panic!("bad ip {ip:?}: {}", ctx()));
    }
    for d in route["diagnostics"].as_array().expect("diagnostics") {
        let level = d["level"].as_str().expect("level");
        assert!(["info", "warning", "error"].contains(&level), "{}", ctx());
        assert!(d["code"].is_string(), "{}", ctx());
        assert!(d["message"].is_string(), "{}", ctx());
    }
}

/// Every domain of examples/lab.zone, with its status and diagnostic codes.
const LAB: &[(&str, &str, &[&str])] = &[
    ("example.com", "ok", &["mx_target_private_address"]),
    ("balanced.example", "ok", &["mx_target_private_address"]),
    ("dualstack.example", "ok", &["mx_target_private_address"]),
    (
        "multihomed.example",
        "ok",
        &["address_limit", "mx_target_private_address"],
    ),
    ("nullmx.example", "null_mx", &["null_mx"]),
    (
        "nullmx-mixed.example",
        "null_mx",
        &["null_mx", "null_mx_mixed"],
    ),
    (
        "nullmx-pref.example",
        "null_mx",
        &["null_mx", "null_mx_nonzero_preference"],
    ),
    (
        "implicit.example",
        "ok",
        &["implicit_mx", "mx_target_private_address"],
    ),
    (
        "noaddress.example",
        "unroutable",
        &["implicit_mx", "mx_target_no_address"],
    ),
    (
        "alias.example",
        "ok",
        &["domain_cname", "mx_target_private_address"],
    ),
    ("loop1.example", "tempfail", &["cname_loop"]),
    (
        "cname-target.example",
        "ok",
        &["mx_target_cname", "mx_target_private_address"],
    ),
    (
        "ip-literal.example",
        "unroutable",
        &["mx_target_ip_literal"],
    ),
    (
        "duplicate.example",
        "ok",
        &["duplicate_mx", "mx_target_private_address"],
    ),
    ("dangling.example", "unroutable", &["mx_target_nxdomain"]),
    (
        "noaddr-target.example",
        "unroutable",
        &["mx_target_no_address"],
    ),
    (
        "half.example",
        "ok",
        &["mx_target_nxdomain", "mx_target_private_address"],
    ),
    ("self.example", "ok", &["mx_target_private_address"]),
    ("servfail.example", "tempfail", &["mx_lookup_failed"]),
    ("refused.example", "tempfail", &["mx_lookup_failed"]),
    ("timeout.example", "tempfail", &["mx_lookup_failed"]),
    ("truncated.example", "tempfail", &["mx_lookup_failed"]),
    ("slow.example", "ok", &["mx_target_private_address"]),
    (
        "flaky-target.example",
        "ok",
        &["mx_target_private_address", "mx_target_tempfail"],
    ),
    ("target-down.example", "tempfail", &["mx_target_tempfail"]),
    ("nosuch.example", "nxdomain", &[]),
];

#[test]
fn every_lab_domain_routes_as_documented() {
    let mut args = vec!["--json", "--seed", "1"];
    args.extend(LAB.iter().map(|(domain, _, _)| *domain));
    let run = route(&args);
    assert!(run.stderr.is_empty(), "{run:#?}");
    // tempfail (75) is the worst status among them.
    assert_eq!(run.code, 75, "{run:#?}");
    let routes = run.json();
    assert_eq!(routes.len(), LAB.len(), "one line per domain: {run:#?}");

    for ((domain, status, expected), route) in LAB.iter().zip(&routes) {
        check_shape(route);
        assert_eq!(route["domain"], *domain, "input order: {route}");
        assert_eq!(route["status"], *status, "{route}");
        assert_eq!(codes(route), set(expected), "{route}");
        let ok = *status == "ok";
        assert_eq!(route["reply"].is_null(), ok, "{route}");
        assert_eq!(
            route["attempts"].as_array().expect("attempts").is_empty(),
            !ok,
            "{route}"
        );
    }
    let by_domain = |domain: &str| {
        routes
            .iter()
            .find(|r| r["domain"] == domain)
            .unwrap_or_else(|| panic!("{domain} missing"))
    };

    let seed = by_domain("example.com");
    assert_eq!(
        attempts(seed),
        vec![
            (10, "mailhost1.example.com".into(), "127.0.0.11".into()),
            (20, "mailhost2.example.com".into(), "127.0.0.12".into()),
        ]
    );
    let preferences: Vec<u64> = seed["exchangers"]
        .as_array()
        .expect("exchangers")
        .iter()
        .map(|e| e["preference"].as_u64().expect("preference"))
        .collect();
    assert_eq!(preferences, vec![10, 20]);
    assert!(seed["exchangers"][0]["usable"] == true && seed["exchangers"][1]["usable"] == true);
    let ttl = seed["ttl"].as_u64().expect("ttl");
    assert!(ttl <= 45000, "ttl {ttl} above the MX TTL");

    let balanced = attempts(by_domain("balanced.example"));
    assert_eq!(balanced.len(), 2, "{balanced:?}");
    assert!(
        balanced.iter().all(|(pref, _, _)| *pref == 10),
        "{balanced:?}"
    );
    let hosts: BTreeSet<&str> = balanced.iter().map(|(_, h, _)| h.as_str()).collect();
    assert_eq!(
        hosts,
        BTreeSet::from(["mx-a.balanced.example", "mx-b.balanced.example"])
    );

    assert_eq!(
        attempt_ips(by_domain("dualstack.example")),
        vec!["127.0.0.23", "::1"],
        "ipv4_then_ipv6 is the default"
    );

    let multihomed = attempts(by_domain("multihomed.example"));
    assert_eq!(multihomed.len(), 6, "{multihomed:?}");
    assert!(
        multihomed[..5]
            .iter()
            .all(|(pref, host, _)| *pref == 10 && host == "big.multihomed.example"),
        "{multihomed:?}"
    );
    assert_eq!(multihomed[5].0, 20);
    assert_eq!(multihomed[5].1, "mailhost2.example.com");

    let nullmx = by_domain("nullmx.example");
    assert_eq!(reply(nullmx), (556, "5.1.10".into()));

    assert_eq!(by_domain("implicit.example")["implicit"], true);
    let noaddress = by_domain("noaddress.example");
    assert_eq!(noaddress["implicit"], true);
    assert_eq!(reply(noaddress), (554, "5.4.4".into()));

    assert_eq!(reply(by_domain("loop1.example")), (451, "4.4.3".into()));
    assert_eq!(by_domain("truncated.example")["ttl"], 0);
    assert_eq!(reply(by_domain("nosuch.example")), (550, "5.1.2".into()));

    let half = attempts(by_domain("half.example"));
    assert_eq!(half.len(), 1, "{half:?}");
    assert_eq!(half[0].1, "mailhost2.example.com");

    // Everything else of the table is an implicit=false route.
    for route in &routes {
        let implicit = ["implicit.example", "noaddress.example"]
            .contains(&route["domain"].as_str().expect("domain"));
        assert_eq!(route["implicit"], implicit, "{route}");
    }
}

#[test]
fn policy_flags_change_the_lab_routes() {
    let run = route(&["--json", "--allow-mx-to-ip", "ip-literal.example"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let literal = run.one_route();
    assert_eq!(literal["status"], "ok", "{literal}");
    assert_eq!(attempt_ips(&literal), vec!["127.0.0.25"]);

    let run = route(&["--json", "--local-name", "mx.self.example", "self.example"]);
    assert_eq!(run.code, 69, "{run:#?}");
    let us = run.one_route();
    check_shape(&us);
    assert_eq!(us["status"], "loop", "{us}");
    assert_eq!(reply(&us), (554, "5.4.6".into()));
    assert!(codes(&us).contains("mx_is_local"), "{us}");
    assert!(attempts(&us).is_empty());
}

#[test]
fn exit_code_is_the_worst_status() {
    let cases: &[(&[&str], i32)] = &[
        (&["example.com", "balanced.example", "implicit.example"], 0),
        (&["nosuch.example"], 68),
        (&["nullmx.example"], 69),
        (&["servfail.example"], 75),
        (&["example.com", "nosuch.example", "nullmx.example"], 69),
        (
            &[
                "example.com",
                "nosuch.example",
                "nullmx.example",
                "servfail.example",
            ],
            75,
        ),
    ];
    for (domains, code) in cases {
        let mut args = vec!["--json"];
        args.extend_from_slice(domains);
        let run = route(&args);
        assert_eq!(run.code, *code, "{domains:?}: {run:#?}");
        assert_eq!(run.json().len(), domains.len(), "{run:#?}");
        assert!(run.stderr.is_empty(), "{run:#?}");
    }
}

/// A usage error: exit 64, nothing on stdout, and a message on stderr. Our own messages are
/// one line starting `mxroute:`; clap's start with `error:` (clap adds usage and tip lines).
fn assert_usage_error(run: &Run) {
    assert_eq!(run.code, 64, "{run:#?}");
    assert!(run.stdout.is_empty(), "{run:#?}");
    let first = run.stderr.lines().next().unwrap_or_default();
    if first.starts_with("mxroute:") {
        assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    } else {
        assert!(first.starts_with("error:"), "{run:#?}");
    }
}

#[test]
fn bad_arguments_are_usage_errors() {
    let cases: &[&[&str]] = &[
        &["--ip-strategy", "v7", "example.com"],
        &["--no-such-flag", "example.com"],
        &[],
        &["exa mple.com"],
        &["example.com", "exa mple.com"],
        &["user@[2001:db8::1]"],
        &["--static-route", "example.com", "example.com"],
        &["--local-name", "a..b", "example.com"],
        &["--timeout", "0", "example.com"],
    ];
    for extra in cases {
        assert_usage_error(&route(extra));
    }
    assert_usage_error(&mxroute(&["no-such-command"]));
    assert_usage_error(&mxroute(&["route", "example.com", "--zone"]));
}

#[test]
fn unreadable_zone_file_is_no_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.zone");
    let missing = missing.to_str().expect("utf-8 path");
    // A directory cannot be read as a file either.
    let directory = dir.path().to_str().expect("utf-8 path");
    for path in [missing, directory] {
        let run = mxroute(&["route", "--zone", path, "--json", "example.com"]);
        assert_eq!(run.code, 66, "{run:#?}");
        assert!(run.stdout.is_empty(), "{run:#?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
        assert!(run.stderr.starts_with("mxroute:"), "{run:#?}");
        assert!(run.stderr.contains(path), "names the path: {run:#?}");
    }
}

#[test]
fn malformed_zone_file_is_data_error_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.zone");
    std::fs::write(
        &path,
        "$ORIGIN .\n\
         example.com. 300 IN MX 10 mx.example.com.\n\
         example.com. 300 IN MX ten mx2.example.com.\n\
         mx.example.com. 300 IN A 127.0.0.1\n",
    )
    .expect("write zone");
    let path = path.to_str().expect("utf-8 path");
    for command in [
        vec!["route", "--zone", path, "--json", "example.com"],
        vec!["lab", "dns", "--zone", path, "--listen", "127.0.0.1:0"],
    ] {
        let run = mxroute(&command);
        assert_eq!(run.code, 65, "{run:#?}");
        assert!(run.stdout.is_empty(), "{run:#?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
        assert!(run.stderr.starts_with("mxroute:"), "{run:#?}");
        assert!(run.stderr.contains(&format!("{path}:3:")), "{run:#?}");
    }
}

#[test]
fn seed_makes_the_shuffle_reproducible() {
    let args = ["--json", "--seed", "7", "balanced.example"];
    let first = route(&args);
    let second = route(&args);
    assert_eq!(first.code, 0, "{first:#?}");
    assert_eq!(first.stdout, second.stdout);

    // Both exchangers of equal preference get to go first under some seed.
    let mut firsts = BTreeSet::new();
    for seed in 0..40 {
        let seed = seed.to_string();
        let run = route(&["--json", "--seed", &seed, "balanced.example"]);
        assert_eq!(run.code, 0, "{run:#?}");
        let (_, host, _) = attempts(&run.one_route()).remove(0);
        firsts.insert(host);
        if firsts.len() == 2 {
            break;
        }
    }
    assert_eq!(
        firsts,
        BTreeSet::from([
            "mx-a.balanced.example".to_owned(),
            "mx-b.balanced.example".to_owned()
        ])
    );
}

#[test]
fn human_output_shows_the_table() {
    let run = route(&["--seed", "1", "example.com"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let json = route(&["--json", "--seed", "1", "example.com"]).one_route();
    let ttl = json["ttl"].as_u64().expect("ttl");
    let out = &run.stdout;
    assert!(out.contains("PREF"), "{out}");
    assert!(out.contains("mailhost1.example.com"), "{out}");
    assert!(out.contains("mailhost2.example.com"), "{out}");
    assert!(out.contains("attempts:"), "{out}");
    assert!(out.contains(&format!("ttl {ttl}s")), "{out}");
    assert!(serde_json::from_str::<Value>(out.lines().next().unwrap_or_default()).is_err());
}

#[test]
fn ipv6_only_strategy_keeps_only_ipv6() {
    let run = route(&["--json", "--ip-strategy", "ipv6_only", "dualstack.example"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let route = run.one_route();
    assert_eq!(attempt_ips(&route), vec!["::1"]);
    assert_eq!(
        route["exchangers"][0]["addresses"],
        serde_json::json!(["::1"])
    );
}

#[test]
fn static_route_and_address_literal() {
    let run = route(&[
        "--json",
        "--static-route",
        "example.com=[127.0.0.9]:2525",
        "example.com",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let route_json = run.one_route();
    check_shape(&route_json);
    let attempts = route_json["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{route_json}");
    assert_eq!(attempts[0]["ip"], "127.0.0.9");
    assert_eq!(attempts[0]["port"], 2525);
    assert_eq!(codes(&route_json), set(&["static_route"]));

    let run = route(&["--json", "user@[127.0.0.9]"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let literal = run.one_route();
    check_shape(&literal);
    assert_eq!(literal["domain"], "[127.0.0.9]");
    assert_eq!(attempt_ips(&literal), vec!["127.0.0.9"]);
    assert_eq!(codes(&literal), set(&["domain_literal"]));
}

/// A `lab dns` child, killed when dropped (also when a test fails half-way).
struct LabChild(Child);

impl Drop for LabChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Read the child's stdout until a line names the address it listens on.
fn listening_address(stdout: ChildStdout) -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let addr = line
                .split(|c: char| c.is_whitespace() || c == ',')
                .find_map(|word| word.parse::<SocketAddr>().ok());
            if let Some(addr) = addr {
                let _ = tx.send(Ok(addr));
                return;
            }
            let _ = tx.send(Err(line));
        }
        // EOF: the child went away without saying where it listens.
    });
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(DEADLINE) {
            Ok(Ok(addr)) => return addr,
            Ok(Err(line)) => seen.push(line),
            Err(e) => panic!("lab dns printed no address ({e}); its output: {seen:?}"),
        }
    }
}

#[test]
fn lab_dns_serves_the_zone_to_route() {
    let mut child = Command::new(BIN)
        .args(["lab", "dns", "--zone", ZONE, "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lab dns");
    let stdout = child.stdout.take().expect("stdout");
    let lab = LabChild(child);
    let addr = listening_address(stdout);
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr.port(), 0, "{addr}");

    let addr = addr.to_string();
    let run = mxroute(&[
        "route",
        "--nameserver",
        &addr,
        "--json",
        "--seed",
        "1",
        "example.com",
        "nosuch.example",
    ]);
    assert_eq!(run.code, 68, "{run:#?}");
    let routes = run.json();
    assert_eq!(routes.len(), 2, "{run:#?}");
    assert_eq!(routes[0]["status"], "ok", "{run:#?}");
    assert_eq!(
        attempt_ips(&routes[0]),
        vec!["127.0.0.11", "127.0.0.12"],
        "{run:#?}"
    );
    assert_eq!(routes[1]["status"], "nxdomain", "{run:#?}");
    drop(lab);
}

#[test]
fn lab_dns_listens_on_loopback_only() {
    // Refused before any socket is opened: a bind failure would be exit 71, not 64.
    let run = mxroute(&["lab", "dns", "--zone", ZONE, "--listen", "10.0.0.1:53"]);
    assert_usage_error(&run);
    assert!(run.stderr.contains("loopback"), "{run:#?}");
}
