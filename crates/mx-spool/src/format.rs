//! The message file (`queue/<id>.msg`), version 1:
//!
//! ```text
//! MXSPOOL1 <decimal length of the envelope JSON>\n
//! <envelope JSON, exactly that many bytes>\n
//! <body: the message bytes as received, exactly envelope.size bytes>
//! ```
//!
//! The body is last so that it is written straight from the caller's buffer and read with
//! one sequential read. A file is complete exactly when the header parses, the JSON parses,
//! and the file length is header + JSON + 1 + `size`: a cut anywhere fails one of these
//! (a cut in the body makes the file too short), so recovery never mistakes a partial file
//! for a message. There is no checksum: files reach `queue/` only after fsync and rename, so
//! torn writes cannot appear there; a checksum would only catch media corruption, which the
//! file system's own checks are better placed to find.

use std::io::{self, BufRead, Read};

use crate::Envelope;

/// The start of every message file; the `1` is the file format version.
pub(crate) const MAGIC: &[u8] = b"MXSPOOL1 ";
/// `u64::MAX` has 20 decimal digits.
const MAX_LEN_DIGITS: usize = 20;
/// An envelope larger than this is taken as a damaged length field (the largest real ones,
/// thousands of recipients, are a few MiB).
pub(crate) const MAX_ENVELOPE_JSON: u64 = 64 << 20;

/// Why a message file could not be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The operating system failed the read: not the file's fault.
    Io(io::Error),
    /// The bytes are not a complete spool message.
    Corrupt(String),
}

/// The parsed start of a message file.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) envelope: Envelope,
    /// Where the body starts: header line + JSON + newline.
    pub(crate) body_offset: u64,
}

impl Head {
    /// The file length a complete message with this head has.
    pub(crate) fn expected_len(&self) -> Option<u64> {
        self.body_offset.checked_add(self.envelope.size)
    }

    /// Compares the real file length with the head's promise.
    pub(crate) fn check_len(&self, file_len: u64) -> Result<(), String> {
        let Some(expected) = self.expected_len() else {
            return Err(format!("size {} overflows", self.envelope.size));
        };
        if file_len < expected {
            Err(format!(
                "truncated: the file has {file_len} bytes, the header and size promise {expected}"
            ))
        } else if file_len > expected {
            Err(format!(
                "{} bytes of unexpected data after the {}-byte body",
                file_len - expected,
                self.envelope.size
            ))
        } else {
            Ok(())
        }
    }
}

/// The header line, the envelope JSON and its newline: everything before the body.
pub(crate) fn encode_head(envelope: &Envelope) -> Result<Vec<u8>, serde_json::Error> {
    let json = serde_json::to_vec(envelope)?;
    let mut head = Vec::with_capacity(MAGIC.len() + MAX_LEN_DIGITS + json.len() + 2);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(json.len().to_string().as_bytes());
    head.push(b'\n');
    head.extend_from_slice(&json);
    head.push(b'\n');
    Ok(head)
}

