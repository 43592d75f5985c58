//! `mxroute queue`: look at and act on the relay's spool, like mailq/postqueue but with the
//! state of every recipient. Reading works beside a running relay; changes go through it
//! (a request file its delivery engine applies), or straight to the spool when it is stopped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use mx_relay::Config;
use mx_spool::{FileSpool, QueueId, QueuedMessage, RecipientStatus, Spool, SpoolError};
use serde::Serialize;

use crate::{Fatal, exit};

#[derive(Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    command: QueueCommand,
    /// The relay's configuration file (its spool.path is used).
    #[arg(long, global = true, conflicts_with = "spool")]
    config: Option<PathBuf>,
    /// The spool directory (default: the relay's default, ./spool).
    #[arg(long, global = true)]
    spool: Option<PathBuf>,
    /// JSON output (one object per line for lists).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// One line per queued message.
    List,
    /// Envelope, headers and per-recipient state of one message.
    Show { id: String },
    /// Counts, sizes and ages.
    Stats,
    /// Make deferred recipients due now (one message, or --all).
    Retry {
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Remove a message without delivering it.
    Delete { id: String },
}

#[derive(Serialize)]
struct Row {
    id: String,
    age_secs: u64,
    size: u64,
    from: String,
    recipients: Vec<RecipientRow>,
    attempts: u32,
    next_attempt_at: u64,
}

#[derive(Serialize)]
struct RecipientRow {
    address: String,
    status: RecipientStatus,
    attempts: u32,
    last_reply: Option<String>,
}

