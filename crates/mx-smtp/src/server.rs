//! The server session: bytes in, events out, decisions back in.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smtp_proto::{
    AUTH_LOGIN, AUTH_PLAIN, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, MAIL_SMTPUTF8, MailFrom, RcptTo,
    Request,
};

use crate::address::{self, Path, PathError};
use crate::auth::{self, AuthMechanism, Credentials, Password, SaslError};
use crate::config::{PeerInfo, ServerConfig};
use crate::data::{BodySink, DotDecoder, Taint};
use crate::error::SmtpError;
use crate::reply::{Reply, std_replies as r};

/// RFC 4954 §4: the AUTH command line and each SASL response may be up to 12288 octets.
const AUTH_LINE_MAX: usize = 12288;

/// What the driver must do next. See the [crate docs](crate) for the loop that handles them.
///
/// Not `#[non_exhaustive]` on purpose: a new kind of event must break the driver's `match`,
/// since ignoring one could leave the session waiting for a decision forever.
#[derive(Debug)]
pub enum Event {
    /// Send these bytes ([`Reply::to_bytes`]).
    Reply(Reply),
    /// The `220` reply for STARTTLS has been queued just before this. Send it, do the TLS
    /// handshake, then call [`ServerSession::tls_started`]. Every octet that arrived after
    /// the STARTTLS line, and any fed before `tls_started`, has been thrown away
    /// (CVE-2011-0411).
    StartTls,
    /// Answer with [`ServerSession::recipient_decision`].
    CheckRecipient {
        /// The forward-path as written, source route removed; `postmaster` for a bare
        /// `<Postmaster>`, which the policy must accept (RFC 5321 §4.5.1). Never rewritten:
        /// `%` and `!` are the policy's business.
        address: String,
        /// The transaction's reverse-path; `None` is the null sender `<>`.
        sender: Option<String>,
    },
    /// Answer with [`ServerSession::auth_decision`].
    Authenticate {
        mechanism: AuthMechanism,
        /// The PLAIN authorization identity, when the client gave one that is not empty. A
        /// policy that does not support acting for another user must refuse when it differs
        /// from `username`.
        authzid: Option<String>,
        username: String,
        password: Password,
    },
    /// A complete, well-formed message. Answer with [`ServerSession::message_decision`].
    Message(Message),
    /// Close the connection. Nothing follows.
    Close,
}

/// The driver's answer to [`Event::CheckRecipient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptDecision {
    /// `250 2.1.5`.
    Accept,
    /// A 4xx or 5xx reply, sent as is (a 421 also closes the session).
    Reject(Reply),
}

/// The driver's answer to [`Event::Message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageDecision {
    /// The message is safely stored: `250 2.0.0 Ok: queued as <queue_id>`.
    Accepted { queue_id: String },
    /// A 4xx or 5xx reply, sent as is (a 421 also closes the session).
    Rejected(Reply),
}

/// The body type declared with `BODY=` on MAIL (RFC 6152).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyType {
    #[default]
    Unspecified,
    SevenBit,
    EightBitMime,
}

/// Everything about a message except its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The EHLO or HELO argument.
    pub helo: String,
    /// EHLO (true) or HELO.
    pub esmtp: bool,
    /// Received under TLS.
    pub tls: bool,
    /// The user name of a successful AUTH in this session.
    pub authenticated: Option<String>,
    /// The reverse-path; `None` is the null sender `<>`.
    pub mail_from: Option<String>,
    /// Accepted recipients, in order, as given in [`Event::CheckRecipient`].
    pub recipients: Vec<String>,
    pub body_type: BodyType,
    /// The SMTPUTF8 parameter was given on MAIL (RFC 6531).
    pub smtputf8: bool,
    /// The `SIZE=` declared on MAIL, if any.
    pub declared_size: Option<u64>,
    /// Sent with BDAT rather than DATA.
    pub chunked: bool,
}

