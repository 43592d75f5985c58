//! The human formats of a report: a compact text report (coloured on a terminal) and a
//! self-contained HTML page. JSON is the report struct itself, through serde.

use std::fmt::Write;

use mx_core::Level;

use crate::finding::Finding;
use crate::report::{AddressReport, DomainReport};

/// Counts of findings per level: (errors, warnings, infos).
pub fn counts(findings: &[Finding]) -> (usize, usize, usize) {
    let n = |l| findings.iter().filter(|f| f.level == l).count();
    (n(Level::Error), n(Level::Warning), n(Level::Info))
}

fn paint(text: &str, level: Level, colour: bool) -> String {
    if !colour {
        return text.to_string();
    }
    let code = match level {
        Level::Error => "31;1",
        Level::Warning => "33",
        Level::Info => "36",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// What the probe of one address saw, in a few words.
fn smtp_summary(a: &AddressReport) -> String {
    let Some(p) = &a.smtp else {
        return "-".into();
    };
    if !p.connected {
        return "unreachable".into();
    }
    let mut parts = vec![
        p.banner_code
            .map_or("no banner".to_string(), |c| c.to_string()),
    ];
    if p.banner_code == Some(220) {
        parts.push(if p.starttls { "starttls" } else { "no-tls" }.into());
    }
    if let Some(tls) = &p.tls {
        parts.push(
            match (
                tls.established,
                tls.trusted && tls.name_matches && !tls.expired,
            ) {
                (false, _) => "tls-failed",
                (true, true) => "cert-ok",
                (true, false) => "cert-bad",
            }
            .into(),
        );
    }
    parts.join(" ")
}

fn ptr_summary(a: &AddressReport) -> String {
    match (a.ptr.is_empty(), a.fcrdns) {
        (_, None) => "-".into(),
        (true, Some(_)) => "none".into(),
        (false, Some(ok)) => format!("{}{}", a.ptr.join(","), if ok { "" } else { " (!fcrdns)" }),
    }
}

pub fn text(reports: &[DomainReport], colour: bool) -> String {
    let mut out = String::new();
    for report in reports {
        let (errors, warnings, infos) = counts(&report.findings);
        let status = report.route.as_ref().map_or("-", |r| r.status.as_str());
        let verdict = match report.worst_level() {
            Some(Level::Error) => paint("FAIL", Level::Error, colour),
            Some(Level::Warning) => paint("WARN", Level::Warning, colour),
            _ => "OK".to_string(),
        };
        let incomplete = if report.complete {
            ""
        } else {
            "  (incomplete)"
        };
        let _ = writeln!(
            out,
            "{}  {verdict}  route {status}  {errors} error(s), {warnings} warning(s), {infos} info{incomplete}",
            report.domain
        );
        let mut rows: Vec<[String; 5]> = Vec::new();
        for e in &report.exchangers {
            if e.addresses.is_empty() {
                rows.push([
                    e.preference.to_string(),
                    e.host.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
            for a in &e.addresses {
                rows.push([
                    e.preference.to_string(),
                    e.host.clone(),
                    a.ip.to_string(),
                    ptr_summary(a),
                    smtp_summary(a),
                ]);
            }
        }
        if !rows.is_empty() {
            out.push_str(&grid(
                &["PREF", "EXCHANGER", "ADDRESS", "PTR", "SMTP"],
                &rows,
            ));
        }
        for f in &report.findings {
            let level = format!("{:<7}", f.level.as_str());
            let _ = writeln!(
                out,
                "  {} {:<26} {}: {}",
                paint(&level, f.level, colour),
                f.code.as_str(),
                f.subject,
                f.message
            );
            if f.level != Level::Info {
                let _ = writeln!(out, "  {:<7} {:<26} fix: {}", "", "", f.advice);
            }
        }
        out.push('\n');
    }
    out
}

/// A left-aligned table with a header row, columns as wide as their widest cell; shared by
/// every human table of the command.
pub fn grid<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        out.push(' ');
        for (cell, w) in cells.iter().zip(widths) {
            let _ = write!(out, " {cell:<w$}");
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;width:100%;margin:.5em 0 1em}th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #eee;vertical-align:top}\
.error{color:#b00020;font-weight:600}.warning{color:#9a6700}.info{color:#0b5cad}\
.badge{display:inline-block;padding:0 .5em;border-radius:.3em;background:#eee;margin-left:.5em;font-size:.9em}\
code{font-size:.92em}.advice{color:#555}";

/// A page that stands alone (no scripts, no external resources), to attach or forward.
pub fn html(reports: &[DomainReport], generated: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>mxroute check report</title><style>{STYLE}</style></head><body>\n\
         <h1>Mail routing check</h1><p>Generated by mxroute check, {}.</p>\n",
        escape(generated)
    );
    for report in reports {
        let (errors, warnings, infos) = counts(&report.findings);
        let status = report.route.as_ref().map_or("-", |r| r.status.as_str());
        let _ = writeln!(
            out,
            "<section id=\"{id}\"><h2>{d}<span class=\"badge\">route {s}</span>\
             <span class=\"badge error\">{errors} error(s)</span>\
             <span class=\"badge warning\">{warnings} warning(s)</span>\
             <span class=\"badge info\">{infos} info</span></h2>",
            id = escape(&report.domain),
            d = escape(&report.domain),
            s = escape(status)
        );
        if !report.complete {
            out.push_str(
                "<p class=\"error\">The check could not complete; findings may be missing.</p>\n",
            );
        }
        if !report.exchangers.is_empty() {
            out.push_str("<table><tr><th>Pref</th><th>Exchanger</th><th>Address</th><th>PTR</th><th>SMTP</th></tr>\n");
            for e in &report.exchangers {
                for a in &e.addresses {
                    let _ = writeln!(
                        out,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        e.preference,
                        escape(&e.host),
                        a.ip,
                        escape(&ptr_summary(a)),
                        escape(&smtp_summary(a))
                    );
                }
                if e.addresses.is_empty() {
                    let _ = writeln!(
                        out,
                        "<tr><td>{}</td><td>{}</td><td>-</td><td>-</td><td>-</td></tr>",
                        e.preference,
                        escape(&e.host)
                    );
                }
            }
            out.push_str("</table>\n");
        }
        if report.findings.is_empty() {
            out.push_str("<p>No findings.</p>\n");
        } else {
            out.push_str(
                "<table><tr><th>Level</th><th>Code</th><th>Subject</th><th>Finding</th></tr>\n",
            );
            for f in &report.findings {
                let _ = writeln!(
                    out,
                    "<tr class=\"finding\"><td class=\"{l}\">{l}</td><td><code>{c}</code></td><td>{s}</td>\
                     <td>{m}<br><span class=\"advice\">{a}</span></td></tr>",
                    l = f.level.as_str(),
                    c = f.code.as_str(),
                    s = escape(&f.subject),
                    m = escape(&f.message),
                    a = escape(f.advice)
                );
            }
            out.push_str("</table>\n");
        }
        out.push_str("</section>\n");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
