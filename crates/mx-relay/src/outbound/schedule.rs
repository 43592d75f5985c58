//! When to try again, when to give up, and how one delivery run's results change a message's
//! state. Pure: the time is passed in.

use mx_spool::{DeliveryState, RecipientStatus};

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

#[cfg(test)]
mod tests {
    use super::*;
    use mx_spool::Envelope;

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
}
