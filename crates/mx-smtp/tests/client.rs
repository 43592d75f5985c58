//! The client session against scripted servers: every write it makes and every outcome.

use std::collections::VecDeque;

use mx_smtp::client::{Action, Phase, StartTls};
use mx_smtp::{
    ClientConfig, ClientError, ClientSession, CloseReason, ConnectionOutcome, DeliveryStatus,
    EnhancedStatus, MessageOutcome, OutboundMessage,
};

const GREETING: &str = "220 mx.test ESMTP\r\n";
/// Everything but STARTTLS, with PIPELINING.
const EHLO_PIPE: &str = "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n\
                         250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n";
/// No PIPELINING, no SMTPUTF8.
const EHLO_PLAIN: &str =
    "250-mx.test\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n";
const EHLO_TLS: &str = "250-mx.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n";

/// What the driver saw, in order, and what it did about it.
struct Run {
    c: ClientSession,
    /// Server reads still to come; an empty queue is the end of the stream.
    turns: VecDeque<Vec<u8>>,
    messages: VecDeque<OutboundMessage>,
    actions: Vec<Action>,
}

impl Run {
    fn new(config: ClientConfig) -> Self {
        Self {
            c: ClientSession::new(config),
            turns: VecDeque::new(),
            messages: VecDeque::new(),
            actions: Vec::new(),
        }
    }

    fn turns(mut self, turns: &[&str]) -> Self {
        self.turns = turns.iter().map(|t| t.as_bytes().to_vec()).collect();
        self
    }

    fn messages(mut self, messages: Vec<OutboundMessage>) -> Self {
        self.messages = messages.into();
        self
    }

    /// Drives the session until it closes.
    fn go(mut self) -> Self {
        for _ in 0..10_000 {
            let action = self.c.next_action();
            self.actions.push(action.clone());
            match action {
                Action::Send { .. } | Action::MessageDone(_) => {}
                Action::Receive { .. } => match self.turns.pop_front() {
                    Some(bytes) => self.c.feed(&bytes),
                    None => self.c.eof(),
                },
                Action::StartTls => self.c.tls_started().unwrap(),
                Action::Ready => match self.messages.pop_front() {
                    Some(m) => self.c.send_message(m).unwrap(),
                    None => self.c.quit().unwrap(),
                },
                Action::Close(_) => {
                    assert!(self.turns.is_empty(), "server turns left over");
                    assert_eq!(self.c.next_action(), action, "Close is repeated");
                    return self;
                }
            }
        }
        panic!("no Close after 10000 actions");
    }

    /// Each write as text.
    fn sends(&self) -> Vec<String> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { bytes, .. } => Some(String::from_utf8(bytes.clone()).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn done(&self) -> Vec<&MessageOutcome> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::MessageDone(o) => Some(o),
                _ => None,
            })
            .collect()
    }

    fn close(&self) -> &ConnectionOutcome {
        match self.actions.last() {
            Some(Action::Close(o)) => o,
            other => panic!("ends with {other:?}"),
        }
    }

    fn receive_phases(&self) -> Vec<Phase> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Receive { timeout } => Some(*timeout),
                _ => None,
            })
            .collect()
    }
}

fn config() -> ClientConfig {
    ClientConfig {
        helo_name: "client.test".into(),
        ..ClientConfig::default()
    }
}

fn message(recipients: &[&str], body: &str) -> OutboundMessage {
    OutboundMessage::new(
        "alice@example.net",
        recipients.iter().map(|r| r.to_string()).collect(),
        body.as_bytes().to_vec(),
    )
}

/// `(recipient, status, reply wire text without CRLF, phase, remote)` per recipient.
fn results(o: &MessageOutcome) -> Vec<(&str, DeliveryStatus, String, Phase, bool)> {
    o.recipients
        .iter()
        .map(|r| {
            let wire = String::from_utf8(r.reply.to_bytes()).unwrap();
            (
                r.recipient.as_str(),
                r.status,
                wire.trim_end().to_owned(),
                r.phase,
                r.remote,
            )
        })
        .collect()
}

use DeliveryStatus::{Delivered, Permanent, Temporary};

#[test]
fn plain_delivery_one_command_at_a_time() {
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PLAIN,
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "354 End data with <CR><LF>.<CR><LF>\r\n",
            "250 2.0.0 Ok: queued as 4F2A9C\r\n",
            "221 2.0.0 Bye\r\n",
        ])
        .messages(vec![message(
            &["bob@example.org"],
            "Subject: hi\r\n\r\nhello\r\n",
        )])
        .go();
    assert_eq!(
        r.sends(),
        [
            "EHLO client.test\r\n",
            "MAIL FROM:<alice@example.net> SIZE=22\r\n",
            "RCPT TO:<bob@example.org>\r\n",
            "DATA\r\n",
            "Subject: hi\r\n\r\nhello\r\n.\r\n",
            "QUIT\r\n",
        ]
    );
    assert_eq!(
        r.receive_phases(),
        [
            Phase::Greeting,
            Phase::Ehlo,
            Phase::Mail,
            Phase::Rcpt,
            Phase::DataInit,
            Phase::DataTermination,
            Phase::Quit,
        ]
    );
    let done = r.done();
    assert_eq!(done.len(), 1);
    assert_eq!(
        results(done[0]),
        [(
            "bob@example.org",
            Delivered,
            "250 2.0.0 Ok: queued as 4F2A9C".to_owned(),
            Phase::DataTermination,
            true
        )]
    );
    let reply = &done[0].recipients[0].reply;
    assert_eq!(reply.status(), Some(EnhancedStatus::new(2, 0, 0)));
    assert_eq!(reply.text(), "Ok: queued as 4F2A9C");
    let close = r.close();
    assert_eq!(close.reason, CloseReason::Quit);
    assert_eq!(close.reply.code(), 221);
    assert!(close.remote && !close.tls);
    assert!(r.c.is_esmtp());
    assert_eq!(r.c.greeting().unwrap().text(), "mx.test ESMTP");
    assert_eq!(r.c.extensions().unwrap().max_size, Some(1000));
}

