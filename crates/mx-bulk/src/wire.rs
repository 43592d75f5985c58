//! DNS messages in and out, without I/O: encode a question, check an answer against its
//! question (RFC 5452), and turn it into mx-core's [`Outcome`] exactly as mx-dns's hickory
//! client does, so `bulk` and `route` see the same data.

use std::sync::OnceLock;

use hickory_proto::ProtoError;
use hickory_proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder, EncodedSize,
};
use mx_core::{Answer, Failure, Outcome, QType, Question, Record, RecordData};

/// EDNS payload size we advertise: the DNS flag day 2020 value, which avoids IP fragmentation.
pub const EDNS_PAYLOAD: u16 = 1232;

/// What one response says about its question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classified {
    /// TC=1: ask again over TCP.
    Truncated,
    /// A final outcome for the question.
    Outcome(Outcome),
}

pub fn record_type(qtype: QType) -> RecordType {
    match qtype {
        QType::Mx => RecordType::MX,
        QType::A => RecordType::A,
        QType::Aaaa => RecordType::AAAA,
    }
}

/// The wire name of a question (absolute).
pub fn wire_name(question: &Question) -> Result<Name, Failure> {
    let mut name = Name::from_ascii(&question.name)
        .map_err(|e| Failure::Malformed(format!("bad name {}: {e}", question.name)))?;
    name.set_fqdn(true);
    Ok(name)
}

/// mx-core's `normalize_dns_name` of a wire name (lower case, no trailing dot), with one
/// allocation instead of two: this runs for every name of every answer.
fn normalized(name: &Name) -> String {
    let mut text = name.to_ascii();
    if text.ends_with('.') {
        text.pop();
    }
    text.make_ascii_lowercase();
    text
}

/// One query message, RD set (a recursive resolver needs it, an authoritative one ignores it)
/// and EDNS so that answers up to [`EDNS_PAYLOAD`] bytes come over UDP.
///
/// Every query of a type differs only in its id and name, so hickory encodes the rest once
/// (the type, the class and the OPT record that follow the name) and each query is hickory's
/// header, the name's labels through hickory's encoder, and that tail: the same bytes as encoding the whole
/// [`query_message`], without building a message, an EDNS record and a compression table per
/// query.
pub fn encode_query(id: u16, name: &Name, qtype: QType) -> Result<Vec<u8>, Failure> {
    let malformed = |e: ProtoError| Failure::Malformed(format!("cannot encode query: {e}"));
    let tail = query_tail(qtype)?;
    let mut metadata = Metadata::new(id, MessageType::Query, OpCode::Query);
    metadata.recursion_desired = true;
    let header = Header {
        metadata,
        counts: HeaderCounts {
            queries: 1,
            answers: 0,
            authorities: 0,
            additionals: 1,
        },
    };
    let mut bytes = Vec::with_capacity(<Header as EncodedSize>::LEN + name.len() + 2 + tail.len());
    let mut encoder = BinEncoder::new(&mut bytes);
    header.emit(&mut encoder).map_err(malformed)?;
    // The name label by label: `Name::emit` would also copy every suffix into the encoder's
    // compression table, for a message that has no second name to compress. A `Name` already
    // holds labels of at most 63 bytes and at most 255 in all.
    for label in name.iter() {
        encoder.emit_character_data(label).map_err(malformed)?;
    }
    encoder.emit(0).map_err(malformed)?;
    bytes.extend_from_slice(tail);
    Ok(bytes)
}

/// The query [`encode_query`] puts on the wire, as a hickory message.
pub fn query_message(id: u16, name: Name, qtype: QType) -> Message {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name, record_type(qtype)));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    message.set_edns(edns);
    message
}

/// What follows the name in every query of `qtype`: hickory's encoding of a query for the
/// root name, less the header and the root's one byte.
fn query_tail(qtype: QType) -> Result<&'static [u8], Failure> {
    static TAILS: OnceLock<Result<[Vec<u8>; 3], String>> = OnceLock::new();
    let tails = TAILS.get_or_init(|| {
        let tail = |qtype| -> Result<Vec<u8>, String> {
            let bytes = query_message(0, Name::root(), qtype)
                .to_vec()
                .map_err(|e| e.to_string())?;
            Ok(bytes[<Header as EncodedSize>::LEN + 1..].to_vec())
        };
        Ok([tail(QType::Mx)?, tail(QType::A)?, tail(QType::Aaaa)?])
    });
    let tails = tails
        .as_ref()
        .map_err(|e| Failure::Malformed(format!("cannot encode query: {e}")))?;
    Ok(match qtype {
        QType::Mx => &tails[0],
        QType::A => &tails[1],
        QType::Aaaa => &tails[2],
    })
}

