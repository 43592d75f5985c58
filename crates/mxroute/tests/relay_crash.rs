//! Crash safety of the relay, end to end: the real `mxroute relay` is SIGKILLed at random
//! moments while clients stream messages at it, restarted on the same spool and Maildir, and
//! after every kill the files on disk are held against what the clients were told:
//!
//! - every message answered 250 is, intact, in the spool or in Maildir (at least once:
//!   duplicates are allowed, and counted);
//! - nothing whose final dot never reached the relay (cut off by the kill, or abandoned by
//!   its client in the middle of DATA) appears anywhere, and no unknown message does;
//! - no Maildir message is truncated, nothing is quarantined, every restart recovers.
//!
//! A message whose final dot was sent but whose reply never came back (the kill hit in
//! between) may be stored or not; the test only counts how often it was.
//!
//! Seeded: `RELAY_CRASH_SEED=<n>` repeats a run's kill schedule and message sizes (the
//! interleaving of threads and fsyncs stays the machine's). Every wait is bounded and the
//! whole test stays under two minutes; `-- --nocapture` shows a line per round and a summary.
//! Only loopback is contacted.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mx_spool::{FileSpool, Spool};
use serde_json::Value;

mod run;
use run::{BIN, NoLine, line_after};

/// SIGKILLs, each followed by a restart on the same spool and Maildir.
const ROUNDS: u32 = 20;
/// Connections streaming messages at the relay in each round (plus one that abandons DATA).
const CLIENTS: u32 = 3;
/// The whole test, on a busy 2-core machine.
const BUDGET: Duration = Duration::from_secs(120);
/// From spawning the relay to its `accepting SMTP on` line.
const READY_WAIT: Duration = Duration::from_secs(20);
/// For a killed or terminated relay to be reaped.
const EXIT_WAIT: Duration = Duration::from_secs(20);
/// Any one read or write of a client.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// For the restarted relay to move what the spool holds into Maildir.
const DRAIN_WAIT: Duration = Duration::from_secs(45);
/// Messages sent, each to be acknowledged, by the last (clean) run.
const FINAL_MESSAGES: u32 = 5;
/// At most this many filler lines (about 70 bytes each) per message.
const MAX_FILLERS: u64 = 300;

/// The relay's own address in the local domain, and the domain itself.
const DOMAIN: &str = "example.com";