#[test]
fn pipelining_sends_mail_rcpts_and_data_in_one_write() {
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PIPE,
            // Replies may come in any grouping; here MAIL alone, then the rest.
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n",
            "250 2.0.0 Ok: queued as Q1\r\n",
            "221 2.0.0 Bye\r\n",
        ])
        .messages(vec![message(&["a@example.org", "b@example.org"], "x\r\n")])
        .go();
    assert_eq!(
        r.sends(),
        [
            "EHLO client.test\r\n",
            "MAIL FROM:<alice@example.net> SIZE=3\r\n\
             RCPT TO:<a@example.org>\r\n\
             RCPT TO:<b@example.org>\r\n\
             DATA\r\n",
            "x\r\n.\r\n",
            "QUIT\r\n",
        ]
    );
    // One Receive per read while replies are missing, named after the oldest awaited one.
    assert_eq!(
        r.receive_phases(),
        [
            Phase::Greeting,
            Phase::Ehlo,
            Phase::Mail,
            Phase::Rcpt,
            Phase::DataTermination,
            Phase::Quit,
        ]
    );
    assert!(r.done()[0].all_delivered());
}

#[test]
fn pipelining_is_not_used_when_disabled_or_not_offered() {
    let turns = [
        GREETING,
        EHLO_PIPE,
        "250 2.1.0 Ok\r\n",
        "250 2.1.5 Ok\r\n",
        "354 Go ahead\r\n",
        "250 2.0.0 Ok\r\n",
        "221 2.0.0 Bye\r\n",
    ];
    let r = Run::new(ClientConfig {
        pipelining: false,
        ..config()
    })
    .turns(&turns)
    .messages(vec![message(&["a@example.org"], "x\r\n")])
    .go();
    assert_eq!(
        r.sends()[1..4],
        [
            "MAIL FROM:<alice@example.net> SIZE=3\r\n",
            "RCPT TO:<a@example.org>\r\n",
            "DATA\r\n"
        ]
    );
}

fn mixed(config: ClientConfig, turns: &[&str]) -> Run {
    Run::new(config)
        .turns(turns)
        .messages(vec![message(
            &["ok@example.org", "later@example.org", "nobody@example.org"],
            "x\r\n",
        )])
        .go()
}

fn assert_mixed(r: &Run) {
    assert_eq!(
        results(r.done()[0]),
        [
            (
                "ok@example.org",
                Delivered,
                "250 2.0.0 Ok: queued as Q9".to_owned(),
                Phase::DataTermination,
                true
            ),
            (
                "later@example.org",
                Temporary,
                "450 4.2.1 Mailbox busy".to_owned(),
                Phase::Rcpt,
                true
            ),
            (
                "nobody@example.org",
                Permanent,
                "550 5.1.1 No such user".to_owned(),
                Phase::Rcpt,
                true
            ),
        ]
    );
    assert_eq!(r.close().reason, CloseReason::Quit);
}

#[test]
fn per_recipient_results_one_at_a_time() {
    let r = mixed(
        config(),
        &[
            GREETING,
            EHLO_PLAIN,
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "450 4.2.1 Mailbox busy\r\n",
            "550 5.1.1 No such user\r\n",
            "354 Go ahead\r\n",
            "250 2.0.0 Ok: queued as Q9\r\n",
            "221 2.0.0 Bye\r\n",
        ],
    );
    assert_mixed(&r);
    assert_eq!(r.sends().len(), 8); // EHLO MAIL RCPT×3 DATA body QUIT
}

#[test]
fn per_recipient_results_pipelined() {
    let r = mixed(
        config(),
        &[
            GREETING,
            EHLO_PIPE,
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n450 4.2.1 Mailbox busy\r\n\
             550 5.1.1 No such user\r\n354 Go ahead\r\n",
            "250 2.0.0 Ok: queued as Q9\r\n",
            "221 2.0.0 Bye\r\n",
        ],
    );
    assert_mixed(&r);
    assert_eq!(r.sends().len(), 4); // EHLO batch body QUIT
}

