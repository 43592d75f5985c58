//! The exchanger cache: the A and AAAA outcomes of exchanger hosts, shared by every domain of a
//! run (thousands of domains use the same provider exchangers), with lookups in progress
//! shared too, and a hard bound on its size.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use mx_core::{Outcome, Question};
use tokio::sync::OnceCell;

/// A map bounded at `2 * generation` entries that keeps what is used: entries live in the
/// young generation; when it is full it becomes the old one (the previous old one is dropped),
/// and an old entry that is used again moves back to the young one. O(1) per operation, and a
/// cheap approximation of LRU: hot provider exchangers stay, one-off hosts age out.
#[derive(Debug)]
pub struct Generations<K, V> {
    generation: usize,
    young: HashMap<K, V, foldhash::fast::RandomState>,
    old: HashMap<K, V, foldhash::fast::RandomState>,
}

impl<K: Hash + Eq, V: Clone> Generations<K, V> {
    pub fn new(capacity: usize) -> Self {
        let generation = (capacity / 2).max(1);
        Generations {
            generation,
            young: HashMap::default(),
            old: HashMap::default(),
        }
    }

    pub fn get(&mut self, key: &K) -> Option<V>
    where
        K: Clone,
    {
        if let Some(value) = self.young.get(key) {
            return Some(value.clone());
        }
        let value = self.old.remove(key)?;
        self.insert(key.clone(), value.clone());
        Some(value)
    }

    pub fn insert(&mut self, key: K, value: V) {
        if self.young.len() >= self.generation && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }

    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Outcomes are shared, not copied: a provider's exchanger answers thousands of domains, and
/// each of them reads it in place.
type Cell = Arc<OnceCell<Arc<Outcome>>>;

/// Question → outcome, each question asked once however many domains wait for it.
pub struct ExchangerCache {
    cells: Mutex<Generations<Question, Cell>>,
}

impl ExchangerCache {
    pub fn new(capacity: usize) -> Self {
        ExchangerCache {
            cells: Mutex::new(Generations::new(capacity)),
        }
    }

    /// The outcome of `question`: from the cache, from a lookup already under way for another
    /// domain, or from `fetch`. The second value tells whether it was served without a query
    /// of our own.
    pub async fn get_or_fetch<F, Fut>(&self, question: &Question, fetch: F) -> (Arc<Outcome>, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let cell = self.cell(question);
        let mut fetched = false;
        let outcome = cell
            .get_or_init(|| {
                fetched = true;
                async { Arc::new(fetch().await) }
            })
            .await;
        (outcome.clone(), !fetched)
    }

    /// Store an outcome learnt on the side (an MX answer's additional section); a lookup
    /// already done or under way wins.
    pub fn seed(&self, question: Question, outcome: Outcome) {
        let cell = self.cell(&question);
        let _ = cell.set(Arc::new(outcome));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn cell(&self, question: &Question) -> Cell {
        let mut cells = self.lock();
        if let Some(cell) = cells.get(question) {
            return cell;
        }
        let cell = Cell::default();
        cells.insert(question.clone(), cell.clone());
        cell
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations<Question, Cell>> {
        // Every update is a single insert or move; a poisoned lock is still consistent.
        self.cells.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mx_core::{Answer, QType};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn generations_are_bounded_and_keep_what_is_used() {
        let mut g = Generations::new(4);
        g.insert("hot", 0);
        for i in 0..100 {
            g.insert(if i % 2 == 0 { "a" } else { "b" }, i);
            g.insert(["c", "d", "e", "f", "g"][i % 5], i);
            assert!(g.get(&"hot").is_some(), "a hot key survives, round {i}");
            assert!(g.len() <= 4);
        }
        let mut g = Generations::new(4);
        for i in 0..10 {
            g.insert(i, i);
        }
        assert!(g.get(&0).is_none(), "a key never used again ages out");
        assert_eq!(g.get(&9), Some(9));
    }

    #[tokio::test]
    async fn one_fetch_for_many_waiters() {
        let cache = Arc::new(ExchangerCache::new(100));
        let fetches = Arc::new(AtomicUsize::new(0));
        let q = Question::new("mx.provider.example", QType::A);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let (cache, fetches, q) = (cache.clone(), fetches.clone(), q.clone());
            tasks.spawn(async move {
                cache
                    .get_or_fetch(&q, || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        Ok(Answer::default())
                    })
                    .await
            });
        }
        let mut hits = 0;
        while let Some(joined) = tasks.join_next().await {
            let (outcome, hit) = joined.unwrap();
            assert!(outcome.is_ok());
            hits += usize::from(hit);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert_eq!(hits, 19);
        cache.seed(q.clone(), Err(mx_core::Failure::Timeout));
        let (outcome, hit) = cache.get_or_fetch(&q, || async { unreachable!() }).await;
        assert!(hit && outcome.is_ok(), "a seed never overrides a lookup");
    }
}
