//! Delivery status notifications (RFC 3464): the bounce and the delay notice that go back
//! to the sender of a message that could not be delivered, or not yet.
//!
//! Pure functions: no I/O and no clock. The queue decides *when* to notify and about which
//! recipients, passes the time in, and sends the [`Dsn`] it gets back like any other message,
//! from the null sender.
//!
//! ```
//! use mx_smtp::dsn::{self, Action, DsnInput, DsnKind, RecipientReport};
//! use mx_smtp::{EnhancedStatus, Reply};
//!
//! let reply = Reply::new(550, EnhancedStatus::new(5, 1, 1), "User unknown");
//! let input = DsnInput {
//!     reporting_mta: "mx.example.org",
//!     original_envelope_id: None,
//!     arrival_date: 1_767_225_600,
//!     now: 1_767_229_200,
//!     original_sender: "alice@example.org",
//!     recipients: vec![RecipientReport {
//!         final_recipient: "bob@example.net".into(),
//!         action: Action::Failed,
//!         status: dsn::status_for_reply(&reply, "5.0.0"),
//!         remote_mta: Some("mx.example.net".into()),
//!         diagnostic: Some(reply),
//!         last_attempt: Some(1_767_229_200),
//!         will_retry_until: None,
//!     }],
//!     original_message: b"From: alice@example.org\r\nSubject: hi\r\n\r\nbody\r\n",
//!     kind: DsnKind::Failed,
//!     message_id_domain: "mx.example.org",
//! };
//! let bounce = dsn::build(&input).expect("the sender is not null");
//! assert_eq!(bounce.mail_from, "");
//! assert_eq!(bounce.recipient, "alice@example.org");
//! assert!(!bounce.is_8bit());
//! ```
//!
//! # The message
//!
//! A `multipart/report; report-type=delivery-status` (RFC 6522) with three parts: a short
//! explanation in plain words, the `message/delivery-status` part with one block per
//! recipient, and the original message's header block as `text/rfc822-headers`. Only the
//! headers are returned, never the body: bounces stay small, and a forged sender cannot use
//! us to reflect content at a third party (backscatter).
//!
//! The message has CRLF line endings only, and no line over 998 octets (RFC 5322 §2.1.1):
//! header fields are folded at spaces near 78 octets; a single word too long for a line
//! (which only input far beyond protocol limits can give) is broken where it has to be.
//! Everything this module writes itself is ASCII. Text from outside is cleaned first:
//! control characters become spaces, so no input can start a line or a field of its own.
//!
//! # Decisions
//!
//! - **No bounce for a bounce.** [`build`] returns `None` for the null sender (`""` or
//!   `"<>"`): RFC 5321 §4.5.5 and §6.1, RFC 3464 §2, loop avoidance. It also returns `None` when
//!   `recipients` is empty, since a delivery-status part needs at least one recipient block
//!   (RFC 3464 §2.1).
//! - **Deterministic identity.** The `Message-ID` is `<dsn.{now}.{h}@{message_id_domain}>`
//!   with `h` 32 hex digits of FNV-1a-128 over every input field (reporting MTA, envelope id,
//!   times, sender, kind, each recipient report) and the header block that part 3 returns.
//!   The boundary is `=_mxroute-dsn.{b}` with `b` 16 hex digits of a hash of the same inputs
//!   *without* the original message, so a test can learn it and then plant it in an
//!   original. If the boundary occurs anywhere in any part, a counter is appended and the
//!   check repeated until it does not. `=_` cannot occur in base64 and only as a soft line
//!   break in quoted-printable, which makes a collision unlikely to begin with.
//! - **Part 3** is the original header block: everything up to the first empty line, its
//!   last CRLF included, byte for byte; at most [`MAX_RETURNED_HEADERS`] octets (cut at a
//!   line end), whether or not the original has a header/body separator. Only broken input
//!   is changed: a bare CR or LF becomes CRLF, NUL becomes a space, and a line over 998
//!   octets is broken with `CRLF SP` (a header continuation).
//! - **8-bit.** Non-ASCII octets in the original headers (SMTPUTF8 mail, RFC 6532) are kept
//!   as they are, and part 3 and the whole message are then labelled
//!   `Content-Transfer-Encoding: 8bit`. [`Dsn::is_8bit`] tells the sender: such a DSN must go
//!   with `BODY=8BITMIME` (RFC 6152) to a server that offers it, and with `SMTPUTF8`
//!   (RFC 6531) when [`Dsn::needs_smtputf8`] says so or the original headers were UTF-8.
//!   The explanation part is `us-ascii` unless an address or the remote reply text is not
//!   ASCII, and then `utf-8`. The `message/delivery-status` part is always 7-bit: a non-ASCII
//!   address is written `utf-8; ` with `\x{HEX}` escapes (RFC 6533 §3, utf-8-addr-xtext),
//!   and non-ASCII characters in a Diagnostic-Code become `?`.
//! - **Diagnostic-Code** is `smtp; <code> <enhanced> <text>`, the lines of a multi-line reply
//!   joined with spaces, cut (with `...`) so that the whole field unfolded stays within 998
//!   octets.
//! - **Address fields** take the bare address; a leading `rfc822;` on `final_recipient` or
//!   `dns;` on `remote_mta` is accepted and not repeated. `Original-Envelope-Id` is written as
//!   given (the caller passes the ENVID as it should appear, RFC 3461 §4.4).
//! - `Will-Retry-Until` is written only for recipients whose action is `delayed`
//!   (RFC 3464 §2.3.9); `Last-Attempt-Date` whenever it is known.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::reply::{EnhancedStatus, Reply};

