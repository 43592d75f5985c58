//! Step 1: turn what the user typed (a domain or an address) into the name we route.

use std::net::IpAddr;

use crate::CoreError;

/// What a recipient's domain part designates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A DNS domain: lower-case A-labels, no trailing dot.
    Domain(String),
    /// An address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`): routed without DNS.
    Literal(IpAddr),
}

impl Target {
    /// The name as shown in output: the domain, or the literal in its bracketed form.
    pub fn display_name(&self) -> String {
        match self {
            Target::Domain(d) => d.clone(),
            Target::Literal(IpAddr::V4(ip)) => format!("[{ip}]"),
            Target::Literal(IpAddr::V6(ip)) => format!("[IPv6:{ip}]"),
        }
    }
}

/// Accept a domain or a whole address (`user@domain`), and normalise it.
///
/// The domain part of an address is what follows the *last* `@`, because a quoted
/// local part may itself contain `@`.
pub fn parse_target(input: &str) -> Result<Target, CoreError> {
    let input = input.trim();
    let domain_part = match input.rfind('@') {
        Some(at) => &input[at + 1..],
        None => input,
    };
    let domain_part = domain_part.trim_end_matches('>');
    if domain_part.starts_with('[') {
        return parse_literal(domain_part).map(Target::Literal);
    }
    normalize_domain(domain_part).map(Target::Domain)
}

/// Lower-case, U-labels to A-labels (IDNA, STD3 rules), drop one trailing dot.
pub fn normalize_domain(input: &str) -> Result<String, CoreError> {
    let trimmed = input.trim();
    let without_dot = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if without_dot.is_empty() {
        return Err(CoreError::EmptyDomain);
    }
    let invalid = |reason: &str| CoreError::InvalidDomain {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    if without_dot.contains("..") || without_dot.starts_with('.') {
        return Err(invalid("empty label"));
    }
    let ascii = idna::domain_to_ascii_strict(without_dot)
        .map_err(|_| invalid("not a valid host name (IDNA/STD3 rules)"))?;
    if ascii.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    if ascii
        .split('.')
        .any(|label| label.is_empty() || label.len() > 63)
    {
        return Err(invalid("a label is empty or longer than 63 characters"));
    }
    Ok(ascii)
}

/// Normalise a name that came from DNS data (an MX exchange, a CNAME target).
///
/// DNS data is not user input: it is already ASCII, so we only fold case and drop the root
/// dot. The root itself (`.`) becomes the empty string, which is what a null MX points at.
pub fn normalize_dns_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn parse_literal(input: &str) -> Result<IpAddr, CoreError> {
    let invalid = |reason: &str| CoreError::InvalidLiteral {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let inner = input
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or_else(|| invalid("missing closing bracket"))?;
    // RFC 5321 §4.1.3: IPv6 literals carry the "IPv6:" tag; an untagged one must be IPv4.
    if let Some(v6) = strip_prefix_ignore_case(inner, "ipv6:") {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| invalid("not an IPv6 address"));
    }
    inner
        .parse::<std::net::Ipv4Addr>()
        .map(IpAddr::V4)
        .map_err(|_| invalid("not an IPv4 address (IPv6 literals need the IPv6: tag)"))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// An exchange written as an IP address (`10 192.0.2.1.`), which RFC 5321 does not allow.
pub fn name_as_ip(name: &str) -> Option<IpAddr> {
    name.parse::<IpAddr>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_1_lowercases_and_drops_trailing_dot() {
        assert_eq!(
            parse_target("Example.COM.").unwrap(),
            Target::Domain("example.com".into())
        );
    }

    #[test]
    fn step_1_address_takes_domain_after_last_at() {
        assert_eq!(
            parse_target("\"a@b\"@Mail.Example.org").unwrap(),
            Target::Domain("mail.example.org".into())
        );
    }

    #[test]
    fn step_1_idna_u_labels_become_a_labels() {
        assert_eq!(
            parse_target("user@bücher.example").unwrap(),
            Target::Domain("xn--bcher-kva.example".into())
        );
    }

    #[test]
    fn step_1_domain_literals() {
        assert_eq!(
            parse_target("user@[192.0.2.1]").unwrap(),
            Target::Literal("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            parse_target("user@[IPv6:2001:db8::1]").unwrap(),
            Target::Literal("2001:db8::1".parse().unwrap())
        );
        assert!(parse_target("user@[2001:db8::1]").is_err());
        assert!(parse_target("user@[192.0.2.1").is_err());
    }

    #[test]
    fn step_1_rejects_bad_domains() {
        assert_eq!(parse_target(""), Err(CoreError::EmptyDomain));
        assert!(parse_target("a..b").is_err());
        assert!(parse_target("exa mple.com").is_err());
        assert!(parse_target(&format!("{}.com", "a".repeat(64))).is_err());
    }
}
