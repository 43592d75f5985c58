//! One domain's route: mx-core's [`Resolution`] asks, the transport and the exchanger cache
//! answer. No routing rule lives here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use mx_core::{CoreError, Outcome, Policy, QType, Question, Resolution, Route};
use rand::RngCore;
use serde::Serialize;

use crate::BulkError;
use crate::cache::ExchangerCache;
use crate::transport::{Transport, TransportConfig, TransportStats};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Servers to spread questions across (a retry goes to the next one).
    pub nameservers: Vec<SocketAddr>,
    /// UDP sockets per address family.
    pub sockets: usize,
    /// Queries outstanding at once.
    pub in_flight: usize,
    /// Wait for a first try; retries wait twice as long each time, up to 4x.
    pub timeout: Duration,
    /// Tries after the first when a server does not answer.
    pub retries: u32,
    /// Queries per second, all servers together.
    pub rate_limit: Option<u32>,
    /// Exchanger A/AAAA outcomes kept for other domains (entries).
    pub exchanger_cache: usize,
    /// Take exchanger addresses from an authoritative MX answer's additional section when
    /// both families are there (docs/bulk.md: the trade-off).
    pub use_additional: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            nameservers: Vec::new(),
            sockets: 4,
            in_flight: 1000,
            timeout: Duration::from_secs(1),
            retries: 3,
            rate_limit: None,
            // Provider exchangers are a few thousand hosts used by most domains; the rest
            // are one domain's own and never asked again, so a larger bound only holds
            // memory (on bench/bulk's zone a cache ten times smaller cost no CPU).
            exchanger_cache: 50_000,
            use_additional: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct EngineStats {
    #[serde(flatten)]
    pub transport: TransportStats,
    /// Exchanger questions answered from the cache or by another domain's lookup.
    pub exchanger_cache_hits: u64,
    /// Exchanger questions answered from an MX answer's additional section.
    pub additional_seeds: u64,
}

pub struct Engine {
    transport: Transport,
    policy: Policy,
    cache: ExchangerCache,
    use_additional: bool,
    cache_hits: AtomicU64,
    additional_seeds: AtomicU64,
}

impl Engine {
    /// Opens the sockets; must run inside a Tokio runtime.
    pub fn new(config: &EngineConfig, policy: Policy) -> Result<Engine, BulkError> {
        let transport = Transport::new(&TransportConfig {
            nameservers: config.nameservers.clone(),
            sockets: config.sockets,
            in_flight: config.in_flight,
            timeout: config.timeout,
            retries: config.retries,
            rate_limit: config.rate_limit,
        })?;
        Ok(Engine {
            transport,
            policy,
            cache: ExchangerCache::new(config.exchanger_cache),
            use_additional: config.use_additional,
            cache_hits: AtomicU64::new(0),
            additional_seeds: AtomicU64::new(0),
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The route for one domain or address; only input mx-core cannot parse is an error.
    /// The questions of one round (A and AAAA of every exchanger) go out together.
    pub async fn route(
        &self,
        input: &str,
        rng: &mut (dyn RngCore + Send),
    ) -> Result<Route, CoreError> {
        let mut resolution = Resolution::start(input, &self.policy)?;
        loop {
            let questions = resolution.questions();
            if questions.is_empty() {
                break;
            }
            if let [question] = questions.as_slice() {
                // The usual round (the MX question): no join machinery for one future.
                let got = self.ask(question).await;
                resolution.answer_ref(question, got.outcome());
                continue;
            }
            let outcomes = join_all(questions.iter().map(|q| self.ask(q))).await;
            for (question, got) in questions.iter().zip(outcomes) {
                resolution.answer_ref(question, got.outcome());
            }
        }
        Ok(resolution.finish(rng))
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            transport: self.transport.counters().snapshot(),
            exchanger_cache_hits: self.cache_hits.load(Ordering::Relaxed),
            additional_seeds: self.additional_seeds.load(Ordering::Relaxed),
        }
    }

    async fn ask(&self, question: &Question) -> Got {
        if question.qtype == QType::Mx {
            let (outcome, extras) = self.transport.query(question, self.use_additional).await;
            if !extras.is_empty() {
                self.additional_seeds
                    .fetch_add(extras.len() as u64, Ordering::Relaxed);
                for (question, outcome) in extras {
                    self.cache.seed(question, outcome);
                }
            }
            return Got::Own(outcome);
        }
        let (outcome, hit) = self
            .cache
            .get_or_fetch(question, || async {
                self.transport.query(question, false).await.0
            })
            .await;
        if hit {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        Got::Shared(outcome)
    }
}

/// An outcome of this domain's own, or one the exchanger cache shares with other domains.
enum Got {
    Own(Outcome),
    Shared(Arc<Outcome>),
}

impl Got {
    fn outcome(&self) -> &Outcome {
        match self {
            Got::Own(outcome) => outcome,
            Got::Shared(outcome) => outcome,
        }
    }
}
