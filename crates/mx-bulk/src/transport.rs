//! Questions over the wire: a few long-lived UDP sockets shared by every question, each
//! answer matched against its question (RFC 5452), TCP when an answer is truncated, retries
//! with a growing timeout, an in-flight window and an optional rate limit.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use hickory_proto::rr::Name;
use mx_core::{Failure, Outcome, QType, Question};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::BulkError;
use crate::mmsg;
use crate::wire::{self, Classified, Response};

/// Receive buffer asked of the kernel for each socket: a window of answers arriving at once
/// must not overflow it, or the server's work is lost and the question waits a full timeout.
const SOCKET_BUFFER: usize = 8 << 20;
/// Ids per socket are 16 bits; keep well clear of running out so that drawing a free random
/// id stays cheap.
const MAX_PENDING_PER_SOCKET: usize = 16_384;
/// The timeout doubles on each retry up to this many times its first value.
const MAX_BACKOFF_FACTOR: u32 = 4;

#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Servers to spread questions across; a retry goes to the next one.
    pub nameservers: Vec<SocketAddr>,
    /// UDP sockets per address family.
    pub sockets: usize,
    /// Queries outstanding at once, all sockets together.
    pub in_flight: usize,
    /// Wait for the first try of a question; each retry waits twice as long (up to 4x). A
    /// wait ends up to an eighth of this later (at most 100 ms): timeouts are swept per socket.
    pub timeout: Duration,
    /// Tries after the first one when a server does not answer.
    pub retries: u32,
    /// Queries per second, all servers together (None: as fast as the window allows).
    pub rate_limit: Option<u32>,
}

/// Counters of the traffic, for `--stats` and the benchmark.
#[derive(Debug, Default)]
pub struct TransportCounters {
    pub udp_queries: AtomicU64,
    pub tcp_queries: AtomicU64,
    pub timeouts: AtomicU64,
    /// Datagrams that matched no outstanding question (late, duplicated or forged answers).
    pub unmatched: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct TransportStats {
    pub udp_queries: u64,
    pub tcp_queries: u64,
    pub timeouts: u64,
    pub unmatched: u64,
}

impl TransportCounters {
    pub fn snapshot(&self) -> TransportStats {
        TransportStats {
            udp_queries: self.udp_queries.load(Ordering::Relaxed),
            tcp_queries: self.tcp_queries.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            unmatched: self.unmatched.load(Ordering::Relaxed),
        }
    }
}

/// A question waiting for its answer on one socket, under its id.
struct Pending {
    /// Tells this wait from a later one that drew the same id.
    token: u64,
    /// When the socket's sweeper answers it with a timeout.
    deadline: Instant,
    server: SocketAddr,
    name: Name,
    qtype: QType,
    /// Decode the additional section too (`--use-additional` on an MX question).
    want_additional: bool,
    reply: Reply,
}

/// Where a wait stands. The answer is handed over in the map entry itself rather than through
/// a channel: a oneshot per query was an allocation, freed on another thread, and a few
/// atomic operations more than the lock this entry already takes.
enum Reply {
    /// No answer yet; the waker of the waiting query, once it has been polled.
    Waiting(Option<Waker>),
    /// The receive loop matched an answer and is decoding it outside the lock: neither a
    /// duplicate answer nor the timeout sweep may take this wait any more.
    Decoding(Option<Waker>),
    /// The outcome, for the waiting query to take out (it removes the entry).
    Ready(Result<Response, Failure>),
}

impl Reply {
    /// Sets the outcome and returns the waker to wake once the lock is released.
    fn complete(&mut self, result: Result<Response, Failure>) -> Option<Waker> {
        match std::mem::replace(self, Reply::Ready(result)) {
            Reply::Waiting(waker) | Reply::Decoding(waker) => waker,
            Reply::Ready(_) => None,
        }
    }
}

type PendingMap = HashMap<u16, Pending, foldhash::fast::RandomState>;

struct UdpSide {
    socket: UdpSocket,
    pending: Mutex<PendingMap>,
    /// Queries waiting for the socket's sender task, which sends them in bursts.
    #[cfg(target_os = "linux")]
    outbox: Mutex<mmsg::Outbox>,
    #[cfg(target_os = "linux")]
    queued: tokio::sync::Notify,
}

impl UdpSide {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingMap> {
        // Updates are single inserts and removes: a poisoned map is still consistent.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes out the wait of `id` if it is still the one that `token` started (a later wait
    /// may have drawn the same id).
    fn take(&self, id: u16, token: u64) -> Option<Pending> {
        let mut pending = self.lock();
        match pending.get(&id) {
            Some(p) if p.token == token => pending.remove(&id),
            _ => None,
        }
    }