#[test]
fn sigkilled_relay_keeps_every_acknowledged_message() {
    let started = Instant::now();
    let seed = seed();
    println!("relay_crash: seed {seed} (repeat with RELAY_CRASH_SEED={seed})");
    let lab = Lab::new(seed, started);
    let mut rng = Rng(seed);
    let mut ledger = Ledger::default();
    let mut totals = Totals::default();

    for round in 1..=ROUNDS {
        lab.check_budget();
        let mut relay = lab.start(round);
        let recovery = lab.recovery(&relay);
        totals.recovered(&recovery);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (addr, stop, seed) = (relay.addr, stop.clone(), rng.next());
                thread::spawn(move || client(addr, round, c, seed, None, &stop))
            })
            .collect();
        let abandon_early = rng.below(2) == 0;
        let aborter = {
            let (addr, stop, fillers) = (relay.addr, stop.clone(), rng.below(MAX_FILLERS));
            thread::spawn(move || abandon_data(addr, round, fillers, abandon_early, &stop))
        };
        // One kill in four lands early, while the restarted relay may still be sweeping what
        // the last kill left in the spool; the others under a stream of messages.
        let delay = if rng.below(4) == 0 {
            rng.below(30)
        } else {
            20 + rng.below(380)
        };
        thread::sleep(Duration::from_millis(delay));
        lab.sigkill(&mut relay);
        stop.store(true, Ordering::SeqCst);

        let mut this_round = Tally::default();
        for handle in clients {
            for record in lab.join(handle, "client") {
                this_round.count(&record.fate);
                ledger.add(record);
            }
        }
        let record = lab.join(aborter, "aborting client");
        this_round.count(&record.fate);
        ledger.add(record);
        totals.add(&this_round);

        // The relay is dead: the files are exactly what a crash left.
        let snap = snapshot(&lab.root, &ledger);
        let problems = verify(&snap, &ledger, false);
        if !problems.is_empty() {
            lab.fail(
                &format!("after the kill of round {round} ({delay} ms after ready)"),
                &problems,
            );
        }
        totals.overlaps += snap.overlaps();
        println!(
            "round {round:2}: recovered {} queued, removed {} tmp; killed {delay:3} ms after \
             ready ({}); sent {} acked, {} in flight, {} cut off, {} abandoned; on disk: {} in \
             spool, {} Maildir files, {} spool tmp, {} Maildir tmp",
            recovery.recovered,
            recovery.removed_tmp,
            if abandon_early {
                "abandoned DATA closed"
            } else {
                "abandoned DATA open"
            },
            this_round.acked,
            this_round.in_flight,
            this_round.cut_off,
            this_round.abandoned,
            snap.spool_count(),
            snap.maildir_count(),
            snap.spool_tmp,
            snap.maildir_tmp,
        );
    }

    // A last, clean run: it recovers and delivers what the last kill left, takes a few more
    // messages, and stops on SIGTERM.
    lab.check_budget();
    let run = ROUNDS + 1;
    let mut relay = lab.start(run);
    totals.recovered(&lab.recovery(&relay));
    let drained_in = lab.wait_drained("after the last restart");
    let stop = Arc::new(AtomicBool::new(false));
    let addr = relay.addr;
    let seed_final = rng.next();
    let last = lab.join(
        thread::spawn(move || client(addr, run, 0, seed_final, Some(FINAL_MESSAGES), &stop)),
        "final client",
    );
    let mut tally = Tally::default();
    for record in last {
        if !matches!(record.fate, Fate::Acked(_)) {
            lab.fail(
                "the clean run",
                &[format!(
                    "{} was not acknowledged: {:?}",
                    record.token, record.fate
                )],
            );
        }
        tally.count(&record.fate);
        ledger.add(record);
    }
    if tally.acked != FINAL_MESSAGES as usize {
        lab.fail(
            "the clean run",
            &[format!(
                "{} of {FINAL_MESSAGES} messages acknowledged",
                tally.acked
            )],
        );
    }
    totals.add(&tally);
    lab.wait_drained("after the clean run's messages");
    let status = lab.sigterm(&mut relay);
    if !status.success() {
        lab.fail(
            "SIGTERM",
            &[format!("the relay exited with {status} after SIGTERM")],
        );
    }
    drop(relay);

    // The relay has exited: the spool as its own code reads it, then the files.
    let spool_root = lab.root.join("spool");
    let (spool, report) = match FileSpool::open(&spool_root) {
        Ok(opened) => opened,
        Err(e) => lab.fail(
            "the final spool",
            &[format!("FileSpool::open after shutdown: {e}")],
        ),
    };
    let mut problems = Vec::new();
    if !report.quarantined.is_empty() || report.removed_tmp != 0 {
        problems.push(format!(
            "a cleanly stopped spool should need no recovery: {report:?}"
        ));
    }
    let ids = spool.list().unwrap_or_else(|e| {
        problems.push(format!("spool list: {e}"));
        Vec::new()
    });
    let mut spool_tokens = BTreeMap::new();
    for id in &ids {
        match (spool.load(id), spool.body(id)) {
            (Ok(message), Ok(body)) => match token_of(&body) {
                Ok(token) => {
                    check_copy(
                        &token,
                        &body,
                        &ledger,
                        &format!("spool {id}"),
                        &mut problems,
                    );
                    let rcpt = format!("{token}@{DOMAIN}");
                    if message.envelope.recipients != [rcpt.clone()] {
                        problems.push(format!(
                            "spool {id}: recipients {:?}, expected [{rcpt}]",
                            message.envelope.recipients
                        ));
                    }
                    spool_tokens.insert(token, id.to_string());
                }
                Err(e) => problems.push(format!("spool {id}: {e}")),
            },
            (Err(e), _) | (_, Err(e)) => problems.push(format!("spool {id}: {e}")),
        }
    }
    drop(spool);
    let snap = snapshot(&lab.root, &ledger);
    problems.extend(verify(&snap, &ledger, true));
    let raw: BTreeMap<String, String> = snap
        .spool
        .iter()
        .flat_map(|(token, ids)| ids.iter().map(move |id| (token.clone(), id.clone())))
        .collect();
    if raw != spool_tokens {
        problems.push(format!(
            "FileSpool and the queue/ files disagree: {spool_tokens:?} vs {raw:?}"
        ));
    }
    let warnings = lab.warnings();
    problems.extend(
        warnings
            .iter()
            .filter(|w| w.contains("quarantin"))
            .map(|w| format!("relay log: {w}")),
    );
    if !problems.is_empty() {
        lab.fail("the final check", &problems);
    }

    let stored_unknown = ledger
        .sent
        .iter()
        .filter(|(t, s)| matches!(s.fate, Fate::InFlight) && snap.copies(t) > 0)
        .count();
    let duplicated = snap
        .maildir
        .values()
        .filter(|files| files.len() > 1)
        .count();
    let extra: usize = snap
        .maildir
        .values()
        .map(|files| files.len().saturating_sub(1))
        .sum();
    for w in &warnings {
        println!("relay warning: {w}");
    }
    let elapsed = started.elapsed();
    println!(
        "relay_crash summary: seed {seed}, rounds {ROUNDS} (+1 clean), acked {}, \
         delivered-to-maildir {} ({} files), still-in-spool {}, duplicates {duplicated} \
         ({extra} extra copies; {} spool+Maildir overlaps seen at kills), in flight at a kill {} \
         (stored {stored_unknown}), cut off {}, abandoned {}, tmp removed by recovery {}, \
         quarantined {}, relay warnings {}, last restart drained the spool in {:.1}s, \
         elapsed {:.1}s",
        totals.tally.acked,
        snap.maildir.len(),
        snap.maildir_count(),
        snap.spool_count(),
        totals.overlaps,
        totals.tally.in_flight,
        totals.tally.cut_off,
        totals.tally.abandoned,
        totals.removed_tmp,
        totals.quarantined,
        warnings.len(),
        drained_in.as_secs_f64(),
        elapsed.as_secs_f64(),
    );
    assert!(totals.tally.acked > 0, "no message was acknowledged at all");
    assert!(
        elapsed < BUDGET,
        "took {elapsed:?}, more than {BUDGET:?} (seed {seed})"
    );
}

