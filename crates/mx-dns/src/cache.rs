//! A TTL cache of whole routes, shared between tasks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mx_core::Route;

/// Routes by normalised domain, each kept for the TTL the core gave it (negative answers are
/// already capped there). Bounded: when full, expired entries go first, then the entry
/// closest to expiry.
pub struct RouteCache {
    entries: Mutex<HashMap<String, (Route, Instant)>>,
    capacity: usize,
}

impl RouteCache {
    pub fn new(capacity: usize) -> Self {
        RouteCache {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// A cached route with its TTL lowered to what is left of it.
    pub fn get(&self, domain: &str, now: Instant) -> Option<Route> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (route, expires) = entries.get(domain)?;
        if *expires <= now {
            entries.remove(domain);
            return None;
        }
        let mut route = route.clone();
        route.ttl = expires.duration_since(now).as_secs() as u32;
        Some(route)
    }

    pub fn insert(&self, route: &Route, now: Instant) {
        if route.ttl == 0 || self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&route.domain) {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= self.capacity
                && let Some(victim) = entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&victim);
            }
        }
        let expires = now + Duration::from_secs(u64::from(route.ttl));
        entries.insert(route.domain.clone(), (route.clone(), expires));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
