//! Shared by the bulk tests: an in-memory output, routes compared with the shuffle set aside.

#![allow(dead_code)]

use std::io::{Cursor, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mx_bulk::{Engine, EngineConfig, RunOptions, Stats, Summary};
use mx_core::Policy;
use serde_json::Value;

/// An output the test can read back after the run.
#[derive(Clone, Default)]
pub struct SharedOutput(pub Arc<Mutex<Vec<u8>>>);

impl Write for SharedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedOutput {
    pub fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Engine settings for a loopback lab on busy test machines.
pub fn lab_engine(server: std::net::SocketAddr) -> EngineConfig {
    EngineConfig {
        nameservers: vec![server],
        sockets: 2,
        in_flight: 200,
        timeout: Duration::from_millis(1000),
        retries: 1,
        ..EngineConfig::default()
    }
}

/// One bulk run of `input` (lines) through an engine made from `config`, given `limit` to end.
pub async fn run_lines(
    config: &EngineConfig,
    input: String,
    options: RunOptions,
    limit: Duration,
) -> (Summary, SharedOutput) {
    let engine = Arc::new(Engine::new(config, Policy::default()).unwrap());
    let output = SharedOutput::default();
    let summary = tokio::time::timeout(
        limit,
        mx_bulk::run(
            engine,
            Box::new(Cursor::new(input.into_bytes())),
            Box::new(output.clone()),
            options,
            Arc::new(Stats::default()),
        ),
    )
    .await
    .expect("the run ends")
    .unwrap();
    (summary, output)
}

/// A route's JSON with equal preferences put in name order (the one thing the shuffle
/// changes) and the bulk-only fields removed, so two routes compare as data.
pub fn canonical(route: &Value) -> Value {
    let mut route = route.clone();
    let object = route.as_object_mut().unwrap();
    object.remove("line");
    object.remove("input");
    let key = |v: &Value| {
        (
            v["preference"].as_u64().unwrap_or_default(),
            v["host"].as_str().unwrap_or_default().to_string(),
        )
    };
    for list in ["exchangers", "attempts"] {
        if let Some(Value::Array(items)) = object.get_mut(list) {
            // Stable: one host's addresses keep their DNS order.
            items.sort_by_key(key);
        }
    }
    if let Some(Value::Array(items)) = object.get_mut("diagnostics") {
        items.sort_by_key(|d| d.to_string());
    }
    route
}