// ---------------------------------------------------------------------------------------------
// What the clients were told.

#[derive(Clone, Debug)]
enum Fate {
    /// `250` after the final dot, with the queue id it named.
    Acked(String),
    /// The final dot was written, no reply was read: stored or not, both are right.
    InFlight,
    /// The final dot never got through (the connection died first): must never appear.
    CutOff,
    /// The client stopped in the middle of DATA on purpose: must never appear.
    Abandoned,
    /// A reply other than the expected one: must never appear, and fails the test.
    Refused(String),
}

#[derive(Debug)]
struct Record {
    token: String,
    fillers: u64,
    fate: Fate,
}

#[derive(Debug)]
struct Sent {
    fillers: u64,
    fate: Fate,
}

#[derive(Default)]
struct Ledger {
    sent: BTreeMap<String, Sent>,
}

impl Ledger {
    fn add(&mut self, r: Record) {
        let old = self.sent.insert(
            r.token.clone(),
            Sent {
                fillers: r.fillers,
                fate: r.fate,
            },
        );
        assert!(old.is_none(), "token {} used twice", r.token);
    }
}

#[derive(Default)]
struct Tally {
    acked: usize,
    in_flight: usize,
    cut_off: usize,
    abandoned: usize,
    refused: usize,
}

impl Tally {
    fn count(&mut self, fate: &Fate) {
        match fate {
            Fate::Acked(_) => self.acked += 1,
            Fate::InFlight => self.in_flight += 1,
            Fate::CutOff => self.cut_off += 1,
            Fate::Abandoned => self.abandoned += 1,
            Fate::Refused(_) => self.refused += 1,
        }
    }
}

#[derive(Default)]
struct Totals {
    tally: Tally,
    removed_tmp: u64,
    quarantined: u64,
    overlaps: usize,
}

impl Totals {
    fn add(&mut self, t: &Tally) {
        self.tally.acked += t.acked;
        self.tally.in_flight += t.in_flight;
        self.tally.cut_off += t.cut_off;
        self.tally.abandoned += t.abandoned;
        self.tally.refused += t.refused;
    }

    fn recovered(&mut self, r: &Recovery) {
        self.removed_tmp += r.removed_tmp;
        self.quarantined += r.quarantined;
    }
}