/// The most octets of the original header block that part 3 returns.
pub const MAX_RETURNED_HEADERS: usize = 64 * 1024;

/// The longest line RFC 5322 §2.1.1 allows, CRLF not counted.
const MAX_LINE: usize = 998;
/// Where header fields and text are folded when they can be (RFC 5322 §2.1.1 "SHOULD").
const SOFT_LINE: usize = 78;

/// What the notification as a whole is about; chooses the Subject and the explanation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DsnKind {
    /// A bounce: delivery failed for good.
    Failed,
    /// A delay notice: still being retried.
    Delayed,
}

/// The `Action` of one recipient (RFC 3464 §2.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    /// The field value: `failed`, `delayed`, `delivered`, `relayed` or `expanded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            Action::Failed => "delivery failed; no further attempts will be made",
            Action::Delayed => "delivery is delayed; the mail system is still trying",
            Action::Delivered => "delivered",
            Action::Relayed => {
                "relayed to a system that does not send delivery notifications; \
                 no further notice will follow"
            }
            Action::Expanded => "delivered to an alias or list, which passed it on",
        }
    }
}

/// What happened for one recipient.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecipientReport {
    /// The recipient address (written `rfc822; addr`, or `utf-8; ...` when not ASCII).
    pub final_recipient: String,
    pub action: Action,
    /// Such as 5.1.1; see [`status_for_reply`].
    pub status: EnhancedStatus,
    /// The host name of the exchanger that answered (written `dns; host`).
    pub remote_mta: Option<String>,
    /// The remote reply, written as `Diagnostic-Code: smtp; 550 5.1.1 User unknown`.
    pub diagnostic: Option<Reply>,
    /// Unix seconds of the last delivery attempt.
    pub last_attempt: Option<u64>,
    /// Unix seconds until which delivery will be retried; written for `Action::Delayed` only.
    pub will_retry_until: Option<u64>,
}

/// Everything a notification is built from.
#[derive(Clone, Debug)]
pub struct DsnInput<'a> {
    /// Our host name: `From: MAILER-DAEMON@...` and `Reporting-MTA: dns; ...`.
    pub reporting_mta: &'a str,
    /// The ENVID given on MAIL (RFC 3461), if any.
    pub original_envelope_id: Option<&'a str>,
    /// Unix seconds, when we received the message.
    pub arrival_date: u64,
    /// Unix seconds, for `Date:`.
    pub now: u64,
    /// The envelope MAIL FROM; `""` (or `"<>"`) is the null sender.
    pub original_sender: &'a str,
    /// Only the recipients this notification reports on.
    pub recipients: Vec<RecipientReport>,
    /// The queued message as received (CRLF).
    pub original_message: &'a [u8],
    pub kind: DsnKind,
    /// The right-hand side of the `Message-ID` (ASCII; an IDN in A-label form).
    pub message_id_domain: &'a str,
}

