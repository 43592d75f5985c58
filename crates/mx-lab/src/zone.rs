//! Zone text: `$FAULT` pre-scan, hickory's master-file parser, split into zones by SOA apex.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use hickory_proto::ProtoError;
use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_proto::serialize::binary::DecodeError;
use hickory_proto::serialize::txt::{ParseError, Parser};

use crate::LabError;
use crate::faults::{Fault, normalize_name, parse_rtype, rtype_name};

type Records = BTreeMap<RrKey, RecordSet>;

/// Name server used in synthesized SOA/NS records.
const LAB_NS: &str = "ns.lab.";
const LAB_HOSTMASTER: &str = "hostmaster.lab.";
/// TTL of synthesized records. The root SOA's minimum (300) is the negative-caching TTL.
const SYNTH_TTL: u32 = 3600;

/// Zone text parsed into one or more zones (one per SOA apex) plus declared faults.
#[derive(Clone, Debug)]
pub struct ZoneSet {
    label: String,
    zones: Vec<Zone>,
    faults: Vec<(String, Option<String>, Fault)>,
}

#[derive(Clone, Debug)]
pub(crate) struct Zone {
    pub(crate) apex: Name,
    pub(crate) records: Records,
}

impl ZoneSet {
    /// Parses zone text. `label` is used in error messages (a file path, or `"<inline>"`).
    /// `origin` defaults to the root `"."`.
    pub fn parse(text: &str, label: &str, origin: Option<&str>) -> Result<ZoneSet, LabError> {
        let origin = parse_origin(origin)?;
        let scan = prescan(text, label, &origin)?;
        let entries = split_entries(&scan.text);

        let records = match parse_records(&scan.text, &origin) {
            Ok(records) => records,
            Err(_) => {
                let check = |prefix: &str| {
                    parse_records(prefix, &origin)
                        .map(drop)
                        .map_err(Failure::Parse)
                };
                return Err(locate(&scan.text, &entries, label, check));
            }
        };

        let soa_owners: Vec<Name> = records
            .keys()
            .filter(|k| k.record_type == RecordType::SOA)
            .map(|k| Name::from(&k.name))
            .collect();
        let synthesize_root = soa_owners.is_empty();
        let apexes = if synthesize_root {
            vec![Name::root()]
        } else {
            soa_owners
        };

        if validate(&records, &apexes).is_err() {
            let check = |prefix: &str| {
                let records = parse_records(prefix, &origin).map_err(Failure::Parse)?;
                validate(&records, &apexes).map_err(Failure::Rule)
            };
            return Err(locate(&scan.text, &entries, label, check));
        }

        let mut zones: Vec<Zone> = apexes
            .iter()
            .map(|apex| Zone {
                apex: apex.to_lowercase(),
                records: Records::new(),
            })
            .collect();
        for (key, rrset) in records {
            let name = Name::from(&key.name);
            // validate() guarantees every owner is under some apex.
            if let Some(zone) = zones
                .iter_mut()
                .filter(|z| z.apex.zone_of(&name))
                .max_by_key(|z| z.apex.num_labels())
            {
                zone.records.insert(key, rrset);
            }
        }

        for zone in &mut zones {
            let apex_key = |t| RrKey::new(LowerName::new(&zone.apex), t);
            if synthesize_root {
                let soa = SOA::new(
                    lab_name(LAB_NS),
                    lab_name(LAB_HOSTMASTER),
                    1,
                    3600,
                    600,
                    86400,
                    300,
                );
                let record = Record::from_rdata(zone.apex.clone(), SYNTH_TTL, RData::SOA(soa));
                zone.records
                    .insert(apex_key(RecordType::SOA), RecordSet::from(record));
            }
            // Knot refuses a zone without apex NS; hickory doesn't care, but both must see the
            // same zone.
            if !zone.records.contains_key(&apex_key(RecordType::NS)) {
                let ttl = zone
                    .records
                    .get(&apex_key(RecordType::SOA))
                    .map_or(SYNTH_TTL, RecordSet::ttl);
                let record =
                    Record::from_rdata(zone.apex.clone(), ttl, RData::NS(NS(lab_name(LAB_NS))));
                zone.records
                    .insert(apex_key(RecordType::NS), RecordSet::from(record));
            }
        }

        Ok(ZoneSet {
            label: label.to_owned(),
            zones,
            faults: scan.faults,
        })
    }

