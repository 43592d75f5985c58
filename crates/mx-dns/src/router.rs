//! Drives mx-core's [`Resolution`] with a [`DnsClient`]: the I/O edge of routing.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::join_all;
use mx_core::{Policy, Resolution, Route, reshuffle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::cache::RouteCache;
use crate::client::DnsClient;
use crate::error::DnsError;

pub struct Router {
    client: Arc<dyn DnsClient>,
    policy: Policy,
    cache: Option<Arc<RouteCache>>,
    rng: Mutex<ChaCha8Rng>,
}

impl Router {
    /// A router whose shuffles come from OS entropy; see [`Router::with_seed`].
    pub fn new(client: Arc<dyn DnsClient>, policy: Policy) -> Self {
        Router {
            client,
            policy,
            cache: None,
            rng: Mutex::new(ChaCha8Rng::from_os_rng()),
        }
    }

    /// Make every shuffle reproducible (the same seed and the same calls give the same routes).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = Mutex::new(ChaCha8Rng::seed_from_u64(seed));
        self
    }

    pub fn with_cache(mut self, cache: Arc<RouteCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The route for a domain or an address. Only bad input is an error: DNS trouble is a
    /// route with status `tempfail`.
    pub async fn route(&self, input: &str) -> Result<Route, DnsError> {
        let mut resolution = Resolution::start(input, &self.policy)?;
        if let Some(cache) = &self.cache
            && let Some(mut route) = cache.get(resolution.domain(), Instant::now())
        {
            reshuffle(&mut route, &self.policy, &mut *self.lock_rng());
            return Ok(route);
        }
        // Questions of one round are independent (A and AAAA of every exchanger): ask them
        // together. Chains and stages are bounded by the core, so the rounds are too.
        loop {
            let questions = resolution.questions();
            if questions.is_empty() {
                break;
            }
            let outcomes = join_all(questions.iter().map(|q| self.client.query(q))).await;
            for (question, outcome) in questions.iter().zip(outcomes) {
                resolution.answer(question, outcome);
            }
        }
        let route = resolution.finish(&mut *self.lock_rng());
        if let Some(cache) = &self.cache {
            cache.insert(&route, Instant::now());
        }
        Ok(route)
    }

    fn lock_rng(&self) -> std::sync::MutexGuard<'_, ChaCha8Rng> {
        self.rng.lock().unwrap_or_else(|p| p.into_inner())
    }
}
