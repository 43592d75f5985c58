//! The delivery engine: takes due messages from the spool, delivers local copies into
//! Maildir and remote ones over MX routes, and records every recipient's fate. It is the only
//! writer of a message's delivery state, so no two updates can race.

mod pool;
pub mod schedule;
pub mod smtp;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mx_core::{Attempt, Status};
use mx_dns::{BoxFuture, Router};
use mx_spool::{Committer, Envelope, FileSpool, QueueId, QueuedMessage, Spool, SpoolError};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::policy::{Destination, RelayPolicy};
use crate::users::Users;
use crate::{maildir, metrics, trace};
use schedule::{Failed, RecipientResult, Schedule};

/// One message on its way to one domain's exchangers.
pub struct Delivery<'a> {
    pub mail_from: &'a str,
    pub recipients: &'a [String],
    pub body: &'a [u8],
    pub body_8bit: bool,
    pub smtputf8: bool,
}

/// What one attempt (one address of the route) came to.
#[derive(Debug)]
pub enum AttemptOutcome {
    /// Nothing was decided over this address (refused, timeout, 421, 4xx to the greeting,
    /// EHLO or MAIL, TLS failure where TLS is required): the next attempt is tried.
    NextAttempt { reason: String },
    /// The transaction ran: one result per recipient, in order.
    Done(Vec<RecipientResult>),
}

/// How an attempt reaches an exchanger. The SMTP client is the real one; the trait keeps the
/// engine's walk over the route apart from the wire.
pub trait Transport: Send + Sync {
    fn attempt<'a>(
        &'a self,
        attempt: &'a Attempt,
        delivery: &'a Delivery<'a>,
    ) -> BoxFuture<'a, AttemptOutcome>;

    /// When this address last refused a connection or let one time out, if that is recent
    /// enough to skip it (`delivery.unreachable_memory_secs`); None: try it.
    fn unreachable_since(&self, _attempt: &Attempt) -> Option<Instant> {
        None
    }

    /// Close idle connections past their idle time (called now and then by the engine).
    fn sweep(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Close every idle connection: delivery is stopping.
    fn close_idle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

pub struct Engine {
    pub spool: Arc<FileSpool>,
    /// Removals of delivered messages share the spool's group commits.
    pub committer: Arc<Committer>,
    pub router: Arc<Router>,
    pub transport: Arc<dyn Transport>,
    pub schedule: Schedule,
    pub policy: Arc<RelayPolicy>,
    pub users: Arc<Users>,
    pub maildir_root: std::path::PathBuf,
    pub hostname: String,
    /// Messages delivered concurrently.
    pub concurrency: usize,
    pub in_flight: Mutex<HashSet<QueueId>>,
    /// New messages (bounces) go back into the engine through this.
    pub wake: mpsc::UnboundedSender<QueueId>,
    /// Accepted messages' envelopes and bodies, so that their first run reads no file.
    pub fresh: FreshMessages,
}

/// Messages just accepted, handed from the SMTP server to the engine in memory: their first
/// run needs no read of the spool (a new message has no state file yet, so its state is the
/// initial one). Taken out by the message's first run, whichever way it was started. Bounded
/// in bytes: when deliveries lag behind (exchangers down), the rest is read from the spool.
pub type FreshMessages = Arc<Fresh>;

/// The store behind [`FreshMessages`].
#[derive(Default)]
pub struct Fresh {
    inner: Mutex<FreshInner>,
}

#[derive(Default)]
struct FreshInner {
    messages: std::collections::HashMap<QueueId, (Envelope, Arc<Vec<u8>>)>,
    bytes: usize,
}

/// The most message bytes held for the engine at once.
const FRESH_MAX_BYTES: usize = 64 << 20;

impl Fresh {
    /// Hand a message over, unless that would hold too much memory.
    pub fn insert(&self, envelope: Envelope, body: Arc<Vec<u8>>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.bytes + body.len() <= FRESH_MAX_BYTES {
            inner.bytes += body.len();
            inner.messages.insert(envelope.id.clone(), (envelope, body));
        }
    }

    /// Takes back a message handed over whose store failed (never acknowledged).
    pub fn withdraw(&self, id: &QueueId) {
        drop(self.take(id));
    }

    fn take(&self, id: &QueueId) -> Option<(Envelope, Arc<Vec<u8>>)> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let taken = inner.messages.remove(id)?;
        inner.bytes -= taken.1.len();
        Some(taken)
    }
}

