//! The routing rules of docs/routing.md (RFC 5321 §5.1 and friends) as pure functions:
//! no sockets, no clock, no global state — DNS outcomes in, a [`Route`] out.

mod chase;
pub mod dns;
pub mod domain;
mod error;
pub mod ip_text;
pub mod policy;
pub mod resolution;
pub mod route;

pub use dns::{Answer, Failure, Outcome, QType, Question, Record, RecordData};
pub use domain::{Target, name_as_ip, normalize_dns_name, normalize_domain, parse_target};
pub use error::CoreError;
pub use ip_text::IpText;
pub use policy::{IpStrategy, Policy, StaticRoute};
pub use resolution::{Resolution, is_special_purpose, reshuffle};
pub use route::{Attempt, Code, Diagnostic, Exchanger, Level, Reply, Route, Status, Unusable};

/// Compute a route from a table of ready outcomes (a question missing from it counts as a
/// timeout). Handy for tests, fuzzing and callers that already hold the answers.
pub fn route_from_outcomes(
    input: &str,
    policy: &Policy,
    outcomes: &dyn Fn(&Question) -> Option<Outcome>,
    rng: &mut dyn rand::RngCore,
) -> Result<Route, CoreError> {
    let mut resolution = Resolution::start(input, policy)?;
    // Each round answers every open question; chains and stages are bounded, so is this.
    for _ in 0..64 {
        let questions = resolution.questions();
        if questions.is_empty() {
            break;
        }
        for q in questions {
            let outcome = outcomes(&q).unwrap_or(Err(Failure::Timeout));
            resolution.answer(&q, outcome);
        }
    }
    Ok(resolution.finish(rng))
}
