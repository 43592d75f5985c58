use std::future::Future;
use std::pin::Pin;

use mx_core::{Outcome, Question};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Ask one question, get one outcome. Everything routing needs from DNS goes through here, so
/// the hickory dependency (and its API changes) stays behind this trait.
pub trait DnsClient: Send + Sync {
    fn query<'a>(&'a self, question: &'a Question) -> BoxFuture<'a, Outcome>;
}