/// How often the spool is scanned for messages whose retry time has come.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);

impl Engine {
    /// Deliver what is due, as it becomes due, until `stop`.
    pub async fn run(
        self: Arc<Self>,
        mut wake: mpsc::UnboundedReceiver<QueueId>,
        mut stop: watch::Receiver<bool>,
    ) {
        let permits = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut scan = tokio::time::interval(SCAN_INTERVAL);
        let mut tasks = tokio::task::JoinSet::new();
        // At start every message is tried once, due or not: a restart usually follows a fix
        // (disk space, a route), and one early attempt costs little.
        let mut startup = {
            let spool = self.spool.clone();
            tokio::task::spawn_blocking(move || spool.list().unwrap_or_default())
                .await
                .unwrap_or_default()
        };
        loop {
            let force = !startup.is_empty();
            let ids: Vec<QueueId> = if force {
                std::mem::take(&mut startup)
            } else {
                tokio::select! {
                _ = stop.changed() => break,
                Some(id) = wake.recv() => {
                    let mut ids = vec![id];
                    while let Ok(more) = wake.try_recv() {
                        ids.push(more);
                    }
                    ids
                }
                    _ = scan.tick() => {
                        // Idle connections past their time are closed off the loop (their
                        // QUITs take round trips), in the set joined before run ends.
                        let transport = self.transport.clone();
                        tasks.spawn(async move { transport.sweep().await });
                        let mut ids = self.control().await;
                        ids.extend(self.due().await);
                        ids
                    }
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                }
            };
            for id in ids {
                if !self.claim(&id) {
                    // A run is on it already, and has taken its copy in memory if it was
                    // there when it started; one handed over since would never be taken.
                    drop(self.fresh.take(&id));
                    continue;
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let engine = self.clone();
                tasks.spawn(async move {
                    if let Err(e) = engine.deliver_message(&id, force).await {
                        tracing::warn!(queue_id = %id, error = %e, "delivery run failed");
                    }
                    engine.release(&id);
                    drop(permit);
                });
            }
        }
        // Runs in progress finish: each ends with a durable state update.
        while tasks.join_next().await.is_some() {}
        // Then no attempt can park a session any more: QUIT every idle one.
        self.transport.close_idle().await;
    }

    fn claim(&self, id: &QueueId) -> bool {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone())
    }

