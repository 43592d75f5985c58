//! Human output: compact tables built from the same structs the JSON output serialises.

use std::fmt::Write;

use mx_check::render::grid;
use mx_core::Route;

pub fn route(route: &Route) -> String {
    let mut out = String::new();
    let reply = route
        .reply
        .as_ref()
        .map(|r| format!("  {} {} {}", r.code, r.enhanced, r.text))
        .unwrap_or_default();
    let implicit = if route.implicit {
        "  (implicit MX)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "{}  {}  ttl {}s{implicit}{reply}",
        route.domain, route.status, route.ttl
    );
    if !route.exchangers.is_empty() {
        let rows: Vec<[String; 4]> = route
            .exchangers
            .iter()
            .map(|e| {
                let addresses = if e.addresses.is_empty() {
                    "-".to_string()
                } else {
                    e.addresses
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let state = match (e.usable, &e.unusable) {
                    (true, _) => "usable".to_string(),
                    (false, Some(why)) => serde_json::to_value(why)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_else(|| "unusable".into()),
                    (false, None) => "unusable".into(),
                };
                [e.preference.to_string(), e.host.clone(), addresses, state]
            })
            .collect();
        out.push_str(&grid(&["PREF", "EXCHANGER", "ADDRESSES", "STATE"], &rows));
    }
    if !route.attempts.is_empty() {
        let list: Vec<String> = route
            .attempts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let addr = match a.ip {
                    std::net::IpAddr::V4(ip) => format!("{ip}:{}", a.port),
                    std::net::IpAddr::V6(ip) => format!("[{ip}]:{}", a.port),
                };
                format!("{}. {} {addr}", i + 1, a.host)
            })
            .collect();
        let _ = writeln!(out, "  attempts: {}", list.join(", "));
    }
    for d in &route.diagnostics {
        let _ = writeln!(
            out,
            "  {:<7} {:<26} {}",
            d.level.as_str(),
            d.code.as_str(),
            d.message
        );
    }
    out.push('\n');
    out
}
