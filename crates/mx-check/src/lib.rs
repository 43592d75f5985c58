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
pub mod tls;

pub use error::CheckError;
pub use finding::{Finding, FindingCode};
pub use gather::{CheckOptions, Checker};
pub use report::{DomainReport, Mode};
