//! The lab server over real packets on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{PATIENCE, SILENCE, Tcp, TcpRead, query, tcp, udp, udp_exchange, with_edns};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use mx_lab::{Fault, LabDns, ZoneSet};

const ZONE: &str = r#"
; the main test zone
$ORIGIN example.com.
$TTL 300
@       3600 IN SOA ns1 hostmaster 2024010101 3600 600 86400 60
@       IN NS   ns1
ns1     IN A    192.0.2.53
@       IN MX   10 mx1
@       IN MX   20 mx2
mx1     IN A    192.0.2.1
mx1     IN AAAA 2001:db8::1
mx2     IN A    192.0.2.2
alias   IN CNAME mx1
flaky   IN A    192.0.2.9
flaky   IN AAAA 2001:db8::9
$FAULT  sf      servfail
$FAULT  ref     refused
$FAULT  gone    timeout
$FAULT  tc      truncate
$FAULT  slow    delay:400
$FAULT  flaky   servfail AAAA
sf      IN A 192.0.2.10
ref     IN A 192.0.2.11
gone    IN A 192.0.2.12
tc      IN A 192.0.2.13
slow    IN A 192.0.2.14

$ORIGIN other.test.
@       3600 IN SOA ns.example.com. hostmaster.example.com. 7 3600 600 86400 120
@       IN MX 5 mail
mail    IN A 198.51.100.25
"#;

fn big_zone() -> String {
    let mut text = String::from("$ORIGIN big.test.\n$TTL 60\n@ SOA ns h 1 2 3 4 5\n");
    for i in 0..30 {
        text.push_str(&format!(
            "txt TXT \"record number {i:02} padded to be long enough to overflow 512 bytes\"\n"
        ));
    }
    text
}

async fn lab(text: &str) -> LabDns {
    let zones = ZoneSet::parse(text, "<inline>", None).expect("zone parses");
    LabDns::start(&zones, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("lab starts")
}

fn answers_of(m: &Message, t: RecordType) -> Vec<&RData> {
    m.answers
        .iter()
        .filter(|r| r.record_type() == t)
        .map(|r| &r.data)
        .collect()
}

fn has_soa_authority(m: &Message) -> bool {
    m.authorities
        .iter()
        .any(|r| r.record_type() == RecordType::SOA)
}

#[tokio::test]
async fn mx_answer_with_ttl_over_udp_and_tcp() {
    let lab = lab(ZONE).await;
    for reply in [
        udp(lab.addr(), "example.com.", "MX").await,
        tcp(lab.addr(), "example.com.", "MX").await,
    ] {
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.metadata.authoritative, "AA must be set");
        let mut mx: Vec<(u16, String, u32)> = reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, mx.exchange.to_string(), r.ttl)),
                _ => None,
            })
            .collect();
        mx.sort();
        assert_eq!(
            mx,
            vec![
                (10, "mx1.example.com.".into(), 300),
                (20, "mx2.example.com.".into(), 300)
            ]
        );
        // hickory fills the additional section with the exchanges' addresses.
        assert!(
            reply
                .additionals
                .iter()
                .any(|r| r.name.to_string() == "mx1.example.com."
                    && r.data.to_string() == "192.0.2.1"),
            "{reply:?}"
        );
    }
    lab.shutdown().await;
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa() {
    let lab = lab(ZONE).await;
    let nx = udp(lab.addr(), "nope.example.com.", "A").await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.answers.is_empty());
    assert!(has_soa_authority(&nx), "NXDOMAIN needs the SOA: {nx:?}");

    let nodata = udp(lab.addr(), "mx2.example.com.", "AAAA").await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert!(
        has_soa_authority(&nodata),
        "NODATA needs the SOA: {nodata:?}"
    );
    lab.shutdown().await;
}

#[tokio::test]
async fn cname_is_chased_inside_the_zone() {
    let lab = lab(ZONE).await;
    let reply = udp(lab.addr(), "alias.example.com.", "A").await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers_of(&reply, RecordType::CNAME).len(), 1);
    let a = answers_of(&reply, RecordType::A);
    assert_eq!(a.len(), 1, "{reply:?}");
    assert_eq!(a[0].to_string(), "192.0.2.1");
    lab.shutdown().await;
}

#[tokio::test]
async fn several_zones_and_refused_outside() {
    let lab = lab(ZONE).await;
    let other = udp(lab.addr(), "other.test.", "MX").await;
    assert_eq!(other.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers_of(&other, RecordType::MX).len(), 1);

    let outside = udp(lab.addr(), "example.org.", "A").await;
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
    assert!(outside.answers.is_empty());
    lab.shutdown().await;
}

