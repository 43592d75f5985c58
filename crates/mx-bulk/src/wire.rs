//! DNS messages in and out, without I/O: encode a question, check an answer against its
//! question (RFC 5452), and turn it into mx-core's [`Outcome`] exactly as mx-dns's hickory
//! client does, so `bulk` and `route` see the same data.

use std::sync::OnceLock;

use hickory_proto::op::{
    Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, DecodeError, EncodedSize};
use mx_core::{Answer, Failure, Outcome, QType, Question, Record, RecordData};
use mx_dns::{convert_record, core_name, is_plain_label};

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
    let mut name = match plain_wire_name(&question.name) {
        Some(name) => name,
        None => Name::from_ascii(&question.name)
            .map_err(|e| Failure::Malformed(format!("bad name {}: {e}", question.name)))?,
    };
    name.set_fqdn(true);
    Ok(name)
}

/// `Name::from_ascii` of a name with no escapes whose every label it would take as it is
/// ([`is_plain_label`]), built from the labels directly; None for anything else, which
/// `from_ascii` then parses (or refuses) itself.
/// `from_ascii` reads the text a character at a time into a label string first, and was
/// about a tenth of a bulk run's own work.
fn plain_wire_name(text: &str) -> Option<Name> {
    let text = text.strip_suffix('.').unwrap_or(text);
    let mut name = Name::new();
    for label in text.split('.') {
        if !is_plain_label(label.as_bytes()) {
            return None;
        }
        // Too long a label or name: `from_ascii` gives the error.
        name = name.append_label(label.as_bytes()).ok()?;
    }
    Some(name)
}

/// One query message, RD set (a recursive resolver needs it, an authoritative one ignores it)
/// and EDNS so that answers up to [`EDNS_PAYLOAD`] bytes come over UDP.
///
/// Every query of a type differs only in its id and name, so hickory encodes the whole query
/// once, for the root name ([`query_template`]), and each query is that template with the id
/// written over its first two bytes and the name's labels put before the root's one byte:
/// the same bytes as encoding the whole [`query_message`] (a test compares them), without a
/// message, an EDNS record, a compression table or hickory's byte-at-a-time encoder per query.
pub fn encode_query(id: u16, name: &Name, qtype: QType) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    encode_query_into(id, name, qtype, &mut bytes)?;
    Ok(bytes)
}

/// [`encode_query`] into a buffer the caller keeps (emptied first), so that a query need not
/// allocate one.
pub fn encode_query_into(
    id: u16,
    name: &Name,
    qtype: QType,
    bytes: &mut Vec<u8>,
) -> Result<(), Failure> {
    bytes.clear();
    let template = query_template(qtype)?;
    // The header, then the root name's one byte (0), the type, the class and the OPT record.
    let (header, rest) = template.split_at(<Header as EncodedSize>::LEN);
    bytes.reserve(template.len() + name.len() + 1);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&header[2..]);
    // A `Name` holds labels of 1 to 63 bytes, at most 255 in all: each is its length and its
    // bytes (no compression: a query has no second name).
    for label in name.iter() {
        let length = u8::try_from(label.len())
            .map_err(|_| Failure::Malformed("cannot encode query: label too long".into()))?;
        bytes.push(length);
        bytes.extend_from_slice(label);
    }
    bytes.extend_from_slice(rest);
    Ok(())
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

/// Hickory's encoding of the query of `qtype` for the root name, id 0: every query of that
/// type is this with its own id and name.
fn query_template(qtype: QType) -> Result<&'static [u8], Failure> {
    static TEMPLATES: OnceLock<Result<[Vec<u8>; 3], String>> = OnceLock::new();
    let templates = TEMPLATES.get_or_init(|| {
        let template = |qtype| -> Result<Vec<u8>, String> {
            query_message(0, Name::root(), qtype)
                .to_vec()
                .map_err(|e| e.to_string())
        };
        Ok([
            template(QType::Mx)?,
            template(QType::A)?,
            template(QType::Aaaa)?,
        ])
    });
    let templates = templates
        .as_ref()
        .map_err(|e| Failure::Malformed(format!("cannot encode query: {e}")))?;
    Ok(match qtype {
        QType::Mx => &templates[0],
        QType::A => &templates[1],
        QType::Aaaa => &templates[2],
    })
}