/// A notification ready to queue: send `message` with `MAIL FROM:<>` to `recipient`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dsn {
    /// Always `""`: notifications go from the null sender (RFC 5321 §4.5.5, RFC 3464 §2).
    pub mail_from: String,
    /// The original sender, the one envelope recipient.
    pub recipient: String,
    /// The full RFC 5322 message, CRLF line endings.
    pub message: Vec<u8>,
}

impl Dsn {
    /// Whether the message holds any octet above 127 (from the original headers, an address
    /// or a remote reply). Such a message needs `BODY=8BITMIME`, and SMTPUTF8 when its
    /// header text is UTF-8; a 7-bit message can go anywhere.
    pub fn is_8bit(&self) -> bool {
        !self.message.is_ascii()
    }

    /// Whether the recipient address is not ASCII, so that `RCPT TO` (and the `To:` field)
    /// need SMTPUTF8 (RFC 6531).
    pub fn needs_smtputf8(&self) -> bool {
        !self.recipient.is_ascii()
    }
}

/// The enhanced status code to report for a remote reply (RFC 3463).
///
/// The reply's own enhanced code when it has a valid one; if its class disagrees with the
/// basic code, the basic code wins (clients act on the basic code, RFC 5321 §4.2) and only
/// the class is changed: `550 4.2.2` gives 5.2.2. Without one, the class decides: 2xx gives
/// 2.0.0, 4xx 4.0.0 and 5xx `permanent_default` (such as `"5.0.0"`, or a code that fits the
/// command that failed). Any other code is no valid final reply and is taken as permanent.
/// A `permanent_default` that is not a valid class-5 code is replaced by 5.0.0.
pub fn status_for_reply(reply: &Reply, permanent_default: &str) -> EnhancedStatus {
    let permanent = parse_status(permanent_default)
        .filter(|s| s.class == 5)
        .unwrap_or(EnhancedStatus::new(5, 0, 0));
    let class = match reply.code() / 100 {
        c @ (2 | 4 | 5) => c as u8,
        _ => return permanent,
    };
    match reply.status() {
        Some(s) if s.is_valid() => EnhancedStatus::new(class, s.subject, s.detail),
        _ => match class {
            2 => EnhancedStatus::new(2, 0, 0),
            4 => EnhancedStatus::new(4, 0, 0),
            _ => permanent,
        },
    }
}

/// `class.subject.detail` with each part decimal digits only.
fn parse_status(text: &str) -> Option<EnhancedStatus> {
    let mut parts = text.trim().split('.');
    let mut number = |max: u16| -> Option<u16> {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok().filter(|&n| n <= max)
    };
    let class = number(9)?;
    let subject = number(999)?;
    let detail = number(999)?;
    if parts.next().is_some() {
        return None;
    }
    let status = EnhancedStatus::new(class as u8, subject, detail);
    status.is_valid().then_some(status)
}

