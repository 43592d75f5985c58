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
    let mut relays: Vec<Relay> = Vec::new();
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
            p.host.clone(),
            format!("{}:{port}", p.ip),
            p.domains.iter().cloned().collect::<Vec<_>>().join(" "),
            config.server.maildir_root.display().to_string(),
        ));
        relays.push(relay);
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
    let _ = writeln!(out, "lab up: ready (Ctrl-C stops)");
    let _ = out.flush();
    drop(out);
    crate::relay_cmd::wait_for_signal().await?;
    for relay in relays {
        relay.shutdown().await;
    }
    dns.shutdown().await;
    Ok(0)
}
