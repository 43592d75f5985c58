//! The route cache over real packets: what is cached, for how long, and what never is.

use std::sync::Arc;
use std::time::Duration;

use mx_core::{Policy, Status};
use mx_dns::{AddressCache, ClientOptions, HickoryClient, Nameservers, RouteCache, Router};
use mx_lab::{LabDns, ZoneSet};

const ZONE: &str = "
$TTL 3600
cached.example. MX 10 mx.cached.example.
mx.cached.example. A 127.0.0.1
pair.example. MX 10 a.pair.example.
pair.example. MX 10 b.pair.example.
a.pair.example. A 127.0.0.2
b.pair.example. A 127.0.0.3
sf.example. MX 10 mx.cached.example.
$FAULT sf.example. servfail
tc.example. MX 10 mx.cached.example.
$FAULT tc.example. truncate
one.shared.example. MX 10 mx.provider.example.
two.shared.example. MX 10 mx.provider.example.
three.shared.example. MX 10 mx.provider.example.
mx.provider.example. 120 A 127.0.0.5
";

async fn lab() -> LabDns {
    let zones = ZoneSet::parse(ZONE, "<router_cache>", None).expect("zone");
    LabDns::start(&zones, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("lab")
}

fn router(lab: &LabDns, cache: &Arc<RouteCache>) -> Router {
    let options = ClientOptions {
        timeout: Duration::from_millis(1500),
        attempts: 1,
    };
    let client = HickoryClient::new(&Nameservers::Explicit(vec![lab.addr()]), &options).unwrap();
    Router::new(Arc::new(client), Policy::default())
        .with_seed(1)
        .with_cache(cache.clone())
}

#[tokio::test]
async fn step_10_a_route_is_served_from_cache_within_its_ttl() {
    let lab = lab().await;
    let cache = Arc::new(RouteCache::new(100));
    let router = router(&lab, &cache);
    let first = router.route("cached.example").await.unwrap();
    assert_eq!(first.status, Status::Ok);
    let asked = lab.query_count("cached.example", "MX");
    assert!(asked >= 1);
    let second = router.route("user@Cached.Example").await.unwrap();
    assert_eq!(second.attempts, first.attempts);
    assert!(second.ttl <= first.ttl);
    assert_eq!(
        lab.query_count("cached.example", "MX"),
        asked,
        "second route asked DNS again"
    );
    lab.shutdown().await;
}

#[tokio::test]
async fn step_6_cached_routes_are_shuffled_again_on_every_hit() {
    let lab = lab().await;
    let cache = Arc::new(RouteCache::new(100));
    let router = router(&lab, &cache);
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let route = router.route("pair.example").await.unwrap();
        assert_eq!(route.attempts.len(), 2);
        firsts.insert(route.attempts[0].host.clone());
    }
    assert_eq!(
        lab.query_count("pair.example", "MX"),
        1,
        "all but the first came from cache"
    );
    assert_eq!(
        firsts.len(),
        2,
        "a cached route froze the order of equal preferences"
    );
    lab.shutdown().await;
}

#[tokio::test]
async fn step_10_tempfail_is_cached_briefly() {
    let lab = lab().await;
    let cache = Arc::new(RouteCache::new(100));
    let router = router(&lab, &cache);
    let route = router.route("sf.example").await.unwrap();
    assert_eq!(route.status, Status::Tempfail);
    assert_eq!(route.ttl, Policy::default().tempfail_ttl);
    let asked = lab.query_count("sf.example", "MX");
    router.route("sf.example").await.unwrap();
    assert_eq!(lab.query_count("sf.example", "MX"), asked);
    lab.shutdown().await;
}

#[tokio::test]
async fn step_3_truncated_answer_with_failed_tcp_is_never_cached() {
    let lab = lab().await;
    let cache = Arc::new(RouteCache::new(100));
    let router = router(&lab, &cache);
    let route = router.route("tc.example").await.unwrap();
    assert_eq!(route.status, Status::Tempfail);
    assert_eq!(route.ttl, 0);
    let asked = lab.query_count("tc.example", "MX");
    let again = router.route("tc.example").await.unwrap();
    assert_eq!(again.status, Status::Tempfail);
    assert!(
        lab.query_count("tc.example", "MX") > asked,
        "the truncated failure was served from cache"
    );
    assert!(cache.get("tc.example", std::time::Instant::now()).is_none());
    lab.shutdown().await;
}

#[tokio::test]
async fn step_10_nxdomain_is_cached_for_the_negative_ttl() {
    let lab = lab().await;
    let cache = Arc::new(RouteCache::new(100));
    let router = router(&lab, &cache);
    let route = router.route("nosuch.example").await.unwrap();
    assert_eq!(route.status, Status::Nxdomain);
    assert_eq!(route.ttl, 300, "synthesized SOA minimum, capped at 300");
    let asked = lab.query_count("nosuch.example", "MX");
    router.route("nosuch.example").await.unwrap();
    assert_eq!(lab.query_count("nosuch.example", "MX"), asked);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cache_is_shared_safely_between_tasks() {
    let lab = lab().await;
    let cache = Arc::new(RouteCache::new(100));
    let router = Arc::new(router(&lab, &cache));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let router = router.clone();
        tasks.spawn(async move {
            let domain = ["cached.example", "pair.example", "nosuch.example"][i % 3];
            router.route(domain).await.unwrap().status
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.expect("task"));
    }
    assert_eq!(statuses.len(), 64);
    assert_eq!(
        statuses.iter().filter(|s| **s == Status::Nxdomain).count(),
        21
    );
    assert_eq!(cache.len(), 3);
    lab.shutdown().await;
}

#[tokio::test]
async fn an_exchanger_shared_by_many_domains_is_looked_up_once() {
    let lab = lab().await;
    let cache = Arc::new(RouteCache::new(100));
    let addresses = Arc::new(AddressCache::new(100, Policy::default().negative_ttl_cap));
    let router = router(&lab, &cache).with_address_cache(addresses.clone());
    let mut routes = Vec::new();
    for domain in [
        "one.shared.example",
        "two.shared.example",
        "three.shared.example",
    ] {
        let route = router.route(domain).await.unwrap();
        assert_eq!(route.status, Status::Ok, "{domain}");
        assert_eq!(lab.query_count(domain, "MX"), 1, "{domain}");
        routes.push(route);
    }
    assert_eq!(
        lab.query_count("mx.provider.example", "A"),
        1,
        "the second and third domains asked for the shared exchanger again"
    );
    assert_eq!(
        lab.query_count("mx.provider.example", "AAAA"),
        1,
        "its NODATA (with the zone's SOA) is shared as well"
    );
    for route in &routes {
        assert_eq!(route.attempts[0].ip.to_string(), "127.0.0.5");
        assert!(
            route.ttl <= 120,
            "a route outlived the address record it was built from: {}",
            route.ttl
        );
    }
    assert_eq!(addresses.len(), 2);
    lab.shutdown().await;
}

#[tokio::test]
async fn without_an_address_cache_every_domain_asks_for_its_exchangers() {
    let lab = lab().await;
    let cache = Arc::new(RouteCache::new(100));
    let router = router(&lab, &cache);
    for domain in ["one.shared.example", "two.shared.example"] {
        assert_eq!(router.route(domain).await.unwrap().status, Status::Ok);
    }
    assert_eq!(lab.query_count("mx.provider.example", "A"), 2);
    lab.shutdown().await;
}