    fn release(&self, id: &QueueId) {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Apply queue-control requests (`mxroute queue retry|delete` while we run): each is a
    /// file `spool/control/<retry|delete>.<id|all>.<nonce>`, removed once applied, which is
    /// how the command learns it was done. Returns messages to try now.
    async fn control(&self) -> Vec<QueueId> {
        let spool = self.spool.clone();
        let busy: HashSet<QueueId> = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tokio::task::spawn_blocking(move || apply_control(&spool, &busy))
            .await
            .unwrap_or_default()
    }

    /// Messages whose next attempt time has come, not already being delivered.
    async fn due(&self) -> Vec<QueueId> {
        let spool = self.spool.clone();
        let now = unix_now();
        let busy: HashSet<QueueId> = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tokio::task::spawn_blocking(move || {
            let ids = spool.list().unwrap_or_default();
            ids.into_iter()
                .filter(|id| !busy.contains(id))
                .filter(|id| {
                    spool
                        .load(id)
                        .map(|m| m.state.next_attempt_at <= now && !m.state.is_complete())
                        .unwrap_or(false)
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    /// One delivery run for one message: local copies first (fast, and independent of the
    /// network), then each remote domain over its route.
    pub async fn deliver_message(&self, id: &QueueId, force: bool) -> Result<(), SpoolError> {
        // The server hands a message over before the committer renames it into queue/, so
        // before any scan or wake-up can start a run on it: the run that finds the copy is
        // the message's first, and no state file exists (nothing to check on disk).
        let fresh = self.fresh.take(id);
        let untried = fresh.is_some();
        let (message, body) = match fresh {
            Some((envelope, body)) => (
                QueuedMessage {
                    state: mx_spool::DeliveryState::initial(&envelope),
                    envelope,
                },
                body,
            ),
            None => {
                let spool = self.spool.clone();
                let id = id.clone();
                tokio::task::spawn_blocking(
                    move || -> Result<(QueuedMessage, Arc<Vec<u8>>), SpoolError> {
                        Ok((spool.load(&id)?, Arc::new(spool.body(&id)?)))
                    },
                )
                .await
                .map_err(|e| SpoolError::Io {
                    path: Default::default(),
                    source: std::io::Error::other(e),
                })??
            }
        };
        let now = unix_now();
        if (message.state.next_attempt_at > now && !force) || message.state.is_complete() {
            return Ok(());
        }
        let started = Instant::now();
        let envelope = &message.envelope;
        let mut results: Vec<(String, RecipientResult)> = Vec::new();
        let mut remote: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rcpt in message
            .state
            .recipients
            .iter()
            .filter(|r| !r.status.is_final())
        {
            let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
            match self
                .policy
                .recipient(&rcpt.address, loopback, true, &self.users)
            {
                Ok(Destination::Local { domain, mailbox }) => {
                    let result = self.local_copy(envelope, &body, &domain, &mailbox).await;
                    log_result(id, &rcpt.address, "local", started, &result);
                    results.push((rcpt.address.clone(), result));
                }
                Ok(Destination::Remote { domain }) => {
                    remote.entry(domain).or_default().push(rcpt.address.clone());
                }
                Err(refusal) => {
                    // A local user removed after the message was accepted.
                    let result = RecipientResult::Permanent {
                        reply: format!("{} {} {}", refusal.code, refusal.enhanced, refusal.text),
                    };
                    log_result(id, &rcpt.address, "local", started, &result);
                    results.push((rcpt.address.clone(), result));
                }
            }
        }
        for (domain, recipients) in &remote {
            let delivery = Delivery {
                mail_from: &envelope.mail_from,
                recipients,
                body: &body,
                body_8bit: envelope.body_8bit,
                smtputf8: envelope.smtputf8,
            };
            let outcome = self.deliver_domain(id, domain, &delivery, started).await;
            results.extend(recipients.iter().cloned().zip(outcome));
        }
        let mut state = message.state.clone();
        let failed = schedule::apply(
            &mut state,
            &results,
            envelope.received_at,
            now,
            &self.schedule,
        );
        if !failed.is_empty() {
            self.bounce(&message, &body, &failed, now).await;
        }
        if !state.is_complete()
            && schedule::delay_notice_due(&state, envelope, now, &self.schedule)
            && self.delay_notice(&message, &state, &body, now).await
        {
            // Recorded in the same state update as the run, so it is sent once only.
            state.delay_notice_sent = true;
        }
        if state.is_complete() {
            let (done, removed) = tokio::sync::oneshot::channel();
            let done: mx_spool::Done<()> = Box::new(move |result| {
                let _ = done.send(result);
            });
            if untried {
                self.committer.remove_untried(id.clone(), done);
            } else {
                self.committer.remove(id.clone(), done);
            }
            return removed.await.map_err(|e| SpoolError::Io {
                path: Default::default(),
                source: std::io::Error::other(e),
            })?;
        }
        let spool = self.spool.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || spool.update_state(&id, &state))
            .await
            .map_err(|e| SpoolError::Io {
                path: Default::default(),
                source: std::io::Error::other(e),
            })?
    }

    /// Walk one domain's route: the result for each recipient, in order.
    async fn deliver_domain(
        &self,
        id: &QueueId,
        domain: &str,
        delivery: &Delivery<'_>,
        started: Instant,
    ) -> Vec<RecipientResult> {
        let all = |result: RecipientResult| vec![result; delivery.recipients.len()];
        let route = match self.router.route(domain).await {
            Ok(route) => route,
            Err(e) => {
                return all(RecipientResult::Permanent {
                    reply: format!("501 5.1.3 Bad recipient domain: {e}"),
                });
            }
        };
        if route.status != Status::Ok {
            let reply = route
                .reply
                .as_ref()
                .map(|r| format!("{} {} {}", r.code, r.enhanced, r.text))
                .unwrap_or_default();
            let result = if route.status == Status::Tempfail {
                RecipientResult::Temporary { reply }
            } else {
                RecipientResult::Permanent { reply }
            };
            for rcpt in delivery.recipients {
                log_result(id, rcpt, "none", started, &result);
            }
            return all(result);
        }
        let mut last = String::from("451 4.4.0 No exchanger could be reached");
        // Addresses that refused a connection (or let it time out) a moment ago are passed
        // over: the next message goes straight to the backup. Should that leave nothing to
        // try, the one remembered longest ago is tried anyway, so that the memory alone
        // never keeps a message from every exchanger (and so never bounces it).
        let remembered: Vec<Option<Instant>> = route
            .attempts
            .iter()
            .map(|a| self.transport.unreachable_since(a))
            .collect();
        let fallback = if remembered.iter().all(Option::is_some) {
            remembered
                .iter()
                .enumerate()
                .min_by_key(|(_, since)| **since)
                .map(|(i, _)| i)
        } else {
            None
        };
        for (i, attempt) in route.attempts.iter().enumerate() {
            let relay = format!("{}[{}]:{}", attempt.host, attempt.ip, attempt.port);
            if let Some(since) = remembered[i]
                && fallback != Some(i)
            {
                metrics::delivery_attempt(&attempt.host, "recently_unreachable");
                let reason = format!(
                    "451 4.4.1 {}:{} recently unreachable ({}s ago), not tried",
                    attempt.ip,
                    attempt.port,
                    since.elapsed().as_secs()
                );
                tracing::debug!(queue_id = %id, relay = %relay, reason = %reason, "attempt skipped, trying the next exchanger");
                last = reason;
                continue;
            }
            match self.transport.attempt(attempt, delivery).await {
                AttemptOutcome::Done(results) => {
                    metrics::delivery_attempt(&attempt.host, "done");
                    for (rcpt, result) in delivery.recipients.iter().zip(&results) {
                        log_result(id, rcpt, &relay, started, result);
                    }
                    return results;
                }
                AttemptOutcome::NextAttempt { reason } => {
                    metrics::delivery_attempt(&attempt.host, "next");
                    tracing::info!(queue_id = %id, relay = %relay, reason = %reason, "attempt failed, trying the next exchanger");
                    last = reason;
                }
            }
        }
        let result = RecipientResult::Temporary {
            reply: format!("{last} (all {} attempt(s) failed)", route.attempts.len()),
        };
        for rcpt in delivery.recipients {
            log_result(id, rcpt, "none", started, &result);
        }
        all(result)
    }

    async fn local_copy(
        &self,
        envelope: &Envelope,
        body: &[u8],
        domain: &str,
        mailbox: &str,
    ) -> RecipientResult {
        let root = self.maildir_root.clone();
        let hostname = self.hostname.clone();
        let prefix = trace::return_path(&envelope.mail_from);
        let (domain, mailbox) = (domain.to_string(), mailbox.to_string());
        let body = body.to_vec();
        let written = tokio::task::spawn_blocking(move || {
            maildir::deliver(
                &root,
                &domain,
                &mailbox,
                &hostname,
                prefix.as_bytes(),
                &body,
            )
        })
        .await;
        match written {
            Ok(Ok(_)) => {
                metrics::local_delivery("delivered");
                RecipientResult::Delivered {
                    reply: "250 2.0.0 delivered to Maildir".into(),
                }
            }
            Ok(Err(e)) => {
                metrics::local_delivery("deferred");
                RecipientResult::Temporary {
                    reply: format!("451 4.3.0 Maildir write failed: {e}"),
                }
            }
            Err(e) => RecipientResult::Temporary {
                reply: format!("451 4.3.0 local delivery task failed: {e}"),
            },
        }
    }

    /// Queue a bounce to the sender for the recipients that failed for good. Never for the
    /// null sender: a bounce of a bounce could loop forever.
    async fn bounce(&self, message: &QueuedMessage, body: &[u8], failed: &[Failed], now: u64) {
        let envelope = &message.envelope;
        if envelope.mail_from.is_empty() {
            tracing::info!(queue_id = %envelope.id, "no bounce for the null sender");
            return;
        }
        let Some(dsn) = smtp::build_bounce(envelope, body, failed, &self.hostname, now) else {
            return;
        };
        let spool = self.spool.clone();
        let mut bounce = Envelope::new("", vec![dsn.recipient.clone()]);
        bounce.body_8bit = dsn.is_8bit();
        let stored = tokio::task::spawn_blocking(move || spool.store(bounce, &dsn.message)).await;
        match stored {
            Ok(Ok(bounce_id)) => {
                tracing::info!(queue_id = %envelope.id, bounce_id = %bounce_id, to = %envelope.mail_from, "bounce queued");
                let _ = self.wake.send(bounce_id);
            }
            Ok(Err(e)) => {
                tracing::error!(queue_id = %envelope.id, error = %e, "cannot queue the bounce")
            }
            Err(e) => tracing::error!(queue_id = %envelope.id, error = %e, "bounce task failed"),
        }
    }

    /// Queue the message's one "delayed" notice to the sender, from the null sender like a
    /// bounce. Returns whether it is done with (queued, or nothing to send), so that the
    /// caller records it as sent; a notice that could not be queued is tried next run.
    async fn delay_notice(
        &self,
        message: &QueuedMessage,
        state: &mx_spool::DeliveryState,
        body: &[u8],
        now: u64,
    ) -> bool {
        let envelope = &message.envelope;
        let Some(dsn) =
            build_delay_notice(envelope, state, body, &self.hostname, now, &self.schedule)
        else {
            return true;
        };
        let spool = self.spool.clone();
        let mut notice = Envelope::new("", vec![dsn.recipient.clone()]);
        notice.body_8bit = dsn.is_8bit();
        notice.smtputf8 = dsn.needs_smtputf8() || envelope.smtputf8;
        let stored = tokio::task::spawn_blocking(move || spool.store(notice, &dsn.message)).await;
        match stored {
            Ok(Ok(notice_id)) => {
                tracing::info!(queue_id = %envelope.id, notice_id = %notice_id, to = %envelope.mail_from, "delay notice queued");
                let _ = self.wake.send(notice_id);
                true
            }
            Ok(Err(e)) => {
                tracing::error!(queue_id = %envelope.id, error = %e, "cannot queue the delay notice");
                false
            }
            Err(e) => {
                tracing::error!(queue_id = %envelope.id, error = %e, "delay notice task failed");
                false
            }
        }
    }
}

/// The one "delayed" notice (RFC 3464, action `delayed`) for the recipients of `state` that
/// are still deferred: status from each one's last reply (forced to class 4), and
/// `Will-Retry-Until` the end of the queue lifetime. `None` for the null sender or when no
/// recipient is deferred.
pub fn build_delay_notice(
    envelope: &Envelope,
    state: &mx_spool::DeliveryState,
    body: &[u8],
    hostname: &str,
    now: u64,
    schedule: &Schedule,
) -> Option<mx_smtp::dsn::Dsn> {
    use mx_smtp::dsn::{self, Action, DsnKind, RecipientReport};
    let retry_until = envelope
        .received_at
        .saturating_add(schedule.queue_lifetime_secs);
    let recipients = state
        .recipients
        .iter()
        .filter(|r| r.status == mx_spool::RecipientStatus::Deferred)
        .map(|r| {
            let reply = r.last_reply.as_deref().map(smtp::parse_reply);
            let status = reply
                .as_ref()
                .map(|reply| dsn::status_for_reply(reply, "5.0.0"))
                .filter(|s| s.class == 4)
                .unwrap_or(mx_smtp::EnhancedStatus::new(4, 0, 0));
            RecipientReport {
                final_recipient: r.address.clone(),
                action: Action::Delayed,
                status,
                remote_mta: None,
                diagnostic: reply,
                last_attempt: Some(r.updated_at),
                will_retry_until: Some(retry_until),
            }
        })
        .collect();
    smtp::build_dsn(envelope, body, recipients, DsnKind::Delayed, hostname, now)
}

/// Where queue-control requests are dropped.
pub fn control_dir(spool_root: &std::path::Path) -> std::path::PathBuf {
    spool_root.join("control")
}

fn apply_control(spool: &FileSpool, busy: &HashSet<QueueId>) -> Vec<QueueId> {
    let dir = control_dir(spool.root());
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut wake = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("tmp-") {
            continue; // a request still being written
        }
        let mut parts = name.splitn(3, '.');
        let (Some(verb), Some(target), Some(_nonce)) = (parts.next(), parts.next(), parts.next())
        else {
            continue; // a stray file
        };
        let ids = if target == "all" {
            spool.list().unwrap_or_default()
        } else {
            match QueueId::new(target) {
                Ok(id) => vec![id],
                Err(_) => {
                    let _ = std::fs::remove_file(entry.path());
                    continue;
                }
            }
        };
        // A message being delivered right now is left for the next scan.
        if ids.iter().any(|id| busy.contains(id)) {
            continue;
        }
        for id in ids {
            let done = match verb {
                "delete" => spool
                    .remove(&id)
                    .map(|_| tracing::info!(queue_id = %id, "deleted by queue control")),
                "retry" => spool.load(&id).and_then(|m| {
                    let mut state = m.state;
                    state.next_attempt_at = 0;
                    for r in &mut state.recipients {
                        if r.status == mx_spool::RecipientStatus::Deferred {
                            r.status = mx_spool::RecipientStatus::Pending;
                        }
                    }
                    wake.push(id.clone());
                    spool.update_state(&id, &state)
                }),
                _ => Ok(()),
            };
            if let Err(e) = done {
                tracing::warn!(queue_id = %id, error = %e, request = %name, "queue control request failed");
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
    wake
}

/// The delivery log line, in the spirit of Postfix's:
/// `to=<..>, relay=host[ip]:port, delay=.., status=sent|deferred|bounced (reply)`.
fn log_result(id: &QueueId, rcpt: &str, relay: &str, started: Instant, result: &RecipientResult) {
    let delay = format!("{:.2}", started.elapsed().as_secs_f64());
    let (status, reply) = match result {
        RecipientResult::Delivered { reply } => ("sent", reply),
        RecipientResult::Temporary { reply } => ("deferred", reply),
        RecipientResult::Permanent { reply } => ("bounced", reply),
    };
    metrics::delivery_result(status);
    tracing::info!(queue_id = %id, to = %rcpt, relay = %relay, delay = %delay, status = status, reply = %reply, "delivery");
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_notice_reports_deferred_recipients_only() {
        let mut env = Envelope::new(
            "alice@example.com",
            vec!["x@remote.example".into(), "y@remote.example".into()],
        );
        env.received_at = 1000;
        let mut state = mx_spool::DeliveryState::initial(&env);
        state.recipients[0].status = mx_spool::RecipientStatus::Deferred;
        state.recipients[0].last_reply = Some("451 4.4.3 Domain lookup failed".into());
        state.recipients[1].status = mx_spool::RecipientStatus::Delivered;
        let schedule = Schedule {
            queue_lifetime_secs: 500,
            delay_warning_secs: 60,
            ..Schedule::default()
        };
        let body = b"Subject: hi\r\n\r\nbody\r\n";
        let dsn = build_delay_notice(&env, &state, body, "mx.test", 1100, &schedule).unwrap();
        assert_eq!(dsn.mail_from, "");
        assert_eq!(dsn.recipient, "alice@example.com");
        let text = String::from_utf8(dsn.message).unwrap();
        assert!(text.contains("Action: delayed"), "{text}");
        assert!(text.contains("Status: 4.4.3"), "{text}");
        assert!(text.contains("Will-Retry-Until:"), "{text}");
        assert!(text.contains("x@remote.example"), "{text}");
        assert!(
            !text.contains("Final-Recipient: rfc822; y@remote.example"),
            "{text}"
        );
        // A reply that is no 4xx still gives a class-4 status.
        state.recipients[0].last_reply = Some("garbage".into());
        let dsn = build_delay_notice(&env, &state, body, "mx.test", 1100, &schedule).unwrap();
        let text = String::from_utf8(dsn.message).unwrap();
        assert!(text.contains("Status: 4.0.0"), "{text}");
        // Never for the null sender.
        let mut null = env.clone();
        null.mail_from = String::new();
        assert!(build_delay_notice(&null, &state, body, "mx.test", 1100, &schedule).is_none());
    }
}