/// Builds the notification, or `None` for the null sender (never bounce a bounce) and for an
/// empty recipient list. See the module documentation for what the message holds.
pub fn build(input: &DsnInput) -> Option<Dsn> {
    let sender = envelope_sender(input.original_sender)?;
    if input.recipients.is_empty() {
        return None;
    }

    let headers = returned_headers(input.original_message);
    let envelope_hash = envelope_hash(input);
    let mut message_hash = Fnv128::new();
    message_hash.field(&envelope_hash.to_le_bytes());
    message_hash.field(&headers.bytes);
    message_hash.field(input.message_id_domain.as_bytes());

    let (notice, notice_8bit) = notification_text(input);
    let status = delivery_status(input);
    let boundary = choose_boundary(envelope_hash, &[&notice, &status, &headers.bytes]);

    let mta = domain_or(input.reporting_mta, "localhost");
    let id_domain = domain_or(input.message_id_domain, &mta);
    let any_8bit = notice_8bit || headers.eight_bit;

    let mut out = Vec::with_capacity(2048 + headers.bytes.len());
    field(
        &mut out,
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{mta}>"),
    );
    field(&mut out, "To", &format!("<{}>", clean(&sender)));
    let subject = match input.kind {
        DsnKind::Failed => "Undelivered Mail Returned to Sender",
        DsnKind::Delayed => "Delayed Mail (still being retried)",
    };
    field(&mut out, "Subject", subject);
    field(&mut out, "Date", &rfc5322_date(input.now));
    field(
        &mut out,
        "Message-ID",
        &format!(
            "<dsn.{}.{:032x}@{id_domain}>",
            input.now,
            message_hash.finish()
        ),
    );
    field(&mut out, "MIME-Version", "1.0");
    field(&mut out, "Auto-Submitted", "auto-replied");
    field(
        &mut out,
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    if any_8bit {
        field(&mut out, "Content-Transfer-Encoding", "8bit");
    }
    out.extend_from_slice(b"\r\nThis is a MIME-encapsulated message.\r\n");

    // Part 1: the explanation.
    open_part(&mut out, &boundary);
    field(&mut out, "Content-Description", "Notification");
    if notice_8bit {
        field(&mut out, "Content-Type", "text/plain; charset=utf-8");
        field(&mut out, "Content-Transfer-Encoding", "8bit");
    } else {
        field(&mut out, "Content-Type", "text/plain; charset=us-ascii");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&notice);

    // Part 2: the machine-readable report.
    open_part(&mut out, &boundary);
    field(&mut out, "Content-Description", "Delivery report");
    field(&mut out, "Content-Type", "message/delivery-status");
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&status);

    // Part 3: the original header block.
    open_part(&mut out, &boundary);
    field(
        &mut out,
        "Content-Description",
        "Undelivered Message Headers",
    );
    if headers.eight_bit {
        let utf8 = std::str::from_utf8(&headers.bytes).is_ok();
        let ct = if utf8 {
            "text/rfc822-headers; charset=utf-8"
        } else {
            "text/rfc822-headers"
        };
        field(&mut out, "Content-Type", ct);
        field(&mut out, "Content-Transfer-Encoding", "8bit");
    } else {
        field(&mut out, "Content-Type", "text/rfc822-headers");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&headers.bytes);

    // The CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");

    Some(Dsn {
        mail_from: String::new(),
        recipient: sender,
        message: out,
    })
}

