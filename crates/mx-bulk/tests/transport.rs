//! The transport's promises against lab servers: several nameservers share the questions and
//! cover for each other, the rate limit holds, and answers that do not match are not taken.

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::{SharedOutput, lab_engine, run_lines};
use mx_bulk::{EngineConfig, RunOptions, Summary};
use mx_lab::{LabDns, ZoneSet};

const DOMAINS: usize = 40;

fn zone() -> String {
    let mut zone = String::new();
    for i in 0..DOMAINS {
        let _ = writeln!(zone, "d{i}.example. MX 10 mx.d{i}.example.");
        let _ = writeln!(zone, "mx.d{i}.example. A 127.0.0.{}", i + 1);
    }
    zone
}

async fn lab() -> LabDns {
    let zones = ZoneSet::parse(&zone(), "transport", None).unwrap();
    LabDns::start(&zones, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn run(config: EngineConfig) -> (Summary, SharedOutput) {
    let input: String = (0..DOMAINS).map(|i| format!("d{i}.example\n")).collect();
    run_lines(
        &config,
        input,
        RunOptions::default(),
        Duration::from_secs(60),
    )
    .await
}

fn queries_seen(lab: &LabDns) -> u64 {
    (0..DOMAINS)
        .map(|i| {
            lab.query_count(&format!("d{i}.example"), "MX")
                + lab.query_count(&format!("mx.d{i}.example"), "A")
                + lab.query_count(&format!("mx.d{i}.example"), "AAAA")
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_are_spread_and_a_silent_server_is_covered_by_the_other() {
    let (good, silent) = (lab().await, lab().await);
    silent.faults().set_loss(100);
    let config = EngineConfig {
        nameservers: vec![good.addr(), silent.addr()],
        // Tries alternate between the servers: at least two reach the good one, with 600 ms
        // and 1.2 s to answer, enough on a busy machine.
        timeout: Duration::from_millis(300),
        retries: 4,
        ..lab_engine(good.addr())
    };
    let (summary, output) = run(config).await;
    assert_eq!(summary.ok, DOMAINS as u64, "{summary:?}");
    assert!(output.lines().iter().all(|l| l["status"] == "ok"));
    let (to_good, to_silent) = (queries_seen(&good), queries_seen(&silent));
    assert!(
        to_silent >= DOMAINS as u64 / 2 && to_good >= DOMAINS as u64 * 2,
        "spread across both: {to_good} to the good server, {to_silent} to the silent one"
    );
    assert!(
        summary.engine.transport.timeouts >= to_silent,
        "{summary:?}"
    );
    good.shutdown().await;
    silent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_spaces_the_queries() {
    let lab = lab().await;
    let config = EngineConfig {
        rate_limit: Some(400),
        ..lab_engine(lab.addr())
    };
    let started = Instant::now();
    let (summary, _) = run(config).await;
    let elapsed = started.elapsed();
    let queries = summary.engine.transport.udp_queries;
    // MX, A and AAAA per domain.
    assert_eq!(queries, 3 * DOMAINS as u64, "{summary:?}");
    // 120 queries at 400/s: the last one leaves 119 intervals of 2.5 ms after the first.
    assert!(
        elapsed >= Duration::from_millis(290),
        "{queries} queries in {elapsed:?} at 400 qps"
    );
    lab.shutdown().await;
}

/// Queries leave in bursts through a sender task; a send the kernel refuses must still come
/// back to its question at once as a network failure, not wait out the timeout.
#[tokio::test]
async fn a_refused_send_is_a_network_failure_at_once() {
    use mx_bulk::transport::{Transport, TransportConfig};
    use mx_core::{Failure, QType, Question};
    let transport = Transport::new(&TransportConfig {
        // Port 0: sendto fails with EINVAL, nothing is sent anywhere.
        nameservers: vec!["127.0.0.1:0".parse().unwrap()],
        sockets: 1,
        in_flight: 10,
        timeout: Duration::from_secs(600),
        retries: 0,
        rate_limit: None,
    })
    .unwrap();
    let question = Question::new("d0.example", QType::Mx);
    let (outcome, extras) =
        tokio::time::timeout(Duration::from_secs(300), transport.query(&question, false))
            .await
            .expect("the failure comes back, well before the query's own timeout");
    assert!(
        matches!(outcome, Err(Failure::Network(_))),
        "got {outcome:?}"
    );
    assert!(extras.is_empty());
    let counters = transport.counters().snapshot();
    assert_eq!(counters.udp_queries, 0, "nothing counted as sent");
    assert_eq!(counters.timeouts, 0);
}