/// RFC 5452 §9: a response is ours only if it is a response, carries our id, and repeats our
/// question (name, type and class). Anything else is ignored, never taken as an answer.
pub fn matches(message: &Message, id: u16, name: &Name, qtype: QType) -> bool {
    head_matches(&message.metadata, &message.queries, id, name, qtype)
}

/// [`matches`] on a response's header and question section alone (see [`decode_head`]).
pub fn head_matches(
    metadata: &Metadata,
    queries: &[Query],
    id: u16,
    name: &Name,
    qtype: QType,
) -> bool {
    metadata.message_type == MessageType::Response
        && metadata.id == id
        && match queries {
            [query] => {
                query.name() == name
                    && query.query_type() == record_type(qtype)
                    && query.query_class() == DNSClass::IN
            }
            _ => false,
        }
}

/// The header and question section of a datagram: enough to find the question it answers.
pub fn decode_head<'a>(bytes: &'a [u8]) -> Option<(Header, Vec<Query>, BinDecoder<'a>)> {
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).ok()?;
    let queries = Message::read_queries(&mut decoder, usize::from(header.counts.queries)).ok()?;
    Some((header, queries, decoder))
}

/// The rest of a matched response, decoding only what routing reads (decoding is most of a
/// bulk run's own work): the answer section always; the authority section only when the
/// answer lacks the type asked (its SOA gives the negative TTL); the additional section only
/// for `--use-additional`.
pub fn decode_rest(
    header: Header,
    queries: Vec<Query>,
    mut decoder: BinDecoder<'_>,
    qtype: QType,
    want_additional: bool,
) -> Result<Message, Failure> {
    let malformed =
        |e: hickory_proto::serialize::binary::DecodeError| Failure::Malformed(e.to_string());
    let op = header.metadata.op_code;
    let mut message = Message::new(header.metadata.id, MessageType::Response, op);
    message.metadata = header.metadata;
    message.queries = queries;
    let read = |decoder: &mut BinDecoder<'_>, count: u16, additional: bool| {
        Message::read_records(decoder, usize::from(count), additional, op).map(|r| r.0)
    };
    message.answers = read(&mut decoder, header.counts.answers, false).map_err(malformed)?;
    let wanted = record_type(qtype);
    let answered = message.answers.iter().any(|r| r.record_type() == wanted);
    if !answered || want_additional {
        message.authorities =
            read(&mut decoder, header.counts.authorities, false).map_err(malformed)?;
    }
    if want_additional {
        message.additionals =
            read(&mut decoder, header.counts.additionals, true).map_err(malformed)?;
    }
    Ok(message)
}

/// Turn a matched response into an outcome. The answer section is taken whole, CNAME chain
/// included: an authoritative server puts the chain there itself, so, unlike the hickory
/// client, no extra CNAME query is needed (mx-core's chase asks for whatever the chain's end
/// still lacks).
pub fn classify(message: &Message) -> Classified {
    if message.metadata.truncation {
        return Classified::Truncated;
    }
    let code = message.metadata.response_code;
    let outcome = match code {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(Answer {
            nxdomain: code == ResponseCode::NXDomain,
            records: message.answers.iter().map(convert_record).collect(),
            negative_ttl: negative_ttl(message),
        }),
        ResponseCode::ServFail => Err(Failure::ServFail),
        ResponseCode::Refused => Err(Failure::Refused),
        other => Err(Failure::Malformed(format!("response code {other}"))),
    };
    Classified::Outcome(outcome)
}

/// RFC 2308: min(SOA TTL, SOA minimum) of the first SOA in the authority section (what
/// hickory's `DnsResponse::negative_ttl` computes for the route path).
fn negative_ttl(message: &Message) -> Option<u32> {
    message
        .authorities
        .iter()
        .find_map(|record| match &record.data {
            RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
            _ => None,
        })
}

