//! The message file (`queue/<id>.msg`), version 2:
//!
//! ```text
//! MXSPOOL2 <decimal length of the envelope JSON> <CRC-32 of the JSON and the body, 8 hex digits>\n
//! <envelope JSON, exactly that many bytes>\n
//! <body: the message bytes as received, exactly envelope.size bytes>
//! ```
//!
//! The body is last so that it is written straight from the caller's buffer and read with
//! one sequential read. A cut anywhere fails the header, the JSON or the length check (a cut
//! in the body makes the file too short), which recovery does for every file at open.
//!
//! The checksum is for what a cut cannot explain. The group committer renames a batch's
//! files into `queue/` before the one `syncfs` that makes their contents and their names
//! durable together (docs/spool.md), and it writes new messages over the files of removed
//! ones. A power loss before that flush returned (no 250 was given for those messages) can
//! therefore leave, under a new name, a file of the right length holding some or all of an
//! older message's bytes. The id inside the envelope catches an old file left whole; the
//! checksum catches a mix. It is checked whenever a body is read, which every delivery does
//! before sending a byte, not at open: that would read the whole queue.
//!
//! Version 1 files (`MXSPOOL1 <length>\n`, no checksum) are still read; they only ever came
//! from a committer that flushed contents before renaming.

use std::io::{self, BufRead, Read};

use crate::Envelope;

/// The start of every message file written now; the `2` is the file format version.
pub(crate) const MAGIC: &[u8] = b"MXSPOOL2 ";
/// The start of a version 1 file: the same, without the checksum.
const MAGIC_V1: &[u8] = b"MXSPOOL1 ";
/// A CRC-32 in hex, and the space before it.
const CHECKSUM_FIELD: usize = 9;
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
    /// Version 2: the CRC-32 the header promises, and the hasher that has read the JSON and
    /// waits for the body.
    pub(crate) checksum: Option<(u32, crc32fast::Hasher)>,
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

impl Head {
    /// Checks a body read whole against the header's checksum (version 1: nothing to check).
    pub(crate) fn verify_body(self, body: &[u8]) -> Result<(), String> {
        let Some((expected, mut hasher)) = self.checksum else {
            return Ok(());
        };
        hasher.update(body);
        let found = hasher.finalize();
        if found == expected {
            Ok(())
        } else {
            Err(format!(
                "checksum mismatch: the header says {expected:08x}, the envelope and body give {found:08x}"
            ))
        }
    }
}

/// The header line, the envelope JSON and its newline: everything before `body`, whose
/// checksum the header line carries.
pub(crate) fn encode_head(envelope: &Envelope, body: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let json = serde_json::to_vec(envelope)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&json);
    hasher.update(body);
    let mut head =
        Vec::with_capacity(MAGIC.len() + MAX_LEN_DIGITS + CHECKSUM_FIELD + json.len() + 2);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(json.len().to_string().as_bytes());
    head.extend_from_slice(format!(" {:08x}", hasher.finalize()).as_bytes());
    head.push(b'\n');
    head.extend_from_slice(&json);
    head.push(b'\n');
    Ok(head)
}

/// Reads the header line and the envelope, leaving `r` at the start of the body.
pub(crate) fn read_head(r: &mut impl BufRead) -> Result<Head, HeadError> {
    let line_limit = MAGIC.len() + MAX_LEN_DIGITS + CHECKSUM_FIELD + 1;
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
    let content = &line[..line.len() - 1];
    let (digits, expected) = if let Some(fields) = content.strip_prefix(MAGIC) {
        let bad = || HeadError::Corrupt("bad checksum field in the header line".to_string());
        let space = fields.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let hex = &fields[space + 1..];
        let crc = std::str::from_utf8(hex)
            .ok()
            .filter(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(bad)?;
        (&fields[..space], Some(crc))
    } else if let Some(fields) = content.strip_prefix(MAGIC_V1) {
        (fields, None)
    } else {
        return Err(HeadError::Corrupt(
            "not a spool message file (no MXSPOOL2 or MXSPOOL1 header)".to_string(),
        ));
    };
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
    let checksum = expected.map(|crc| {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&json);
        (crc, hasher)
    });
    Ok(Head {
        envelope,
        body_offset: line.len() as u64 + json_len + 1,
        checksum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"Subject: t\r\n\r\nline\r\n.\r\n";

    fn sample() -> (Envelope, Vec<u8>) {
        let mut env = Envelope::new("a@x.example", vec!["b@y.example".into()]);
        env.size = BODY.len() as u64;
        let mut file = encode_head(&env, BODY).unwrap_or_default();
        file.extend_from_slice(BODY);
        (env, file)
    }

    /// Reads a whole file the way the spool does: head, length, then the body's checksum.
    fn parse(bytes: &[u8]) -> Result<(Envelope, Vec<u8>), String> {
        let mut r = bytes;
        let head = read_head(&mut r).map_err(|e| format!("{e:?}"))?;
        head.check_len(bytes.len() as u64)?;
        let body = bytes[head.body_offset as usize..].to_vec();
        let envelope = head.envelope.clone();
        head.verify_body(&body)?;
        Ok((envelope, body))
    }

    #[test]
    fn round_trip() {
        let (env, file) = sample();
        assert!(file.starts_with(b"MXSPOOL2 "));
        assert_eq!(parse(&file), Ok((env, BODY.to_vec())));
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
        let first = text.lines().next().unwrap_or_default().to_string();
        let mut fields = first.split(' ').skip(1);
        let json_len: usize = fields.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let crc = fields.next().unwrap_or_default().to_string();
        for bad in [
            text.replacen("MXSPOOL2", "MXSPOOL3", 1),
            text.replacen(&format!(" {json_len} "), &format!(" {} ", json_len - 1), 1),
            text.replacen(&format!(" {json_len} "), &format!(" {} ", json_len + 1), 1),
            text.replacen(&format!(" {json_len} "), " +1 ", 1),
            text.replacen(&format!(" {json_len} "), " 99999999999999999999999 ", 1),
            text.replacen(&format!(" {crc}\n"), "\n", 1),
            text.replacen(&format!(" {crc}\n"), &format!(" {}\n", &crc[1..]), 1),
            text.replacen(&format!(" {crc}\n"), " 0000000g\n", 1),
            text.replacen("\"mail_from\"", "\"mail_frxm\"", 1),
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn any_changed_byte_of_the_envelope_or_body_is_caught() {
        let (_, file) = sample();
        let mut r = &file[..];
        let body_offset = read_head(&mut r).map(|h| h.body_offset).unwrap_or(0) as usize;
        let json_start = file.iter().position(|&b| b == b'\n').unwrap_or(0) + 1;
        // Same length, other bytes: what an older message's blocks under a new header are.
        for at in json_start..file.len() {
            if at == body_offset - 1 {
                continue; // the newline between envelope and body: a cut, tested above
            }
            let mut damaged = file.clone();
            damaged[at] = if damaged[at] == b'x' { b'y' } else { b'x' };
            assert!(
                parse(&damaged).is_err(),
                "a change at byte {at} went unseen"
            );
        }
    }

    #[test]
    fn version_1_files_are_still_read() {
        let (env, _) = sample();
        let json = serde_json::to_vec(&env).unwrap_or_default();
        let mut file = format!("MXSPOOL1 {}\n", json.len()).into_bytes();
        file.extend_from_slice(&json);
        file.push(b'\n');
        file.extend_from_slice(BODY);
        assert_eq!(parse(&file), Ok((env, BODY.to_vec())));
    }
}
