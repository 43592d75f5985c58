//! The client session: delivering messages over one connection, sans-io.
//!
//! [`ClientSession`] is a pure state machine like the server session: no sockets, no clock,
//! no TLS. The driver (the delivery engine) owns the connection, the TLS handshake, the
//! timers and the spool; it asks [`ClientSession::next_action`] what to do, does it, and
//! reports back: the octets it read ([`feed`](ClientSession::feed)), the end of the stream
//! ([`eof`](ClientSession::eof)), a timeout ([`timed_out`](ClientSession::timed_out)), an I/O
//! or TLS error. One session delivers any number of messages, one after the other.
//!
//! ```no_run
//! use std::io::{ErrorKind, Read, Write};
//! use std::net::TcpStream;
//! use mx_smtp::client::{Action, ClientConfig, ClientSession, OutboundMessage, StartTls};
//!
//! fn deliver(mut socket: TcpStream, mut queue: Vec<OutboundMessage>) -> std::io::Result<()> {
//!     let mut c = ClientSession::new(ClientConfig {
//!         helo_name: "relay.example.net".into(),
//!         starttls: StartTls::Never, // this sketch has no TLS library
//!         ..ClientConfig::default()
//!     });
//!     let mut buf = [0u8; 8192];
//!     loop {
//!         match c.next_action() {
//!             Action::Send { bytes, timeout } => {
//!                 socket.set_write_timeout(Some(c.config().timeouts.get(timeout)))?;
//!                 match socket.write_all(&bytes) {
//!                     Ok(()) => {}
//!                     Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
//!                         c.timed_out()
//!                     }
//!                     Err(e) => c.io_error(&e.to_string()),
//!                 }
//!             }
//!             Action::Receive { timeout } => {
//!                 socket.set_read_timeout(Some(c.config().timeouts.get(timeout)))?;
//!                 match socket.read(&mut buf) {
//!                     Ok(0) => c.eof(),
//!                     Ok(n) => c.feed(&buf[..n]),
//!                     Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
//!                         c.timed_out()
//!                     }
//!                     Err(e) => c.io_error(&e.to_string()),
//!                 }
//!             }
//!             Action::StartTls => {
//!                 // Handshake on the socket within `timeouts.starttls`, then:
//!                 c.tls_started().expect("asked for");
//!                 // or, if it failed: c.tls_failed("handshake: ...");
//!             }
//!             Action::Ready => match queue.pop() {
//!                 Some(message) => c.send_message(message).expect("ready"),
//!                 None => c.quit().expect("ready"),
//!             },
//!             Action::MessageDone(outcome) => {
//!                 for r in &outcome.recipients {
//!                     // e.g. "to=<bob@example.org> status=sent (250 2.0.0 Ok: queued as X)"
//!                     println!("to=<{}> status={:?} ({})", r.recipient, r.status, r.reply.text());
//!                 }
//!             }
//!             Action::Close(outcome) => {
//!                 println!("{:?}: {}", outcome.reason, outcome.reply.text());
//!                 return Ok(());
//!             }
//!         }
//!     }
//! }
//! ```
//!
//! After `Close` the socket is closed; `next_action` keeps returning the same `Close`.
//! `Receive` asks for at least one more read; the session never wants to read while it has
//! something to send, so a plain loop like this one cannot deadlock.
//!
//! # What the session does
//!
//! - **Greeting and EHLO.** A 2xx greeting gets EHLO; EHLO refused with 5xx gets HELO (no
//!   extensions then). A 4xx/5xx greeting, EHLO refused with 4xx, or HELO refused ends the
//!   connection with [`CloseReason::Refused`] after a polite QUIT (RFC 5321 §3.1 has the
//!   server wait for it after a 554 greeting).
//! - **421 at any time** ends the connection at once, without QUIT (RFC 5321 §3.8): the
//!   recipients of the current message that have no final answer yet become temporary
//!   failures carrying that 421, and the outcome is [`CloseReason::ServiceClosing`].
//! - **STARTTLS** per [`StartTls`]; after the handshake EHLO is sent again and the
//!   extensions are read anew (RFC 3207 §4.2). Any octet the server sent after its 220 to
//!   STARTTLS, in the same read or fed before [`tls_started`](ClientSession::tls_started),
//!   is a response-injection attempt (the client-side twin of CVE-2011-0411): the connection
//!   fails with [`CloseReason::HostileServer`] and those octets are never read as replies.
//! - **Nothing unsolicited.** More generally, octets still buffered once every reply the
//!   session waits for has come are never kept for the next command: they would be taken
//!   as its reply (an attacker in the stream, or a server out of step, could otherwise fake
//!   `250` to an end of data that it never saw). Such octets end the connection with
//!   [`CloseReason::ProtocolError`], unless they are a whole `421` reply, which is honoured as
//!   the server closing.
//! - **Replies are read strictly**: lines end in CRLF only, the code is `2xx`-`5xx` and the
//!   same on every line, a line is at most 4096 octets and a reply at most 64 KiB. Anything
//!   else is a [`CloseReason::ProtocolError`]. An enhanced status code at the start of the
//!   text (RFC 2034, RFC 3463) is taken out into [`Reply::status`] when its class agrees
//!   with the code.
//! - **A transaction** is `MAIL FROM:<x>` (with `SIZE=`, `BODY=8BITMIME` and `SMTPUTF8` as
//!   offered and needed), one `RCPT TO` per recipient, `DATA`, the dot-stuffed content and
//!   `.`. With PIPELINING offered (and [`ClientConfig::pipelining`]) MAIL, every RCPT and
//!   DATA leave in one write (RFC 2920 §3.1), with the RSET before them when one is needed;
//!   otherwise one command at a time. No DATA is sent once every RCPT has failed; with
//!   pipelining DATA is already out and its `503`/`554` is expected.
//! - **RSET only when needed.** A transaction the server still holds open (MAIL accepted,
//!   then every recipient or DATA refused) gets RSET before the next message, in the same
//!   write when pipelining; nothing is sent for it before QUIT. If RSET is refused, the
//!   server's state is unknown and the connection is dropped ([`CloseReason::Refused`]).
//! - **Per-recipient results** ([`MessageOutcome`]), each carrying the reply that decided it
//!   and the command it answered: the RCPT reply when that was 4xx/5xx, the MAIL reply for
//!   all recipients when MAIL failed, the DATA reply when DATA was refused, the end-of-data
//!   reply for every accepted recipient. 2xx is [`DeliveryStatus::Delivered`], 4xx
//!   [`DeliveryStatus::Temporary`], 5xx [`DeliveryStatus::Permanent`]; the status always
//!   agrees with the reply's class.
//! - **A lost connection** (eof, timeout, I/O error, protocol error) makes every recipient
//!   of the current message without a final answer a temporary failure, even after the
//!   final `.` was sent: delivery is not known then, and a duplicate is better than a loss
//!   (RFC 5321 §6.1; RFC 1047).
//!
//! # Refusals made here, before anything is sent
//!
//! These are the session's own replies ([`RecipientResult::remote`] is false), permanent
//! where the message can never go this way, temporary where another attempt may succeed.
//!
//! | situation | reply | applies to |
//! | --- | --- | --- |
//! | sender address with control characters, `<` or `>` | `553 5.1.7` | message |
//! | recipient address with control characters, `<` or `>` | `553 5.1.3` | that recipient |
//! | bare CR or LF in the body | `554 5.6.0` | message |
//! | SMTPUTF8 needed (flag, or non-ASCII sender), not offered | `553 5.6.7` (RFC 6531 §3.4) | message |
//! | non-ASCII recipient, SMTPUTF8 not offered | `553 5.6.7` | that recipient |
//! | `body_8bit`, 8BITMIME not offered | `554 5.6.3` (conversion required but not supported) | message |
//! | `size` over the server's `SIZE` | `552 5.3.4` (RFC 1870 §6.1) | message |
//! | TLS required, STARTTLS not offered or refused | `451 4.7.4` | connection |
//! | TLS handshake failed ([`ClientSession::tls_failed`]) | `451 4.7.5` | connection |
//! | data after the 220 to STARTTLS | `451 4.7.0` | connection |
//! | malformed or unexpected reply, unsolicited data | `451 4.5.0` | connection |
//! | connection closed, I/O error, timeout | `451 4.4.2` | connection |
//! | invalid `helo_name` | `451 4.3.5` | connection |
//!
//! A bare CR or LF fails the message rather than being repaired: the engine hands over CRLF
//! bodies, so one that is not is a bug upstream or a smuggling attempt, and rewriting it
//! would break signatures and hide the problem. `body_8bit` without 8BITMIME fails rather
//! than being downgraded, as RFC 6152 §3 allows when the client does not convert. TLS
//! failures are temporary: another MX, or the same one later, may do better.

