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
    dsn::build(&DsnInput {
        reporting_mta: hostname,
        original_envelope_id: None,
        arrival_date: envelope.received_at,
        now,
        original_sender: &envelope.mail_from,
        recipients,
        original_message: body,
        kind: DsnKind::Failed,
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

pub use transport::SmtpTransport;

mod transport {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use mx_core::Attempt;
    use mx_dns::BoxFuture;
    use mx_smtp::client::{Action, Phase, StartTls};
    use mx_smtp::{ClientConfig, ClientSession, DeliveryStatus, OutboundMessage};
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;

    use super::reply_line;
    use crate::outbound::schedule::RecipientResult;
    use crate::outbound::{AttemptOutcome, Delivery, Transport};

    /// Delivery over SMTP with mx-smtp's client session: one connection per attempt.
    pub struct SmtpTransport {
        pub client: ClientConfig,
        pub connect_timeout: Duration,
        tls: TlsConnector,
    }

    impl SmtpTransport {
        pub fn new(
            client: ClientConfig,
            connect_timeout: Duration,
        ) -> Result<Self, crate::RelayError> {
            let tls = opportunistic_tls().map_err(|e| crate::RelayError::Tls(e.to_string()))?;
            Ok(SmtpTransport {
                client,
                connect_timeout,
                tls: TlsConnector::from(tls),
            })
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
    }

    impl SmtpTransport {
        async fn run(&self, attempt: &Attempt, delivery: &Delivery<'_>) -> AttemptOutcome {
            let addr = SocketAddr::new(attempt.ip, attempt.port);
            let stream =
                match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        return AttemptOutcome::NextAttempt {
                            reason: format!("451 4.4.1 connect to {addr}: {e}"),
                        };
                    }
                    Err(_) => {
                        return AttemptOutcome::NextAttempt {
                            reason: format!("451 4.4.1 connect to {addr}: timed out"),
                        };
                    }
                };
            let _ = stream.set_nodelay(true);
            let mut conn = Conn::Plain(stream);
            let mut session = ClientSession::new(self.client.clone());
            let mut message = Some(OutboundMessage {
                mail_from: delivery.mail_from.to_string(),
                recipients: delivery.recipients.to_vec(),
                body: delivery.body.to_vec(),
                body_8bit: delivery.body_8bit,
                smtputf8: delivery.smtputf8,
                size: delivery.body.len() as u64,
            });
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
                        match tokio::time::timeout(limit, self.handshake(&mut conn, attempt)).await
                        {
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
            let Some(done) = outcome else {
                return AttemptOutcome::NextAttempt {
                    reason: reply_line(&closed.reply),
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

        async fn handshake(&self, conn: &mut Conn, attempt: &Attempt) -> std::io::Result<()> {
            let Conn::Plain(tcp) = std::mem::replace(conn, Conn::Closed) else {
                return Err(std::io::Error::other("not a plain connection"));
            };
            let name = ServerName::try_from(attempt.host.clone())
                .unwrap_or_else(|_| ServerName::IpAddress(attempt.ip.into()));
            let tls = self.tls.connect(name, tcp).await?;
            *conn = Conn::Tls(Box::new(tls));
            Ok(())
        }
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

    /// Opportunistic STARTTLS between MTAs: encrypt, but accept any certificate, as MTAs do
    /// without MTA-STS or DANE (RFC 7435). Refusing unverifiable certificates here would
    /// only push the mail back to plain text.
    fn opportunistic_tls() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    #[derive(Debug)]
    struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

    impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &rustls::pki_types::CertificateDer<'_>,
            _intermediates: &[rustls::pki_types::CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
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
