//! Message content on the way out: the CRLF check and dot-stuffing (RFC 5321 §4.5.2).

/// Whether `body` holds a CR not followed by LF or an LF not preceded by CR. Such a body is
/// refused rather than sent: a receiver may read a bare LF as a line end and a bare
/// `\n.\n` as the end of data (SMTP smuggling), and repairing it here would change a
/// message that may be signed (DKIM).
pub(crate) fn has_bare_cr_or_lf(body: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        match b {
            b'\r' if body.get(i + 1) == Some(&b'\n') => i += 2,
            b'\r' | b'\n' => return true,
            _ => i += 1,
        }
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
            let line_end = body[self.pos..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(body.len(), |lf| self.pos + lf + 1);
            let take = (line_end - self.pos).min(max.saturating_sub(out.len()).max(1));
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