mod body;
mod parse;

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use thiserror::Error;

use crate::reply::{EnhancedStatus, Reply};
use body::DotStuffer;
use parse::{Parse, ReplyReader};

pub use parse::Extensions;

/// When to use STARTTLS (RFC 3207).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StartTls {
    /// Use it when offered. If the server refuses it (4xx/5xx), carry on in plain text;
    /// if the handshake fails the engine decides (typically: a new plain-text connection).
    #[default]
    Opportunistic,
    /// The connection fails with [`CloseReason::TlsRequired`] (`451 4.7.4`, temporary)
    /// when STARTTLS is not offered or is refused.
    Required,
    /// Never send STARTTLS.
    Never,
}

/// Which wait is going on, naming the timeouts of RFC 5321 §4.5.3.2 (and the command whose
/// reply is awaited, for logs: [`Phase::command`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The 220 greeting (§4.5.3.2.1).
    Greeting,
    /// EHLO or HELO.
    Ehlo,
    /// STARTTLS, and the TLS handshake after it.
    StartTls,
    /// MAIL (§4.5.3.2.2).
    Mail,
    /// RCPT (§4.5.3.2.3).
    Rcpt,
    /// DATA, until the 354 (§4.5.3.2.4).
    DataInit,
    /// Writing a block of message content (§4.5.3.2.5).
    DataBlock,
    /// The reply to the final `.` (§4.5.3.2.6).
    DataTermination,
    /// RSET.
    Rset,
    /// QUIT.
    Quit,
}

impl Phase {
    /// What the server was answering, as in Postfix's "(in reply to RCPT TO command)".
    pub fn command(self) -> &'static str {
        match self {
            Phase::Greeting => "initial greeting",
            Phase::Ehlo => "EHLO/HELO command",
            Phase::StartTls => "STARTTLS command",
            Phase::Mail => "MAIL FROM command",
            Phase::Rcpt => "RCPT TO command",
            Phase::DataInit => "DATA command",
            Phase::DataBlock => "message content",
            Phase::DataTermination => "end of DATA command",
            Phase::Rset => "RSET command",
            Phase::Quit => "QUIT command",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.command())
    }
}

/// How long each wait may last. The defaults are the minimums of RFC 5321 §4.5.3.2 where it
/// gives one, and its general five minutes for the commands it does not list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timeouts {
    pub greeting: Duration,
    pub ehlo: Duration,
    /// The reply to STARTTLS and the handshake.
    pub starttls: Duration,
    pub mail: Duration,
    pub rcpt: Duration,
    pub data_init: Duration,
    /// Each write of message content.
    pub data_block: Duration,
    pub data_termination: Duration,
    pub rset: Duration,
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        const MIN: u64 = 60;
        Self {
            greeting: Duration::from_secs(5 * MIN),
            ehlo: Duration::from_secs(5 * MIN),
            starttls: Duration::from_secs(5 * MIN),
            mail: Duration::from_secs(5 * MIN),
            rcpt: Duration::from_secs(5 * MIN),
            data_init: Duration::from_secs(2 * MIN),
            data_block: Duration::from_secs(3 * MIN),
            data_termination: Duration::from_secs(10 * MIN),
            rset: Duration::from_secs(5 * MIN),
            quit: Duration::from_secs(5 * MIN),
        }
    }
}

impl Timeouts {
    pub fn get(&self, phase: Phase) -> Duration {
        match phase {
            Phase::Greeting => self.greeting,
            Phase::Ehlo => self.ehlo,
            Phase::StartTls => self.starttls,
            Phase::Mail => self.mail,
            Phase::Rcpt => self.rcpt,
            Phase::DataInit => self.data_init,
            Phase::DataBlock => self.data_block,
            Phase::DataTermination => self.data_termination,
            Phase::Rset => self.rset,
            Phase::Quit => self.quit,
        }
    }
}

/// The client's settings. Build it with struct update syntax:
/// `ClientConfig { helo_name: "relay.example".into(), ..ClientConfig::default() }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Our name in EHLO/HELO: a domain or an address literal such as `[192.0.2.1]`.
    /// Printable ASCII without spaces; anything else fails the connection before EHLO
    /// (`451 4.3.5`), since it would go on the wire as it is. Default `localhost`.
    pub helo_name: String,
    /// Pipeline when the server offers PIPELINING. Default true.
    pub pipelining: bool,
    /// Default [`StartTls::Opportunistic`].
    pub starttls: StartTls,
    pub timeouts: Timeouts,
    /// Message content is handed out in [`Action::Send`]s of about this many octets, each
    /// under the data-block timeout. Default 64 KiB.
    pub data_block_size: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            helo_name: "localhost".to_owned(),
            pipelining: true,
            starttls: StartTls::default(),
            timeouts: Timeouts::default(),
            data_block_size: 64 * 1024,
        }
    }
}

