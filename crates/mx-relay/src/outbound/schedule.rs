//! When to try again, when to give up, and how one delivery run's results change a message's
//! state. Pure: the time is passed in.

use mx_spool::{DeliveryState, Envelope, RecipientStatus};

/// Retry timing, in the spirit of Postfix's defaults (minimal_backoff_time 300 s,
/// maximal_backoff_time 4000 s, maximal_queue_lifetime 5 days).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub first_retry_secs: u64,
    pub max_retry_interval_secs: u64,
    pub queue_lifetime_secs: u64,
    /// Send a "delayed" notice once a message has waited this long (0: never).
    pub delay_warning_secs: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            first_retry_secs: 300,
            max_retry_interval_secs: 4000,
            queue_lifetime_secs: 5 * 86_400,
            delay_warning_secs: 0,
        }
    }
}

impl Schedule {
    /// Seconds to wait after the `runs`-th failed run (1-based): doubling from the first
    /// retry, capped. Doubling spaces retries out for a destination that stays down without
    /// making a brief outage cost hours.
    pub fn backoff(&self, runs: u32) -> u64 {
        let doublings = runs.saturating_sub(1).min(32);
        self.first_retry_secs
            .saturating_mul(1u64 << doublings)
            .min(self.max_retry_interval_secs.max(self.first_retry_secs))
    }

    pub fn expired(&self, received_at: u64, now: u64) -> bool {
        now.saturating_sub(received_at) >= self.queue_lifetime_secs
    }
}

/// What happened to one recipient in one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecipientResult {
    Delivered { reply: String },
    Temporary { reply: String },
    Permanent { reply: String },
}

/// A recipient this run made final as failed: it needs a bounce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed {
    pub address: String,
    pub reply: String,
}

/// Fold one run's results into the state. Recipients not in `results` are untouched.
/// Returns the recipients that failed for good in this run (to be reported in a bounce).
pub fn apply(
    state: &mut DeliveryState,
    results: &[(String, RecipientResult)],
    received_at: u64,
    now: u64,
    schedule: &Schedule,
) -> Vec<Failed> {
    let mut failed = Vec::new();
    let expired = schedule.expired(received_at, now);
    let mut any_temporary = false;
    for (address, result) in results {
        let Some(rcpt) = state
            .recipients
            .iter_mut()
            .find(|r| &r.address == address && !r.status.is_final())
        else {
            continue;
        };
        rcpt.attempts += 1;
        rcpt.updated_at = now;
        match result {
            RecipientResult::Delivered { reply } => {
                rcpt.status = RecipientStatus::Delivered;
                rcpt.last_reply = Some(reply.clone());
            }
            RecipientResult::Permanent { reply } => {
                rcpt.status = RecipientStatus::Bounced;
                rcpt.last_reply = Some(reply.clone());
                failed.push(Failed {
                    address: address.clone(),
                    reply: reply.clone(),
                });
            }
            RecipientResult::Temporary { reply } if expired => {
                // The queue lifetime is over: the last temporary reply becomes the reason.
                rcpt.status = RecipientStatus::Bounced;
                let reply = format!("{reply} (gave up: queue lifetime exceeded, 4.4.7)");
                rcpt.last_reply = Some(reply.clone());
                failed.push(Failed {
                    address: address.clone(),
                    reply,
                });
            }
            RecipientResult::Temporary { reply } => {
                rcpt.status = RecipientStatus::Deferred;
                rcpt.last_reply = Some(reply.clone());
                any_temporary = true;
            }
        }
    }
    if !results.is_empty() {
        state.attempts += 1;
    }
    if any_temporary {
        state.next_attempt_at = now + schedule.backoff(state.attempts.max(1));
    }
    failed
}

