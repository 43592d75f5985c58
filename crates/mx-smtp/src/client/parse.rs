//! Reading server replies and EHLO keywords.
//!
//! smtp-proto's `ResponseReceiver` is not used: it ends a line at a bare LF, does not check
//! that every line of a multi-line reply carries the same code, keeps an enhanced status
//! code in three `u8` (so `5.1.10` cannot be held) and saturates over-long numbers. A client
//! that talks to arbitrary servers needs a reader that is strict about framing instead, since
//! a reply taken apart differently from how the server meant it is how response injection
//! works. Its EHLO reader has the same framing and wrapping problems for `SIZE`.

use crate::reply::{EnhancedStatus, Reply};

/// Longest reply line accepted, CRLF included. RFC 5321 §4.5.3.1.5 sets 512; real servers
/// stay well under it, but a few long policy texts exist, so there is room to spare while
/// memory stays bounded.
pub(crate) const MAX_REPLY_LINE: usize = 4096;

/// Longest reply accepted, all lines together (EHLO replies and banners are the long ones).
pub(crate) const MAX_REPLY: usize = 64 * 1024;

/// What [`ReplyReader::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parse {
    /// A whole reply, and how many octets at the start of the buffer it took.
    Reply(Reply, usize),
    /// More octets are needed.
    Incomplete,
    /// Not a reply: the connection cannot be trusted to be in step any more.
    Malformed(&'static str),
}

/// Reads one reply at a time from the start of the caller's buffer, incrementally: octets
/// already checked are not looked at again, so a server that sends its reply one octet per
/// packet costs linear time, not quadratic.
///
/// The caller appends to its buffer and, after [`Parse::Reply`], removes exactly the octets
/// the reply took; [`ReplyReader::reset`] is only needed if it throws its buffer away.
///
/// Every check happens at the octet that breaks it, in order, so the result never depends on
/// how the input was cut into reads.
#[derive(Debug, Default)]
pub(crate) struct ReplyReader {
    /// Octets of the buffer already checked; all belong to the reply being read.
    scanned: usize,
    /// Where the current line starts.
    line_start: usize,
    /// The last octet checked was a CR (which must be followed by LF).
    after_cr: bool,
    /// The three code digits of the first line, once it has them.
    code: [u8; 3],
    /// Complete lines so far: the text after the code and separator (start, end).
    lines: Vec<(usize, usize)>,
}

impl ReplyReader {
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    pub(crate) fn read(&mut self, buf: &[u8]) -> Parse {
        while let Some(&b) = buf.get(self.scanned) {
            let i = self.scanned;
            let col = i - self.line_start;
            if i >= MAX_REPLY {
                return Parse::Malformed("reply too long");
            }
            if col >= MAX_REPLY_LINE {
                return Parse::Malformed("reply line too long");
            }
            if self.after_cr && b != b'\n' {
                return Parse::Malformed("bare CR in reply");
            }
            match col {
                0..=2 => {
                    // RFC 5321 §4.2: the first digit is 2 to 5 (1yz is not used in SMTP),
                    // and every line of a multi-line reply has the same code (§4.2.1).
                    let ok = if col == 0 {
                        (b'2'..=b'5').contains(&b)
                    } else {
                        b.is_ascii_digit()
                    };
                    if !ok {
                        return Parse::Malformed("bad reply code");
                    }
                    if self.lines.is_empty() {
                        self.code[col] = b;
                    } else if self.code[col] != b {
                        return Parse::Malformed("reply code changes within a multi-line reply");
                    }
                }
                // "250\r\n" is a last line without text (RFC 5321 §4.2, Reply-line).
                3 if !matches!(b, b' ' | b'-' | b'\r') => {
                    return Parse::Malformed("bad reply separator");
                }
                _ => {}
            }
            match b {
                b'\n' if !self.after_cr => return Parse::Malformed("bare LF in reply"),
                b'\n' => {
                    // `col` counts the CR too: the line's content is `col - 1` octets.
                    let content_end = i - 1;
                    let text_start = (self.line_start + 4).min(content_end);
                    // The separator is ' ', '-' or the CR of a text-less last line.
                    let last = buf.get(self.line_start + 3) != Some(&b'-');
                    self.lines.push((text_start, content_end));
                    self.after_cr = false;
                    self.scanned = i + 1;
                    self.line_start = i + 1;
                    if last {
                        let reply = self.build(buf);
                        let used = i + 1;
                        self.reset();
                        return Parse::Reply(reply, used);
                    }
                    continue;
                }
                b'\r' => self.after_cr = true,
                _ => {}
            }
            self.scanned += 1;
        }
        Parse::Incomplete
    }