/// The message a token stands for, exactly as the relay must store it (after the trace
/// headers it adds in front).
fn message(token: &str, fillers: u64) -> Vec<u8> {
    let mut m = format!(
        "From: <load@client.test>\r\nTo: <{token}@{DOMAIN}>\r\nSubject: crash test {token}\r\n\
         Message-ID: <{token}@client.test>\r\nX-Token: {token}\r\n\r\n"
    );
    for i in 0..fillers {
        m.push_str(&format!(
            "filler {i:04} of {token}: the quick brown fox jumps over the lazy dog\r\n"
        ));
    }
    m.push_str(&format!("End-Token: {token}\r\n"));
    m.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// A tiny SMTP client: one command at a time, every read and write bounded.

struct Smtp {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Smtp {
    fn connect(addr: SocketAddr) -> std::io::Result<Smtp> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Smtp { stream, reader })
    }

    /// One whole reply: (code, every line joined).
    fn reply(&mut self) -> std::io::Result<(u16, String)> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let bad = || std::io::Error::other(format!("not an SMTP reply line: {line:?}"));
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(bad)?;
            text.push_str(line.trim_end());
            match line.as_bytes().get(3) {
                Some(b'-') => text.push(' '),
                _ => return Ok((code, text)),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Send a command and read its reply.
    fn command(&mut self, line: &str) -> std::io::Result<(u16, String)> {
        self.send(format!("{line}\r\n").as_bytes())?;
        self.reply()
    }
}

/// Why a transaction step ended.
enum Step {
    /// The connection failed (the relay died): stop this client.
    Died,
    /// An unexpected reply.
    Refused(String),
}

fn expect(reply: std::io::Result<(u16, String)>, code: u16) -> Result<String, Step> {
    match reply {
        Ok((c, text)) if c == code => Ok(text),
        Ok((_, text)) => Err(Step::Refused(text)),
        Err(_) => Err(Step::Died),
    }
}

/// Greeting and EHLO.
fn open_session(addr: SocketAddr) -> Result<Smtp, Step> {
    let mut smtp = Smtp::connect(addr).map_err(|_| Step::Died)?;
    expect(smtp.reply(), 220)?;
    expect(smtp.command("EHLO client.test"), 250)?;
    Ok(smtp)
}

/// MAIL, RCPT, DATA: ready for the message.
fn begin(smtp: &mut Smtp, token: &str) -> Result<(), Step> {
    expect(smtp.command("MAIL FROM:<load@client.test>"), 250)?;
    expect(smtp.command(&format!("RCPT TO:<{token}@{DOMAIN}>")), 250)?;
    expect(smtp.command("DATA"), 354)?;
    Ok(())
}

/// Stream messages over one connection until the relay dies, `stop` is set, or `limit`
/// messages were sent; record what became of each.
fn client(
    addr: SocketAddr,
    round: u32,
    client: u32,
    seed: u64,
    limit: Option<u32>,
    stop: &AtomicBool,
) -> Vec<Record> {
    let mut rng = Rng(seed);
    let mut records = Vec::new();
    let mut smtp = match open_session(addr) {
        Ok(s) => s,
        Err(Step::Died) => return records,
        Err(Step::Refused(text)) => {
            records.push(Record {
                token: format!("r{round}c{client}greeting"),
                fillers: 0,
                fate: Fate::Refused(text),
            });
            return records;
        }
    };
    for n in 0.. {
        if stop.load(Ordering::SeqCst) || limit.is_some_and(|l| n >= l) {
            let _ = smtp.command("QUIT");
            break;
        }
        let token = format!("r{round}c{client}n{n}");
        let fillers = rng.below(MAX_FILLERS);
        let mut record = Record {
            token,
            fillers,
            fate: Fate::CutOff,
        };
        let outcome = (|| {
            begin(&mut smtp, &record.token)?;
            let mut data = message(&record.token, fillers);
            data.extend_from_slice(b".\r\n");
            // Until this write returned, the relay cannot have seen the final dot.
            smtp.send(&data).map_err(|_| Step::Died)?;
            record.fate = Fate::InFlight;
            let text = expect(smtp.reply(), 250)?;
            let id = text.rsplit(' ').next().unwrap_or_default().to_string();
            record.fate = Fate::Acked(id);
            Ok(())
        })();
        let done = match outcome {
            Ok(()) => false,
            Err(Step::Died) => true,
            Err(Step::Refused(text)) => {
                record.fate = Fate::Refused(text);
                true
            }
        };
        records.push(record);
        if done {
            break;
        }
    }
    records
}

/// Start a message and never finish it: close the connection in the middle of DATA right
/// away (`early`), or leave it open until the kill. Either way it must never be stored.
fn abandon_data(
    addr: SocketAddr,
    round: u32,
    fillers: u64,
    early: bool,
    stop: &AtomicBool,
) -> Record {
    let token = format!("r{round}a0");
    let fate = Fate::Abandoned;
    let Ok(mut smtp) = open_session(addr) else {
        return Record {
            token,
            fillers,
            fate,
        };
    };
    if begin(&mut smtp, &token).is_ok() && smtp.send(&message(&token, fillers)).is_ok() {
        if early {
            let _ = smtp.stream.shutdown(Shutdown::Both);
        } else {
            let deadline = Instant::now() + BUDGET;
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
    Record {
        token,
        fillers,
        fate,
    }
}

// ---------------------------------------------------------------------------------------------
// What is on disk.

#[derive(Default)]
struct Snapshot {
    /// Token to the queue ids of its `queue/<id>.msg` files.
    spool: BTreeMap<String, Vec<String>>,
    /// Token to its files in `maildir/<domain>/<mailbox>/{new,cur}/`.
    maildir: BTreeMap<String, Vec<PathBuf>>,
    spool_tmp: usize,
    maildir_tmp: usize,
    /// Files in the spool's `quarantine/`.
    quarantine: Vec<String>,
    problems: Vec<String>,
}

impl Snapshot {
    fn copies(&self, token: &str) -> usize {
        self.spool.get(token).map_or(0, Vec::len) + self.maildir.get(token).map_or(0, Vec::len)
    }

    fn spool_count(&self) -> usize {
        self.spool.values().map(Vec::len).sum()
    }

    fn maildir_count(&self) -> usize {
        self.maildir.values().map(Vec::len).sum()
    }

    /// Messages both still queued and already in Maildir (a kill between the two steps).
    fn overlaps(&self) -> usize {
        self.spool
            .keys()
            .filter(|t| self.maildir.contains_key(*t))
            .count()
    }
}

/// Read the spool's and Maildir's files directly (the relay must not be running).
fn snapshot(root: &Path, ledger: &Ledger) -> Snapshot {
    let mut snap = Snapshot::default();
    let spool = root.join("spool");
    snap.spool_tmp = list(&spool.join("tmp"), &mut snap.problems).len();
    snap.quarantine = list(&spool.join("quarantine"), &mut snap.problems)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    for path in list(&spool.join("queue"), &mut snap.problems) {
        let name = file_name(&path);
        if let Some(id) = name.strip_suffix(".msg") {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    snap.problems.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            match spool_body(&bytes, id) {
                Ok(body) => match token_of(body) {
                    Ok(token) => {
                        check_copy(
                            &token,
                            body,
                            ledger,
                            &format!("spool {name}"),
                            &mut snap.problems,
                        );
                        snap.spool.entry(token).or_default().push(id.to_string());
                    }
                    Err(e) => snap.problems.push(format!("spool {name}: {e}")),
                },
                Err(e) => snap.problems.push(format!("spool {name}: {e}")),
            }
        } else if !name.ends_with(".state") {
            snap.problems
                .push(format!("unexpected file in the queue: {}", path.display()));
        }
    }
    for domain in list(&root.join("maildir"), &mut snap.problems) {
        if file_name(&domain) != DOMAIN {
            snap.problems.push(format!(
                "unexpected folder in Maildir: {}",
                domain.display()
            ));
            continue;
        }
        for mailbox in list(&domain, &mut snap.problems) {
            let mailbox_name = file_name(&mailbox);
            for sub in list(&mailbox, &mut snap.problems) {
                let files = list(&sub, &mut snap.problems);
                match file_name(&sub).as_str() {
                    // Half-written copies a kill may leave; never messages.
                    "tmp" => snap.maildir_tmp += files.len(),
                    "new" | "cur" => {
                        for file in files {
                            let shown = file.display().to_string();
                            let bytes = match fs::read(&file) {
                                Ok(b) => b,
                                Err(e) => {
                                    snap.problems.push(format!("{shown}: {e}"));
                                    continue;
                                }
                            };
                            match token_of(&bytes) {
                                Ok(token) => {
                                    if token != mailbox_name {
                                        snap.problems.push(format!(
                                            "{shown}: holds {token}, in the mailbox {mailbox_name}"
                                        ));
                                    }
                                    check_copy(&token, &bytes, ledger, &shown, &mut snap.problems);
                                    snap.maildir.entry(token).or_default().push(file);
                                }
                                Err(e) => snap.problems.push(format!("{shown}: {e}")),
                            }
                        }
                    }
                    _ => snap
                        .problems
                        .push(format!("unexpected folder in Maildir: {}", sub.display())),
                }
            }
        }
    }
    snap
}

/// Every acknowledged message is somewhere; nothing else but in-flight ones is.
fn verify(snap: &Snapshot, ledger: &Ledger, final_check: bool) -> Vec<String> {
    let mut problems = snap.problems.clone();
    if !snap.quarantine.is_empty() {
        problems.push(format!("quarantined: {:?}", snap.quarantine));
    }
    for (token, sent) in &ledger.sent {
        let copies = snap.copies(token);
        match &sent.fate {
            Fate::Acked(id) => {
                if copies == 0 {
                    problems.push(format!(
                        "LOST: {token} was acknowledged (queued as {id}) and is in neither the \
                         spool nor Maildir"
                    ));
                } else if !snap.maildir.contains_key(token)
                    && !snap.spool.get(token).is_some_and(|ids| ids.contains(id))
                {
                    problems.push(format!(
                        "{token} was queued as {id}, but the spool holds it as {:?}",
                        snap.spool.get(token)
                    ));
                }
            }
            Fate::InFlight => {}
            Fate::CutOff | Fate::Abandoned if copies > 0 => problems.push(format!(
                "{token} never got its final dot through ({:?}) but is stored {copies} time(s)",
                sent.fate
            )),
            Fate::CutOff | Fate::Abandoned => {}
            Fate::Refused(reply) => problems.push(format!(
                "{token}: unexpected reply {reply:?} (stored {copies} time(s))"
            )),
        }
    }
    if final_check && snap.spool_tmp > 0 {
        problems.push(format!(
            "{} file(s) left in spool/tmp after a clean shutdown",
            snap.spool_tmp
        ));
    }
    problems
}

/// A copy of `token` must be of a message sent, and end with exactly the bytes sent.
fn check_copy(token: &str, bytes: &[u8], ledger: &Ledger, place: &str, problems: &mut Vec<String>) {
    match ledger.sent.get(token) {
        None => problems.push(format!("{place}: {token} was never sent")),
        Some(sent) => {
            if !bytes.ends_with(&message(token, sent.fillers)) {
                let tail = String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(80)..]);
                problems.push(format!(
                    "{place}: TRUNCATED or altered copy of {token} ({} bytes, ends {tail:?})",
                    bytes.len()
                ));
            }
        }
    }
}

/// The one `X-Token` header of a message.
fn token_of(bytes: &[u8]) -> Result<String, String> {
    const NEEDLE: &[u8] = b"\r\nX-Token: ";
    let starts: Vec<usize> = bytes
        .windows(NEEDLE.len())
        .enumerate()
        .filter(|(_, w)| *w == NEEDLE)
        .map(|(i, _)| i + NEEDLE.len())
        .collect();
    let [start] = starts[..] else {
        return Err(format!("{} X-Token headers, expected 1", starts.len()));
    };
    let rest = &bytes[start..];
    let end = rest
        .iter()
        .position(|&b| b == b'\r')
        .ok_or("X-Token header not ended")?;
    let token = String::from_utf8_lossy(&rest[..end]).into_owned();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("bad token {token:?}"));
    }
    Ok(token)
}

