//! `mxroute lab up`: the lab DNS server plus one exchanger (an mxroute relay) on every
//! loopback address the zone gives an A record, all on one port, until Ctrl-C.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Args;
use mx_lab::{LabDns, ZoneSet};
use mx_relay::Relay;

use crate::demo_cmd::{relay_config, shared_port, start_relay};
use crate::lab_cmd::{load_zone, start_lab};
use crate::{Fatal, exit};

const SEED_ZONE: &str = include_str!("../../../examples/lab.zone");

#[derive(Args)]
pub struct UpArgs {
    /// Zone file (default: the seed zone, examples/lab.zone).
    #[arg(long)]
    zone: Option<PathBuf>,
    /// Where the exchangers keep their spools and Maildirs (default: a new temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Address of the lab DNS server (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    dns_listen: SocketAddr,
}

/// One exchanger to run: a host name of the zone, its loopback address, the domains whose
/// mail it takes (those whose MX points at it, or itself when it is an implicit MX).
struct Plan {
    host: String,
    ip: IpAddr,
    domains: BTreeSet<String>,
}

/// Read A and MX records back from the lab's own normalised zone text.
fn plan(zones: &ZoneSet) -> Vec<Plan> {
    let mut addresses: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    let mut mx: BTreeMap<String, BTreeSet<String>> = BTreeMap::new(); // target -> domains
    let mut has_mx: BTreeSet<String> = BTreeSet::new();
    for (_, text) in zones.zone_files() {
        for line in text.lines().filter(|l| !l.starts_with(';')) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 {
                continue;
            }
            let owner = f[0].trim_end_matches('.').to_ascii_lowercase();
            match f[3] {
                "A" => {
                    if let Ok(ip) = f[4].parse::<IpAddr>() {
                        addresses.entry(owner).or_default().push(ip);
                    }
                }
                "MX" if f.len() >= 6 => {
                    let target = f[5].trim_end_matches('.').to_ascii_lowercase();
                    has_mx.insert(owner.clone());
                    if !target.is_empty() {
                        mx.entry(target).or_default().insert(owner);
                    }
                }
                _ => {}
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (host, ips) in addresses {
        for ip in ips
            .into_iter()
            .filter(|ip| ip.is_loopback() && !ip.is_unspecified())
        {
            // 127.0.0.1 is left to the user's own tools and to the lab DNS server.
            if ip == IpAddr::from([127, 0, 0, 1]) || !seen.insert(ip) {
                continue;
            }
            let mut domains = mx.get(&host).cloned().unwrap_or_default();
            if !has_mx.contains(&host) {
                domains.insert(host.clone());
            }
            out.push(Plan {
                host: host.clone(),
                ip,
                domains,
            });
        }
    }
    out
}

pub async fn run(args: UpArgs) -> Result<u8, Fatal> {
    let zones = match &args.zone {
        Some(path) => load_zone(path, None)?,
        None => ZoneSet::parse(SEED_ZONE, "examples/lab.zone", None)
            .map_err(|e| Fatal::new(exit::SOFTWARE, e))?,
    };
    let (dir, _temp) = match &args.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::tempdir().map_err(|e| Fatal::new(exit::OS_ERR, e))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let dns: LabDns = start_lab(&zones, args.dns_listen).await?;
    let plans = plan(&zones);
    if plans.is_empty() {
        return Err(Fatal::new(
            exit::DATA_ERR,
            "the zone gives no A record in 127.0.0.0/8 (other than 127.0.0.1): no exchanger to run",
        ));
    }
    let ips: Vec<String> = plans.iter().map(|p| p.ip.to_string()).collect();
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let port = shared_port(&ip_refs).map_err(|e| Fatal::new(exit::OS_ERR, e))?;
    // name -> (its configuration, the running relay if up)
    let mut relays: BTreeMap<String, (mx_relay::Config, Option<Relay>)> = BTreeMap::new();
    let mut rows = Vec::new();
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    for p in &plans {
        // A host with several addresses runs one exchanger per address, each with its own
        // spool and Maildir.
        let n = used.entry(p.host.clone()).or_insert(0);
        *n += 1;
        let name = if *n == 1 {
            p.host.clone()
        } else {
            format!("{}-{n}", p.host)
        };
        let list = |set: &BTreeSet<String>| {
            set.iter()
                .map(|d| format!("\"{d}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut config = relay_config(
            &dir,
            &name,
            &format!(
                "local_domains = [{}]\ncatch_all_domains = [{}]\n",
                list(&p.domains),
                list(&p.domains)
            ),
        )
        .map_err(|e| Fatal::new(exit::CONFIG, e))?;
        config.server.trusted_networks = vec![];
        config.server.listen = vec![SocketAddr::new(p.ip, port)];
        let relay = start_relay(&config, &name)
            .await
            .map_err(|e| Fatal::new(exit::OS_ERR, e))?;
        rows.push((
            name.clone(),
            format!("{}:{port}", p.ip),
            p.domains.iter().cloned().collect::<Vec<_>>().join(" "),
            config.server.maildir_root.display().to_string(),
        ));
        relays.insert(name.clone(), (config.clone(), Some(relay)));
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "lab dns: {} (UDP and TCP)", dns.addr());
    let _ = writeln!(
        out,
        "{:<28} {:<22} {:<40} MAILDIR",
        "EXCHANGER", "LISTEN", "DOMAINS"
    );
    for (host, listen, domains, maildir) in &rows {
        let _ = writeln!(out, "{host:<28} {listen:<22} {domains:<40} {maildir}");
    }
    let _ = writeln!(
        out,
        "\nA relay pointed at this lab (save as relay.toml, run `mxroute relay --config relay.toml`):\n\n[server]\nlisten = [\"127.0.0.1:2525\"]\n[dns]\nnameservers = [\"{}\"]\n[delivery]\nport = {port}\n",
        dns.addr()
    );
    let _ = writeln!(
        out,
        "Switches: mxroute lab switch --dir {} EXCHANGER stop|start|421|silent|normal|reply ADDRESS CODE",
        dir.display()
    );
    let _ = writeln!(out, "lab up: ready (Ctrl-C stops)");
    let _ = out.flush();
    drop(out);
    let control = control_dir(&dir);
    std::fs::create_dir_all(&control).map_err(|e| Fatal::new(exit::OS_ERR, e))?;
    let signal = crate::relay_cmd::wait_for_signal();
    tokio::pin!(signal);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            done = &mut signal => { done?; break; }
            _ = tick.tick() => apply_switches(&control, &mut relays).await,
        }
    }
    for (_, (_, relay)) in relays {
        if let Some(relay) = relay {
            relay.shutdown().await;
        }
    }
    dns.shutdown().await;
    Ok(0)
}

fn control_dir(dir: &std::path::Path) -> PathBuf {
    dir.join("control")
}

/// Apply the requests `mxroute lab switch` left: one line `EXCHANGER ACTION [ARGS]` per
/// file, the file removed once applied (that is how the command knows).
async fn apply_switches(
    control: &std::path::Path,
    relays: &mut BTreeMap<String, (mx_relay::Config, Option<Relay>)>,
) {
    let Ok(entries) = std::fs::read_dir(control) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("req.") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let words: Vec<&str> = text.split_whitespace().collect();
        let outcome = match words.as_slice() {
            [host, action, rest @ ..] => match relays.get_mut(*host) {
                Some((config, relay)) => switch(config, relay, action, rest).await,
                None => Err(format!("no exchanger {host}")),
            },
            _ => Err("empty request".into()),
        };
        // The answer replaces the request under a name the command waits for.
        let answer = control.join(name.replacen("req.", "done.", 1));
        let _ = std::fs::write(&answer, outcome.unwrap_or_else(|e| format!("error: {e}")));
        let _ = std::fs::remove_file(entry.path());
    }
}

async fn switch(
    config: &mx_relay::Config,
    relay: &mut Option<Relay>,
    action: &str,
    rest: &[&str],
) -> Result<String, String> {
    use mx_relay::faults::SessionFault;
    match action {
        "stop" => {
            if let Some(r) = relay.take() {
                r.shutdown().await;
            }
            Ok("stopped".into())
        }
        "start" => {
            if relay.is_none() {
                *relay = Some(start_relay(config, "exchanger").await?);
            }
            Ok("started".into())
        }
        _ => {
            let r = relay.as_ref().ok_or("the exchanger is stopped")?;
            let faults = r.faults();
            match (action, rest) {
                ("421", []) => faults.set_session(SessionFault::Greeting421),
                ("silent", []) => faults.set_session(SessionFault::Silent),
                ("normal", []) => faults.clear(),
                ("reply", [address, code]) => {
                    let code: u16 = code
                        .parse()
                        .ok()
                        .filter(|c| (400..600).contains(c))
                        .ok_or("CODE must be a 4xx or 5xx reply code")?;
                    let (enhanced, text) = if code < 500 {
                        ("4.2.1", "Mailbox busy (lab switch)")
                    } else {
                        ("5.1.1", "No such user (lab switch)")
                    };
                    faults.set_recipient(address, code, enhanced, text);
                }
                _ => return Err(format!("unknown switch {action} {}", rest.join(" "))),
            }
            Ok(format!("{action} set"))
        }
    }
}

#[derive(Args)]
pub struct SwitchArgs {
    /// The directory given to (or printed by) `mxroute lab up`.
    #[arg(long)]
    dir: PathBuf,
    /// Exchanger name, as in lab up's table.
    exchanger: String,
    /// stop, start, 421, silent, normal, or reply ADDRESS CODE.
    #[arg(num_args = 1..=3, required = true)]
    action: Vec<String>,
}

/// `mxroute lab switch`: hand a switch to the running lab and wait (bounded) for its answer.
pub fn switch_cmd(args: SwitchArgs) -> Result<u8, Fatal> {
    let control = control_dir(&args.dir);
    if !control.is_dir() {
        return Err(Fatal::new(
            exit::NO_INPUT,
            format!(
                "{}: no running lab here (start one with `mxroute lab up --dir ...`)",
                args.dir.display()
            ),
        ));
    }
    let nonce = crate::control::nonce();
    let answer = control.join(format!("done.{nonce}"));
    let line = format!("{} {}\n", args.exchanger, args.action.join(" "));
    let request = crate::control::drop_request(&control, &format!("req.{nonce}"), line.as_bytes())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(&answer) {
            let _ = std::fs::remove_file(&answer);
            println!("{}: {}", args.exchanger, text.trim());
            return Ok(if text.starts_with("error") {
                exit::DATA_ERR
            } else {
                0
            });
        }
        if std::time::Instant::now() > deadline {
            let _ = std::fs::remove_file(&request);
            return Err(Fatal::new(
                exit::TEMPFAIL,
                "the lab did not answer within 10 s: is `mxroute lab up` running with this --dir?",
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
