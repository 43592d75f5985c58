use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use mx_lab::{LabDns, LabError, ZoneSet};

use crate::{Fatal, exit};

#[derive(Subcommand)]
pub enum LabCommand {
    /// Serve a zone file with the lab's authoritative DNS server (UDP and TCP) until Ctrl-C.
    Dns(DnsArgs),
    /// Run the whole lab in-process (DNS, four exchangers, a sending relay) and show MX
    /// routing at work: primary, backup, recovery, balancing, bounces and DNS failures.
    Demo(crate::demo_cmd::DemoArgs),
    /// Run the lab until Ctrl-C: the DNS server and an exchanger on every loopback address
    /// the zone has an A record for, with a ready relay configuration printed.
    Up(crate::lab_up::UpArgs),
    /// Flip a switch of a running `lab up`: stop/start an exchanger, make it answer 421, go
    /// silent, answer one recipient with a 4xx/5xx, or back to normal.
    Switch(crate::lab_up::SwitchArgs),
}

#[derive(Args)]
pub struct DnsArgs {
    /// Zone file (RFC 1035 master format, plus `$FAULT` lines).
    #[arg(long)]
    zone: PathBuf,
    /// Origin for relative names when the file sets none (default: the root).
    #[arg(long)]
    origin: Option<String>,
    /// Address to listen on, UDP and TCP (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:5353")]
    listen: SocketAddr,
}

pub async fn run(cmd: LabCommand) -> Result<u8, Fatal> {
    match cmd {
        LabCommand::Dns(args) => dns(args).await,
        LabCommand::Demo(args) => crate::demo_cmd::run(args).await,
        LabCommand::Up(args) => crate::lab_up::run(args).await,
        LabCommand::Switch(args) => {
            tokio::task::spawn_blocking(move || crate::lab_up::switch_cmd(args))
                .await
                .map_err(|e| Fatal::new(exit::SOFTWARE, e))?
        }
    }
}

/// Load a zone file, mapping failures to one-line errors with the right exit code.
pub fn load_zone(path: &Path, origin: Option<&str>) -> Result<ZoneSet, Fatal> {
    ZoneSet::load(path, origin).map_err(|e| {
        let code = match e {
            LabError::Io { .. } => exit::NO_INPUT,
            _ => exit::DATA_ERR,
        };
        Fatal::new(code, e)
    })
}

/// Only loopback: the lab must never be reachable from, or talk to, the outside.
pub fn require_loopback(addr: &SocketAddr) -> Result<(), Fatal> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(Fatal::new(
            exit::USAGE,
            format!(
                "--listen {addr}: the lab listens on loopback addresses only (127.0.0.0/8, ::1)"
            ),
        ))
    }
}

pub async fn start_lab(zones: &ZoneSet, listen: SocketAddr) -> Result<LabDns, Fatal> {
    require_loopback(&listen)?;
    LabDns::start(zones, listen).await.map_err(|e| {
        Fatal::new(
            exit::OS_ERR,
            format!("cannot start the lab DNS server: {e}"),
        )
    })
}

async fn dns(args: DnsArgs) -> Result<u8, Fatal> {
    let zones = load_zone(&args.zone, args.origin.as_deref())?;
    let lab = start_lab(&zones, args.listen).await?;
    let faults = zones.faults();
    println!(
        "lab dns: serving {} zone(s) ({}) on {} (UDP and TCP), {} fault switch(es); Ctrl-C stops",
        zones.apexes().len(),
        zones.apexes().join(" "),
        lab.addr(),
        faults.len()
    );
    for (name, rtype, fault) in faults {
        println!(
            "  fault: {name} {} -> {fault:?}",
            rtype.as_deref().unwrap_or("*")
        );
    }
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| Fatal::new(exit::OS_ERR, format!("cannot wait for Ctrl-C: {e}")))?;
    lab.shutdown().await;
    Ok(0)
}