/// RFC 5452 §9: a response is ours only if it is a response, carries our id, and repeats our
/// question (name, type and class). Anything else is ignored, never taken as an answer.
pub fn matches(message: &Message, id: u16, name: &Name, qtype: QType) -> bool {
    match message.queries.as_slice() {
        [query] => head_matches(&message.metadata, query, id, name, qtype),
        _ => false,
    }
}

/// [`matches`] on a response's header and its one question (see [`decode_head`]).
pub fn head_matches(
    metadata: &Metadata,
    query: &Query,
    id: u16,
    name: &Name,
    qtype: QType,
) -> bool {
    metadata.message_type == MessageType::Response
        && metadata.id == id
        && query.name() == name
        && query.query_type() == record_type(qtype)
        && query.query_class() == DNSClass::IN
}

/// The header and question of a datagram: enough to find the question it answers. A
/// datagram without exactly one question answers none of ours (see [`matches`]).
pub fn decode_head(bytes: &[u8]) -> Option<(Header, Query, BinDecoder<'_>)> {
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).ok()?;
    if header.counts.queries != 1 {
        return None;
    }
    let query = Query::read(&mut decoder).ok()?;
    Some((header, query, decoder))
}

/// A matched response, decoded as far as routing reads it.
#[derive(Debug)]
pub struct Response {
    pub metadata: Metadata,
    /// The answer section, already as mx-core's records.
    pub records: Vec<Record>,
    /// RFC 2308: min(SOA TTL, SOA minimum) of the authority section's first SOA, when that
    /// section was read.
    pub negative_ttl: Option<u32>,
    /// The additional section, read only for `--use-additional`.
    pub additionals: Vec<hickory_proto::rr::Record>,
}

/// The rest of a matched response, decoding only what routing reads (decoding is most of a
/// bulk run's own work): the answer section always, straight into mx-core's records (only
/// the owner, TTL and the rdata of MX, A, AAAA and CNAME records: building hickory's records
/// first and converting them cost an allocation per name twice over); the authority section
/// only when the answer lacks the type asked (its SOA gives the negative TTL); the
/// additional section only for `--use-additional`.
pub fn decode_rest(
    header: Header,
    mut decoder: BinDecoder<'_>,
    qtype: QType,
    want_additional: bool,
) -> Result<Response, Failure> {
    let malformed = |e: DecodeError| Failure::Malformed(e.to_string());
    let op = header.metadata.op_code;
    let (records, answered) =
        read_answers(&mut decoder, header.counts.answers, record_type(qtype))?;
    let read = |decoder: &mut BinDecoder<'_>, count: u16, additional: bool| {
        Message::read_records(decoder, usize::from(count), additional, op).map(|r| r.0)
    };
    let mut negative_ttl = None;
    if !answered || want_additional {
        let authorities =
            read(&mut decoder, header.counts.authorities, false).map_err(malformed)?;
        negative_ttl = authorities.iter().find_map(|record| match &record.data {
            RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
            _ => None,
        });
    }
    let additionals = if want_additional {
        read(&mut decoder, header.counts.additionals, true).map_err(malformed)?
    } else {
        Vec::new()
    };
    Ok(Response {
        metadata: header.metadata,
        records,
        negative_ttl,
        additionals,
    })
}

