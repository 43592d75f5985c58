//! Message content: the DATA end-of-data and dot-unstuffing decoder, and the body sink that
//! both DATA and BDAT write into.
//!
//! smtp-proto's `DataReceiver` is not used here: it lets a bare LF or CR through as content
//! without a trace, and neither counts octets nor measures lines, while this session must
//! refuse such a message whole (the SMTP smuggling class, CVE-2023-51764 and friends) and
//! stop storing it past the size limit.

const CR: u8 = b'\r';
const LF: u8 = b'\n';

/// Where the DATA decoder stands. Only `<CRLF>.<CRLF>` ends the data; the CRLF that ended
/// the DATA command counts as the first one, so the decoder starts at a line start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DotState {
    /// The last two octets were CRLF (or nothing has been read yet).
    LineStart,
    /// A dot at a line start, removed: either stuffing or the start of the terminator.
    Dot,
    /// Dot and CR at a line start; the CR is held back until the next octet tells whether
    /// this is the terminator.
    DotCr,
    /// Inside a line.
    Mid,
    /// After a CR inside a line.
    Cr,
}

/// Finds the end of DATA and removes dot-stuffing (RFC 5321 §4.5.2): a line's leading dot
/// is dropped, nothing else is touched. Bare CR and LF pass through unchanged, so that
/// [`BodySink`] sees them and refuses the message; they never end a line for the decoder.
#[derive(Debug)]
pub(crate) struct DotDecoder {
    state: DotState,
}

impl DotDecoder {
    pub(crate) fn new() -> Self {
        Self {
            state: DotState::LineStart,
        }
    }

    /// Decodes from `input` into `sink`. Returns how many octets were consumed and whether
    /// the terminator was among them (then nothing after it was consumed).
    pub(crate) fn decode(&mut self, input: &[u8], sink: &mut BodySink) -> (usize, bool) {
        // Octets from `run` up to the current position are content still to be written;
        // writing them in runs keeps the common case (long lines) cheap.
        let mut run = 0;
        for (i, &b) in input.iter().enumerate() {
            self.state = match self.state {
                DotState::LineStart if b == b'.' => {
                    sink.push(&input[run..i]);
                    run = i + 1;
                    DotState::Dot
                }
                DotState::Dot if b == CR => {
                    sink.push(&input[run..i]);
                    run = i + 1;
                    DotState::DotCr
                }
                DotState::DotCr if b == LF => {
                    return (i + 1, true);
                }
                DotState::DotCr => {
                    // The held CR was content after all (and a bare one: the sink sees it
                    // followed by something other than LF).
                    sink.push(b"\r");
                    run = i;
                    after(b)
                }
                DotState::Cr if b == LF => DotState::LineStart,
                DotState::LineStart | DotState::Dot | DotState::Mid | DotState::Cr => after(b),
            };
        }
        sink.push(&input[run..]);
        (input.len(), false)
    }
}

/// The state after content octet `b` inside a line.
fn after(b: u8) -> DotState {
    if b == CR { DotState::Cr } else { DotState::Mid }
}

/// Why a finished body is refused, most serious first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taint {
    /// A CR not followed by LF, or an LF not preceded by CR.
    BareCrLf,
    /// More octets than the message size limit.
    TooBig,
    /// A line longer than the text line limit.
    LongLine,
}

/// Collects a message body, up to the size limit, and watches its line structure.
#[derive(Debug)]
pub(crate) struct BodySink {
    body: Vec<u8>,
    size: u64,
    max_size: u64,
    max_line: u64,
    /// Octets of the current line so far, CR and LF included.
    line_len: u64,
    cr_pending: bool,
    bare_cr_lf: bool,
    long_line: bool,
}