#[derive(Serialize, Default)]
struct Stats {
    messages: usize,
    bytes: u64,
    oldest_age_secs: u64,
    recipients: BTreeMap<String, usize>,
    /// Recipients not yet final, by domain.
    pending_by_domain: BTreeMap<String, usize>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn row(message: &QueuedMessage) -> Row {
    let e = &message.envelope;
    Row {
        id: e.id.to_string(),
        age_secs: now().saturating_sub(e.received_at),
        size: e.size,
        from: e.mail_from.clone(),
        recipients: message
            .state
            .recipients
            .iter()
            .map(|r| RecipientRow {
                address: r.address.clone(),
                status: r.status,
                attempts: r.attempts,
                last_reply: r.last_reply.clone(),
            })
            .collect(),
        attempts: message.state.attempts,
        next_attempt_at: message.state.next_attempt_at,
    }
}

fn spool_path(args: &QueueArgs) -> Result<PathBuf, Fatal> {
    if let Some(path) = &args.spool {
        return Ok(path.clone());
    }
    match &args.config {
        Some(file) => Config::load(file)
            .map(|c| c.spool.path)
            .map_err(|e| Fatal::new(exit::CONFIG, e)),
        None => Ok(Config::default().spool.path),
    }
}

fn spool_error(e: SpoolError) -> Fatal {
    let code = match e {
        SpoolError::NotFound(_) | SpoolError::BadId(_) => exit::DATA_ERR,
        SpoolError::Locked { .. } => exit::TEMPFAIL,
        _ => exit::OS_ERR,
    };
    let message = match e {
        SpoolError::Locked { .. } => format!("{e}: another process holds the spool"),
        other => other.to_string(),
    };
    Fatal::new(code, message)
}

fn parse_id(id: &str) -> Result<QueueId, Fatal> {
    QueueId::new(id).map_err(spool_error)
}

pub async fn run(args: QueueArgs) -> Result<u8, Fatal> {
    let path = spool_path(&args)?;
    tokio::task::spawn_blocking(move || run_blocking(args, path))
        .await
        .map_err(|e| Fatal::new(exit::SOFTWARE, e))?
}

fn run_blocking(args: QueueArgs, path: PathBuf) -> Result<u8, Fatal> {
    match &args.command {
        QueueCommand::List => {
            let spool = FileSpool::open_readonly(&path).map_err(spool_error)?;
            let rows: Vec<Row> = loaded(&spool)?.iter().map(row).collect();
            if args.json {
                for r in &rows {
                    println!("{}", json(r)?);
                }
            } else {
                print_list(&rows);
            }
            Ok(0)
        }
        QueueCommand::Show { id } => {
            let spool = FileSpool::open_readonly(&path).map_err(spool_error)?;
            let id = parse_id(id)?;
            let message = spool.load(&id).map_err(spool_error)?;
            let body = spool.body(&id).map_err(spool_error)?;
            let headers = header_block(&body);
            if args.json {
                #[derive(Serialize)]
                struct Shown<'a> {
                    #[serde(flatten)]
                    row: Row,
                    client_ip: Option<std::net::IpAddr>,
                    helo: &'a Option<String>,
                    auth_user: &'a Option<String>,
                    headers: String,
                }
                let shown = Shown {
                    row: row(&message),
                    client_ip: message.envelope.client_ip,
                    helo: &message.envelope.helo,
                    auth_user: &message.envelope.auth_user,
                    headers,
                };
                println!("{}", json(&shown)?);
            } else {
                let r = row(&message);
                println!("id:       {}", r.id);
                println!("from:     <{}>", r.from);
                println!("size:     {} bytes, age {}", r.size, age(r.age_secs));
                if let Some(ip) = message.envelope.client_ip {
                    println!(
                        "client:   {ip} (helo {})",
                        message.envelope.helo.as_deref().unwrap_or("-")
                    );
                }
                println!("attempts: {}", r.attempts);
                for rc in &r.recipients {
                    println!(
                        "  {:<40} {:<9} attempts {}  {}",
                        rc.address,
                        status_name(rc.status),
                        rc.attempts,
                        rc.last_reply.as_deref().unwrap_or("")
                    );
                }
                println!("\n{}", headers.trim_end());
            }
            Ok(0)
        }
        QueueCommand::Stats => {
            let spool = FileSpool::open_readonly(&path).map_err(spool_error)?;
            let mut stats = Stats::default();
            for m in loaded(&spool)? {
                stats.messages += 1;
                stats.bytes += m.envelope.size;
                stats.oldest_age_secs = stats
                    .oldest_age_secs
                    .max(now().saturating_sub(m.envelope.received_at));
                for r in &m.state.recipients {
                    *stats
                        .recipients
                        .entry(status_name(r.status).into())
                        .or_default() += 1;
                    if !r.status.is_final() {
                        let domain = r.address.rsplit_once('@').map_or("", |(_, d)| d);
                        *stats
                            .pending_by_domain
                            .entry(domain.to_ascii_lowercase())
                            .or_default() += 1;
                    }
                }
            }
            if args.json {
                println!("{}", json(&stats)?);
            } else {
                println!(
                    "{} message(s), {} bytes, oldest {}",
                    stats.messages,
                    stats.bytes,
                    age(stats.oldest_age_secs)
                );
                for (status, n) in &stats.recipients {
                    println!("  {status:<10} {n}");
                }
                for (domain, n) in &stats.pending_by_domain {
                    println!("  pending for {domain}: {n}");
                }
            }
            Ok(0)
        }
        QueueCommand::Retry { id, all } => {
            let target = match (id, all) {
                (Some(id), _) => parse_id(id)?.to_string(),
                (None, true) => "all".to_string(),
                (None, false) => {
                    return Err(Fatal::new(exit::USAGE, "retry needs a queue id or --all"));
                }
            };
            let spool = match FileSpool::open(&path) {
                Ok((spool, _)) => spool,
                Err(SpoolError::Locked { .. }) => {
                    ask_running_relay(&path, "retry", &target)?;
                    println!("the running relay made {target} due now");
                    return Ok(0);
                }
                Err(e) => return Err(spool_error(e)),
            };
            let ids = match (id, all) {
                (Some(id), _) => vec![parse_id(id)?],
                (None, true) => spool.list().map_err(spool_error)?,
                (None, false) => {
                    return Err(Fatal::new(exit::USAGE, "retry needs a queue id or --all"));
                }
            };
            let mut changed = 0;
            for id in ids {
                let mut state = spool.load(&id).map_err(spool_error)?.state;
                state.next_attempt_at = 0;
                for r in &mut state.recipients {
                    if r.status == RecipientStatus::Deferred {
                        r.status = RecipientStatus::Pending;
                    }
                }
                spool.update_state(&id, &state).map_err(spool_error)?;
                changed += 1;
            }
            println!("{changed} message(s) due now");
            Ok(0)
        }
        QueueCommand::Delete { id } => {
            let id = parse_id(id)?;
            let spool = match FileSpool::open(&path) {
                Ok((spool, _)) => spool,
                Err(SpoolError::Locked { .. }) => {
                    // Check first that there is such a message, for a clear answer.
                    let reader = FileSpool::open_readonly(&path).map_err(spool_error)?;
                    reader.load(&id).map_err(spool_error)?;
                    ask_running_relay(&path, "delete", id.as_str())?;
                    println!("deleted {id}");
                    return Ok(0);
                }
                Err(e) => return Err(spool_error(e)),
            };
            spool.remove(&id).map_err(spool_error)?;
            println!("deleted {id}");
            Ok(0)
        }
    }
}

