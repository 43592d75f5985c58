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

#[cfg(test)]
mod tests {
    use super::*;
    use mx_core::Status;

    fn route(domain: &str, ttl: u32) -> Route {
        Route {
            domain: domain.into(),
            status: Status::Ok,
            implicit: false,
            ttl,
            reply: None,
            exchangers: Vec::new(),
            attempts: Vec::new(),
            diagnostics: Vec::new(),
        }
    }

    #[test]
    fn expires_at_its_ttl_and_reports_what_is_left() {
        let cache = RouteCache::new(10);
        let t0 = Instant::now();
        cache.insert(&route("a.example", 60), t0);
        assert_eq!(
            cache
                .get("a.example", t0 + Duration::from_secs(20))
                .unwrap()
                .ttl,
            40
        );
        assert!(
            cache
                .get("a.example", t0 + Duration::from_secs(60))
                .is_none()
        );
        assert!(cache.is_empty(), "an expired entry is dropped when seen");
    }

    #[test]
    fn ttl_zero_is_not_cached() {
        let cache = RouteCache::new(10);
        cache.insert(&route("a.example", 0), Instant::now());
        assert!(cache.is_empty());
    }

    #[test]
    fn stays_within_capacity_evicting_expired_then_soonest() {
        let cache = RouteCache::new(2);
        let t0 = Instant::now();
        cache.insert(&route("short.example", 5), t0);
        cache.insert(&route("long.example", 500), t0);
        cache.insert(&route("new.example", 100), t0);
        assert_eq!(cache.len(), 2);
        assert!(
            cache.get("short.example", t0).is_none(),
            "soonest to expire goes first"
        );
        let later = t0 + Duration::from_secs(200);
        cache.insert(&route("newer.example", 100), later);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("long.example", later).is_some());
        assert!(cache.get("newer.example", later).is_some());
    }
}
