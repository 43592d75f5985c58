//! Zone text parsing: zones, faults, zone files and error positions.

use std::time::Duration;

use mx_lab::{Fault, LabError, ZoneSet};

fn parse_err(text: &str) -> (usize, String) {
    match ZoneSet::parse(text, "lab.zone", None) {
        Err(LabError::Parse {
            label,
            line,
            message,
        }) => {
            assert_eq!(label, "lab.zone");
            (line, message)
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

const HEAD: &str = "$ORIGIN example.com.\n\
                    $TTL 300\n\
                    @ IN SOA ns1 hostmaster ( 1 ; serial\n\
                    \t3600 600 86400 60 )\n\
                    ; a comment line\n\
                    $FAULT mx1 servfail\n\
                    \n";
// HEAD is 7 lines; the next line is line 8.

#[test]
fn bad_record_type_has_its_line() {
    let (line, message) = parse_err(&format!("{HEAD}mx1 IN A 192.0.2.1\nmx2 IN FOO 192.0.2.2\n"));
    assert_eq!(line, 9);
    assert!(message.contains("unknown record type \"FOO\""), "{message}");
}

#[test]
fn bad_rdata_has_its_line() {
    let (line, message) = parse_err(&format!(
        "{HEAD}@ IN MX 10 mx1\n\n@ IN MX abc host.\nmx1 IN A 192.0.2.1\n"
    ));
    assert_eq!(line, 10);
    assert!(message.contains("MX"), "{message}");
}

#[test]
fn bad_ttl_has_its_line() {
    let (line, message) = parse_err(&format!("{HEAD}mx1 1x IN A 192.0.2.1\n"));
    assert_eq!(line, 8);
    assert!(message.contains("invalid TTL \"1x\""), "{message}");
    let (line, message) = parse_err("$TTL 1y\n");
    assert_eq!(line, 1);
    assert!(message.contains("TTL"), "{message}");
}

#[test]
fn bad_address_has_its_line() {
    let (line, message) = parse_err(&format!("{HEAD}mx1 IN A 192.0.2.300\n"));
    assert_eq!(line, 8);
    assert!(message.contains("address"), "{message}");
    // A missing TTL is no error (3600 is assumed), so a later bad line still gets its number.
    let (line, _) =
        parse_err("\n; no ttl anywhere\na.example. IN A 192.0.2.1\nb.example. IN A x\n");
    assert_eq!(line, 4);
}

#[test]
fn unclosed_parenthesis_points_at_its_entry() {
    let (line, message) =
        parse_err("a.example. 60 IN A 192.0.2.1\nb.example. 60 IN SOA ns h ( 1 2\n 3 4 5\n");
    assert_eq!(line, 2);
    assert!(message.contains("syntax error"), "{message}");
}

#[test]
fn display_is_label_line_message() {
    let err = ZoneSet::parse("\n\nx 60 IN BOGUS 1\n", "examples/lab.zone", None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "examples/lab.zone:3: unknown record type \"BOGUS\""
    );
}

#[test]
fn malformed_fault_lines_have_their_lines() {
    for (text, needle) in [
        ("$FAULT mx1 sometimes\n", "unknown fault kind"),
        ("$FAULT mx1\n", "malformed $FAULT"),
        ("$FAULT mx1 servfail AAA\n", "unknown record type"),
        ("$FAULT mx1 delay:soon\n", "unknown fault kind"),
        ("$FAULT mx1 servfail A extra\n", "malformed $FAULT"),
    ] {
        let (line, message) = parse_err(&format!("{HEAD}{text}"));
        assert_eq!(line, 8, "{text}");
        assert!(message.contains(needle), "{text}: {message}");
    }
}

#[test]
fn records_outside_every_zone_are_named() {
    let (line, message) = parse_err(&format!(
        "{HEAD}mx1 IN A 192.0.2.1\nmx.example.net. 60 IN A 192.0.2.2\n"
    ));
    assert_eq!(line, 9);
    assert!(message.contains("mx.example.net."), "{message}");
}

#[test]
fn cname_must_be_alone() {
    let (line, message) = parse_err(&format!(
        "{HEAD}www IN A 192.0.2.1\nother IN A 192.0.2.3\nwww IN CNAME other\n"
    ));
    assert_eq!(line, 10);
    assert!(message.contains("CNAME"), "{message}");
}

#[test]
fn only_class_in_and_no_include() {
    let (line, message) = parse_err(&format!("{HEAD}txt CH TXT \"hi\"\n"));
    assert_eq!(line, 8);
    assert!(message.contains("class IN"), "{message}");
    let (line, message) = parse_err(&format!("{HEAD}$INCLUDE other.zone\n"));
    assert_eq!(line, 8);
    assert!(message.contains("$INCLUDE"), "{message}");
}

#[test]
fn overlong_txt_string_is_rejected() {
    let long = "x".repeat(256);
    let (line, message) = parse_err(&format!("{HEAD}t IN TXT \"{long}\"\n"));
    assert_eq!(line, 8);
    assert!(message.contains("255"), "{message}");
}

#[test]
fn apexes_one_per_soa() {
    let zones = ZoneSet::parse(
        &format!("{HEAD}mx1 IN A 192.0.2.1\n$ORIGIN Sub.Example.COM.\n@ 60 IN SOA ns h 1 2 3 4 5\nwww 60 IN A 192.0.2.4\n"),
        "lab.zone",
        None,
    )
    .unwrap();
    let mut apexes = zones.apexes();
    apexes.sort();
    assert_eq!(
        apexes,
        vec!["example.com.".to_string(), "sub.example.com.".to_string()]
    );
}

#[test]
fn no_soa_means_one_root_zone() {
    let zones = ZoneSet::parse("mx1.example. 60 IN A 192.0.2.1\n", "<inline>", None).unwrap();
    assert_eq!(zones.apexes(), vec![".".to_string()]);
    let files = zones.zone_files();
    assert_eq!(files.len(), 1);
    let (apex, text) = &files[0];
    assert_eq!(apex, ".");
    assert!(
        text.contains(". 3600 IN SOA ns.lab. hostmaster.lab. 1 3600 600 86400 300"),
        "{text}"
    );
    assert!(text.contains(". 3600 IN NS ns.lab."), "{text}");
}

#[test]
fn origin_argument_anchors_relative_names() {
    let zones = ZoneSet::parse(
        "@ 60 IN SOA ns h 1 2 3 4 5\nmx 60 IN A 192.0.2.1\n$FAULT mx timeout\n",
        "<inline>",
        Some("Lab.Test"),
    )
    .unwrap();
    assert_eq!(zones.apexes(), vec!["lab.test.".to_string()]);
    assert_eq!(
        zones.faults(),
        vec![("mx.lab.test.".to_string(), None, Fault::Timeout)]
    );
    assert!(matches!(
        ZoneSet::parse("", "<inline>", Some("bad..name")),
        Err(LabError::Origin { .. })
    ));
}

#[test]
fn faults_resolve_owners_against_the_origin_in_force() {
    let zones = ZoneSet::parse(
        "$ORIGIN a.test.\n\
         @ 60 IN SOA ns h 1 2 3 4 5\n\
         $FAULT mx servfail aaaa\n\
         \t$FAULT @ refused\n\
         $ORIGIN b.test.\n\
         @ 60 IN SOA ns h 1 2 3 4 5\n\
         $FAULT MX delay:250 ; slow on purpose\n\
         $fault abs.example. truncate MX\n",
        "<inline>",
        None,
    )
    .unwrap();
    assert_eq!(
        zones.faults(),
        vec![
            (
                "mx.a.test.".to_string(),
                Some("AAAA".to_string()),
                Fault::ServFail
            ),
            ("a.test.".to_string(), None, Fault::Refused),
            (
                "mx.b.test.".to_string(),
                None,
                Fault::Delay(Duration::from_millis(250))
            ),
            (
                "abs.example.".to_string(),
                Some("MX".to_string()),
                Fault::TruncateThenRefuseTcp
            ),
        ]
    );
}

#[test]
fn zone_files_reparse_to_the_same_zones() {
    let text = format!(
        "{HEAD}\
         @ IN MX 10 mx1\n\
         mx1 IN A 192.0.2.1\n\
         mx1 IN AAAA 2001:db8::1\n\
         www IN CNAME mx1\n\
         _25._tcp.mx1 IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\
         _mta-sts IN TXT \"v=STSv1; id=20240101\" \"second \\\"quoted\\\" part\"\n\
         _sip._tcp IN SRV 10 5 5060 sip\n\
         @ IN CAA 0 issue \"ca.example.net\"\n\
         $ORIGIN other.test.\n\
         @ 60 IN SOA ns.example.com. h.example.com. 9 2 3 4 5\n\
         mail 60 IN A 198.51.100.25\n"
    );
    let zones = ZoneSet::parse(&text, "lab.zone", None).unwrap();
    let files = zones.zone_files();
    assert_eq!(files.len(), 2);
    for (apex, file) in &files {
        assert!(!file.contains("$FAULT"), "{file}");
        assert!(!file.contains("$ORIGIN"), "absolute names only: {file}");
        let again = ZoneSet::parse(file, apex, None).unwrap_or_else(|e| panic!("{e}\n{file}"));
        assert_eq!(again.apexes(), vec![apex.clone()]);
        // Rendering is a fixed point: same records, same text.
        assert_eq!(&again.zone_files()[0].1, file);
    }
    let other = &files.iter().find(|(a, _)| a == "other.test.").unwrap().1;
    assert!(
        other.contains("other.test. 60 IN NS ns.lab."),
        "synthesized NS: {other}"
    );
    let main = &files.iter().find(|(a, _)| a == "example.com.").unwrap().1;
    assert!(main.starts_with("; zone example.com."), "{main}");
    assert!(
        main.lines().nth(1).unwrap().contains(" IN SOA "),
        "SOA first: {main}"
    );
    assert!(
        main.contains("\"v=STSv1; id=20240101\" \"second \\\"quoted\\\" part\""),
        "{main}"
    );
    let mut apexes = zones.apexes();
    apexes.sort();
    let mut reparsed: Vec<String> = files
        .iter()
        .flat_map(|(a, f)| ZoneSet::parse(f, a, None).unwrap().apexes())
        .collect();
    reparsed.sort();
    assert_eq!(apexes, reparsed);
}

#[test]
fn load_reads_a_file_and_labels_errors_with_its_path() {
    let dir = std::env::temp_dir().join(format!("mx-lab-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.zone");
    std::fs::write(&good, "x.example. 60 IN A 192.0.2.1\n").unwrap();
    assert_eq!(
        ZoneSet::load(&good, None).unwrap().apexes(),
        vec![".".to_string()]
    );

    let bad = dir.join("bad.zone");
    std::fs::write(
        &bad,
        "x.example. 60 IN A 192.0.2.1\n\nx.example. 60 IN MX ten mx.\n",
    )
    .unwrap();
    let err = ZoneSet::load(&bad, None).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:3: ", bad.display())), "{err}");

    let missing = dir.join("missing.zone");
    assert!(matches!(
        ZoneSet::load(&missing, None),
        Err(LabError::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn records_without_ttl_and_no_ttl_directive_get_3600() {
    let zones = mx_lab::ZoneSet::parse("a.example. MX 10 mx.a.example.\n", "<inline>", None)
        .expect("a zone without $TTL loads");
    let (_, text) = &zones.zone_files()[0];
    assert!(
        text.contains("a.example. 3600 IN MX 10 mx.a.example."),
        "default TTL not applied:\n{text}"
    );
}

#[test]
fn zone_files_write_a_labels() {
    let zones = mx_lab::ZoneSet::parse(
        "bücher.example. MX 10 mx.bücher.example.\n",
        "<inline>",
        None,
    );
    // Either the parser takes U-labels and we write A-labels, or it refuses them: never
    // U-labels in the output.
    if let Ok(zones) = zones {
        for (_, text) in zones.zone_files() {
            assert!(text.is_ascii(), "non-ASCII zone output:\n{text}");
        }
    }
}
