//! Property and statistical tests of the pure core, over generated DNS outcomes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use mx_core::*;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A generated domain: MX records (preference, host index) and per-host address counts.
#[derive(Clone, Debug)]
struct World {
    mx: Vec<(u16, usize)>,
    hosts: Vec<(u8, u8)>, // (#A, #AAAA) per host
    null_mx: bool,
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec((0u16..4, 0usize..6), 0..8),
        prop::collection::vec((0u8..4, 0u8..3), 6),
        any::<bool>(),
    )
        .prop_map(|(mx, hosts, null_mx)| World { mx, hosts, null_mx })
}

fn outcomes(w: &World) -> HashMap<Question, Outcome> {
    let mut table = HashMap::new();
    let mut mx: Vec<Record> =
        w.mx.iter()
            .map(|(pref, h)| Record {
                name: "d.test".into(),
                ttl: 300,
                data: RecordData::Mx {
                    preference: *pref * 10,
                    exchange: format!("mx{h}.d.test"),
                },
            })
            .collect();
    if w.null_mx {
        mx.push(Record {
            name: "d.test".into(),
            ttl: 300,
            data: RecordData::Mx {
                preference: 0,
                exchange: String::new(),
            },
        });
    }
    table.insert(
        Question::new("d.test", QType::Mx),
        Ok(Answer {
            records: mx,
            negative_ttl: Some(60),
            ..Answer::default()
        }),
    );
    for (h, (n4, n6)) in w.hosts.iter().enumerate() {
        let name = format!("mx{h}.d.test");
        let v4 = (0..*n4)
            .map(|i| Record {
                name: name.clone(),
                ttl: 120,
                data: RecordData::A(Ipv4Addr::new(198, 51, h as u8, i)),
            })
            .collect();
        let v6 = (0..*n6)
            .map(|i| Record {
                name: name.clone(),
                ttl: 120,
                data: RecordData::Aaaa(Ipv6Addr::new(
                    0x2001, 0xdb8, h as u16, 0, 0, 0, 0, i as u16,
                )),
            })
            .collect();
        let answer = |records| {
            Ok(Answer {
                records,
                negative_ttl: Some(60),
                ..Answer::default()
            })
        };
        table.insert(Question::new(name.clone(), QType::A), answer(v4));
        table.insert(Question::new(name.clone(), QType::Aaaa), answer(v6));
    }
    // The implicit MX host (d.test itself) has one address.
    table.insert(
        Question::new("d.test", QType::A),
        Ok(Answer {
            records: vec![Record {
                name: "d.test".into(),
                ttl: 50,
                data: RecordData::A(Ipv4Addr::new(192, 0, 2, 1)),
            }],
            ..Answer::default()
        }),
    );
    table.insert(Question::new("d.test", QType::Aaaa), Ok(Answer::default()));
    table
}

fn route(w: &World, policy: &Policy, seed: u64) -> Route {
    let table = outcomes(w);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    route_from_outcomes("d.test", policy, &|q| table.get(q).cloned(), &mut rng).unwrap()
}

