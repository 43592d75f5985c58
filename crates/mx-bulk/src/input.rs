//! Input lines and nameserver lists, without I/O.

use std::net::{IpAddr, SocketAddr};

/// What one input line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// Blank or a `#` comment: no output at all.
    Skip,
    /// A domain or an address to route (trimmed); whether it is well-formed is mx-core's
    /// call (`Resolution::start`), so `bulk` and `route` reject the same inputs.
    Target(&'a str),
}

pub fn parse_line(text: &str) -> Line<'_> {
    let text = text.trim();
    if text.is_empty() || text.starts_with('#') {
        Line::Skip
    } else {
        Line::Target(text)
    }
}

/// The `nameserver` lines of a resolv.conf (port 53). Scoped IPv6 addresses (`fe80::1%eth0`)
/// are left out: a socket address cannot carry the interface name.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_comment_lines_are_skipped() {
        assert_eq!(parse_line(""), Line::Skip);
        assert_eq!(parse_line("   \t"), Line::Skip);
        assert_eq!(parse_line("# providers"), Line::Skip);
        assert_eq!(parse_line("  Example.COM \r"), Line::Target("Example.COM"));
        assert_eq!(parse_line("a b"), Line::Target("a b"));
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch lab\nnameserver 127.0.0.53\nnameserver ::1\n\
                    nameserver fe80::1%eth0\noptions edns0\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}
