//! `mxroute lab demo` runs the whole lab in one process and every expectation holds.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn lab_demo_delivers_everything_and_loses_nothing() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mxroute"))
        .args(["lab", "demo", "--messages", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mxroute");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for mxroute") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mxroute lab demo ran for more than 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).expect("read stdout");
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).expect("read stderr");
    }
    assert_eq!(
        status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("summary"), "{stdout}");
    let lost = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("lost "))
        .unwrap_or_else(|| panic!("no lost line: {stdout}"));
    assert_eq!(lost.split_whitespace().last(), Some("0"), "{stdout}");
    assert!(stdout.contains("Status: 5.1.10"), "{stdout}");
    assert!(stdout.contains("Status: 5.1.2"), "{stdout}");
    assert!(
        stdout.contains("result: every expectation held"),
        "{stdout}"
    );
}