/// Hand a change to the running relay, which holds the spool: drop a request file where its
/// delivery engine looks every second, and wait (bounded) until it has been applied.
fn ask_running_relay(spool: &std::path::Path, verb: &str, target: &str) -> Result<(), Fatal> {
    let dir = mx_relay::outbound::control_dir(spool);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Fatal::new(exit::OS_ERR, format!("{}: {e}", dir.display())))?;
    let name = format!("{verb}.{target}.{}", crate::control::nonce());
    let request = crate::control::drop_request(&dir, &name, b"")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while request.exists() {
        if std::time::Instant::now() > deadline {
            let _ = std::fs::remove_file(&request);
            return Err(Fatal::new(
                exit::TEMPFAIL,
                "the spool is locked but no running relay took the request within 15 s",
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

fn loaded(spool: &FileSpool) -> Result<Vec<QueuedMessage>, Fatal> {
    let mut out = Vec::new();
    for id in spool.list().map_err(spool_error)? {
        match spool.load(&id) {
            Ok(m) => out.push(m),
            // Delivered and removed between list and load: not an error.
            Err(SpoolError::NotFound(_)) => {}
            Err(e) => return Err(spool_error(e)),
        }
    }
    Ok(out)
}

fn print_list(rows: &[Row]) {
    if rows.is_empty() {
        println!("queue is empty");
        return;
    }
    println!(
        "{:<22} {:>8} {:>7}  {:<30} RECIPIENTS",
        "ID", "SIZE", "AGE", "FROM"
    );
    for r in rows {
        let rcpts: Vec<String> = r
            .recipients
            .iter()
            .map(|rc| format!("{} ({})", rc.address, status_name(rc.status)))
            .collect();
        println!(
            "{:<22} {:>8} {:>7}  {:<30} {}",
            r.id,
            r.size,
            age(r.age_secs),
            format!("<{}>", r.from),
            rcpts.join(", ")
        );
    }
}

fn status_name(s: RecipientStatus) -> &'static str {
    match s {
        RecipientStatus::Pending => "pending",
        RecipientStatus::Delivered => "delivered",
        RecipientStatus::Bounced => "bounced",
        RecipientStatus::Deferred => "deferred",
    }
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// The message's header block (up to the first empty line), as text.
fn header_block(body: &[u8]) -> String {
    let end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(body.len().min(16 * 1024), |p| p + 2);
    String::from_utf8_lossy(&body[..end]).replace("\r\n", "\n")
}

fn json<T: Serialize>(value: &T) -> Result<String, Fatal> {
    serde_json::to_string(value).map_err(|e| Fatal::new(exit::SOFTWARE, e))
}
