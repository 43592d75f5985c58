//! `mxroute check`: lints a domain's mail routing live or from zone text before it is published.
//! DNS shape, SMTP probes of every exchanger and the MTA-STS/TLS-RPT/DANE policies, as findings.

mod error;
pub mod finding;
pub mod gather;
pub mod lint;
pub mod mta_sts;
pub mod probe;
pub mod render;
pub mod report;

pub use error::CheckError;
pub use finding::{Finding, FindingCode};
pub use gather::{CheckOptions, Checker};
/// The TLS plumbing the probe and the policy fetch share with the relay.
pub use mx_tls as tls;
pub use report::{DomainReport, Mode};
