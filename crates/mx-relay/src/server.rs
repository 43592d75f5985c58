//! The SMTP listener: sockets, TLS, timeouts and limits around mx-smtp's session, with the
//! relay policy, the users file and the spool answering its questions.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mx_dns::{AddressCache, ClientOptions, HickoryClient, Nameservers, RouteCache, Router};
use mx_smtp::ClientConfig;
use mx_smtp::client::Timeouts;
use mx_smtp::{
    EnhancedStatus, Event, MessageDecision, PeerInfo, RcptDecision, Reply, ServerConfig,
    ServerSession,
};
use mx_spool::{Committer, Envelope, FileSpool, Named, QueueId, SpoolError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::faults::{Faults, SessionFault};
use crate::outbound::smtp::{SmtpTransport, starttls_policy};
use crate::outbound::{Engine, FreshMessages};
use crate::policy::{Refusal, RelayPolicy, canonical_ip};
use crate::users::Users;
use crate::{Config, RelayError, metrics, tls, trace};

/// Everything the sessions share.
struct Shared {
    hostname: String,
    session: Arc<ServerConfig>,
    policy: Arc<RelayPolicy>,
    users: Arc<Users>,
    /// Stores accepted messages in group commits (see mx-spool's `Committer`).
    committer: Arc<Committer>,
    tls: Option<TlsAcceptor>,
    command_timeout: Duration,
    data_timeout: Duration,
    greet_pause: Duration,
    max_connections: usize,
    max_connections_per_ip: usize,
    connections: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    local: mpsc::UnboundedSender<QueueId>,
    /// Accepted messages handed to the engine in memory, before their id is sent.
    fresh: FreshMessages,
    faults: Faults,
}

/// A running relay. Dropping it does not stop it: call [`Relay::shutdown`].
pub struct Relay {
    addrs: Vec<SocketAddr>,
    faults: Faults,
    metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// How long sessions in the middle of DATA may take to finish once shutdown is asked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

impl Relay {
    /// Open the spool (recovering it), bind every listen address, and start serving.
    pub async fn start(config: &Config) -> Result<Relay, RelayError> {
        let hostname = config.hostname();
        let users = match &config.server.users_file {
            Some(path) => Users::load(path)?,
            None => Users::default(),
        };
        let spool_path = config.spool.path.clone();
        // The spool logs what its recovery did (and each quarantined file) itself.
        let (spool, _report) = tokio::task::spawn_blocking(move || FileSpool::open(&spool_path))
            .await
            .map_err(|e| RelayError::Spool(e.to_string()))?
            .map_err(|e| RelayError::Spool(e.to_string()))?;
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(tls::from_files(cert, key)?),
            _ if config.server.starttls => Some(tls::self_signed(&hostname)?),
            _ => None,
        };
        let session = ServerConfig {
            hostname: hostname.clone(),
            max_message_size: usize::try_from(config.server.max_message_size).unwrap_or(usize::MAX),
            max_recipients: config.server.max_recipients,
            max_errors: config.server.max_errors,
            starttls_available: tls.is_some(),
            ..ServerConfig::default()
        };
        let policy = Arc::new(RelayPolicy::new(
            &config.server.local_domains,
            &config.server.catch_all_domains,
            &config.server.trusted_networks,
            &hostname,
        ));
        let spool = Arc::new(spool);
        let committer = Arc::new(
            Committer::start(
                spool.clone(),
                config.spool.sync_mode(),
                config.spool.min_free_bytes,
            )
            .map_err(|e| RelayError::Spool(e.to_string()))?,
        );
        let users = Arc::new(users);
        let (local_tx, local_rx) = mpsc::unbounded_channel();
        let fresh = FreshMessages::default();
        let shared = Arc::new(Shared {
            hostname: hostname.clone(),
            session: Arc::new(session),
            policy: policy.clone(),
            users: users.clone(),
            committer: committer.clone(),
            tls: tls.map(TlsAcceptor::from),
            command_timeout: Duration::from_secs(config.server.command_timeout_secs),
            data_timeout: Duration::from_secs(config.server.data_timeout_secs),
            greet_pause: Duration::from_millis(config.server.greet_pause_ms),
            max_connections: config.server.max_connections,
            max_connections_per_ip: config.server.max_connections_per_ip,
            connections: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            local: local_tx.clone(),
            fresh: fresh.clone(),
            faults: Faults::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut addrs = Vec::new();
        for addr in &config.server.listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| RelayError::Bind {
                    addr: *addr,
                    source,
                })?;
            let bound = listener.local_addr().map_err(|source| RelayError::Bind {
                addr: *addr,
                source,
            })?;
            tracing::info!(listen = %bound, hostname = %hostname, "accepting SMTP");
            addrs.push(bound);
            tasks.spawn(accept_loop(listener, shared.clone(), stopped.clone()));
        }
        let engine = Arc::new(engine(config, spool.clone(), &shared)?);
        let mut metrics_addr = None;
        if let Some(addr) = config.metrics.listen {
            let (bound, endpoint) = metrics::serve(addr, spool.clone(), stopped.clone()).await?;
            metrics_addr = Some(bound);
            tasks.spawn(async move {
                let _ = endpoint.await;
            });
        }
        // Whatever the spool held at start (recovered after a crash or a stop) is due now.
        tasks.spawn(engine.run(local_rx, stopped));
        Ok(Relay {
            addrs,
            faults: shared.faults.clone(),
            metrics_addr,
            stop,
            tasks,
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The fault switches of this relay as an exchanger (the lab's).
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// Where `/metrics` is served, when `metrics.listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stop accepting, let sessions in DATA finish (bounded), and wait for every task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Wait until the relay stops by itself (it does not, unless a listener fails).
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    let stop = stop.clone();
                    sessions.spawn(async move { connection(stream, peer, shared, stop).await });
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listener);
    while sessions.join_next().await.is_some() {}
}

/// Held for the life of a connection; gives its slots back when dropped.
struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::connection_closed();
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        let mut per_ip = self.shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

fn take_slot(shared: &Arc<Shared>, ip: IpAddr) -> Option<Slot> {
    let total = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let mut per_ip = shared.per_ip.lock().unwrap_or_else(|p| p.into_inner());
    let mine = per_ip.entry(ip).or_insert(0);
    *mine += 1;
    let over = total > shared.max_connections || *mine > shared.max_connections_per_ip;
    drop(per_ip);
    metrics::connection_opened();
    let slot = Slot {
        shared: shared.clone(),
        ip,
    };
    (!over).then_some(slot)
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the plain stream is inside the TLS handshake.
    Closed,
}

impl Conn {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            Conn::Closed => Ok(0),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => write_flush(s, bytes).await,
            Conn::Tls(s) => write_flush(s.as_mut(), bytes).await,
            Conn::Closed => Err(std::io::Error::other("connection closed")),
        }
    }
}

/// A message stored and handed to delivery, whose 250 is about to be written: logged and
/// timed just before that write, so that `accept_us` covers everything the client waits for
/// after its final dot.
struct Accepted {
    id: QueueId,
    from: String,
    recipients: usize,
    size: usize,
    /// When the session recognised the final dot.
    ended: Instant,
}

/// Writes `out` (replies, 250s among them) after logging and timing the messages they accept.
async fn send(
    conn: &mut Conn,
    out: &[u8],
    accepted: &mut Vec<Accepted>,
    ip: IpAddr,
) -> std::io::Result<()> {
    for a in accepted.drain(..) {
        let elapsed = a.ended.elapsed();
        let accept_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        tracing::info!(queue_id = %a.id, client = %ip, from = %a.from, recipients = a.recipients, size = a.size, accept_us, "message accepted");
        metrics::message_accepted(a.size);
        metrics::accept_latency(elapsed.as_secs_f64());
    }
    conn.write_all(out).await
}

async fn write_flush<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(bytes).await?;
    s.flush().await
}

async fn read_some<S: AsyncRead + Unpin>(s: &mut S, buf: &mut [u8]) -> std::io::Result<usize> {
    s.read(buf).await
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let ip = canonical_ip(peer.ip());
    let Some(_slot) = take_slot(&shared, ip) else {
        tracing::info!(client = %ip, reason = "connection_limit", "connection refused");
        metrics::connection_refused("connection_limit");
        let reply = Reply::new(
            421,
            status("4.7.0"),
            "Too many connections, try again later",
        );
        let _ = write_flush(&mut stream, &reply.to_bytes()).await;
        return;
    };
    let _ = stream.set_nodelay(true);
    let trusted = shared.policy.is_trusted(ip);
    // Early talkers: a client that speaks before our greeting is not a patient MTA. Only
    // untrusted clients wait for the pause; our own networks are not made to.
    if !trusted && !shared.greet_pause.is_zero() {
        let mut probe = [0u8; 1];
        if let Ok(Ok(n)) =
            tokio::time::timeout(shared.greet_pause, read_some(&mut stream, &mut probe)).await
        {
            if n > 0 {
                tracing::info!(client = %ip, reason = "early_talker", "connection refused");
                metrics::connection_refused("early_talker");
                let _ =
                    write_flush(&mut stream, &ServerSession::early_talker_reply().to_bytes()).await;
            }
            return;
        }
    }
    match shared.faults.session() {
        SessionFault::None => {}
        SessionFault::Greeting421 => {
            let reply = Reply::new(421, status("4.3.2"), "Service not available (lab switch)");
            let _ = write_flush(&mut stream, &reply.to_bytes()).await;
            return;
        }
        SessionFault::Silent => {
            // Say nothing until the client gives up or the command timeout passes.
            let mut sink = [0u8; 512];
            let _ = tokio::time::timeout(shared.command_timeout, async {
                while read_some(&mut stream, &mut sink).await.unwrap_or(0) > 0 {}
            })
            .await;
            return;
        }
    }
    let mut session = ServerSession::new(shared.session.clone(), PeerInfo { ip, tls: false });
    let mut conn = Conn::Plain(stream);
    if conn
        .write_all(&session.greeting().to_bytes())
        .await
        .is_err()
    {
        return;
    }
    if let Err(e) = run_session(&mut conn, &mut session, ip, &shared, stop).await {
        tracing::debug!(client = %ip, error = %e, "session ended");
    }
}

async fn run_session(
    conn: &mut Conn,
    session: &mut ServerSession,
    ip: IpAddr,
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut out: Vec<u8> = Vec::new();
    let mut accepted: Vec<Accepted> = Vec::new();
    let mut shutdown_deadline: Option<tokio::time::Instant> = None;
    loop {
        while let Some(event) = session.next_event() {
            match event {
                Event::Reply(reply) => out.extend_from_slice(&reply.to_bytes()),
                Event::Close => {
                    send(conn, &out, &mut accepted, ip).await?;
                    return Ok(());
                }
                Event::StartTls => {
                    send(conn, &out, &mut accepted, ip).await?;
                    out.clear();
                    let Some(acceptor) = shared.tls.clone() else {
                        return Ok(());
                    };
                    let Conn::Plain(tcp) = std::mem::replace(conn, Conn::Closed) else {
                        return Ok(());
                    };
                    let tls = tokio::time::timeout(shared.command_timeout, acceptor.accept(tcp))
                        .await
                        .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
                    *conn = Conn::Tls(Box::new(tls));
                    if session.tls_started().is_err() {
                        return Ok(());
                    }
                }
                Event::CheckRecipient { address, .. } => {
                    let authenticated = session.authenticated().is_some();
                    let faulted = shared.faults.recipient(&address);
                    let judged = match faulted {
                        Some((code, enhanced, text)) => Err(Refusal {
                            code,
                            enhanced: leak_status(&enhanced),
                            text,
                        }),
                        None => shared
                            .policy
                            .recipient(&address, ip, authenticated, &shared.users)
                            .map(|_| ()),
                    };
                    let decision = match judged {
                        Ok(()) => RcptDecision::Accept,
                        Err(refusal) => {
                            metrics::recipient_refused(refusal.enhanced);
                            tracing::info!(client = %ip, to = %address, reply = %refusal.text, reason = %refusal.enhanced, "recipient refused");
                            RcptDecision::Reject(reply_of(&refusal))
                        }
                    };
                    let _ = session.recipient_decision(decision);
                }
                Event::Authenticate {
                    authzid,
                    username,
                    password,
                    ..
                } => {
                    let users = shared.users.clone();
                    let name = username.clone();
                    let secret = password.expose().to_string();
                    // Acting as someone else is not offered.
                    let allowed = authzid
                        .as_deref()
                        .is_none_or(|a| a.is_empty() || a == username);
                    let ok = allowed
                        && tokio::task::spawn_blocking(move || users.verify(&name, &secret))
                            .await
                            .unwrap_or(false);
                    tracing::info!(client = %ip, user = %username, ok, "authentication");
                    let _ = session.auth_decision(ok);
                }
                Event::Message(message) => {
                    // The session hands the message over as soon as it has read the final
                    // dot: this is where the client starts waiting for its 250.
                    let ended = Instant::now();
                    let (decision, stored) = accept_message(shared, ip, session, message).await;
                    if let Some(stored) = stored {
                        accepted.push(Accepted { ended, ..stored });
                    }
                    let _ = session.message_decision(decision);
                }
            }
        }
        if session.is_closed() {
            send(conn, &out, &mut accepted, ip).await?;
            return Ok(());
        }
        if !out.is_empty() {
            send(conn, &out, &mut accepted, ip).await?;
            out.clear();
        }
        if *stop.borrow() && shutdown_deadline.is_none() {
            if !session.in_data() {
                let reply = Reply::new(
                    421,
                    status("4.3.2"),
                    "Service shutting down, try again later",
                );
                conn.write_all(&reply.to_bytes()).await?;
                return Ok(());
            }
            shutdown_deadline = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
        }
        let wait = if session.in_data() {
            shared.data_timeout
        } else {
            shared.command_timeout
        };
        let deadline = match shutdown_deadline {
            Some(d) => d.min(tokio::time::Instant::now() + wait),
            None => tokio::time::Instant::now() + wait,
        };
        tokio::select! {
            read = tokio::time::timeout_at(deadline, conn.read(&mut buf)) => match read {
                Err(_) => {
                    tracing::info!(client = %ip, reason = "timeout", "session closed");
                    let reply = Reply::new(421, status("4.4.2"), "Timeout exceeded, closing connection");
                    conn.write_all(&reply.to_bytes()).await?;
                    return Ok(());
                }
                Ok(Ok(0)) => {
                    session.eof();
                }
                Ok(Ok(n)) => session.feed(&buf[..n]),
                Ok(Err(e)) => return Err(e),
            },
            _ = stop.changed(), if shutdown_deadline.is_none() => {}
        }
        if session.is_closed() && session.buffered() == 0 {
            // eof(): drain what the session still says, then end.
            while let Some(Event::Reply(reply)) = session.next_event() {
                out.extend_from_slice(&reply.to_bytes());
            }
            let _ = send(conn, &out, &mut accepted, ip).await;
            return Ok(());
        }
    }
}

async fn accept_message(
    shared: &Arc<Shared>,
    ip: IpAddr,
    session: &ServerSession,
    message: mx_smtp::Message,
) -> (MessageDecision, Option<Accepted>) {
    // SMTP smuggling through NUL: mx-smtp refuses bare CR and LF but lets NUL octets through,
    // so `CRLF NUL . CRLF` followed by commands was stored as one message. Relayed verbatim,
    // it would end early at a next hop that drops NUL octets (some do), and the rest would
    // run there as a second transaction. NUL has no place in a message without BINARYMIME
    // (RFC 5322 §3.5, RFC 6152 §2), which is not offered: refused whole, before the spool.
    if message.body.contains(&0) {
        tracing::info!(client = %ip, reason = "nul_octet", "message refused");
        let reply = Reply::new(
            550,
            status("5.6.0"),
            "Message refused: it contains a NUL octet",
        );
        return (MessageDecision::Rejected(reply), None);
    }
    let env = &message.envelope;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let received = trace::received(&trace::Arrival {
        helo: Some(env.helo.as_str())
            .filter(|h| !h.is_empty())
            .or(session.helo()),
        client_ip: ip,
        hostname: &shared.hostname,
        tls: env.tls,
        authenticated: env.authenticated.is_some(),
        single_recipient: (env.recipients.len() == 1).then(|| env.recipients[0].as_str()),
        unix_time: now,
    });
    let mut body = Vec::with_capacity(received.len() + message.body.len());
    body.extend_from_slice(received.as_bytes());
    body.extend_from_slice(&message.body);
    let mut envelope = Envelope::new(
        env.mail_from.clone().unwrap_or_default(),
        env.recipients.clone(),
    );
    envelope.received_at = now;
    envelope.client_ip = Some(ip);
    envelope.helo = Some(env.helo.clone()).filter(|h| !h.is_empty());
    envelope.auth_user = env.authenticated.clone();
    envelope.body_8bit = matches!(env.body_type, mx_smtp::BodyType::EightBitMime);
    envelope.smtputf8 = env.smtputf8;
    let from = envelope.mail_from.clone();
    let rcpts = envelope.recipients.len();
    // Durable before the reply: the committer completes us only after the flushes that
    // cover this message (shared with the other messages of its batch) returned.
    let (done, stored) = tokio::sync::oneshot::channel();
    let body = Arc::new(body);
    let size = body.len() as u64;
    let mut queued = envelope.clone();
    // The engine gets its copy before the message is visible in queue/ (see
    // `Engine::deliver_message`); it is taken back below if the store fails.
    let (fresh, handed) = (shared.fresh.clone(), body.clone());
    let handed_id = Arc::new(std::sync::OnceLock::<QueueId>::new());
    let named_id = handed_id.clone();
    let named: Named = Box::new(move |id| {
        // The spool set these in its copy; the engine's must match.
        queued.id = id.clone();
        queued.size = size;
        fresh.insert(queued, handed);
        let _ = named_id.set(id.clone());
    });
    shared.committer.store_named(
        envelope,
        body,
        named,
        Box::new(move |result| {
            let _ = done.send(result);
        }),
    );
    let stored = stored.await;
    if !matches!(stored, Ok(Ok(_)))
        && let Some(id) = handed_id.get()
    {
        shared.fresh.withdraw(id);
    }
    let decision = match stored {
        Ok(Ok(id)) => {
            let _ = shared.local.send(id.clone());
            let decision = MessageDecision::Accepted {
                queue_id: id.to_string(),
            };
            let accepted = Accepted {
                id,
                from,
                recipients: rcpts,
                size: message.body.len(),
                ended: Instant::now(),
            };
            return (decision, Some(accepted));
        }
        Ok(Err(SpoolError::NoSpace)) => {
            tracing::warn!(client = %ip, from = %from, reason = "no_space", "message refused");
            metrics::message_refused("no_space");
            MessageDecision::Rejected(Reply::new(
                452,
                status("4.3.1"),
                "Insufficient system storage, try again later",
            ))
        }
        Ok(Err(e)) => {
            tracing::error!(client = %ip, from = %from, error = %e, reason = "spool_error", "message refused");
            metrics::message_refused("spool_error");
            MessageDecision::Rejected(Reply::new(
                451,
                status("4.3.0"),
                "Local error storing the message, try again later",
            ))
        }
        Err(e) => {
            tracing::error!(client = %ip, error = %e, reason = "spool_task", "message refused");
            MessageDecision::Rejected(Reply::new(
                451,
                status("4.3.0"),
                "Local error, try again later",
            ))
        }
    };
    (decision, None)
}

fn status(text: &str) -> Option<EnhancedStatus> {
    let mut parts = text.split('.').map(|p| p.parse::<u16>().ok());
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Some(class)), Some(Some(subject)), Some(Some(detail))) => Some(EnhancedStatus::new(
            u8::try_from(class).ok()?,
            subject,
            detail,
        )),
        _ => None,
    }
}