/// `--use-additional`: the exchangers' addresses an authoritative MX answer volunteered in its
/// additional section, as ready outcomes for their A and AAAA questions. Only for an exchanger
/// with both families there: one family alone says nothing about the other (absent from the
/// section is not NODATA).
pub fn additional_addresses(message: &Message) -> Vec<(Question, Outcome)> {
    if !message.metadata.authoritative
        || message.metadata.truncation
        || message.metadata.response_code != ResponseCode::NoError
    {
        return Vec::new();
    }
    let mut seeds = Vec::new();
    for answer in &message.answers {
        let RData::MX(mx) = &answer.data else {
            continue;
        };
        let host = normalized(&mx.exchange);
        if host.is_empty() {
            continue;
        }
        let of_type = |wanted: RecordType| -> Vec<Record> {
            message
                .additionals
                .iter()
                .filter(|r| r.record_type() == wanted && r.name == mx.exchange)
                .map(convert_record)
                .collect()
        };
        let (v4, v6) = (of_type(RecordType::A), of_type(RecordType::AAAA));
        if v4.is_empty() || v6.is_empty() {
            continue;
        }
        for (qtype, records) in [(QType::A, v4), (QType::Aaaa, v6)] {
            let answer = Answer {
                nxdomain: false,
                records,
                negative_ttl: None,
            };
            seeds.push((Question::new(host.clone(), qtype), Ok(answer)));
        }
    }
    seeds
}