#[test]
fn all_recipients_refused_no_data_then_rset_before_the_next_message() {
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PLAIN,
            "250 2.1.0 Ok\r\n",
            "550 5.1.1 No such user\r\n",
            "451 4.3.0 Try later\r\n",
            // Second message: RSET first.
            "250 2.0.0 Ok\r\n",
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "354 Go ahead\r\n",
            "250 2.0.0 Ok: queued as Q2\r\n",
            "221 2.0.0 Bye\r\n",
        ])
        .messages(vec![
            message(&["a@example.org", "b@example.org"], "one\r\n"),
            message(&["c@example.org"], "two\r\n"),
        ])
        .go();
    assert_eq!(
        r.sends(),
        [
            "EHLO client.test\r\n",
            "MAIL FROM:<alice@example.net> SIZE=5\r\n",
            "RCPT TO:<a@example.org>\r\n",
            "RCPT TO:<b@example.org>\r\n",
            "RSET\r\n",
            "MAIL FROM:<alice@example.net> SIZE=5\r\n",
            "RCPT TO:<c@example.org>\r\n",
            "DATA\r\n",
            "two\r\n.\r\n",
            "QUIT\r\n",
        ]
    );
    let done = r.done();
    assert_eq!(
        done[0]
            .recipients
            .iter()
            .map(|r| r.status)
            .collect::<Vec<_>>(),
        [Permanent, Temporary]
    );
    assert!(done[1].all_delivered());
}

#[test]
fn all_recipients_refused_pipelined_expects_data_refusal_and_rsets_in_the_next_batch() {
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PIPE,
            "250 2.1.0 Ok\r\n550 5.1.1 No such user\r\n554 5.5.1 No valid recipients\r\n",
            "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n",
            "250 2.0.0 Ok: queued as Q2\r\n",
            "221 2.0.0 Bye\r\n",
        ])
        .messages(vec![
            message(&["a@example.org"], "one\r\n"),
            message(&["c@example.org"], "two\r\n"),
        ])
        .go();
    assert_eq!(
        r.sends()[1..3],
        [
            "MAIL FROM:<alice@example.net> SIZE=5\r\nRCPT TO:<a@example.org>\r\nDATA\r\n",
            "RSET\r\nMAIL FROM:<alice@example.net> SIZE=5\r\nRCPT TO:<c@example.org>\r\nDATA\r\n",
        ]
    );
    assert_eq!(
        results(r.done()[0]),
        [(
            "a@example.org",
            Permanent,
            "550 5.1.1 No such user".to_owned(),
            Phase::Rcpt,
            true
        )]
    );
    assert!(r.done()[1].all_delivered());
}

#[test]
fn two_messages_without_rset_when_the_first_went_through() {
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PIPE,
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n",
            "250 2.0.0 Ok: queued as Q1\r\n",
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n",
            "550 5.7.1 Content rejected\r\n",
            // A refused end of data closes the transaction too: no RSET.
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go ahead\r\n",
            "250 2.0.0 Ok: queued as Q3\r\n",
            "221 2.0.0 Bye\r\n",
        ])
        .messages(vec![
            message(&["a@example.org"], "one\r\n"),
            message(&["b@example.org"], "two\r\n"),
            message(&["c@example.org"], "three\r\n"),
        ])
        .go();
    let sends = r.sends();
    assert!(sends.iter().all(|s| !s.contains("RSET")), "{sends:?}");
    assert_eq!(sends.len(), 8); // EHLO + 3×(batch, body) + QUIT
    let done = r.done();
    assert_eq!(done.len(), 3);
    assert!(done[0].all_delivered() && done[2].all_delivered());
    assert_eq!(
        results(done[1]),
        [(
            "b@example.org",
            Permanent,
            "550 5.7.1 Content rejected".to_owned(),
            Phase::DataTermination,
            true
        )]
    );
}

#[test]
fn mail_refused_applies_to_every_recipient_and_needs_no_rset() {
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PLAIN,
            "550 5.7.1 Sender rejected\r\n",
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "354 Go ahead\r\n",
            "250 2.0.0 Ok\r\n",
            "221 2.0.0 Bye\r\n",
        ])
        .messages(vec![
            message(&["a@example.org", "b@example.org"], "one\r\n"),
            message(&["c@example.org"], "two\r\n"),
        ])
        .go();
    assert_eq!(
        r.sends()[1..3],
        [
            "MAIL FROM:<alice@example.net> SIZE=5\r\n",
            "MAIL FROM:<alice@example.net> SIZE=5\r\n"
        ]
    );
    let first = results(r.done()[0]);
    for (i, rcpt) in ["a@example.org", "b@example.org"].iter().enumerate() {
        assert_eq!(
            first[i],
            (
                *rcpt,
                Permanent,
                "550 5.7.1 Sender rejected".to_owned(),
                Phase::Mail,
                true
            )
        );
    }
}

#[test]
fn mail_refused_pipelined_keeps_the_mail_reply() {
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PIPE,
            "451 4.7.1 Greylisted\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n\
             503 5.5.1 need MAIL\r\n",
            "221 2.0.0 Bye\r\n",
        ])
        .messages(vec![message(
            &["a@example.org", "b@example.org"],
            "one\r\n",
        )])
        .go();
    let first = results(r.done()[0]);
    assert!(first.iter().all(|(_, status, reply, phase, remote)| {
        *status == Temporary && reply == "451 4.7.1 Greylisted" && *phase == Phase::Mail && *remote
    }));
    // No transaction was opened: QUIT straight away, no RSET.
    assert_eq!(r.sends().last().unwrap(), "QUIT\r\n");
    assert_eq!(r.sends().len(), 3);
}

