//! Outbound connection bookkeeping: the slots that bound how many connections are open (in
//! total and per destination IP), and the idle SMTP sessions kept for the next message to
//! the same destination.
//!
//! The pool is generic over what an idle connection is (`C`), so that it holds no wire
//! code: the transport parks and takes its own session-and-stream pairs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mx_smtp::client::StartTls;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The settings of `[delivery]` that shape connection use (and, as they travel to the
/// transport the same way, its per-domain TLS policy).
#[derive(Clone, Debug)]
pub struct PoolLimits {
    /// How long an idle session is kept for the next message (zero: no reuse).
    pub idle: Duration,
    /// Messages over one connection before it is closed.
    pub max_messages_per_connection: usize,
    /// Outbound connections open at once, idle ones included.
    pub max_connections: usize,
    /// Outbound connections open at once to one IP address.
    pub max_connections_per_destination: usize,
    /// Recipient domains that get verified STARTTLS only.
    pub require_tls: RequireTls,
    /// How long an address whose connect was refused or timed out is passed over (zero:
    /// never).
    pub unreachable_memory: Duration,
}

/// `[delivery] require_tls_domains` and `tls_ca_file`: mail to these domains goes only over
/// STARTTLS with a certificate that verifies for the MX host name; otherwise it waits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequireTls {
    /// Normalised domain names.
    pub domains: Vec<String>,
    /// PEM certificates trusted as roots in addition to the system's bundle.
    pub ca_file: Option<PathBuf>,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            idle: Duration::from_secs(5),
            max_messages_per_connection: 100,
            max_connections: 100,
            max_connections_per_destination: 10,
            require_tls: RequireTls::default(),
            unreachable_memory: Duration::from_secs(60),
        }
    }
}

/// Which idle sessions are interchangeable: same address, same port, same TLS policy (a
/// session opened under one policy must not carry mail that asked for another), and for
/// verified TLS the same host name the certificate was checked against (an unverified
/// session, or one verified for another name, never carries mail that requires TLS).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub ip: IpAddr,
    pub port: u16,
    pub tls: StartTls,
    /// The host name the server certificate was verified for (None: not verified).
    pub verified: Option<Arc<str>>,
}

/// An idle connection and what it has done so far.
pub struct Idle<C> {
    pub conn: C,
    pub slot: Slot,
    /// Messages already sent over it.
    pub messages: usize,
    since: Instant,
}

/// The right to hold one open connection to `ip`. Released (and waiters woken) on drop.
pub struct Slot {
    dest: Option<OwnedSemaphorePermit>,
    all: Option<OwnedSemaphorePermit>,
    ip: IpAddr,
    limits: Arc<Limits>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.dest.take();
        self.all.take();
        // A destination's semaphore lives only while someone holds or wants it: the map
        // would otherwise grow with every address ever delivered to.
        let mut map = lock(&self.limits.per_dest);
        if let Some(sem) = map.get(&self.ip)
            && Arc::strong_count(sem) == 1
        {
            map.remove(&self.ip);
        }
        drop(map);
        self.limits.changed.notify_waiters();
    }
}

struct Limits {
    all: Arc<Semaphore>,
    per_dest: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
    per_dest_max: usize,
    /// Signalled when a slot is released or a session parked: what a waiter waits for.
    changed: Notify,
}

/// What an attempt gets to work with.
pub enum Lease<C> {
    /// A parked session for the same key.
    Pooled(Idle<C>),
    /// Room for a new connection.
    Fresh(Slot),
}

pub struct Pool<C> {
    pub limits: PoolLimits,
    shared: Arc<Limits>,
    idle: Mutex<HashMap<Key, Vec<Idle<C>>>>,
}

/// How long a waiter sleeps between looks when no wake-up comes (a safety net: slots and
/// parked sessions do signal).
const WAIT_STEP: Duration = Duration::from_millis(250);