    fn build(&self, buf: &[u8]) -> Reply {
        let code = self
            .code
            .iter()
            .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
        let texts: Vec<String> = self
            .lines
            .iter()
            .map(|&(start, end)| String::from_utf8_lossy(&buf[start..end]).into_owned())
            .collect();
        // The enhanced code is taken from the first line (RFC 2034 §4 puts it on every line)
        // and removed from each line that repeats it, so `Reply::text` reads as the server
        // wrote it and `Reply::to_bytes` gives back the same wire form. It is recognised
        // whether or not ENHANCEDSTATUSCODES was offered: the greeting comes before EHLO,
        // and a well-formed `5.1.1 ` at the start of the text means nothing else.
        let status = texts
            .first()
            .and_then(|t| status_prefix(t))
            .map(|(s, _)| s)
            .filter(|s| u16::from(s.class) == code / 100);
        let lines = texts.iter().map(|t| match (status, status_prefix(t)) {
            (Some(s), Some((own, rest))) if own == s => rest,
            _ => t.as_str(),
        });
        Reply::multiline(code, status, lines)
    }
}

/// An enhanced status code at the start of `text` (`class.subject.detail`, RFC 3463 §2:
/// class 2, 4 or 5, one to three digits each for subject and detail) followed by a space or
/// the end of the line; with the rest of the text after that space.
pub(crate) fn status_prefix(text: &str) -> Option<(EnhancedStatus, &str)> {
    let b = text.as_bytes();
    let class = match b.first()? {
        c @ (b'2' | b'4' | b'5') => c - b'0',
        _ => return None,
    };
    if b.get(1) != Some(&b'.') {
        return None;
    }
    let (subject, after_subject) = number(b, 2)?;
    if b.get(after_subject) != Some(&b'.') {
        return None;
    }
    let (detail, end) = number(b, after_subject + 1)?;
    let rest = match b.get(end) {
        None => "",
        Some(b' ') => &text[end + 1..],
        Some(_) => return None,
    };
    Some((EnhancedStatus::new(class, subject, detail), rest))
}

/// One to three digits at `start`: the value and the position after them.
fn number(b: &[u8], start: usize) -> Option<(u16, usize)> {
    let digits = b
        .get(start..)?
        .iter()
        .take(4)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if !(1..=3).contains(&digits) {
        return None;
    }
    let value = b[start..start + digits]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    Some((value, start + digits))
}

/// What the server offered in its EHLO reply (nothing after HELO).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// The first word of the first line: the name the server gives itself.
    pub server_name: String,
    /// RFC 2920.
    pub pipelining: bool,
    /// `SIZE` was offered (RFC 1870), so `SIZE=` may be given on MAIL.
    pub size: bool,
    /// The fixed maximum message size `SIZE` declared; `None` when it gave none, gave 0
    /// ("no fixed maximum", RFC 1870 §4), or gave one too large to hold, which is as good
    /// as none (rather than wrapping it into a small number).
    pub max_size: Option<u64>,
    /// RFC 6152.
    pub eight_bit_mime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 3030. Recorded only: messages always go with DATA, which every server has, and
    /// dot-stuffing costs little.
    pub chunking: bool,
    /// RFC 2034.
    pub enhanced_status_codes: bool,
}

