//! Following CNAME chains across one or more answers, bounded and loop-safe.

use crate::dns::{Answer, Failure, Outcome, QType, Question, RecordData};

/// Where one lookup (a name and a type, through any CNAMEs) stands.
#[derive(Clone, Debug)]
pub(crate) struct Chase {
    pub qtype: QType,
    /// The name asked for.
    pub first: String,
    /// The CNAME targets followed from it, in order: most chases follow none, and an empty
    /// list allocates nothing.
    pub further: Vec<String>,
    /// Lowest TTL among the CNAME records followed.
    pub cname_ttl: Option<u32>,
}

/// How a lookup ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// The data of the records of the type asked for (their owner is the chain's end; the
    /// route reads only the data) and their lowest TTL, CNAMEs followed included.
    Found {
        data: Vec<RecordData>,
        ttl: u32,
    },
    NoData {
        negative_ttl: Option<u32>,
    },
    NxDomain {
        negative_ttl: Option<u32>,
    },
    Failed(Failure),
    CnameLoop,
}

pub(crate) enum Step {
    /// Ask this next: the chain left the names the last answer covered.
    Ask,
    Done(Resolved),
}

impl Chase {
    pub fn new(name: &str, qtype: QType) -> Self {
        Chase {
            qtype,
            first: name.to_string(),
            further: Vec::new(),
            cname_ttl: None,
        }
    }

    /// A stand-in left behind while a chase is moved out of its place; it allocates nothing
    /// and is never asked anything.
    pub fn placeholder() -> Self {
        Chase {
            qtype: QType::Mx,
            first: String::new(),
            further: Vec::new(),
            cname_ttl: None,
        }
    }

    pub fn current(&self) -> &str {
        self.further.last().unwrap_or(&self.first)
    }

    pub fn question(&self) -> Question {
        Question::new(self.current(), self.qtype)
    }

    /// Whether `question` is the one this chase waits for, without building a [`Question`]
    /// (it runs for every pending lookup on every answer).
    pub fn asks(&self, question: &Question) -> bool {
        question.qtype == self.qtype && question.name == self.current()
    }

    /// Number of CNAME hops taken so far.
    pub fn hops(&self) -> usize {
        self.further.len()
    }

    pub fn end(&self) -> &str {
        self.current()
    }

    /// Take in the outcome of the current question.
    pub fn feed(&mut self, outcome: &Outcome, max_hops: usize) -> Step {
        let answer = match outcome {
            Ok(answer) => answer,
            Err(failure) => return Step::Done(Resolved::Failed(failure.clone())),
        };
        // `walk` only ever appends names not seen before, so a longer list means the end
        // moved away from the name asked.
        let hops_before = self.hops();
        let found = self.walk(answer, max_hops);
        let found = match found {
            Err(()) => return Step::Done(Resolved::CnameLoop),
            Ok(found) => found,
        };
        if let Some((data, record_ttl)) = found {
            let ttl = self.cname_ttl.map_or(record_ttl, |c| c.min(record_ttl));
            return Step::Done(Resolved::Found { data, ttl });
        }
        if answer.nxdomain {
            return Step::Done(Resolved::NxDomain {
                negative_ttl: answer.negative_ttl,
            });
        }
        // The chain moved past what this answer covered: an authoritative server stops at
        // its zone's edge, so the new end must be asked about directly before we can say
        // it has no data.
        if self.hops() != hops_before {
            return Step::Ask;
        }
        Step::Done(Resolved::NoData {
            negative_ttl: answer.negative_ttl,
        })
    }