impl<C> Pool<C> {
    pub fn new(limits: PoolLimits) -> Self {
        let shared = Arc::new(Limits {
            all: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            per_dest: Mutex::new(HashMap::new()),
            per_dest_max: limits.max_connections_per_destination.max(1),
            changed: Notify::new(),
        });
        Pool {
            limits,
            shared,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a connection that has carried `messages` may be parked for another.
    pub fn reusable(&self, messages: usize) -> bool {
        !self.limits.idle.is_zero() && messages < self.limits.max_messages_per_connection
    }

    /// Keep an idle session for the next message to `key`.
    pub fn park(&self, key: Key, conn: C, slot: Slot, messages: usize) {
        lock(&self.idle).entry(key).or_default().push(Idle {
            conn,
            slot,
            messages,
            since: Instant::now(),
        });
        self.shared.changed.notify_waiters();
    }

    /// The most recently parked session for `key`, if any is still within its idle time;
    /// expired ones found on the way are returned for closing.
    pub fn take(&self, key: &Key) -> (Option<Idle<C>>, Vec<Idle<C>>) {
        let mut map = lock(&self.idle);
        let Some(list) = map.get_mut(key) else {
            return (None, Vec::new());
        };
        let (expired, mut live): (Vec<_>, Vec<_>) = std::mem::take(list)
            .into_iter()
            .partition(|i| i.since.elapsed() >= self.limits.idle);
        let found = live.pop();
        if live.is_empty() {
            map.remove(key);
        } else {
            *list = live;
        }
        (found, expired)
    }

    /// Every idle session for `key` (they share the fate of one found dead).
    pub fn take_all(&self, key: &Key) -> Vec<Idle<C>> {
        lock(&self.idle).remove(key).unwrap_or_default()
    }

    /// Idle sessions past their time (`all`: every one), out of the pool for closing.
    pub fn drain(&self, all: bool) -> Vec<Idle<C>> {
        let mut map = lock(&self.idle);
        let mut out = Vec::new();
        map.retain(|_, list| {
            let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(list)
                .into_iter()
                .partition(|i| all || i.since.elapsed() >= self.limits.idle);
            out.extend(gone);
            *list = keep;
            !list.is_empty()
        });
        out
    }

    /// The oldest idle session matching `pick`, taken out to free its slot.
    fn evict(&self, pick: impl Fn(&Key) -> bool) -> Option<Idle<C>> {
        let mut map = lock(&self.idle);
        let key = map
            .iter()
            .filter(|(k, l)| pick(k) && !l.is_empty())
            .min_by_key(|(_, l)| l[0].since)
            .map(|(k, _)| k.clone())?;
        let list = map.get_mut(&key)?;
        let victim = list.remove(0);
        if list.is_empty() {
            map.remove(&key);
        }
        Some(victim)
    }

    /// A parked session for `key` (when `pooled`) or a slot for a new connection, waiting
    /// as long as the limits say. Idle sessions to close first (expired ones met on the
    /// way, or idle ones elsewhere that hold the slot we need) are handed back in `Err`;
    /// the caller closes them and asks again.
    pub async fn lease(&self, key: &Key, pooled: bool) -> Result<Lease<C>, Vec<Idle<C>>> {
        loop {
            // Registered before looking, so a release between the look and the wait wakes us.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if pooled {
                let (found, expired) = self.take(key);
                if !expired.is_empty() {
                    // The caller closes them and comes back for the live one.
                    if let Some(found) = found {
                        self.put_back(key.clone(), found);
                    }
                    return Err(expired);
                }
                if let Some(found) = found {
                    return Ok(Lease::Pooled(found));
                }
            }
            let dest = {
                let mut map = lock(&self.shared.per_dest);
                map.entry(key.ip)
                    .or_insert_with(|| Arc::new(Semaphore::new(self.shared.per_dest_max)))
                    .clone()
            };
            let attempt = dest.clone().try_acquire_owned();
            drop(dest);
            match attempt {
                Ok(dest_permit) => match self.shared.all.clone().try_acquire_owned() {
                    Ok(all_permit) => {
                        return Ok(Lease::Fresh(Slot {
                            dest: Some(dest_permit),
                            all: Some(all_permit),
                            ip: key.ip,
                            limits: self.shared.clone(),
                        }));
                    }
                    Err(_) => {
                        drop(dest_permit);
                        self.forget_unused(key.ip);
                        if let Some(victim) = self.evict(|_| true) {
                            return Err(vec![victim]);
                        }
                    }
                },
                Err(_) => {
                    self.forget_unused(key.ip);
                    // Our own key's sessions are all busy (or we want none): only an idle
                    // session to the same address under another port or policy can give
                    // its slot up.
                    if let Some(victim) = self.evict(|o| o.ip == key.ip && (o != key || !pooled)) {
                        return Err(vec![victim]);
                    }
                }
            }
            let _ = tokio::time::timeout(WAIT_STEP, changed).await;
        }
    }

    fn put_back(&self, key: Key, idle: Idle<C>) {
        lock(&self.idle).entry(key).or_default().push(idle);
    }

    /// Drop the semaphore of `ip` from the map when nobody holds a permit of it.
    fn forget_unused(&self, ip: IpAddr) {
        let mut map = lock(&self.shared.per_dest);
        if let Some(sem) = map.get(&ip)
            && Arc::strong_count(sem) == 1
            && sem.available_permits() == self.shared.per_dest_max
        {
            map.remove(&ip);
        }
    }

    #[cfg(test)]
    fn destinations(&self) -> usize {
        lock(&self.shared.per_dest).len()
    }
}

/// A poisoned lock only means another task panicked mid-update of plain maps; the data is
/// still usable, and delivery must go on.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8) -> Key {
        Key {
            ip: IpAddr::from([127, 0, 0, last]),
            port: 25,
            tls: StartTls::Opportunistic,
            verified: None,
        }
    }

    fn limits(per_dest: usize, all: usize) -> PoolLimits {
        PoolLimits {
            idle: Duration::from_secs(60),
            max_messages_per_connection: 2,
            max_connections: all,
            max_connections_per_destination: per_dest,
            require_tls: RequireTls::default(),
            unreachable_memory: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn parked_sessions_are_taken_and_slots_are_bounded() {
        let pool: Pool<u32> = Pool::new(limits(1, 10));
        let Ok(Lease::Fresh(slot)) = pool.lease(&key(2), true).await else {
            panic!("a fresh slot");
        };
        // The one slot to .2 is held: a second lease waits until the session is parked.
        let two = key(2);
        let waiting = pool.lease(&two, true);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting.as_mut())
                .await
                .is_err()
        );
        pool.park(key(2), 7, slot, 1);
        match waiting.await {
            Ok(Lease::Pooled(idle)) => {
                assert_eq!(idle.conn, 7);
                assert!(pool.reusable(idle.messages));
                drop(idle);
            }
            _ => panic!("the parked session"),
        }
        // Once every slot is released, the destination's semaphore is forgotten.
        assert_eq!(pool.destinations(), 0);
        assert!(!pool.reusable(2));
    }

    #[tokio::test]
    async fn idle_sessions_elsewhere_give_up_their_slot() {
        let pool: Pool<u32> = Pool::new(limits(10, 1));
        let Ok(Lease::Fresh(slot)) = pool.lease(&key(2), true).await else {
            panic!("a fresh slot");
        };
        pool.park(key(2), 1, slot, 1);
        // The only global slot is held by an idle session to .2: a lease to .3 evicts it.
        match pool.lease(&key(3), true).await {
            Err(victims) => assert_eq!(victims[0].conn, 1),
            _ => panic!("eviction"),
        }
        assert!(matches!(
            pool.lease(&key(3), true).await,
            Ok(Lease::Fresh(_))
        ));
        assert!(pool.drain(true).is_empty());
    }
}
