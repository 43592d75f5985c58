//! The SMTP side of delivery: the transport over mx-smtp's client session, and bounces.

use mx_smtp::dsn::{self, Action, DsnInput, DsnKind, RecipientReport};
use mx_smtp::{EnhancedStatus, Reply};
use mx_spool::Envelope;

use super::schedule::Failed;

/// Read back a reply we recorded as text (`550 5.1.1 User unknown`).
pub fn parse_reply(text: &str) -> Reply {
    let code = text
        .get(..3)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (200..600).contains(c))
        .unwrap_or(554);
    let rest = text.get(3..).unwrap_or("").trim_start();
    let (status, text) = match rest.split_once(' ') {
        Some((first, tail)) => match parse_status(first) {
            Some(s) => (Some(s), tail),
            None => (None, rest),
        },
        None => match parse_status(rest) {
            Some(s) => (Some(s), ""),
            None => (None, rest),
        },
    };
    Reply::new(code, status, text)
}

pub fn parse_status(text: &str) -> Option<EnhancedStatus> {
    let mut parts = text.split('.');
    let class = parts.next()?.parse::<u8>().ok()?;
    let subject = parts.next()?.parse::<u16>().ok()?;
    let detail = parts.next()?.parse::<u16>().ok()?;
    if parts.next().is_some() {
        return None;
    }
    let status = EnhancedStatus::new(class, subject, detail);
    status.is_valid().then_some(status)
}

/// The RFC 3464 bounce for `failed` recipients of a message (None for the null sender).
pub fn build_bounce(
    envelope: &Envelope,
    body: &[u8],
    failed: &[Failed],
    hostname: &str,
    now: u64,
) -> Option<dsn::Dsn> {
    let recipients = failed
        .iter()
        .map(|f| {
            let reply = parse_reply(&f.reply);
            RecipientReport {
                final_recipient: f.address.clone(),
                action: Action::Failed,
                status: dsn::status_for_reply(&reply, "5.0.0"),
                remote_mta: None,
                diagnostic: Some(reply),
                last_attempt: Some(now),
                will_retry_until: None,
            }
        })
        .collect();
    build_dsn(envelope, body, recipients, DsnKind::Failed, hostname, now)
}