#[test]
fn service_closing_at_greeting() {
    let r = Run::new(config())
        .turns(&["421 4.3.2 mx.test Service not available\r\n"])
        .go();
    assert!(r.sends().is_empty(), "no EHLO, no QUIT after 421");
    let close = r.close();
    assert_eq!(close.reason, CloseReason::ServiceClosing);
    assert_eq!(close.phase, Phase::Greeting);
    assert_eq!(close.reply.code(), 421);
    assert_eq!(close.reply.status(), Some(EnhancedStatus::new(4, 3, 2)));
    assert!(close.remote);
}

#[test]
fn refused_greeting_gets_quit() {
    let r = Run::new(config())
        .turns(&["554 5.7.1 Go away\r\n", "221 2.0.0 Bye\r\n"])
        .go();
    assert_eq!(r.sends(), ["QUIT\r\n"]);
    let close = r.close();
    assert_eq!(
        (close.reason, close.phase, close.reply.code(), close.remote),
        (CloseReason::Refused, Phase::Greeting, 554, true)
    );
    // The server may also just hang up after the refusal.
    let r = Run::new(config()).turns(&["450 Busy\r\n"]).go();
    assert_eq!(r.close().reason, CloseReason::Refused);
}

#[test]
fn service_closing_after_ehlo() {
    let r = Run::new(config())
        .turns(&[GREETING, "421 4.7.0 Too busy\r\n"])
        .messages(vec![message(&["a@example.org"], "x\r\n")])
        .go();
    assert_eq!(r.sends(), ["EHLO client.test\r\n"]);
    assert!(r.done().is_empty());
    assert_eq!(r.close().reason, CloseReason::ServiceClosing);
    assert_eq!(r.close().phase, Phase::Ehlo);
}

#[test]
fn service_closing_after_mail() {
    let r = Run::new(config())
        .turns(&[GREETING, EHLO_PLAIN, "421 4.4.5 Shutting down\r\n"])
        .messages(vec![message(&["a@example.org", "b@example.org"], "x\r\n")])
        .go();
    assert_eq!(
        r.sends().last().unwrap(),
        "MAIL FROM:<alice@example.net> SIZE=3\r\n"
    );
    let done = results(r.done()[0]);
    assert!(done.iter().all(|(_, s, reply, phase, remote)| {
        *s == Temporary && reply == "421 4.4.5 Shutting down" && *phase == Phase::Mail && *remote
    }));
    assert_eq!(r.close().reason, CloseReason::ServiceClosing);
}

#[test]
fn service_closing_after_data() {
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PIPE,
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 No such user\r\n354 Go\r\n",
            "421 4.3.0 Out of disk\r\n",
        ])
        .messages(vec![message(&["a@example.org", "b@example.org"], "x\r\n")])
        .go();
    assert_eq!(r.sends().last().unwrap(), "x\r\n.\r\n", "no QUIT after 421");
    assert_eq!(
        results(r.done()[0]),
        [
            (
                "a@example.org",
                Temporary,
                "421 4.3.0 Out of disk".to_owned(),
                Phase::DataTermination,
                true
            ),
            (
                "b@example.org",
                Permanent,
                "550 5.1.1 No such user".to_owned(),
                Phase::Rcpt,
                true
            ),
        ]
    );
    let close = r.close();
    assert_eq!(
        (close.reason, close.phase),
        (CloseReason::ServiceClosing, Phase::DataTermination)
    );
}

#[test]
fn service_closing_to_data_command() {
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PLAIN,
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "421 4.3.2 Bye\r\n",
        ])
        .messages(vec![message(&["a@example.org"], "x\r\n")])
        .go();
    assert_eq!(r.done()[0].recipients[0].status, Temporary);
    assert_eq!(r.done()[0].recipients[0].phase, Phase::DataInit);
    assert_eq!(r.close().reason, CloseReason::ServiceClosing);
}

#[test]
fn ehlo_refused_falls_back_to_helo() {
    let mut eight_bit = message(&["a@example.org"], "x\r\n");
    eight_bit.body_8bit = true;
    let r = Run::new(config())
        .turns(&[
            GREETING,
            "502 5.5.1 Command not implemented\r\n",
            "250 mx.test\r\n",
            "250 Ok\r\n",
            "250 Ok\r\n",
            "354 Go\r\n",
            "250 Ok\r\n",
            "221 Bye\r\n",
        ])
        .messages(vec![message(&["a@example.org"], "x\r\n"), eight_bit])
        .go();
    assert_eq!(
        r.sends(),
        [
            "EHLO client.test\r\n",
            "HELO client.test\r\n",
            // No extension after HELO: no SIZE=, no BODY=.
            "MAIL FROM:<alice@example.net>\r\n",
            "RCPT TO:<a@example.org>\r\n",
            "DATA\r\n",
            "x\r\n.\r\n",
            "QUIT\r\n",
        ]
    );
    assert!(!r.c.is_esmtp());
    assert!(r.done()[0].all_delivered());
    let refused = &r.done()[1].recipients[0];
    assert_eq!(
        (
            refused.status,
            refused.reply.code(),
            refused.reply.status(),
            refused.remote
        ),
        (Permanent, 554, Some(EnhancedStatus::new(5, 6, 3)), false)
    );
}

#[test]
fn helo_refused_too() {
    let r = Run::new(config())
        .turns(&[GREETING, "500 What?\r\n", "550 No\r\n", "221 Bye\r\n"])
        .go();
    assert_eq!(
        r.sends(),
        ["EHLO client.test\r\n", "HELO client.test\r\n", "QUIT\r\n"]
    );
    assert_eq!(r.close().reason, CloseReason::Refused);
    assert_eq!(r.close().reply.code(), 550);
}