/// The body of a `queue/<id>.msg` file, checked the way docs/spool.md describes the format.
fn spool_body<'a>(bytes: &'a [u8], id: &str) -> Result<&'a [u8], String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|e| e.to_string())?;
    // Version 2: "MXSPOOL2 <json length> <crc32 hex>" (the checksum is mx-spool's to check).
    let len: usize = header
        .strip_prefix("MXSPOOL2 ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("bad header line {header:?}"))?;
    let json_end = nl + 1 + len;
    let json = bytes.get(nl + 1..json_end).ok_or("cut in the envelope")?;
    if bytes.get(json_end) != Some(&b'\n') {
        return Err("no newline after the envelope".into());
    }
    let envelope: Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    if envelope["id"] != id {
        return Err(format!(
            "envelope id {} in the file of {id}",
            envelope["id"]
        ));
    }
    let body = &bytes[json_end + 1..];
    if envelope["size"].as_u64() != Some(body.len() as u64) {
        return Err(format!(
            "TRUNCATED: size {} but {} body bytes",
            envelope["size"],
            body.len()
        ));
    }
    Ok(body)
}

/// A folder's entries, sorted; a missing folder is empty.
fn list(dir: &Path, problems: &mut Vec<String>) -> Vec<PathBuf> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            paths
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            problems.push(format!("{}: {e}", dir.display()));
            Vec::new()
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The relay processes.