    /// Reads and parses a zone file; the path is the label in error messages.
    pub fn load(path: &Path, origin: Option<&str>) -> Result<ZoneSet, LabError> {
        let text = std::fs::read_to_string(path).map_err(|source| LabError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), origin)
    }

    /// Apex names of the zones, absolute, lower-case, with trailing dot (root is ".").
    pub fn apexes(&self) -> Vec<String> {
        self.zones.iter().map(|z| z.apex.to_ascii()).collect()
    }

    /// One (apex, zone file text) per zone, in RFC 1035 master-file syntax with absolute names,
    /// for feeding another authoritative server (Knot DNS). `$FAULT` lines are not carried over
    /// and the synthesized SOA/NS are included.
    pub fn zone_files(&self) -> Vec<(String, String)> {
        self.zones
            .iter()
            .map(|zone| (zone.apex.to_ascii(), zone_file(zone)))
            .collect()
    }

    /// Owner names holding records of type `rtype` (e.g. `"MX"`), lower-case without the
    /// trailing dot, sorted; empty for an unknown type.
    pub fn owners_of(&self, rtype: &str) -> Vec<String> {
        let Ok(code) = parse_rtype(rtype) else {
            return Vec::new();
        };
        let mut owners: Vec<String> = self
            .zones
            .iter()
            .flat_map(|z| z.records.keys())
            .filter(|k| u16::from(k.record_type) == code)
            .map(|k| normalize_name(&Name::from(&k.name).to_ascii()))
            .map(|n| n.trim_end_matches('.').to_string())
            .collect();
        owners.sort();
        owners.dedup();
        owners
    }

    /// Every CNAME in the zones as (owner, target), lower-case without trailing dots.
    pub fn cnames(&self) -> Vec<(String, String)> {
        let plain = |name: &Name| {
            normalize_name(&name.to_ascii())
                .trim_end_matches('.')
                .to_string()
        };
        self.zones
            .iter()
            .flat_map(|z| z.records.values())
            .flat_map(|set| set.records_without_rrsigs())
            .filter_map(|r| match &r.data {
                RData::CNAME(target) => Some((plain(&r.name), plain(&target.0))),
                _ => None,
            })
            .collect()
    }

    /// Faults declared with `$FAULT` in the text: (owner, absolute lower-case; record type or
    /// `None` for every type; fault).
    pub fn faults(&self) -> Vec<(String, Option<String>, Fault)> {
        self.faults.clone()
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn zones(&self) -> &[Zone] {
        &self.zones
    }
}

fn lab_name(name: &str) -> Name {
    Name::from_ascii(name).unwrap_or_else(|_| Name::root())
}

fn parse_origin(origin: Option<&str>) -> Result<Name, LabError> {
    let Some(text) = origin else {
        return Ok(Name::root());
    };
    let mut name = Name::parse(text.trim(), None).map_err(|e| LabError::Origin {
        origin: text.to_owned(),
        message: e.to_string(),
    })?;
    name.set_fqdn(true);
    Ok(name)
}

/// TTL of records that give none when no `$TTL` is in force: a lab zone of a few lines
/// should not need the directive. Prepending it leaves error line numbers alone, because
/// `locate` counts lines in the text as the user wrote it.
const DEFAULT_TTL_LINE: &str = "$TTL 3600\n";

fn parse_records(text: &str, origin: &Name) -> Result<Records, ParseError> {
    let has_ttl = text.lines().any(|line| {
        line.trim_start()
            .get(..4)
            .is_some_and(|d| d.eq_ignore_ascii_case("$ttl"))
    });
    let text = if has_ttl {
        text.to_owned()
    } else {
        format!("{DEFAULT_TTL_LINE}{text}")
    };
    Parser::new(&text, None, Some(origin.clone()))
        .parse()
        .map(|(_, records)| records)
}

