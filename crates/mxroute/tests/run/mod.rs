//! Runs the real `mxroute` binary to completion and keeps what it printed, for the CLI
//! tests. Every wait is bounded, so a hung child fails the test instead of the run.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_mxroute");

/// Longest any one command may take; the slowest (timeout.example) needs about 2 s.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// What a finished command left behind.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// One parsed JSON object per stdout line.
    pub fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                let value: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{self:#?}"));
                assert!(value.is_object(), "not a JSON object: {line}");
                value
            })
            .collect()
    }

    pub fn one_route(&self) -> Value {
        let mut routes = self.json();
        assert_eq!(routes.len(), 1, "{self:#?}");
        routes.remove(0)
    }
}

/// Run `mxroute ARGS` to completion, waiting on its pipes closing and its exit.
pub fn mxroute(args: &[&str]) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mxroute");
    let (tx, rx) = mpsc::channel();
    let readers = [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, mut pipe)| {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send((i, text));
        })
    })
    .collect::<Vec<_>>();
    let mut out = [String::new(), String::new()];
    for _ in 0..2 {
        match rx.recv_timeout(DEADLINE) {
            Ok((i, text)) => out[i] = text,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mxroute {args:?} did not finish within {DEADLINE:?}");
            }
        }
    }
    for reader in readers {
        reader.join().expect("pipe reader");
    }
    let status = child.wait().expect("wait for mxroute");
    let [stdout, stderr] = out;
    Run {
        code: status.code().expect("mxroute exited by a signal"),
        stdout,
        stderr,
    }
}

/// Why a long-running child's awaited line never came.
#[derive(Debug)]
pub enum NoLine {
    /// Not within the time allowed.
    Timeout,
    /// Its stdout closed first: the child exited.
    Exited,
}

/// Drains a long-running child's `stdout` on a thread for the child's life (so it can never
/// block on a full pipe) and waits, at most `within`, for a line starting with `prefix`;
/// returns the rest of that line.
pub fn line_after(stdout: ChildStdout, prefix: &str, within: Duration) -> Result<String, NoLine> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + within;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Ok(rest.to_string());
                }
            }
            Err(RecvTimeoutError::Timeout) => return Err(NoLine::Timeout),
            Err(RecvTimeoutError::Disconnected) => return Err(NoLine::Exited),
        }
    }
}