#[test]
fn ehlo_4xx_is_a_refusal() {
    let r = Run::new(config())
        .turns(&[GREETING, "450 4.7.1 Slow down\r\n", "221 Bye\r\n"])
        .go();
    assert_eq!(r.sends(), ["EHLO client.test\r\n", "QUIT\r\n"]);
    assert_eq!(
        (r.close().reason, r.close().phase),
        (CloseReason::Refused, Phase::Ehlo)
    );
}

#[test]
fn starttls_opportunistic_then_ehlo_again() {
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_TLS,
            "220 2.0.0 Ready to start TLS\r\n",
            // Extensions after TLS differ: now with PIPELINING.
            EHLO_PIPE,
            "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go\r\n",
            "250 2.0.0 Ok\r\n",
            "221 2.0.0 Bye\r\n",
        ])
        .messages(vec![message(&["a@example.org"], "x\r\n")])
        .go();
    assert_eq!(
        r.sends()[..4],
        [
            "EHLO client.test\r\n",
            "STARTTLS\r\n",
            "EHLO client.test\r\n",
            "MAIL FROM:<alice@example.net> SIZE=3\r\nRCPT TO:<a@example.org>\r\nDATA\r\n",
        ]
    );
    let tls_at = r
        .actions
        .iter()
        .position(|a| *a == Action::StartTls)
        .unwrap();
    assert!(
        matches!(r.actions[tls_at + 1], Action::Send { ref bytes, .. } if bytes == b"EHLO client.test\r\n")
    );
    assert!(r.c.is_tls());
    assert!(r.close().tls);
    assert!(r.c.extensions().unwrap().pipelining);
    assert!(!r.c.extensions().unwrap().starttls);
}

#[test]
fn starttls_opportunistic_refused_continues_in_plain_text() {
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_TLS,
            "454 4.7.0 TLS not available\r\n",
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "354 Go\r\n",
            "250 2.0.0 Ok\r\n",
            "221 2.0.0 Bye\r\n",
        ])
        .messages(vec![message(&["a@example.org"], "x\r\n")])
        .go();
    assert_eq!(r.sends()[1], "STARTTLS\r\n");
    assert_eq!(r.sends()[2], "MAIL FROM:<alice@example.net>\r\n");
    assert!(!r.actions.contains(&Action::StartTls));
    assert!(r.done()[0].all_delivered());
    assert!(!r.c.is_tls());
}

#[test]
fn starttls_required_not_offered() {
    let r = Run::new(ClientConfig {
        starttls: StartTls::Required,
        ..config()
    })
    .turns(&[GREETING, EHLO_PIPE, "221 Bye\r\n"])
    .messages(vec![message(&["a@example.org"], "x\r\n")])
    .go();
    assert_eq!(r.sends(), ["EHLO client.test\r\n", "QUIT\r\n"]);
    assert!(r.done().is_empty());
    let close = r.close();
    assert_eq!(close.reason, CloseReason::TlsRequired);
    assert_eq!(
        (close.reply.code(), close.reply.status(), close.remote),
        (451, Some(EnhancedStatus::new(4, 7, 4)), false)
    );
}

#[test]
fn starttls_required_refused() {
    let r = Run::new(ClientConfig {
        starttls: StartTls::Required,
        ..config()
    })
    .turns(&[
        GREETING,
        EHLO_TLS,
        "454 4.7.0 No TLS today\r\n",
        "221 Bye\r\n",
    ])
    .go();
    assert_eq!(
        r.sends(),
        ["EHLO client.test\r\n", "STARTTLS\r\n", "QUIT\r\n"]
    );
    let close = r.close();
    assert_eq!(close.reason, CloseReason::TlsRequired);
    assert!(
        close.reply.text().contains("454 4.7.0 No TLS today"),
        "{}",
        close.reply.text()
    );
}

#[test]
fn starttls_required_accepted() {
    let r = Run::new(ClientConfig {
        starttls: StartTls::Required,
        ..config()
    })
    .turns(&[GREETING, EHLO_TLS, "220 Go\r\n", EHLO_PLAIN, "221 Bye\r\n"])
    .go();
    assert_eq!(r.close().reason, CloseReason::Quit);
    assert!(r.close().tls);
}

#[test]
fn starttls_never() {
    let r = Run::new(ClientConfig {
        starttls: StartTls::Never,
        ..config()
    })
    .turns(&[GREETING, EHLO_TLS, "221 Bye\r\n"])
    .go();
    assert_eq!(r.sends(), ["EHLO client.test\r\n", "QUIT\r\n"]);
    assert_eq!(r.close().reason, CloseReason::Quit);
}

#[test]
fn hostile_starttls_pipelined_injection() {
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_TLS,
            "220 2.0.0 Ready\r\n250-mx.test\r\n250 PIPELINING\r\n",
        ])
        .messages(vec![message(&["a@example.org"], "x\r\n")])
        .go();
    assert_eq!(r.sends(), ["EHLO client.test\r\n", "STARTTLS\r\n"]);
    assert!(!r.actions.contains(&Action::StartTls), "no handshake");
    let close = r.close();
    assert_eq!(close.reason, CloseReason::HostileServer);
    assert_eq!(close.reply.status(), Some(EnhancedStatus::new(4, 7, 0)));
    assert!(!close.tls);
}

