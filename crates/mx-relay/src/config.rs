//! The relay's configuration: one TOML file, every key optional, working defaults with none.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use mx_core::{IpStrategy, Policy, StaticRoute, normalize_domain};
use serde::Deserialize;

use crate::RelayError;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub spool: SpoolSection,
    pub dns: DnsSection,
    pub delivery: DeliverySection,
    pub routing: RoutingSection,
    pub metrics: MetricsSection,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Addresses to accept SMTP on.
    pub listen: Vec<SocketAddr>,
    /// Our name in the greeting, EHLO and Received headers. Default: the system host name.
    pub hostname: Option<String>,
    /// Clients that may relay to any domain without AUTH.
    pub trusted_networks: Vec<IpNet>,
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// Domains we are the final destination for (delivered into Maildir).
    pub local_domains: Vec<String>,
    /// Local domains that accept any local part (no user list needed).
    pub catch_all_domains: Vec<String>,
    pub maildir_root: PathBuf,
    /// `address[:argon2-hash]` per line: the known users of local domains, and AUTH accounts.
    pub users_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Offer STARTTLS; without tls_cert/tls_key a self-signed certificate is made at start.
    pub starttls: bool,
    /// Untrusted clients wait this long for the greeting; one that talks first is refused.
    pub greet_pause_ms: u64,
    pub command_timeout_secs: u64,
    pub data_timeout_secs: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_errors: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
            hostname: None,
            trusted_networks: vec![
                "127.0.0.0/8".parse().expect("literal"),
                "::1/128".parse().expect("literal"),
            ],
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            local_domains: Vec::new(),
            catch_all_domains: Vec::new(),
            maildir_root: PathBuf::from("maildir"),
            users_file: None,
            tls_cert: None,
            tls_key: None,
            starttls: true,
            greet_pause_ms: 1000,
            // RFC 5321 §4.5.3.2.7: a server should wait at least 5 minutes for a command.
            command_timeout_secs: 300,
            // RFC 5321 §4.5.3.2.6 asks the client for 10 minutes after the final dot; we give
            // the client the same for the data itself.
            data_timeout_secs: 600,
            max_connections: 200,
            max_connections_per_ip: 20,
            max_errors: 10,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSection {
    pub path: PathBuf,
    /// Refuse new mail (452 4.3.1) when the spool's file system has less free space than this.
    pub min_free_bytes: u64,
    /// How a batch of new messages is made durable: "filesystem" (one syncfs for the
    /// batch) or "files" (one fsync per file). See docs/spool.md.
    pub sync: String,
}