/// Checks the lab's rules that hickory's parser does not: only class IN, every owner inside a
/// zone, CNAME alone at its name, character strings that fit the wire.
fn validate(records: &Records, apexes: &[Name]) -> Result<(), String> {
    let mut prev: Option<(&LowerName, RecordType)> = None;
    for (key, rrset) in records {
        let name = Name::from(&key.name);
        if !apexes.iter().any(|apex| apex.zone_of(&name)) {
            let list: Vec<String> = apexes.iter().map(ToString::to_string).collect();
            return Err(format!(
                "{name} is outside every zone in this text (zone apexes: {})",
                list.join(", ")
            ));
        }
        for record in rrset.records_without_rrsigs() {
            if record.dns_class != DNSClass::IN {
                return Err(format!(
                    "{name} {}: only class IN is supported, not {}",
                    record.record_type(),
                    record.dns_class
                ));
            }
            let strings: &[Box<[u8]>] = match &record.data {
                RData::TXT(txt) => &txt.txt_data,
                _ => &[],
            };
            if strings.iter().any(|s| s.len() > 255) {
                return Err(format!(
                    "{name} TXT: a character string is longer than 255 bytes; split it into several quoted strings"
                ));
            }
        }
        // Keys are sorted by name, so all types of one name are adjacent, and a CNAME sharing
        // its name with anything has a neighbour of the same name.
        if let Some((prev_name, prev_type)) = prev
            && prev_name == &key.name
            && (prev_type == RecordType::CNAME || key.record_type == RecordType::CNAME)
        {
            return Err(format!(
                "{name} has a CNAME and other records; a CNAME must be alone at its name"
            ));
        }
        prev = Some((&key.name, key.record_type));
    }
    Ok(())
}

/// Why a prefix of the text fails: hickory's parser, or one of our rules.
enum Failure {
    Parse(ParseError),
    Rule(String),
}

/// Finds the first entry at which the text stops passing `check`, by bisecting over prefixes
/// that end on entry boundaries (hickory's parser reports no positions). Prefix checks are
/// monotonic: the parser is a single forward pass and validation only sees records accumulate.
fn locate(
    text: &str,
    entries: &[Entry],
    label: &str,
    check: impl Fn(&str) -> Result<(), Failure>,
) -> LabError {
    let prefix = |k: usize| {
        if k == 0 {
            ""
        } else {
            &text[..entries[k - 1].end]
        }
    };
    let (mut lo, mut hi) = (0, entries.len());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if check(prefix(mid)).is_err() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let entry = hi.checked_sub(1).and_then(|i| entries.get(i));
    let entry_text = entry.map_or("", |e| &text[e.start..e.end]);
    let message = match check(prefix(hi)) {
        Err(Failure::Parse(error)) => describe(&error, entry_text),
        Err(Failure::Rule(message)) => message,
        Ok(()) => "invalid zone text".to_owned(),
    };
    LabError::Parse {
        label: label.to_owned(),
        line: entry.map_or(1, |e| e.line),
        message,
    }
}

/// Turns hickory's parse errors into messages a person editing a zone file can act on, using
/// the failing entry's text to name the record type and restore the user's spelling.
fn describe(error: &ParseError, entry_text: &str) -> String {
    let words = entry_words(entry_text);
    // hickory upper-cases a word before trying it as a type; show it as written.
    let as_written = |word: &str| {
        words
            .iter()
            .find(|w| w.eq_ignore_ascii_case(word))
            .map_or_else(|| word.to_owned(), |w| (*w).to_owned())
    };
    match error {
        // After the owner, hickory tries each word as TTL, then class, then type, and reports
        // only the type failure; a word starting with a digit was meant as a TTL.
        ParseError::Proto(ProtoError::Decode(DecodeError::UnknownRecordTypeStr(word))) => {
            let word = as_written(word);
            if word.starts_with(|c: char| c.is_ascii_digit()) {
                format!("invalid TTL {word:?}")
            } else {
                format!("unknown record type {word:?}")
            }
        }
        ParseError::ParseTime(t) => format!("invalid TTL {:?}", as_written(t)),
        ParseError::UnsupportedRecordType(t) => {
            format!("record type {t} is not supported in lab zone text")
        }
        ParseError::Lexer(e) => format!("syntax error: {e}"),
        ParseError::UnexpectedToken(t) => format!("syntax error: unexpected {t:?}"),
        other => {
            let detail = match other {
                ParseError::ParseInt(e) => format!("invalid number ({e})"),
                ParseError::AddrParse(e) => format!("invalid address ({e})"),
                ParseError::MissingToken(t) => format!("missing {t}"),
                other => other.to_string(),
            };
            match record_type_word(&words) {
                Some(rtype) => format!("bad {rtype} record data: {detail}"),
                None => detail,
            }
        }
    }
}