/// One `mxroute relay` child; killed (and reaped) when dropped, so a failing test leaves no
/// process behind.
struct Relay {
    child: Child,
    addr: SocketAddr,
    run: u32,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the relay's recovery said at a start (its `spool opened` log line).
#[derive(Debug, Default)]
struct Recovery {
    recovered: u64,
    removed_tmp: u64,
    quarantined: u64,
}

/// The test's directory, configuration and failure reporting.
struct Lab {
    root: PathBuf,
    config: PathBuf,
    seed: u64,
    started: Instant,
    /// Removed at the end unless the test fails.
    dir: std::cell::RefCell<Option<tempfile::TempDir>>,
}

impl Lab {
    fn new(seed: u64, started: Instant) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("relay-crash-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        let quote = |p: PathBuf| serde_json::to_string(p.to_str().expect("UTF-8 path")).unwrap();
        let config = root.join("relay.toml");
        let text = format!(
            "[server]\n\
             listen = [\"127.0.0.1:0\"]\n\
             hostname = \"mx.crash.test\"\n\
             local_domains = [\"{DOMAIN}\"]\n\
             catch_all_domains = [\"{DOMAIN}\"]\n\
             greet_pause_ms = 0\n\
             starttls = false\n\
             command_timeout_secs = 30\n\
             data_timeout_secs = 30\n\
             maildir_root = {}\n\
             [spool]\n\
             path = {}\n\
             min_free_bytes = 0\n",
            quote(root.join("maildir")),
            quote(root.join("spool")),
        );
        fs::write(&config, text).expect("write the config");
        fs::create_dir(root.join("logs")).expect("logs folder");
        Lab {
            root,
            config,
            seed,
            started,
            dir: std::cell::RefCell::new(Some(dir)),
        }
    }