#[test]
fn hostile_starttls_data_fed_before_the_handshake() {
    let mut c = ClientSession::new(config());
    c.feed(GREETING.as_bytes());
    assert!(matches!(c.next_action(), Action::Send { .. }));
    c.feed(EHLO_TLS.as_bytes());
    assert!(matches!(c.next_action(), Action::Send { .. }));
    c.feed(b"220 Go\r\n");
    assert_eq!(c.next_action(), Action::StartTls);
    c.feed(b"250 2.0.0 injected\r\n");
    assert_eq!(
        c.tls_started(),
        Err(ClientError::NotReady {
            got: "tls_started",
            state: "closed"
        })
    );
    match c.next_action() {
        Action::Close(o) => assert_eq!(o.reason, CloseReason::HostileServer),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refusals_decided_before_sending() {
    let ehlo = "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n";
    let mut eight_bit = message(&["a@example.org"], "x\r\n");
    eight_bit.body_8bit = true;
    let mut utf8 = message(&["a@example.org"], "x\r\n");
    utf8.smtputf8 = true;
    let mut utf8_sender = message(&["a@example.org"], "x\r\n");
    utf8_sender.mail_from = "jösé@example.net".into();
    let mut big = message(&["a@example.org", "b@example.org"], "x\r\n");
    big.size = 101;
    let bare_lf = message(&["a@example.org"], "line\nother\r\n");
    let bare_cr = message(&["a@example.org"], "line\r");
    let mut bad_sender = message(&["a@example.org"], "x\r\n");
    bad_sender.mail_from = "a@b> SIZE=1".into();
    let r = Run::new(config())
        .turns(&[GREETING, ehlo, "221 Bye\r\n"])
        .messages(vec![
            eight_bit,
            utf8,
            utf8_sender,
            big,
            bare_lf,
            bare_cr,
            bad_sender,
        ])
        .go();
    assert_eq!(
        r.sends(),
        ["EHLO client.test\r\n", "QUIT\r\n"],
        "nothing sent for them"
    );
    let got: Vec<(u16, String)> = r
        .done()
        .iter()
        .map(|o| {
            let first = &o.recipients[0];
            assert!(!first.remote);
            assert_eq!(first.status, Permanent);
            assert_eq!(first.phase, Phase::Mail);
            (
                first.reply.code(),
                first.reply.status().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        (554, "5.6.3"),
        (553, "5.6.7"),
        (553, "5.6.7"),
        (552, "5.3.4"),
        (554, "5.6.0"),
        (554, "5.6.0"),
        (553, "5.1.7"),
    ];
    assert_eq!(got, want.map(|(c, s)| (c, s.to_owned())));
    assert_eq!(
        r.done()[3].recipients.len(),
        2,
        "every recipient gets the refusal"
    );
}

#[test]
fn per_recipient_local_refusals() {
    let mut m = message(
        &[
            "ok@example.org",
            "evil>\r\nRCPT TO:<x@example.org",
            "josé@example.org",
        ],
        "x\r\n",
    );
    m.smtputf8 = false;
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PLAIN,
            "250 Ok\r\n",
            "250 Ok\r\n",
            "354 Go\r\n",
            "250 Ok\r\n",
            "221 Bye\r\n",
        ])
        .messages(vec![m])
        .go();
    assert!(
        r.sends()
            .iter()
            .all(|s| !s.contains("evil") && !s.contains("jos"))
    );
    let got = results(r.done()[0]);
    assert_eq!(got[0].1, Delivered);
    assert_eq!(
        (got[1].1, &got[1].2[..9], got[1].4),
        (Permanent, "553 5.1.3", false)
    );
    assert_eq!(
        (got[2].1, &got[2].2[..9], got[2].4),
        (Permanent, "553 5.6.7", false)
    );
}

#[test]
fn smtputf8_and_8bitmime_parameters_when_offered() {
    let mut m = message(&["josé@example.org"], "x\r\n");
    m.body_8bit = true;
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PIPE,
            "250 Ok\r\n250 Ok\r\n354 Go\r\n",
            "250 Ok\r\n",
            "221 Bye\r\n",
        ])
        .messages(vec![m, message(&[], "x\r\n")])
        .go();
    assert_eq!(
        r.sends()[1],
        "MAIL FROM:<alice@example.net> SIZE=3 BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<josé@example.org>\r\nDATA\r\n"
    );
    assert!(
        r.done()[1].recipients.is_empty(),
        "no recipients: nothing sent"
    );
}

#[test]
fn null_sender() {
    let mut m = message(&["a@example.org"], "x\r\n");
    m.mail_from = String::new();
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PLAIN,
            "250 Ok\r\n",
            "250 Ok\r\n",
            "354 Go\r\n",
            "250 Ok\r\n",
            "221 Bye\r\n",
        ])
        .messages(vec![m])
        .go();
    assert_eq!(r.sends()[1], "MAIL FROM:<> SIZE=3\r\n");
}

