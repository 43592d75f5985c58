//! `bulk` and `route` give the same route for every domain: every case of the routing
//! contract, and every name of examples/lab.zone, through both paths against the same lab
//! server, compared field by field (the shuffle of equal preferences aside).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{canonical, lab_engine, run_lines};
use mx_bulk::{Engine, RunOptions};
use mx_conformance::{cases, check};
use mx_core::Policy;
use mx_dns::{ClientOptions, HickoryClient, Nameservers, Router};
use mx_lab::{LabDns, ZoneSet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn router(server: std::net::SocketAddr, policy: Policy) -> Router {
    let options = ClientOptions {
        timeout: Duration::from_millis(1500),
        attempts: 1,
    };
    let client = HickoryClient::new(&Nameservers::Explicit(vec![server]), &options).unwrap();
    Router::new(Arc::new(client), policy).with_seed(5321)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_conformance_case_routes_the_same_in_bulk_and_route() {
    let mut tasks = tokio::task::JoinSet::new();
    for case in cases() {
        tasks.spawn(async move {
            let zones = ZoneSet::parse(&case.zone_text(), case.name, None).unwrap();
            let lab = LabDns::start(&zones, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let mut policy = Policy::default();
            (case.policy)(&mut policy);
            let expected = router(lab.addr(), policy.clone())
                .route(case.input)
                .await
                .unwrap();
            let engine = Engine::new(&lab_engine(lab.addr()), policy).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(5321);
            let got = engine.route(case.input, &mut rng).await.unwrap();
            lab.shutdown().await;
            let mut problems = Vec::new();
            if let Err(e) = check(&case, &got) {
                problems.push(format!("bulk breaks the contract: {e}"));
            }
            let (want, got) = (
                canonical(&serde_json::to_value(&expected).unwrap()),
                canonical(&serde_json::to_value(&got).unwrap()),
            );
            if want != got {
                problems.push(format!("route: {want}\n  bulk:  {got}"));
            }
            if problems.is_empty() {
                Ok(case.name)
            } else {
                Err(format!("{}:\n  {}", case.name, problems.join("\n  ")))
            }
        });
    }
    let mut failures = Vec::new();
    let mut passed = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            Ok(_) => passed += 1,
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        failures.len() + passed,
        failures.join("\n")
    );
    assert_eq!(passed, cases().len());
}

/// Every owner name of the lab zone, as a bulk input, plus one that does not exist.
fn lab_zone_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with([';', '$', ' ', '\t', '.']) && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.trim_end_matches('.').to_string())
        .collect();
    names.dedup();
    names.push("nosuch.example".into());
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lab_zone_name_routes_the_same_through_the_bulk_pipeline() {
    lab_zone_through_the_pipeline(false).await;
}

/// The additional section only ever stands in for an A and AAAA answer that would have said
/// the same: the routes do not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_additional_routes_the_lab_zone_the_same() {
    lab_zone_through_the_pipeline(true).await;
}

async fn lab_zone_through_the_pipeline(use_additional: bool) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/lab.zone");
    let text = std::fs::read_to_string(path).unwrap();
    let names = lab_zone_names(&text);
    assert!(names.len() > 35, "{names:?}");
    let zones = ZoneSet::parse(&text, path, None).unwrap();
    let lab = LabDns::start(&zones, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    let config = mx_bulk::EngineConfig {
        use_additional,
        ..lab_engine(lab.addr())
    };
    let input = names.join("\n") + "\n";
    let options = RunOptions {
        concurrency: 16,
        seed: Some(7),
        ..RunOptions::default()
    };
    let (summary, output) = run_lines(&config, input, options, Duration::from_secs(120)).await;
    assert_eq!(summary.lines, names.len() as u64);
    if use_additional {
        assert!(
            summary.engine.additional_seeds > 0,
            "the lab's MX answers carry addresses: {summary:?}"
        );
    }

    let router = router(lab.addr(), Policy::default());
    let lines = output.lines();
    let mut differences = Vec::new();
    for (index, (name, line)) in names.iter().zip(&lines).enumerate() {
        assert_eq!(line["line"], index as u64 + 1, "input order kept");
        assert_eq!(line["input"], name.as_str());
        let expected = router.route(name).await.unwrap();
        let want = canonical(&serde_json::to_value(&expected).unwrap());
        let got = canonical(line);
        if want != got {
            differences.push(format!("{name}:\n  route: {want}\n  bulk:  {got}"));
        }
    }
    lab.shutdown().await;
    assert!(
        differences.is_empty(),
        "{} of {} names differ:\n{}",
        differences.len(),
        names.len(),
        differences.join("\n")
    );
}