/// Reads the header line and the envelope, leaving `r` at the start of the body.
pub(crate) fn read_head(r: &mut impl BufRead) -> Result<Head, HeadError> {
    let line_limit = MAGIC.len() + MAX_LEN_DIGITS + 1;
    let mut line = Vec::with_capacity(line_limit);
    r.by_ref()
        .take(line_limit as u64)
        .read_until(b'\n', &mut line)
        .map_err(HeadError::Io)?;
    if line.last() != Some(&b'\n') {
        return Err(HeadError::Corrupt(if line.len() < line_limit {
            format!("truncated in the header line after {} bytes", line.len())
        } else {
            "header line too long".to_string()
        }));
    }
    if !line.starts_with(MAGIC) {
        return Err(HeadError::Corrupt(
            "not a spool message file (no MXSPOOL1 header)".to_string(),
        ));
    }
    let digits = &line[MAGIC.len()..line.len() - 1];
    let json_len = std::str::from_utf8(digits)
        .ok()
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| d.parse::<u64>().ok())
        .filter(|&n| n <= MAX_ENVELOPE_JSON)
        .ok_or_else(|| HeadError::Corrupt("bad envelope length in the header line".to_string()))?;

    // Read through `take` rather than into a buffer of `json_len` bytes, so that a damaged
    // length field cannot make us allocate before we know the bytes are there.
    let mut json = Vec::new();
    r.by_ref()
        .take(json_len)
        .read_to_end(&mut json)
        .map_err(HeadError::Io)?;
    if json.len() as u64 != json_len {
        return Err(HeadError::Corrupt(format!(
            "truncated in the envelope ({} of {json_len} bytes)",
            json.len()
        )));
    }
    let mut newline = [0u8; 1];
    match r.read_exact(&mut newline) {
        Ok(()) if newline[0] == b'\n' => {}
        Ok(()) => {
            return Err(HeadError::Corrupt(
                "no newline after the envelope (bad length field)".to_string(),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(HeadError::Corrupt(
                "truncated right after the envelope".to_string(),
            ));
        }
        Err(e) => return Err(HeadError::Io(e)),
    }
    let envelope: Envelope = serde_json::from_slice(&json)
        .map_err(|e| HeadError::Corrupt(format!("envelope JSON: {e}")))?;
    Ok(Head {
        envelope,
        body_offset: line.len() as u64 + json_len + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Envelope, Vec<u8>) {
        let mut env = Envelope::new("a@x.example", vec!["b@y.example".into()]);
        let body = b"Subject: t\r\n\r\nline\r\n.\r\n".to_vec();
        env.size = body.len() as u64;
        let mut file = encode_head(&env).unwrap_or_default();
        file.extend_from_slice(&body);
        (env, file)
    }

    fn parse(bytes: &[u8]) -> Result<Head, String> {
        let mut r = bytes;
        let head = read_head(&mut r).map_err(|e| format!("{e:?}"))?;
        head.check_len(bytes.len() as u64)?;
        Ok(head)
    }

    #[test]
    fn round_trip() {
        let (env, file) = sample();
        let head = parse(&file);
        let head = head.as_ref().map_err(String::as_str);
        assert_eq!(head.map(|h| &h.envelope), Ok(&env));
        let offset = head.map(|h| h.body_offset as usize).unwrap_or(0);
        assert_eq!(&file[offset..], b"Subject: t\r\n\r\nline\r\n.\r\n");
    }

    #[test]
    fn every_cut_is_refused_as_corrupt() {
        let (_, file) = sample();
        for cut in 0..file.len() {
            let mut r = &file[..cut];
            match read_head(&mut r) {
                Err(HeadError::Corrupt(_)) => {}
                Err(HeadError::Io(e)) => panic!("cut {cut}: io error {e}"),
                Ok(head) => assert!(head.check_len(cut as u64).is_err(), "cut {cut} accepted"),
            }
        }
        let mut longer = file.clone();
        longer.push(b'x');
        assert!(parse(&longer).is_err());
    }

    #[test]
    fn damaged_headers_are_refused() {
        let (_, file) = sample();
        let text = String::from_utf8_lossy(&file).into_owned();
        let json_len = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("MXSPOOL1 "))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        for bad in [
            text.replacen("MXSPOOL1", "MXSPOOL2", 1),
            text.replacen(
                &format!(" {json_len}\n"),
                &format!(" {}\n", json_len - 1),
                1,
            ),
            text.replacen(
                &format!(" {json_len}\n"),
                &format!(" {}\n", json_len + 1),
                1,
            ),
            text.replacen(&format!(" {json_len}\n"), " +1\n", 1),
            text.replacen(&format!(" {json_len}\n"), " 99999999999999999999999\n", 1),
            text.replacen("\"mail_from\"", "\"mail_frxm\"", 1),
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