#[test]
fn dot_stuffing_is_exact() {
    let body = ".starts with a dot\r\nmiddle\r\n..two\r\n.\r\nx.y\r\n.";
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PIPE,
            "250 Ok\r\n250 Ok\r\n354 Go\r\n",
            "250 Ok\r\n",
            "221 Bye\r\n",
        ])
        .messages(vec![message(&["a@example.org"], body)])
        .go();
    assert_eq!(
        r.sends()[2],
        "..starts with a dot\r\nmiddle\r\n...two\r\n..\r\nx.y\r\n..\r\n.\r\n"
    );
}

#[test]
fn content_goes_out_in_blocks() {
    let body: String = (0..200).map(|i| format!(".line {i}\r\n")).collect();
    let r = Run::new(ClientConfig {
        data_block_size: 100,
        ..config()
    })
    .turns(&[
        GREETING,
        "250-mx.test\r\n250 PIPELINING\r\n",
        "250 Ok\r\n250 Ok\r\n354 Go\r\n",
        "250 Ok\r\n",
        "221 Bye\r\n",
    ])
    .messages(vec![message(&["a@example.org"], &body)])
    .go();
    let blocks: Vec<&Action> = r
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Send {
                    timeout: Phase::DataBlock,
                    ..
                }
            )
        })
        .collect();
    assert!(blocks.len() > 20);
    let sends = r.sends();
    let content: String = sends[2..sends.len() - 1].concat();
    let want: String = (0..200)
        .map(|i| format!("..line {i}\r\n"))
        .collect::<String>()
        + ".\r\n";
    assert_eq!(content, want);
}

#[test]
fn unsolicited_replies_end_the_connection() {
    // An extra reply after MAIL would otherwise be taken for the RCPT reply.
    let r = Run::new(config())
        .turns(&[GREETING, EHLO_PLAIN, "250 Ok\r\n250 2.1.5 Fake\r\n"])
        .messages(vec![message(&["a@example.org"], "x\r\n")])
        .go();
    assert_eq!(
        r.sends().last().unwrap(),
        "MAIL FROM:<alice@example.net> SIZE=3\r\n",
        "no RCPT"
    );
    assert_eq!(r.done()[0].recipients[0].status, Temporary);
    assert_eq!(r.close().reason, CloseReason::ProtocolError);
    assert_eq!(r.close().reply.status(), Some(EnhancedStatus::new(4, 5, 0)));

    // A 250 after the 354, before any content: not sent.
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PIPE,
            "250 Ok\r\n250 Ok\r\n354 Go\r\n250 2.0.0 Fake queued\r\n",
        ])
        .messages(vec![message(&["a@example.org"], "x\r\n")])
        .go();
    assert!(r.sends().iter().all(|s| s != "x\r\n.\r\n"));
    assert_eq!(r.done()[0].recipients[0].status, Temporary);
    assert_eq!(r.close().reason, CloseReason::ProtocolError);

    // Garbage after a final reply: the delivery stands, the connection ends.
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PIPE,
            "250 Ok\r\n250 Ok\r\n354 Go\r\n",
            "250 2.0.0 Ok\r\n250 more\r\n",
        ])
        .messages(vec![message(&["a@example.org"], "x\r\n")])
        .go();
    assert!(r.done()[0].all_delivered());
    assert_eq!(r.close().reason, CloseReason::ProtocolError);
    assert!(r.sends().iter().all(|s| s != "QUIT\r\n"));

    // A 421 tacked on is the server closing.
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PLAIN,
            "250 Ok\r\n421 4.3.2 Shutting down\r\n",
        ])
        .messages(vec![message(&["a@example.org"], "x\r\n")])
        .go();
    assert_eq!(r.close().reason, CloseReason::ServiceClosing);
    assert_eq!(r.done()[0].recipients[0].reply.code(), 421);
}

#[test]
fn malformed_replies() {
    for bad in ["250 Ok\n", "25O Ok\r\n", "250-a\r\n251 b\r\n", "354 Go\r\n"] {
        let r = Run::new(config())
            .turns(&[GREETING, EHLO_PLAIN, bad])
            .messages(vec![message(&["a@example.org"], "x\r\n")])
            .go();
        assert_eq!(r.close().reason, CloseReason::ProtocolError, "{bad:?}");
        assert_eq!(r.done()[0].recipients[0].status, Temporary);
        assert!(!r.done()[0].recipients[0].remote);
    }
}

#[test]
fn data_accepted_without_recipients_drops_the_connection() {
    let r = Run::new(config())
        .turns(&[GREETING, EHLO_PIPE, "250 Ok\r\n550 5.1.1 No\r\n354 Go\r\n"])
        .messages(vec![message(&["a@example.org"], "x\r\n")])
        .go();
    assert_eq!(r.sends().len(), 2, "nothing after the batch, not even QUIT");
    assert_eq!(r.done()[0].recipients[0].status, Permanent);
    assert_eq!(r.close().reason, CloseReason::ProtocolError);
}

#[test]
fn rset_refused_drops_the_connection() {
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PLAIN,
            "250 Ok\r\n",
            "550 No\r\n",
            "500 5.5.1 RSET? never heard of it\r\n",
        ])
        .messages(vec![
            message(&["a@example.org"], "x\r\n"),
            message(&["b@example.org"], "y\r\n"),
        ])
        .go();
    assert_eq!(r.sends().last().unwrap(), "RSET\r\n");
    let second = &r.done()[1].recipients[0];
    assert_eq!(
        (second.status, second.reply.code(), second.remote),
        (Temporary, 451, false)
    );
    assert_eq!(
        (r.close().reason, r.close().reply.code()),
        (CloseReason::Refused, 500)
    );
}

