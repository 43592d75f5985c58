//! DNS for routing and checking (mx-bulk has its own fast transport): our small [`DnsClient`]
//! trait with hickory behind it, a stub resolver for any record type, TTL caches of whole
//! routes and of exchanger addresses, and the [`Router`] that feeds DNS outcomes to mx-core's rules.

mod cache;
mod client;
mod error;
mod hickory;
mod router;
mod stub;

pub use cache::{AddressCache, RouteCache};
pub use client::{BoxFuture, DnsClient};
pub use error::DnsError;
pub use hickory::{
    ClientOptions, HickoryClient, Nameservers, convert_record, core_name, is_plain_label,
};
pub use router::Router;
pub use stub::{
    Rdata, RecordKind, StubAnswer, StubOptions, StubRecord, StubResolver, reverse_name,
};
