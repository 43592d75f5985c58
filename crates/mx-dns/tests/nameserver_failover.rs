//! Several nameservers: a failing one must not decide the route while another can answer.

use std::sync::Arc;
use std::time::Duration;

use mx_core::{Policy, Status};
use mx_dns::{ClientOptions, HickoryClient, Nameservers, Router};
use mx_lab::{LabDns, ZoneSet};

const GOOD: &str = "a.example. MX 10 mx.a.example.\nmx.a.example. A 127.0.0.1\n";

async fn serve(text: &str) -> LabDns {
    let zones = ZoneSet::parse(text, "<failover>", None).expect("zone");
    LabDns::start(&zones, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("lab")
}

fn router(servers: Vec<std::net::SocketAddr>) -> Router {
    let options = ClientOptions {
        timeout: Duration::from_millis(800),
        attempts: 2,
    };
    let client = HickoryClient::new(&Nameservers::Explicit(servers), &options).unwrap();
    Router::new(Arc::new(client), Policy::default())
}

#[tokio::test]
async fn servfail_from_the_first_server_is_answered_by_the_second() {
    let bad = serve(&format!("{GOOD}$FAULT a.example. servfail\n")).await;
    let good = serve(GOOD).await;
    let route = router(vec![bad.addr(), good.addr()])
        .route("a.example")
        .await
        .unwrap();
    assert_eq!(route.status, Status::Ok, "{route:?}");
    assert!(good.query_count("a.example", "MX") >= 1);
    bad.shutdown().await;
    good.shutdown().await;
}

#[tokio::test]
async fn a_dead_first_server_is_skipped() {
    let dead = serve(GOOD).await;
    let dead_addr = dead.addr();
    dead.shutdown().await; // its port is now closed
    let good = serve(GOOD).await;
    let route = router(vec![dead_addr, good.addr()])
        .route("a.example")
        .await
        .unwrap();
    assert_eq!(route.status, Status::Ok, "{route:?}");
    good.shutdown().await;
}

#[tokio::test]
async fn every_server_failing_is_tempfail() {
    let bad = serve(&format!("{GOOD}$FAULT a.example. servfail\n")).await;
    let also_bad = serve(&format!("{GOOD}$FAULT a.example. refused\n")).await;
    let route = router(vec![bad.addr(), also_bad.addr()])
        .route("a.example")
        .await
        .unwrap();
    assert_eq!(route.status, Status::Tempfail);
    assert_eq!(route.reply.unwrap().enhanced, "4.4.3");
    bad.shutdown().await;
    also_bad.shutdown().await;
}
