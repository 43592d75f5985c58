//! What `bulk` writes: one JSON object per input line, in input order or as completed.

use std::collections::BTreeMap;

use mx_core::Route;
use serde::Serialize;

/// One output line. A route is `route --json`'s object with the input line in front
/// (`line`, 1-based, and `input`, as read); a line mx-core cannot parse is
/// `{"line":..,"input":..,"status":"invalid","reason":..}`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum BulkRecord<'a> {
    Route {
        line: u64,
        input: &'a str,
        #[serde(flatten)]
        route: &'a Route,
    },
    Invalid {
        line: u64,
        input: &'a str,
        status: &'static str,
        reason: String,
    },
}

impl<'a> BulkRecord<'a> {
    pub fn invalid(line: u64, input: &'a str, reason: impl ToString) -> Self {
        BulkRecord::Invalid {
            line,
            input,
            status: "invalid",
            reason: reason.to_string(),
        }
    }
}

/// Puts items numbered 0, 1, 2, ... back in order. It holds only the items that arrived
/// before an earlier one; the pipeline bounds how far ahead input may run, so this is bounded.
#[derive(Debug)]
pub struct Reorder<T> {
    next: u64,
    waiting: BTreeMap<u64, T>,
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Reorder {
            next: 0,
            waiting: BTreeMap::new(),
        }
    }
}

impl<T> Reorder<T> {
    /// Takes item `seq`; returns the items now ready, in order.
    pub fn push(&mut self, seq: u64, item: T) -> Vec<T> {
        if seq != self.next {
            self.waiting.insert(seq, item);
            return Vec::new();
        }
        let mut ready = vec![item];
        self.next += 1;
        while let Some(item) = self.waiting.remove(&self.next) {
            ready.push(item);
            self.next += 1;
        }
        ready
    }

    /// Items held back, waiting for an earlier one.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mx_core::{Policy, route_from_outcomes};

    #[test]
    fn reorder_releases_in_sequence() {
        let mut r = Reorder::default();
        assert!(r.push(2, 'c').is_empty());
        assert!(r.push(1, 'b').is_empty());
        assert_eq!(r.waiting(), 2);
        assert_eq!(r.push(0, 'a'), ['a', 'b', 'c']);
        assert_eq!(r.push(3, 'd'), ['d']);
        assert_eq!(r.waiting(), 0);
    }

    #[test]
    fn records_are_route_json_plus_the_input_line() {
        let mut rng = rand::rng();
        let route =
            route_from_outcomes("[192.0.2.1]", &Policy::default(), &|_| None, &mut rng).unwrap();
        let json = serde_json::to_value(BulkRecord::Route {
            line: 3,
            input: "user@[192.0.2.1]",
            route: &route,
        })
        .unwrap();
        let mut expected = serde_json::to_value(&route).unwrap();
        expected["line"] = 3.into();
        expected["input"] = "user@[192.0.2.1]".into();
        assert_eq!(json, expected);

        let json = serde_json::to_string(&BulkRecord::invalid(4, "a b", "bad name")).unwrap();
        assert_eq!(
            json,
            r#"{"line":4,"input":"a b","status":"invalid","reason":"bad name"}"#
        );
    }
}
