//! Drives mx-core's [`Resolution`] with a [`DnsClient`]: the I/O edge of routing.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::join_all;
use mx_core::{Outcome, Policy, Question, Resolution, Route, reshuffle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::cache::{AddressCache, RouteCache};
use crate::client::DnsClient;
use crate::error::DnsError;

pub struct Router {
    client: Arc<dyn DnsClient>,
    policy: Policy,
    cache: Option<Arc<RouteCache>>,
    addresses: Option<Arc<AddressCache>>,
    rng: Mutex<ChaCha8Rng>,
}

impl Router {
    /// A router whose shuffles come from OS entropy; see [`Router::with_seed`].
    pub fn new(client: Arc<dyn DnsClient>, policy: Policy) -> Self {
        Router {
            client,
            policy,
            cache: None,
            addresses: None,
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

    /// Share exchanger address answers between routes (see [`AddressCache`]).
    pub fn with_address_cache(mut self, addresses: Arc<AddressCache>) -> Self {
        self.addresses = Some(addresses);
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
            let outcomes = join_all(questions.iter().map(|q| self.ask(q))).await;
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

    async fn ask(&self, question: &Question) -> Outcome {
        let addresses = self
            .addresses
            .as_ref()
            .filter(|_| AddressCache::holds(question));
        if let Some(addresses) = addresses
            && let Some(answer) = addresses.get(question, Instant::now())
        {
            return Ok(answer);
        }
        let outcome = self.client.query(question).await;
        if let (Some(addresses), Ok(answer)) = (addresses, &outcome) {
            addresses.insert(question, answer, Instant::now());
        }
        outcome
    }

    fn lock_rng(&self) -> std::sync::MutexGuard<'_, ChaCha8Rng> {
        self.rng.lock().unwrap_or_else(|p| p.into_inner())
    }
}
