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
        // Octets from `run` up to `i` are content still to be written: the sink gets whole
        // runs, cut only around a removed dot, so a 100 KB body is a handful of copies.
        let mut run = 0;
        let mut i = 0;
        while i < input.len() {
            if self.state == DotState::Mid {
                // Inside a line only a CR can lead anywhere (a bare LF is content and never
                // ends a line here), so jump straight to the next one.
                match memchr::memchr(CR, &input[i..]) {
                    Some(k) => {
                        i += k + 1;
                        self.state = DotState::Cr;
                        continue;
                    }
                    None => break,
                }
            }
            let b = input[i];
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
            i += 1;
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
        // Line structure, a line at a time: only CR and LF change anything, and a line's
        // length only grows until its CRLF, so checking it once per run is enough.
        let mut rest = bytes;
        if std::mem::take(&mut self.cr_pending) {
            if rest[0] == LF {
                self.line_len += 1;
                self.check_line();
                self.line_len = 0;
                rest = &rest[1..];
            } else {
                self.bare_cr_lf = true;
            }
        }
        while let Some(k) = memchr::memchr2(CR, LF, rest) {
            self.line_len += k as u64 + 1;
            if rest[k] == LF {
                self.bare_cr_lf = true;
                rest = &rest[k + 1..];
                continue;
            }
            match rest.get(k + 1) {
                Some(&LF) => {
                    self.line_len += 1;
                    self.check_line();
                    self.line_len = 0;
                    rest = &rest[k + 2..];
                }
                Some(_) => {
                    self.bare_cr_lf = true;
                    rest = &rest[k + 1..];
                }
                None => {
                    self.cr_pending = true;
                    rest = &[];
                }
            }
        }
        self.line_len += rest.len() as u64;
        self.check_line();
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
pub(crate) mod tests {
    use super::*;
    use proptest::strategy::Strategy;

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

    /// The octet-at-a-time decoder and sink that the line-at-a-time ones replaced, kept as
    /// the reference they must agree with.
    mod reference {
        use super::super::{CR, LF, Taint};

        #[derive(Clone, Copy, PartialEq, Eq)]
        enum State {
            LineStart,
            Dot,
            DotCr,
            Mid,
            Cr,
        }

        fn after(b: u8) -> State {
            if b == CR { State::Cr } else { State::Mid }
        }

        pub struct Decoder {
            state: State,
            sink: Sink,
        }

        impl Decoder {
            pub fn new(max_size: u64, max_line: u64) -> Self {
                Decoder {
                    state: State::LineStart,
                    sink: Sink {
                        body: Vec::new(),
                        size: 0,
                        max_size,
                        max_line,
                        line_len: 0,
                        cr_pending: false,
                        bare: false,
                        long: false,
                    },
                }
            }

            pub fn decode(&mut self, input: &[u8]) -> (usize, bool) {
                for (i, &b) in input.iter().enumerate() {
                    self.state = match self.state {
                        State::LineStart if b == b'.' => State::Dot,
                        State::Dot if b == CR => State::DotCr,
                        State::DotCr if b == LF => return (i + 1, true),
                        State::DotCr => {
                            self.sink.push(CR);
                            self.sink.push(b);
                            after(b)
                        }
                        State::Cr if b == LF => {
                            self.sink.push(b);
                            State::LineStart
                        }
                        _ => {
                            self.sink.push(b);
                            after(b)
                        }
                    };
                }
                (input.len(), false)
            }

            /// Octets, current line length, CR pending, bare CR/LF seen, long line seen.
            pub fn marks(&self) -> (u64, u64, bool, bool, bool) {
                let s = &self.sink;
                (s.size, s.line_len, s.cr_pending, s.bare, s.long)
            }

            pub fn finish(self) -> Result<Vec<u8>, Taint> {
                let s = self.sink;
                if s.bare || s.cr_pending {
                    Err(Taint::BareCrLf)
                } else if s.size > s.max_size {
                    Err(Taint::TooBig)
                } else if s.long {
                    Err(Taint::LongLine)
                } else {
                    Ok(s.body)
                }
            }
        }

        struct Sink {
            body: Vec<u8>,
            size: u64,
            max_size: u64,
            max_line: u64,
            line_len: u64,
            cr_pending: bool,
            bare: bool,
            long: bool,
        }

        impl Sink {
            fn push(&mut self, b: u8) {
                self.size += 1;
                if self.size <= self.max_size {
                    self.body.push(b);
                }
                let ends_line = std::mem::take(&mut self.cr_pending) && {
                    if b != LF {
                        self.bare = true;
                    }
                    b == LF
                };
                if !ends_line {
                    match b {
                        CR => self.cr_pending = true,
                        LF => self.bare = true,
                        _ => {}
                    }
                }
                self.line_len += 1;
                if self.line_len > self.max_line {
                    self.long = true;
                }
                if ends_line {
                    self.line_len = 0;
                }
            }
        }
    }

    fn marks(sink: &BodySink) -> (u64, u64, bool, bool, bool) {
        (
            sink.size,
            sink.line_len,
            sink.cr_pending,
            sink.bare_cr_lf,
            sink.long_line,
        )
    }

    /// Random message octets, built from pieces that make dots at line starts, CRLFs and
    /// long lines common; bare CR and LF only when `bare` (they would mask the other
    /// refusals, which come after them).
    fn octets(bare: bool) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        let mut pieces: Vec<&'static [u8]> = vec![
            b"a",
            b"b",
            b"abcdefgh",
            b"\0",
            b"\r\n",
            b"\r\n",
            b"\r\n.",
            b".",
            b"..",
            b"\r\n.\r\n",
            b"\r\n..\r\n",
        ];
        if bare {
            pieces.extend([&b"\r"[..], b"\n", b"\r\r\n", b"\n.\n", b".\r"]);
        }
        proptest::collection::vec(proptest::sample::select(pieces), 0..80).prop_map(|p| p.concat())
    }

    /// `bytes` cut at `cuts` (positions past the end are ignored).
    pub(crate) fn pieces(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().copied().filter(|&c| c < bytes.len()).collect();
        points.extend([0, bytes.len()]);
        points.sort_unstable();
        points.dedup();
        points
            .windows(2)
            .map(|w| bytes[w[0]..w[1]].to_vec())
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 4096,
            failure_persistence: None,
            ..Default::default()
        })]

        /// However the input is cut, the line-at-a-time decoder and sink consume, keep and
        /// refuse exactly what the octet-at-a-time reference does.
        #[test]
        fn decode_matches_reference(
            bytes in proptest::bool::ANY.prop_flat_map(octets),
            cuts in proptest::collection::vec(0usize..400, 0..30),
            max_size in 0u64..500,
            max_line in 1u64..40,
        ) {
            let mut fast = DotDecoder::new();
            let mut sink = BodySink::new(max_size as usize, max_line as usize);
            let mut slow = reference::Decoder::new(max_size, max_line);
            let mut ended = false;
            for piece in pieces(&bytes, &cuts) {
                let got = fast.decode(&piece, &mut sink);
                let want = slow.decode(&piece);
                proptest::prop_assert_eq!(got, want);
                proptest::prop_assert_eq!(marks(&sink), slow.marks());
                if got.1 {
                    ended = true;
                    break;
                }
            }
            proptest::prop_assert_eq!(sink.finish(), slow.finish(), "ended: {}", ended);
        }

        /// The sink alone (BDAT) agrees with the reference on any cut of any octets.
        #[test]
        fn sink_matches_reference(
            bytes in proptest::bool::ANY.prop_flat_map(octets)
                .prop_map(|b| b.into_iter().filter(|&o| o != b'.').collect::<Vec<u8>>()),
            cuts in proptest::collection::vec(0usize..400, 0..30),
            max_size in 0u64..500,
            max_line in 1u64..40,
        ) {
            let mut sink = BodySink::new(max_size as usize, max_line as usize);
            // The reference decoder in the middle of a line passes every octet through,
            // except that it would end on CRLF.CRLF, which this alphabet cannot spell.
            let mut slow = reference::Decoder::new(max_size, max_line);
            slow.decode(b"x");
            sink.push(b"x");
            for piece in pieces(&bytes, &cuts) {
                sink.push(&piece);
                slow.decode(&piece);
                proptest::prop_assert_eq!(marks(&sink), slow.marks());
            }
            proptest::prop_assert_eq!(sink.finish(), slow.finish());
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