impl Envelope {
    /// The `with` keyword for a Received header (RFC 5321 §4.4, RFC 3848).
    pub fn received_protocol(&self) -> &'static str {
        match (
            self.esmtp,
            self.tls,
            self.authenticated.is_some(),
            self.smtputf8,
        ) {
            (false, ..) => "SMTP",
            (true, false, false, false) => "ESMTP",
            (true, true, false, false) => "ESMTPS",
            (true, false, true, false) => "ESMTPA",
            (true, true, true, false) => "ESMTPSA",
            (true, false, false, true) => "UTF8SMTP",
            (true, true, false, true) => "UTF8SMTPS",
            (true, false, true, true) => "UTF8SMTPA",
            (true, true, true, true) => "UTF8SMTPSA",
        }
    }
}

/// A received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub envelope: Envelope,
    /// The content exactly as received: dot-unstuffed (DATA) or concatenated chunks (BDAT),
    /// CRLF line endings, without the final `.CRLF`.
    pub body: Vec<u8>,
}

#[derive(Debug)]
struct Helo {
    name: String,
    esmtp: bool,
}

#[derive(Debug)]
struct Transaction {
    mail_from: Option<String>,
    smtputf8: bool,
    body_type: BodyType,
    declared_size: Option<u64>,
    recipients: Vec<String>,
    /// RCPT commands that reached the policy, accepted or not: tells "no RCPT yet" (503)
    /// from "all recipients refused" (554, RFC 5321 §3.3 and RFC 2920 §3.1).
    rcpt_attempts: usize,
    /// The body so far once a BDAT has been accepted in this transaction.
    chunks: Option<BodySink>,
}

#[derive(Debug)]
enum AuthStep {
    PlainResponse,
    LoginUsername,
    LoginPassword { username: String },
}

/// What happens when a BDAT chunk has been read.
#[derive(Debug)]
enum ChunkEnd {
    /// Part of the transaction's body.
    Append { last: bool },
    /// Refused before reading: the chunk is read and dropped to stay in step with the
    /// client, then this reply is counted as an error.
    Refuse(Reply),
}

#[derive(Debug)]
enum Mode {
    Command,
    Auth(AuthStep),
    Data { decoder: DotDecoder, sink: BodySink },
    Chunk { remaining: u64, end: ChunkEnd },
    Closed,
}

#[derive(Debug)]
enum Pending {
    Recipient(String),
    Auth(String),
    Message,
    Tls,
}

impl Pending {
    fn name(pending: Option<&Pending>) -> &'static str {
        match pending {
            None => "nothing",
            Some(Pending::Recipient(_)) => "a recipient decision",
            Some(Pending::Auth(_)) => "an auth decision",
            Some(Pending::Message) => "a message decision",
            Some(Pending::Tls) => "tls_started",
        }
    }
}

/// One SMTP server session: a pure state machine, no I/O, no clock. See the crate docs.
#[derive(Debug)]
pub struct ServerSession {
    config: Arc<ServerConfig>,
    peer: PeerInfo,
    tls: bool,
    input: Vec<u8>,
    /// Octets of `input` already consumed.
    pos: usize,
    eof: bool,
    /// Inside an over-long line: dropping octets up to its LF.
    skipping_line: bool,
    mode: Mode,
    pending: Option<Pending>,
    out: VecDeque<Event>,
    helo: Option<Helo>,
    authenticated: Option<String>,
    tx: Option<Transaction>,
    errors: usize,
}

impl ServerSession {
    pub fn new(config: Arc<ServerConfig>, peer: PeerInfo) -> Self {
        Self {
            config,
            tls: peer.tls,
            peer,
            input: Vec::new(),
            pos: 0,
            eof: false,
            skipping_line: false,
            mode: Mode::Command,
            pending: None,
            out: VecDeque::new(),
            helo: None,
            authenticated: None,
            tx: None,
            errors: 0,
        }
    }

    /// `220 <hostname> ESMTP`, to send once the driver has decided to talk.
    pub fn greeting(&self) -> Reply {
        Reply::new(220, None, &format!("{} ESMTP", self.config.hostname))
    }

    /// The reply for a client that talks before the greeting (a "pre-greet" or early talker,
    /// which RFC 5321 §4.3.1 does not allow). Detecting one is the driver's job, since it
    /// owns the clock: wait a moment before [`greeting`](Self::greeting), and if data
    /// arrives meanwhile send this and close instead of creating or greeting the session.
    pub fn early_talker_reply() -> Reply {
        r::early_talker()
    }

