//! Stream in, stream out: lines are read as the window allows, routed concurrently, and
//! written in input order (or as completed). Memory is bounded by the window, not the input.

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Write};
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

/// One input line, or the read error that ended the input.
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
    json: Vec<u8>,
}

/// A record's JSON, in a buffer of exactly its size. It is written first into a scratch
/// buffer kept by the thread, then copied: a typical route is about 1 KB, so a buffer guessed
/// in advance was regrown (a second allocation and a copy) for most lines, or held more memory
/// than the line while it waited for its turn to be written. [`crate::json`] writes it:
/// serde_json's bytes, with less work per string.
fn to_json(record: &BulkRecord<'_>) -> Result<Vec<u8>, BulkError> {
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
    }
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        crate::json::write(scratch, record)?;
        Ok(scratch.as_slice().to_vec())
    })
}

/// Lines the reader hands over at once, and bytes the collector hands to the writer at once:
/// waking another thread costs more than routing a domain, so it is done per batch.
const READ_BATCH: usize = 512;
const WRITE_CHUNK: usize = 128 * 1024;
/// A partial chunk is written after this long anyway, so a slow stream still shows progress.
const WRITE_DELAY: Duration = Duration::from_millis(100);

/// Route every line of `input`, writing one JSON object per line to `output`.
pub async fn run(
    engine: Arc<Engine>,
    input: Box<dyn io::Read + Send>,
    output: Box<dyn Write + Send>,
    options: RunOptions,
    stats: Arc<Stats>,
) -> Result<Summary, BulkError> {
    // On a runtime worker, not in the caller's `block_on`: every finished route wakes the
    // dispatcher (a permit comes back), and waking a thread parked in `block_on` is a
    // context switch per domain.
    tokio::spawn(dispatch(engine, input, output, options, stats))
        .await
        .map_err(|e| BulkError::Task(e.to_string()))?
}

async fn dispatch(
    engine: Arc<Engine>,
    input: Box<dyn io::Read + Send>,
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

    let (lines_tx, mut lines) = mpsc::channel::<Vec<Read>>(16);
    // A plain thread, not spawn_blocking: a read blocked on a terminal must not hold up the
    // runtime's shutdown.
    std::thread::spawn(move || read_lines(input, lines_tx));

    let (chunks_tx, chunks_rx) = mpsc::channel::<Vec<u8>>(4);
    // Written chunks come back to be filled again: a fresh 132 KiB buffer per chunk is fresh
    // pages, and faulting them in cost more than the copy into them.
    let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let writer = tokio::task::spawn_blocking(move || write_chunks(output, chunks_rx, spare_tx));
    let (done_tx, done_rx) = mpsc::unbounded_channel::<Done>();
    let collector = tokio::spawn(collect(
        done_rx,
        chunks_tx,
        spare_rx,
        options.unordered,
        ahead.clone(),
        stats.clone(),
    ));

    let mut tasks = JoinSet::new();
    let mut seq = 0u64;
    let mut input_error = None;
    'input: while let Some(batch) = lines.recv().await {
        for read in batch {
            let (number, text) = match read {
                Read::Line { number, text } => (number, text),
                Read::Failed(error) => {
                    input_error = Some(error);
                    break 'input;
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
                break 'input;
            };
            permit.forget();
            stats.read.fetch_add(1, Ordering::Relaxed);
            let target = match target {
                Ok(target) => target,
                Err(lossy) => {
                    let record = BulkRecord::invalid(number, &lossy, "the line is not valid UTF-8");
                    stats.count(None);
                    let json = to_json(&record)?;
                    let _ = done_tx.send(Done { seq, json });
                    seq += 1;
                    continue;
                }
            };
            let Ok(slot) = resolving.clone().acquire_owned().await else {
                break 'input;
            };
            let (engine, done_tx, stats) = (engine.clone(), done_tx.clone(), stats.clone());
            let line_seq = seq;
            tasks.spawn(async move {
                // Boxed: the route's state (and its random stream) is the bulk of the task,
                // and a spawned future is copied whole into its task, at its largest size.
                let result = Box::pin(route_line(&engine, &target, seed, line_seq)).await;
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
                let json = to_json(&record)?;
                let _ = done_tx.send(Done {
                    seq: line_seq,
                    json,
                });
                Ok::<(), BulkError>(())
            });
            seq += 1;
            while let Some(joined) = tasks.try_join_next() {
                joined.map_err(|e| BulkError::Task(e.to_string()))??;
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| BulkError::Task(e.to_string()))??;
    }
    drop(done_tx);
    let _ = collector.await;
    let written = writer
        .await
        .map_err(|e| BulkError::Output(std::io::Error::other(e)))?;
    written?;
    if let Some(error) = input_error {
        return Err(BulkError::Input(error));
    }
    Ok(Summary::new(&stats, engine.stats(), started.elapsed()))
}

/// One line's route, with the line's own random stream of the run's seed (so the shuffles do
/// not depend on which line finished first).
async fn route_line(
    engine: &Engine,
    target: &str,
    seed: u64,
    seq: u64,
) -> Result<mx_core::Route, mx_core::CoreError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(seq);
    engine.route(target, &mut rng).await
}