/// The answer section as mx-core's records, and whether one of them has the type asked.
/// Each record is read as hickory's `Record::read` reads it (owner name, type, class, TTL,
/// RDLENGTH, then the rdata through hickory's reader of that type, which must use exactly
/// RDLENGTH bytes); the rdata of types routing ignores is skipped, not parsed.
fn read_answers(
    decoder: &mut BinDecoder<'_>,
    count: u16,
    wanted: RecordType,
) -> Result<(Vec<Record>, bool), Failure> {
    let bad = |e: DecodeError| Failure::Malformed(e.to_string());
    let mut records = Vec::with_capacity(usize::from(count));
    let mut answered = false;
    for _ in 0..count {
        let owner = Name::read(decoder).map_err(bad)?;
        let rtype = RecordType::read(decoder).map_err(bad)?;
        if rtype == RecordType::OPT {
            if !owner.is_root() {
                return Err(bad(DecodeError::EdnsNameNotRoot(Box::new(owner))));
            }
            decoder.read_u16().map_err(bad)?;
        } else {
            DNSClass::read(decoder).map_err(bad)?;
        }
        let ttl = decoder.read_u32().map_err(bad)?.unverified(/*any u32 is valid*/);
        let length = decoder
            .read_u16()
            .map_err(bad)?
            .verify_unwrap(|u| usize::from(*u) <= decoder.len())
            .map_err(|u| {
                Failure::Malformed(format!(
                    "incorrect rdata length read: {} expected: {u}",
                    decoder.len()
                ))
            })?;
        let start = decoder.index();
        // RDLENGTH 0 is hickory's `RData::Update0`, which routing sees as another type.
        let data = match rtype {
            _ if length == 0 => RecordData::Other,
            RecordType::MX => {
                let mx = MX::read(decoder).map_err(bad)?;
                RecordData::Mx {
                    preference: mx.preference,
                    exchange: core_name(&mx.exchange),
                }
            }
            RecordType::A => RecordData::A(A::read(decoder).map_err(bad)?.0),
            RecordType::AAAA => RecordData::Aaaa(AAAA::read(decoder).map_err(bad)?.0),
            RecordType::CNAME => {
                RecordData::Cname(core_name(&CNAME::read(decoder).map_err(bad)?.0))
            }
            RecordType::ANY | RecordType::AXFR | RecordType::IXFR => {
                return Err(bad(DecodeError::UnknownRecordTypeValue(rtype.into())));
            }
            _ => {
                decoder.read_slice(usize::from(length)).map_err(bad)?;
                RecordData::Other
            }
        };
        let read = decoder.index() - start;
        if read != usize::from(length) {
            return Err(Failure::Malformed(format!(
                "incorrect rdata length read: {read} expected: {length}"
            )));
        }
        answered |= rtype == wanted;
        records.push(Record {
            name: core_name(&owner),
            ttl,
            data,
        });
    }
    Ok((records, answered))
}

/// Turn a matched response into an outcome. The answer section is taken whole, CNAME chain
/// included: an authoritative server puts the chain there itself, so, unlike the hickory
/// client, no extra CNAME query is needed (mx-core's chase asks for whatever the chain's end
/// still lacks).
pub fn classify(response: Response) -> Classified {
    if response.metadata.truncation {
        return Classified::Truncated;
    }
    let code = response.metadata.response_code;
    let outcome = match code {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(Answer {
            nxdomain: code == ResponseCode::NXDomain,
            records: response.records,
            negative_ttl: response.negative_ttl,
        }),
        ResponseCode::ServFail => Err(Failure::ServFail),
        ResponseCode::Refused => Err(Failure::Refused),
        other => Err(Failure::Malformed(format!("response code {other}"))),
    };
    Classified::Outcome(outcome)
}

