//! What the spool keeps about a message: the immutable envelope and the mutable delivery
//! state. Both are JSON on disk, so field names are part of the format (version 1); new
//! optional fields may be added, unknown ones are ignored when reading.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::QueueId;

/// The SMTP envelope as accepted. Written once into the message file, never changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Assigned by [`Spool::store`](crate::Spool::store).
    pub id: QueueId,
    /// When the message was accepted, in seconds since the Unix epoch.
    pub received_at: u64,
    /// The reverse path without angle brackets; `""` is the null sender `<>`.
    pub mail_from: String,
    /// The forward paths, in RCPT TO order.
    pub recipients: Vec<String>,
    /// The SMTP client's address.
    pub client_ip: Option<IpAddr>,
    /// The HELO/EHLO argument.
    pub helo: Option<String>,
    /// The authenticated user, if the client authenticated.
    pub auth_user: Option<String>,
    /// MAIL FROM had `BODY=8BITMIME`.
    pub body_8bit: bool,
    /// MAIL FROM had `SMTPUTF8`.
    pub smtputf8: bool,
    /// The length of the body in bytes. Set by [`Spool::store`](crate::Spool::store) to the
    /// exact length stored; recovery uses it to tell a complete file from a cut one.
    pub size: u64,
}

impl Envelope {
    /// An envelope received now, with no client details. The id is a fresh placeholder and
    /// the size zero: [`Spool::store`](crate::Spool::store) sets both.
    pub fn new(mail_from: impl Into<String>, recipients: Vec<String>) -> Envelope {
        Envelope {
            id: QueueId::generate(),
            received_at: unix_now(),
            mail_from: mail_from.into(),
            recipients,
            client_ip: None,
            helo: None,
            auth_user: None,
            body_8bit: false,
            smtputf8: false,
            size: 0,
        }
    }
}

/// Where one recipient stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientStatus {
    /// Not tried yet.
    Pending,
    /// Accepted by the next hop (final).
    Delivered,
    /// Failed permanently, a bounce was generated (final).
    Bounced,
    /// Failed temporarily, to be retried.
    Deferred,
}

impl RecipientStatus {
    /// Delivered or bounced: nothing more will be done for this recipient.
    pub fn is_final(self) -> bool {
        matches!(self, RecipientStatus::Delivered | RecipientStatus::Bounced)
    }
}

/// The delivery state of one recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientState {
    /// The recipient, as in the envelope.
    pub address: String,
    /// Where it stands.
    pub status: RecipientStatus,
    /// Delivery attempts so far for this recipient.
    pub attempts: u32,
    /// The last SMTP reply (or local error) seen for it.
    pub last_reply: Option<String>,
    /// When this entry last changed, in seconds since the epoch.
    pub updated_at: u64,
}

/// The mutable part of a queued message, kept in `<id>.state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// One entry per envelope recipient, in envelope order.
    pub recipients: Vec<RecipientState>,
    /// Delivery runs for the message so far.
    pub attempts: u32,
    /// Do not try before this time (seconds since the epoch).
    pub next_attempt_at: u64,
    /// The last message-level error.
    pub last_error: Option<String>,
    /// A "delayed" notice (RFC 3464, action `delayed`) went to the sender; at most one is
    /// sent per message. Absent in state files written before notices existed: `false`.
    #[serde(default)]
    pub delay_notice_sent: bool,
}

impl DeliveryState {
    /// The state of a message nobody has tried yet: every recipient pending, due at once.
    /// A message without a `.state` file has this state.
    pub fn initial(envelope: &Envelope) -> DeliveryState {
        DeliveryState {
            recipients: envelope
                .recipients
                .iter()
                .map(|address| RecipientState {
                    address: address.clone(),
                    status: RecipientStatus::Pending,
                    attempts: 0,
                    last_reply: None,
                    updated_at: envelope.received_at,
                })
                .collect(),
            attempts: 0,
            next_attempt_at: envelope.received_at,
            last_error: None,
            delay_notice_sent: false,
        }
    }

    /// Every recipient is delivered or bounced: the message can be removed.
    pub fn is_complete(&self) -> bool {
        self.recipients.iter().all(|r| r.status.is_final())
    }

    /// Checks that this state covers exactly the envelope's recipients, in order, so that a
    /// state can never make the spool forget a recipient.
    pub(crate) fn check_matches(&self, envelope: &Envelope) -> Result<(), String> {
        if self.recipients.len() != envelope.recipients.len() {
            return Err(format!(
                "{} recipients in the state, {} in the envelope",
                self.recipients.len(),
                envelope.recipients.len()
            ));
        }
        for (i, (state, address)) in self.recipients.iter().zip(&envelope.recipients).enumerate() {
            if &state.address != address {
                return Err(format!(
                    "recipient {i} is {:?} in the state, {address:?} in the envelope",
                    state.address
                ));
            }
        }
        Ok(())
    }
}

/// A queued message without its body (load that with [`Spool::body`](crate::Spool::body)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// As accepted.
    pub envelope: Envelope,
    /// As of the last [`Spool::update_state`](crate::Spool::update_state).
    pub state: DeliveryState,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_snake_case() {
        let json = serde_json::to_string(&[
            RecipientStatus::Pending,
            RecipientStatus::Delivered,
            RecipientStatus::Bounced,
            RecipientStatus::Deferred,
        ])
        .ok();
        assert_eq!(
            json.as_deref(),
            Some(r#"["pending","delivered","bounced","deferred"]"#)
        );
    }

    #[test]
    fn initial_state_matches_and_mismatch_is_caught() {
        let env = Envelope::new("a@x", vec!["b@y".into(), "c@z".into()]);
        let mut state = DeliveryState::initial(&env);
        assert!(state.check_matches(&env).is_ok());
        assert!(!state.is_complete());
        state.recipients.swap(0, 1);
        assert!(state.check_matches(&env).is_err());
        state.recipients.pop();
        assert!(state.check_matches(&env).is_err());
    }

    #[test]
    fn old_state_without_delay_notice_flag_loads() {
        let old = r#"{"recipients":[{"address":"b@y","status":"deferred","attempts":2,
            "last_reply":"451 4.4.3 dns","updated_at":5}],"attempts":2,
            "next_attempt_at":10,"last_error":null}"#;
        let state: DeliveryState = serde_json::from_str(old).unwrap();
        assert!(!state.delay_notice_sent);
        assert_eq!(state.recipients[0].status, RecipientStatus::Deferred);
        // Written back, the flag is there and reads back the same.
        let mut state = state;
        state.delay_notice_sent = true;
        let json = serde_json::to_string(&state).unwrap();
        assert!(json.contains(r#""delay_notice_sent":true"#), "{json}");
        let back: DeliveryState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
    }
}
