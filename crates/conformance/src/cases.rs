//! The table. Zones with no SOA are served as part of a synthesized root zone (negative TTL
//! 300), so every name not listed gets an authoritative NXDOMAIN.

use mx_core::Code::*;
use mx_core::{IpStrategy, StaticRoute, Status};

use crate::{Case, case};

const SEED_ZONE: &str = "
example.com.            45000 IN MX 10 mailhost1.example.com.
example.com.            45000 IN MX 20 mailhost2.example.com.
mailhost1.example.com.  3600 IN A    127.0.0.11
mailhost1.example.com.  3600 IN AAAA ::1
mailhost2.example.com.  3600 IN A    127.0.0.12
mailhost2.example.com.  3600 IN AAAA ::1
";

const DUAL_STACK: &str = "
dual.example.     IN MX 10 mx.dual.example.
mx.dual.example.  IN A    127.0.0.1
mx.dual.example.  IN A    127.0.0.2
mx.dual.example.  IN AAAA ::1
mx.dual.example.  IN AAAA ::ffff:127.0.0.3
";

pub fn cases() -> Vec<Case> {
    vec![
        // --- Step 1: normalisation ------------------------------------------------------
        Case {
            domain: Some("xn--bcher-kva.example"),
            attempts: &["10 mx.xn--bcher-kva.example 127.0.0.5:25"],
            codes: &[MxTargetPrivateAddress],
            ..case(
                "step_1_idna_and_case_folding",
                "User@Bücher.EXAMPLE.",
                "xn--bcher-kva.example. MX 10 mx.xn--bcher-kva.example.
                 mx.xn--bcher-kva.example. A 127.0.0.5",
            )
        },
        Case {
            domain: Some("[127.0.0.9]"),
            attempts: &["0 [127.0.0.9] 127.0.0.9:25"],
            codes: &[DomainLiteral],
            ..case("step_1_domain_literal_skips_dns", "user@[127.0.0.9]", "")
        },
        Case {
            domain: Some("[IPv6:::1]"),
            attempts: &["0 [IPv6:::1] [::1]:25"],
            codes: &[DomainLiteral],
            ..case("step_1_ipv6_domain_literal", "user@[IPv6:::1]", "")
        },
        // --- Step 2: static routes ------------------------------------------------------
        Case {
            policy: |p| {
                p.static_routes.insert(
                    "static.example".into(),
                    StaticRoute::Address {
                        ip: "127.0.0.8".parse().unwrap(),
                        port: Some(2525),
                    },
                );
            },
            attempts: &["0 static.example 127.0.0.8:2525"],
            codes: &[StaticRoute],
            ..case(
                "step_2_static_route_to_address",
                "static.example",
                "static.example. MX 10 elsewhere.example.",
            )
        },
        Case {
            policy: |p| {
                p.static_routes.insert(
                    "static.example".into(),
                    StaticRoute::Host {
                        name: "smart.example".into(),
                        port: Some(587),
                    },
                );
            },
            attempts: &["0 smart.example 127.0.0.7:587"],
            codes: &[StaticRoute, MxTargetPrivateAddress],
            ..case(
                "step_2_static_route_to_host_resolved_like_mx",
                "static.example",
                "static.example. MX 10 elsewhere.example.
                 smart.example. A 127.0.0.7",
            )
        },
        // --- Step 3: the MX query -------------------------------------------------------
        Case {
            attempts: &[
                "10 mailhost1.example.com 127.0.0.11:25",
                "10 mailhost1.example.com [::1]:25",
                "20 mailhost2.example.com 127.0.0.12:25",
                "20 mailhost2.example.com [::1]:25",
            ],
            exchangers: Some(&[
                "10 mailhost1.example.com usable",
                "20 mailhost2.example.com usable",
            ]),
            ttl: Some(3600),
            codes: &[MxTargetPrivateAddress],
            ..case("step_3_mx_primary_and_backup", "user@example.com", SEED_ZONE)
        },
        Case {
            attempts: &["10 mx.target.example 127.0.0.6:25"],
            codes: &[DomainCname, MxTargetPrivateAddress],
            ..case(
                "step_3_domain_cname_is_followed",
                "alias.example",
                "alias.example. CNAME target.example.
                 target.example. MX 10 mx.target.example.
                 mx.target.example. A 127.0.0.6",
            )
        },
        Case {
            implicit: true,
            attempts: &["0 target.example 127.0.0.6:25"],
            codes: &[DomainCname, ImplicitMx, MxTargetPrivateAddress],
            ..case(
                "step_3_implicit_mx_at_the_end_of_a_cname_chain",
                "alias.example",
                "alias.example. CNAME target.example.
                 target.example. A 127.0.0.6",
            )
        },
        Case {
            status: Status::Tempfail,
            ttl: Some(30),
            codes: &[CnameLoop],
            ..case(
                "step_3_cname_loop_is_tempfail",
                "loop1.example",
                "loop1.example. CNAME loop2.example.
                 loop2.example. CNAME loop1.example.",
            )
        },
        Case {
            status: Status::Tempfail,
            codes: &[CnameLoop],
            ..case(
                "step_3_cname_chain_longer_than_8_is_tempfail",
                "c0.example",
                "c0.example. CNAME c1.example.
                 c1.example. CNAME c2.example.
                 c2.example. CNAME c3.example.
                 c3.example. CNAME c4.example.
                 c4.example. CNAME c5.example.
                 c5.example. CNAME c6.example.
                 c6.example. CNAME c7.example.
                 c7.example. CNAME c8.example.
                 c8.example. CNAME c9.example.
                 c9.example. MX 10 mx.c9.example.
                 mx.c9.example. A 127.0.0.9",
            )
        },
        Case {
            attempts: &["10 mx.c8.example 127.0.0.9:25"],
            codes: &[DomainCname, MxTargetPrivateAddress],
            ..case(
                "step_3_cname_chain_of_8_is_followed",
                "c0.example",
                "c0.example. CNAME c1.example.
                 c1.example. CNAME c2.example.
                 c2.example. CNAME c3.example.
                 c3.example. CNAME c4.example.
                 c4.example. CNAME c5.example.
                 c5.example. CNAME c6.example.
                 c6.example. CNAME c7.example.
                 c7.example. CNAME c8.example.
                 c8.example. MX 10 mx.c8.example.
                 mx.c8.example. A 127.0.0.9",
            )
        },
        Case {
            status: Status::Nxdomain,
            ttl: Some(300),
            ..case(
                "step_3_nxdomain_is_not_tried_as_address",
                "nosuch.example",
                "other.example. MX 10 mx.other.example.
                 mx.other.example. A 127.0.0.1",
            )
        },
        Case {
            status: Status::Tempfail,
            ttl: Some(30),
            codes: &[MxLookupFailed],
            ..case(
                "step_3_servfail_is_tempfail",
                "sf.example",
                "sf.example. MX 10 mx.sf.example.
                 sf.example. A 127.0.0.1
                 mx.sf.example. A 127.0.0.1
                 $FAULT sf.example. servfail MX",
            )
        },
        Case {
            status: Status::Tempfail,
            codes: &[MxLookupFailed],
            ..case(
                "step_3_refused_is_tempfail",
                "rf.example",
                "rf.example. MX 10 mx.rf.example.
                 mx.rf.example. A 127.0.0.1
                 $FAULT rf.example. refused",
            )
        },
        Case {
            status: Status::Tempfail,
            codes: &[MxLookupFailed],
            ..case(
                "step_3_timeout_is_tempfail",
                "to.example",
                "to.example. MX 10 mx.to.example.
                 mx.to.example. A 127.0.0.1
                 $FAULT to.example. timeout",
            )
        },
        Case {
            status: Status::Tempfail,
            ttl: Some(0),
            codes: &[MxLookupFailed],
            ..case(
                "step_3_truncated_with_failed_tcp_is_tempfail_and_not_cached",
                "tc.example",
                "tc.example. MX 10 mx.tc.example.
                 mx.tc.example. A 127.0.0.1
                 $FAULT tc.example. truncate",
            )
        },
        Case {
            attempts: &["10 mx.slow.example 127.0.0.1:25"],
            codes: &[MxTargetPrivateAddress],
            ..case(
                "step_3_slow_answer_within_timeout_is_used",
                "slow.example",
                "slow.example. MX 10 mx.slow.example.
                 mx.slow.example. A 127.0.0.1
                 $FAULT slow.example. delay:300",
            )
        },
        Case {
            implicit: true,
            attempts: &["0 bare.example 127.0.0.31:25"],
            exchangers: Some(&["0 bare.example usable"]),
            codes: &[ImplicitMx, MxTargetPrivateAddress],
            ..case(
                "step_3_nodata_means_implicit_mx",
                "bare.example",
                "bare.example. A 127.0.0.31",
            )
        },
        Case {
            status: Status::Unroutable,
            implicit: true,
            codes: &[ImplicitMx, MxTargetNoAddress],
            ..case(
                "step_3_implicit_mx_without_address_is_unroutable",
                "txtonly.example",
                "txtonly.example. TXT \"v=spf1 -all\"",
            )
        },
        // --- Step 4: null MX ------------------------------------------------------------
        Case {
            status: Status::NullMx,
            ttl: Some(3600),
            exchangers: Some(&["0 . NullMx"]),
            codes: &[NullMx],
            ..case("step_4_null_mx", "null.example", "null.example. MX 0 .")
        },
        Case {
            status: Status::NullMx,
            codes: &[NullMx, NullMxMixed],
            ..case(
                "step_4_null_mx_mixed_with_other_mx",
                "nullmixed.example",
                "nullmixed.example. MX 0 .
                 nullmixed.example. MX 10 mx.nullmixed.example.
                 mx.nullmixed.example. A 127.0.0.1",
            )
        },
        Case {
            status: Status::NullMx,
            codes: &[NullMx, NullMxNonzeroPreference],
            ..case(
                "step_4_null_mx_nonzero_preference",
                "nullpref.example",
                "nullpref.example. MX 10 .",
            )
        },
        // --- Step 5: validating exchanges -----------------------------------------------
        Case {
            status: Status::Unroutable,
            exchangers: Some(&["10 127.0.0.25 IpLiteral"]),
            codes: &[MxTargetIpLiteral],
            ..case(
                "step_5_ip_literal_exchange_is_refused",
                "iplit.example",
                "iplit.example. MX 10 127.0.0.25.",
            )
        },
        Case {
            policy: |p| p.allow_mx_to_ip = true,
            attempts: &["10 127.0.0.25 127.0.0.25:25"],
            codes: &[MxTargetIpLiteral, MxTargetPrivateAddress],
            ..case(
                "step_5_ip_literal_exchange_with_allow_mx_to_ip",
                "iplit.example",
                "iplit.example. MX 10 127.0.0.25.",
            )
        },
        Case {
            exchangers: Some(&["10 mx1.dup.example usable", "30 mx2.dup.example usable"]),
            attempts: &["10 mx1.dup.example 127.0.0.1:25", "30 mx2.dup.example 127.0.0.2:25"],
            codes: &[DuplicateMx, MxTargetPrivateAddress],
            ..case(
                "step_5_duplicate_mx_keeps_lowest_preference",
                "dup.example",
                "dup.example. MX 20 mx1.dup.example.
                 dup.example. MX 10 mx1.dup.example.
                 dup.example. MX 30 mx2.dup.example.
                 mx1.dup.example. A 127.0.0.1
                 mx2.dup.example. A 127.0.0.2",
            )
        },
        // --- Step 6: order --------------------------------------------------------------
        Case {
            attempts: &[
                "10 a.eq.example 127.0.0.1:25",
                "10 b.eq.example 127.0.0.2:25",
                "10 c.eq.example 127.0.0.3:25",
                "20 d.eq.example 127.0.0.4:25",
            ],
            codes: &[MxTargetPrivateAddress],
            ..case(
                "step_6_preference_order_with_equal_preferences_grouped",
                "eq.example",
                "eq.example. MX 20 d.eq.example.
                 eq.example. MX 10 c.eq.example.
                 eq.example. MX 10 a.eq.example.
                 eq.example. MX 10 b.eq.example.
                 a.eq.example. A 127.0.0.1
                 b.eq.example. A 127.0.0.2
                 c.eq.example. A 127.0.0.3
                 d.eq.example. A 127.0.0.4",
            )
        },
        // --- Step 7: loop protection ----------------------------------------------------
        Case {
            policy: |p| p.local_names = vec!["mx.self.example".into()],
            status: Status::Loop,
            exchangers: Some(&["10 mx.self.example Local", "20 backup.self.example NotBetterThanLocal"]),
            codes: &[MxIsLocal],
            ..case(
                "step_7_we_are_the_best_mx_by_name",
                "self.example",
                "self.example. MX 10 mx.self.example.
                 self.example. MX 20 backup.self.example.
                 mx.self.example. A 127.0.0.71
                 backup.self.example. A 127.0.0.72",
            )
        },
        Case {
            policy: |p| p.local_addresses = vec!["127.0.0.71".parse().unwrap()],
            status: Status::Loop,
            codes: &[MxIsLocal, MxTargetPrivateAddress],
            ..case(
                "step_7_we_are_the_best_mx_by_address",
                "self.example",
                "self.example. MX 10 mx.self.example.
                 mx.self.example. A 127.0.0.71",
            )
        },
        Case {
            policy: |p| p.local_names = vec!["backup.self.example".into()],
            attempts: &["10 mx.self.example 127.0.0.71:25"],
            exchangers: Some(&[
                "10 mx.self.example usable",
                "20 backup.self.example Local",
                "30 third.self.example NotBetterThanLocal",
            ]),
            codes: &[MxIsLocal, MxTargetPrivateAddress],
            ..case(
                "step_7_as_backup_mx_we_relay_only_to_better_ones",
                "self.example",
                "self.example. MX 10 mx.self.example.
                 self.example. MX 20 backup.self.example.
                 self.example. MX 30 third.self.example.
                 mx.self.example. A 127.0.0.71
                 backup.self.example. A 127.0.0.72
                 third.self.example. A 127.0.0.73",
            )
        },
        Case {
            policy: |p| p.local_names = vec!["backup.self.example".into()],
            status: Status::Tempfail,
            codes: &[MxIsLocal, MxTargetTempfail],
            ..case(
                "step_7_better_mx_failing_temporarily_is_tempfail_not_loop",
                "self.example",
                "self.example. MX 10 mx.self.example.
                 self.example. MX 20 backup.self.example.
                 mx.self.example. A 127.0.0.71
                 backup.self.example. A 127.0.0.72
                 $FAULT mx.self.example. servfail",
            )
        },
        // --- Step 8: exchanger addresses ------------------------------------------------
        Case {
            attempts: &["10 mx.ct.example 127.0.0.6:25"],
            codes: &[MxTargetCname, MxTargetPrivateAddress],
            ..case(
                "step_8_mx_target_cname_is_followed_with_warning",
                "ct.example",
                "ct.example. MX 10 mx.ct.example.
                 mx.ct.example. CNAME real.ct.example.
                 real.ct.example. A 127.0.0.6",
            )
        },
        Case {
            status: Status::Unroutable,
            exchangers: Some(&["10 gone.nx.example Nxdomain"]),
            codes: &[MxTargetNxdomain],
            ..case(
                "step_8_mx_target_nxdomain",
                "nx.example",
                "nx.example. MX 10 gone.nx.example.",
            )
        },
        Case {
            status: Status::Unroutable,
            exchangers: Some(&["10 mx.na.example NoAddress"]),
            codes: &[MxTargetNoAddress],
            ..case(
                "step_8_mx_target_without_address",
                "na.example",
                "na.example. MX 10 mx.na.example.
                 mx.na.example. TXT \"no address\"",
            )
        },
        Case {
            attempts: &["20 mx2.half.example 127.0.0.12:25"],
            exchangers: Some(&["10 gone.half.example Nxdomain", "20 mx2.half.example usable"]),
            codes: &[MxTargetNxdomain, MxTargetPrivateAddress],
            ..case(
                "step_8_broken_primary_leaves_the_backup",
                "half.example",
                "half.example. MX 10 gone.half.example.
                 half.example. MX 20 mx2.half.example.
                 mx2.half.example. A 127.0.0.12",
            )
        },
        Case {
            attempts: &["10 mx.ft.example 127.0.0.51:25"],
            codes: &[MxTargetTempfail, MxTargetPrivateAddress],
            ..case(
                "step_8_tempfail_for_one_family_is_a_warning",
                "ft.example",
                "ft.example. MX 10 mx.ft.example.
                 mx.ft.example. A 127.0.0.51
                 $FAULT mx.ft.example. servfail AAAA",
            )
        },
        Case {
            status: Status::Tempfail,
            exchangers: Some(&["10 mx.td.example Tempfail"]),
            codes: &[MxTargetTempfail],
            ..case(
                "step_9_all_exchangers_failing_temporarily_is_tempfail",
                "td.example",
                "td.example. MX 10 mx.td.example.
                 mx.td.example. A 127.0.0.52
                 $FAULT mx.td.example. servfail",
            )
        },
        Case {
            attempts: &["10 mx.pub.example 11.0.0.1:25"],
            codes: &[],
            ..case(
                "step_8_public_address_has_no_warning",
                "pub.example",
                "pub.example. MX 10 mx.pub.example.
                 mx.pub.example. A 11.0.0.1",
            )
        },
        Case {
            attempts: &[
                "10 mx.dual.example 127.0.0.1:25",
                "10 mx.dual.example 127.0.0.2:25",
                "10 mx.dual.example [::1]:25",
                "10 mx.dual.example [::ffff:127.0.0.3]:25",
            ],
            codes: &[MxTargetPrivateAddress],
            ..case("step_8_ipv4_then_ipv6", "dual.example", DUAL_STACK)
        },
        Case {
            policy: |p| p.ip_strategy = IpStrategy::Ipv6ThenIpv4,
            attempts: &[
                "10 mx.dual.example [::1]:25",
                "10 mx.dual.example [::ffff:127.0.0.3]:25",
                "10 mx.dual.example 127.0.0.1:25",
                "10 mx.dual.example 127.0.0.2:25",
            ],
            codes: &[MxTargetPrivateAddress],
            ..case("step_8_ipv6_then_ipv4", "dual.example", DUAL_STACK)
        },
        Case {
            policy: |p| p.ip_strategy = IpStrategy::Ipv4Only,
            attempts: &[
                "10 mx.dual.example 127.0.0.1:25",
                "10 mx.dual.example 127.0.0.2:25",
            ],
            codes: &[MxTargetPrivateAddress],
            ..case("step_8_ipv4_only", "dual.example", DUAL_STACK)
        },
        Case {
            policy: |p| p.ip_strategy = IpStrategy::Ipv6Only,
            attempts: &[
                "10 mx.dual.example [::1]:25",
                "10 mx.dual.example [::ffff:127.0.0.3]:25",
            ],
            codes: &[MxTargetPrivateAddress],
            ..case("step_8_ipv6_only", "dual.example", DUAL_STACK)
        },
        Case {
            policy: |p| p.ip_strategy = IpStrategy::Any,
            attempts: &[
                "10 mx.dual.example [::1]:25",
                "10 mx.dual.example 127.0.0.1:25",
                "10 mx.dual.example [::ffff:127.0.0.3]:25",
                "10 mx.dual.example 127.0.0.2:25",
            ],
            codes: &[MxTargetPrivateAddress],
            ..case("step_8_any_interleaves_ipv6_first", "dual.example", DUAL_STACK)
        },
        Case {
            policy: |p| p.ip_strategy = IpStrategy::Ipv6Only,
            status: Status::Unroutable,
            codes: &[MxTargetNoAddress],
            ..case(
                "step_8_only_family_policy_hides_the_other_family",
                "v4only.example",
                "v4only.example. MX 10 mx.v4only.example.
                 mx.v4only.example. A 127.0.0.1",
            )
        },
        // --- Step 9: the address limit --------------------------------------------------
        Case {
            attempts: &[
                "10 big.mh.example 127.0.0.41:25",
                "10 big.mh.example 127.0.0.42:25",
                "10 big.mh.example 127.0.0.43:25",
                "10 big.mh.example 127.0.0.44:25",
                "10 big.mh.example 127.0.0.45:25",
                "20 backup.mh.example 127.0.0.12:25",
            ],
            codes: &[AddressLimit, MxTargetPrivateAddress],
            ..case(
                "step_9_address_limit_never_starves_the_backup",
                "mh.example",
                "mh.example. MX 10 big.mh.example.
                 mh.example. MX 20 backup.mh.example.
                 big.mh.example. A 127.0.0.41
                 big.mh.example. A 127.0.0.42
                 big.mh.example. A 127.0.0.43
                 big.mh.example. A 127.0.0.44
                 big.mh.example. A 127.0.0.45
                 big.mh.example. A 127.0.0.46
                 backup.mh.example. A 127.0.0.12",
            )
        },
        // --- Step 10: TTL ---------------------------------------------------------------
        Case {
            ttl: Some(600),
            attempts: &["10 mx.ttl.example 127.0.0.1:25", "10 mx.ttl.example [::1]:25"],
            codes: &[MxTargetPrivateAddress],
            ..case(
                "step_10_route_ttl_is_the_lowest_record_ttl",
                "ttl.example",
                "ttl.example. 45000 MX 10 mx.ttl.example.
                 mx.ttl.example. 600 A 127.0.0.1
                 mx.ttl.example. 900 AAAA ::1",
            )
        },
        Case {
            status: Status::Nxdomain,
            ttl: Some(300),
            ..case(
                "step_10_negative_ttl_is_capped",
                "nosuch.capped.example",
                "capped.example. 3600 SOA ns.capped.example. h.capped.example. 1 3600 600 86400 7200
                 capped.example. NS ns.capped.example.",
            )
        },
        Case {
            status: Status::Nxdomain,
            ttl: Some(60),
            ..case(
                "step_10_negative_ttl_from_soa",
                "nosuch.short.example",
                "short.example. 3600 SOA ns.short.example. h.short.example. 1 3600 600 86400 60
                 short.example. NS ns.short.example.",
            )
        },
    ]
}