/// `--use-additional`: the exchangers' addresses an authoritative MX answer volunteered in its
/// additional section, as ready outcomes for their A and AAAA questions. Only for an exchanger
/// with both families there: one family alone says nothing about the other (absent from the
/// section is not NODATA).
pub fn additional_addresses(response: &Response) -> Vec<(Question, Outcome)> {
    let metadata = &response.metadata;
    if !metadata.authoritative
        || metadata.truncation
        || metadata.response_code != ResponseCode::NoError
    {
        return Vec::new();
    }
    // Normalised once: compared with every exchanger's (normalised) name.
    let additionals: Vec<(String, &hickory_proto::rr::Record)> = response
        .additionals
        .iter()
        .map(|r| (core_name(&r.name), r))
        .collect();
    let mut seeds = Vec::new();
    for answer in &response.records {
        let RecordData::Mx { exchange: host, .. } = &answer.data else {
            continue;
        };
        if host.is_empty() {
            continue;
        }
        let of_type = |wanted: RecordType| -> Vec<Record> {
            additionals
                .iter()
                .filter(|(name, r)| r.record_type() == wanted && name == host)
                .map(|(_, r)| convert_record(r))
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

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// `wire_name` as it was before its fast path.
    fn parsed_wire_name(text: &str) -> Result<Name, String> {
        let mut name = Name::from_ascii(text).map_err(|e| e.to_string())?;
        name.set_fqdn(true);
        Ok(name)
    }

    fn question(text: &str) -> Question {
        Question {
            name: text.to_string(),
            qtype: QType::Mx,
        }
    }

    #[test]
    fn wire_names_with_and_without_the_fast_path() {
        let long_label = "a".repeat(64);
        let long_name = vec!["abcdefghij"; 26].join(".");
        for text in [
            "example.com",
            "Mx1.Example.COM.",
            "*.example",
            "_25._tcp.mx.example",
            "a-b.example",
            "-ab.example",
            "a\\.b.example",
            "a\\040b.example",
            "a..b",
            ".",
            "",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            let fast = wire_name(&question(text)).map_err(|_| ());
            let parsed = parsed_wire_name(text).map_err(|_| ());
            assert_eq!(fast, parsed, "{text}");
            if let (Ok(fast), Ok(parsed)) = (&fast, &parsed) {
                assert!(fast.eq_case(parsed), "{text}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_path_builds_what_from_ascii_builds(
            text in "[a-zA-Z0-9_*.\\\\ -]{0,40}",
        ) {
            let fast = wire_name(&question(&text)).map_err(|_| ());
            let parsed = parsed_wire_name(&text).map_err(|_| ());
            proptest::prop_assert_eq!(&fast, &parsed);
            if let (Ok(fast), Ok(parsed)) = (&fast, &parsed) {
                proptest::prop_assert!(fast.eq_case(parsed));
            }
        }
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

    /// `m` through the wire and the receive path's decoding, as an answer to its question.
    fn decode(m: &Message, qtype: QType, want_additional: bool) -> Response {
        let bytes = m.to_vec().unwrap();
        let (header, query, decoder) = decode_head(&bytes).unwrap();
        assert!(head_matches(
            &header.metadata,
            &query,
            m.metadata.id,
            query.name(),
            qtype
        ));
        decode_rest(header, decoder, qtype, want_additional).unwrap()
    }

    /// What the whole message, decoded by hickory and converted record by record as mx-dns
    /// does, says: what the lean decoding must agree with.
    fn reference(bytes: &[u8]) -> Classified {
        let message = Message::from_vec(bytes).unwrap();
        if message.metadata.truncation {
            return Classified::Truncated;
        }
        let code = message.metadata.response_code;
        Classified::Outcome(match code {
            ResponseCode::NoError | ResponseCode::NXDomain => Ok(Answer {
                nxdomain: code == ResponseCode::NXDomain,
                records: message.answers.iter().map(convert_record).collect(),
                negative_ttl: message.authorities.iter().find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                }),
            }),
            ResponseCode::ServFail => Err(Failure::ServFail),
            ResponseCode::Refused => Err(Failure::Refused),
            other => Err(Failure::Malformed(format!("response code {other}"))),
        })
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

    proptest::proptest! {
        #[test]
        fn any_query_is_the_bytes_of_the_whole_message(
            id in proptest::prelude::any::<u16>(),
            labels in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 1..60),
                0..4,
            ),
            qtype in proptest::sample::select(vec![QType::Mx, QType::A, QType::Aaaa]),
        ) {
            let mut name = Name::from_labels(labels.iter().map(|l| l.as_slice())).unwrap();
            name.set_fqdn(true);
            let expected = query_message(id, name.clone(), qtype).to_vec().unwrap();
            proptest::prop_assert_eq!(encode_query(id, &name, qtype).unwrap(), expected);
        }
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
                core_name(&wire),
                mx_core::normalize_dns_name(&wire.to_ascii()),
                "{text}"
            );
        }
        let q = Question::new("mx.example", QType::A);
        assert_eq!(wire_name(&q).unwrap(), name("mx.example."));
    }

    #[test]
    fn lean_decoding_agrees_with_the_whole_message() {
        let mut m = response_to(9, "d.example.", RecordType::MX);
        m.add_answer(rec(
            "D.Example.",
            300,
            RData::MX(MX::new(10, name("MX.d.example."))),
        ));
        m.add_answer(rec("d.example.", 300, RData::MX(MX::new(0, Name::root()))));
        m.add_answer(rec(
            "d.example.",
            30,
            RData::TXT(hickory_proto::rr::rdata::TXT::new(vec![
                "v=spf1 -all".into(),
            ])),
        ));
        m.add_additional(rec("mx.d.example.", 60, RData::A(A::new(192, 0, 2, 1))));
        let bytes = m.to_vec().unwrap();
        let lean = decode(&m, QType::Mx, false);
        assert!(lean.additionals.is_empty(), "additional section not read");
        assert_eq!(decode(&m, QType::Mx, true).additionals.len(), 1);
        assert_eq!(classify(lean), reference(&bytes));

        let mut chain = response_to(3, "alias.example.", RecordType::A);
        chain.add_answer(rec(
            "alias.example.",
            60,
            RData::CNAME(CNAME(name("host.example."))),
        ));
        chain.add_answer(rec("host.example.", 60, RData::A(A::new(192, 0, 2, 7))));
        chain.add_answer(rec(
            "host.example.",
            60,
            RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ));
        let soa = SOA::new(name("ns."), name("h."), 1, 1, 1, 1, 120);
        chain.add_authority(rec("example.", 600, RData::SOA(soa.clone())));
        let bytes = chain.to_vec().unwrap();
        let Classified::Outcome(Ok(answer)) = classify(decode(&chain, QType::A, false)) else {
            panic!("not an answer");
        };
        assert_eq!(answer.negative_ttl, None, "answered: authority not read");
        let Classified::Outcome(Ok(full)) = reference(&bytes) else {
            panic!("not an answer");
        };
        assert_eq!(answer.records, full.records);

        let mut negative = response_to(9, "n.example.", RecordType::MX);
        negative.metadata.response_code = ResponseCode::NXDomain;
        negative.add_authority(rec(".", 600, RData::SOA(soa)));
        let bytes = negative.to_vec().unwrap();
        assert_eq!(
            classify(decode(&negative, QType::Mx, false)),
            reference(&bytes)
        );
    }

    #[test]
    fn rdata_must_fill_its_length() {
        let mut m = response_to(5, "x.example.", RecordType::A);
        m.add_answer(rec("x.example.", 60, RData::A(A::new(192, 0, 2, 1))));
        let mut bytes = m.to_vec().unwrap();
        // The A record's RDLENGTH (4), the two bytes before its address: now 5, one byte
        // more than the datagram holds.
        let at = bytes.len() - 6;
        assert_eq!(bytes[at..at + 2], [0, 4]);
        bytes[at + 1] = 5;
        let (header, _, decoder) = decode_head(&bytes).unwrap();
        assert!(matches!(
            decode_rest(header, decoder, QType::A, false),
            Err(Failure::Malformed(_))
        ));
        bytes[at + 1] = 3;
        let (header, _, decoder) = decode_head(&bytes).unwrap();
        assert!(matches!(
            decode_rest(header, decoder, QType::A, false),
            Err(Failure::Malformed(_))
        ));
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
        let Classified::Outcome(Ok(answer)) = classify(decode(&m, QType::Mx, false)) else {
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
        assert_eq!(
            classify(decode(&m, QType::Mx, false)),
            Classified::Outcome(Err(Failure::ServFail))
        );
        m.metadata.response_code = ResponseCode::Refused;
        assert_eq!(
            classify(decode(&m, QType::Mx, false)),
            Classified::Outcome(Err(Failure::Refused))
        );
        m.metadata.response_code = ResponseCode::FormErr;
        assert!(matches!(
            classify(decode(&m, QType::Mx, false)),
            Classified::Outcome(Err(Failure::Malformed(_)))
        ));
        m.metadata.truncation = true;
        assert_eq!(
            classify(decode(&m, QType::Mx, false)),
            Classified::Truncated
        );
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
        let seeds = additional_addresses(&decode(&m, QType::Mx, true));
        let questions: Vec<String> = seeds.iter().map(|(q, _)| q.to_string()).collect();
        assert_eq!(questions, ["mx1.p.example A", "mx1.p.example AAAA"]);
        m.metadata.authoritative = false;
        assert!(
            additional_addresses(&decode(&m, QType::Mx, true)).is_empty(),
            "only from the authority"
        );
    }
}