impl BodySink {
    pub(crate) fn new(max_size: usize, max_line: usize) -> Self {
        Self {
            body: Vec::new(),
            size: 0,
            max_size: max_size as u64,
            max_line: max_line as u64,
            line_len: 0,
            cr_pending: false,
            bare_cr_lf: false,
            long_line: false,
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.size > self.max_size {
            // Past the limit the message is refused anyway: free what was kept and keep
            // nothing more, while the caller reads on to the end of the data.
            if !self.body.is_empty() {
                self.body = Vec::new();
            }
        } else {
            self.body.extend_from_slice(bytes);
        }
        for &b in bytes {
            if self.cr_pending {
                self.cr_pending = false;
                if b == LF {
                    self.line_len += 1;
                    self.check_line();
                    self.line_len = 0;
                    continue;
                }
                self.bare_cr_lf = true;
            }
            match b {
                CR => self.cr_pending = true,
                LF => self.bare_cr_lf = true,
                _ => {}
            }
            self.line_len += 1;
            self.check_line();
        }
    }

    fn check_line(&mut self) {
        if self.line_len > self.max_line {
            self.long_line = true;
        }
    }

    /// Octets received so far (after unstuffing), kept or not.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn is_too_big(&self) -> bool {
        self.size > self.max_size
    }

    /// Ends the body: `Ok(body)` or why it is refused.
    pub(crate) fn finish(self) -> Result<Vec<u8>, Taint> {
        if self.bare_cr_lf || self.cr_pending {
            Err(Taint::BareCrLf)
        } else if self.is_too_big() {
            Err(Taint::TooBig)
        } else if self.long_line {
            Err(Taint::LongLine)
        } else {
            Ok(self.body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The finished body and what followed the terminator, if the data ended.
    type Decoded = Option<(Result<Vec<u8>, Taint>, Vec<u8>)>;

    fn decode(chunks: &[&[u8]]) -> Decoded {
        let mut d = DotDecoder::new();
        let mut sink = BodySink::new(1 << 20, 1000);
        let mut rest = Vec::new();
        let mut ended = false;
        for chunk in chunks {
            if ended {
                rest.extend_from_slice(chunk);
                continue;
            }
            let (n, end) = d.decode(chunk, &mut sink);
            if end {
                ended = true;
                rest.extend_from_slice(&chunk[n..]);
            }
        }
        ended.then(|| (sink.finish(), rest))
    }

    #[test]
    fn unstuffing_and_end() {
        let (body, rest) = decode(&[b"a\r\n..b\r\n..\r\n.x.\r\n.\r\nQUIT\r\n"]).unwrap();
        assert_eq!(body.unwrap(), b"a\r\n.b\r\n.\r\nx.\r\n");
        assert_eq!(rest, b"QUIT\r\n");
        let (body, _) = decode(&[b".\r\n"]).unwrap();
        assert_eq!(body.unwrap(), b"");
    }

    #[test]
    fn terminator_split_anywhere() {
        let data = b"x\r\n.\r\n";
        for cut in 0..=data.len() {
            let (body, rest) = decode(&[&data[..cut], &data[cut..]]).unwrap();
            assert_eq!(body.unwrap(), b"x\r\n");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn bare_line_ends_do_not_end_data() {
        for end in [
            &b"\n.\n"[..],
            b"\r.\r",
            b"\r.\n",
            b"\n.\r",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\r\n.\r",
        ] {
            let mut data = b"x".to_vec();
            data.extend_from_slice(end);
            data.extend_from_slice(b"y\r\n");
            assert!(decode(&[&data]).is_none(), "{end:?} ended DATA");
            data.extend_from_slice(b".\r\n");
            let (body, rest) = decode(&[&data]).unwrap();
            assert_eq!(body, Err(Taint::BareCrLf), "{end:?}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn limits() {
        let mut d = DotDecoder::new();
        let mut sink = BodySink::new(10, 1000);
        let (_, end) = d.decode(b"0123456789\r\nabc\r\n.\r\n", &mut sink);
        assert!(end);
        assert_eq!(sink.finish(), Err(Taint::TooBig));

        let mut d = DotDecoder::new();
        let mut sink = BodySink::new(100, 5);
        let (_, end) = d.decode(b"abc\r\n..bc\r\n.\r\n", &mut sink);
        assert!(end, "stuffed dot does not count");
        assert_eq!(sink.finish().unwrap(), b"abc\r\n.bc\r\n");
        let mut d = DotDecoder::new();
        let mut sink = BodySink::new(100, 5);
        let (_, end) = d.decode(b"abcd\r\n.\r\n", &mut sink);
        assert!(end);
        assert_eq!(sink.finish(), Err(Taint::LongLine));
    }
}