/// The same conversion as mx-dns's hickory client (names through `normalize_dns_name`).
pub fn convert_record(record: &hickory_proto::rr::Record) -> Record {
    let data = match &record.data {
        RData::MX(mx) => RecordData::Mx {
            preference: mx.preference,
            exchange: normalized(&mx.exchange),
        },
        RData::A(a) => RecordData::A(a.0),
        RData::AAAA(aaaa) => RecordData::Aaaa(aaaa.0),
        RData::CNAME(cname) => RecordData::Cname(normalized(&cname.0)),
        _ => RecordData::Other,
    };
    Record {
        name: normalized(&record.name),
        ttl: record.ttl,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn response_to(id: u16, q: &str, t: RecordType) -> Message {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(name(q), t));
        m.metadata.authoritative = true;
        m
    }

    fn rec(owner: &str, ttl: u32, data: RData) -> hickory_proto::rr::Record {
        hickory_proto::rr::Record::from_rdata(name(owner), ttl, data)
    }

    #[test]
    fn a_query_round_trips_and_its_answer_matches_only_its_question() {
        let q = name("example.com.");
        let bytes = encode_query(4242, &q, QType::Mx).unwrap();
        let decoded = Message::from_vec(&bytes).unwrap();
        assert_eq!(decoded.metadata.id, 4242);
        assert!(decoded.metadata.recursion_desired);
        assert_eq!(decoded.max_payload(), EDNS_PAYLOAD);

        let reply = response_to(4242, "EXAMPLE.com.", RecordType::MX);
        assert!(
            matches(&reply, 4242, &q, QType::Mx),
            "names compare case-insensitively"
        );
        assert!(!matches(&reply, 4243, &q, QType::Mx), "wrong id");
        assert!(!matches(&reply, 4242, &q, QType::A), "wrong type");
        assert!(
            !matches(&reply, 4242, &name("other.example."), QType::Mx),
            "wrong name"
        );
        assert!(
            !matches(&decoded, 4242, &q, QType::Mx),
            "a query is not an answer"
        );
    }

    #[test]
    fn queries_are_the_bytes_of_the_whole_message() {
        for text in [
            "example.com.",
            "d12345.example.",
            "Mixed.Case.EXAMPLE.",
            ".",
        ] {
            for qtype in [QType::Mx, QType::A, QType::Aaaa] {
                let expected = query_message(513, name(text), qtype).to_vec().unwrap();
                assert_eq!(
                    encode_query(513, &name(text), qtype).unwrap(),
                    expected,
                    "{text} {qtype}"
                );
            }
        }
    }

    #[test]
    fn names_normalise_like_mx_core() {
        for text in [
            "Example.COM.",
            "mx1.p7.example.",
            ".",
            "xn--bcher-kva.EXAMPLE.",
        ] {
            let wire = name(text);
            assert_eq!(
                normalized(&wire),
                mx_core::normalize_dns_name(&wire.to_ascii()),
                "{text}"
            );
        }
        let q = Question::new("mx.example", QType::A);
        assert_eq!(wire_name(&q).unwrap(), name("mx.example."));
    }

    #[test]
    fn partial_decoding_keeps_what_routing_reads() {
        let mut m = response_to(9, "d.example.", RecordType::MX);
        m.add_answer(rec(
            "d.example.",
            300,
            RData::MX(MX::new(10, name("mx.d.example."))),
        ));
        m.add_additional(rec("mx.d.example.", 60, RData::A(A::new(192, 0, 2, 1))));
        let bytes = m.to_vec().unwrap();
        let decode = |want_additional| {
            let (header, queries, decoder) = decode_head(&bytes).unwrap();
            assert!(head_matches(
                &header.metadata,
                &queries,
                9,
                &name("d.example."),
                QType::Mx
            ));
            decode_rest(header, queries, decoder, QType::Mx, want_additional).unwrap()
        };
        let lean = decode(false);
        assert_eq!(lean.answers.len(), 1);
        assert!(lean.additionals.is_empty());
        assert_eq!(decode(true).additionals.len(), 1);
        assert_eq!(
            classify(&lean),
            classify(&Message::from_vec(&bytes).unwrap())
        );

        let mut negative = response_to(9, "n.example.", RecordType::MX);
        negative.metadata.response_code = ResponseCode::NXDomain;
        let soa = SOA::new(name("ns."), name("h."), 1, 1, 1, 1, 120);
        negative.add_authority(rec(".", 600, RData::SOA(soa)));
        let bytes = negative.to_vec().unwrap();
        let (header, queries, decoder) = decode_head(&bytes).unwrap();
        let lean = decode_rest(header, queries, decoder, QType::Mx, false).unwrap();
        assert_eq!(classify(&lean), classify(&negative));
    }

    #[test]
    fn answers_keep_the_cname_chain_and_negative_ttl() {
        let mut m = response_to(1, "alias.example.", RecordType::MX);
        m.metadata.response_code = ResponseCode::NXDomain;
        m.add_answer(rec(
            "alias.example.",
            60,
            RData::CNAME(CNAME(name("gone.example."))),
        ));
        let soa = SOA::new(name("ns."), name("h."), 1, 1, 1, 1, 120);
        m.add_authority(rec(".", 600, RData::SOA(soa)));
        let Classified::Outcome(Ok(answer)) = classify(&m) else {
            panic!("not an answer");
        };
        assert!(answer.nxdomain);
        assert_eq!(answer.negative_ttl, Some(120));
        assert_eq!(
            answer.records[0].data,
            RecordData::Cname("gone.example".into())
        );
    }

    #[test]
    fn failures_and_truncation() {
        let mut m = response_to(1, "x.example.", RecordType::MX);
        m.metadata.response_code = ResponseCode::ServFail;
        assert_eq!(classify(&m), Classified::Outcome(Err(Failure::ServFail)));
        m.metadata.response_code = ResponseCode::Refused;
        assert_eq!(classify(&m), Classified::Outcome(Err(Failure::Refused)));
        m.metadata.response_code = ResponseCode::FormErr;
        assert!(matches!(
            classify(&m),
            Classified::Outcome(Err(Failure::Malformed(_)))
        ));
        m.metadata.truncation = true;
        assert_eq!(classify(&m), Classified::Truncated);
    }

    #[test]
    fn additional_addresses_need_both_families() {
        let mut m = response_to(1, "d.example.", RecordType::MX);
        m.add_answer(rec(
            "d.example.",
            300,
            RData::MX(MX::new(10, name("mx1.p.example."))),
        ));
        m.add_answer(rec(
            "d.example.",
            300,
            RData::MX(MX::new(20, name("mx2.p.example."))),
        ));
        m.add_additional(rec("mx1.p.example.", 60, RData::A(A::new(192, 0, 2, 1))));
        m.add_additional(rec(
            "mx1.p.example.",
            60,
            RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ));
        m.add_additional(rec("mx2.p.example.", 60, RData::A(A::new(192, 0, 2, 2))));
        let seeds = additional_addresses(&m);
        let questions: Vec<String> = seeds.iter().map(|(q, _)| q.to_string()).collect();
        assert_eq!(questions, ["mx1.p.example A", "mx1.p.example AAAA"]);
        m.metadata.authoritative = false;
        assert!(
            additional_addresses(&m).is_empty(),
            "only from the authority"
        );
    }
}
