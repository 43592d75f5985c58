//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463, RFC 2034).
//!
//! smtp-proto's `Response` is single-line, keeps the enhanced code in three `u8` and writes
//! the message text as given; a reply here can span lines, holds any registered code (such as
//! `5.1.10`) and is sanitised when it is built, so that text from a policy or a queue id can
//! never inject a line break into the reply stream.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An enhanced mail system status code `class.subject.detail` (RFC 3463).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EnhancedStatus {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// 0 to 999.
    pub subject: u16,
    /// 0 to 999.
    pub detail: u16,
}

impl EnhancedStatus {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    /// Whether this can stand in an SMTP reply at all: class 2, 4 or 5, and subject and
    /// detail of at most three digits (RFC 3463 §2).
    pub fn is_valid(self) -> bool {
        matches!(self.class, 2 | 4 | 5) && self.subject <= 999 && self.detail <= 999
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One SMTP reply: a three-digit code, an optional enhanced status code and one or more lines
/// of text. [`Reply::to_bytes`] gives the wire form, multi-line replies included.
///
/// Deserialising goes through [`Reply::multiline`], so a reply read from a file is
/// sanitised like any other.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "ReplyFields")]
pub struct Reply {
    code: u16,
    status: Option<EnhancedStatus>,
    lines: Vec<String>,
}

impl Reply {
    /// A reply whose text may hold several lines separated by `\n` (a `\r` before it is
    /// dropped). Other control characters become spaces: reply text is often built from
    /// data that came from elsewhere (policy messages, queue ids), and a stray CR or LF in
    /// it would let that data write its own replies.
    pub fn new(code: u16, status: impl Into<Option<EnhancedStatus>>, text: &str) -> Self {
        Self::multiline(code, status, text.split('\n'))
    }

    /// A reply from separate lines; each line is sanitised as in [`Reply::new`].
    pub fn multiline<I, S>(code: u16, status: impl Into<Option<EnhancedStatus>>, lines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut lines: Vec<String> = lines
            .into_iter()
            .flat_map(|line| {
                line.as_ref()
                    .split('\n')
                    .map(sanitize_line)
                    .collect::<Vec<_>>()
            })
            .collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        Self {
            code,
            status: status.into(),
            lines,
        }
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn status(&self) -> Option<EnhancedStatus> {
        self.status
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The text of all lines joined with a space (for logs).
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx (354 after DATA, 334 during AUTH).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx or 5xx.
    pub fn is_negative(&self) -> bool {
        (400..600).contains(&self.code)
    }

    /// Whether this reply can go on the wire as it is: a code from 200 to 599 and, when
    /// there is an enhanced status code, one whose class is the code's first digit
    /// (RFC 3463 §2: the class must agree with the reply code).
    pub fn is_well_formed(&self) -> bool {
        (200..600).contains(&self.code)
            && self
                .status
                .is_none_or(|s| s.is_valid() && u16::from(s.class) == self.code / 100)
    }

    /// The reply as sent: `code-text` for every line but the last, `code text` for the last,
    /// each line ending in CRLF and carrying the enhanced status code when there is one.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

#[derive(Deserialize)]
struct ReplyFields {
    code: u16,
    status: Option<EnhancedStatus>,
    lines: Vec<String>,
}

impl From<ReplyFields> for Reply {
    fn from(f: ReplyFields) -> Self {
        Reply::multiline(f.code, f.status, f.lines)
    }
}

impl fmt::Display for Reply {
    /// The exact wire form, CRLFs included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            write!(f, "{:03}", self.code)?;
            match (self.status, line.is_empty()) {
                (Some(status), true) => write!(f, "{sep}{status}")?,
                (Some(status), false) => write!(f, "{sep}{status} {line}")?,
                // "334 " with nothing after it is how an empty SASL challenge looks on the
                // wire (RFC 4954 §4 examples), so the separator is written even then.
                (None, _) => write!(f, "{sep}{line}")?,
            }
            f.write_str("\r\n")?;
        }
        Ok(())
    }
}

fn sanitize_line(line: &str) -> String {
    line.strip_suffix('\r')
        .unwrap_or(line)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The replies the session itself sends, in one place so that the codes can be reviewed
/// against RFC 5321 §4.2 and RFC 3463 together.
pub(crate) mod std_replies {
    use super::{EnhancedStatus as E, Reply};

    pub fn ok() -> Reply {
        Reply::new(250, E::new(2, 0, 0), "Ok")
    }
    pub fn mail_ok() -> Reply {
        Reply::new(250, E::new(2, 1, 0), "Ok")
    }
    pub fn rcpt_ok() -> Reply {
        Reply::new(250, E::new(2, 1, 5), "Ok")
    }
    pub fn queued(queue_id: &str) -> Reply {
        Reply::new(250, E::new(2, 0, 0), &format!("Ok: queued as {queue_id}"))
    }
    pub fn chunk_ok(octets: u64) -> Reply {
        Reply::new(
            250,
            E::new(2, 0, 0),
            &format!("Ok: {octets} octets received"),
        )
    }
    pub fn start_data() -> Reply {
        Reply::new(354, None, "End data with <CR><LF>.<CR><LF>")
    }
    pub fn quit() -> Reply {
        Reply::new(221, E::new(2, 0, 0), "Bye")
    }
    pub fn vrfy() -> Reply {
        Reply::new(
            252,
            E::new(2, 5, 0),
            "Cannot VRFY user, but will accept message and attempt delivery",
        )
    }
    pub fn help() -> Reply {
        Reply::new(214, E::new(2, 0, 0), "See RFC 5321")
    }
    pub fn start_tls() -> Reply {
        Reply::new(220, E::new(2, 0, 0), "Ready to start TLS")
    }
    pub fn auth_ok() -> Reply {
        Reply::new(235, E::new(2, 7, 0), "Authentication successful")
    }
    /// A SASL challenge; `challenge` is already base64 (RFC 4954 §4).
    pub fn auth_challenge(challenge: &str) -> Reply {
        Reply::new(334, None, challenge)
    }

    pub fn unknown_command() -> Reply {
        Reply::new(500, E::new(5, 5, 1), "Command unrecognized")
    }
    pub fn not_implemented() -> Reply {
        Reply::new(502, E::new(5, 5, 1), "Command not implemented")
    }
    pub fn line_too_long() -> Reply {
        Reply::new(500, E::new(5, 5, 6), "Line too long")
    }
    pub fn bare_cr_lf_command() -> Reply {
        Reply::new(
            500,
            E::new(5, 5, 2),
            "Syntax error: bare <CR> or <LF> in command line",
        )
    }
    pub fn invalid_utf8() -> Reply {
        Reply::new(500, E::new(5, 5, 2), "Syntax error: invalid UTF-8")
    }
    pub fn syntax(what: &str) -> Reply {
        Reply::new(501, E::new(5, 5, 2), &format!("Syntax: {what}"))
    }
    pub fn invalid_argument(what: &str) -> Reply {
        Reply::new(501, E::new(5, 5, 4), &format!("Invalid argument: {what}"))
    }
    pub fn no_parameters() -> Reply {
        Reply::new(501, E::new(5, 5, 4), "Syntax error (no parameters allowed)")
    }
    pub fn unsupported_parameter(what: &str) -> Reply {
        Reply::new(
            555,
            E::new(5, 5, 4),
            &format!("Parameter not recognized or not implemented: {what}"),
        )
    }
    pub fn bad_sender() -> Reply {
        Reply::new(501, E::new(5, 1, 7), "Bad sender address syntax")
    }
    pub fn bad_recipient() -> Reply {
        Reply::new(501, E::new(5, 1, 3), "Bad recipient address syntax")
    }
    pub fn needs_smtputf8() -> Reply {
        Reply::new(
            553,
            E::new(5, 6, 7),
            "Non-ASCII address requires the SMTPUTF8 parameter on MAIL",
        )
    }
    pub fn sequence(what: &str) -> Reply {
        Reply::new(
            503,
            E::new(5, 5, 1),
            &format!("Bad sequence of commands: {what}"),
        )
    }
    pub fn no_valid_recipients() -> Reply {
        Reply::new(554, E::new(5, 5, 1), "No valid recipients")
    }
    pub fn too_many_recipients() -> Reply {
        Reply::new(452, E::new(4, 5, 3), "Too many recipients")
    }
    pub fn too_big() -> Reply {
        Reply::new(
            552,
            E::new(5, 3, 4),
            "Message size exceeds fixed maximum message size",
        )
    }
    pub fn bare_cr_lf_data() -> Reply {
        Reply::new(
            550,
            E::new(5, 5, 2),
            "Message refused: it contains a bare <CR> or <LF>",
        )
    }
    pub fn text_line_too_long(limit: usize) -> Reply {
        Reply::new(
            550,
            E::new(5, 5, 6),
            &format!("Message refused: a text line is longer than {limit} octets"),
        )
    }
    pub fn too_many_errors() -> Reply {
        Reply::new(421, E::new(4, 7, 0), "Too many errors, closing connection")
    }
    pub fn tls_unavailable() -> Reply {
        Reply::new(502, E::new(5, 5, 1), "STARTTLS not available")
    }
    pub fn tls_required() -> Reply {
        Reply::new(530, E::new(5, 7, 0), "Must issue a STARTTLS command first")
    }
    pub fn auth_failed() -> Reply {
        Reply::new(535, E::new(5, 7, 8), "Authentication credentials invalid")
    }
    pub fn auth_cancelled() -> Reply {
        Reply::new(501, E::new(5, 0, 0), "Authentication cancelled")
    }
    pub fn auth_bad_base64() -> Reply {
        Reply::new(501, E::new(5, 5, 2), "Invalid base64 data")
    }
    pub fn auth_malformed() -> Reply {
        Reply::new(501, E::new(5, 5, 2), "Malformed authentication data")
    }
    pub fn auth_line_too_long() -> Reply {
        Reply::new(
            500,
            E::new(5, 5, 6),
            "Authentication exchange line is too long",
        )
    }
    pub fn auth_mechanism() -> Reply {
        Reply::new(504, E::new(5, 5, 4), "Unrecognized authentication type")
    }
    pub fn early_talker() -> Reply {
        Reply::new(
            554,
            E::new(5, 5, 0),
            "Protocol error: client sent data before the greeting",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line() {
        let r = Reply::new(250, EnhancedStatus::new(2, 0, 0), "Ok");
        assert_eq!(r.to_bytes(), b"250 2.0.0 Ok\r\n");
        let r = Reply::multiline(250, None, ["mx.example", "PIPELINING", "SIZE 10"]);
        assert_eq!(
            r.to_string(),
            "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10\r\n"
        );
        let r = Reply::new(334, None, "");
        assert_eq!(r.to_string(), "334 \r\n");
        let r = Reply::new(550, EnhancedStatus::new(5, 1, 10), "");
        assert_eq!(r.to_string(), "550 5.1.10\r\n");
    }

    #[test]
    fn text_cannot_inject_lines() {
        let r = Reply::new(
            550,
            EnhancedStatus::new(5, 7, 1),
            "no\r\n250 2.0.0 yes\rx\0y",
        );
        assert_eq!(
            r.to_string(),
            "550-5.7.1 no\r\n550 5.7.1 250 2.0.0 yes x y\r\n"
        );
    }

    #[test]
    fn deserialised_replies_are_sanitised() {
        let r: Reply = serde_json::from_str(
            r#"{"code":550,"status":{"class":5,"subject":7,"detail":1},"lines":["a\r\n250 ok"]}"#,
        )
        .unwrap();
        assert_eq!(r.to_string(), "550-5.7.1 a\r\n550 5.7.1 250 ok\r\n");
        let back: Reply = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn well_formed() {
        assert!(Reply::new(550, EnhancedStatus::new(5, 1, 1), "x").is_well_formed());
        assert!(!Reply::new(550, EnhancedStatus::new(4, 1, 1), "x").is_well_formed());
        assert!(!Reply::new(99, None, "x").is_well_formed());
        assert!(Reply::new(354, None, "x").is_well_formed());
    }
}