    fn log_path(&self, run: u32) -> PathBuf {
        self.root.join("logs").join(format!("relay-{run:02}.log"))
    }

    fn check_budget(&self) {
        let elapsed = self.started.elapsed();
        if elapsed > BUDGET {
            self.fail(
                "the time budget",
                &[format!("{elapsed:?} spent, the budget is {BUDGET:?}")],
            );
        }
    }

    /// Spawn the relay and wait (bounded) for its `accepting SMTP on` line.
    fn start(&self, run: u32) -> Relay {
        let stderr = File::create(self.log_path(run)).expect("relay log file");
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "relay", "--config"])
            .arg(&self.config)
            .env("MXROUTE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn mxroute relay");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut relay = Relay {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            run,
        };
        match line_after(stdout, "relay: accepting SMTP on ", READY_WAIT) {
            Ok(addr) => {
                relay.addr = addr.trim().parse().expect("listen address");
                relay
            }
            Err(NoLine::Timeout) => self.fail(
                &format!("start {run}"),
                &[format!("the relay was not ready within {READY_WAIT:?}")],
            ),
            Err(NoLine::Exited) => {
                let status = relay.child.wait().map(|s| s.to_string());
                self.fail(
                    &format!("start {run}"),
                    &[format!(
                        "the relay exited before accepting ({status:?}): a crash on restart"
                    )],
                )
            }
        }
    }

    /// The recovery the relay reported when it opened the spool; fails on any quarantine.
    fn recovery(&self, relay: &Relay) -> Recovery {
        let text = fs::read_to_string(self.log_path(relay.run)).unwrap_or_default();
        let line = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| {
                let fields = &v["fields"];
                fields["message"] == "spool opened" || v["message"] == "spool opened"
            });
        let Some(v) = line else {
            self.fail(
                &format!("start {}", relay.run),
                &["no `spool opened` line in the relay's log".to_string()],
            );
        };
        let fields = if v["fields"].is_object() {
            &v["fields"]
        } else {
            &v
        };
        let n = |key: &str| fields[key].as_u64().unwrap_or(u64::MAX);
        let r = Recovery {
            recovered: n("recovered"),
            removed_tmp: n("removed_tmp"),
            quarantined: n("quarantined"),
        };
        if r.quarantined != 0 || r.recovered == u64::MAX || r.removed_tmp == u64::MAX {
            self.fail(
                &format!("start {}", relay.run),
                &[format!(
                    "recovery quarantined files or said something unexpected: {v}"
                )],
            );
        }
        r
    }

    fn sigkill(&self, relay: &mut Relay) {
        // Child::kill is SIGKILL on Unix.
        if let Err(e) = relay.child.kill() {
            self.fail("the kill", &[format!("SIGKILL: {e}")]);
        }
        self.reap(relay, "SIGKILL");
    }

    fn sigterm(&self, relay: &mut Relay) -> ExitStatus {
        let pid = relay.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map(|s| s.success());
        if sent.as_ref().ok() != Some(&true) {
            self.fail("SIGTERM", &[format!("kill -TERM {pid}: {sent:?}")]);
        }
        self.reap(relay, "SIGTERM")
    }

    fn reap(&self, relay: &mut Relay, what: &str) -> ExitStatus {
        let deadline = Instant::now() + EXIT_WAIT;
        loop {
            match relay.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => self.fail(
                    what,
                    &[format!("the relay did not exit within {EXIT_WAIT:?}")],
                ),
                Err(e) => self.fail(what, &[format!("wait: {e}")]),
            }
        }
    }

    /// Wait (bounded) until the running relay has moved every queued message into Maildir.
    fn wait_drained(&self, when: &str) -> Duration {
        let queue = self.root.join("spool").join("queue");
        let begun = Instant::now();
        let deadline = begun + DRAIN_WAIT;
        loop {
            let mut problems = Vec::new();
            let left = list(&queue, &mut problems)
                .iter()
                .filter(|p| file_name(p).ends_with(".msg"))
                .count();
            if left == 0 && problems.is_empty() {
                return begun.elapsed();
            }
            if Instant::now() > deadline {
                problems.push(format!(
                    "{left} message(s) still queued {DRAIN_WAIT:?} {when}"
                ));
                self.fail(when, &problems);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Join a client thread, bounded: it ends at its connection's death, within IO_TIMEOUT.
    fn join<T>(&self, handle: JoinHandle<T>, what: &str) -> T {
        let deadline = Instant::now() + IO_TIMEOUT * 3;
        while !handle.is_finished() {
            if Instant::now() > deadline {
                self.fail(what, &[format!("{what} still running after the kill")]);
            }
            thread::sleep(Duration::from_millis(2));
        }
        match handle.join() {
            Ok(v) => v,
            Err(_) => self.fail(what, &[format!("{what} panicked")]),
        }
    }

    /// Every WARN or ERROR line the relays logged, with the run that logged it.
    fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for run in 1..=ROUNDS + 1 {
            let text = fs::read_to_string(self.log_path(run)).unwrap_or_default();
            for line in text.lines() {
                let level = serde_json::from_str::<Value>(line)
                    .ok()
                    .and_then(|v| v["level"].as_str().map(str::to_string));
                if matches!(level.as_deref(), Some("WARN" | "ERROR")) || level.is_none() {
                    out.push(format!("run {run}: {line}"));
                }
            }
        }
        out
    }

    /// Print what helps to understand a failure (the relays' logs), keep the directory, and
    /// panic.
    fn fail(&self, when: &str, problems: &[String]) -> ! {
        eprintln!("relay_crash FAILED at {when} (seed {})", self.seed);
        for run in 1..=ROUNDS + 1 {
            let path = self.log_path(run);
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            let interesting: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.contains("spool opened")
                        || l.contains("\"WARN\"")
                        || l.contains("\"ERROR\"")
                        || !l.starts_with('{')
                })
                .collect();
            eprintln!(
                "--- relay run {run} stderr ({} lines; recovery, warnings and errors):",
                text.lines().count()
            );
            for l in interesting {
                eprintln!("    {l}");
            }
        }
        if let Some(dir) = self.dir.borrow_mut().take() {
            eprintln!("relay_crash: files kept in {}", dir.keep().display());
        }
        let shown: Vec<&String> = problems.iter().take(30).collect();
        panic!(
            "relay_crash failed at {when} (seed {}, RELAY_CRASH_SEED={} repeats it): \
             {} problem(s):\n{}",
            self.seed,
            self.seed,
            problems.len(),
            shown
                .iter()
                .map(|p| format!("  - {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Randomness: seeded, printed, repeatable.

fn seed() -> u64 {
    match std::env::var("RELAY_CRASH_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("RELAY_CRASH_SEED={s:?} is not a number")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed),
    }
}

/// splitmix64: small, good enough for schedules, and no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