impl ClientConfig {
    /// Whether the configuration can be used, for checking it when it is loaded rather
    /// than on the first connection.
    pub fn check(&self) -> Result<(), ClientError> {
        let name = &self.helo_name;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::InvalidHeloName(name.clone()));
        }
        Ok(())
    }
}

/// One message to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The reverse-path without angle brackets; empty for the null sender `<>`.
    pub mail_from: String,
    /// Forward-paths without angle brackets. Each gets its own [`RecipientResult`], in this
    /// order.
    pub recipients: Vec<String>,
    /// The content with CRLF line endings, not dot-stuffed, without the final `.CRLF`. A
    /// last line without CRLF gets one on the wire.
    pub body: Vec<u8>,
    /// The content needs 8BITMIME (`BODY=8BITMIME`, RFC 6152).
    pub body_8bit: bool,
    /// The message needs SMTPUTF8 (RFC 6531). A non-ASCII sender needs it too, flag or not.
    pub smtputf8: bool,
    /// The size for `SIZE=` (RFC 1870) and for the check against the server's maximum.
    pub size: u64,
}

impl OutboundMessage {
    /// A message with `size`, `body_8bit` and `smtputf8` worked out from the content:
    /// `body_8bit` when any octet is over 127, `smtputf8` when the header section (up to
    /// the first empty line) is (RFC 6532 headers). Non-ASCII addresses need no flag: the
    /// session asks for SMTPUTF8 for them itself. A driver that knows better (`BODY=` as
    /// received) sets the fields itself.
    pub fn new(mail_from: impl Into<String>, recipients: Vec<String>, body: Vec<u8>) -> Self {
        let mail_from = mail_from.into();
        let header_end = body
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(body.len());
        let smtputf8 = !body[..header_end].is_ascii();
        Self {
            body_8bit: !body.is_ascii(),
            size: body.len() as u64,
            mail_from,
            recipients,
            body,
            smtputf8,
        }
    }
}

/// What the driver must do next ([`ClientSession::next_action`]).
///
/// Not `#[non_exhaustive]`, like the server's `Event`: a new kind of action must break the
/// driver's `match`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these octets, within the timeout of this phase. Commands end in CRLF; message
    /// content is already dot-stuffed.
    Send { bytes: Vec<u8>, timeout: Phase },
    /// Read, within the timeout of this phase, and report with [`ClientSession::feed`],
    /// [`eof`](ClientSession::eof), [`timed_out`](ClientSession::timed_out) or
    /// [`io_error`](ClientSession::io_error).
    Receive { timeout: Phase },
    /// The server said 220 to STARTTLS. Do the TLS handshake now, without reading anything
    /// else in plain text, then call [`ClientSession::tls_started`] (or
    /// [`tls_failed`](ClientSession::tls_failed)).
    StartTls,
    /// Idle: call [`ClientSession::send_message`] or [`ClientSession::quit`].
    Ready,
    /// A message is finished: one result per recipient. [`Action::Ready`] or
    /// [`Action::Close`] follows.
    MessageDone(MessageOutcome),
    /// Close the connection. Returned again on every later call.
    Close(ConnectionOutcome),
}

/// How a recipient fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// 2xx: the server took responsibility.
    Delivered,
    /// 4xx: try again later (or at another MX).
    Temporary,
    /// 5xx: bounce.
    Permanent,
}

impl DeliveryStatus {
    fn of(reply: &Reply) -> Option<Self> {
        match reply.code() / 100 {
            2 => Some(Self::Delivered),
            4 => Some(Self::Temporary),
            5 => Some(Self::Permanent),
            _ => None,
        }
    }
}

/// One recipient's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientResult {
    /// As given in [`OutboundMessage::recipients`].
    pub recipient: String,
    /// Always agrees with the class of `reply`.
    pub status: DeliveryStatus,
    /// The reply that decided it, for the log line and the DSN's Diagnostic-Code.
    pub reply: Reply,
    /// What `reply` answered ([`Phase::Mail`] also for refusals made here before MAIL).
    pub phase: Phase,
    /// `reply` came from the server; false when this session made it up (see the module
    /// docs), which a DSN should not present as the remote host's words.
    pub remote: bool,
}

/// The results for one message, in the order of its recipients.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageOutcome {
    pub recipients: Vec<RecipientResult>,
}

impl MessageOutcome {
    /// Whether every recipient was delivered (true for none at all).
    pub fn all_delivered(&self) -> bool {
        self.recipients
            .iter()
            .all(|r| r.status == DeliveryStatus::Delivered)
    }

    pub fn with_status(&self, status: DeliveryStatus) -> impl Iterator<Item = &RecipientResult> {
        self.recipients.iter().filter(move |r| r.status == status)
    }
}

/// Why the connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// QUIT after the driver was done: the normal end.
    Quit,
    /// The server refused the session: a 4xx/5xx greeting, EHLO and HELO refused (or EHLO
    /// with 4xx), or RSET refused.
    Refused,
    /// The server sent 421 (RFC 5321 §3.8).
    ServiceClosing,
    /// [`StartTls::Required`] and STARTTLS was not offered or was refused.
    TlsRequired,
    /// The driver reported a failed handshake.
    TlsFailed,
    /// Data after the 220 to STARTTLS (response injection).
    HostileServer,
    /// A malformed reply, an unexpected code, or data nobody asked for.
    ProtocolError,
    /// The connection closed or failed under us.
    ConnectionLost,
    /// A timeout ran out.
    Timeout,
    /// The configuration cannot be used ([`ClientConfig::check`]).
    LocalConfig,
}

/// How the connection ended, for the log and for the deferral reason of messages that were
/// not tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionOutcome {
    pub reason: CloseReason,
    /// Where it ended.
    pub phase: Phase,
    /// The server's reply (its greeting, 421, refusal, 221) or, when [`remote`](Self::remote)
    /// is false, one made up here that says what happened (see the module docs).
    pub reply: Reply,
    pub remote: bool,
    /// TLS was active by then.
    pub tls: bool,
}

/// Misuse of a [`ClientSession`] by its driver. Server input never produces an error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `send_message`, `quit` or `tls_started` when the session did not ask for it.
    #[error("unexpected {got}: the session is {state}")]
    NotReady {
        got: &'static str,
        state: &'static str,
    },
    #[error("invalid HELO name {0:?}: printable ASCII without spaces needed")]
    InvalidHeloName(String),
}

/// A reply the session waits for, in the order the commands were sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Rset,
    Mail,
    /// The index in the message's recipients.
    Rcpt(usize),
    Data,
    EndOfData,
    Quit,
}