fn reply_of(refusal: &Refusal) -> Reply {
    Reply::new(refusal.code, status(refusal.enhanced), &refusal.text)
}

/// The delivery engine as the configuration asks for it.
/// It shares the server's spool committer, policy, users, name, wake-up channel and
/// hand-over of fresh messages.
fn engine(config: &Config, spool: Arc<FileSpool>, shared: &Shared) -> Result<Engine, RelayError> {
    let hostname = shared.hostname.clone();
    let d = &config.delivery;
    let nameservers = if config.dns.nameservers.is_empty() {
        Nameservers::System
    } else {
        Nameservers::Explicit(config.dns.nameservers.clone())
    };
    let options = ClientOptions {
        timeout: Duration::from_secs_f64(config.dns.timeout_secs.unwrap_or(5.0)),
        ..ClientOptions::default()
    };
    let dns = HickoryClient::new(&nameservers, &options).map_err(|e| RelayError::Config {
        label: "dns".into(),
        message: e.to_string(),
    })?;
    let routing = config
        .routing_policy()
        .map_err(|message| RelayError::Config {
            label: "routing".into(),
            message,
        })?;
    let negative_ttl_cap = routing.negative_ttl_cap;
    let mut router = Router::new(Arc::new(dns), routing)
        .with_cache(Arc::new(RouteCache::new(100_000)))
        .with_address_cache(Arc::new(AddressCache::new(10_000, negative_ttl_cap)));
    if let Some(seed) = config.routing.shuffle_seed {
        router = router.with_seed(seed);
    }
    let client = ClientConfig {
        helo_name: hostname.clone(),
        starttls: starttls_policy(d.starttls == "never"),
        timeouts: Timeouts {
            greeting: Duration::from_secs(d.greeting_timeout_secs),
            ehlo: Duration::from_secs(d.command_timeout_secs),
            starttls: Duration::from_secs(d.command_timeout_secs),
            mail: Duration::from_secs(d.command_timeout_secs),
            rcpt: Duration::from_secs(d.command_timeout_secs),
            data_init: Duration::from_secs(d.command_timeout_secs),
            data_block: Duration::from_secs(d.data_timeout_secs),
            data_termination: Duration::from_secs(d.data_end_timeout_secs),
            rset: Duration::from_secs(d.command_timeout_secs),
            quit: Duration::from_secs(d.command_timeout_secs),
        },
        ..ClientConfig::default()
    };
    let transport = SmtpTransport::new(client, Duration::from_secs(d.connect_timeout_secs))?
        .with_limits(d.pool_limits());
    Ok(Engine {
        spool,
        committer: shared.committer.clone(),
        router: Arc::new(router),
        transport: Arc::new(transport),
        schedule: d.schedule(),
        policy: shared.policy.clone(),
        users: shared.users.clone(),
        maildir_root: config.server.maildir_root.clone(),
        hostname,
        concurrency: d.concurrency,
        in_flight: Default::default(),
        wake: shared.local.clone(),
        fresh: shared.fresh.clone(),
    })
}

/// A lab-switch status as the `&'static str` a [`Refusal`] carries: the few distinct codes
/// a lab sets are interned once, so memory stays bounded.
fn leak_status(text: &str) -> &'static str {
    static SEEN: std::sync::OnceLock<Mutex<std::collections::HashSet<&'static str>>> =
        std::sync::OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(s) = seen.get(text) {
        return s;
    }
    let s: &'static str = Box::leak(text.to_string().into_boxed_str());
    seen.insert(s);
    s
}