    /// Hands `result` to the wait of `id` started by `token`, unless it already has one.
    /// `only_decoding`: the receive loop completes only the wait it claimed.
    fn complete(
        &self,
        id: u16,
        token: u64,
        result: Result<Response, Failure>,
        only_decoding: bool,
    ) {
        let waker = {
            let mut pending = self.lock();
            match pending.get_mut(&id) {
                Some(p)
                    if p.token == token
                        && match p.reply {
                            Reply::Decoding(_) => true,
                            Reply::Waiting(_) => !only_decoding,
                            Reply::Ready(_) => false,
                        } =>
                {
                    p.reply.complete(result)
                }
                _ => None,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The waiting query's side: its outcome once there is one (the entry is removed then),
    /// otherwise its waker is kept for whoever completes it.
    fn poll_reply(&self, id: u16, token: u64, waker: &Waker) -> Poll<Result<Response, Failure>> {
        let mut pending = self.lock();
        let Some(p) = pending.get_mut(&id).filter(|p| p.token == token) else {
            // Only this wait removes its own entry: not reached, but not a reason to hang.
            return Poll::Ready(Err(Failure::Network("receive loop stopped".into())));
        };
        match &mut p.reply {
            Reply::Waiting(kept) | Reply::Decoding(kept) => {
                if !kept.as_ref().is_some_and(|k| k.will_wake(waker)) {
                    *kept = Some(waker.clone());
                }
                Poll::Pending
            }
            Reply::Ready(_) => match pending.remove(&id).map(|p| p.reply) {
                Some(Reply::Ready(result)) => Poll::Ready(result),
                _ => unreachable!("the entry was just seen ready"),
            },
        }
    }
}

/// Removes a pending question when the caller drops the query's future before the wait
/// took its outcome (the wait removes the entry itself when it does).
struct PendingGuard<'a> {
    side: &'a UdpSide,
    id: u16,
    token: u64,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.side.take(self.id, self.token);
        }
    }
}

struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    /// Each query takes the next slot; no credit builds up while idle, so no burst either.
    async fn wait(&self) {
        let now = Instant::now();
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
    }
}

pub struct Transport {
    servers: Vec<SocketAddr>,
    v4: Vec<Arc<UdpSide>>,
    v6: Vec<Arc<UdpSide>>,
    next_socket: AtomicUsize,
    next_server: AtomicUsize,
    tokens: AtomicU64,
    window: Semaphore,
    limiter: Option<RateLimiter>,
    timeout: Duration,
    retries: u32,
    counters: Arc<TransportCounters>,
    /// Each socket's receive loop, sender and timeout sweeper.
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Transport {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Transport {
    /// Opens the sockets and starts their receive loops; must run inside a Tokio runtime.
    pub fn new(config: &TransportConfig) -> Result<Transport, BulkError> {
        if config.nameservers.is_empty() {
            return Err(BulkError::NoNameserver);
        }
        if config.sockets == 0 || config.in_flight == 0 {
            return Err(BulkError::Config(
                "sockets and in-flight window must be at least 1".into(),
            ));
        }
        if config.in_flight > config.sockets * MAX_PENDING_PER_SOCKET {
            return Err(BulkError::Config(format!(
                "an in-flight window of {} needs at least {} sockets",
                config.in_flight,
                config.in_flight.div_ceil(MAX_PENDING_PER_SOCKET)
            )));
        }
        let counters = Arc::new(TransportCounters::default());
        let mut tasks = Vec::new();
        // A timeout fires up to one sweep late: an eighth of the first wait, at most 100 ms.
        let sweep =
            (config.timeout / 8).clamp(Duration::from_millis(1), Duration::from_millis(100));
        let mut open = |wanted: bool, server: SocketAddr| -> Result<Vec<Arc<UdpSide>>, BulkError> {
            if !wanted {
                return Ok(Vec::new());
            }
            (0..config.sockets)
                .map(|_| {
                    let side = Arc::new(UdpSide {
                        socket: open_udp(server)?,
                        pending: Mutex::new(PendingMap::default()),
                        #[cfg(target_os = "linux")]
                        outbox: Mutex::new(mmsg::Outbox::default()),
                        #[cfg(target_os = "linux")]
                        queued: tokio::sync::Notify::new(),
                    });
                    tasks.push(tokio::spawn(receive(side.clone(), counters.clone())));
                    tasks.push(tokio::spawn(expire(side.clone(), counters.clone(), sweep)));
                    #[cfg(target_os = "linux")]
                    tasks.push(tokio::spawn(send_queued(side.clone(), counters.clone())));
                    Ok(side)
                })
                .collect()
        };
        let first_v4 = config.nameservers.iter().find(|s| s.is_ipv4());
        let first_v6 = config.nameservers.iter().find(|s| s.is_ipv6());
        let v4 = open(
            first_v4.is_some(),
            *first_v4.unwrap_or(&config.nameservers[0]),
        )?;
        let v6 = open(
            first_v6.is_some(),
            *first_v6.unwrap_or(&config.nameservers[0]),
        )?;
        let limiter = config
            .rate_limit
            .filter(|r| *r > 0)
            .map(|rate| RateLimiter {
                interval: Duration::from_secs(1) / rate,
                next: Mutex::new(Instant::now()),
            });
        Ok(Transport {
            servers: config.nameservers.clone(),
            v4,
            v6,
            next_socket: AtomicUsize::new(0),
            next_server: AtomicUsize::new(0),
            tokens: AtomicU64::new(0),
            window: Semaphore::new(config.in_flight),
            limiter,
            timeout: config.timeout,
            retries: config.retries,
            counters,
            tasks,
        })
    }

    pub fn counters(&self) -> &TransportCounters {
        &self.counters
    }

    /// The outcome of one question, and with `want_additional` the address outcomes an MX
    /// answer volunteered (see [`wire::additional_addresses`]).
    ///
    /// A server that does not answer is retried (the next server, a longer wait); one that
    /// answers SERVFAIL, REFUSED or garbage is not asked again, and the next one is. When
    /// every try has failed, the most telling failure is reported, as the route path does.
    pub async fn query(
        &self,
        question: &Question,
        want_additional: bool,
    ) -> (Outcome, Vec<(Question, Outcome)>) {
        let name = match wire::wire_name(question) {
            Ok(name) => name,
            Err(failure) => return (Err(failure), Vec::new()),
        };
        let servers = self.servers.len();
        let mut next = self.next_server.fetch_add(1, Ordering::Relaxed);
        // Allocated only when a server answers badly, which is rare.
        let mut answered_badly: Vec<bool> = Vec::new();
        let mut worst: Option<Failure> = None;
        for attempt in 0..=self.retries {
            let Some(index) = (0..servers)
                .map(|i| (next + i) % servers)
                .find(|i| !answered_badly.get(*i).copied().unwrap_or(false))
            else {
                break;
            };
            next = index + 1;
            let server = self.servers[index];
            let timeout = self.timeout * 2u32.saturating_pow(attempt).min(MAX_BACKOFF_FACTOR);
            let Ok(_permit) = self.window.acquire().await else {
                break;
            };
            let want = want_additional && question.qtype == QType::Mx;
            let tried = self
                .try_udp(server, &name, question.qtype, want, timeout)
                .await;
            let failure = match tried {
                Ok(response) => {
                    // Empty unless the answer is a NOERROR one, the only kind kept below.
                    let extras = if want_additional {
                        wire::additional_addresses(&response)
                    } else {
                        Vec::new()
                    };
                    match wire::classify(response) {
                        Classified::Outcome(Ok(answer)) => {
                            return (Ok(answer), extras);
                        }
                        Classified::Outcome(Err(failure)) => {
                            mark(&mut answered_badly, servers, index);
                            failure
                        }
                        Classified::Truncated => {
                            // Boxed: truncation is rare, and the TCP state would otherwise make
                            // every query's future (moved on each poll) several times larger.
                            let tcp =
                                Box::pin(self.try_tcp(server, &name, question.qtype, timeout));
                            match tcp.await {
                                Ok(answer) => return (Ok(answer), Vec::new()),
                                Err(failure) => {
                                    mark(&mut answered_badly, servers, index);
                                    failure
                                }
                            }
                        }
                    }
                }
                Err(failure @ (Failure::Timeout | Failure::Network(_))) => failure,
                Err(failure) => {
                    // Matched but unreadable: this server's answer, as on the route path.
                    mark(&mut answered_badly, servers, index);
                    failure
                }
            };
            failure.keep_most_telling(&mut worst);
        }
        (Err(worst.unwrap_or(Failure::Timeout)), Vec::new())
    }

    fn side_for(&self, server: SocketAddr) -> &UdpSide {
        let sides = if server.is_ipv4() { &self.v4 } else { &self.v6 };
        let index = self.next_socket.fetch_add(1, Ordering::Relaxed) % sides.len();
        &sides[index]
    }

    /// One UDP try: a fresh random id on one of the sockets (whose source port the kernel
    /// drew at random), then the matching answer or a timeout.
    async fn try_udp(
        &self,
        server: SocketAddr,
        name: &Name,
        qtype: QType,
        want_additional: bool,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        if let Some(limiter) = &self.limiter {
            limiter.wait().await;
        }
        let side = self.side_for(server);
        let waker = std::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
        let token = self.tokens.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        let id = {
            let mut pending = side.lock();
            loop {
                let id: u16 = rand::random();
                if let Entry::Vacant(slot) = pending.entry(id) {
                    slot.insert(Pending {
                        token,
                        deadline,
                        server,
                        name: name.clone(),
                        qtype,
                        want_additional,
                        reply: Reply::Waiting(Some(waker)),
                    });
                    break id;
                }
            }
        };
        let mut guard = PendingGuard {
            side,
            id,
            token,
            armed: true,
        };
        #[cfg(target_os = "linux")]
        {
            thread_local! {
                /// Where a query is encoded before it is copied into its socket's outbox.
                static ENCODED: std::cell::RefCell<Vec<u8>> = const {
                    std::cell::RefCell::new(Vec::new())
                };
            }
            // Counted, or failed through `reply`, by the sender task.
            let first = ENCODED.with_borrow_mut(|bytes| {
                wire::encode_query_into(id, name, qtype, bytes)?;
                let mut outbox = side.outbox.lock().unwrap_or_else(|p| p.into_inner());
                outbox.push(bytes, server, id, token);
                Ok::<_, Failure>(outbox.len() == 1)
            })?;
            if first {
                side.queued.notify_one();
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let bytes = wire::encode_query(id, name, qtype)?;
            side.socket
                .send_to(&bytes, server)
                .await
                .map_err(|e| Failure::Network(e.to_string()))?;
            self.counters.udp_queries.fetch_add(1, Ordering::Relaxed);
        }
        // No timer of its own: the socket's sweeper answers `Timeout` once the deadline passed.
        let result = std::future::poll_fn(|cx| side.poll_reply(id, token, cx.waker())).await;
        guard.armed = false;
        result
    }

    /// The TCP retry of a truncated answer (RFC 7766 framing, one connection per question:
    /// truncation is rare). If TCP fails the question failed with `Truncated`, as on the
    /// route path.
    async fn try_tcp(
        &self,
        server: SocketAddr,
        name: &Name,
        qtype: QType,
        timeout: Duration,
    ) -> Outcome {
        if let Some(limiter) = &self.limiter {
            limiter.wait().await;
        }
        self.counters.tcp_queries.fetch_add(1, Ordering::Relaxed);
        let id: u16 = rand::random();
        let exchange = async {
            let query = wire::encode_query(id, name, qtype).map_err(|_| ())?;
            let mut stream = TcpStream::connect(server).await.map_err(|_| ())?;
            let len = u16::try_from(query.len()).map_err(|_| ())?;
            let mut frame = len.to_be_bytes().to_vec();
            frame.extend_from_slice(&query);
            stream.write_all(&frame).await.map_err(|_| ())?;
            // Skip answers that are not ours; a server sends one per query on this connection.
            loop {
                let len = stream.read_u16().await.map_err(|_| ())?;
                let mut buf = vec![0u8; usize::from(len)];
                stream.read_exact(&mut buf).await.map_err(|_| ())?;
                if let Some((header, query, rest)) = wire::decode_head(&buf)
                    && wire::head_matches(&header.metadata, &query, id, name, qtype)
                {
                    return wire::decode_rest(header, rest, qtype, false).map_err(|_| ());
                }
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(response)) => match wire::classify(response) {
                Classified::Outcome(outcome) => outcome,
                Classified::Truncated => Err(Failure::Truncated),
            },
            _ => Err(Failure::Truncated),
        }
    }
}

fn open_udp(server: SocketAddr) -> Result<UdpSocket, BulkError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let error = |source| BulkError::Socket { server, source };
    let socket = Socket::new(
        Domain::for_address(server),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(error)?;
    // The kernel may grant less (net.core.rmem_max); that only costs throughput.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true).map_err(error)?;
    // Port 0: the kernel picks a random ephemeral source port (RFC 5452 §9.2).
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    socket.bind(&any.into()).map_err(error)?;
    UdpSocket::from_std(socket.into()).map_err(error)
}

/// One socket's sender: every query queued since its last burst goes out with as few
/// `sendmmsg` calls as the batch size allows. A query whose send fails gets the error as its
/// answer, as a failed `send_to` would have returned it.
#[cfg(target_os = "linux")]
async fn send_queued(side: Arc<UdpSide>, counters: Arc<TransportCounters>) {
    let mut queue = mmsg::Outbox::default();
    loop {
        side.queued.notified().await;
        // Let the tasks already runnable queue their queries first, so that one system call
        // carries many; the wait is one turn of the scheduler.
        tokio::task::yield_now().await;
        std::mem::swap(
            &mut queue,
            &mut *side.outbox.lock().unwrap_or_else(|p| p.into_inner()),
        );
        let mut start = 0;
        while start < queue.len() {
            match mmsg::send(&side.socket, &queue, start).await {
                Ok(sent) => {
                    counters
                        .udp_queries
                        .fetch_add(sent as u64, Ordering::Relaxed);
                    start += sent.max(1);
                }
                Err(error) => {
                    let failed = &queue.queries()[start];
                    let failure = Err(Failure::Network(error.to_string()));
                    side.complete(failed.id, failed.token, failure, false);
                    start += 1;
                }
            }
        }
        queue.clear();
    }
}

/// One socket's timeouts: every `period`, the questions past their deadline are answered
/// `Timeout`. One timer per socket instead of a timer entry registered and cancelled for
/// every query.
async fn expire(side: Arc<UdpSide>, counters: Arc<TransportCounters>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expired = Vec::new();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut count = 0u64;
        for p in side.lock().values_mut() {
            // An answer being decoded or already handed over is not a timeout.
            if p.deadline <= now && matches!(p.reply, Reply::Waiting(_)) {
                count += 1;
                expired.extend(p.reply.complete(Err(Failure::Timeout)));
            }
        }
        counters.timeouts.fetch_add(count, Ordering::Relaxed);
        for waker in expired.drain(..) {
            waker.wake();
        }
    }
}

/// One socket's receive loop: every datagram is decoded and handed to the question it answers,
/// or dropped if it answers none (wrong id, wrong server, wrong question).
async fn receive(side: Arc<UdpSide>, counters: Arc<TransportCounters>) {
    let mut batch = mmsg::RecvBatch::new();
    loop {
        let received = batch.receive(&side.socket).await;
        for (datagram, src) in received {
            deliver(&side, &counters, datagram, src);
        }
    }
}

/// Matches one datagram to its question (RFC 5452) and hands the decoded answer over.
fn deliver(side: &UdpSide, counters: &TransportCounters, datagram: &[u8], src: SocketAddr) {
    let Some((header, query, rest)) = wire::decode_head(datagram) else {
        counters.unmatched.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let id = header.metadata.id;
    let claimed = {
        let mut pending = side.lock();
        match pending.get_mut(&id) {
            Some(p)
                if matches!(p.reply, Reply::Waiting(_))
                    && p.server == src
                    && wire::head_matches(&header.metadata, &query, id, &p.name, p.qtype) =>
            {
                let waker = match &mut p.reply {
                    Reply::Waiting(waker) => waker.take(),
                    _ => None,
                };
                p.reply = Reply::Decoding(waker);
                Some((p.token, p.qtype, p.want_additional))
            }
            _ => None,
        }
    };
    match claimed {
        Some((token, qtype, want_additional)) => {
            // Decoded outside the lock: the queries being sent on this socket need it too.
            let decoded = wire::decode_rest(header, rest, qtype, want_additional);
            side.complete(id, token, decoded, true);
        }
        None => {
            counters.unmatched.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Notes that server `index` answered badly (it is not asked this question again).
fn mark(answered_badly: &mut Vec<bool>, servers: usize, index: usize) {
    answered_badly.resize(servers, false);
    answered_badly[index] = true;
}