proptest! {
    #[test]
    fn step_6_preference_never_decreases_along_attempts(w in world(), seed in any::<u64>(), limit in 1usize..8) {
        let policy = Policy { mx_address_limit: limit, ..Policy::default() };
        let r = route(&w, &policy, seed);
        for pair in r.attempts.windows(2) {
            prop_assert!(pair[0].preference <= pair[1].preference);
        }
        for pair in r.exchangers.windows(2) {
            prop_assert!(pair[0].preference <= pair[1].preference);
        }
    }

    #[test]
    fn step_4_null_mx_never_has_an_attempt(w in world(), seed in any::<u64>()) {
        let r = route(&w, &Policy::default(), seed);
        if w.null_mx {
            prop_assert_eq!(r.status, Status::NullMx);
            prop_assert!(r.attempts.is_empty());
            prop_assert!(r.exchangers.iter().all(|e| !e.usable));
        }
        prop_assert_eq!(r.status == Status::Ok, !r.attempts.is_empty());
    }

    #[test]
    fn step_9_address_limit_keeps_one_address_per_level(w in world(), seed in any::<u64>(), limit in 1usize..8) {
        let policy = Policy { mx_address_limit: limit, ..Policy::default() };
        let r = route(&w, &policy, seed);
        let levels_with_address: std::collections::BTreeSet<u16> = r
            .exchangers
            .iter()
            .filter(|e| e.usable && !e.addresses.is_empty())
            .map(|e| e.preference)
            .collect();
        let levels_attempted: std::collections::BTreeSet<u16> =
            r.attempts.iter().map(|a| a.preference).collect();
        prop_assert_eq!(levels_with_address.clone(), levels_attempted);
        prop_assert!(r.attempts.len() <= limit.max(1) + levels_with_address.len());
        // Every attempt is an address of a usable exchanger, and no attempt repeats.
        let mut seen = std::collections::HashSet::new();
        for a in &r.attempts {
            prop_assert!(seen.insert((a.host.clone(), a.ip)));
            prop_assert!(r.exchangers.iter().any(|e| e.usable && e.host == a.host && e.addresses.contains(&a.ip)));
        }
    }

    #[test]
    fn step_8_only_family_policies_hide_the_other_family(w in world(), seed in any::<u64>()) {
        for (strategy, v4) in [(IpStrategy::Ipv4Only, true), (IpStrategy::Ipv6Only, false)] {
            let policy = Policy { ip_strategy: strategy, mx_address_limit: 100, ..Policy::default() };
            let r = route(&w, &policy, seed);
            prop_assert!(r.exchangers.iter().flat_map(|e| &e.addresses).all(|ip| ip.is_ipv4() == v4));
        }
    }

    #[test]
    fn step_1_normalisation_is_idempotent(s in "[a-zA-Z0-9]{1,10}(\\.[a-zA-Z0-9]{1,10}){0,3}\\.?") {
        if let Ok(Target::Domain(d)) = parse_target(&s) {
            prop_assert_eq!(parse_target(&d).unwrap(), Target::Domain(d.clone()));
        }
    }

    #[test]
    fn the_core_never_panics_on_any_input(s in ".{0,80}") {
        let _ = route_from_outcomes(&s, &Policy::default(), &|_| None, &mut ChaCha8Rng::seed_from_u64(1));
    }
}

#[test]
fn step_6_equal_preference_is_uniform() {
    let w = World {
        mx: vec![(1, 0), (1, 1), (1, 2), (1, 3), (2, 4)],
        hosts: vec![(1, 0); 6],
        null_mx: false,
    };
    let table = outcomes(&w);
    let policy = Policy::default();
    // One seeded generator for the whole run: deterministic, so the bound cannot flake.
    let mut rng = ChaCha8Rng::seed_from_u64(20_000);
    let runs = 20_000;
    let mut first: HashMap<String, u32> = HashMap::new();
    let mut position: HashMap<(String, usize), u32> = HashMap::new();
    for _ in 0..runs {
        let r =
            route_from_outcomes("d.test", &policy, &|q| table.get(q).cloned(), &mut rng).unwrap();
        *first.entry(r.attempts[0].host.clone()).or_default() += 1;
        for (i, a) in r.attempts.iter().take(4).enumerate() {
            *position.entry((a.host.clone(), i)).or_default() += 1;
        }
        assert_eq!(r.attempts[4].host, "mx4.d.test", "the backup stays last");
    }
    assert_eq!(first.len(), 4);
    let quarter = runs as f64 / 4.0;
    for ((host, pos), n) in &position {
        let share = *n as f64 / quarter;
        assert!(
            (0.97..=1.03).contains(&share),
            "{host} at position {pos}: {n} of {runs}, {:.3} of a quarter",
            share
        );
    }
}

#[test]
fn same_seed_same_order_other_seed_other_order() {
    let w = World {
        mx: vec![(1, 0), (1, 1), (1, 2), (1, 3)],
        hosts: vec![(1, 0); 6],
        null_mx: false,
    };
    let hosts = |seed| -> Vec<String> {
        route(&w, &Policy::default(), seed)
            .attempts
            .into_iter()
            .map(|a| a.host)
            .collect()
    };
    assert_eq!(hosts(7), hosts(7));
    assert!((0..20).any(|s| hosts(s) != hosts(7)));
}

#[test]
fn step_7_loop_by_address() {
    let w = World {
        mx: vec![(1, 0), (2, 1)],
        hosts: vec![(1, 0); 6],
        null_mx: false,
    };
    let us: IpAddr = Ipv4Addr::new(198, 51, 0, 0).into();
    let policy = Policy {
        local_addresses: vec![us],
        ..Policy::default()
    };
    let r = route(&w, &policy, 1);
    assert_eq!(r.status, Status::Loop);
    assert_eq!(r.reply.as_ref().unwrap().enhanced, "5.4.6");
    assert!(r.has_code(Code::MxIsLocal));
}