impl Expect {
    fn phase(self) -> Phase {
        match self {
            Expect::Greeting => Phase::Greeting,
            Expect::Ehlo | Expect::Helo => Phase::Ehlo,
            Expect::StartTls => Phase::StartTls,
            Expect::Rset => Phase::Rset,
            Expect::Mail => Phase::Mail,
            Expect::Rcpt(_) => Phase::Rcpt,
            Expect::Data => Phase::DataInit,
            Expect::EndOfData => Phase::DataTermination,
            Expect::Quit => Phase::Quit,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MailState {
    /// Waiting for the RSET reply first (one command at a time).
    NotSent,
    Sent,
    Accepted,
    Refused,
}

/// The message being delivered.
#[derive(Debug)]
struct Tx {
    recipients: Vec<String>,
    body: Vec<u8>,
    /// Final results so far, by recipient index.
    results: Vec<Option<RecipientResult>>,
    /// Recipients that get an RCPT, by index.
    to_send: Vec<usize>,
    /// Position in `to_send` of the next RCPT to send (one command at a time).
    next_rcpt: usize,
    /// Recipients with a 2xx to their RCPT: the end-of-data reply decides them.
    accepted: Vec<usize>,
    mail: MailState,
    mail_command: Vec<u8>,
    pipelined: bool,
    /// Set once the 354 has come: content still to send.
    stuffer: Option<DotStuffer>,
}

impl Tx {
    fn decide(&mut self, i: usize, reply: &Reply, phase: Phase) {
        if let (Some(slot), Some(recipient)) = (self.results.get_mut(i), self.recipients.get(i)) {
            *slot = Some(result(recipient, reply.clone(), phase, true));
        }
    }
}

#[derive(Debug)]
enum Stage {
    /// Greeting, EHLO, HELO or STARTTLS reply awaited.
    Setup,
    /// After the 220 to STARTTLS, until `tls_started`.
    TlsHandshake,
    /// Ready for a message.
    Idle,
    Transaction(Box<Tx>),
    /// QUIT sent; the outcome to report instead of a plain `Quit` when QUIT only closes a
    /// refused session.
    Quitting(Option<Box<ConnectionOutcome>>),
    Closed(Box<ConnectionOutcome>),
}

impl Stage {
    fn name(&self) -> &'static str {
        match self {
            Stage::Setup => "setting up the session",
            Stage::TlsHandshake => "waiting for the TLS handshake",
            Stage::Idle => "ready",
            Stage::Transaction(_) => "delivering a message",
            Stage::Quitting(_) => "quitting",
            Stage::Closed(_) => "closed",
        }
    }
}

/// One SMTP client connection: a pure state machine, no I/O, no clock. See the
/// [module docs](self).
#[derive(Debug)]
pub struct ClientSession {
    config: ClientConfig,
    /// Octets read and not yet taken by a reply.
    input: Vec<u8>,
    reader: ReplyReader,
    eof: bool,
    /// Replies awaited, in command order.
    pending: VecDeque<Expect>,
    /// Actions decided but not handed out yet.
    out: VecDeque<Action>,
    stage: Stage,
    tls: bool,
    extensions: Option<Extensions>,
    /// The last hello was EHLO (an empty [`Extensions`] cannot tell).
    esmtp: bool,
    greeting: Option<Reply>,
    /// The server holds a transaction we left open: RSET before the next MAIL.
    half_open: bool,
}

impl ClientSession {
    /// A session for a connection just opened; the first action is to read the greeting.
    pub fn new(config: ClientConfig) -> Self {
        let mut s = Self {
            config,
            input: Vec::new(),
            reader: ReplyReader::default(),
            eof: false,
            pending: VecDeque::from([Expect::Greeting]),
            out: VecDeque::new(),
            stage: Stage::Setup,
            tls: false,
            extensions: None,
            esmtp: false,
            greeting: None,
            half_open: false,
        };
        if let Err(e) = s.config.check() {
            s.fail(
                CloseReason::LocalConfig,
                Phase::Greeting,
                Reply::new(451, EnhancedStatus::new(4, 3, 5), &e.to_string()),
                false,
            );
        }
        s
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Under TLS (after a successful STARTTLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The greeting, once received.
    pub fn greeting(&self) -> Option<&Reply> {
        self.greeting.as_ref()
    }

    /// What the last EHLO offered (empty after HELO); `None` before a hello succeeded and
    /// between STARTTLS and the EHLO after it.
    pub fn extensions(&self) -> Option<&Extensions> {
        self.extensions.as_ref()
    }

    /// Whether EHLO (rather than HELO) succeeded, once one did.
    pub fn is_esmtp(&self) -> bool {
        self.extensions.is_some() && self.esmtp
    }

    /// Octets read from the connection. Nothing is processed until
    /// [`next_action`](Self::next_action). Octets fed while the TLS handshake is due are a
    /// protocol violation (they came after the 220 to STARTTLS) and end the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        match self.stage {
            Stage::Closed(_) => {}
            _ if self.eof => {}
            Stage::TlsHandshake if !bytes.is_empty() => self.hostile_after_starttls(),
            _ => self.input.extend_from_slice(bytes),
        }
    }

    /// The server closed the connection. Replies already fed are still read.
    pub fn eof(&mut self) {
        self.eof = true;
    }

    /// The timeout of the last [`Action::Send`] or [`Action::Receive`] ran out.
    pub fn timed_out(&mut self) {
        let phase = self.current_phase();
        let text = if phase == Phase::DataBlock {
            "timed out while sending message content".to_owned()
        } else {
            format!(
                "timed out while waiting for the reply to the {}",
                phase.command()
            )
        };
        self.fail(
            CloseReason::Timeout,
            phase,
            Reply::new(451, EnhancedStatus::new(4, 4, 2), &text),
            false,
        );
    }

    /// Reading or writing failed.
    pub fn io_error(&mut self, detail: &str) {
        let phase = self.current_phase();
        let text = format!("lost connection during the {}: {detail}", phase.command());
        self.fail(
            CloseReason::ConnectionLost,
            phase,
            Reply::new(451, EnhancedStatus::new(4, 4, 2), &text),
            false,
        );
    }

    /// The TLS handshake after [`Action::StartTls`] failed.
    pub fn tls_failed(&mut self, detail: &str) {
        self.fail(
            CloseReason::TlsFailed,
            Phase::StartTls,
            Reply::new(
                451,
                EnhancedStatus::new(4, 7, 5),
                &format!("TLS handshake failed: {detail}"),
            ),
            false,
        );
    }

    /// The TLS handshake after [`Action::StartTls`] succeeded: EHLO goes out again and the
    /// extensions offered in plain text are forgotten (RFC 3207 §4.2).
    pub fn tls_started(&mut self) -> Result<(), ClientError> {
        if !matches!(self.stage, Stage::TlsHandshake) {
            return Err(self.not_ready("tls_started"));
        }
        self.tls = true;
        self.extensions = None;
        self.esmtp = false;
        // Empty already (anything fed since the 220 ended the session), cleared anyway so
        // that no plain-text octet can ever be read under TLS.
        self.input.clear();
        self.reader.reset();
        self.stage = Stage::Setup;
        self.send_hello(Expect::Ehlo);
        Ok(())
    }

    /// Starts delivering a message; only after [`Action::Ready`]. Refusals decided here
    /// (see the module docs) come back at once as [`Action::MessageDone`] without a word
    /// to the server.
    pub fn send_message(&mut self, message: OutboundMessage) -> Result<(), ClientError> {
        if !matches!(self.stage, Stage::Idle) || self.eof {
            return Err(self.not_ready("send_message"));
        }
        let ext = self.extensions.clone().unwrap_or_default();
        let OutboundMessage {
            mail_from,
            recipients,
            body,
            body_8bit,
            smtputf8,
            size,
        } = message;

        if let Some(reply) = message_refusal(&mail_from, &body, body_8bit, smtputf8, size, &ext) {
            let outcome = MessageOutcome {
                recipients: recipients
                    .iter()
                    .map(|r| result(r, reply.clone(), Phase::Mail, false))
                    .collect(),
            };
            self.out.push_back(Action::MessageDone(outcome));
            return Ok(());
        }

        let mut results = vec![None; recipients.len()];
        let mut to_send = Vec::new();
        for (i, rcpt) in recipients.iter().enumerate() {
            if !valid_address(rcpt) {
                let reply = Reply::new(
                    553,
                    EnhancedStatus::new(5, 1, 3),
                    "Invalid recipient address, not sent",
                );
                results[i] = Some(result(rcpt, reply, Phase::Rcpt, false));
            } else if !rcpt.is_ascii() && !ext.smtputf8 {
                results[i] = Some(result(rcpt, needs_smtputf8(), Phase::Rcpt, false));
            } else {
                to_send.push(i);
            }
        }
        if to_send.is_empty() {
            let outcome = MessageOutcome {
                recipients: results.into_iter().flatten().collect(),
            };
            self.out.push_back(Action::MessageDone(outcome));
            return Ok(());
        }

        let utf8 = ext.smtputf8
            && (smtputf8
                || !mail_from.is_ascii()
                || to_send.iter().any(|&i| !recipients[i].is_ascii()));
        let mut mail_command = format!("MAIL FROM:<{mail_from}>");
        if ext.size {
            mail_command.push_str(&format!(" SIZE={size}"));
        }
        if body_8bit {
            // Only reached with 8BITMIME offered (message_refusal).
            mail_command.push_str(" BODY=8BITMIME");
        }
        if utf8 {
            mail_command.push_str(" SMTPUTF8");
        }
        mail_command.push_str("\r\n");

        let pipelined = self.config.pipelining && ext.pipelining;
        let mut tx = Box::new(Tx {
            recipients,
            body,
            results,
            to_send,
            next_rcpt: 0,
            accepted: Vec::new(),
            mail: MailState::NotSent,
            mail_command: mail_command.into_bytes(),
            pipelined,
            stuffer: None,
        });
        let rset = std::mem::take(&mut self.half_open);
        if pipelined {
            // RFC 2920 §3.1: RSET, MAIL and RCPT may go in one group, DATA last.
            let mut batch = Vec::new();
            let first = if rset { Phase::Rset } else { Phase::Mail };
            if rset {
                batch.extend_from_slice(b"RSET\r\n");
                self.pending.push_back(Expect::Rset);
            }
            batch.extend_from_slice(&tx.mail_command);
            self.pending.push_back(Expect::Mail);
            for &i in &tx.to_send {
                batch.extend_from_slice(rcpt_command(&tx.recipients[i]).as_slice());
                self.pending.push_back(Expect::Rcpt(i));
            }
            batch.extend_from_slice(b"DATA\r\n");
            self.pending.push_back(Expect::Data);
            tx.mail = MailState::Sent;
            tx.next_rcpt = tx.to_send.len();
            self.send(first, batch);
        } else if rset {
            self.send(Phase::Rset, b"RSET\r\n".to_vec());
            self.pending.push_back(Expect::Rset);
        } else {
            self.send(Phase::Mail, tx.mail_command.clone());
            self.pending.push_back(Expect::Mail);
            tx.mail = MailState::Sent;
        }
        self.stage = Stage::Transaction(tx);
        Ok(())
    }

    /// Ends the session politely; only after [`Action::Ready`]. An open transaction needs
    /// no RSET first: QUIT ends it (RFC 5321 §4.1.1.10).
    pub fn quit(&mut self) -> Result<(), ClientError> {
        if !matches!(self.stage, Stage::Idle) || self.eof {
            return Err(self.not_ready("quit"));
        }
        self.send_quit(None);
        Ok(())
    }

    /// What to do now. See [`Action`].
    pub fn next_action(&mut self) -> Action {
        // Each pass returns, or takes a reply out of `input`, or moves the session to
        // another stage; the input is finite, so this ends.
        loop {
            if let Some(action) = self.out.pop_front() {
                return action;
            }
            if let Stage::Closed(outcome) = &self.stage {
                return Action::Close((**outcome).clone());
            }
            if let Some(&expect) = self.pending.front() {
                match self.reader.read(&self.input) {
                    Parse::Reply(reply, used) => {
                        self.input.drain(..used);
                        self.pending.pop_front();
                        // Decided before the reply is handled: handling it may queue the
                        // next command, and nothing already buffered can be its reply.
                        let leftover = self.pending.is_empty() && !self.input.is_empty();
                        self.on_reply(expect, reply);
                        if leftover {
                            self.unsolicited();
                        }
                    }
                    Parse::Incomplete if self.eof => self.closed_by_server(expect),
                    Parse::Incomplete => {
                        return Action::Receive {
                            timeout: expect.phase(),
                        };
                    }
                    Parse::Malformed(why) => self.protocol_error(
                        expect.phase(),
                        &format!("malformed reply to the {}: {why}", expect.phase().command()),
                    ),
                }
                continue;
            }
            if !self.input.is_empty() {
                self.unsolicited();
                continue;
            }
            let block_size = self.config.data_block_size;
            match &mut self.stage {
                Stage::Transaction(tx) if tx.stuffer.is_some() => {
                    let Some(stuffer) = tx.stuffer.as_mut() else {
                        continue;
                    };
                    let (bytes, last) = stuffer.next_block(&tx.body, block_size);
                    if last {
                        tx.stuffer = None;
                        // Sent: the memory can go now, the message may be large.
                        tx.body = Vec::new();
                        self.pending.push_back(Expect::EndOfData);
                    }
                    return Action::Send {
                        bytes,
                        timeout: Phase::DataBlock,
                    };
                }
                Stage::TlsHandshake if !self.eof => return Action::StartTls,
                Stage::Idle if !self.eof => return Action::Ready,
                Stage::TlsHandshake | Stage::Idle => {
                    let phase = self.current_phase();
                    self.fail(
                        CloseReason::ConnectionLost,
                        phase,
                        Reply::new(
                            451,
                            EnhancedStatus::new(4, 4, 2),
                            "connection closed by the server",
                        ),
                        false,
                    );
                }
                // Nothing awaited and nothing to send in a stage that needs one of them:
                // cannot happen, but ending the connection beats looping or panicking.
                Stage::Setup | Stage::Transaction(_) | Stage::Quitting(_) | Stage::Closed(_) => {
                    self.protocol_error(Phase::Ehlo, "internal error: session stalled")
                }
            }
        }
    }

    // ---- replies -----------------------------------------------------------------------

    fn on_reply(&mut self, expect: Expect, reply: Reply) {
        if reply.code() == 421 && expect != Expect::Quit {
            return self.fail(CloseReason::ServiceClosing, expect.phase(), reply, true);
        }
        match expect {
            Expect::Greeting => self.on_greeting(reply),
            Expect::Ehlo => self.on_ehlo(reply),
            Expect::Helo => self.on_helo(reply),
            Expect::StartTls => self.on_starttls(reply),
            Expect::Rset => self.on_rset(reply),
            Expect::Mail => self.on_mail(reply),
            Expect::Rcpt(i) => self.on_rcpt(i, reply),
            Expect::Data => self.on_data(reply),
            Expect::EndOfData => self.on_end_of_data(reply),
            Expect::Quit => self.finish_quit(Some(reply)),
        }
    }

    fn on_greeting(&mut self, reply: Reply) {
        self.greeting = Some(reply.clone());
        match reply.code() / 100 {
            2 => self.send_hello(Expect::Ehlo),
            4 | 5 => self.refuse_and_quit(CloseReason::Refused, Phase::Greeting, reply, true),
            _ => self.unexpected(Phase::Greeting, &reply),
        }
    }

    fn on_ehlo(&mut self, reply: Reply) {
        match reply.code() / 100 {
            2 => {
                self.extensions = Some(Extensions::from_ehlo(&reply));
                self.esmtp = true;
                self.after_hello();
            }
            // 500/502 from an old server, or a policy 550: RFC 5321 §3.2 has the client
            // fall back to HELO.
            5 => self.send_hello(Expect::Helo),
            4 => self.refuse_and_quit(CloseReason::Refused, Phase::Ehlo, reply, true),
            _ => self.unexpected(Phase::Ehlo, &reply),
        }
    }

    fn on_helo(&mut self, reply: Reply) {
        match reply.code() / 100 {
            2 => {
                self.extensions = Some(Extensions::helo(&reply));
                self.esmtp = false;
                self.after_hello();
            }
            4 | 5 => self.refuse_and_quit(CloseReason::Refused, Phase::Ehlo, reply, true),
            _ => self.unexpected(Phase::Ehlo, &reply),
        }
    }

    fn after_hello(&mut self) {
        let offered = self.extensions.as_ref().is_some_and(|e| e.starttls);
        match (self.tls, self.config.starttls, offered) {
            (true, ..) | (false, StartTls::Never, _) | (false, StartTls::Opportunistic, false) => {
                self.stage = Stage::Idle;
            }
            (false, StartTls::Opportunistic | StartTls::Required, true) => {
                self.send(Phase::StartTls, b"STARTTLS\r\n".to_vec());
                self.pending.push_back(Expect::StartTls);
            }
            (false, StartTls::Required, false) => self.tls_required(None),
        }
    }

    fn on_starttls(&mut self, reply: Reply) {
        match reply.code() / 100 {
            // RFC 3207 §4 names 220; any 2xx means "go ahead" all the same.
            2 => self.stage = Stage::TlsHandshake,
            4 | 5 => match self.config.starttls {
                StartTls::Required => self.tls_required(Some(&reply)),
                // The plain-text EHLO still holds: STARTTLS refused changes nothing.
                StartTls::Opportunistic | StartTls::Never => self.stage = Stage::Idle,
            },
            _ => self.unexpected(Phase::StartTls, &reply),
        }
    }

    fn on_rset(&mut self, reply: Reply) {
        if reply.code() / 100 != 2 {
            // The server's idea of the transaction is unknown now; with pipelining MAIL,
            // RCPT and DATA are already on their way, so not even QUIT is safe to send.
            return self.fail(CloseReason::Refused, Phase::Rset, reply, true);
        }
        if let Stage::Transaction(tx) = &mut self.stage
            && tx.mail == MailState::NotSent
        {
            tx.mail = MailState::Sent;
            let command = tx.mail_command.clone();
            self.send(Phase::Mail, command);
            self.pending.push_back(Expect::Mail);
        }
    }

    fn on_mail(&mut self, reply: Reply) {
        let Stage::Transaction(tx) = &mut self.stage else {
            return self.protocol_error(Phase::Mail, "internal error: MAIL outside a message");
        };
        match reply.code() / 100 {
            2 => {
                tx.mail = MailState::Accepted;
                if !tx.pipelined {
                    self.next_rcpt_or_data();
                }
            }
            4 | 5 => {
                tx.mail = MailState::Refused;
                for i in tx.to_send.clone() {
                    tx.decide(i, &reply, Phase::Mail);
                }
                // No transaction was opened, so no RSET is needed. With pipelining the
                // RCPT and DATA replies (503s) are still to come and are read first.
                if !tx.pipelined {
                    self.finish_message(false);
                }
            }
            _ => self.unexpected(Phase::Mail, &reply),
        }
    }

    fn on_rcpt(&mut self, i: usize, reply: Reply) {
        let Stage::Transaction(tx) = &mut self.stage else {
            return self.protocol_error(Phase::Rcpt, "internal error: RCPT outside a message");
        };
        let class = reply.code() / 100;
        if !matches!(class, 2 | 4 | 5) {
            return self.unexpected(Phase::Rcpt, &reply);
        }
        if tx.mail == MailState::Accepted {
            if class == 2 {
                tx.accepted.push(i);
            } else {
                tx.decide(i, &reply, Phase::Rcpt);
            }
        }
        // After a refused MAIL (pipelining) the recipients keep the MAIL reply: this one
        // is just the server's 503 to a RCPT without a transaction.
        if !tx.pipelined {
            self.next_rcpt_or_data();
        }
    }

    /// One command at a time: the next RCPT, else DATA, else the end of a message no
    /// recipient of which was accepted.
    fn next_rcpt_or_data(&mut self) {
        let Stage::Transaction(tx) = &mut self.stage else {
            return;
        };
        if let Some(&i) = tx.to_send.get(tx.next_rcpt) {
            tx.next_rcpt += 1;
            let command = rcpt_command(&tx.recipients[i]);
            self.send(Phase::Rcpt, command);
            self.pending.push_back(Expect::Rcpt(i));
        } else if tx.accepted.is_empty() {
            // MAIL was accepted: the server holds a transaction until RSET.
            self.finish_message(true);
        } else {
            self.send(Phase::DataInit, b"DATA\r\n".to_vec());
            self.pending.push_back(Expect::Data);
        }
    }

    fn on_data(&mut self, reply: Reply) {
        let Stage::Transaction(tx) = &mut self.stage else {
            return self.protocol_error(Phase::DataInit, "internal error: DATA outside a message");
        };
        match reply.code() / 100 {
            3 if tx.mail == MailState::Accepted && !tx.accepted.is_empty() => {
                tx.stuffer = Some(DotStuffer::default());
            }
            // The server wants content for a transaction without recipients (RFC 2920 §3.1
            // says it must refuse DATA then). Whatever we sent now would be read as data,
            // QUIT included, so the connection is dropped; every recipient already has
            // its final answer.
            3 => self.protocol_error(
                Phase::DataInit,
                &format!(
                    "the server accepted DATA without any accepted recipient: {}",
                    reply_line(&reply)
                ),
            ),
            4 | 5 => {
                for i in tx.accepted.clone() {
                    tx.decide(i, &reply, Phase::DataInit);
                }
                let open = tx.mail == MailState::Accepted;
                self.finish_message(open);
            }
            _ => self.unexpected(Phase::DataInit, &reply),
        }
    }

    fn on_end_of_data(&mut self, reply: Reply) {
        let Stage::Transaction(tx) = &mut self.stage else {
            return self.protocol_error(
                Phase::DataTermination,
                "internal error: end of data outside a message",
            );
        };
        match reply.code() / 100 {
            // RFC 5321 §4.1.1.4: the transaction ends here whatever the reply.
            2 | 4 | 5 => {
                for i in tx.accepted.clone() {
                    tx.decide(i, &reply, Phase::DataTermination);
                }
                self.finish_message(false);
            }
            _ => self.unexpected(Phase::DataTermination, &reply),
        }
    }

    // ---- outcomes ----------------------------------------------------------------------

    /// The current message is over: report it and become idle.
    fn finish_message(&mut self, half_open: bool) {
        if let Stage::Transaction(tx) = std::mem::replace(&mut self.stage, Stage::Idle) {
            self.half_open = half_open;
            let outcome = outcome_of(*tx, None);
            self.out.push_back(Action::MessageDone(outcome));
        }
    }

    /// Ends the connection now, without QUIT. Recipients of the current message without a
    /// final answer become temporary failures with `reply` (or a 4xx standing in for it).
    fn fail(&mut self, reason: CloseReason, phase: Phase, reply: Reply, remote: bool) {
        match std::mem::replace(&mut self.stage, Stage::Idle) {
            Stage::Closed(outcome) => {
                self.stage = Stage::Closed(outcome);
                return;
            }
            // QUIT is already out: the session is over whatever happens to its reply.
            Stage::Quitting(stored) => {
                self.stage = Stage::Quitting(stored);
                return self.finish_quit(None);
            }
            Stage::Transaction(tx) => {
                let fill = if reply.code() / 100 == 4 {
                    (reply.clone(), phase, remote)
                } else {
                    let text = format!(
                        "connection ended during the {}: {}",
                        phase.command(),
                        reply_line(&reply)
                    );
                    (
                        Reply::new(451, EnhancedStatus::new(4, 4, 2), &text),
                        phase,
                        false,
                    )
                };
                let outcome = outcome_of(*tx, Some(fill));
                self.out.push_back(Action::MessageDone(outcome));
            }
            Stage::Setup | Stage::TlsHandshake | Stage::Idle => {}
        }
        // Whatever was about to be written must not be.
        self.out.retain(|a| !matches!(a, Action::Send { .. }));
        self.pending.clear();
        self.input.clear();
        self.reader.reset();
        self.stage = Stage::Closed(Box::new(ConnectionOutcome {
            reason,
            phase,
            reply,
            remote,
            tls: self.tls,
        }));
    }

    /// Sends QUIT, then closes with `outcome` (or a plain [`CloseReason::Quit`]).
    fn send_quit(&mut self, outcome: Option<ConnectionOutcome>) {
        self.send(Phase::Quit, b"QUIT\r\n".to_vec());
        self.pending.push_back(Expect::Quit);
        self.stage = Stage::Quitting(outcome.map(Box::new));
    }

    fn refuse_and_quit(&mut self, reason: CloseReason, phase: Phase, reply: Reply, remote: bool) {
        let outcome = ConnectionOutcome {
            reason,
            phase,
            reply,
            remote,
            tls: self.tls,
        };
        self.send_quit(Some(outcome));
    }

    /// The reply to QUIT came, or will not come.
    fn finish_quit(&mut self, reply: Option<Reply>) {
        let stored = match std::mem::replace(&mut self.stage, Stage::Idle) {
            Stage::Quitting(stored) => stored,
            other => {
                self.stage = other;
                None
            }
        };
        let outcome = stored.map(|b| *b).unwrap_or_else(|| {
            let remote = reply.is_some();
            ConnectionOutcome {
                reason: CloseReason::Quit,
                phase: Phase::Quit,
                reply: reply.unwrap_or_else(|| {
                    Reply::new(
                        221,
                        EnhancedStatus::new(2, 0, 0),
                        "connection closed after QUIT",
                    )
                }),
                remote,
                tls: self.tls,
            }
        });
        self.out.retain(|a| !matches!(a, Action::Send { .. }));
        self.pending.clear();
        self.input.clear();
        self.reader.reset();
        self.stage = Stage::Closed(Box::new(outcome));
    }

    fn tls_required(&mut self, refusal: Option<&Reply>) {
        let text = match refusal {
            None => "TLS is required, but the server did not offer STARTTLS".to_owned(),
            Some(r) => format!(
                "TLS is required, but the server refused STARTTLS: {}",
                reply_line(r)
            ),
        };
        let reply = Reply::new(451, EnhancedStatus::new(4, 7, 4), &text);
        self.refuse_and_quit(CloseReason::TlsRequired, Phase::StartTls, reply, false);
    }

    /// Octets left over once no reply is awaited.
    fn unsolicited(&mut self) {
        match self.stage {
            // Closing anyway (QUIT answered, 421, failure): nothing to protect any more.
            Stage::Closed(_) | Stage::Quitting(_) => {
                self.input.clear();
                return;
            }
            Stage::TlsHandshake => return self.hostile_after_starttls(),
            _ => {}
        }
        // A server may announce its shutdown at any moment (RFC 5321 §3.8); that is the one
        // reply worth reading unasked.
        self.reader.reset();
        if let Parse::Reply(reply, _) = self.reader.read(&self.input)
            && reply.code() == 421
        {
            let phase = self.current_phase();
            return self.fail(CloseReason::ServiceClosing, phase, reply, true);
        }
        let phase = self.current_phase();
        self.protocol_error(phase, "the server sent data that no command asked for");
    }

    fn hostile_after_starttls(&mut self) {
        self.fail(
            CloseReason::HostileServer,
            Phase::StartTls,
            Reply::new(
                451,
                EnhancedStatus::new(4, 7, 0),
                "the server sent data after its 220 to STARTTLS (response injection?)",
            ),
            false,
        );
    }

    fn unexpected(&mut self, phase: Phase, reply: &Reply) {
        let text = format!(
            "unexpected reply to the {}: {}",
            phase.command(),
            reply_line(reply)
        );
        self.protocol_error(phase, &text);
    }

    fn protocol_error(&mut self, phase: Phase, text: &str) {
        self.fail(
            CloseReason::ProtocolError,
            phase,
            Reply::new(451, EnhancedStatus::new(4, 5, 0), text),
            false,
        );
    }

    fn closed_by_server(&mut self, expect: Expect) {
        if expect == Expect::Quit {
            return self.finish_quit(None);
        }
        let phase = expect.phase();
        let text = format!(
            "connection closed by the server while waiting for the reply to the {}",
            phase.command()
        );
        self.fail(
            CloseReason::ConnectionLost,
            phase,
            Reply::new(451, EnhancedStatus::new(4, 4, 2), &text),
            false,
        );
    }

    // ---- helpers -----------------------------------------------------------------------

    fn send(&mut self, timeout: Phase, bytes: Vec<u8>) {
        self.out.push_back(Action::Send { bytes, timeout });
    }

    fn send_hello(&mut self, expect: Expect) {
        let verb = if expect == Expect::Helo {
            "HELO"
        } else {
            "EHLO"
        };
        let command = format!("{verb} {}\r\n", self.config.helo_name);
        self.send(Phase::Ehlo, command.into_bytes());
        self.pending.push_back(expect);
    }

    /// The phase a timeout or error now belongs to.
    fn current_phase(&self) -> Phase {
        if let Some(expect) = self.pending.front() {
            return expect.phase();
        }
        match &self.stage {
            Stage::Transaction(tx) if tx.stuffer.is_some() => Phase::DataBlock,
            Stage::TlsHandshake => Phase::StartTls,
            Stage::Quitting(_) => Phase::Quit,
            Stage::Idle | Stage::Setup | Stage::Transaction(_) | Stage::Closed(_) => Phase::Ehlo,
        }
    }

    fn not_ready(&self, got: &'static str) -> ClientError {
        ClientError::NotReady {
            got,
            state: if self.eof && matches!(self.stage, Stage::Idle) {
                "closed by the server"
            } else {
                self.stage.name()
            },
        }
    }
}

/// Why a whole message cannot be sent to this server, decided before MAIL.
fn message_refusal(
    mail_from: &str,
    body: &[u8],
    body_8bit: bool,
    smtputf8: bool,
    size: u64,
    ext: &Extensions,
) -> Option<Reply> {
    if !mail_from.is_empty() && !valid_address(mail_from) {
        return Some(Reply::new(
            553,
            EnhancedStatus::new(5, 1, 7),
            "Invalid sender address, not sent",
        ));
    }
    if body::has_bare_cr_or_lf(body) {
        return Some(Reply::new(
            554,
            EnhancedStatus::new(5, 6, 0),
            "Message contains a bare CR or LF, not sent",
        ));
    }
    if (smtputf8 || !mail_from.is_ascii()) && !ext.smtputf8 {
        return Some(needs_smtputf8());
    }
    if body_8bit && !ext.eight_bit_mime {
        return Some(Reply::new(
            554,
            EnhancedStatus::new(5, 6, 3),
            "Conversion required but not supported: 8-bit message, the server lacks 8BITMIME",
        ));
    }
    if let Some(max) = ext.max_size
        && size > max
    {
        return Some(Reply::new(
            552,
            EnhancedStatus::new(5, 3, 4),
            &format!("Message size {size} exceeds the server's fixed maximum of {max}"),
        ));
    }
    None
}

fn needs_smtputf8() -> Reply {
    Reply::new(
        553,
        EnhancedStatus::new(5, 6, 7),
        "Non-ASCII address or message, and the server lacks SMTPUTF8",
    )
}

/// An address that can go between angle brackets without changing the command: no control
/// characters (so no CR or LF to start a new command) and no `<` or `>` (which would end the
/// path early and let the rest pass for parameters). Everything else is the server's to
/// judge.
fn valid_address(address: &str) -> bool {
    !address.is_empty()
        && !address
            .chars()
            .any(|c| c.is_control() || c == '<' || c == '>')
}

fn rcpt_command(recipient: &str) -> Vec<u8> {
    format!("RCPT TO:<{recipient}>\r\n").into_bytes()
}

/// A recipient's result; a reply whose class is not 2, 4 or 5 (never given here) becomes a
/// temporary failure so that status and reply always agree.
fn result(recipient: &str, reply: Reply, phase: Phase, remote: bool) -> RecipientResult {
    let (status, reply, remote) = match DeliveryStatus::of(&reply) {
        Some(status) => (status, reply, remote),
        None => (
            DeliveryStatus::Temporary,
            Reply::new(
                451,
                EnhancedStatus::new(4, 5, 0),
                &format!("unexpected reply: {}", reply_line(&reply)),
            ),
            false,
        ),
    };
    RecipientResult {
        recipient: recipient.to_owned(),
        status,
        reply,
        phase,
        remote,
    }
}

/// The message's results; recipients still without one get `fill`.
fn outcome_of(tx: Tx, fill: Option<(Reply, Phase, bool)>) -> MessageOutcome {
    let Tx {
        recipients,
        results,
        ..
    } = tx;
    let recipients = recipients
        .iter()
        .zip(results)
        .map(|(recipient, done)| {
            done.unwrap_or_else(|| match &fill {
                Some((reply, phase, remote)) => result(recipient, reply.clone(), *phase, *remote),
                // Every recipient is decided before a message ends normally; this only
                // keeps a bug from becoming a panic or a lost recipient.
                None => result(
                    recipient,
                    Reply::new(451, EnhancedStatus::new(4, 3, 0), "internal error"),
                    Phase::DataTermination,
                    false,
                ),
            })
        })
        .collect();
    MessageOutcome { recipients }
}

/// A reply on one line, for embedding in a made-up reply's text.
fn reply_line(reply: &Reply) -> String {
    match reply.status() {
        Some(s) => format!("{} {} {}", reply.code(), s, reply.text()),
        None => format!("{} {}", reply.code(), reply.text()),
    }
}
