//! The SMTP side of delivery: the transport over mx-smtp's client session, and bounces.

use mx_smtp::dsn::{self, Action, DsnInput, DsnKind, RecipientReport};
use mx_smtp::{EnhancedStatus, Reply};
use mx_spool::Envelope;

use super::schedule::Failed;

/// Read back a reply we recorded as text (`550 5.1.1 User unknown`).
pub fn parse_reply(text: &str) -> Reply {
    let code = text
        .get(..3)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (200..600).contains(c))
        .unwrap_or(554);
    let rest = text.get(3..).unwrap_or("").trim_start();
    let (status, text) = match rest.split_once(' ') {
        Some((first, tail)) => match parse_status(first) {
            Some(s) => (Some(s), tail),
            None => (None, rest),
        },
        None => match parse_status(rest) {
            Some(s) => (Some(s), ""),
            None => (None, rest),
        },
    };
    Reply::new(code, status, text)
}

pub fn parse_status(text: &str) -> Option<EnhancedStatus> {
    let mut parts = text.split('.');
    let class = parts.next()?.parse::<u8>().ok()?;
    let subject = parts.next()?.parse::<u16>().ok()?;
    let detail = parts.next()?.parse::<u16>().ok()?;
    if parts.next().is_some() {
        return None;
    }
    let status = EnhancedStatus::new(class, subject, detail);
    status.is_valid().then_some(status)
}

/// The RFC 3464 bounce for `failed` recipients of a message (None for the null sender).
pub fn build_bounce(
    envelope: &Envelope,
    body: &[u8],
    failed: &[Failed],
    hostname: &str,
    now: u64,
) -> Option<dsn::Dsn> {
    let recipients = failed
        .iter()
        .map(|f| {
            let reply = parse_reply(&f.reply);
            RecipientReport {
                final_recipient: f.address.clone(),
                action: Action::Failed,
                status: dsn::status_for_reply(&reply, "5.0.0"),
                remote_mta: None,
                diagnostic: Some(reply),
                last_attempt: Some(now),
                will_retry_until: None,
            }
        })
        .collect();
    dsn::build(&DsnInput {
        reporting_mta: hostname,
        original_envelope_id: None,
        arrival_date: envelope.received_at,
        now,
        original_sender: &envelope.mail_from,
        recipients,
        original_message: body,
        kind: DsnKind::Failed,
        message_id_domain: hostname,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_back() {
        let r = parse_reply("550 5.1.1 User unknown");
        assert_eq!(r.code(), 550);
        assert_eq!(r.status().map(|s| s.to_string()), Some("5.1.1".into()));
        assert_eq!(r.text(), "User unknown");
        let r = parse_reply("451 try later");
        assert_eq!(r.code(), 451);
        assert!(r.status().is_none());
        assert_eq!(parse_reply("garbage").code(), 554);
    }

    #[test]
    fn bounces_go_to_the_sender_from_the_null_sender() {
        let env = Envelope::new("alice@example.com", vec!["x@remote.example".into()]);
        let failed = vec![Failed {
            address: "x@remote.example".into(),
            reply: "550 5.1.1 No such user".into(),
        }];
        let dsn =
            build_bounce(&env, b"Subject: hi\r\n\r\nbody\r\n", &failed, "mx.test", 0).unwrap();
        assert_eq!(dsn.recipient, "alice@example.com");
        assert_eq!(dsn.mail_from, "");
        let text = String::from_utf8(dsn.message).unwrap();
        assert!(text.contains("Status: 5.1.1"));
        assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 No such user"));
        assert!(text.contains("Subject: hi"));
        let null = Envelope::new("", vec!["x@remote.example".into()]);
        assert!(build_bounce(&null, b"", &failed, "mx.test", 0).is_none());
    }
}
