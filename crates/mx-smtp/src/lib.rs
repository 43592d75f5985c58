//! SMTP wire handling for both sides, sans-io: the server session state machine (this crate,
//! now) and later the client delivery session; replies with enhanced status codes.
//!
//! # The server session
//!
//! [`ServerSession`] is a pure state machine: no sockets, no clock, no tokio. The driver (the
//! relay) owns the connection, TLS, timeouts, the spool and the policy. It feeds the octets it
//! reads and acts on the [`Event`]s the session gives back; where the session needs a policy
//! answer it emits one event and then nothing more until the answer comes, while input
//! keeps buffering. Replies therefore always leave in command order, which is what makes
//! PIPELINING (RFC 2920) safe.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//! use std::sync::Arc;
//! use mx_smtp::{Event, MessageDecision, PeerInfo, RcptDecision, ServerConfig, ServerSession};
//!
//! fn serve(mut socket: TcpStream, config: Arc<ServerConfig>) -> std::io::Result<()> {
//!     let ip = socket.peer_addr()?.ip();
//!     let mut s = ServerSession::new(config, PeerInfo { ip, tls: false });
//!     // An early-talker check would go here: wait a little, and if the client already
//!     // sent something, write `ServerSession::early_talker_reply()` and close.
//!     socket.write_all(&s.greeting().to_bytes())?;
//!     let mut buf = [0u8; 8192];
//!     loop {
//!         match socket.read(&mut buf)? {
//!             0 => s.eof(),
//!             n => s.feed(&buf[..n]),
//!         }
//!         while let Some(event) = s.next_event() {
//!             match event {
//!                 Event::Reply(reply) => socket.write_all(&reply.to_bytes())?,
//!                 Event::StartTls => {
//!                     // The 220 went out with the previous event; handshake here, then:
//!                     s.tls_started().expect("asked for");
//!                 }
//!                 Event::CheckRecipient { address, .. } => {
//!                     let ok = address == "postmaster" || address.ends_with("@example.org");
//!                     let decision = if ok {
//!                         RcptDecision::Accept
//!                     } else {
//!                         RcptDecision::Reject(mx_smtp::Reply::new(
//!                             550,
//!                             mx_smtp::EnhancedStatus::new(5, 1, 1),
//!                             "No such user",
//!                         ))
//!                     };
//!                     s.recipient_decision(decision).expect("asked for");
//!                 }
//!                 Event::Authenticate { .. } => s.auth_decision(false).expect("asked for"),
//!                 Event::Message(message) => {
//!                     let _ = message.body; // spool it, then:
//!                     let queue_id = "4F2A9C".to_owned();
//!                     s.message_decision(MessageDecision::Accepted { queue_id })
//!                         .expect("asked for");
//!                 }
//!                 Event::Close => return Ok(()),
//!             }
//!         }
//!     }
//! }
//! ```
//!
//! A driver that writes every reply at once is correct; one that collects the replies until
//! `next_event` returns `None` (or a decision event) and writes them together saves packets,
//! as RFC 2920 §3.2 suggests.
//!
//! # What the session guarantees
//!
//! - **Smuggling-proof DATA.** Only `<CRLF>.<CRLF>` ends DATA. A bare CR or LF anywhere in
//!   the data (so every `\n.\n`, `\r.\r`, `\r\n.\n`... variant) does not end anything: the
//!   session reads on to the real end and refuses the whole message with `550 5.5.2`. It
//!   never normalises line endings and never splits one DATA into two messages. BDAT content
//!   gets the same check, since a relay may later send it on with DATA. Command lines too
//!   end only at CRLF: one with a bare CR or LF inside is refused whole with `500 5.5.2`, so
//!   `NOOP\nMAIL FROM:...\r\n` is one refused line, not a NOOP and a MAIL.
//! - **Exact bodies.** [`Message::body`] is the data as received after dot-unstuffing (a
//!   leading dot removed from lines that had one, nothing else), CRLF line endings, without
//!   the final `.CRLF`.
//! - **Bounded memory.** Command lines are dropped as they come once over the limit (512,
//!   or 12288 for AUTH, RFC 4954 §4) and answered `500 5.5.6` when they end. A message over
//!   `max_message_size` stops being stored; the data is read to its end and refused with
//!   `552 5.3.4`. Input is only buffered while a decision is pending
//!   ([`ServerSession::buffered`]).
//! - **STARTTLS** discards whatever followed the STARTTLS line in plain text
//!   (CVE-2011-0411) and starts over before EHLO (RFC 3207 §4.2).
//! - **Addresses as written.** `<>` is the null sender; `<Postmaster>` (any case, no domain)
//!   is the recipient `postmaster`; a source route `<@a,@b:user@c>` is accepted and dropped
//!   (RFC 5321 §4.1.1.3). `%`, `!` and quoting are left as they are for the policy to judge.
//!   Non-ASCII needs SMTPUTF8 on MAIL, else `553 5.6.7` (RFC 6531).
//!
//! # Reply codes
//!
//! Every refusal carries an enhanced status code (RFC 3463, RFC 2034), even before EHLO.
//!
//! | situation | reply |
//! | --- | --- |
//! | unknown command | `500 5.5.1` |
//! | command recognised, not implemented (EXPN, ETRN, ATRN, BURL, LHLO) | `502 5.5.1` |
//! | line too long | `500 5.5.6` |
//! | bare CR or LF, or invalid UTF-8, in a command line | `500 5.5.2` |
//! | argument syntax | `501 5.5.2` |
//! | bad sender / recipient address | `501 5.1.7` / `501 5.1.3` |
//! | invalid parameter value / parameter not offered | `501 5.5.4` / `555 5.5.4` |
//! | bad sequence | `503 5.5.1` |
//! | DATA or BDAT when every RCPT was refused | `554 5.5.1` (RFC 2920 §3.1) |
//! | too many recipients | `452 4.5.3` |
//! | SIZE too big, or message too big | `552 5.3.4` |
//! | bare CR or LF in the message | `550 5.5.2` |
//! | text line over `max_text_line` | `550 5.5.6` at end of data |
//! | non-ASCII address without SMTPUTF8 | `553 5.6.7` |
//! | AUTH before TLS when required | `530 5.7.0` |
//! | unknown mechanism / bad base64 / cancelled | `504 5.5.4` / `501 5.5.2` / `501 5.0.0` |
//! | auth failed / succeeded | `535 5.7.8` / `235 2.7.0` |
//! | too many errors | `421 4.7.0`, then [`Event::Close`] |
//! | MAIL, RCPT, RSET/NOOP, VRFY, QUIT | `250 2.1.0`, `250 2.1.5`, `250 2.0.0`, `252 2.5.0`, `221 2.0.0` |
//! | DATA, message queued | `354`, `250 2.0.0 Ok: queued as <id>` |
//!
//! A text line over the limit is refused at the end of data rather than with the `500` of
//! RFC 5321 §4.5.3.1.6, because the reply to the end of data must be one of those that
//! RFC 5321 §4.3.2 lists for it (`550` is its policy refusal); `5.5.6` names the cause.
//!
//! Errors counted toward `max_errors` are the client's own: syntax, sequence, unknown
//! commands, long lines, bad addresses, tainted messages, failed AUTH. Policy refusals of
//! recipients and messages, `452` for too many recipients and `552` for size are not.

mod address;
mod auth;
pub mod client;
mod config;
mod data;
pub mod dsn;
mod error;
mod reply;
mod server;

pub use auth::{AuthMechanism, Password};
// The client's generic names (`Action`, `Phase`, `StartTls`...) stay under `client::`.
pub use client::{
    ClientConfig, ClientError, ClientSession, CloseReason, ConnectionOutcome, DeliveryStatus,
    MessageOutcome, OutboundMessage, RecipientResult,
};
pub use config::{PeerInfo, ServerConfig};
pub use error::SmtpError;
pub use reply::{EnhancedStatus, Reply};
pub use server::{
    BodyType, Envelope, Event, Message, MessageDecision, RcptDecision, ServerSession,
};