#[tokio::test]
async fn root_zone_is_synthesized_without_soa() {
    let lab = lab("mx.example. 300 IN A 192.0.2.1\nexample. 300 IN MX 10 mx.example.\n").await;
    let a = udp(lab.addr(), "mx.example.", "A").await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert!(a.metadata.authoritative);
    assert_eq!(answers_of(&a, RecordType::A).len(), 1);

    let nx = udp(lab.addr(), "unknown.invalid.", "MX").await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    let soa = nx
        .authorities
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some((r.name.to_string(), soa.minimum)),
            _ => None,
        })
        .expect("SOA in authority");
    assert_eq!(soa, (".".to_string(), 300));
    lab.shutdown().await;
}

#[tokio::test]
async fn servfail_and_refused_faults() {
    let lab = lab(ZONE).await;
    for (name, code) in [
        ("sf.example.com.", ResponseCode::ServFail),
        ("ref.example.com.", ResponseCode::Refused),
    ] {
        let u = udp(lab.addr(), name, "A").await;
        assert_eq!(u.metadata.response_code, code, "{name} over UDP");
        assert!(u.answers.is_empty());
        let t = tcp(lab.addr(), name, "A").await;
        assert_eq!(t.metadata.response_code, code, "{name} over TCP");
        assert!(t.answers.is_empty());
    }
    lab.shutdown().await;
}

#[tokio::test]
async fn timeout_fault_never_answers_but_others_still_do() {
    let lab = lab(ZONE).await;
    assert!(
        udp_exchange(lab.addr(), &query("gone.example.com.", "A"), SILENCE)
            .await
            .is_none(),
        "timeout fault must not answer over UDP"
    );

    let mut conn = Tcp::connect(lab.addr()).await;
    conn.send(&query("gone.example.com.", "A")).await;
    assert!(matches!(conn.read(SILENCE).await, TcpRead::Silent));
    // The connection is still usable for other names.
    let q = query("mx1.example.com.", "A");
    conn.send(&q).await;
    let reply = conn.answer().await;
    assert_eq!(reply.metadata.id, q.metadata.id);
    assert_eq!(answers_of(&reply, RecordType::A).len(), 1);
    assert_eq!(lab.query_count("gone.example.com", "A"), 2);
    lab.shutdown().await;
}

#[tokio::test]
async fn truncate_fault_sets_tc_on_udp_and_resets_tcp() {
    let lab = lab(ZONE).await;
    let q = query("tc.example.com.", "A");
    let (reply, _) = udp_exchange(lab.addr(), &q, PATIENCE)
        .await
        .expect("UDP answer");
    assert!(reply.metadata.truncation, "TC must be set");
    assert_eq!(reply.metadata.id, q.metadata.id);
    assert_eq!(reply.queries, q.queries);
    assert!(reply.answers.is_empty());

    let mut conn = Tcp::connect(lab.addr()).await;
    conn.send(&q).await;
    match conn.read(PATIENCE).await {
        // SO_LINGER 0 on the server makes the close a RST.
        TcpRead::Closed(std::io::ErrorKind::ConnectionReset) => {}
        other => panic!("TCP must be reset without an answer, got {other:?}"),
    }
    lab.shutdown().await;
}

#[tokio::test]
async fn delay_fault_delays_only_that_name() {
    let lab = lab(ZONE).await;
    let mut conn = Tcp::connect(lab.addr()).await;
    let slow = query("slow.example.com.", "A");
    let fast = query("mx1.example.com.", "A");
    let started = Instant::now();
    conn.send(&slow).await;
    conn.send(&fast).await;
    // The fast answer overtakes the delayed one on the same connection.
    let first = conn.answer().await;
    assert_eq!(first.metadata.id, fast.metadata.id);
    let second = conn.answer().await;
    assert_eq!(second.metadata.id, slow.metadata.id);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answers_of(&second, RecordType::A).len(), 1);

    let started = Instant::now();
    let reply = udp(lab.addr(), "slow.example.com.", "A").await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    lab.shutdown().await;
}

#[tokio::test]
async fn fault_per_type() {
    let lab = lab(ZONE).await;
    let aaaa = udp(lab.addr(), "flaky.example.com.", "AAAA").await;
    assert_eq!(aaaa.metadata.response_code, ResponseCode::ServFail);
    let a = udp(lab.addr(), "FLAKY.example.com.", "A").await;
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers_of(&a, RecordType::A).len(), 1);
    lab.shutdown().await;
}

