//! `mxroute check`: lint domains live, or a zone file before it is published.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use mx_check::mta_sts::FetchOptions;
use mx_check::probe::ProbeOptions;
use mx_check::{CheckOptions, Checker, DomainReport, render};
use mx_core::normalize_domain;

use crate::dns_source::DnsSource;
use crate::{Fatal, exit};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
    Html,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Domains (or addresses, user@domain) to check; with --zone, default: every name in
    /// the zone that has MX records, and each zone apex.
    #[arg(value_name = "DOMAIN")]
    domains: Vec<String>,
    // With --zone the zone text is linted offline (DNS shape only), before it is published.
    #[command(flatten)]
    dns: DnsSource,
    /// Shorthand for --format json: one JSON object per domain, one per line.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write the report to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// SMTP port of the exchangers to probe.
    #[arg(long, default_value_t = 25)]
    smtp_port: u16,
    /// Skip the SMTP probes (DNS and policy checks only).
    #[arg(long)]
    no_smtp: bool,
    /// Port on which the domain's authoritative servers are asked directly (default: the
    /// port of the first --nameserver, else 53).
    #[arg(long, value_name = "PORT")]
    authoritative_port: Option<u16>,
    /// HTTPS port of the MTA-STS policy host.
    #[arg(long, default_value_t = 443)]
    https_port: u16,
    /// Extra trusted CA certificates (PEM) for STARTTLS and MTA-STS, beside the system's.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Host name sent in EHLO by the probes.
    #[arg(long, value_name = "NAME")]
    helo: Option<String>,
    /// Seconds to wait for one DNS try (default 5, or 1 with --zone).
    #[arg(long)]
    timeout: Option<f64>,
    /// Seconds allowed for each step of an SMTP probe or policy fetch.
    #[arg(long, default_value_t = 10.0)]
    probe_timeout: f64,
}

fn seconds(value: f64, what: &str) -> Result<Duration, Fatal> {
    if value > 0.0 && value <= 300.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(Fatal::new(
            exit::USAGE,
            format!("{what} must be between 0 and 300 seconds"),
        ))
    }
}

fn helo_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| h.contains('.'))
        .unwrap_or_else(|| "localhost.localdomain".into())
}

pub async fn run(args: CheckArgs) -> Result<u8, Fatal> {
    let format = if args.json { Format::Json } else { args.format };
    let mut domains = Vec::new();
    for input in &args.domains {
        let name = input.rsplit_once('@').map_or(input.as_str(), |(_, d)| d);
        let domain = normalize_domain(name)
            .map_err(|e| Fatal::new(exit::USAGE, format!("{input:?}: {e}")))?;
        domains.push(domain);
    }
    if domains.is_empty() && args.dns.zone.is_none() {
        return Err(Fatal::new(
            exit::USAGE,
            "name at least one DOMAIN, or a zone file with --zone",
        ));
    }
    let probe_timeout = seconds(args.probe_timeout, "--probe-timeout")?;
    let roots = mx_check::tls::roots(args.ca_file.as_deref())
        .map_err(|e| Fatal::new(exit::NO_INPUT, format!("--ca-file: {e}")))?;
    let roots = Arc::new(roots);

    let served = args.dns.serve().await?;
    let mut zone_apexes = None;
    if let Some(zones) = &served.zones {
        if domains.is_empty() {
            domains = mx_check::gather::mail_domains_in_zone(
                &zones.owners_of("MX"),
                &zones.apexes(),
                &zones.cnames(),
            );
        }
        if domains.is_empty() {
            return Err(Fatal::new(
                exit::DATA_ERR,
                "the zone has no MX records and no zone apex to check",
            ));
        }
        zone_apexes = Some(zones.apexes());
    }
    let default_timeout = if served.is_lab() { 1.0 } else { 5.0 };
    let dns_timeout = seconds(args.timeout.unwrap_or(default_timeout), "--timeout")?;
    let offline = zone_apexes.is_some();
    let options = CheckOptions {
        authoritative_port: args
            .authoritative_port
            .or_else(|| args.dns.nameservers.first().map(SocketAddr::port))
            .unwrap_or(53),
        nameservers: served.nameservers.clone(),
        dns_timeout,
        smtp: (!args.no_smtp && !offline).then(|| ProbeOptions {
            port: args.smtp_port,
            connect_timeout: probe_timeout,
            command_timeout: probe_timeout,
            ..ProbeOptions::new(&args.helo.clone().unwrap_or_else(helo_name), roots.clone())
        }),
        fetch: FetchOptions {
            port: args.https_port,
            timeout: probe_timeout,
            tls_roots: roots,
        },
        zone_apexes,
    };
    // No usable resolver: the check cannot run, which is what 75 says.
    let checker = Checker::new(options).map_err(|e| Fatal::new(exit::TEMPFAIL, e))?;

    let mut reports: Vec<DomainReport> = Vec::new();
    for domain in &domains {
        reports.push(checker.check(domain).await);
    }
    served.shutdown().await;

    let to_terminal = args.output.is_none() && std::io::stdout().is_terminal();
    let body = match format {
        Format::Text => render::text(
            &reports,
            to_terminal && std::env::var_os("NO_COLOR").is_none(),
        ),
        Format::Json => {
            let mut out = String::new();
            for report in &reports {
                let line = serde_json::to_string(report)
                    .map_err(|e| Fatal::new(exit::SOFTWARE, format!("cannot encode JSON: {e}")))?;
                out.push_str(&line);
                out.push('\n');
            }
            out
        }
        Format::Html => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            render::html(&reports, &mx_smtp::dsn::rfc5322_date(now))
        }
    };
    match &args.output {
        Some(path) => std::fs::write(path, body).map_err(|e| {
            Fatal::new(
                exit::CANT_CREATE,
                format!("cannot write {}: {e}", path.display()),
            )
        })?,
        None => {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(body.as_bytes());
            let _ = stdout.flush();
        }
    }

    Ok(if reports.iter().any(|r| !r.complete) {
        exit::TEMPFAIL
    } else if reports.iter().any(DomainReport::has_error) {
        1
    } else {
        0
    })
}
