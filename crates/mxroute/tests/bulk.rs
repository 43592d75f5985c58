//! `mxroute bulk` end to end: the real binary against the lab's DNS server (`--zone`), fed on
//! standard input or from a file, checked on its JSON lines, their order and its exit codes.
//! Loopback only; every wait is bounded.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mxroute");
const ZONE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/lab.zone");
const DEADLINE: Duration = Duration::from_secs(120);

const INPUT: &str = "# a list with everything a list has\n\
                     example.com\n\
                     \n\
                     user@nullmx.example\n\
                     bad..name\n\
                     nosuch.example\n\
                     \x20 Balanced.Example \n\
                     servfail.example\n";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn bulk(args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(BIN)
        .arg("bulk")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mxroute");
    let mut input = child.stdin.take().expect("stdin");
    let stdin = stdin.to_string();
    thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let (tx, rx) = mpsc::channel();
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    thread::spawn(move || {
        let (mut out, mut err) = (String::new(), String::new());
        let _ = stdout.read_to_string(&mut out);
        let _ = stderr.read_to_string(&mut err);
        let _ = tx.send((out, err));
    });
    let Ok((stdout, stderr)) = rx.recv_timeout(DEADLINE) else {
        let _ = child.kill();
        panic!("mxroute bulk {args:?} did not finish within {DEADLINE:?}");
    };
    let code = child.wait().expect("wait").code().unwrap_or(-1);
    Run {
        code,
        stdout,
        stderr,
    }
}

fn lines(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn one_line_out_per_line_in_in_input_order() {
    let run = bulk(&["--zone", ZONE, "--seed", "1", "--stats"], INPUT);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let lines = lines(&run);
    let seen: Vec<(u64, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["input"].as_str().unwrap(),
                l["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (2, "example.com", "ok"),
            (4, "user@nullmx.example", "null_mx"),
            (5, "bad..name", "invalid"),
            (6, "nosuch.example", "nxdomain"),
            (7, "Balanced.Example", "ok"),
            (8, "servfail.example", "tempfail"),
        ]
    );
    assert!(lines[2]["reason"].as_str().unwrap().contains("empty label"));
    assert_eq!(lines[4]["domain"], "balanced.example");
    // The same object as `route --json`, plus line and input.
    let route = Command::new(BIN)
        .args(["route", "--zone", ZONE, "--json", "example.com"])
        .output()
        .unwrap();
    let mut route: Value = serde_json::from_slice(&route.stdout).unwrap();
    route["line"] = 2.into();
    route["input"] = "example.com".into();
    assert_eq!(lines[0], route);
    let summary: Value = serde_json::from_str(run.stderr.trim()).unwrap();
    assert_eq!(summary["lines"], 6);
    assert_eq!(summary["invalid"], 1);
}

#[test]
fn unordered_and_output_file_give_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("domains.txt");
    let output = dir.path().join("routes.jsonl");
    std::fs::write(&input, INPUT).unwrap();
    let ordered = bulk(
        &["--zone", ZONE, "--seed", "3", input.to_str().unwrap()],
        "",
    );
    assert_eq!(ordered.code, 0, "stderr: {}", ordered.stderr);
    let run = bulk(
        &[
            "--zone",
            ZONE,
            "--seed",
            "3",
            "--unordered",
            "-o",
            output.to_str().unwrap(),
            "-",
        ],
        INPUT,
    );
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(run.stdout.is_empty());
    let mut unordered: Vec<String> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut ordered: Vec<String> = ordered.stdout.lines().map(String::from).collect();
    unordered.sort();
    ordered.sort();
    assert_eq!(
        unordered, ordered,
        "same seed, same routes, whatever the order"
    );
}

#[test]
fn exit_codes() {
    let missing = bulk(&["--zone", ZONE, "/nonexistent/domains.txt"], "");
    assert_eq!(missing.code, 66, "{}", missing.stderr);
    let usage = bulk(&["--zone", ZONE, "--concurrency", "0"], "");
    assert_eq!(usage.code, 64, "{}", usage.stderr);
    // Every domain tempfail: nothing was learnt, the run says so.
    let down = bulk(
        &["--zone", ZONE, "--timeout", "0.2", "--retries", "0"],
        "timeout.example\n",
    );
    assert_eq!(down.code, 75, "{}", down.stderr);
    assert_eq!(lines(&down)[0]["status"], "tempfail");
    // An empty list is a completed run.
    let empty = bulk(&["--zone", ZONE], "# nothing\n");
    assert_eq!(empty.code, 0, "{}", empty.stderr);
    assert!(empty.stdout.is_empty());
}
