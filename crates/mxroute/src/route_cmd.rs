use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use mx_core::{IpStrategy, Policy, StaticRoute, normalize_domain};
use mx_dns::{ClientOptions, HickoryClient, Router};

use crate::dns_source::DnsSource;
use crate::{Fatal, exit, table};

#[derive(Args)]
pub struct RouteArgs {
    /// Domains or addresses (user@domain, user@[192.0.2.1]).
    #[arg(required = true, value_name = "DOMAIN|ADDRESS")]
    targets: Vec<String>,
    #[command(flatten)]
    dns: DnsSource,
    /// One JSON object per route, one per line.
    #[arg(long)]
    json: bool,
    /// Seed for the shuffle of equal preferences (reproducible output).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Seconds to wait for one DNS try (default 5, or 1 with --zone).
    #[arg(long)]
    timeout: Option<f64>,
}

/// The routing policy knobs, shared by `route` and `bulk`.
#[derive(Args)]
pub struct PolicyArgs {
    /// ipv4_then_ipv6, ipv6_then_ipv4, ipv4_only, ipv6_only or any.
    #[arg(long, default_value = "ipv4_then_ipv6", value_parser = parse_strategy)]
    ip_strategy: IpStrategy,
    /// One of our own host names, for loop protection (repeatable).
    #[arg(long = "local-name", value_name = "HOST")]
    local_names: Vec<String>,
    /// One of our own addresses, for loop protection (repeatable).
    #[arg(long = "local-address", value_name = "IP")]
    local_addresses: Vec<IpAddr>,
    /// Use MX exchanges written as IP addresses instead of refusing them.
    #[arg(long)]
    allow_mx_to_ip: bool,
    /// Addresses offered before the route is cut (a backup preference always keeps one).
    #[arg(long, default_value_t = 5)]
    mx_address_limit: usize,
    /// DOMAIN=ROUTE, where ROUTE is [ip], [ip]:port, host or host:port (repeatable).
    #[arg(long = "static-route", value_name = "DOMAIN=ROUTE")]
    static_routes: Vec<String>,
    /// SMTP port of the attempts.
    #[arg(long, default_value_t = 25)]
    smtp_port: u16,
}

fn parse_strategy(s: &str) -> Result<IpStrategy, String> {
    s.parse().map_err(|e: mx_core::CoreError| e.to_string())
}

pub fn policy(args: &PolicyArgs) -> Result<Policy, Fatal> {
    let usage = |e: &dyn std::fmt::Display| Fatal::new(exit::USAGE, e);
    let mut policy = Policy {
        ip_strategy: args.ip_strategy,
        local_addresses: args.local_addresses.clone(),
        allow_mx_to_ip: args.allow_mx_to_ip,
        mx_address_limit: args.mx_address_limit,
        smtp_port: args.smtp_port,
        ..Policy::default()
    };
    for name in &args.local_names {
        policy
            .local_names
            .push(normalize_domain(name).map_err(|e| usage(&format!("--local-name: {e}")))?);
    }
    for spec in &args.static_routes {
        let (domain, route) = spec
            .split_once('=')
            .ok_or_else(|| usage(&format!("--static-route {spec:?}: expected DOMAIN=ROUTE")))?;
        let domain =
            normalize_domain(domain).map_err(|e| usage(&format!("--static-route: {e}")))?;
        let route: StaticRoute = route
            .parse()
            .map_err(|e| usage(&format!("--static-route: {e}")))?;
        policy.static_routes.insert(domain, route);
    }
    Ok(policy)
}

pub async fn run(args: RouteArgs) -> Result<u8, Fatal> {
    let policy = policy(&args.policy)?;
    // Bad targets are usage errors, found before any DNS traffic.
    for target in &args.targets {
        mx_core::parse_target(target)
            .map_err(|e| Fatal::new(exit::USAGE, format!("{target:?}: {e}")))?;
    }
    let served = args.dns.serve().await?;
    let default_timeout = if served.is_lab() { 1.0 } else { 5.0 };
    let timeout = args.timeout.unwrap_or(default_timeout);
    if !(timeout > 0.0 && timeout <= 60.0) {
        return Err(Fatal::new(
            exit::USAGE,
            "--timeout must be between 0 and 60 seconds",
        ));
    }
    let options = ClientOptions {
        timeout: Duration::from_secs_f64(timeout),
        ..ClientOptions::default()
    };
    let client = HickoryClient::new(&served.for_hickory(), &options)
        .map_err(|e| Fatal::new(exit::OS_ERR, e))?;
    let mut router = Router::new(Arc::new(client), policy);
    if let Some(seed) = args.seed {
        router = router.with_seed(seed);
    }

    let mut worst = 0u8;
    for target in &args.targets {
        let route = router
            .route(target)
            .await
            .map_err(|e| Fatal::new(exit::USAGE, format!("{target:?}: {e}")))?;
        worst = worst.max(route.status.exit_code());
        if args.json {
            let line = serde_json::to_string(&route)
                .map_err(|e| Fatal::new(exit::SOFTWARE, format!("cannot encode JSON: {e}")))?;
            println!("{line}");
        } else {
            print!("{}", table::route(&route));
        }
    }
    served.shutdown().await;
    Ok(worst)
}