/// The words of an entry, without comments or parentheses; a leading blank (inherited owner)
/// becomes an empty first word so that owners are always `words[0]`.
fn entry_words(entry_text: &str) -> Vec<&str> {
    let mut words: Vec<&str> = Vec::new();
    if entry_text.starts_with([' ', '\t']) {
        words.push("");
    }
    for line in entry_text.lines() {
        let content = line.split(';').next().unwrap_or_default();
        words.extend(
            content
                .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
                .filter(|w| !w.is_empty()),
        );
    }
    words
}

/// The record type of an entry: the first known type mnemonic after the owner.
fn record_type_word(words: &[&str]) -> Option<String> {
    words
        .iter()
        .skip(1)
        .map(|w| w.to_ascii_uppercase())
        .find(|w| w.parse::<RecordType>().is_ok())
}

/// One entry of zone text: a line, or several lines joined by parentheses.
#[derive(Clone, Copy, Debug)]
struct Entry {
    start: usize,
    /// Byte offset just past the entry's final newline (or the end of the text).
    end: usize,
    /// 1-based line on which the entry starts.
    line: usize,
}

/// Splits text into entries following the same quoting/comment/parenthesis rules as hickory's
/// lexer, so that entry boundaries are places where its parser is between records.
fn split_entries(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    let (mut start, mut start_line, mut line) = (0, 1, 1);
    let (mut in_list, mut in_quote, mut escape, mut comment) = (false, false, false, false);
    let mut token_start = true;
    for (i, c) in text.char_indices() {
        if c == '\n' {
            line += 1;
            comment = false;
            escape = false;
            token_start = true;
            if !in_list && !in_quote {
                entries.push(Entry {
                    start,
                    end: i + 1,
                    line: start_line,
                });
                start = i + 1;
                start_line = line;
            }
            continue;
        }
        if comment {
            continue;
        }
        if in_quote {
            if escape {
                escape = false;
            } else if c == '\\' {
                escape = true;
            } else if c == '"' {
                in_quote = false;
                token_start = true;
            }
            continue;
        }
        if in_list {
            match c {
                ';' => comment = true,
                ')' => {
                    in_list = false;
                    token_start = true;
                }
                _ => {}
            }
            continue;
        }
        match c {
            ';' => comment = true,
            '(' if token_start => in_list = true,
            '"' if token_start => in_quote = true,
            _ => token_start = c.is_whitespace(),
        }
    }
    if start < text.len() {
        entries.push(Entry {
            start,
            end: text.len(),
            line: start_line,
        });
    }
    entries
}

struct Scan {
    /// The text with `$FAULT` entries blanked (newlines kept, so line numbers stay right).
    text: String,
    faults: Vec<(String, Option<String>, Fault)>,
}

/// Records `$FAULT` directives (resolving owners against the `$ORIGIN` in force) and blanks
/// them out, since hickory's lexer rejects unknown `$` directives.
fn prescan(text: &str, label: &str, origin: &Name) -> Result<Scan, LabError> {
    let mut out = String::with_capacity(text.len());
    let mut faults = Vec::new();
    let mut origin = origin.clone();
    let mut copied = 0;
    for entry in split_entries(text) {
        let raw = &text[entry.start..entry.end];
        // hickory only knows column-0 directives, but an indented $FAULT is plainly meant.
        if !raw.trim_start().starts_with('$') {
            continue;
        }
        let content = raw.split(';').next().unwrap_or_default();
        let words: Vec<&str> = content.split_whitespace().collect();
        let directive = words
            .first()
            .map(|w| w.to_ascii_uppercase())
            .unwrap_or_default();
        let error = |message: String| LabError::Parse {
            label: label.to_owned(),
            line: entry.line,
            message,
        };
        match directive.as_str() {
            "$ORIGIN" => {
                // Mirrors hickory: the $ORIGIN argument is taken as absolute. A bad one is
                // reported by the parser, with its line.
                if let Some(Ok(mut name)) = words.get(1).map(|w| Name::parse(w, None)) {
                    name.set_fqdn(true);
                    origin = name;
                }
            }
            "$INCLUDE" => {
                return Err(error(
                    "$INCLUDE is not supported in lab zone text".to_owned(),
                ));
            }
            "$FAULT" => {
                faults.push(parse_fault(&words[1..], &origin).map_err(error)?);
                out.push_str(&text[copied..entry.start]);
                out.extend(raw.chars().filter(|&c| c == '\n' || c == '\r'));
                copied = entry.end;
            }
            _ => {}
        }
    }
    out.push_str(&text[copied..]);
    Ok(Scan { text: out, faults })
}

