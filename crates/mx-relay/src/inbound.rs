//! The inbound MX role: copies for our own domains go from the spool into Maildir. A spool
//! entry is removed only once every recipient is final, and a local copy is final only once
//! its Maildir file is fsynced in `new/`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mx_spool::{QueueId, RecipientStatus, Spool, SpoolError};

use crate::maildir;
use crate::policy::{Destination, RelayPolicy};
use crate::trace;
use crate::users::Users;

pub struct LocalDelivery {
    pub spool: Arc<dyn Spool>,
    pub policy: Arc<RelayPolicy>,
    pub users: Arc<Users>,
    pub maildir_root: PathBuf,
    pub hostname: String,
}

/// What one pass over a message did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub delivered: usize,
    pub failed: usize,
    /// Recipients left for remote delivery.
    pub remote: usize,
    /// The spool entry was removed: every recipient is final.
    pub removed: bool,
}

impl LocalDelivery {
    /// Deliver the pending local recipients of one message. Blocking (disk I/O and fsync).
    pub fn deliver(&self, id: &QueueId) -> Result<Pass, SpoolError> {
        let message = self.spool.load(id)?;
        let mut state = message.state.clone();
        let mut pass = Pass::default();
        let mut body: Option<Vec<u8>> = None;
        for rcpt in state.recipients.iter_mut() {
            if rcpt.status.is_final() {
                continue;
            }
            // Judged again at delivery: an authenticated verdict only tells local from remote.
            let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
            match self
                .policy
                .recipient(&rcpt.address, loopback, true, &self.users)
            {
                Ok(Destination::Local { domain, mailbox }) => {
                    if body.is_none() {
                        body = Some(self.spool.body(id)?);
                    }
                    let prefix = trace::return_path(&message.envelope.mail_from);
                    let result = maildir::deliver(
                        &self.maildir_root,
                        &domain,
                        &mailbox,
                        &self.hostname,
                        prefix.as_bytes(),
                        body.as_deref().unwrap_or_default(),
                    );
                    rcpt.attempts += 1;
                    rcpt.updated_at = now();
                    match result {
                        Ok(path) => {
                            tracing::info!(queue_id = %id, to = %rcpt.address, path = %path.display(), status = "delivered", "local delivery");
                            crate::metrics::local_delivery("delivered");
                            rcpt.status = RecipientStatus::Delivered;
                            rcpt.last_reply = Some("250 2.0.0 delivered to Maildir".into());
                            pass.delivered += 1;
                        }
                        Err(e) => {
                            // Left pending: the next pass tries again. A full disk is not a
                            // reason to lose the message.
                            tracing::warn!(queue_id = %id, to = %rcpt.address, error = %e, status = "deferred", "local delivery failed");
                            crate::metrics::local_delivery("deferred");
                            rcpt.status = RecipientStatus::Deferred;
                            rcpt.last_reply = Some(format!("451 4.3.0 Maildir write failed: {e}"));
                            pass.failed += 1;
                        }
                    }
                }
                Ok(Destination::Remote { .. }) => pass.remote += 1,
                Err(refusal) => {
                    // The user was removed after the message was accepted.
                    tracing::warn!(queue_id = %id, to = %rcpt.address, reply = %refusal.text, status = "bounced", "local recipient no longer exists");
                    rcpt.status = RecipientStatus::Bounced;
                    rcpt.last_reply = Some(format!(
                        "{} {} {}",
                        refusal.code, refusal.enhanced, refusal.text
                    ));
                    rcpt.updated_at = now();
                }
            }
        }
        if state.is_complete() {
            self.spool.remove(id)?;
            pass.removed = true;
        } else if state != message.state {
            self.spool.update_state(id, &state)?;
        }
        Ok(pass)
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