impl SpoolSection {
    /// `spool.sync` as the spool's group committer takes it (checked at load).
    pub fn sync_mode(&self) -> mx_spool::SyncMode {
        if self.sync == "files" {
            mx_spool::SyncMode::Files
        } else {
            mx_spool::SyncMode::Filesystem
        }
    }
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            path: PathBuf::from("spool"),
            min_free_bytes: 64 * 1024 * 1024,
            sync: "filesystem".into(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsSection {
    /// `IP:PORT` of the resolvers; empty means the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    pub timeout_secs: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySection {
    /// Destination SMTP port (25 unless a lab or a test says otherwise).
    pub port: u16,
    /// Messages delivered at the same time.
    pub concurrency: usize,
    pub first_retry_secs: u64,
    pub max_retry_interval_secs: u64,
    pub queue_lifetime_secs: u64,
    /// Send a "delayed" notice after this long (0: never).
    pub delay_warning_secs: u64,
    pub connect_timeout_secs: u64,
    /// RFC 5321 §4.5.3.2 client timeouts.
    pub greeting_timeout_secs: u64,
    pub command_timeout_secs: u64,
    pub data_timeout_secs: u64,
    pub data_end_timeout_secs: u64,
    /// STARTTLS toward exchangers: "opportunistic" (default) or "never".
    pub starttls: String,
    /// How long a connection is kept idle for the next message to the same destination
    /// (0: one connection per attempt).
    pub idle_connection_secs: u64,
    /// Messages over one connection before it is closed.
    pub max_messages_per_connection: usize,
    /// Outbound connections open at once, idle ones included.
    pub max_connections: usize,
    /// Outbound connections open at once to one IP address.
    pub max_connections_per_destination: usize,
    /// Recipient domains whose mail goes only over STARTTLS with a certificate verified for
    /// the MX host name; when no exchanger passes, the mail waits (never plaintext).
    pub require_tls_domains: Vec<String>,
    /// PEM CA certificates trusted for `require_tls_domains`, besides the system bundle.
    pub tls_ca_file: Option<PathBuf>,
    /// How long an exchanger address that refused a connection (or let it time out) is
    /// passed over for the next messages (0: never).
    pub unreachable_memory_secs: u64,
}

impl Default for DeliverySection {
    fn default() -> Self {
        let schedule = crate::outbound::schedule::Schedule::default();
        let pool = crate::outbound::smtp::PoolLimits::default();
        DeliverySection {
            port: 25,
            concurrency: 32,
            first_retry_secs: schedule.first_retry_secs,
            max_retry_interval_secs: schedule.max_retry_interval_secs,
            queue_lifetime_secs: schedule.queue_lifetime_secs,
            delay_warning_secs: schedule.delay_warning_secs,
            connect_timeout_secs: 30,
            greeting_timeout_secs: 300,
            command_timeout_secs: 300,
            data_timeout_secs: 180,
            data_end_timeout_secs: 600,
            starttls: "opportunistic".into(),
            idle_connection_secs: pool.idle.as_secs(),
            max_messages_per_connection: pool.max_messages_per_connection,
            max_connections: pool.max_connections,
            max_connections_per_destination: pool.max_connections_per_destination,
            require_tls_domains: Vec::new(),
            tls_ca_file: None,
            unreachable_memory_secs: pool.unreachable_memory.as_secs(),
        }
    }
}

impl DeliverySection {
    pub fn schedule(&self) -> crate::outbound::schedule::Schedule {
        crate::outbound::schedule::Schedule {
            first_retry_secs: self.first_retry_secs,
            max_retry_interval_secs: self.max_retry_interval_secs,
            queue_lifetime_secs: self.queue_lifetime_secs,
            delay_warning_secs: self.delay_warning_secs,
        }
    }

    /// Connection reuse and limits for the SMTP transport.
    pub fn pool_limits(&self) -> crate::outbound::smtp::PoolLimits {
        crate::outbound::smtp::PoolLimits {
            idle: std::time::Duration::from_secs(self.idle_connection_secs),
            max_messages_per_connection: self.max_messages_per_connection,
            max_connections: self.max_connections,
            max_connections_per_destination: self.max_connections_per_destination,
            require_tls: crate::outbound::smtp::RequireTls {
                domains: self.require_tls_domains.clone(),
                ca_file: self.tls_ca_file.clone(),
            },
            unreachable_memory: std::time::Duration::from_secs(self.unreachable_memory_secs),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    pub ip_strategy: String,
    pub allow_mx_to_ip: bool,
    pub mx_address_limit: usize,
    /// Our other names for loop protection (server.hostname is always one).
    pub local_names: Vec<String>,
    pub local_addresses: Vec<IpAddr>,
    /// Domain to `[ip]`, `[ip]:port`, `host` or `host:port`.
    pub static_routes: BTreeMap<String, String>,
    pub negative_ttl_cap: u32,
    pub tempfail_ttl: u32,
    /// Seed for the shuffle of equal preferences: the same seed gives the same sequence of
    /// orders (for tests and reproducible demos). None: from the OS.
    pub shuffle_seed: Option<u64>,
}

impl Default for RoutingSection {
    fn default() -> Self {
        let policy = Policy::default();
        RoutingSection {
            ip_strategy: policy.ip_strategy.as_str().to_string(),
            allow_mx_to_ip: policy.allow_mx_to_ip,
            mx_address_limit: policy.mx_address_limit,
            local_names: Vec::new(),
            local_addresses: Vec::new(),
            static_routes: BTreeMap::new(),
            negative_ttl_cap: policy.negative_ttl_cap,
            tempfail_ttl: policy.tempfail_ttl,
            shuffle_seed: None,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Where to serve Prometheus `/metrics` (loopback only); none means no endpoint.
    pub listen: Option<SocketAddr>,
}

impl Config {
    /// Read and check a config file. Errors name the file and the offending key.
    pub fn load(path: &Path) -> Result<Config, RelayError> {
        let text = std::fs::read_to_string(path).map_err(|source| RelayError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, label: &str) -> Result<Config, RelayError> {
        let mut config: Config = toml::from_str(text).map_err(|e| RelayError::Config {
            label: label.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.normalize().map_err(|message| RelayError::Config {
            label: label.to_string(),
            message,
        })?;
        Ok(config)
    }

    /// Check values serde cannot, and put names in canonical form.
    fn normalize(&mut self) -> Result<(), String> {
        let domains = |key: &str, list: &mut Vec<String>| -> Result<(), String> {
            for (i, d) in list.iter_mut().enumerate() {
                *d = normalize_domain(d).map_err(|e| format!("{key}[{i}]: {e}"))?;
            }
            Ok(())
        };
        domains("server.local_domains", &mut self.server.local_domains)?;
        domains(
            "server.catch_all_domains",
            &mut self.server.catch_all_domains,
        )?;
        domains("routing.local_names", &mut self.routing.local_names)?;
        domains(
            "delivery.require_tls_domains",
            &mut self.delivery.require_tls_domains,
        )?;
        if !["filesystem", "files"].contains(&self.spool.sync.as_str()) {
            return Err(format!(
                "spool.sync: {:?} (expected \"filesystem\" or \"files\")",
                self.spool.sync
            ));
        }
        if !["opportunistic", "never"].contains(&self.delivery.starttls.as_str()) {
            return Err(format!(
                "delivery.starttls: {:?} (expected \"opportunistic\" or \"never\")",
                self.delivery.starttls
            ));
        }
        if self.delivery.first_retry_secs == 0 {
            return Err("delivery.first_retry_secs: must be more than 0".into());
        }
        for (key, value) in [
            (
                "max_messages_per_connection",
                self.delivery.max_messages_per_connection,
            ),
            ("max_connections", self.delivery.max_connections),
            (
                "max_connections_per_destination",
                self.delivery.max_connections_per_destination,
            ),
        ] {
            if value == 0 {
                return Err(format!("delivery.{key}: must be more than 0"));
            }
        }
        if self.delivery.max_connections_per_destination > self.delivery.max_connections {
            return Err(format!(
                "delivery.max_connections_per_destination: {} is more than delivery.max_connections ({})",
                self.delivery.max_connections_per_destination, self.delivery.max_connections
            ));
        }
        for d in &self.server.catch_all_domains {
            if !self.server.local_domains.contains(d) {
                self.server.local_domains.push(d.clone());
            }
        }
        if let Some(h) = &self.server.hostname {
            self.server.hostname =
                Some(normalize_domain(h).map_err(|e| format!("server.hostname: {e}"))?);
        }
        if self.server.listen.is_empty() {
            return Err("server.listen: at least one address is needed".into());
        }
        if self.server.max_message_size == 0 {
            return Err("server.max_message_size: must be more than 0".into());
        }
        if self.server.max_recipients == 0 {
            return Err("server.max_recipients: must be more than 0".into());
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err("server.tls_cert and server.tls_key: give both or neither".into());
        }
        if let Some(addr) = self.metrics.listen
            && !addr.ip().is_loopback()
        {
            return Err(format!(
                "metrics.listen: {addr} is not a loopback address; the metrics endpoint is for local scrapers only"
            ));
        }
        if let Some(t) = self.dns.timeout_secs
            && !(t > 0.0 && t <= 60.0)
        {
            return Err("dns.timeout_secs: must be between 0 and 60".into());
        }
        self.routing_policy()?;
        Ok(())
    }

    /// Our host name: configured, or the system's, or a fixed fallback.
    pub fn hostname(&self) -> String {
        self.server.hostname.clone().unwrap_or_else(system_hostname)
    }

    /// The routing contract's policy knobs as mx-core wants them.
    pub fn routing_policy(&self) -> Result<Policy, String> {
        let r = &self.routing;
        let ip_strategy: IpStrategy = r
            .ip_strategy
            .parse()
            .map_err(|e| format!("routing.ip_strategy: {e}"))?;
        let mut static_routes = BTreeMap::new();
        for (domain, route) in &r.static_routes {
            let key = normalize_domain(domain)
                .map_err(|e| format!("routing.static_routes.{domain}: {e}"))?;
            let route: StaticRoute = route
                .parse()
                .map_err(|e| format!("routing.static_routes.{domain}: {e}"))?;
            static_routes.insert(key, route);
        }
        let mut local_names = r.local_names.clone();
        local_names.push(self.hostname());
        Ok(Policy {
            ip_strategy,
            local_names,
            local_addresses: r.local_addresses.clone(),
            allow_mx_to_ip: r.allow_mx_to_ip,
            mx_address_limit: r.mx_address_limit,
            static_routes,
            negative_ttl_cap: r.negative_ttl_cap,
            tempfail_ttl: r.tempfail_ttl,
            smtp_port: self.delivery.port,
            ..Policy::default()
        })
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| normalize_domain(h).is_ok())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_means_working_defaults() {
        let c = Config::parse("", "<empty>").unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:2525".parse().unwrap()]);
        assert!(
            c.server
                .trusted_networks
                .iter()
                .any(|n| n.contains(&"127.0.0.1".parse::<IpAddr>().unwrap()))
        );
        assert_eq!(c.spool.path, PathBuf::from("spool"));
        assert_eq!(c.delivery.port, 25);
        assert_eq!(c.delivery.idle_connection_secs, 5);
        assert_eq!(c.delivery.max_messages_per_connection, 100);
        assert_eq!(c.delivery.max_connections, 100);
        assert_eq!(c.delivery.max_connections_per_destination, 10);
        assert!(c.dns.nameservers.is_empty());
        assert!(c.routing_policy().is_ok());
    }

    #[test]
    fn every_documented_key_is_read() {
        let c = Config::parse(
            r#"
            [server]
            listen = ["127.0.0.1:2600", "[::1]:2600"]
            hostname = "MX1.Example.COM"
            trusted_networks = ["10.0.0.0/8"]
            max_message_size = 1000
            max_recipients = 7
            local_domains = ["example.com"]
            catch_all_domains = ["example.org"]
            maildir_root = "/var/mail"
            users_file = "users"
            tls_cert = "c.pem"
            tls_key = "k.pem"
            command_timeout_secs = 30
            data_timeout_secs = 60
            max_connections = 5
            max_connections_per_ip = 2
            max_errors = 3
            [spool]
            path = "/var/spool/mx"
            min_free_bytes = 0
            [dns]
            nameservers = ["127.0.0.1:5353"]
            timeout_secs = 1.5
            [delivery]
            port = 2526
            idle_connection_secs = 7
            max_messages_per_connection = 50
            max_connections = 20
            max_connections_per_destination = 4
            require_tls_domains = ["Secure.Example."]
            tls_ca_file = "ca.pem"
            [routing]
            ip_strategy = "ipv6_only"
            allow_mx_to_ip = true
            mx_address_limit = 3
            local_names = ["mx2.example.com"]
            local_addresses = ["127.0.0.5"]
            static_routes = { "example.net" = "[127.0.0.9]:2527" }
            [metrics]
            listen = "127.0.0.1:9325"
            "#,
            "<all>",
        )
        .unwrap();
        assert_eq!(c.hostname(), "mx1.example.com");
        assert_eq!(c.server.local_domains, vec!["example.com", "example.org"]);
        let p = c.routing_policy().unwrap();
        assert_eq!(p.ip_strategy, IpStrategy::Ipv6Only);
        assert_eq!(p.smtp_port, 2526);
        let pool = c.delivery.pool_limits();
        assert_eq!(pool.idle, std::time::Duration::from_secs(7));
        assert_eq!(pool.max_messages_per_connection, 50);
        assert_eq!(pool.max_connections, 20);
        assert_eq!(pool.max_connections_per_destination, 4);
        assert_eq!(pool.require_tls.domains, vec!["secure.example"]);
        assert_eq!(
            pool.require_tls.ca_file.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        assert!(p.local_names.contains(&"mx1.example.com".to_string()));
        assert_eq!(p.static_routes.len(), 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_their_name() {
        let err = |text: &str| Config::parse(text, "relay.toml").unwrap_err().to_string();
        assert!(err("[server]\nlisten_on = []\n").contains("listen_on"));
        assert!(err("[serverx]\n").contains("serverx"));
        assert!(
            err("[server]\ntrusted_networks = [\"10.0.0.0/33\"]\n").contains("trusted_networks")
        );
        assert!(err("[routing]\nip_strategy = \"v7\"\n").contains("routing.ip_strategy"));
        assert!(
            err("[server]\nlocal_domains = [\"exa mple.com\"]\n")
                .contains("server.local_domains[0]")
        );
        assert!(err("[metrics]\nlisten = \"0.0.0.0:9325\"\n").contains("metrics.listen"));
        assert!(err("[server]\ntls_cert = \"c.pem\"\n").contains("tls_key"));
        assert!(
            err("[routing]\nstatic_routes = { \"a.example\" = \"1.2.3.4\" }\n")
                .contains("static_routes")
        );
        assert!(err("[server]\nmax_message_size = \"big\"\n").contains("max_message_size"));
        assert!(
            err("[delivery]\nmax_connections_per_destination = 0\n")
                .contains("delivery.max_connections_per_destination")
        );
        assert!(
            err("[delivery]\nmax_connections = 2\nmax_connections_per_destination = 3\n")
                .contains("delivery.max_connections_per_destination")
        );
        assert!(
            err("[delivery]\nmax_messages_per_connection = 0\n")
                .contains("delivery.max_messages_per_connection")
        );
    }
}
