//! `mxroute lab demo`: the whole mail internet of the lab in one process, on loopback, in a
//! temporary directory. A lab DNS server serves the seed zone, four exchanger relays receive
//! mail, and a sending relay routes by MX; six scenarios show primary, backup, recovery,
//! balancing, permanent failures and DNS failures, and a summary proves nothing was lost.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use mx_lab::{Fault, LabDns, ZoneSet};
use mx_relay::{Config, Relay};

use crate::{Fatal, exit};

/// The seed zone, embedded so the demo needs no files.
const SEED_ZONE: &str = include_str!("../../../examples/lab.zone");
/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(30);
const SENDER: &str = "sender@demo.test";

#[derive(Args)]
pub struct DemoArgs {
    /// Messages per scenario.
    #[arg(long, default_value_t = 20)]
    messages: usize,
    /// Keep the temporary directory (Maildirs, spools) after the demo.
    #[arg(long)]
    keep: bool,
}

/// One exchanger: its name, address, served domain, and the running relay when up.
struct Exchanger {
    name: &'static str,
    ip: &'static str,
    domain: &'static str,
    config: Config,
    relay: Option<Relay>,
}

impl Exchanger {
    fn maildir(&self, dir: &Path) -> PathBuf {
        dir.join(self.name)
            .join("maildir")
            .join(self.domain)
            .join("user")
            .join("new")
    }
}

struct Lab {
    dir: PathBuf,
    dns: Option<LabDns>,
    exchangers: Vec<Exchanger>,
    sender_config: Config,
    sender: Option<Relay>,
}

#[derive(Default)]
struct Tally {
    sent: usize,
    delivered: Vec<(String, usize)>,
    bounced: usize,
    deferred_then_delivered: usize,
}

impl Tally {
    fn delivered_to(&mut self, name: &str, n: usize) {
        if let Some(e) = self.delivered.iter_mut().find(|(k, _)| k == name) {
            e.1 += n;
        } else {
            self.delivered.push((name.to_string(), n));
        }
    }
    fn delivered_total(&self) -> usize {
        self.delivered.iter().map(|(_, n)| n).sum()
    }
}

pub async fn run(args: DemoArgs) -> Result<u8, Fatal> {
    if args.messages == 0 {
        return Err(Fatal::new(exit::USAGE, "--messages must be at least 1"));
    }
    let tmp = tempfile::Builder::new()
        .prefix("mxroute-demo-")
        .tempdir()
        .map_err(|e| {
            Fatal::new(
                exit::OS_ERR,
                format!("cannot make a temporary directory: {e}"),
            )
        })?;
    println!("lab demo: working in {}", tmp.path().display());
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut lab = match start(tmp.path()).await {
        Ok(lab) => lab,
        Err(e) => return Err(Fatal::new(exit::OS_ERR, e)),
    };
    let outcome = scenarios(&mut lab, args.messages, &mut tally).await;
    shutdown(lab).await;
    summary(&tally);
    println!("elapsed: {:.1} s", started.elapsed().as_secs_f64());
    if args.keep {
        let kept = tmp.keep();
        println!("kept: {}", kept.display());
    }
    match outcome {
        Ok(()) => {
            println!("result: every expectation held");
            Ok(0)
        }
        Err(e) => {
            println!("result: FAILED: {e}");
            eprintln!("mxroute: lab demo: {e}");
            Ok(1)
        }
    }
}

pub(crate) fn relay_config(dir: &Path, name: &str, extra: &str) -> Result<Config, String> {
    let d = dir.join(name);
    let mut c = Config::parse(
        &format!("[server]\nhostname = \"{name}.lab\"\ngreet_pause_ms = 0\n{extra}"),
        name,
    )
    .map_err(|e| format!("{name}: bad configuration: {e}"))?;
    c.spool.path = d.join("spool");
    c.spool.min_free_bytes = 0;
    c.server.maildir_root = d.join("maildir");
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(c)
}

/// A port free on every one of `ips`.
pub(crate) fn shared_port(ips: &[&str]) -> Result<u16, String> {
    for _ in 0..100 {
        let first = TcpListener::bind((ips[0], 0)).map_err(|e| format!("bind {}: {e}", ips[0]))?;
        let port = first.local_addr().map_err(|e| e.to_string())?.port();
        if ips[1..]
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok())
        {
            return Ok(port);
        }
    }
    Err(format!("no port free on all of {}", ips.join(", ")))
}