/// The sender without angle brackets and control characters, or `None` for the null sender.
fn envelope_sender(raw: &str) -> Option<String> {
    let s = raw.trim();
    let s = s
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(s);
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn open_part(out: &mut Vec<u8>, boundary: &str) {
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The first boundary candidate that occurs in none of the parts.
fn choose_boundary(hash: u128, parts: &[&[u8]]) -> String {
    let base = format!("=_mxroute-dsn.{:016x}", hash as u64);
    let mut candidate = base.clone();
    let mut n = 0u32;
    while parts.iter().any(|p| contains(p, candidate.as_bytes())) {
        n += 1;
        candidate = format!("{base}.{n}");
    }
    candidate
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A hash of every input but the original message.
fn envelope_hash(input: &DsnInput) -> u128 {
    let mut h = Fnv128::new();
    h.field(input.reporting_mta.as_bytes());
    match input.original_envelope_id {
        Some(id) => h.field(id.as_bytes()),
        None => h.field(b"\xff"),
    }
    h.field(&input.arrival_date.to_le_bytes());
    h.field(&input.now.to_le_bytes());
    h.field(input.original_sender.as_bytes());
    h.field(match input.kind {
        DsnKind::Failed => b"F",
        DsnKind::Delayed => b"D",
    });
    for r in &input.recipients {
        h.field(r.final_recipient.as_bytes());
        h.field(r.action.as_str().as_bytes());
        h.field(r.status.to_string().as_bytes());
        h.field(r.remote_mta.as_deref().unwrap_or("\u{0}").as_bytes());
        h.field(
            &r.diagnostic
                .as_ref()
                .map(Reply::to_bytes)
                .unwrap_or_default(),
        );
        h.field(&r.last_attempt.unwrap_or(u64::MAX).to_le_bytes());
        h.field(&r.will_retry_until.unwrap_or(u64::MAX).to_le_bytes());
    }
    h.finish()
}

/// FNV-1a with 128 bits: simple, stable across Rust versions (unlike `DefaultHasher`), and
/// only used to make identifiers unique, never for security.
struct Fnv128(u128);

impl Fnv128 {
    fn new() -> Self {
        Self(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self
                .0
                .wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
        }
    }

    /// Length first, so that field boundaries count.
    fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }

    fn finish(&self) -> u128 {
        self.0
    }
}

// ---------------------------------------------------------------------------------------
// Part 1: the explanation.

/// The text of part 1 and whether it is 8-bit.
fn notification_text(input: &DsnInput) -> (Vec<u8>, bool) {
    let mta = clean(input.reporting_mta);
    let mut t = Text::default();
    t.para(&format!("This is the mail delivery system at {mta}."), 0);
    t.blank();
    match input.kind {
        DsnKind::Failed => t.para(
            "Your message could not be delivered to one or more of its recipients. \
             This is a permanent error: the mail system has given up on them. The \
             details are below, and the headers of your message are attached.",
            0,
        ),
        DsnKind::Delayed => t.para(
            "Your message has not yet been delivered to one or more of its recipients. \
             The mail system is still trying, so you do not need to send it again; you \
             will be told if it finally fails. The details are below, and the headers \
             of your message are attached.",
            0,
        ),
    }
    for r in &input.recipients {
        t.blank();
        let mut line = format!(
            "<{}>: {} (status {}).",
            clean(bare_address(&r.final_recipient)),
            r.action.explanation(),
            r.status
        );
        if let (Action::Delayed, Some(until)) = (r.action, r.will_retry_until) {
            let _ = write!(line, " It will keep trying until {}.", rfc5322_date(until));
        }
        t.para(&line, 0);
        if let Some(reply) = &r.diagnostic {
            let who = match &r.remote_mta {
                Some(host) => format!("The mail server {} answered:", clean(bare_mta(host))),
                None => "The remote mail server answered:".to_owned(),
            };
            t.para(&who, 4);
            for reply_line in reply.to_string().split("\r\n").filter(|l| !l.is_empty()) {
                t.para(&clean(reply_line), 4);
            }
        }
    }
    let eight_bit = !t.0.is_ascii();
    (t.0, eight_bit)
}

/// Plain text, wrapped near 76 columns, CRLF.
#[derive(Default)]
struct Text(Vec<u8>);

impl Text {
    fn blank(&mut self) {
        self.0.extend_from_slice(b"\r\n");
    }

    /// One paragraph, each line indented by `indent` spaces.
    fn para(&mut self, text: &str, indent: usize) {
        let pad = " ".repeat(indent);
        let mut line = String::new();
        for word in words(text) {
            for piece in chop(word, MAX_LINE - indent) {
                if !line.is_empty() && indent + line.len() + 1 + piece.len() > SOFT_LINE - 2 {
                    self.line(&pad, &line);
                    line.clear();
                }
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(piece);
            }
        }
        if !line.is_empty() {
            self.line(&pad, &line);
        }
    }

    fn line(&mut self, pad: &str, text: &str) {
        self.0.extend_from_slice(pad.as_bytes());
        self.0.extend_from_slice(text.as_bytes());
        self.0.extend_from_slice(b"\r\n");
    }
}

// ---------------------------------------------------------------------------------------
// Part 2: message/delivery-status.

fn delivery_status(input: &DsnInput) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    field(
        &mut out,
        "Reporting-MTA",
        &format!("dns; {}", ascii(input.reporting_mta)),
    );
    if let Some(id) = input
        .original_envelope_id
        .filter(|id| !id.trim().is_empty())
    {
        field(&mut out, "Original-Envelope-Id", &ascii(id));
    }
    field(&mut out, "Arrival-Date", &rfc5322_date(input.arrival_date));
    for r in &input.recipients {
        out.extend_from_slice(b"\r\n");
        field(
            &mut out,
            "Final-Recipient",
            &typed_address(bare_address(&r.final_recipient)),
        );
        field(&mut out, "Action", r.action.as_str());
        field(&mut out, "Status", &r.status.to_string());
        if let Some(host) = &r.remote_mta {
            field(
                &mut out,
                "Remote-MTA",
                &format!("dns; {}", ascii(bare_mta(host))),
            );
        }
        if let Some(reply) = &r.diagnostic {
            field(&mut out, "Diagnostic-Code", &diagnostic_code(reply));
        }
        if let Some(t) = r.last_attempt {
            field(&mut out, "Last-Attempt-Date", &rfc5322_date(t));
        }
        if let (Action::Delayed, Some(t)) = (r.action, r.will_retry_until) {
            field(&mut out, "Will-Retry-Until", &rfc5322_date(t));
        }
    }
    out
}

/// `smtp; 550 5.1.1 text`, within 998 octets with the field name.
fn diagnostic_code(reply: &Reply) -> String {
    const LIMIT: usize = MAX_LINE - "Diagnostic-Code: ".len();
    let mut value = format!("smtp; {:03}", reply.code());
    if let Some(status) = reply.status() {
        let _ = write!(value, " {status}");
    }
    for line in reply.lines() {
        let line = ascii(line);
        if !line.trim().is_empty() {
            value.push(' ');
            value.push_str(line.trim());
        }
    }
    let mut value: String = words(&value).collect::<Vec<_>>().join(" ");
    if value.len() > LIMIT {
        // ASCII only, so any index is a character boundary.
        value.truncate(LIMIT - 3);
        value.push_str("...");
    }
    value
}

/// `rfc822; addr` for an ASCII address, else `utf-8; ` with the RFC 6533 utf-8-addr-xtext
/// escapes, so the part stays 7-bit.
fn typed_address(address: &str) -> String {
    let address = clean(address);
    let address = address.trim();
    if address.is_ascii() {
        return format!("rfc822; {address}");
    }
    let mut out = String::from("utf-8; ");
    for c in address.chars() {
        if matches!(c, '!'..='~') && !matches!(c, '\\' | '+' | '=') {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{{{:02X}}}", u32::from(c));
        }
    }
    out
}

/// The address without a leading `rfc822;` the caller may have written.
fn bare_address(address: &str) -> &str {
    strip_type(address, "rfc822;")
}

/// The host name without a leading `dns;`.
fn bare_mta(host: &str) -> &str {
    strip_type(host, "dns;")
}

fn strip_type<'a>(value: &'a str, prefix: &str) -> &'a str {
    let v = value.trim();
    match v.get(..prefix.len()) {
        Some(p) if p.eq_ignore_ascii_case(prefix) => v[prefix.len()..].trim(),
        _ => v,
    }
}

