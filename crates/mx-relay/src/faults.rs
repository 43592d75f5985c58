//! Fault switches for lab exchangers: make a running relay answer a 421 greeting, go silent,
//! or give chosen recipients a chosen reply (450, 550...). Off unless someone sets them; the
//! lab and the tests use them to rehearse what real exchangers do on a bad day.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionFault {
    #[default]
    None,
    /// Greet with `421 4.3.2` and close.
    Greeting421,
    /// Accept the connection and never say a word.
    Silent,
}

#[derive(Default)]
struct State {
    session: SessionFault,
    /// Lower-cased address to (code, enhanced, text).
    recipients: HashMap<String, (u16, String, String)>,
}

/// Shared, live-switchable; a clone is the same table.
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<State>>);

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_session(&self, fault: SessionFault) {
        self.lock().session = fault;
    }

    pub fn session(&self) -> SessionFault {
        self.lock().session
    }

    /// Answer RCPT TO for `address` with `code` (4xx or 5xx) and `enhanced` (such as 4.2.1).
    pub fn set_recipient(&self, address: &str, code: u16, enhanced: &str, text: &str) {
        self.lock().recipients.insert(
            address.to_ascii_lowercase(),
            (code, enhanced.to_string(), text.to_string()),
        );
    }

    pub fn recipient(&self, address: &str) -> Option<(u16, String, String)> {
        self.lock()
            .recipients
            .get(&address.to_ascii_lowercase())
            .cloned()
    }

    pub fn clear(&self) {
        let mut s = self.lock();
        s.session = SessionFault::None;
        s.recipients.clear();
    }
}