#[tokio::test]
async fn faults_switch_live() {
    let lab = lab(ZONE).await;
    let faults = lab.faults();
    assert_eq!(
        udp(lab.addr(), "mx2.example.com.", "A")
            .await
            .metadata
            .response_code,
        ResponseCode::NoError
    );

    faults.set("MX2.example.com", None, Fault::Refused);
    assert_eq!(
        udp(lab.addr(), "mx2.example.com.", "A")
            .await
            .metadata
            .response_code,
        ResponseCode::Refused
    );
    faults.set("mx2.example.com.", Some("a"), Fault::ServFail);
    assert_eq!(
        udp(lab.addr(), "mx2.example.com.", "A")
            .await
            .metadata
            .response_code,
        ResponseCode::ServFail
    );
    assert_eq!(
        tcp(lab.addr(), "mx2.example.com.", "MX")
            .await
            .metadata
            .response_code,
        ResponseCode::Refused
    );

    faults.clear("mx2.example.com.", Some("A"));
    assert_eq!(
        udp(lab.addr(), "mx2.example.com.", "A")
            .await
            .metadata
            .response_code,
        ResponseCode::Refused
    );
    faults.clear("mx2.example.com.", None);
    assert_eq!(
        udp(lab.addr(), "mx2.example.com.", "A")
            .await
            .metadata
            .response_code,
        ResponseCode::NoError
    );

    // Declared faults can be cleared too.
    faults.clear_all();
    assert_eq!(
        udp(lab.addr(), "sf.example.com.", "A")
            .await
            .metadata
            .response_code,
        ResponseCode::NoError
    );
    lab.shutdown().await;
}

#[tokio::test]
async fn query_count_counts_every_transport() {
    let lab = lab(ZONE).await;
    assert_eq!(lab.query_count("example.com", "MX"), 0);
    udp(lab.addr(), "example.com.", "MX").await;
    udp(lab.addr(), "EXAMPLE.com.", "MX").await;
    tcp(lab.addr(), "example.com.", "MX").await;
    udp(lab.addr(), "sf.example.com.", "A").await;
    assert_eq!(lab.query_count("example.com", "MX"), 3);
    assert_eq!(lab.query_count("Example.Com.", "mx"), 3);
    assert_eq!(lab.query_count("example.com", "A"), 0);
    assert_eq!(lab.query_count("sf.example.com", "A"), 1);
    lab.shutdown().await;
}

#[tokio::test]
async fn large_udp_answers_are_truncated_without_edns() {
    let lab = lab(&big_zone()).await;
    let (plain, size) = udp_exchange(lab.addr(), &query("txt.big.test.", "TXT"), PATIENCE)
        .await
        .expect("answer");
    assert!(size <= 512, "{size} bytes");
    assert!(plain.metadata.truncation);

    let (edns, size) = udp_exchange(
        lab.addr(),
        &with_edns(query("txt.big.test.", "TXT"), 4096),
        PATIENCE,
    )
    .await
    .expect("answer");
    assert!(size > 512);
    assert!(!edns.metadata.truncation);
    assert_eq!(answers_of(&edns, RecordType::TXT).len(), 30);

    let full = tcp(lab.addr(), "txt.big.test.", "TXT").await;
    assert!(!full.metadata.truncation);
    assert_eq!(answers_of(&full, RecordType::TXT).len(), 30);
    lab.shutdown().await;
}

#[tokio::test]
async fn malformed_packets_are_survived() {
    let lab = lab(ZONE).await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for junk in [
        &b""[..],
        b"\x01",
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff",
    ] {
        socket.send_to(junk, lab.addr()).await.unwrap();
    }
    let mut conn = Tcp::connect(lab.addr()).await;
    conn.send_raw(b"\x12\x34\x01\x00\x00\x01").await;
    assert!(matches!(conn.read(PATIENCE).await, TcpRead::Closed(_)));

    assert_eq!(
        udp(lab.addr(), "example.com.", "MX")
            .await
            .metadata
            .response_code,
        ResponseCode::NoError
    );
    assert_eq!(
        tcp(lab.addr(), "example.com.", "MX")
            .await
            .metadata
            .response_code,
        ResponseCode::NoError
    );
    lab.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let lab = lab(ZONE).await;
    let addr: SocketAddr = lab.addr();
    let mut idle = Tcp::connect(addr).await;
    lab.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing may listen after shutdown"
    );
    assert!(
        matches!(idle.read(PATIENCE).await, TcpRead::Closed(_)),
        "open connections are closed"
    );
    // Both ports are free again.
    let _udp = tokio::net::UdpSocket::bind(addr)
        .await
        .expect("UDP port released");
    let _tcp = tokio::net::TcpListener::bind(addr)
        .await
        .expect("TCP port released");
}

#[tokio::test]
async fn a_taken_tcp_port_is_a_bind_error() {
    let squatter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = squatter.local_addr().unwrap();
    let zones = ZoneSet::parse(ZONE, "<inline>", None).unwrap();
    match LabDns::start(&zones, addr).await {
        Err(mx_lab::LabError::Bind { .. }) => {}
        Err(other) => panic!("expected a bind error, got {other}"),
        Ok(lab) => panic!("started on a taken port: {lab:?}"),
    }
}