/// Reads lines, handing them over in batches: as many as the input has ready (up to
/// [`READ_BATCH`]), so an interactive input still gets each line routed at once.
fn read_lines(input: Box<dyn io::Read + Send>, lines: mpsc::Sender<Vec<Read>>) {
    let mut input = BufReader::with_capacity(256 * 1024, input);
    let mut number = 0u64;
    let mut buf = Vec::with_capacity(256);
    let mut batch = Vec::with_capacity(READ_BATCH);
    loop {
        buf.clear();
        let read = match input.read_until(b'\n', &mut buf) {
            Ok(0) => break,
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
        batch.push(read);
        // Only what is already buffered: asking for more would block on an interactive
        // input while this line waits.
        let more_ready = !input.buffer().is_empty();
        if failed || batch.len() >= READ_BATCH || !more_ready {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(READ_BATCH));
            if lines.blocking_send(full).is_err() || failed {
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = lines.blocking_send(batch);
    }
}

/// Puts finished lines in order (unless unordered), into chunks for the writer thread, and
/// gives each line's read-ahead permit back once it is in a chunk.
async fn collect(
    mut done: mpsc::UnboundedReceiver<Done>,
    chunks: mpsc::Sender<Vec<u8>>,
    spares: std::sync::mpsc::Receiver<Vec<u8>>,
    unordered: bool,
    ahead: Arc<Semaphore>,
    stats: Arc<Stats>,
) {
    let mut reorder = Reorder::default();
    let mut chunk = Vec::with_capacity(WRITE_CHUNK + 4096);
    let mut tick = tokio::time::interval(WRITE_DELAY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let finished = tokio::select! {
            line = done.recv() => match line {
                Some(line) => {
                    let ready = if unordered {
                        vec![line.json]
                    } else {
                        reorder.push(line.seq, line.json)
                    };
                    for json in ready {
                        chunk.extend_from_slice(&json);
                        chunk.push(b'\n');
                        stats.written.fetch_add(1, Ordering::Relaxed);
                        ahead.add_permits(1);
                    }
                    if chunk.len() < WRITE_CHUNK {
                        continue;
                    }
                    false
                }
                None => true,
            },
            _ = tick.tick() => false,
        };
        if !chunk.is_empty() {
            let spare = spares
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(WRITE_CHUNK + 4096));
            let full = std::mem::replace(&mut chunk, spare);
            if chunks.send(full).await.is_err() {
                // The writer failed: stop reading, its error is reported by run().
                ahead.close();
                return;
            }
        }
        if finished {
            return;
        }
    }
}

fn write_chunks(
    output: Box<dyn Write + Send>,
    mut chunks: mpsc::Receiver<Vec<u8>>,
    spares: std::sync::mpsc::Sender<Vec<u8>>,
) -> Result<(), BulkError> {
    let mut out = output;
    while let Some(mut chunk) = chunks.blocking_recv() {
        out.write_all(&chunk).map_err(BulkError::Output)?;
        out.flush().map_err(BulkError::Output)?;
        chunk.clear();
        // The collector may be gone already (end of the run): then the buffer is dropped.
        let _ = spares.send(chunk);
    }
    out.flush().map_err(BulkError::Output)
}