/// Whether this run should send the message's one "delayed" notice: notices are on
/// (`delay_warning_secs > 0`), none was sent yet, the sender is not the null sender, the
/// message has waited at least `delay_warning_secs` since it was received, and some
/// recipient is still deferred. Call it on the state as updated by [`apply`].
pub fn delay_notice_due(
    state: &DeliveryState,
    envelope: &Envelope,
    now: u64,
    schedule: &Schedule,
) -> bool {
    schedule.delay_warning_secs > 0
        && !state.delay_notice_sent
        && !envelope.mail_from.is_empty()
        && envelope.mail_from != "<>"
        && now.saturating_sub(envelope.received_at) >= schedule.delay_warning_secs
        && state
            .recipients
            .iter()
            .any(|r| r.status == RecipientStatus::Deferred)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rcpts: &[&str]) -> DeliveryState {
        DeliveryState::initial(&Envelope::new(
            "s@x.example",
            rcpts.iter().map(|s| s.to_string()).collect(),
        ))
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Schedule::default();
        let waits: Vec<u64> = (1..=6).map(|n| s.backoff(n)).collect();
        assert_eq!(waits, vec![300, 600, 1200, 2400, 4000, 4000]);
        assert_eq!(s.backoff(1000), 4000);
    }

    #[test]
    fn a_mixed_run_keeps_each_recipient_apart() {
        let mut st = state(&["a@d", "b@d", "c@d"]);
        let results = vec![
            (
                "a@d".to_string(),
                RecipientResult::Delivered {
                    reply: "250 ok".into(),
                },
            ),
            (
                "b@d".to_string(),
                RecipientResult::Temporary {
                    reply: "450 busy".into(),
                },
            ),
            (
                "c@d".to_string(),
                RecipientResult::Permanent {
                    reply: "550 no".into(),
                },
            ),
        ];
        let failed = apply(&mut st, &results, 1000, 1010, &Schedule::default());
        assert_eq!(
            failed,
            vec![Failed {
                address: "c@d".into(),
                reply: "550 no".into()
            }]
        );
        let statuses: Vec<RecipientStatus> = st.recipients.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            vec![
                RecipientStatus::Delivered,
                RecipientStatus::Deferred,
                RecipientStatus::Bounced
            ]
        );
        assert_eq!(st.next_attempt_at, 1010 + 300);
        // The next run touches only the deferred one; final ones never change again.
        let again = vec![
            (
                "a@d".to_string(),
                RecipientResult::Permanent {
                    reply: "550 late".into(),
                },
            ),
            (
                "b@d".to_string(),
                RecipientResult::Delivered {
                    reply: "250 ok".into(),
                },
            ),
        ];
        assert!(apply(&mut st, &again, 1000, 1400, &Schedule::default()).is_empty());
        assert!(st.is_complete());
        assert_eq!(st.recipients[0].last_reply.as_deref(), Some("250 ok"));
    }

    #[test]
    fn temporary_failures_past_the_lifetime_bounce() {
        let mut st = state(&["a@d"]);
        let s = Schedule::default();
        let results = vec![(
            "a@d".to_string(),
            RecipientResult::Temporary {
                reply: "451 4.4.3 dns".into(),
            },
        )];
        let failed = apply(&mut st, &results, 0, s.queue_lifetime_secs, &s);
        assert_eq!(failed.len(), 1);
        assert!(failed[0].reply.contains("4.4.7"));
        assert!(st.is_complete());
    }

    #[test]
    fn the_delay_notice_is_due_once_after_the_warning_time() {
        let s = Schedule {
            delay_warning_secs: 60,
            ..Schedule::default()
        };
        let mut env = Envelope::new("s@x.example", vec!["a@d".into(), "b@d".into()]);
        env.received_at = 1000;
        let mut st = DeliveryState::initial(&env);
        let deferred = vec![(
            "a@d".to_string(),
            RecipientResult::Temporary {
                reply: "451 4.4.3 dns".into(),
            },
        )];
        apply(&mut st, &deferred, 1000, 1030, &s);
        // Not due: waited too little.
        assert!(!delay_notice_due(&st, &env, 1059, &s));
        // Due: waited long enough with a deferred recipient.
        assert!(delay_notice_due(&st, &env, 1060, &s));
        // Already sent: never again.
        st.delay_notice_sent = true;
        assert!(!delay_notice_due(&st, &env, 5000, &s));
        st.delay_notice_sent = false;
        // Off when delay_warning_secs is 0.
        let off = Schedule::default();
        assert!(!delay_notice_due(&st, &env, 1_000_000, &off));
        // Never for the null sender.
        let mut null = env.clone();
        null.mail_from = String::new();
        assert!(!delay_notice_due(&st, &null, 5000, &s));
        // Nothing deferred (only pending or final recipients): not due.
        let done = vec![(
            "a@d".to_string(),
            RecipientResult::Delivered {
                reply: "250 ok".into(),
            },
        )];
        apply(&mut st, &done, 1000, 1100, &s);
        assert!(!delay_notice_due(&st, &env, 1100, &s));
    }
}
