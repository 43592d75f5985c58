//! TTL caches shared between tasks: whole routes, and the answers to exchanger address
//! questions that many routes share.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mx_core::{Answer, QType, Question, Route};

/// Values by key, each until its own expiry. Bounded: when full, expired entries go first,
/// then the entry closest to expiry.
struct TtlMap<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlMap<K, V> {
    fn new(capacity: usize) -> Self {
        TtlMap {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// A copy of the value and the whole seconds left of its TTL.
    fn get<Q>(&self, key: &Q, now: Instant) -> Option<(V, u32)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (value, expires) = entries.get(key)?;
        if *expires <= now {
            entries.remove(key);
            return None;
        }
        let left = expires.duration_since(now).as_secs() as u32;
        Some((value.clone(), left))
    }

    fn insert(&self, key: K, value: V, ttl: u32, now: Instant) {
        if ttl == 0 || self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
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
        let expires = now + Duration::from_secs(u64::from(ttl));
        entries.insert(key, (value, expires));
    }

    fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Routes by normalised domain, each kept for the TTL the core gave it (negative answers are
/// already capped there).
pub struct RouteCache {
    routes: TtlMap<String, Route>,
}

impl RouteCache {
    pub fn new(capacity: usize) -> Self {
        RouteCache {
            routes: TtlMap::new(capacity),
        }
    }

    /// A cached route with its TTL lowered to what is left of it.
    pub fn get(&self, domain: &str, now: Instant) -> Option<Route> {
        let (mut route, left) = self.routes.get(domain, now)?;
        route.ttl = left;
        Some(route)
    }

    pub fn insert(&self, route: &Route, now: Instant) {
        self.routes
            .insert(route.domain.clone(), route.clone(), route.ttl, now);
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Answers to A and AAAA questions, kept for their records' smallest TTL (a negative answer
/// for its SOA's negative TTL, capped as routing caps it; failures never).
///
/// Thousands of domains name the same few provider exchangers. The route cache holds one
/// domain's route, so without this every new domain asked for the same exchangers'
/// addresses again. Answers come out with their TTLs lowered to what is left, so a route
/// built from them expires no later than its records do.
pub struct AddressCache {
    answers: TtlMap<Question, Answer>,
    negative_ttl_cap: u32,
}

impl AddressCache {
    pub fn new(capacity: usize, negative_ttl_cap: u32) -> Self {
        AddressCache {
            answers: TtlMap::new(capacity),
            negative_ttl_cap,
        }
    }

    /// Only address questions are kept; MX answers are one domain's own.
    pub fn holds(question: &Question) -> bool {
        matches!(question.qtype, QType::A | QType::Aaaa)
    }

    pub fn get(&self, question: &Question, now: Instant) -> Option<Answer> {
        let (mut answer, left) = self.answers.get(question, now)?;
        for record in &mut answer.records {
            record.ttl = record.ttl.min(left);
        }
        answer.negative_ttl = answer.negative_ttl.map(|ttl| ttl.min(left));
        Some(answer)
    }

    pub fn insert(&self, question: &Question, answer: &Answer, now: Instant) {
        if !Self::holds(question) {
            return;
        }
        let ttl = if answer.records.is_empty() {
            match answer.negative_ttl {
                Some(ttl) => ttl.min(self.negative_ttl_cap),
                None => return,
            }
        } else {
            answer.records.iter().map(|r| r.ttl).min().unwrap_or(0)
        };
        self.answers
            .insert(question.clone(), answer.clone(), ttl, now);
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mx_core::{Record, RecordData, Status};
    use std::net::Ipv4Addr;

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

    fn address(name: &str, ttl: u32) -> Record {
        Record {
            name: name.into(),
            ttl,
            data: RecordData::A(Ipv4Addr::LOCALHOST),
        }
    }

    #[test]
    fn an_address_answer_lives_for_its_shortest_record_and_comes_out_with_what_is_left() {
        let cache = AddressCache::new(10, 300);
        let t0 = Instant::now();
        let question = Question::new("mx.example", QType::A);
        let answer = Answer {
            nxdomain: false,
            records: vec![address("mx.example", 600), address("mx.example", 120)],
            negative_ttl: None,
        };
        cache.insert(&question, &answer, t0);
        let later = cache.get(&question, t0 + Duration::from_secs(100)).unwrap();
        let ttls: Vec<u32> = later.records.iter().map(|r| r.ttl).collect();
        assert_eq!(ttls, vec![20, 20]);
        assert!(
            cache
                .get(&question, t0 + Duration::from_secs(120))
                .is_none()
        );
    }

    #[test]
    fn negative_address_answers_are_capped_and_need_an_soa() {
        let cache = AddressCache::new(10, 300);
        let t0 = Instant::now();
        let with_soa = Question::new("gone.example", QType::Aaaa);
        let negative = Answer {
            nxdomain: true,
            records: Vec::new(),
            negative_ttl: Some(86_400),
        };
        cache.insert(&with_soa, &negative, t0);
        let kept = cache.get(&with_soa, t0 + Duration::from_secs(299)).unwrap();
        assert!(kept.nxdomain);
        assert_eq!(kept.negative_ttl, Some(1));
        assert!(
            cache
                .get(&with_soa, t0 + Duration::from_secs(300))
                .is_none()
        );

        let without_soa = Question::new("bare.example", QType::A);
        let bare = Answer {
            negative_ttl: None,
            ..negative
        };
        cache.insert(&without_soa, &bare, t0);
        assert!(cache.get(&without_soa, t0).is_none());
    }

    #[test]
    fn mx_answers_are_not_address_answers() {
        let cache = AddressCache::new(10, 300);
        let question = Question::new("example", QType::Mx);
        let answer = Answer {
            nxdomain: false,
            records: vec![Record {
                name: "example".into(),
                ttl: 3600,
                data: RecordData::Mx {
                    preference: 10,
                    exchange: "mx.example".into(),
                },
            }],
            negative_ttl: None,
        };
        cache.insert(&question, &answer, Instant::now());
        assert!(cache.is_empty());
    }
}