#[test]
fn connection_lost_and_timeouts() {
    // The server hangs up after the final dot: not known to be delivered.
    let r = Run::new(config())
        .turns(&[GREETING, EHLO_PIPE, "250 Ok\r\n250 Ok\r\n354 Go\r\n"])
        .messages(vec![message(&["a@example.org"], "x\r\n")])
        .go();
    let rcpt = &r.done()[0].recipients[0];
    assert_eq!(
        (rcpt.status, rcpt.reply.status(), rcpt.phase, rcpt.remote),
        (
            Temporary,
            Some(EnhancedStatus::new(4, 4, 2)),
            Phase::DataTermination,
            false
        )
    );
    assert_eq!(r.close().reason, CloseReason::ConnectionLost);

    // A partial reply then the end.
    let r = Run::new(config())
        .turns(&[GREETING, "250-mx.test\r\n250-PIPE"])
        .go();
    assert_eq!(
        (r.close().reason, r.close().phase),
        (CloseReason::ConnectionLost, Phase::Ehlo)
    );

    let mut c = ClientSession::new(config());
    assert_eq!(
        c.next_action(),
        Action::Receive {
            timeout: Phase::Greeting
        }
    );
    c.timed_out();
    match c.next_action() {
        Action::Close(o) => {
            assert_eq!(
                (o.reason, o.phase, o.reply.code()),
                (CloseReason::Timeout, Phase::Greeting, 451)
            );
        }
        other => panic!("{other:?}"),
    }

    // QUIT unanswered is still a clean end.
    let r = Run::new(config()).turns(&[GREETING, EHLO_PLAIN]).go();
    assert_eq!(
        (r.close().reason, r.close().remote),
        (CloseReason::Quit, false)
    );
}

#[test]
fn tls_handshake_failure() {
    let mut c = ClientSession::new(config());
    c.feed(GREETING.as_bytes());
    c.next_action();
    c.feed(EHLO_TLS.as_bytes());
    c.next_action();
    c.feed(b"220 Go\r\n");
    assert_eq!(c.next_action(), Action::StartTls);
    assert_eq!(
        c.next_action(),
        Action::StartTls,
        "asked again until answered"
    );
    c.tls_failed("bad certificate");
    match c.next_action() {
        Action::Close(o) => {
            assert_eq!(o.reason, CloseReason::TlsFailed);
            assert_eq!(o.reply.status(), Some(EnhancedStatus::new(4, 7, 5)));
            assert!(o.reply.text().contains("bad certificate"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn driver_misuse_is_an_error() {
    let mut c = ClientSession::new(config());
    assert!(matches!(
        c.send_message(message(&["a@example.org"], "x\r\n")),
        Err(ClientError::NotReady {
            got: "send_message",
            ..
        })
    ));
    assert!(c.quit().is_err());
    assert!(c.tls_started().is_err());
    assert_eq!(
        c.next_action(),
        Action::Receive {
            timeout: Phase::Greeting
        }
    );
}

#[test]
fn invalid_helo_name_fails_before_anything_is_sent() {
    for name in ["", "bad name", "x\r\nMAIL FROM:<a@b>"] {
        let config = ClientConfig {
            helo_name: name.into(),
            ..ClientConfig::default()
        };
        assert!(config.check().is_err());
        let mut c = ClientSession::new(config);
        match c.next_action() {
            Action::Close(o) => {
                assert_eq!(o.reason, CloseReason::LocalConfig);
                assert_eq!(o.reply.status(), Some(EnhancedStatus::new(4, 3, 5)));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(config().check().is_ok());
    assert!(
        ClientConfig {
            helo_name: "[192.0.2.1]".into(),
            ..ClientConfig::default()
        }
        .check()
        .is_ok()
    );
}

#[test]
fn timeouts_default_to_rfc_5321() {
    let t = ClientConfig::default().timeouts;
    let min = |m: u64| std::time::Duration::from_secs(60 * m);
    assert_eq!(t.get(Phase::Greeting), min(5));
    assert_eq!(t.get(Phase::Mail), min(5));
    assert_eq!(t.get(Phase::Rcpt), min(5));
    assert_eq!(t.get(Phase::DataInit), min(2));
    assert_eq!(t.get(Phase::DataBlock), min(3));
    assert_eq!(t.get(Phase::DataTermination), min(10));
    assert_eq!(Phase::Rcpt.command(), "RCPT TO command");
}

#[test]
fn multiline_reply_with_status_on_every_line() {
    let r = Run::new(config())
        .turns(&[
            GREETING,
            EHLO_PLAIN,
            "250 Ok\r\n",
            "550-5.7.1 This mailbox is protected\r\n550-5.7.1 see https://example.org\r\n\
             550 5.7.1 for details\r\n",
            "221 Bye\r\n",
        ])
        .messages(vec![message(&["a@example.org"], "x\r\n")])
        .go();
    let rcpt = &r.done()[0].recipients[0];
    assert_eq!(rcpt.status, Permanent);
    assert_eq!(rcpt.reply.status(), Some(EnhancedStatus::new(5, 7, 1)));
    assert_eq!(
        rcpt.reply.text(),
        "This mailbox is protected see https://example.org for details"
    );
}
