//! `mxroute bulk`: routes for a whole list of domains, one JSON object per input line.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Args;
use mx_bulk::{BulkError, Engine, EngineConfig, Line, RunOptions, Stats, parse_line};

use crate::dns_source::DnsSource;
use crate::route_cmd::{PolicyArgs, policy};
use crate::{Fatal, exit};

#[derive(Args)]
pub struct BulkArgs {
    /// Domains or addresses, one a line (`#` comments and blank lines skipped); `-` or
    /// nothing for standard input.
    #[arg(value_name = "FILE|-")]
    input: Option<PathBuf>,
    /// Write the JSON lines here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    // Questions are spread across several --nameserver, and a retry goes to the next one.
    #[command(flatten)]
    dns: DnsSource,
    /// Domains resolving at once.
    #[arg(long, default_value_t = 2000)]
    concurrency: usize,
    /// DNS queries outstanding at once (the in-flight window).
    #[arg(long, default_value_t = 1000)]
    in_flight: usize,
    /// At most this many queries per second, all nameservers together.
    #[arg(long, value_name = "QPS")]
    rate: Option<u32>,
    /// Seconds to wait for a first try; each retry waits twice as long, up to 4 times.
    #[arg(long, default_value_t = 1.0)]
    timeout: f64,
    /// Tries after the first when a nameserver does not answer.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// UDP sockets per address family, shared by every query.
    #[arg(long, default_value_t = 4)]
    sockets: usize,
    /// Exchanger address lookups remembered for other domains (entries).
    #[arg(long, default_value_t = EngineConfig::default().exchanger_cache)]
    exchanger_cache: usize,
    /// Lines read ahead of the last one written (bounds memory behind a slow domain).
    #[arg(long, default_value_t = 20_000)]
    window: usize,
    /// Write each route when it is ready instead of in input order.
    #[arg(long)]
    unordered: bool,
    /// Take exchanger addresses from an authoritative MX answer's additional section when
    /// both A and AAAA are there (fewer queries; see docs/bulk.md for the trade-off).
    #[arg(long)]
    use_additional: bool,
    /// Seed for the shuffle of equal preferences (reproducible output).
    #[arg(long)]
    seed: Option<u64>,
    /// Print a JSON summary of the run (counts, rates, queries) on standard error.
    #[arg(long)]
    stats: bool,
    #[command(flatten)]
    policy: PolicyArgs,
}

pub async fn run(args: BulkArgs) -> Result<u8, Fatal> {
    let usage = |m: &str| Fatal::new(exit::USAGE, m);
    let policy = policy(&args.policy)?;
    if !(args.timeout > 0.0 && args.timeout <= 60.0) {
        return Err(usage("--timeout must be between 0 and 60 seconds"));
    }
    if args.concurrency == 0 || args.in_flight == 0 || args.sockets == 0 || args.window == 0 {
        return Err(usage(
            "--concurrency, --in-flight, --sockets and --window must be at least 1",
        ));
    }
    let input_path = args.input.clone().filter(|p| p.as_os_str() != "-");
    let input: Box<dyn std::io::Read + Send> = match &input_path {
        Some(path) => Box::new(
            File::open(path)
                .map_err(|e| Fatal::new(exit::NO_INPUT, format!("{}: {e}", path.display())))?,
        ),
        None => Box::new(std::io::stdin()),
    };
    let served = args.dns.serve().await?;
    let nameservers = if served.nameservers.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let servers = mx_bulk::parse_resolv_conf(&text);
        if servers.is_empty() {
            return Err(Fatal::new(
                exit::CONFIG,
                "no nameserver in /etc/resolv.conf: give --nameserver IP:PORT",
            ));
        }
        servers
    } else {
        served.nameservers.clone()
    };
    let output: Box<dyn Write + Send> = match &args.output {
        Some(path) => Box::new(
            File::create(path)
                .map_err(|e| Fatal::new(exit::CANT_CREATE, format!("{}: {e}", path.display())))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let config = EngineConfig {
        nameservers,
        sockets: args.sockets,
        in_flight: args.in_flight,
        timeout: Duration::from_secs_f64(args.timeout),
        retries: args.retries,
        rate_limit: args.rate,
        exchanger_cache: args.exchanger_cache,
        use_additional: args.use_additional,
    };
    let engine = Arc::new(Engine::new(&config, policy).map_err(|e| match e {
        BulkError::Config(_) => Fatal::new(exit::USAGE, e),
        _ => Fatal::new(exit::OS_ERR, e),
    })?);
    let options = RunOptions {
        concurrency: args.concurrency,
        unordered: args.unordered,
        window: args.window,
        seed: args.seed,
    };
    let stats = Arc::new(Stats::default());
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| start_progress(input_path.as_ref(), stats.clone()));

    let result = mx_bulk::run(engine, input, output, options, stats.clone()).await;
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }
    served.shutdown().await;
    let summary = result.map_err(|e| match e {
        BulkError::Input(_) | BulkError::Output(_) => Fatal::new(exit::IO_ERR, e),
        _ => Fatal::new(exit::SOFTWARE, e),
    })?;
    if args.stats {
        let line = serde_json::to_string(&summary)
            .map_err(|e| Fatal::new(exit::SOFTWARE, format!("cannot encode JSON: {e}")))?;
        eprintln!("{line}");
    }
    // Per-domain statuses are data, not errors; but when every domain ended tempfail nothing
    // was learnt (the nameserver is down or unreachable), and a script must be able to tell.
    let routed = summary.lines - summary.invalid;
    if routed > 0 && summary.tempfail == routed {
        return Ok(exit::TEMPFAIL);
    }
    Ok(0)
}

/// A progress bar on stderr: done, rate, ETA (when the input is a file, whose lines are
/// counted first), and how many lines ended tempfail or invalid.
fn start_progress(
    input: Option<&PathBuf>,
    stats: Arc<Stats>,
) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let total = input.and_then(|path| count_targets(path).ok());
    let (bar, template) = match total {
        Some(total) => (
            indicatif::ProgressBar::new(total),
            "{bar:30} {pos}/{len} domains  {per_sec}  ETA {eta}  {msg}",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} {pos} domains  {per_sec}  {msg}",
        ),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let ticker_bar = bar.clone();
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            ticker_bar.set_position(stats.written.load(Ordering::Relaxed));
            ticker_bar.set_message(format!("errors {}", stats.errors()));
        }
    });
    (bar, ticker)
}

fn count_targets(path: &PathBuf) -> std::io::Result<u64> {
    let mut count = 0;
    let mut reader = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf)? > 0 {
        if parse_line(&String::from_utf8_lossy(&buf)) != Line::Skip {
            count += 1;
        }
        buf.clear();
    }
    Ok(count)
}
