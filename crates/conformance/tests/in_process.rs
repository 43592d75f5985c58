//! The conformance table over real packets against the in-process lab server.

use mx_conformance::{cases, codes_covered, run_case};
use mx_core::Code;
use mx_lab::{LabDns, ZoneSet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_table_against_the_lab_server() {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, case) in cases().into_iter().enumerate() {
        tasks.spawn(async move {
            let zones = ZoneSet::parse(&case.zone_text(), case.name, None)
                .map_err(|e| format!("{}: zone does not load: {e}", case.name))?;
            let lab = LabDns::start(&zones, "127.0.0.1:0".parse().unwrap())
                .await
                .map_err(|e| format!("{}: lab does not start: {e}", case.name))?;
            let result = run_case(&case, lab.addr()).await;
            lab.shutdown().await;
            result.map(|_| (index, case.name))
        });
    }
    let mut passed = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("case task panicked") {
            Ok((index, name)) => passed.push((index, name)),
            Err(e) => failures.push(e),
        }
    }
    passed.sort();
    for (_, name) in &passed {
        println!("conformance ok: {name}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        failures.len() + passed.len(),
        failures.join("\n")
    );
}

#[test]
fn every_diagnostic_code_is_produced_by_a_case() {
    let covered = codes_covered();
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|c| !covered.contains(c))
        .map(|c| c.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "codes with no conformance case: {missing:?}"
    );
}

#[test]
fn every_case_is_named_after_a_step() {
    for case in cases() {
        assert!(
            case.name.starts_with("step_"),
            "{} is not named after a step of docs/routing.md",
            case.name
        );
    }
}
