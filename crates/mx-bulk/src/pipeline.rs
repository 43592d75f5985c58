//! Stream in, stream out: lines are read as the window allows, routed concurrently, and
//! written in input order (or as completed). Memory is bounded by the window, not the input.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mx_core::Status;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::BulkError;
use crate::engine::{Engine, EngineStats};
use crate::input::{Line, parse_line};
use crate::output::{BulkRecord, Reorder};

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Domains resolving at once.
    pub concurrency: usize,
    /// Write in completion order instead of input order.
    pub unordered: bool,
    /// How many lines may be read ahead of the last one written. In input order a slow
    /// domain holds back the ones after it; this bounds what waits behind it.
    pub window: usize,
    /// Seed of the shuffles of equal preferences (each line gets its own stream of it, so
    /// the output does not depend on completion order).
    pub seed: Option<u64>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            concurrency: 2000,
            unordered: false,
            window: 20_000,
            seed: None,
        }
    }
}

/// Live counters of a run (the progress bar reads them).
#[derive(Debug, Default)]
pub struct Stats {
    /// Lines taken in (blank and comment lines excluded).
    pub read: AtomicU64,
    /// Lines written out.
    pub written: AtomicU64,
    pub ok: AtomicU64,
    pub null_mx: AtomicU64,
    pub nxdomain: AtomicU64,
    pub unroutable: AtomicU64,
    pub looped: AtomicU64,
    pub tempfail: AtomicU64,
    pub invalid: AtomicU64,
}