// ---------------------------------------------------------------------------------------
// Part 3: the original header block.

struct ReturnedHeaders {
    bytes: Vec<u8>,
    eight_bit: bool,
}

/// The header block of `message`: every line up to the first empty one, each with its
/// CRLF, byte for byte when the message is well formed (see the module documentation for
/// what is repaired), at most [`MAX_RETURNED_HEADERS`] octets.
fn returned_headers(message: &[u8]) -> ReturnedHeaders {
    let mut out = Vec::with_capacity(message.len().min(MAX_RETURNED_HEADERS));
    let mut rest = message;
    'lines: while !rest.is_empty() {
        // A line ends at CRLF, or at a bare CR or LF (repaired to CRLF).
        let (line, next) = match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            Some(i) => {
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                (&rest[..i], &rest[i + skip..])
            }
            None => (rest, &rest[rest.len()..]),
        };
        if line.is_empty() {
            break;
        }
        rest = next;
        // Lines over the limit go on as continuation lines, broken between characters.
        let mut piece = line;
        let mut first = true;
        while first || !piece.is_empty() {
            let room = if first { MAX_LINE } else { MAX_LINE - 1 };
            let cut = utf8_cut(piece, room);
            let added = usize::from(!first) + cut + 2;
            if out.len() + added > MAX_RETURNED_HEADERS {
                break 'lines;
            }
            if !first {
                out.push(b' ');
            }
            out.extend(piece[..cut].iter().map(|&b| if b == 0 { b' ' } else { b }));
            out.extend_from_slice(b"\r\n");
            piece = &piece[cut..];
            first = false;
        }
    }
    let eight_bit = !out.is_ascii();
    ReturnedHeaders {
        bytes: out,
        eight_bit,
    }
}

/// How many octets of `bytes` fit in `room` without splitting a UTF-8 sequence (when the
/// bytes are UTF-8; never less than one octet of progress otherwise).
fn utf8_cut(bytes: &[u8], room: usize) -> usize {
    if bytes.len() <= room {
        return bytes.len();
    }
    let continuation = |i: usize| (bytes[i] & 0xC0) == 0x80;
    let mut cut = room;
    // A UTF-8 character has at most three continuation octets.
    for _ in 0..3 {
        if cut > 0 && continuation(cut) {
            cut -= 1;
        }
    }
    if cut == 0 || continuation(cut) {
        room
    } else {
        cut
    }
}

// ---------------------------------------------------------------------------------------
// Header fields and text cleaning.