fn parse_fault(args: &[&str], origin: &Name) -> Result<(String, Option<String>, Fault), String> {
    const USAGE: &str = "expected `$FAULT <owner> <servfail|refused|timeout|truncate|delay:MS|drop:PERCENT> [<type>]`";
    if !(2..=3).contains(&args.len()) || args.iter().any(|a| a.contains(['(', ')'])) {
        return Err(format!("malformed $FAULT line: {USAGE}"));
    }
    let owner = if args[0] == "@" {
        origin.clone()
    } else {
        let mut name = Name::parse(args[0], Some(origin))
            .map_err(|e| format!("$FAULT owner {:?}: {e}", args[0]))?;
        name.set_fqdn(true);
        name
    };
    let fault = Fault::parse(args[1])
        .ok_or_else(|| format!("unknown fault kind {:?}: {USAGE}", args[1]))?;
    let rtype = match args.get(2) {
        Some(t) => Some(rtype_name(
            parse_rtype(t).map_err(|e| format!("$FAULT: {e}"))?,
        )),
        None => None,
    };
    Ok((normalize_name(&owner.to_string()), rtype, fault))
}

/// Renders one zone as master-file text: SOA first, then apex NS, then the rest in canonical
/// order, every owner absolute.
fn zone_file(zone: &Zone) -> String {
    let mut out = format!("; zone {} generated by mx-lab\n", zone.apex.to_ascii());
    let apex = LowerName::new(&zone.apex);
    let first = [RecordType::SOA, RecordType::NS];
    let leading = first
        .iter()
        .filter_map(|&t| zone.records.get(&RrKey::new(apex.clone(), t)));
    let rest = zone
        .records
        .iter()
        .filter(|(k, _)| !(k.name == apex && first.contains(&k.record_type)))
        .map(|(_, rrset)| rrset);
    for rrset in leading.chain(rest) {
        for record in rrset.records_without_rrsigs() {
            let _ = writeln!(
                out,
                "{} {} IN {} {}",
                record.name.to_ascii(),
                record.ttl,
                record.record_type(),
                rdata_text(&record.data)
            );
        }
    }
    out
}

/// hickory's `Display` for RData is presentation format except for character strings, which it
/// prints unquoted; those are quoted here.
fn rdata_text(data: &RData) -> String {
    match data {
        RData::TXT(txt) if txt.txt_data.is_empty() => "\"\"".to_owned(),
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| quote(s))
            .collect::<Vec<_>>()
            .join(" "),
        RData::HINFO(h) => format!("{} {}", quote(&h.cpu), quote(&h.os)),
        // Names in RDATA go out as A-labels: Display would print U-labels, which other
        // servers (Knot) rightly refuse in a master file.
        RData::MX(mx) => format!("{} {}", mx.preference, mx.exchange.to_ascii()),
        RData::CNAME(cname) => cname.0.to_ascii(),
        RData::NS(ns) => ns.0.to_ascii(),
        RData::PTR(ptr) => ptr.0.to_ascii(),
        RData::SOA(soa) => format!(
            "{} {} {} {} {} {} {}",
            soa.mname.to_ascii(),
            soa.rname.to_ascii(),
            soa.serial,
            soa.refresh,
            soa.retry,
            soa.expire,
            soa.minimum
        ),
        other => other.to_string(),
    }
}

/// RFC 1035 quoted character string: `"` and `\` escaped, control and non-UTF-8 bytes as `\DDD`.
fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c if c.is_control() && c.is_ascii() => {
                    let _ = write!(out, "\\{:03}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\{b:03}");
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_parentheses_and_quotes() {
        let text = "a 1 IN TXT \"x ( y\"\n@ SOA a b (\n 1 2 ; )\n 3 4 5 )\nb A 1.2.3.4";
        let lines: Vec<usize> = split_entries(text).iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 2, 5]);
    }
}
