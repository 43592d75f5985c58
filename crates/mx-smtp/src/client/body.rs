//! Message content on the way out: the CRLF check and dot-stuffing (RFC 5321 §4.5.2).

/// Whether `body` holds a CR not followed by LF or an LF not preceded by CR. Such a body is
/// refused rather than sent: a receiver may read a bare LF as a line end and a bare
/// `\n.\n` as the end of data (SMTP smuggling), and repairing it here would change a
/// message that may be signed (DKIM).
pub(crate) fn has_bare_cr_or_lf(body: &[u8]) -> bool {
    let mut rest = body;
    while let Some(k) = memchr::memchr2(b'\r', b'\n', rest) {
        if rest[k] == b'\n' || rest.get(k + 1) != Some(&b'\n') {
            return true;
        }
        rest = &rest[k + 2..];
    }
    false
}

/// Writes a CRLF-clean body out in blocks with dot-stuffing and the final `.CRLF`.
///
/// Blocks let the driver apply the RFC 5321 §4.5.3.2.5 data-block timeout per write, and
/// avoid a stuffed copy of the whole message.
#[derive(Debug, Default)]
pub(crate) struct DotStuffer {
    /// Octets of the body already written.
    pos: usize,
}

impl DotStuffer {
    /// The next block of about `max` octets (a few more for the terminator), and whether it
    /// is the last one. `body` must have passed [`has_bare_cr_or_lf`] and must be the same
    /// on every call.
    pub(crate) fn next_block(&mut self, body: &[u8], max: usize) -> (Vec<u8>, bool) {
        let max = max.max(1);
        let remaining = body.len().saturating_sub(self.pos);
        let mut out = Vec::with_capacity(remaining.min(max) + 8);
        while self.pos < body.len() && out.len() < max {
            // In a CRLF-clean body every LF ends a line, so a line starts at the beginning
            // and after each LF. A block boundary inside a line is not a line start.
            let line_start = self.pos == 0 || body[self.pos - 1] == b'\n';
            if line_start && body[self.pos] == b'.' {
                out.push(b'.');
            }
            // Only a line that starts with a dot needs anything added, so copy everything up
            // to the next `LF .` (or the end of the block) in one go.
            let room = max.saturating_sub(out.len()).max(1);
            let end = body.len().min(self.pos + room);
            let take = memchr::memmem::find(&body[self.pos..end], b"\n.")
                .map_or(end - self.pos, |lf| lf + 1);
            out.extend_from_slice(&body[self.pos..self.pos + take]);
            self.pos += take;
        }
        let last = self.pos >= body.len();
        if last {
            // The terminator is CRLF.CRLF: a body whose last line has no CRLF gets one,
            // otherwise its last line would run into the dot.
            if !body.is_empty() && !body.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
        }
        (out, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuff(body: &[u8], max: usize) -> Vec<u8> {
        let mut s = DotStuffer::default();
        let mut out = Vec::new();
        loop {
            let (block, last) = s.next_block(body, max);
            assert!(block.len() <= max + 6 || max == 0);
            out.extend_from_slice(&block);
            if last {
                return out;
            }
        }
    }

    /// The octet-at-a-time stuffing the block stuffer must agree with.
    fn reference_stuff(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &b) in body.iter().enumerate() {
            if b == b'.' && (i == 0 || body[i - 1] == b'\n') {
                out.push(b'.');
            }
            out.push(b);
        }
        if !body.is_empty() && !body.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    fn reference_bare(body: &[u8]) -> bool {
        body.iter().enumerate().any(|(i, &b)| match b {
            b'\r' => body.get(i + 1) != Some(&b'\n'),
            b'\n' => i == 0 || body[i - 1] != b'\r',
            _ => false,
        })
    }

    /// A CRLF-clean body from `lines` (no CR or LF in them), the last without CRLF when
    /// `open_end`.
    fn clean_body(lines: &[Vec<u8>], open_end: bool) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            body.extend_from_slice(line);
            if !(open_end && i + 1 == lines.len()) {
                body.extend_from_slice(b"\r\n");
            }
        }
        body
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2048,
            failure_persistence: None,
            ..Default::default()
        })]

        /// The bare CR/LF check agrees with the octet-at-a-time one.
        #[test]
        fn bare_matches_reference(
            bytes in proptest::collection::vec(
                proptest::sample::select(b"\r\n\r\nab".to_vec()),
                0..200,
            ),
        ) {
            proptest::prop_assert_eq!(has_bare_cr_or_lf(&bytes), reference_bare(&bytes));
        }

        /// Stuffing in blocks of any size gives the reference's octets, and the server's
        /// decoder, fed those octets cut anywhere, gives back the body (with the CRLF the
        /// terminator needs) and stops right after the terminator.
        #[test]
        fn stuff_then_decode_round_trips(
            lines in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(b"..ab ".to_vec()), 0..30),
                0..20,
            ),
            open_end in proptest::bool::ANY,
            max in 1usize..100,
            cuts in proptest::collection::vec(0usize..800, 0..30),
        ) {
            let body = clean_body(&lines, open_end);
            proptest::prop_assert!(!has_bare_cr_or_lf(&body));
            let wire = stuff(&body, max);
            proptest::prop_assert_eq!(&wire, &reference_stuff(&body));

            let mut decoder = crate::data::DotDecoder::new();
            let mut sink = crate::data::BodySink::new(1 << 20, 1 << 20);
            let mut consumed = 0;
            let mut ended = false;
            for piece in crate::data::tests::pieces(&wire, &cuts) {
                let (n, end) = decoder.decode(&piece, &mut sink);
                consumed += n;
                if end {
                    ended = true;
                    break;
                }
            }
            proptest::prop_assert!(ended);
            proptest::prop_assert_eq!(consumed, wire.len());
            let mut want = body.clone();
            if !want.is_empty() && !want.ends_with(b"\r\n") {
                want.extend_from_slice(b"\r\n");
            }
            proptest::prop_assert_eq!(sink.finish(), Ok(want));
        }
    }

    #[test]
    fn bare_line_endings() {
        assert!(!has_bare_cr_or_lf(b""));
        assert!(!has_bare_cr_or_lf(b"a\r\nb\r\n"));
        assert!(!has_bare_cr_or_lf(b"a\r\nb"));
        assert!(has_bare_cr_or_lf(b"a\nb"));
        assert!(has_bare_cr_or_lf(b"a\r"));
        assert!(has_bare_cr_or_lf(b"a\r\r\n"));
        assert!(has_bare_cr_or_lf(b"\n"));
    }

    #[test]
    fn stuffing() {
        assert_eq!(stuff(b"", 10), b".\r\n");
        assert_eq!(stuff(b".", 10), b"..\r\n.\r\n");
        assert_eq!(stuff(b".\r\n", 10), b"..\r\n.\r\n");
        assert_eq!(
            stuff(b"a\r\n.b\r\n..\r\nc.\r\n", 64),
            b"a\r\n..b\r\n...\r\nc.\r\n.\r\n"
        );
        assert_eq!(stuff(b"no newline", 64), b"no newline\r\n.\r\n");
        // Every block size gives the same bytes, including cuts right before a dot.
        let body = b".a\r\n.\r\n\r\n..b.\r\nx.y\r\n.";
        let whole = stuff(body, 1 << 20);
        for max in 1..40 {
            assert_eq!(stuff(body, max), whole, "block size {max}");
        }
    }
}