impl Extensions {
    /// Reads an EHLO reply: the first line is the server's name, each further line one
    /// keyword with its parameters, in any case (RFC 5321 §4.1.1.1). Unknown keywords are
    /// ignored.
    pub(crate) fn from_ehlo(reply: &Reply) -> Self {
        let mut ext = Self::helo(reply);
        for line in reply.lines().iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => {
                    ext.size = true;
                    ext.max_size = words
                        .next()
                        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|n| n.parse::<u64>().ok())
                        .filter(|&n| n > 0);
                }
                "8BITMIME" => ext.eight_bit_mime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "STARTTLS" => ext.starttls = true,
                "CHUNKING" => ext.chunking = true,
                "ENHANCEDSTATUSCODES" => ext.enhanced_status_codes = true,
                _ => {}
            }
        }
        ext
    }

    /// After HELO: the server's name and no extension.
    pub(crate) fn helo(reply: &Reply) -> Self {
        let server_name = reply
            .lines()
            .first()
            .and_then(|l| l.split_ascii_whitespace().next())
            .unwrap_or_default()
            .to_owned();
        Self {
            server_name,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> Parse {
        ReplyReader::default().read(input)
    }

    fn reply(input: &[u8]) -> Reply {
        match one(input) {
            Parse::Reply(r, used) => {
                assert_eq!(used, input.len());
                r
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn single_multi_and_status() {
        let r = reply(b"250 2.1.5 Ok\r\n");
        assert_eq!(r.code(), 250);
        assert_eq!(r.status(), Some(EnhancedStatus::new(2, 1, 5)));
        assert_eq!(r.lines(), ["Ok"]);
        let r = reply(b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n");
        assert_eq!(r.lines(), ["first", "second", "third"]);
        assert_eq!(
            r.to_bytes(),
            b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n"
        );
        let r = reply(b"250\r\n");
        assert_eq!((r.code(), r.lines()), (250, &[String::new()][..]));
        let r = reply(b"250-\r\n250 x\r\n");
        assert_eq!(r.lines(), ["", "x"]);
        // Class disagreeing with the code: left in the text.
        let r = reply(b"250 5.1.1 odd\r\n");
        assert_eq!((r.status(), r.text()), (None, "5.1.1 odd".to_owned()));
        let r = reply(b"550 5.1.10 x\r\n");
        assert_eq!(r.status(), Some(EnhancedStatus::new(5, 1, 10)));
        let r = reply(b"550 5.1.1000 x\r\n");
        assert_eq!(r.status(), None);
    }

    #[test]
    fn framing_errors() {
        assert_eq!(one(b"250 ok\n"), Parse::Malformed("bare LF in reply"));
        assert_eq!(one(b"250 o\rk\r\n"), Parse::Malformed("bare CR in reply"));
        assert_eq!(one(b"25 ok\r\n"), Parse::Malformed("bad reply code"));
        assert_eq!(one(b"150 ok\r\n"), Parse::Malformed("bad reply code"));
        assert_eq!(one(b"250_ok\r\n"), Parse::Malformed("bad reply separator"));
        assert_eq!(
            one(b"250-a\r\n251 b\r\n"),
            Parse::Malformed("reply code changes within a multi-line reply")
        );
        assert_eq!(one(b"HTTP/1.1"), Parse::Malformed("bad reply code"));
        assert_eq!(one(b"250-a\r\n250 b"), Parse::Incomplete);
        let long = [b"250 ".as_slice(), &[b'x'; MAX_REPLY_LINE]].concat();
        assert_eq!(one(&long), Parse::Malformed("reply line too long"));
        let many = b"250-xxxxxxxx\r\n".repeat(MAX_REPLY / 10);
        assert_eq!(one(&many), Parse::Malformed("reply too long"));
    }

    #[test]
    fn incremental_equals_whole() {
        let input = b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n250 next\r\n";
        let mut r = ReplyReader::default();
        let mut buf = Vec::new();
        let mut got = None;
        for &b in input.iter() {
            buf.push(b);
            if let Parse::Reply(reply, used) = r.read(&buf) {
                got = Some((reply, used));
                break;
            }
        }
        let (reply, used) = got.unwrap();
        assert_eq!(used, 42);
        assert_eq!(reply.lines(), ["mx.test", "PIPELINING", "SIZE 10"]);
    }

    /// Reads every reply from `pieces` fed one by one, as the session does; stops at the
    /// first malformation.
    fn read_all(pieces: &[Vec<u8>]) -> Vec<Result<Reply, &'static str>> {
        let mut reader = ReplyReader::default();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                match reader.read(&buf) {
                    Parse::Reply(reply, used) => {
                        buf.drain(..used);
                        got.push(Ok(reply));
                    }
                    Parse::Malformed(why) => {
                        got.push(Err(why));
                        return got;
                    }
                    Parse::Incomplete => break,
                }
            }
        }
        got
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2048,
            failure_persistence: None,
            ..Default::default()
        })]

        /// How the octets are cut into reads never changes what is read.
        #[test]
        fn cuts_change_nothing(
            bytes in proptest::collection::vec(
                proptest::sample::select(b"2504 -\r\n.x1".to_vec()),
                0..300,
            ),
            cuts in proptest::collection::vec(0usize..400, 0..30),
        ) {
            let whole = read_all(std::slice::from_ref(&bytes));
            let pieces = crate::data::tests::pieces(&bytes, &cuts);
            proptest::prop_assert_eq!(read_all(&pieces), whole);
        }
    }

    #[test]
    fn ehlo_keywords() {
        let r = reply(
            b"250-mx.test says hi\r\n250-pipelining\r\n250-SIZE 1000\r\n250-8BITMIME\r\n\
              250-SMTPUTF8\r\n250-STARTTLS\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n",
        );
        let e = Extensions::from_ehlo(&r);
        assert_eq!(
            e,
            Extensions {
                server_name: "mx.test".into(),
                pipelining: true,
                size: true,
                max_size: Some(1000),
                eight_bit_mime: true,
                smtputf8: true,
                starttls: true,
                chunking: true,
                enhanced_status_codes: true,
            }
        );
        for (line, max) in [
            ("SIZE", None),
            ("SIZE 0", None),
            ("SIZE 99999999999999999999999", None),
            ("SIZE -1", None),
            ("SIZE 12x", None),
        ] {
            let e = Extensions::from_ehlo(&Reply::multiline(250, None, ["mx", line]));
            assert!(e.size);
            assert_eq!(e.max_size, max, "{line}");
        }
    }
}
