//! Trace headers: `Received` (added when a message is accepted, RFC 5321 §4.4) and
//! `Return-Path` (added at final delivery).

use std::net::IpAddr;

pub use mx_smtp::dsn::rfc5322_date;

/// What the session knows about how a message arrived.
pub struct Arrival<'a> {
    pub helo: Option<&'a str>,
    pub client_ip: IpAddr,
    pub hostname: &'a str,
    pub tls: bool,
    pub authenticated: bool,
    /// The single recipient, when there is one (multi-recipient mail does not list them,
    /// so Bcc recipients are not disclosed to each other).
    pub single_recipient: Option<&'a str>,
    pub unix_time: u64,
}

pub fn received(a: &Arrival<'_>) -> String {
    // RFC 3848 protocol names.
    let with = match (a.tls, a.authenticated) {
        (false, false) => "ESMTP",
        (true, false) => "ESMTPS",
        (false, true) => "ESMTPA",
        (true, true) => "ESMTPSA",
    };
    let helo = a
        .helo
        .map(|h| {
            h.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(255)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    let ip = match a.client_ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("IPv6:{v6}"),
    };
    let rcpt = a
        .single_recipient
        .map(|r| format!("\r\n\tfor <{r}>"))
        .unwrap_or_default();
    format!(
        "Received: from {helo} ([{ip}])\r\n\tby {} (mxroute) with {with}{rcpt};\r\n\t{}\r\n",
        a.hostname,
        rfc5322_date(a.unix_time)
    )
}

pub fn return_path(mail_from: &str) -> String {
    format!("Return-Path: <{mail_from}>\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_header_is_folded_crlf_and_names_the_protocol() {
        let h = received(&Arrival {
            helo: Some("client.example"),
            client_ip: "127.0.0.2".parse().unwrap(),
            hostname: "mx.example.com",
            tls: true,
            authenticated: false,
            single_recipient: Some("bob@example.com"),
            unix_time: 0,
        });
        assert!(h.starts_with("Received: from client.example ([127.0.0.2])\r\n\tby mx.example.com (mxroute) with ESMTPS\r\n\tfor <bob@example.com>;"));
        assert!(h.ends_with("+0000\r\n"));
        assert!(!h.replace("\r\n", "").contains('\n'));
    }
}
