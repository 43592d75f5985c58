//! A lossy server loses no domain: the lab drops 30% of the UDP queries (a fixed pattern,
//! see mx-lab's `Fault::Drop`), and every domain still gets its full route through retries.

mod common;

use std::fmt::Write as _;
use std::time::Duration;

use common::{lab_engine, run_lines};
use mx_bulk::{EngineConfig, RunOptions};
use mx_lab::{LabDns, ZoneSet};

const DOMAINS: usize = 300;
const PROVIDERS: usize = 10;

/// Domain i: a third use one of the shared provider pairs, the others have their own pair.
/// Every exchanger has an A and an AAAA record.
fn zone() -> String {
    let mut zone = String::from("$TTL 300\n");
    for p in 0..PROVIDERS {
        for (n, host) in ["mx1", "mx2"].iter().enumerate() {
            let _ = writeln!(zone, "{host}.provider{p}.example. A 127.0.{p}.{}", n + 1);
            let _ = writeln!(
                zone,
                "{host}.provider{p}.example. AAAA ::ffff:127.0.{p}.{}",
                n + 1
            );
        }
    }
    for i in 0..DOMAINS {
        let (mx1, mx2) = exchangers(i);
        let _ = writeln!(
            zone,
            "d{i}.example. MX 10 {mx1}.\nd{i}.example. MX 20 {mx2}."
        );
        if !i.is_multiple_of(3) {
            for (n, host) in [mx1, mx2].iter().enumerate() {
                let _ = writeln!(zone, "{host}. A 127.1.{}.{}", i % 250, n + 1);
                let _ = writeln!(zone, "{host}. AAAA ::ffff:127.1.{}.{}", i % 250, n + 1);
            }
        }
    }
    zone
}

fn exchangers(i: usize) -> (String, String) {
    if i.is_multiple_of(3) {
        let p = i % PROVIDERS;
        (
            format!("mx1.provider{p}.example"),
            format!("mx2.provider{p}.example"),
        )
    } else {
        (format!("mx1.d{i}.example"), format!("mx2.d{i}.example"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_loss_loses_no_domain() {
    let zones = ZoneSet::parse(&zone(), "lossy", None).unwrap();
    let lab = LabDns::start(&zones, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    lab.faults().set_loss(30);

    let config = EngineConfig {
        timeout: Duration::from_millis(300),
        retries: 4,
        ..lab_engine(lab.addr())
    };
    let input: String = (0..DOMAINS).map(|i| format!("d{i}.example\n")).collect();
    let (summary, output) = run_lines(
        &config,
        input,
        RunOptions::default(),
        Duration::from_secs(120),
    )
    .await;

    assert_eq!(summary.lines, DOMAINS as u64);
    assert_eq!(summary.ok, DOMAINS as u64, "{summary:?}");
    assert!(
        summary.engine.transport.timeouts > 0,
        "the lab really dropped queries: {summary:?}"
    );
    // Shared exchangers were asked once each, not once per domain.
    let exchanger_questions = 2 * 2 * (PROVIDERS + DOMAINS - DOMAINS / 3);
    let asked = summary.engine.transport.udp_queries - summary.engine.transport.timeouts;
    assert!(
        asked <= (DOMAINS + exchanger_questions) as u64,
        "{asked} answered queries for {DOMAINS} MX and {exchanger_questions} address questions"
    );

    for (i, line) in output.lines().iter().enumerate() {
        let (mx1, mx2) = exchangers(i);
        assert_eq!(line["input"], format!("d{i}.example"));
        assert_eq!(line["status"], "ok", "{line}");
        let attempts: Vec<String> = line["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                format!(
                    "{} {}",
                    a["host"].as_str().unwrap(),
                    a["ip"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(attempts.len(), 4, "{line}");
        assert!(attempts[0].starts_with(&format!("{mx1} 127.")), "{line}");
        assert!(
            attempts[1].starts_with(&format!("{mx1} ::ffff:127.")),
            "{line}"
        );
        assert!(attempts[2].starts_with(&format!("{mx2} 127.")), "{line}");
        assert!(
            !line["diagnostics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["code"] == "mx_target_tempfail"),
            "{line}"
        );
    }
    lab.shutdown().await;
}
