//! The stub resolver over real packets: the lab server for zone data and faults, and a scripted
//! UDP server for what the lab will not do (forged datagrams, the AD bit).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use mx_core::Failure;
use mx_dns::{
    DnsError, Rdata, RecordKind, StubAnswer, StubOptions, StubRecord, StubResolver, reverse_name,
};
use mx_lab::{LabDns, ZoneSet};
use tokio::net::UdpSocket;

const ZONE: &str = r#"
$TTL 3600
example.com. 3600 IN SOA ns1.example.com. hostmaster.example.com. 2024010101 7200 900 1209600 600
example.com. 300 IN NS ns1.example.com.
example.com. 300 IN MX 10 Mail.Example.com.
example.com. 300 IN TXT "v=spf1 " "-all"
ns1.example.com. 300 IN A 127.0.0.1
mail.example.com. 300 IN A 127.0.0.25
mail.example.com. 300 IN AAAA ::1
www.example.com. 300 IN CNAME mail.example.com.
_25._tcp.mail.example.com. 300 IN TLSA 3 1 1 0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789ABCDEF
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa00"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa01"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa02"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa03"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa04"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa05"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa06"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa07"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa08"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa09"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa10"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa11"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa12"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa13"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa14"
big.example.com. 300 IN TXT "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa15"
sf.example.com. 300 IN A 127.0.0.2
$FAULT sf.example.com. servfail
rf.example.com. 300 IN A 127.0.0.2
$FAULT rf.example.com. refused
to.example.com. 300 IN A 127.0.0.2
$FAULT to.example.com. timeout
tc.example.com. 300 IN A 127.0.0.2
$FAULT tc.example.com. truncate
0.0.127.in-addr.arpa. 3600 IN SOA ns1.example.com. hostmaster.example.com. 7 7200 900 1209600 600
0.0.127.in-addr.arpa. 3600 IN NS ns1.example.com.
25.0.0.127.in-addr.arpa. 300 IN PTR Mail.Example.com.
"#;