    /// Hands over octets read from the connection. Nothing is processed until
    /// [`next_event`](Self::next_event). Ignored after close and between
    /// [`Event::StartTls`] and [`tls_started`](Self::tls_started).
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.eof
            || matches!(self.mode, Mode::Closed)
            || matches!(self.pending, Some(Pending::Tls))
        {
            return;
        }
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// The client closed its side. Complete commands already fed are still answered; then
    /// comes [`Event::Close`]. A message still being received is dropped.
    pub fn eof(&mut self) {
        self.eof = true;
    }

    /// The next thing to do, or `None` when the session needs more input or a decision.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.out.pop_front() {
                return Some(event);
            }
            if self.pending.is_some() || matches!(self.mode, Mode::Closed) {
                return None;
            }
            if !self.step() {
                if self.eof {
                    self.close();
                    continue;
                }
                return None;
            }
        }
    }

    /// Answers [`Event::CheckRecipient`].
    pub fn recipient_decision(&mut self, decision: RcptDecision) -> Result<(), SmtpError> {
        if !matches!(self.pending, Some(Pending::Recipient(_))) {
            return Err(self.unexpected("a recipient decision"));
        }
        if let RcptDecision::Reject(reply) = &decision {
            check_rejection(reply)?;
        }
        let Some(Pending::Recipient(address)) = self.pending.take() else {
            return Err(self.unexpected("a recipient decision"));
        };
        match decision {
            RcptDecision::Accept => {
                if let Some(tx) = &mut self.tx {
                    tx.recipients.push(address);
                }
                self.reply(r::rcpt_ok());
            }
            // A policy refusal is not a client error: max_errors is about broken or probing
            // clients, and the policy knows its own refusals if it wants to limit them.
            RcptDecision::Reject(reply) => self.reply(reply),
        }
        Ok(())
    }

    /// Answers [`Event::Authenticate`]: `235 2.7.0` or `535 5.7.8`.
    pub fn auth_decision(&mut self, success: bool) -> Result<(), SmtpError> {
        let username = match self.pending.take() {
            Some(Pending::Auth(username)) => username,
            other => {
                self.pending = other;
                return Err(self.unexpected("an auth decision"));
            }
        };
        if success {
            self.authenticated = Some(username);
            self.reply(r::auth_ok());
        } else {
            // Counted, so that guessing passwords costs a reconnection every max_errors.
            self.error(r::auth_failed());
        }
        Ok(())
    }

    /// Answers [`Event::Message`].
    pub fn message_decision(&mut self, decision: MessageDecision) -> Result<(), SmtpError> {
        let Some(Pending::Message) = self.pending else {
            return Err(self.unexpected("a message decision"));
        };
        if let MessageDecision::Rejected(reply) = &decision {
            check_rejection(reply)?;
        }
        self.pending = None;
        match decision {
            MessageDecision::Accepted { queue_id } => self.reply(r::queued(&queue_id)),
            MessageDecision::Rejected(reply) => self.reply(reply),
        }
        Ok(())
    }

    /// The TLS handshake after [`Event::StartTls`] succeeded. The session starts over as if
    /// just greeted (RFC 3207 §4.2): EHLO again, no transaction, no AUTH.
    pub fn tls_started(&mut self) -> Result<(), SmtpError> {
        let Some(Pending::Tls) = self.pending else {
            return Err(self.unexpected("tls_started"));
        };
        self.pending = None;
        self.tls = true;
        self.helo = None;
        self.tx = None;
        self.authenticated = None;
        self.input.clear();
        self.pos = 0;
        self.skipping_line = false;
        self.mode = Mode::Command;
        Ok(())
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub fn peer(&self) -> PeerInfo {
        self.peer
    }

    /// Under TLS, implicit or after STARTTLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The EHLO or HELO argument, once given.
    pub fn helo(&self) -> Option<&str> {
        self.helo.as_ref().map(|h| h.name.as_str())
    }

    /// The user name of a successful AUTH.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// Octets fed but not processed yet (for back-pressure: a driver that keeps reading
    /// while a decision is pending can stop when this grows).
    pub fn buffered(&self) -> usize {
        self.input.len() - self.pos
    }

    /// Inside DATA or a BDAT chunk: the driver then waits with its data timeout rather than
    /// its command timeout (RFC 5321 §4.5.3.2).
    pub fn in_data(&self) -> bool {
        matches!(self.mode, Mode::Data { .. } | Mode::Chunk { .. })
    }

    /// After [`Event::Close`] has been queued.
    pub fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed)
    }

    fn unexpected(&self, got: &'static str) -> SmtpError {
        SmtpError::UnexpectedDecision {
            got,
            waiting: Pending::name(self.pending.as_ref()),
        }
    }

    // ---- output ----------------------------------------------------------------------

    fn reply(&mut self, reply: Reply) {
        // RFC 5321 §3.8: a 421 means the server is closing the channel, whoever wrote it.
        let closing = reply.code() == 421;
        self.out.push_back(Event::Reply(reply));
        if closing {
            self.close();
        }
    }

    /// A refusal caused by the client; enough of them end the session.
    fn error(&mut self, reply: Reply) {
        self.reply(reply);
        self.errors += 1;
        let max = self.config.max_errors;
        if max > 0 && self.errors >= max && !self.is_closed() {
            self.reply(r::too_many_errors());
        }
    }

    fn close(&mut self) {
        if !self.is_closed() {
            self.mode = Mode::Closed;
            self.out.push_back(Event::Close);
            self.input = Vec::new();
            self.pos = 0;
        }
    }

    // ---- input -----------------------------------------------------------------------

    /// Processes one unit of input. False when nothing could be done.
    fn step(&mut self) -> bool {
        match self.mode {
            Mode::Closed => false,
            Mode::Data { .. } => self.step_data(),
            Mode::Chunk { .. } => self.step_chunk(),
            Mode::Command | Mode::Auth(_) => self.step_line(),
        }
    }

    fn line_limit(&self, start: &[u8]) -> usize {
        let auth = matches!(self.mode, Mode::Auth(_))
            || start
                .get(..5)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"AUTH "));
        if auth {
            AUTH_LINE_MAX.max(self.config.max_command_line)
        } else {
            self.config.max_command_line
        }
    }

    fn step_line(&mut self) -> bool {
        let avail = &self.input[self.pos..];
        if avail.is_empty() {
            return false;
        }
        let limit = self.line_limit(avail);
        // Only CRLF ends a line, as only CRLF.CRLF ends DATA: a bare LF or CR is part of the
        // line, which is then refused whole. Splitting at a bare LF instead would let
        // `NOOP\nMAIL ...\r\n` run a MAIL that a CRLF-framing proxy or filter in front of
        // us never saw as a command.
        let Some(end) = find_crlf(avail) else {
            if self.skipping_line || avail.len() >= limit {
                // Too long already: drop it as it comes rather than buffer it, and answer
                // once its end arrives, so that its tail is never taken for a command. The
                // last octet is kept: it may be the CR of the CRLF.
                self.skipping_line = true;
                let keep = usize::from(avail.last() == Some(&b'\r'));
                let dropped = avail.len() - keep;
                self.pos += dropped;
                return dropped > 0;
            }
            return false;
        };
        self.pos += end + 2;
        if std::mem::take(&mut self.skipping_line) || end + 2 > limit {
            let reply = if matches!(self.mode, Mode::Auth(_)) {
                r::auth_line_too_long()
            } else {
                r::line_too_long()
            };
            self.mode = Mode::Command;
            self.error(reply);
            return true;
        }
        // Copied out so the command handlers may change `self` freely; at most 12288 octets.
        let line = self.input[self.pos - end - 2..self.pos].to_vec();
        let content = &line[..end];
        if content.iter().any(|&b| b == b'\r' || b == b'\n') {
            self.mode = Mode::Command;
            self.error(r::bare_cr_lf_command());
            return true;
        }
        let Ok(text) = std::str::from_utf8(content) else {
            self.mode = Mode::Command;
            self.error(r::invalid_utf8());
            return true;
        };
        match std::mem::replace(&mut self.mode, Mode::Command) {
            Mode::Auth(step) => self.auth_response(step, text),
            _ => self.command(&line, text),
        }
        true
    }

    fn step_data(&mut self) -> bool {
        let Mode::Data { decoder, sink } = &mut self.mode else {
            return false;
        };
        let avail = &self.input[self.pos..];
        if avail.is_empty() {
            return false;
        }
        let (used, ended) = decoder.decode(avail, sink);
        self.pos += used;
        if ended && let Mode::Data { sink, .. } = std::mem::replace(&mut self.mode, Mode::Command) {
            self.end_of_message(sink, false);
        }
        true
    }

    fn step_chunk(&mut self) -> bool {
        let Mode::Chunk { remaining, end } = &mut self.mode else {
            return false;
        };
        if *remaining > 0 {
            let avail = &self.input[self.pos..];
            let take = usize::try_from(*remaining).map_or(avail.len(), |r| r.min(avail.len()));
            if take == 0 {
                return false;
            }
            *remaining -= take as u64;
            let done = *remaining == 0;
            if let ChunkEnd::Append { .. } = end
                && let Some(sink) = self.tx.as_mut().and_then(|tx| tx.chunks.as_mut())
            {
                sink.push(&avail[..take]);
            }
            self.pos += take;
            if !done {
                return true;
            }
        }
        let Mode::Chunk { end, .. } = std::mem::replace(&mut self.mode, Mode::Command) else {
            return false;
        };
        match end {
            ChunkEnd::Refuse(reply) => self.error(reply),
            ChunkEnd::Append { last } => {
                let sink = self.tx.as_mut().and_then(|tx| tx.chunks.take());
                match sink {
                    Some(sink) if last => self.end_of_message(sink, true),
                    Some(sink) if sink.is_too_big() => {
                        // RFC 3030 §2: refuse the chunk that crossed the limit and end the
                        // transaction rather than read on to BDAT LAST.
                        self.tx = None;
                        self.reply(r::too_big());
                    }
                    Some(sink) => {
                        let size = sink.size();
                        if let Some(tx) = &mut self.tx {
                            tx.chunks = Some(sink);
                        }
                        self.reply(r::chunk_ok(size));
                    }
                    None => self.reply(r::sequence("no mail transaction")),
                }
            }
        }
        true
    }

    /// The end of DATA or BDAT LAST: refuse, or hand the message to the driver. Either way
    /// the transaction is over (RFC 5321 §4.1.1.4).
    fn end_of_message(&mut self, sink: BodySink, chunked: bool) {
        let Some(tx) = self.tx.take() else {
            self.reply(r::sequence("no mail transaction"));
            return;
        };
        let body = match sink.finish() {
            Ok(body) => body,
            Err(Taint::BareCrLf) => return self.error(r::bare_cr_lf_data()),
            // The client may not know the size beforehand (no SIZE=): not its error.
            Err(Taint::TooBig) => return self.reply(r::too_big()),
            Err(Taint::LongLine) => {
                return self.error(r::text_line_too_long(self.config.max_text_line));
            }
        };
        let helo = self.helo.as_ref();
        let envelope = Envelope {
            helo: helo.map(|h| h.name.clone()).unwrap_or_default(),
            esmtp: helo.is_some_and(|h| h.esmtp),
            tls: self.tls,
            authenticated: self.authenticated.clone(),
            mail_from: tx.mail_from,
            recipients: tx.recipients,
            body_type: tx.body_type,
            smtputf8: tx.smtputf8,
            declared_size: tx.declared_size,
            chunked,
        };
        self.out
            .push_back(Event::Message(Message { envelope, body }));
        self.pending = Some(Pending::Message);
    }

    // ---- commands --------------------------------------------------------------------

    fn command(&mut self, line: &[u8], text: &str) {
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(e) => return self.error(parse_error(e)),
        };
        match request {
            Request::Ehlo { host } => self.hello(&host, true),
            Request::Helo { host } => self.hello(&host, false),
            Request::Mail { from } => self.mail(from, text),
            Request::Rcpt { to } => self.rcpt(to, text),
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size: _,
                is_last,
            } => self.bdat(text, is_last),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, &initial_response),
            Request::StartTls => self.starttls(text),
            Request::Rset => {
                self.tx = None;
                self.reply(r::ok());
            }
            Request::Noop { .. } => self.reply(r::ok()),
            Request::Quit => {
                self.reply(r::quit());
                self.close();
            }
            // RFC 5321 §3.5.3: 252 when the server will not verify; answering honestly
            // would hand out the list of valid mailboxes.
            Request::Vrfy { .. } => self.reply(r::vrfy()),
            Request::Help { .. } => self.reply(r::help()),
            Request::Expn { .. }
            | Request::Lhlo { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.error(r::not_implemented()),
        }
    }

    fn hello(&mut self, host: &str, esmtp: bool) {
        if host.chars().any(char::is_control) {
            return self.error(r::syntax(if esmtp { "EHLO domain" } else { "HELO domain" }));
        }
        // A new EHLO/HELO ends any transaction (RFC 5321 §4.1.4); AUTH stays.
        self.tx = None;
        self.helo = Some(Helo {
            name: host.to_owned(),
            esmtp,
        });
        if !esmtp {
            return self.reply(Reply::new(250, None, &self.config.hostname));
        }
        let c = &self.config;
        let mut lines = vec![
            c.hostname.clone(),
            "PIPELINING".to_owned(),
            format!("SIZE {}", c.max_message_size),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if c.starttls_available && !self.tls {
            lines.push("STARTTLS".to_owned());
        }
        if c.auth_enabled && (self.tls || !c.auth_requires_tls) {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        if c.chunking {
            lines.push("CHUNKING".to_owned());
        }
        self.reply(Reply::multiline(250, None, lines));
    }

    fn mail(&mut self, from: MailFrom<std::borrow::Cow<'_, str>>, text: &str) {
        let Some(helo) = &self.helo else {
            return self.error(r::sequence("send HELO/EHLO first"));
        };
        let esmtp = helo.esmtp;
        if self.tx.is_some() {
            return self.error(r::sequence("nested MAIL command"));
        }
        let Some((raw, params)) = address::split_path(text) else {
            return self.error(r::bad_sender());
        };
        if !params.trim().is_empty() && !esmtp {
            // Parameters are service extensions, which HELO did not negotiate.
            return self.error(r::unsupported_parameter("no extensions after HELO"));
        }
        // Only what EHLO offers (RFC 5321 §4.1.1.11): SIZE, BODY=7BIT/8BITMIME, SMTPUTF8,
        // and AUTH= (RFC 4954 §5, accepted and not used). smtp-proto also parses DSN,
        // REQUIRETLS, FUTURERELEASE and others, which are not offered.
        let known = MAIL_BODY_7BIT | MAIL_BODY_8BITMIME | MAIL_SMTPUTF8;
        if from.flags & !known != 0
            || from.trans_id.is_some()
            || from.by != 0
            || from.env_id.is_some()
            || from.solicit.is_some()
            || from.mtrk.is_some()
            || from.hold_for != 0
            || from.hold_until != 0
            || from.mt_priority != 0
        {
            return self.error(r::unsupported_parameter("not offered"));
        }
        let declared_size = address::size_param(params);
        if declared_size.is_some_and(|s| s > self.config.max_message_size as u64) {
            // RFC 1870 §6.1: permanent, the message will never fit.
            return self.reply(r::too_big());
        }
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        let mail_from = match address::parse_path(raw, smtputf8) {
            Ok(Path::Null) => None,
            Ok(Path::Mailbox(mailbox)) => Some(mailbox),
            Ok(Path::Postmaster) | Err(PathError::Syntax) => return self.error(r::bad_sender()),
            Err(PathError::NeedsSmtpUtf8) => return self.error(r::needs_smtputf8()),
        };
        let body_type = if from.flags & MAIL_BODY_8BITMIME != 0 {
            BodyType::EightBitMime
        } else if from.flags & MAIL_BODY_7BIT != 0 {
            BodyType::SevenBit
        } else {
            BodyType::Unspecified
        };
        self.tx = Some(Transaction {
            mail_from,
            smtputf8,
            body_type,
            declared_size,
            recipients: Vec::new(),
            rcpt_attempts: 0,
            chunks: None,
        });
        self.reply(r::mail_ok());
    }

    fn rcpt(&mut self, to: RcptTo<std::borrow::Cow<'_, str>>, text: &str) {
        if self.helo.is_none() {
            return self.error(r::sequence("send HELO/EHLO first"));
        }
        let Some(tx) = &self.tx else {
            return self.error(r::sequence("need MAIL before RCPT"));
        };
        if tx.chunks.is_some() {
            return self.error(r::sequence("RCPT after BDAT"));
        }
        // No DSN, CONNEG or RRVS offered, so no RCPT parameter is.
        if to.orcpt.is_some() || to.flags != 0 || to.rrvs != 0 {
            return self.error(r::unsupported_parameter("not offered"));
        }
        let Some((raw, params)) = address::split_path(text) else {
            return self.error(r::bad_recipient());
        };
        if !params.trim().is_empty() {
            return self.error(r::unsupported_parameter("not offered"));
        }
        let address = match address::parse_path(raw, tx.smtputf8) {
            Ok(Path::Postmaster) => "postmaster".to_owned(),
            Ok(Path::Mailbox(mailbox)) => mailbox,
            Ok(Path::Null) | Err(PathError::Syntax) => return self.error(r::bad_recipient()),
            Err(PathError::NeedsSmtpUtf8) => return self.error(r::needs_smtputf8()),
        };
        if tx.recipients.len() >= self.config.max_recipients {
            // Not counted as an error: a client with many recipients is told to send the
            // rest in another transaction (RFC 5321 §4.5.3.1.10), not punished.
            return self.reply(r::too_many_recipients());
        }
        let sender = tx.mail_from.clone();
        if let Some(tx) = &mut self.tx {
            tx.rcpt_attempts += 1;
        }
        self.out.push_back(Event::CheckRecipient {
            address: address.clone(),
            sender,
        });
        self.pending = Some(Pending::Recipient(address));
    }

    /// Why DATA or BDAT cannot start now, if it cannot.
    fn content_refusal(&self, bdat: bool) -> Option<Reply> {
        let Some(helo) = &self.helo else {
            return Some(r::sequence("send HELO/EHLO first"));
        };
        if bdat && !self.config.chunking {
            return Some(r::not_implemented());
        }
        if bdat && !helo.esmtp {
            return Some(r::sequence("BDAT needs EHLO"));
        }
        let Some(tx) = &self.tx else {
            return Some(r::sequence("need MAIL first"));
        };
        if !bdat && tx.chunks.is_some() {
            return Some(r::sequence("DATA after BDAT"));
        }
        if tx.recipients.is_empty() {
            return Some(if tx.rcpt_attempts == 0 {
                r::sequence("need RCPT first")
            } else {
                r::no_valid_recipients()
            });
        }
        None
    }

    fn data(&mut self) {
        if let Some(reply) = self.content_refusal(false) {
            return self.error(reply);
        }
        self.reply(r::start_data());
        self.mode = Mode::Data {
            decoder: DotDecoder::new(),
            sink: BodySink::new(self.config.max_message_size, self.config.max_text_line),
        };
    }

    fn bdat(&mut self, text: &str, last: bool) {
        // smtp-proto's reader wraps around on huge numbers; ours refuses them. Without a
        // size the chunk cannot be skipped, so this one is only answered.
        let Some(remaining) = address::bdat_chunk_size(text) else {
            return self.error(r::invalid_argument("chunk size"));
        };
        let end = match self.content_refusal(true) {
            // The chunk is read either way (RFC 3030 §2): its octets must never be taken
            // for commands.
            Some(reply) => ChunkEnd::Refuse(reply),
            None => {
                if let Some(tx) = &mut self.tx
                    && tx.chunks.is_none()
                {
                    tx.chunks = Some(BodySink::new(
                        self.config.max_message_size,
                        self.config.max_text_line,
                    ));
                }
                ChunkEnd::Append { last }
            }
        };
        self.mode = Mode::Chunk { remaining, end };
    }

    fn starttls(&mut self, text: &str) {
        if !text.trim().eq_ignore_ascii_case("STARTTLS") {
            return self.error(r::no_parameters());
        }
        if !self.config.starttls_available {
            return self.error(r::tls_unavailable());
        }
        if self.tls {
            return self.error(r::sequence("TLS already active"));
        }
        if !self.helo.as_ref().is_some_and(|h| h.esmtp) {
            return self.error(r::sequence("send EHLO first"));
        }
        if self.tx.is_some() {
            return self.error(r::sequence("mail transaction in progress"));
        }
        self.reply(r::start_tls());
        self.out.push_back(Event::StartTls);
        self.pending = Some(Pending::Tls);
        // CVE-2011-0411: whatever the client sent after STARTTLS in plain text must not be
        // acted on under TLS.
        self.input.clear();
        self.pos = 0;
        self.skipping_line = false;
    }

    fn auth(&mut self, mechanism: u64, initial: &str) {
        let c = &self.config;
        if !c.auth_enabled || (c.auth_requires_tls && !self.tls && !c.starttls_available) {
            return self.error(r::not_implemented());
        }
        if !self.helo.as_ref().is_some_and(|h| h.esmtp) {
            return self.error(r::sequence("send EHLO first"));
        }
        if self.authenticated.is_some() {
            return self.error(r::sequence("already authenticated"));
        }
        if self.tx.is_some() {
            return self.error(r::sequence("mail transaction in progress"));
        }
        if c.auth_requires_tls && !self.tls {
            return self.error(r::tls_required());
        }
        match mechanism {
            AUTH_PLAIN if initial.is_empty() => {
                self.mode = Mode::Auth(AuthStep::PlainResponse);
                self.reply(r::auth_challenge(""));
            }
            AUTH_PLAIN => self.auth_response(AuthStep::PlainResponse, initial),
            AUTH_LOGIN if initial.is_empty() => {
                self.mode = Mode::Auth(AuthStep::LoginUsername);
                self.reply(r::auth_challenge(auth::LOGIN_USERNAME));
            }
            AUTH_LOGIN => self.auth_response(AuthStep::LoginUsername, initial),
            _ => self.error(r::auth_mechanism()),
        }
    }

    /// One client line in the AUTH exchange (or an initial response).
    fn auth_response(&mut self, step: AuthStep, text: &str) {
        if text == "*" {
            // RFC 4954 §4: the client cancels; not an error.
            return self.reply(r::auth_cancelled());
        }
        let outcome = match step {
            AuthStep::PlainResponse => auth::parse_plain(text).map(|c| (AuthMechanism::Plain, c)),
            AuthStep::LoginUsername => match auth::parse_login_field(text) {
                Ok(username) => {
                    self.mode = Mode::Auth(AuthStep::LoginPassword { username });
                    return self.reply(r::auth_challenge(auth::LOGIN_PASSWORD));
                }
                Err(e) => Err(e),
            },
            AuthStep::LoginPassword { username } => auth::parse_login_field(text).map(|password| {
                let credentials = Credentials {
                    authzid: None,
                    username,
                    password: Password::new(password),
                };
                (AuthMechanism::Login, credentials)
            }),
        };
        match outcome {
            Ok((mechanism, c)) => {
                self.pending = Some(Pending::Auth(c.username.clone()));
                self.out.push_back(Event::Authenticate {
                    mechanism,
                    authzid: c.authzid,
                    username: c.username,
                    password: c.password,
                });
            }
            Err(SaslError::Base64) => self.error(r::auth_bad_base64()),
            Err(SaslError::Malformed) => self.error(r::auth_malformed()),
        }
    }
}

/// The position of the first CRLF.
fn find_crlf(bytes: &[u8]) -> Option<usize> {
    memchr::memmem::find(bytes, b"\r\n")
}

fn check_rejection(reply: &Reply) -> Result<(), SmtpError> {
    if reply.is_negative() && reply.is_well_formed() {
        Ok(())
    } else {
        Err(SmtpError::NotARejection { code: reply.code() })
    }
}

fn parse_error(e: smtp_proto::Error) -> Reply {
    match e {
        smtp_proto::Error::UnknownCommand => r::unknown_command(),
        smtp_proto::Error::SyntaxError { syntax } => r::syntax(syntax),
        smtp_proto::Error::InvalidSenderAddress => r::bad_sender(),
        smtp_proto::Error::InvalidRecipientAddress => r::bad_recipient(),
        smtp_proto::Error::InvalidParameter { param } => r::invalid_argument(param),
        smtp_proto::Error::UnsupportedParameter { param } => r::unsupported_parameter(&param),
        // The parser always has a whole line here, so the remaining errors mean a line it
        // could not make sense of.
        _ => r::syntax("command not understood"),
    }
}