impl Stats {
    fn count(&self, status: Option<Status>) {
        let counter = match status {
            Some(Status::Ok) => &self.ok,
            Some(Status::NullMx) => &self.null_mx,
            Some(Status::Nxdomain) => &self.nxdomain,
            Some(Status::Unroutable) => &self.unroutable,
            Some(Status::Loop) => &self.looped,
            Some(Status::Tempfail) => &self.tempfail,
            None => &self.invalid,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Lines whose answer is not known (tempfail) or that could not be read (invalid).
    pub fn errors(&self) -> u64 {
        self.tempfail.load(Ordering::Relaxed) + self.invalid.load(Ordering::Relaxed)
    }
}

/// What a finished run did (`--stats` prints it as JSON).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub lines: u64,
    pub ok: u64,
    pub null_mx: u64,
    pub nxdomain: u64,
    pub unroutable: u64,
    #[serde(rename = "loop")]
    pub looped: u64,
    pub tempfail: u64,
    pub invalid: u64,
    pub seconds: f64,
    pub domains_per_second: f64,
    pub queries_per_second: f64,
    #[serde(flatten)]
    pub engine: EngineStats,
}

impl Summary {
    fn new(stats: &Stats, engine: EngineStats, elapsed: Duration) -> Self {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let lines = load(&stats.written);
        let queries = engine.transport.udp_queries + engine.transport.tcp_queries;
        Summary {
            lines,
            ok: load(&stats.ok),
            null_mx: load(&stats.null_mx),
            nxdomain: load(&stats.nxdomain),
            unroutable: load(&stats.unroutable),
            looped: load(&stats.looped),
            tempfail: load(&stats.tempfail),
            invalid: load(&stats.invalid),
            seconds,
            domains_per_second: lines as f64 / seconds,
            queries_per_second: queries as f64 / seconds,
            engine,
        }
    }
}

enum Read {
    Line {
        number: u64,
        text: Result<String, String>,
    },
    Failed(std::io::Error),
}

/// A finished line: its place in the input order and its JSON.
struct Done {
    seq: u64,
    json: String,
}

/// Route every line of `input`, writing one JSON object per line to `output`.
pub async fn run(
    engine: Arc<Engine>,
    input: Box<dyn BufRead + Send>,
    output: Box<dyn Write + Send>,
    options: RunOptions,
    stats: Arc<Stats>,
) -> Result<Summary, BulkError> {
    if options.concurrency == 0 || options.window == 0 {
        return Err(BulkError::Config(
            "concurrency and window must be at least 1".into(),
        ));
    }
    let started = Instant::now();
    let seed = options.seed.unwrap_or_else(rand::random);
    // Read-ahead permits: taken per line read, given back when the line is written.
    let ahead = Arc::new(Semaphore::new(options.window.max(options.concurrency)));
    let resolving = Arc::new(Semaphore::new(options.concurrency));

    let (lines_tx, mut lines) = mpsc::channel::<Read>(1024);
    // A plain thread, not spawn_blocking: a read blocked on a terminal must not hold up the
    // runtime's shutdown.
    std::thread::spawn(move || read_lines(input, lines_tx));

    let (done_tx, done_rx) = mpsc::unbounded_channel::<Done>();
    let writer = {
        let (ahead, stats) = (ahead.clone(), stats.clone());
        let unordered = options.unordered;
        tokio::task::spawn_blocking(move || write_lines(output, done_rx, unordered, &ahead, &stats))
    };

    let mut tasks = JoinSet::new();
    let mut seq = 0u64;
    let mut input_error = None;
    while let Some(read) = lines.recv().await {
        let (number, text) = match read {
            Read::Line { number, text } => (number, text),
            Read::Failed(error) => {
                input_error = Some(error);
                break;
            }
        };
        let target = match &text {
            Ok(text) => match parse_line(text) {
                Line::Skip => continue,
                Line::Target(target) => Ok(target.to_string()),
            },
            Err(lossy) => Err(lossy.trim().to_string()),
        };
        // A closed semaphore means the writer stopped: its error is reported below.
        let Ok(permit) = ahead.acquire().await else {
            break;
        };
        permit.forget();
        stats.read.fetch_add(1, Ordering::Relaxed);
        let target = match target {
            Ok(target) => target,
            Err(lossy) => {
                let record = BulkRecord::invalid(number, &lossy, "the line is not valid UTF-8");
                stats.count(None);
                let json = serde_json::to_string(&record)?;
                let _ = done_tx.send(Done { seq, json });
                seq += 1;
                continue;
            }
        };
        let Ok(slot) = resolving.clone().acquire_owned().await else {
            break;
        };
        let (engine, done_tx, stats) = (engine.clone(), done_tx.clone(), stats.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(seq);
        let line_seq = seq;
        tasks.spawn(async move {
            let result = engine.route(&target, &mut rng).await;
            drop(slot);
            let record = match &result {
                Ok(route) => {
                    stats.count(Some(route.status));
                    BulkRecord::Route {
                        line: number,
                        input: &target,
                        route,
                    }
                }
                Err(reason) => {
                    stats.count(None);
                    BulkRecord::invalid(number, &target, reason)
                }
            };
            let json = serde_json::to_string(&record)?;
            let _ = done_tx.send(Done {
                seq: line_seq,
                json,
            });
            Ok::<(), BulkError>(())
        });
        seq += 1;
        while let Some(joined) = tasks.try_join_next() {
            joined.map_err(|e| BulkError::Config(format!("a route task failed: {e}")))??;
        }
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| BulkError::Config(format!("a route task failed: {e}")))??;
    }
    drop(done_tx);
    let written = writer
        .await
        .map_err(|e| BulkError::Output(std::io::Error::other(e)))?;
    written?;
    if let Some(error) = input_error {
        return Err(BulkError::Input(error));
    }
    Ok(Summary::new(&stats, engine.stats(), started.elapsed()))
}

fn read_lines(mut input: Box<dyn BufRead + Send>, lines: mpsc::Sender<Read>) {
    let mut number = 0u64;
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        let read = match input.read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {
                number += 1;
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                let text = String::from_utf8(std::mem::take(&mut buf))
                    .map_err(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                Read::Line { number, text }
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => Read::Failed(error),
        };
        let failed = matches!(read, Read::Failed(_));
        if lines.blocking_send(read).is_err() || failed {
            return;
        }
    }
}

fn write_lines(
    output: Box<dyn Write + Send>,
    mut done: mpsc::UnboundedReceiver<Done>,
    unordered: bool,
    ahead: &Semaphore,
    stats: &Stats,
) -> Result<(), BulkError> {
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, output);
    let mut reorder = Reorder::default();
    let mut flushed = Instant::now();
    let result = (|| {
        while let Some(line) = done.blocking_recv() {
            let ready = if unordered {
                vec![line.json]
            } else {
                reorder.push(line.seq, line.json)
            };
            for json in ready {
                out.write_all(json.as_bytes())?;
                out.write_all(b"\n")?;
                stats.written.fetch_add(1, Ordering::Relaxed);
                ahead.add_permits(1);
            }
            // Flush when nothing else is ready (at most 10 times a second), so a slow
            // stream still shows its progress in the output, not only at the end.
            if done.is_empty() && flushed.elapsed() >= Duration::from_millis(100) {
                out.flush()?;
                flushed = Instant::now();
            }
        }
        out.flush()
    })();
    if result.is_err() {
        // Stop the reader: nothing more can be written.
        ahead.close();
    }
    result.map_err(BulkError::Output)
}
