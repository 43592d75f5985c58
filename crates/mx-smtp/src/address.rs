//! What smtp-proto's address parser lacks, done on the raw command line after smtp-proto has
//! accepted it:
//!
//! - it unquotes quoted local parts (`"a b"@x` comes back as `a b@x`, which is a different
//!   address or none at all), while the driver must get the address as written;
//! - it returns `""` both for `<>` and for `<Postmaster>`;
//! - it accepts an empty domain (`<a@>`) and control characters inside quoted strings;
//! - its SIZE and BDAT chunk-size readers restart from a single digit once the number no
//!   longer fits in a `usize`, so `SIZE=99999999999999999999` reads as a small number.
//!
//! Nothing here interprets `%` or `!` in a local part, nor lowercases anything but the bare
//! `Postmaster`: routing decisions belong to the driver's policy.

/// A path as the session hands it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Path {
    /// `<>`.
    Null,
    /// `<Postmaster>` without a domain, in any case (RFC 5321 §4.1.1.3): a valid recipient,
    /// given to the driver as `postmaster`; not a valid sender.
    Postmaster,
    /// `local@domain`, as written, with any source route removed.
    Mailbox(String),
}

/// Why a path is refused after smtp-proto's own checks passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// Not a well-formed path (the reply is 501 with 5.1.7 or 5.1.3).
    Syntax,
    /// Non-ASCII octets while the transaction has no SMTPUTF8 (553 5.6.7, RFC 6531 §3.5).
    NeedsSmtpUtf8,
}

/// Splits `MAIL FROM:<path> params` or `RCPT TO:<path> params` (CRLF already removed) into
/// the text between the angle brackets and what follows the closing one. The `>` that ends
/// the path is the first one outside a quoted string; a backslash inside quotes escapes the
/// next character (RFC 5321 §4.1.2, quoted-pairSMTP).
pub(crate) fn split_path(line: &str) -> Option<(&str, &str)> {
    let after_colon = &line[line.find(':')? + 1..];
    let rest = after_colon.trim_start_matches(' ');
    let inner = rest.strip_prefix('<')?;
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        if escaped {
            escaped = false;
        } else if in_quote {
            match c {
                '\\' => escaped = true,
                '"' => in_quote = false,
                _ => {}
            }
        } else {
            match c {
                '"' => in_quote = true,
                '>' => return Some((&inner[..i], &inner[i + 1..])),
                _ => {}
            }
        }
    }
    None
}

/// Reads a path (the text between the brackets) as given by [`split_path`].
pub(crate) fn parse_path(raw: &str, smtputf8: bool) -> Result<Path, PathError> {
    let mut path = raw.trim_start_matches(' ');
    // A source route `@a,@b:` is accepted and dropped (RFC 5321 §4.1.1.3 and appendix C):
    // relays must not route by it any more. Route domains hold no quotes, so the first colon
    // ends it.
    if path.starts_with('@') {
        path = match path.split_once(':') {
            Some((_, mailbox)) => mailbox.trim_start_matches(' '),
            None => return Err(PathError::Syntax),
        };
    }
    if path.is_empty() {
        return Ok(Path::Null);
    }
    if path.eq_ignore_ascii_case("postmaster") {
        return Ok(Path::Postmaster);
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(PathError::Syntax);
    }
    // The domain holds no `@` (smtp-proto counted exactly one outside quotes), so the last
    // one splits local part from domain even when the local part is quoted and holds `@`.
    match path.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {}
        _ => return Err(PathError::Syntax),
    }
    if !smtputf8 && !path.is_ascii() {
        return Err(PathError::NeedsSmtpUtf8);
    }
    Ok(Path::Mailbox(path.to_owned()))
}

/// The value of `SIZE=` among the MAIL parameters, read without wrapping around: a number
/// too large for a `u64` is `u64::MAX`. `None` when there is no SIZE parameter.
pub(crate) fn size_param(params: &str) -> Option<u64> {
    params.split_ascii_whitespace().find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.eq_ignore_ascii_case("SIZE")
            .then(|| saturating_decimal(value))
    })
}

/// The chunk size of a BDAT line (CRLF removed), or `None` if it is not a decimal number
/// that fits in a `u64`.
pub(crate) fn bdat_chunk_size(line: &str) -> Option<u64> {
    line.split_ascii_whitespace().nth(1)?.parse().ok()
}

fn saturating_decimal(digits: &str) -> u64 {
    digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0u64, |n, d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split() {
        assert_eq!(
            split_path("MAIL FROM:<a@b> SIZE=1"),
            Some(("a@b", " SIZE=1"))
        );
        assert_eq!(split_path("RCPT TO: <\"a>b\"@c>"), Some(("\"a>b\"@c", "")));
        assert_eq!(
            split_path("RCPT TO:<\"a\\\">\"@c>x"),
            Some(("\"a\\\">\"@c", "x"))
        );
        assert_eq!(split_path("RCPT TO:<a@b"), None);
        assert_eq!(split_path("RCPT TO:a@b"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("", false), Ok(Path::Null));
        assert_eq!(parse_path("PostMaster", false), Ok(Path::Postmaster));
        assert_eq!(
            parse_path("@a,@b:user@c", false),
            Ok(Path::Mailbox("user@c".into()))
        );
        assert_eq!(
            parse_path("a%b!c@d", false),
            Ok(Path::Mailbox("a%b!c@d".into()))
        );
        assert_eq!(
            parse_path("\"a b\"@d", false),
            Ok(Path::Mailbox("\"a b\"@d".into()))
        );
        assert_eq!(parse_path("a@", false), Err(PathError::Syntax));
        assert_eq!(parse_path("@a,@b", false), Err(PathError::Syntax));
        assert_eq!(parse_path("\"a\u{1}\"@b", false), Err(PathError::Syntax));
        assert_eq!(parse_path("ü@b", false), Err(PathError::NeedsSmtpUtf8));
        assert_eq!(parse_path("ü@b", true), Ok(Path::Mailbox("ü@b".into())));
    }

    #[test]
    fn sizes() {
        assert_eq!(size_param(" BODY=8BITMIME size=12"), Some(12));
        assert_eq!(size_param(" SIZE=99999999999999999999999"), Some(u64::MAX));
        assert_eq!(size_param(" SMTPUTF8"), None);
        assert_eq!(bdat_chunk_size("BDAT 10 LAST"), Some(10));
        assert_eq!(bdat_chunk_size("BDAT 99999999999999999999999"), None);
    }
}