/// The zone without its faults, for a second server that answers normally.
fn healthy_zone() -> String {
    ZONE.lines()
        .filter(|l| !l.starts_with("$FAULT"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn lab_with(text: &str) -> LabDns {
    let zones = ZoneSet::parse(text, "<inline>", None).expect("zone");
    LabDns::start(&zones, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("lab")
}

async fn lab() -> LabDns {
    lab_with(ZONE).await
}

fn quick() -> StubOptions {
    StubOptions {
        timeout: Duration::from_millis(200),
        attempts: 2,
        recursion_desired: false,
        dnssec_ok: true,
    }
}

fn resolver(servers: Vec<SocketAddr>) -> StubResolver {
    StubResolver::new(
        servers,
        StubOptions {
            timeout: Duration::from_secs(2),
            ..quick()
        },
    )
    .expect("resolver")
}

async fn ask(lab: &LabDns, name: &str, kind: RecordKind) -> StubAnswer {
    resolver(vec![lab.addr()])
        .lookup(name, kind)
        .await
        .unwrap_or_else(|f| panic!("{name} {kind}: {f}"))
}

fn data(answer: &StubAnswer) -> Vec<Rdata> {
    answer.answers.iter().map(|r| r.data.clone()).collect()
}

#[tokio::test]
async fn every_record_kind_is_decoded() {
    let lab = lab().await;

    let a = ask(&lab, "mail.example.com", RecordKind::A).await;
    assert_eq!(
        a.answers,
        vec![StubRecord {
            name: "mail.example.com".into(),
            ttl: 300,
            data: Rdata::A("127.0.0.25".parse().unwrap()),
        }]
    );
    let aaaa = ask(&lab, "mail.example.com.", RecordKind::Aaaa).await;
    assert_eq!(data(&aaaa), vec![Rdata::Aaaa("::1".parse().unwrap())]);

    let mx = ask(&lab, "EXAMPLE.com", RecordKind::Mx).await;
    assert_eq!(mx.answers[0].name, "example.com");
    assert_eq!(
        data(&mx),
        vec![Rdata::Mx {
            preference: 10,
            exchange: "mail.example.com".into(),
        }]
    );

    let cname = ask(&lab, "www.example.com", RecordKind::Cname).await;
    assert_eq!(data(&cname), vec![Rdata::Cname("mail.example.com".into())]);

    let ns = ask(&lab, "example.com", RecordKind::Ns).await;
    assert_eq!(data(&ns), vec![Rdata::Ns("ns1.example.com".into())]);

    let txt = ask(&lab, "example.com", RecordKind::Txt).await;
    assert_eq!(data(&txt), vec![Rdata::Txt("v=spf1 -all".into())]);

    let tlsa = ask(&lab, "_25._tcp.mail.example.com", RecordKind::Tlsa).await;
    assert_eq!(
        data(&tlsa),
        vec![Rdata::Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: "0123456789abcdef".repeat(4),
        }]
    );

    let soa = ask(&lab, "example.com", RecordKind::Soa).await;
    assert_eq!(
        data(&soa),
        vec![Rdata::Soa {
            mname: "ns1.example.com".into(),
            rname: "hostmaster.example.com".into(),
            serial: 2024010101,
            minimum: 600,
        }]
    );

    let reverse = reverse_name("127.0.0.25".parse::<IpAddr>().unwrap());
    assert_eq!(reverse, "25.0.0.127.in-addr.arpa");
    let ptr = ask(&lab, &reverse, RecordKind::Ptr).await;
    assert_eq!(data(&ptr), vec![Rdata::Ptr("mail.example.com".into())]);
    lab.shutdown().await;
}

#[tokio::test]
async fn lab_answers_are_authoritative_and_not_authenticated() {
    let lab = lab().await;
    let answer = ask(&lab, "mail.example.com", RecordKind::A).await;
    assert!(answer.authoritative);
    assert!(!answer.authenticated, "the lab does not validate");
    assert!(!answer.nxdomain);
    lab.shutdown().await;
}

#[tokio::test]
async fn nxdomain_carries_the_negative_ttl() {
    let lab = lab().await;
    let answer = ask(&lab, "nosuch.example.com", RecordKind::A).await;
    assert!(answer.nxdomain);
    assert!(answer.answers.is_empty());
    // SOA TTL 3600, minimum 600: RFC 2308 takes the smaller.
    assert_eq!(answer.negative_ttl, Some(600));
    assert!(
        answer
            .authority
            .iter()
            .any(|r| r.name == "example.com" && matches!(r.data, Rdata::Soa { .. }))
    );
    lab.shutdown().await;
}

#[tokio::test]
async fn nodata_is_an_empty_noerror_answer() {
    let lab = lab().await;
    let answer = ask(&lab, "ns1.example.com", RecordKind::Aaaa).await;
    assert!(!answer.nxdomain);
    assert!(answer.answers.is_empty());
    assert_eq!(answer.negative_ttl, Some(600));
    lab.shutdown().await;
}

#[tokio::test]
async fn a_truncated_answer_is_fetched_whole_over_tcp() {
    let lab = lab().await;
    // 16 TXT records of ~100 bytes do not fit the 1232-byte EDNS payload: over UDP the lab
    // sets TC (checked here by hand), so the full answer can only have come over TCP.
    let mut query = Message::new(7, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(
        Name::from_ascii("big.example.com.").unwrap(),
        RecordType::TXT,
    ));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    query.set_edns(edns);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&query.to_vec().unwrap(), lab.addr())
        .await
        .unwrap();
    let mut buf = vec![0u8; 65_535];
    let (len, _) = socket.recv_from(&mut buf).await.unwrap();
    assert!(Message::from_vec(&buf[..len]).unwrap().metadata.truncation);

    let answer = ask(&lab, "big.example.com", RecordKind::Txt).await;
    assert_eq!(answer.answers.len(), 16, "{answer:?}");
    assert!(
        answer
            .answers
            .iter()
            .any(|r| matches!(&r.data, Rdata::Txt(t) if t.ends_with("15")))
    );
    lab.shutdown().await;
}

#[tokio::test]
async fn truncated_and_tcp_refused_is_truncated() {
    let lab = lab().await;
    let failure = resolver(vec![lab.addr()])
        .lookup("tc.example.com", RecordKind::A)
        .await
        .unwrap_err();
    assert_eq!(failure, Failure::Truncated);
    lab.shutdown().await;
}

#[tokio::test]
async fn servfail_from_the_first_server_is_answered_by_the_second() {
    let bad = lab().await;
    let good = lab_with(&healthy_zone()).await;
    let answer = resolver(vec![bad.addr(), good.addr()])
        .lookup("sf.example.com", RecordKind::A)
        .await
        .expect("second server answers");
    assert_eq!(data(&answer), vec![Rdata::A("127.0.0.2".parse().unwrap())]);
    assert_eq!(
        bad.query_count("sf.example.com", "A"),
        1,
        "SERVFAIL is not retried"
    );
    assert_eq!(good.query_count("sf.example.com", "A"), 1);
    bad.shutdown().await;
    good.shutdown().await;
}

#[tokio::test]
async fn the_most_telling_failure_wins() {
    let lab = lab().await;
    let stub = resolver(vec![lab.addr()]);
    assert_eq!(
        stub.lookup("rf.example.com", RecordKind::A).await,
        Err(Failure::Refused)
    );
    assert_eq!(
        stub.lookup("sf.example.com", RecordKind::A).await,
        Err(Failure::ServFail)
    );

    let refusing =
        lab_with(&ZONE.replace("sf.example.com. servfail", "sf.example.com. refused")).await;
    let both = resolver(vec![refusing.addr(), lab.addr()]);
    assert_eq!(
        both.lookup("sf.example.com", RecordKind::A).await,
        Err(Failure::ServFail)
    );
    lab.shutdown().await;
    refusing.shutdown().await;
}

#[tokio::test]
async fn silence_everywhere_is_a_timeout_within_bounds() {
    let first = lab().await;
    let second = lab().await;
    let stub = StubResolver::new(vec![first.addr(), second.addr()], quick()).unwrap();
    let started = Instant::now();
    let failure = stub.lookup("to.example.com", RecordKind::A).await;
    let elapsed = started.elapsed();
    assert_eq!(failure, Err(Failure::Timeout));
    // 2 servers x 2 attempts x 200 ms, plus scheduling slack.
    assert!(elapsed >= Duration::from_millis(800), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(first.query_count("to.example.com", "A"), 2);
    assert_eq!(second.query_count("to.example.com", "A"), 2);
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn a_closed_port_is_skipped() {
    let dead = lab().await;
    let dead_addr = dead.addr();
    dead.shutdown().await;
    let good = lab().await;
    let answer = resolver(vec![dead_addr, good.addr()])
        .lookup("mail.example.com", RecordKind::A)
        .await
        .expect("second server answers");
    assert_eq!(answer.answers.len(), 1);
    good.shutdown().await;
}

#[tokio::test]
async fn lookup_at_asks_only_that_server() {
    let first = lab().await;
    let second = lab().await;
    let stub = resolver(vec![first.addr(), second.addr()]);
    assert_eq!(stub.servers(), &[first.addr(), second.addr()]);
    let answer = stub
        .lookup_at(second.addr(), "example.com", RecordKind::Mx)
        .await
        .expect("answer");
    assert!(answer.authoritative);
    assert_eq!(first.query_count("example.com", "MX"), 0);
    assert_eq!(second.query_count("example.com", "MX"), 1);

    // A failure there is reported, not passed on to the other servers.
    let failure = stub
        .lookup_at(second.addr(), "sf.example.com", RecordKind::A)
        .await;
    assert_eq!(failure, Err(Failure::ServFail));
    assert_eq!(first.query_count("sf.example.com", "A"), 0);
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn bad_names_are_malformed() {
    let lab = lab().await;
    let stub = resolver(vec![lab.addr()]);
    for name in ["a..example.com", "bücher.example", "has space.example", ""] {
        assert!(
            matches!(
                stub.lookup(name, RecordKind::A).await,
                Err(Failure::Malformed(_))
            ),
            "{name:?}"
        );
    }
    assert!(
        stub.lookup("xn--bcher-kva.example.com", RecordKind::A)
            .await
            .expect("A-label names are fine")
            .nxdomain
    );
    lab.shutdown().await;
}

#[test]
fn no_servers_is_a_configuration_error() {
    assert!(matches!(
        StubResolver::new(Vec::new(), StubOptions::default()),
        Err(DnsError::NoNameserver)
    ));
    let defaults = StubOptions::default();
    assert_eq!(defaults.timeout, Duration::from_secs(3));
    assert_eq!(defaults.attempts, 2);
    assert!(defaults.recursion_desired && defaults.dnssec_ok);
}

/// A scripted server: answers the first query with forged and mismatched datagrams first
/// (wrong id, wrong question, garbage, and one from another port), then the real answer with
/// AD set. It reports what the query looked like.
#[tokio::test]
async fn forged_and_mismatched_datagrams_are_ignored() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let script = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let (len, client) = server.recv_from(&mut buf).await.unwrap();
        let query = Message::from_vec(&buf[..len]).unwrap();
        let reply = |id: u16, name: &str| {
            let mut m = Message::new(id, MessageType::Response, OpCode::Query);
            m.metadata.response_code = ResponseCode::NoError;
            m.metadata.authentic_data = true;
            let name = Name::from_ascii(name).unwrap();
            let mut q = query.queries[0].clone();
            q.set_name(name.clone());
            m.add_query(q);
            m.add_answer(Record::from_rdata(name, 60, RData::A(A::new(192, 0, 2, 1))));
            m.to_vec().unwrap()
        };
        let id = query.metadata.id;
        let asked = query.queries[0].name().to_ascii();
        let forger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        forger.send_to(&reply(id, &asked), client).await.unwrap();
        server
            .send_to(&reply(id.wrapping_add(1), &asked), client)
            .await
            .unwrap();
        server
            .send_to(&reply(id, "other.example."), client)
            .await
            .unwrap();
        server.send_to(b"\x00\x01garbage", client).await.unwrap();
        // Undecodable records under someone else's id: a stranger, not a broken answer.
        let mut cut = reply(id ^ 0xff00, &asked);
        cut.truncate(cut.len() - 2);
        server.send_to(&cut, client).await.unwrap();
        // The real answer, with the question in another case (RFC 4343).
        server
            .send_to(&reply(id, &asked.to_uppercase()), client)
            .await
            .unwrap();
        query
    });

    let stub = StubResolver::new(vec![server_addr], StubOptions::default()).unwrap();
    let answer = stub
        .lookup("ad.example", RecordKind::A)
        .await
        .expect("the real answer");
    assert!(answer.authenticated);
    assert_eq!(data(&answer), vec![Rdata::A("192.0.2.1".parse().unwrap())]);

    let query = script.await.unwrap();
    assert!(query.metadata.recursion_desired);
    let edns = query.edns.expect("EDNS0");
    assert_eq!(edns.max_payload(), 1232);
    assert!(edns.flags().dnssec_ok);
}

/// A server whose answer to our very question cannot be decoded: malformed, at once.
#[tokio::test]
async fn an_undecodable_answer_is_malformed() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let (len, client) = server.recv_from(&mut buf).await.unwrap();
        let query = Message::from_vec(&buf[..len]).unwrap();
        let mut m = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
        m.add_query(query.queries[0].clone());
        m.add_answer(Record::from_rdata(
            query.queries[0].name().clone(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        let mut bytes = m.to_vec().unwrap();
        bytes.truncate(bytes.len() - 2); // cut into the A record's data
        server.send_to(&bytes, client).await.unwrap();
    });
    let stub = StubResolver::new(vec![server_addr], StubOptions::default()).unwrap();
    let started = Instant::now();
    let failure = stub.lookup("broken.example", RecordKind::A).await;
    assert!(matches!(failure, Err(Failure::Malformed(_))), "{failure:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "not a timeout");
}

/// Depends on the machine's resolv.conf, so either outcome is accepted; what matters is that
/// it never panics and that the servers it finds are on port 53.
#[test]
fn system_servers_come_from_resolv_conf() {
    match StubResolver::system(StubOptions::default()) {
        Ok(stub) => {
            assert!(!stub.servers().is_empty());
            assert!(stub.servers().iter().all(|s| s.port() == 53));
        }
        Err(e) => assert!(
            matches!(e, DnsError::SystemConfig(_) | DnsError::NoNameserver),
            "{e}"
        ),
    }
}