    /// Follow the chain through this answer's records: the data of the records found at its
    /// end and their lowest TTL, if any; Err on a loop or too many hops.
    fn walk(
        &mut self,
        answer: &Answer,
        max_hops: usize,
    ) -> Result<Option<(Vec<RecordData>, u32)>, ()> {
        loop {
            let current = self.current();
            let wanted =
                |r: &&crate::dns::Record| r.name == current && matches_type(&r.data, self.qtype);
            if let Some(ttl) = answer.records.iter().filter(wanted).map(|r| r.ttl).min() {
                let data = answer
                    .records
                    .iter()
                    .filter(wanted)
                    .map(|r| r.data.clone())
                    .collect();
                return Ok(Some((data, ttl)));
            }
            let next = answer.records.iter().find_map(|r| match &r.data {
                RecordData::Cname(target) if r.name == current => Some((target.clone(), r.ttl)),
                _ => None,
            });
            let Some((target, ttl)) = next else {
                return Ok(None);
            };
            if self.first == target || self.further.contains(&target) || self.hops() >= max_hops {
                return Err(());
            }
            self.cname_ttl = Some(self.cname_ttl.map_or(ttl, |t| t.min(ttl)));
            self.further.push(target);
        }
    }
}

fn matches_type(data: &RecordData, qtype: QType) -> bool {
    matches!(
        (data, qtype),
        (RecordData::Mx { .. }, QType::Mx)
            | (RecordData::A(_), QType::A)
            | (RecordData::Aaaa(_), QType::Aaaa)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Record;

    fn cname(from: &str, to: &str) -> Record {
        Record {
            name: from.into(),
            ttl: 60,
            data: RecordData::Cname(to.into()),
        }
    }

    fn a(name: &str, ttl: u32) -> Record {
        Record {
            name: name.into(),
            ttl,
            data: RecordData::A("192.0.2.1".parse().unwrap()),
        }
    }

    fn ok(records: Vec<Record>) -> Outcome {
        Ok(Answer {
            records,
            ..Answer::default()
        })
    }

    #[test]
    fn step_3_chain_in_one_answer_takes_lowest_ttl() {
        let mut c = Chase::new("a", QType::A);
        let step = c.feed(&ok(vec![cname("a", "b"), a("b", 300)]), 8);
        assert!(matches!(step, Step::Done(Resolved::Found { ttl: 60, .. })));
        assert_eq!(c.end(), "b");
        assert_eq!(c.hops(), 1);
    }

    #[test]
    fn step_3_chain_leaving_the_answer_asks_the_end() {
        let mut c = Chase::new("a", QType::A);
        assert!(matches!(c.feed(&ok(vec![cname("a", "b")]), 8), Step::Ask));
        assert_eq!(c.question(), Question::new("b", QType::A));
        assert!(matches!(
            c.feed(&ok(vec![]), 8),
            Step::Done(Resolved::NoData { .. })
        ));
    }

    #[test]
    fn step_3_cname_loop_and_overlong_chain() {
        let mut c = Chase::new("a", QType::Mx);
        let looped = c.feed(&ok(vec![cname("a", "b"), cname("b", "a")]), 8);
        assert!(matches!(looped, Step::Done(Resolved::CnameLoop)));

        let chain: Vec<Record> = (0..10)
            .map(|i| cname(&format!("n{i}"), &format!("n{}", i + 1)))
            .collect();
        let mut c = Chase::new("n0", QType::Mx);
        assert!(matches!(
            c.feed(&ok(chain.clone()), 8),
            Step::Done(Resolved::CnameLoop)
        ));
        let mut c = Chase::new("n0", QType::Mx);
        assert!(matches!(c.feed(&ok(chain[..8].to_vec()), 8), Step::Ask));
    }

    #[test]
    fn step_3_nxdomain_at_the_end_of_a_chain() {
        let mut c = Chase::new("a", QType::Mx);
        let step = c.feed(
            &Ok(Answer {
                nxdomain: true,
                records: vec![cname("a", "gone")],
                negative_ttl: Some(30),
            }),
            8,
        );
        assert!(matches!(
            step,
            Step::Done(Resolved::NxDomain {
                negative_ttl: Some(30)
            })
        ));
    }
}
