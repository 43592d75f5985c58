//! The `mxroute` command: thin argument parsing, output formats and exit codes over the
//! library crates.

mod bulk_cmd;
mod check_cmd;
mod control;
mod demo_cmd;
mod dns_source;
mod lab_cmd;
mod lab_up;
mod queue_cmd;
mod relay_cmd;
mod route_cmd;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// mimalloc for the whole binary (docs/architecture.md, "Allocator"): thread-local caches
// and cheap cross-thread frees cut `bulk`'s CPU per query, and the relay's tasks allocate the
// same way.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits(3) codes, as mail tools use them.
pub mod exit {
    pub const USAGE: u8 = 64;
    pub const DATA_ERR: u8 = 65;
    pub const NO_INPUT: u8 = 66;
    pub const SOFTWARE: u8 = 70;
    pub const OS_ERR: u8 = 71;
    pub const CANT_CREATE: u8 = 73;
    pub const IO_ERR: u8 = 74;
    pub const TEMPFAIL: u8 = 75;
    pub const CONFIG: u8 = 78;
}

/// An error that ends the command with a one-line message and a sysexits code.
#[derive(Debug)]
pub struct Fatal {
    pub code: u8,
    pub message: String,
}

impl Fatal {
    pub fn new(code: u8, message: impl std::fmt::Display) -> Self {
        Fatal {
            code,
            message: message.to_string(),
        }
    }
}

impl From<anyhow::Error> for Fatal {
    fn from(e: anyhow::Error) -> Self {
        Fatal::new(exit::SOFTWARE, format!("{e:#}"))
    }
}

#[derive(Parser)]
#[command(
    name = "mxroute",
    version,
    about = "Mail routing by the DNS MX rules (RFC 5321 §5.1), end to end"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on standard error: human or json.
    #[arg(long, global = true, default_value = "human", value_parser = ["human", "json"])]
    log_format: String,
}

#[derive(Subcommand)]
enum Command {
    /// Compute the route to one or more domains or addresses.
    Route(route_cmd::RouteArgs),
    /// Lint domains' mail routing live (DNS, SMTP, MTA-STS, TLS-RPT, DANE), or a zone file
    /// before it is published (--zone).
    Check(check_cmd::CheckArgs),
    /// Routes for a list of domains (a file or standard input), one JSON object a line, at
    /// the speed of the DNS server.
    Bulk(bulk_cmd::BulkArgs),
    /// The MTA: receive mail for our domains into Maildir, and queue relay mail durably.
    Relay(relay_cmd::RelayArgs),
    /// Look at and act on the relay's queue (spool).
    Queue(queue_cmd::QueueArgs),
    /// The lab: a self-contained mail internet on loopback.
    #[command(subcommand)]
    Lab(lab_cmd::LabCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, as for every other error: clap's usage block follows with --help.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("bad arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("mxroute: {first} (see mxroute --help)");
            return ExitCode::from(exit::USAGE);
        }
    };
    // The relay logs every accepted message and refusal (info); the one-shot commands only
    // what went wrong.
    let default_level = match cli.command {
        Command::Relay(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MXROUTE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mxroute: cannot start the runtime: {e}");
            return ExitCode::from(exit::OS_ERR);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Route(args) => route_cmd::run(args).await,
            Command::Check(args) => check_cmd::run(args).await,
            Command::Bulk(args) => bulk_cmd::run(args).await,
            Command::Lab(cmd) => lab_cmd::run(cmd).await,
            Command::Relay(args) => relay_cmd::run(args).await,
            Command::Queue(args) => queue_cmd::run(args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(fatal) => {
            eprintln!("mxroute: {}", fatal.message);
            ExitCode::from(fatal.code)
        }
    }
}