pub(crate) async fn start_relay(config: &Config, name: &str) -> Result<Relay, String> {
    Relay::start(config)
        .await
        .map_err(|e| format!("cannot start {name}: {e}"))
}

async fn start(dir: &Path) -> Result<Lab, String> {
    let zones = ZoneSet::parse(SEED_ZONE, "<lab.zone>", None)
        .map_err(|e| format!("the embedded zone: {e}"))?;
    let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let dns = LabDns::start(&zones, listen)
        .await
        .map_err(|e| format!("cannot start the lab DNS server: {e}"))?;
    println!("lab dns: serving the seed zone on {}", dns.addr());
    let plan: [(&'static str, &'static str, &'static str); 4] = [
        ("mailhost1", "127.0.0.11", "example.com"),
        ("mailhost2", "127.0.0.12", "example.com"),
        ("mx-a", "127.0.0.21", "balanced.example"),
        ("mx-b", "127.0.0.22", "balanced.example"),
    ];
    let ips: Vec<&str> = plan.iter().map(|p| p.1).collect();
    let port = shared_port(&ips)?;
    let mut lab = Lab {
        dir: dir.to_path_buf(),
        dns: Some(dns),
        exchangers: Vec::new(),
        sender_config: Config::default(),
        sender: None,
    };
    for (name, ip, domain) in plan {
        let mut config = relay_config(
            dir,
            name,
            &format!("local_domains = [\"{domain}\"]\ncatch_all_domains = [\"{domain}\"]\n"),
        )?;
        config.server.trusted_networks = vec![];
        config.server.listen = vec![
            format!("{ip}:{port}")
                .parse()
                .map_err(|e| format!("{ip}: {e}"))?,
        ];
        let relay = start_relay(&config, name).await?;
        println!("exchanger {name}: {ip}:{port} for {domain}");
        lab.exchangers.push(Exchanger {
            name,
            ip,
            domain,
            config,
            relay: Some(relay),
        });
    }
    let dns_addr = lab.dns.as_ref().map(|d| d.addr()).ok_or("no DNS server")?;
    // The demo stops and restarts exchangers within seconds: it retries fast and does not
    // remember a stopped exchanger as unreachable (a real relay passes over it for a minute,
    // so scenario (c) would show mail staying on the backup until then).
    let mut config = relay_config(
        dir,
        "sender",
        "listen = [\"127.0.0.1:0\"]\nlocal_domains = [\"demo.test\"]\ncatch_all_domains = [\"demo.test\"]\n[delivery]\nfirst_retry_secs = 1\nmax_retry_interval_secs = 1\nconnect_timeout_secs = 5\nunreachable_memory_secs = 0\n[routing]\ntempfail_ttl = 0\n",
    )?;
    config.dns.nameservers = vec![dns_addr];
    config.dns.timeout_secs = Some(1.0);
    config.delivery.port = port;
    let sender = start_relay(&config, "the sending relay").await?;
    println!(
        "sending relay: {} (resolves through {dns_addr}, delivers to port {port})",
        sender
            .local_addrs()
            .first()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    lab.sender_config = config;
    lab.sender = Some(sender);
    Ok(lab)
}

async fn shutdown(mut lab: Lab) {
    if let Some(s) = lab.sender.take() {
        s.shutdown().await;
    }
    for e in &mut lab.exchangers {
        if let Some(r) = e.relay.take() {
            r.shutdown().await;
        }
    }
    if let Some(d) = lab.dns.take() {
        d.shutdown().await;
    }
}

impl Lab {
    fn exchanger(&mut self, name: &str) -> Result<&mut Exchanger, String> {
        self.exchangers
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or_else(|| format!("no exchanger {name}"))
    }

    fn count(&self, name: &str, tag: &str) -> usize {
        self.exchangers
            .iter()
            .find(|e| e.name == name)
            .map(|e| matching(&e.maildir(&self.dir), tag).len())
            .unwrap_or(0)
    }

    fn bounces(&self, tag: &str) -> Vec<String> {
        let new = self.dir.join("sender/maildir/demo.test/sender/new");
        matching(&new, tag)
    }

    fn sender_addr(&self) -> Result<SocketAddr, String> {
        self.sender
            .as_ref()
            .and_then(|s| s.local_addrs().first().copied())
            .ok_or_else(|| "the sending relay is not running".to_string())
    }

    /// Send `rcpts.len()` messages, one per recipient, tagged `tag #i`.
    async fn send(&self, rcpts: Vec<String>, tag: &str) -> Result<(), String> {
        let addr = self.sender_addr()?;
        let tag = tag.to_string();
        tokio::task::spawn_blocking(move || smtp_send(addr, &rcpts, &tag))
            .await
            .map_err(|e| format!("the SMTP client failed: {e}"))?
    }

    /// Wait (bounded) until `count()` reaches `total`, with a progress bar on a terminal
    /// (indicatif draws to stderr and stays hidden when it is not one).
    async fn wait(
        &self,
        what: &str,
        total: usize,
        count: impl Fn(&Lab) -> usize,
    ) -> Result<(), String> {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("    {bar:30} {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(what.to_string());
        let deadline = Instant::now() + WAIT;
        loop {
            let done = count(self);
            bar.set_position(done.min(total) as u64);
            if done >= total {
                bar.finish_and_clear();
                return Ok(());
            }
            if Instant::now() > deadline {
                bar.abandon();
                return Err(format!("timed out after {} s: {what}", WAIT.as_secs()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Queue entries (`.state` files) of the sending relay that say `deferred`.
    fn deferred(&self) -> usize {
        let queue = self.dir.join("sender/spool/queue");
        std::fs::read_dir(queue)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".state"))
                    .filter(|e| {
                        std::fs::read_to_string(e.path())
                            .map(|t| t.contains("deferred"))
                            .unwrap_or(false)
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

/// The messages in a Maildir `new` directory whose text contains `Subject: <tag> #`.
fn matching(new: &Path, tag: &str) -> Vec<String> {
    let needle = format!("Subject: {tag} #");
    std::fs::read_dir(new)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read(e.path()).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .filter(|m| m.contains(&needle))
                .collect()
        })
        .unwrap_or_default()
}

/// A tiny SMTP client: one session, one transaction per recipient.
fn smtp_send(addr: SocketAddr, rcpts: &[String], tag: &str) -> Result<(), String> {
    let io = |e: std::io::Error| format!("SMTP to {addr}: {e}");
    let stream = TcpStream::connect(addr).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(io)?;
    let mut r = BufReader::new(stream.try_clone().map_err(io)?);
    let mut w = stream;
    let mut reply = || -> Result<String, String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).map_err(io)? == 0 {
                return Err(format!("SMTP to {addr}: connection closed"));
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return Ok(all);
            }
        }
    };
    let expect = |got: String, code: &str, what: &str| -> Result<(), String> {
        if got.starts_with(code) {
            Ok(())
        } else {
            Err(format!("SMTP {what}: {}", got.trim_end()))
        }
    };
    expect(reply()?, "220", "greeting")?;
    let mut say = |line: String| -> Result<String, String> {
        w.write_all(line.as_bytes()).map_err(io)?;
        reply()
    };
    expect(say("EHLO demo.test\r\n".into())?, "250", "EHLO")?;
    for (i, rcpt) in rcpts.iter().enumerate() {
        let n = i + 1;
        expect(say(format!("MAIL FROM:<{SENDER}>\r\n"))?, "250", "MAIL")?;
        expect(say(format!("RCPT TO:<{rcpt}>\r\n"))?, "250", "RCPT")?;
        expect(say("DATA\r\n".into())?, "354", "DATA")?;
        let body = format!(
            "From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: {tag} #{n}\r\n\r\nlab demo message {tag} #{n}\r\n.\r\n"
        );
        expect(say(body)?, "250", "end of data")?;
    }
    let _ = say("QUIT\r\n".into());
    Ok(())
}

fn rcpts(domain: &str, n: usize) -> Vec<String> {
    vec![format!("user@{domain}"); n]
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

async fn scenarios(lab: &mut Lab, n: usize, t: &mut Tally) -> Result<(), String> {
    // (a) The primary takes the mail.
    println!();
    println!("(a) example.com: MX 10 mailhost1, MX 20 mailhost2. Sending {n} to user@example.com;");
    println!("    the lowest preference wins, so all should land on mailhost1.");
    lab.send(rcpts("example.com", n), "demo a").await?;
    t.sent += n;
    lab.wait(&format!("{n} messages on mailhost1"), n, |l| {
        l.count("mailhost1", "demo a") + l.count("mailhost2", "demo a")
    })
    .await?;
    let (m1, m2) = (
        lab.count("mailhost1", "demo a"),
        lab.count("mailhost2", "demo a"),
    );
    t.delivered_to("mailhost1", m1);
    t.delivered_to("mailhost2", m2);
    println!("    result: mailhost1 {m1}, mailhost2 {m2}");
    check(m1 == n && m2 == 0, || {
        format!("(a) expected all {n} on mailhost1, got mailhost1 {m1}, mailhost2 {m2}")
    })?;

    // (b) The primary is down: the backup takes the mail.
    println!();
    println!("(b) mailhost1 goes down. Sending {n} more: the sender should fall back to");
    println!("    mailhost2 (MX 20) and lose nothing.");
    if let Some(r) = lab.exchanger("mailhost1")?.relay.take() {
        r.shutdown().await;
    }
    lab.send(rcpts("example.com", n), "demo b").await?;
    t.sent += n;
    lab.wait(&format!("{n} messages on mailhost2"), n, |l| {
        l.count("mailhost2", "demo b")
    })
    .await?;
    let m2 = lab.count("mailhost2", "demo b");
    t.delivered_to("mailhost2", m2);
    println!("    result: mailhost2 {m2} of {n}");
    check(m2 == n, || {
        format!("(b) expected {n} on mailhost2, got {m2}")
    })?;

    // (c) The primary comes back.
    println!();
    println!("(c) mailhost1 comes back on the same address and Maildir. Sending {n}:");
    println!("    they should go to mailhost1 again.");
    {
        let e = lab.exchanger("mailhost1")?;
        let relay = start_relay(&e.config, e.name).await?;
        println!("    mailhost1 is up again on {}", e.ip);
        e.relay = Some(relay);
    }
    lab.send(rcpts("example.com", n), "demo c").await?;
    t.sent += n;
    lab.wait(&format!("{n} messages on mailhost1 or mailhost2"), n, |l| {
        l.count("mailhost1", "demo c") + l.count("mailhost2", "demo c")
    })
    .await?;
    let (m1, m2) = (
        lab.count("mailhost1", "demo c"),
        lab.count("mailhost2", "demo c"),
    );
    t.delivered_to("mailhost1", m1);
    t.delivered_to("mailhost2", m2);
    println!("    result: mailhost1 {m1}, mailhost2 {m2}");
    check(m1 == n, || {
        format!(
            "(c) expected all {n} on mailhost1 after its return, got mailhost1 {m1}, mailhost2 {m2}"
        )
    })?;

    // (d) Equal preference: the mail is spread.
    // At least 20, so that a split between two exchangers says something.
    let nd = n.max(20);
    println!();
    println!("(d) balanced.example: mx-a and mx-b both at MX 10. Sending {nd} to");
    println!("    user@balanced.example: equal preferences are tried in random order.");
    lab.send(rcpts("balanced.example", nd), "demo d").await?;
    t.sent += nd;
    lab.wait(&format!("{nd} messages on mx-a and mx-b"), nd, |l| {
        l.count("mx-a", "demo d") + l.count("mx-b", "demo d")
    })
    .await?;
    let (a, b) = (lab.count("mx-a", "demo d"), lab.count("mx-b", "demo d"));
    t.delivered_to("mx-a", a);
    t.delivered_to("mx-b", b);
    let pct = |x: usize| 100.0 * x as f64 / (a + b).max(1) as f64;
    println!(
        "    result: mx-a {a} ({:.0}%), mx-b {b} ({:.0}%)",
        pct(a),
        pct(b)
    );
    check(a > 0 && b > 0, || {
        format!("(d) expected both mx-a and mx-b to get mail, got mx-a {a}, mx-b {b}")
    })?;

    // (e) Permanent routing failures bounce at once.
    println!();
    println!("(e) nullmx.example publishes a null MX (RFC 7505); nosuch.example does not exist.");
    println!("    One message to each: both should bounce to {SENDER} without a connection.");
    lab.send(
        vec![
            "user@nullmx.example".to_string(),
            "user@nosuch.example".to_string(),
        ],
        "demo e",
    )
    .await?;
    t.sent += 2;
    lab.wait("two bounces in sender@demo.test's Maildir", 2, |l| {
        l.bounces("demo e").len()
    })
    .await?;
    let bounces = lab.bounces("demo e");
    t.bounced += bounces.len();
    let mut statuses = Vec::new();
    for b in &bounces {
        let rcpt = if b.contains("nullmx.example") {
            "user@nullmx.example"
        } else {
            "user@nosuch.example"
        };
        for line in b.lines().filter(|l| l.starts_with("Status:")) {
            println!("    bounce for {rcpt}: {}", line.trim());
            statuses.push(line.trim().to_string());
        }
    }
    for want in ["Status: 5.1.10", "Status: 5.1.2"] {
        check(statuses.iter().any(|s| s == want), || {
            format!("(e) no bounce with {want:?} (got {statuses:?})")
        })?;
    }

    // (f) DNS fails: mail waits, then goes when DNS recovers.
    println!();
    println!("(f) The lab DNS now answers SERVFAIL for example.com. (the sending relay is");
    println!("    restarted first, so no cached answer hides the failure). Sending {n}:");
    println!("    they must wait in the queue (deferred, no bounce) until DNS recovers.");
    if let Some(s) = lab.sender.take() {
        s.shutdown().await;
    }
    lab.sender = Some(start_relay(&lab.sender_config, "the sending relay").await?);
    let faults = lab.dns.as_ref().ok_or("no DNS server")?.faults();
    faults.set("example.com.", None, Fault::ServFail);
    lab.send(rcpts("example.com", n), "demo f").await?;
    t.sent += n;
    lab.wait(&format!("{n} deferred messages in the queue"), n, |l| {
        l.deferred()
    })
    .await?;
    let deferred = lab.deferred();
    let early = lab.count("mailhost1", "demo f") + lab.count("mailhost2", "demo f");
    let bounced = lab.bounces("demo f").len();
    println!(
        "    while DNS fails: {deferred} deferred in the queue, {early} delivered, {bounced} bounced"
    );
    check(early == 0 && bounced == 0, || {
        format!(
            "(f) expected nothing delivered or bounced while DNS fails, got {early} delivered, {bounced} bounced"
        )
    })?;
    faults.clear("example.com.", None);
    println!("    DNS recovers (fault cleared); waiting for the retries.");
    lab.wait(
        &format!("{n} deferred messages delivered after recovery"),
        n,
        |l| l.count("mailhost1", "demo f") + l.count("mailhost2", "demo f"),
    )
    .await?;
    let (m1, m2) = (
        lab.count("mailhost1", "demo f"),
        lab.count("mailhost2", "demo f"),
    );
    t.delivered_to("mailhost1", m1);
    t.delivered_to("mailhost2", m2);
    t.deferred_then_delivered += m1 + m2;
    let bounced = lab.bounces("demo f").len();
    t.bounced += bounced;
    println!("    result: mailhost1 {m1}, mailhost2 {m2}, bounced {bounced}");
    check(m1 == n && bounced == 0, || {
        format!(
            "(f) expected all {n} on mailhost1 after recovery, got mailhost1 {m1}, mailhost2 {m2}, bounced {bounced}"
        )
    })?;
    let lost = t.sent as i64 - t.delivered_total() as i64 - t.bounced as i64;
    check(lost == 0, || format!("lost {lost} message(s)"))
}

fn summary(t: &Tally) {
    let lost = t.sent as i64 - t.delivered_total() as i64 - t.bounced as i64;
    println!();
    println!("summary");
    println!("  {:<24} {:>6}", "sent", t.sent);
    for (name, n) in &t.delivered {
        println!("  {:<24} {:>6}", format!("delivered to {name}"), n);
    }
    println!("  {:<24} {:>6}", "bounced", t.bounced);
    println!(
        "  {:<24} {:>6}",
        "deferred then delivered", t.deferred_then_delivered
    );
    println!("  {:<24} {:>6}", "lost", lost);
}
