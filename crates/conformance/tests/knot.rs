//! The conformance table against a real authoritative server, Knot DNS, serving the same zone
//! text. Cases that need the lab's fault switches are listed as not applicable: Knot has no
//! way to play them. Without knotd the test is skipped with its reason locally, and fails in
//! CI (where `.ci/run` installs it).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mx_conformance::{Case, cases, run_case};
use mx_core::{QType, Question};
use mx_dns::{ClientOptions, DnsClient, HickoryClient, Nameservers};
use mx_lab::ZoneSet;

fn knotd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("knotd"))
        .find(|p| p.is_file())
}

/// A port free for both UDP and TCP on 127.0.0.1 at the time of asking.
fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port for UDP and TCP on 127.0.0.1 after 50 tries");
}

struct Knot {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Knot {
    async fn start(knotd: &Path, case: &Case) -> Result<Knot, String> {
        let zones = ZoneSet::parse(&case.zone_text(), case.name, None)
            .map_err(|e| format!("zone does not load: {e}"))?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let mut conf = format!(
            "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n\
             database:\n    storage: \"{d}/db\"\n\
             log:\n  - target: stderr\n    any: warning\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    \
             journal-content: none\n    semantic-checks: off\n\
             zone:\n",
            d = dir.path().display()
        );
        let apexes = zones.apexes();
        for (i, (apex, text)) in zones.zone_files().into_iter().enumerate() {
            let file = format!("zone-{i}.zone");
            std::fs::write(dir.path().join(&file), text).map_err(|e| e.to_string())?;
            conf.push_str(&format!("  - domain: \"{apex}\"\n    file: \"{file}\"\n"));
        }
        let conf_path = dir.path().join("knot.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.path().join("knotd.log")).map_err(|e| e.to_string())?;
        let child = Command::new(knotd)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run knotd: {e}"))?;
        let mut knot = Knot {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        };
        knot.wait_ready(&apexes).await?;
        Ok(knot)
    }

    /// Ready when every zone apex answers; bounded in tries and time.
    async fn wait_ready(&mut self, apexes: &[String]) -> Result<(), String> {
        let options = ClientOptions {
            timeout: Duration::from_millis(200),
            attempts: 1,
        };
        let client = Arc::new(
            HickoryClient::new(&Nameservers::Explicit(vec![self.addr]), &options)
                .map_err(|e| e.to_string())?,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for apex in apexes {
            let name = apex.trim_end_matches('.');
            // The root has no name to ask MX of in our Question form; ask a name inside it.
            let probe = if name.is_empty() {
                "probe.invalid"
            } else {
                name
            };
            loop {
                if let Ok(Some(status)) = self.child.try_wait() {
                    let log = std::fs::read_to_string(self._dir.path().join("knotd.log"))
                        .unwrap_or_default();
                    return Err(format!("knotd exited ({status}):\n{log}"));
                }
                let outcome = client.query(&Question::new(probe, QType::Mx)).await;
                if outcome.is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("knotd did not answer for {apex} within 20 s"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_table_against_knot() {
    let Some(knotd) = knotd() else {
        if std::env::var_os("CI").is_some() {
            panic!("knotd is not installed: CI must install the Debian package `knot`");
        }
        println!(
            "SKIPPED conformance_table_against_knot: knotd is not installed (apt-get install knot)"
        );
        return;
    };
    let mut passed = 0;
    let mut not_applicable = Vec::new();
    let mut failures = Vec::new();
    for case in cases() {
        if case.needs_faults() {
            not_applicable.push(case.name);
            continue;
        }
        let result = match Knot::start(&knotd, &case).await {
            Ok(knot) => run_case(&case, knot.addr).await.map(|_| ()).map_err(|e| {
                let log =
                    std::fs::read_to_string(knot._dir.path().join("knotd.log")).unwrap_or_default();
                format!("{e}\n  knotd log:\n{log}")
            }),
            Err(e) => Err(format!("{}: {e}", case.name)),
        };
        match result {
            Ok(()) => {
                passed += 1;
                println!("knot conformance ok: {}", case.name);
            }
            Err(e) => failures.push(e),
        }
    }
    println!(
        "knot: {passed} cases passed; {} need the lab's fault switches and were not run against Knot: {}",
        not_applicable.len(),
        not_applicable.join(", ")
    );
    assert!(passed > 30, "too few cases ran against Knot: {passed}");
    assert!(
        failures.is_empty(),
        "{} cases failed against Knot:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