/// A DSN about `recipients` of a queued message, from us (`hostname`), to its sender.
pub fn build_dsn(
    envelope: &Envelope,
    body: &[u8],
    recipients: Vec<RecipientReport>,
    kind: DsnKind,
    hostname: &str,
    now: u64,
) -> Option<dsn::Dsn> {
    dsn::build(&DsnInput {
        reporting_mta: hostname,
        original_envelope_id: None,
        arrival_date: envelope.received_at,
        now,
        original_sender: &envelope.mail_from,
        recipients,
        original_message: body,
        kind,
        message_id_domain: hostname,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_back() {
        let r = parse_reply("550 5.1.1 User unknown");
        assert_eq!(r.code(), 550);
        assert_eq!(r.status().map(|s| s.to_string()), Some("5.1.1".into()));
        assert_eq!(r.text(), "User unknown");
        let r = parse_reply("451 try later");
        assert_eq!(r.code(), 451);
        assert!(r.status().is_none());
        assert_eq!(parse_reply("garbage").code(), 554);
    }

    #[test]
    fn bounces_go_to_the_sender_from_the_null_sender() {
        let env = Envelope::new("alice@example.com", vec!["x@remote.example".into()]);
        let failed = vec![Failed {
            address: "x@remote.example".into(),
            reply: "550 5.1.1 No such user".into(),
        }];
        let dsn =
            build_bounce(&env, b"Subject: hi\r\n\r\nbody\r\n", &failed, "mx.test", 0).unwrap();
        assert_eq!(dsn.recipient, "alice@example.com");
        assert_eq!(dsn.mail_from, "");
        let text = String::from_utf8(dsn.message).unwrap();
        assert!(text.contains("Status: 5.1.1"));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 No such user"));
        assert!(text.contains("Subject: hi"));
        let null = Envelope::new("", vec!["x@remote.example".into()]);
        assert!(build_bounce(&null, b"", &failed, "mx.test", 0).is_none());
    }
}

/// `550 5.1.1 No such user`: a reply as one line of text for logs and the spool.
pub fn reply_line(reply: &Reply) -> String {
    match reply.status() {
        Some(status) => format!("{} {} {}", reply.code(), status, reply.text()),
        None => format!("{} {}", reply.code(), reply.text()),
    }
    .trim_end()
    .to_string()
}

pub use super::pool::{PoolLimits, RequireTls};
pub use transport::SmtpTransport;

mod transport {
    use std::collections::{HashMap, HashSet};
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use mx_core::Attempt;
    use mx_dns::BoxFuture;
    use mx_smtp::client::{Action, ConnectionOutcome, MessageOutcome, Phase, StartTls};
    use mx_smtp::{ClientConfig, ClientSession, DeliveryStatus, OutboundMessage};
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;

    use super::reply_line;
    use crate::outbound::pool::{Idle, Key, Lease, Pool, PoolLimits, RequireTls, Slot};
    use crate::outbound::schedule::RecipientResult;
    use crate::outbound::{AttemptOutcome, Delivery, Transport};

    /// Delivery over SMTP with mx-smtp's client session. A connection that has delivered a
    /// message is kept idle for the next message to the same destination (see
    /// [`PoolLimits`]), and the number of open connections is bounded.
    pub struct SmtpTransport {
        pub client: ClientConfig,
        pub connect_timeout: Duration,
        tls: TlsConnector,
        pool: Pool<Parked>,
        /// Recipient domains that get verified STARTTLS only (`require_tls_domains`).
        require_tls: HashSet<String>,
        /// The verifying connector for those domains, or why there is none (no usable
        /// roots): then their mail waits rather than going out unverified.
        verified_tls: Result<TlsConnector, String>,
        /// Addresses whose last connect was refused or timed out, and when
        /// (`delivery.unreachable_memory_secs`).
        unreachable: Mutex<HashMap<SocketAddr, Instant>>,
        unreachable_memory: Duration,
    }

    /// Remembered addresses beyond which expired ones are dropped at the next failure.
    const UNREACHABLE_PRUNE: usize = 10_000;

    /// An idle session and the stream it runs over.
    struct Parked {
        session: ClientSession,
        conn: Conn,
    }

    /// The most an idle session's QUIT may take: politeness, not delivery, so a server slow
    /// to answer it must not hold up an attempt or the shutdown.
    const QUIT_LIMIT: Duration = Duration::from_secs(5);

    impl SmtpTransport {
        pub fn new(
            client: ClientConfig,
            connect_timeout: Duration,
        ) -> Result<Self, crate::RelayError> {
            // Opportunistic STARTTLS between MTAs: encrypt, but accept any certificate, as
            // MTAs do without MTA-STS or DANE (RFC 7435). Refusing unverifiable certificates
            // here would only push the mail back to plain text.
            let tls =
                mx_tls::accept_any_config().map_err(|e| crate::RelayError::Tls(e.to_string()))?;
            Ok(SmtpTransport {
                client,
                connect_timeout,
                tls: TlsConnector::from(tls),
                pool: Pool::new(PoolLimits::default()),
                require_tls: HashSet::new(),
                verified_tls: Err("no require_tls_domains".into()),
                unreachable: Mutex::new(HashMap::new()),
                unreachable_memory: PoolLimits::default().unreachable_memory,
            })
        }

        /// The same transport with other connection limits and TLS policy. The roots for
        /// verified TLS are loaded here; when that fails, the error is logged and mail to
        /// `require_tls_domains` is deferred (fail closed) rather than refused at start.
        pub fn with_limits(mut self, limits: PoolLimits) -> Self {
            let RequireTls { domains, ca_file } = &limits.require_tls;
            self.require_tls = domains.iter().cloned().collect();
            self.verified_tls = if domains.is_empty() {
                Err("no require_tls_domains".into())
            } else {
                verified_tls(ca_file.as_deref()).map(TlsConnector::from)
            };
            if let Err(e) = &self.verified_tls
                && !domains.is_empty()
            {
                tracing::error!(error = %e, "no trust anchors for require_tls_domains: their mail will be deferred");
            }
            self.unreachable_memory = limits.unreachable_memory;
            self.pool = Pool::new(limits);
            self
        }

        /// Remember (or forget) that a connect to `addr` failed.
        fn connect_failed(&self, addr: SocketAddr, failed: bool) {
            if self.unreachable_memory.is_zero() {
                return;
            }
            let mut map = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
            if !failed {
                map.remove(&addr);
                return;
            }
            if map.len() >= UNREACHABLE_PRUNE {
                let memory = self.unreachable_memory;
                map.retain(|_, since| since.elapsed() < memory);
            }
            map.insert(addr, Instant::now());
        }

        /// Whether mail to the recipients of `delivery` must go over verified TLS.
        ///
        /// `Delivery` carries no domain: the engine groups recipients by domain, so every
        /// recipient of one delivery shares the domain of the first.
        fn requires_tls(&self, delivery: &Delivery<'_>) -> bool {
            if self.require_tls.is_empty() {
                return false;
            }
            delivery
                .recipients
                .first()
                .and_then(|r| r.rsplit_once('@'))
                .and_then(|(_, d)| mx_core::normalize_domain(d).ok())
                .is_some_and(|d| self.require_tls.contains(&d))
        }

        /// Close every idle session (with QUIT), as delivery stops.
        pub async fn close_idle(&self) {
            close_all(self.pool.drain(true), &self.client).await;
        }

        /// Close the idle sessions past their idle time.
        pub async fn sweep(&self) {
            close_all(self.pool.drain(false), &self.client).await;
        }
    }

    impl Drop for SmtpTransport {
        fn drop(&mut self) {
            // Parked sessions hold slots that point back at the pool's limits: emptying the
            // pool here breaks that cycle even when close_idle was never called.
            drop(self.pool.drain(true));
        }
    }

    enum Conn {
        Plain(TcpStream),
        Tls(Box<TlsStream<TcpStream>>),
        Closed,
    }

    impl Transport for SmtpTransport {
        fn attempt<'a>(
            &'a self,
            attempt: &'a Attempt,
            delivery: &'a Delivery<'a>,
        ) -> BoxFuture<'a, AttemptOutcome> {
            Box::pin(self.run(attempt, delivery))
        }

        fn sweep(&self) -> BoxFuture<'_, ()> {
            Box::pin(SmtpTransport::sweep(self))
        }

        fn unreachable_since(&self, attempt: &Attempt) -> Option<Instant> {
            if self.unreachable_memory.is_zero() {
                return None;
            }
            let addr = SocketAddr::new(attempt.ip, attempt.port);
            let map = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&addr)
                .copied()
                .filter(|since| since.elapsed() < self.unreachable_memory)
        }

        fn close_idle(&self) -> BoxFuture<'_, ()> {
            Box::pin(SmtpTransport::close_idle(self))
        }
    }

    /// How one message over one session ended.
    struct Exchange {
        done: Option<MessageOutcome>,
        closed: Option<ConnectionOutcome>,
        /// The session, still usable for another message.
        idle: Option<Parked>,
    }

    impl SmtpTransport {
        async fn run(&self, attempt: &Attempt, delivery: &Delivery<'_>) -> AttemptOutcome {
            let required = self.requires_tls(delivery);
            if required && let Err(e) = &self.verified_tls {
                return AttemptOutcome::NextAttempt {
                    reason: format!("451 4.7.5 TLS required but no trust anchors: {e}"),
                };
            }
            // Required TLS overrides `starttls = "never"`: the domain asked for it.
            let key = Key {
                ip: attempt.ip,
                port: attempt.port,
                tls: if required {
                    StartTls::Required
                } else {
                    self.client.starttls
                },
                verified: required.then(|| Arc::from(host_name(&attempt.host))),
            };
            // Built when sent rather than cloned: a retry over a fresh connection needs its
            // own copy only when it happens.
            let message = || OutboundMessage {
                mail_from: delivery.mail_from.to_string(),
                recipients: delivery.recipients.to_vec(),
                body: delivery.body.to_vec(),
                body_8bit: delivery.body_8bit,
                smtputf8: delivery.smtputf8,
                size: delivery.body.len() as u64,
            };
            let slot = match self.lease(&key, true).await {
                Lease::Fresh(slot) => slot,
                Lease::Pooled(idle) => {
                    let Idle {
                        conn: Parked { session, conn },
                        slot,
                        messages,
                        ..
                    } = idle;
                    metrics::counter!("mxroute_delivery_connections_total", "reused" => "true")
                        .increment(1);
                    tracing::debug!(ip = %key.ip, port = key.port, messages, "reusing an idle connection");
                    let ex = self
                        .exchange(session, conn, message(), attempt, &key, messages)
                        .await;
                    if !died_before_anything(&ex) {
                        return self.finish(key, ex, slot, messages + 1);
                    }
                    // A parked session that turns out dead says nothing about the exchanger
                    // (servers close idle connections as they please): once more, fresh.
                    // Its siblings are most likely dead as well.
                    tracing::debug!(ip = %key.ip, port = key.port, "idle connection was dead; reconnecting");
                    drop(slot);
                    drop(self.pool.take_all(&key));
                    match self.lease(&key, false).await {
                        Lease::Fresh(slot) => slot,
                        // Not asked for; a slot it holds is as good as ours.
                        Lease::Pooled(idle) => idle.slot,
                    }
                }
            };
            let addr = SocketAddr::new(attempt.ip, attempt.port);
            let stream =
                match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => {
                        self.connect_failed(addr, false);
                        s
                    }
                    Ok(Err(e)) => {
                        self.connect_failed(addr, true);
                        return AttemptOutcome::NextAttempt {
                            reason: format!("451 4.4.1 connect to {addr}: {e}"),
                        };
                    }
                    Err(_) => {
                        self.connect_failed(addr, true);
                        return AttemptOutcome::NextAttempt {
                            reason: format!("451 4.4.1 connect to {addr}: timed out"),
                        };
                    }
                };
            let _ = stream.set_nodelay(true);
            metrics::counter!("mxroute_delivery_connections_total", "reused" => "false")
                .increment(1);
            let mut client = self.client.clone();
            client.starttls = key.tls;
            let session = ClientSession::new(client);
            let ex = self
                .exchange(session, Conn::Plain(stream), message(), attempt, &key, 0)
                .await;
            self.finish(key, ex, slot, 1)
        }

        /// A slot or a parked session, closing (with QUIT) the idle sessions that must make
        /// room on the way.
        async fn lease(&self, key: &Key, pooled: bool) -> Lease<Parked> {
            loop {
                match self.pool.lease(key, pooled).await {
                    Ok(Lease::Pooled(mut idle)) => {
                        if alive(&mut idle.conn.conn).await {
                            return Lease::Pooled(idle);
                        }
                        // Closed by the server while parked: not worth a QUIT.
                        tracing::debug!(ip = %key.ip, port = key.port, "idle connection closed by the server");
                    }
                    Ok(fresh) => return fresh,
                    Err(victims) => close_all(victims, &self.client).await,
                }
            }
        }

        /// Park the session if it may carry another message, and judge the attempt.
        fn finish(&self, key: Key, ex: Exchange, slot: Slot, messages: usize) -> AttemptOutcome {
            // exchange hands a session back only when it may be reused (it says QUIT
            // otherwise), so parking needs no second look at the limits.
            if let Some(idle) = ex.idle {
                self.pool.park(key, idle, slot, messages);
            }
            judge(ex.done, ex.closed)
        }

        /// Send `message` over a session, up to its outcome. The session is handed back
        /// idle when it can carry another message (`sent` messages went over it before).
        async fn exchange(
            &self,
            mut session: ClientSession,
            mut conn: Conn,
            message: OutboundMessage,
            attempt: &Attempt,
            key: &Key,
            sent: usize,
        ) -> Exchange {
            let mut message = Some(message);
            let mut outcome = None;
            let mut buf = vec![0u8; 16 * 1024];
            let closed = loop {
                match session.next_action() {
                    Action::Send { bytes, timeout } => {
                        let limit = self.client.timeouts.get(timeout);
                        match tokio::time::timeout(limit, write(&mut conn, &bytes)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => session.io_error(&e.to_string()),
                            Err(_) => session.timed_out(),
                        }
                    }
                    Action::Receive { timeout } => {
                        let limit = self.client.timeouts.get(timeout);
                        match tokio::time::timeout(limit, read(&mut conn, &mut buf)).await {
                            Ok(Ok(0)) => session.eof(),
                            Ok(Ok(n)) => session.feed(&buf[..n]),
                            Ok(Err(e)) => session.io_error(&e.to_string()),
                            Err(_) => session.timed_out(),
                        }
                    }
                    Action::StartTls => {
                        let limit = self.client.timeouts.get(Phase::StartTls);
                        let handshake = self.handshake(&mut conn, attempt, key);
                        match tokio::time::timeout(limit, handshake).await {
                            Ok(Ok(())) => {
                                if session.tls_started().is_err() {
                                    session.tls_failed("session refused the TLS start");
                                }
                            }
                            Ok(Err(e)) => session.tls_failed(&e.to_string()),
                            Err(_) => session.tls_failed("handshake timed out"),
                        }
                    }
                    Action::Ready => {
                        let step = match message.take() {
                            Some(m) => session.send_message(m),
                            // Ready again after the message: the session is idle and sound.
                            None if outcome.is_some() && self.pool.reusable(sent + 1) => {
                                return Exchange {
                                    done: outcome,
                                    closed: None,
                                    idle: Some(Parked { session, conn }),
                                };
                            }
                            None => session.quit(),
                        };
                        if step.is_err() {
                            let _ = session.quit();
                        }
                    }
                    Action::MessageDone(done) => outcome = Some(done),
                    Action::Close(closed) => break closed,
                }
            };
            Exchange {
                done: outcome,
                closed: Some(closed),
                idle: None,
            }
        }

        async fn handshake(
            &self,
            conn: &mut Conn,
            attempt: &Attempt,
            key: &Key,
        ) -> std::io::Result<()> {
            let Conn::Plain(tcp) = std::mem::replace(conn, Conn::Closed) else {
                return Err(std::io::Error::other("not a plain connection"));
            };
            let tls = match &key.verified {
                // Verified: the certificate must be valid for the MX host name itself.
                Some(host) => {
                    let connector = self
                        .verified_tls
                        .as_ref()
                        .map_err(|e| std::io::Error::other(e.clone()))?;
                    let name = ServerName::try_from(host.to_string()).map_err(|e| {
                        std::io::Error::other(format!("cannot verify {host:?}: {e}"))
                    })?;
                    connector.connect(name, tcp).await?
                }
                None => {
                    let name = ServerName::try_from(attempt.host.clone())
                        .unwrap_or_else(|_| ServerName::IpAddress(attempt.ip.into()));
                    self.tls.connect(name, tcp).await?
                }
            };
            *conn = Conn::Tls(Box::new(tls));
            Ok(())
        }
    }

    /// What an attempt came to, from the message's outcome (None: the connection ended
    /// before the message was through) and the connection's.
    fn judge(done: Option<MessageOutcome>, closed: Option<ConnectionOutcome>) -> AttemptOutcome {
        let Some(done) = done else {
            return AttemptOutcome::NextAttempt {
                reason: closed.map_or_else(
                    || "451 4.4.2 connection lost".to_string(),
                    |c| reply_line(&c.reply),
                ),
            };
        };
        // Nothing was delivered and nothing refused for good, and the failure belongs to
        // this exchanger rather than to the recipients: a refusal before any recipient
        // was judged (greeting, EHLO, MAIL), a 421 (the server is going away), or a
        // failure of the connection itself (timeout, reset, no reply after the final
        // dot). The next exchanger is asked in the same run (routing contract).
        let exchanger_failed = !done.recipients.is_empty()
            && done.recipients.iter().all(|r| {
                r.status == DeliveryStatus::Temporary
                    && (r.reply.code() == 421
                        || !r.remote
                        || matches!(
                            r.phase,
                            Phase::Greeting | Phase::Ehlo | Phase::Mail | Phase::StartTls
                        ))
            });
        if exchanger_failed {
            return AttemptOutcome::NextAttempt {
                reason: reply_line(&done.recipients[0].reply),
            };
        }
        AttemptOutcome::Done(
            done.recipients
                .iter()
                .map(|r| {
                    let reply = reply_line(&r.reply);
                    match r.status {
                        DeliveryStatus::Delivered => RecipientResult::Delivered { reply },
                        DeliveryStatus::Temporary => RecipientResult::Temporary { reply },
                        DeliveryStatus::Permanent => RecipientResult::Permanent { reply },
                    }
                })
                .collect(),
        )
    }

    /// Whether a reused session failed before anything was decided for the message: the
    /// server had closed it, or closes it (421) on the next MAIL. Nothing reached a
    /// recipient then, so trying again over a fresh connection cannot duplicate mail. A
    /// loss after the final dot is not this case: the message may have been delivered.
    fn died_before_anything(ex: &Exchange) -> bool {
        let Some(done) = &ex.done else {
            return true;
        };
        !done.recipients.is_empty()
            && done.recipients.iter().all(|r| {
                r.status == DeliveryStatus::Temporary
                    && (r.reply.code() == 421 || !r.remote)
                    && matches!(
                        r.phase,
                        Phase::Mail | Phase::Rset | Phase::Rcpt | Phase::DataInit
                    )
            })
    }

    /// Whether an idle connection is still open: nothing to read right now. A server that
    /// closed it (EOF) or sent anything unasked (typically a 421 before closing) is done.
    async fn alive(conn: &mut Conn) -> bool {
        let mut probe = [0u8; 512];
        // A zero timeout polls the read once: Pending (nothing there) times out at once.
        tokio::time::timeout(Duration::ZERO, read(conn, &mut probe))
            .await
            .is_err()
    }

    /// Say QUIT over an idle session and close it, within QUIT_LIMIT.
    async fn close(parked: Parked, client: &ClientConfig) {
        let Parked {
            mut session,
            mut conn,
        } = parked;
        if session.quit().is_err() {
            return;
        }
        let mut buf = [0u8; 1024];
        let polite = async {
            loop {
                match session.next_action() {
                    Action::Send { bytes, timeout } => {
                        let limit = client.timeouts.get(timeout);
                        match tokio::time::timeout(limit, write(&mut conn, &bytes)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => session.io_error(&e.to_string()),
                            Err(_) => session.timed_out(),
                        }
                    }
                    Action::Receive { timeout } => {
                        let limit = client.timeouts.get(timeout);
                        match tokio::time::timeout(limit, read(&mut conn, &mut buf)).await {
                            Ok(Ok(0)) => session.eof(),
                            Ok(Ok(n)) => session.feed(&buf[..n]),
                            Ok(Err(e)) => session.io_error(&e.to_string()),
                            Err(_) => session.timed_out(),
                        }
                    }
                    Action::Close(_) => break,
                    // Nothing else can follow a QUIT; end rather than loop.
                    Action::StartTls | Action::Ready | Action::MessageDone(_) => break,
                }
            }
        };
        let _ = tokio::time::timeout(QUIT_LIMIT, polite).await;
    }

    /// Close idle sessions side by side, so one slow server does not hold up the rest.
    async fn close_all(idle: Vec<Idle<Parked>>, client: &ClientConfig) {
        if idle.is_empty() {
            return;
        }
        let mut closing = tokio::task::JoinSet::new();
        for i in idle {
            let client = client.clone();
            closing.spawn(async move {
                let Idle { conn, slot, .. } = i;
                close(conn, &client).await;
                drop(slot);
            });
        }
        while closing.join_next().await.is_some() {}
    }

    async fn write(conn: &mut Conn, bytes: &[u8]) -> std::io::Result<()> {
        match conn {
            Conn::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Conn::Closed => Err(std::io::Error::other("connection closed")),
        }
    }

    async fn read(conn: &mut Conn, buf: &mut [u8]) -> std::io::Result<usize> {
        match conn {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Tls(s) => s.read(buf).await,
            Conn::Closed => Ok(0),
        }
    }

    /// The MX host name as certificates name it: lower case, no trailing dot, no brackets
    /// around an address literal.
    fn host_name(host: &str) -> String {
        let host = host.trim().trim_end_matches('.');
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        host.to_ascii_lowercase()
    }

    /// Verified STARTTLS for `require_tls_domains`: WebPKI over the system's CA bundle and
    /// the certificates of `ca_file`.
    fn verified_tls(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
        let roots = mx_tls::roots(ca_file).map_err(|e| format!("delivery.tls_ca_file {e}"))?;
        mx_tls::verified_config(Arc::new(roots)).map_err(|e| e.to_string())
    }

    /// Keep the StartTls import meaningful for callers building configs.
    pub fn starttls_policy(never: bool) -> StartTls {
        if never {
            StartTls::Never
        } else {
            StartTls::Opportunistic
        }
    }
}

pub use transport::starttls_policy;