/// Appends `name: value` CRLF, the value's white space (and control characters) collapsed, folded at spaces near 78
/// octets; a word too long for any line is broken so that no line passes 998 octets.
fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    let mut line = format!("{name}:");
    let mut line_has_word = false;
    for word in words(value) {
        for piece in chop(word, MAX_LINE - 1) {
            let too_long = line.len() + 1 + piece.len();
            if (line_has_word && too_long > SOFT_LINE) || too_long > MAX_LINE {
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
                line.clear();
            }
            line.push(' ');
            line.push_str(piece);
            line_has_word = true;
        }
    }
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The words of `text`: split at white space and control characters, so that CR and LF
/// in any input can never end a line here.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_ascii_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
}

/// `word` in pieces of at most `max` octets, split between characters.
fn chop(word: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = word;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(max);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            // `max` is smaller than one character: give the character whole.
            cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

/// Control characters (CR and LF among them) become spaces.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// As [`clean`], and non-ASCII characters become `?`.
fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c,
            c if c.is_control() => ' ',
            _ => '?',
        })
        .collect()
}

/// A host name fit for `MAILER-DAEMON@...` and the `Message-ID`: an address literal as it
/// is, else its labels of atext only (RFC 5322 dot-atom-text), or `fallback` when nothing
/// is left.
fn domain_or(name: &str, fallback: &str) -> String {
    let name = name.trim();
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        // An address literal such as [192.0.2.1] (RFC 5322 domain-literal, dtext only).
        if !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"[]\\".contains(&b))
        {
            return name.to_owned();
        }
    }
    let labels: Vec<String> = name
        .split('.')
        .map(|label| {
            label
                .chars()
                .filter(|&c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c))
                .collect::<String>()
        })
        .filter(|label| !label.is_empty())
        .collect();
    if labels.is_empty() {
        fallback.to_owned()
    } else {
        labels.join(".")
    }
}

// ---------------------------------------------------------------------------------------
// Dates.

/// RFC 5322 §3.3 date-time in UTC: `Thu, 01 Jan 2026 00:00:00 +0000`. Public because trace
/// headers (`Received:`) need the same form.
pub fn rfc5322_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_767_225_599),
            "Wed, 31 Dec 2025 23:59:59 +0000"
        );
        assert_eq!(
            rfc5322_date(1_767_225_600),
            "Thu, 01 Jan 2026 00:00:00 +0000"
        );
        assert_eq!(
            rfc5322_date(1_795_395_723),
            "Mon, 23 Nov 2026 01:02:03 +0000"
        );
        assert_eq!(
            rfc5322_date(4_107_542_400),
            "Mon, 01 Mar 2100 00:00:00 +0000"
        );
        // Far future: no panic, no overflow.
        let _ = rfc5322_date(u64::MAX);
    }

    #[test]
    fn status_parsing() {
        assert_eq!(parse_status("5.1.1"), Some(EnhancedStatus::new(5, 1, 1)));
        assert_eq!(parse_status("5.1.10"), Some(EnhancedStatus::new(5, 1, 10)));
        for bad in [
            "", "5", "5.1", "5.1.1.1", "3.0.0", "5.1000.0", "5.a.0", "5..0", "+5.1.1",
        ] {
            assert_eq!(parse_status(bad), None, "{bad}");
        }
    }

    #[test]
    fn folding() {
        let mut out = Vec::new();
        field(&mut out, "X", &"word ".repeat(40));
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().all(|l| l.len() <= SOFT_LINE), "{text}");
        assert_eq!(
            text.replace("\r\n ", " "),
            format!("X:{}\r\n", " word".repeat(40))
        );

        let mut out = Vec::new();
        field(&mut out, "X", &"a".repeat(3000));
        let text = String::from_utf8(out).unwrap();
        assert!(text.split("\r\n").all(|l| l.len() <= MAX_LINE));
    }

    #[test]
    fn xtext_addresses() {
        assert_eq!(typed_address("a+b@example.org"), "rfc822; a+b@example.org");
        assert_eq!(
            typed_address("grå+x=y@example.org"),
            "utf-8; gr\\x{E5}\\x{2B}x\\x{3D}y@example.org"
        );
    }

    #[test]
    fn cut_keeps_characters_whole() {
        let s = "ééé".as_bytes(); // 6 octets
        assert_eq!(utf8_cut(s, 3), 2);
        assert_eq!(utf8_cut(s, 4), 4);
        assert_eq!(utf8_cut(s, 10), 6);
        assert_eq!(utf8_cut(&[0x80; 10], 4), 4);
    }
}
