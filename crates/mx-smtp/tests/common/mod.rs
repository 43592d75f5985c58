//! A scripted driver: feeds bytes, answers decisions with a fixed policy and records what
//! the session did, in order.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use mx_smtp::{
    EnhancedStatus, Event, Message, MessageDecision, PeerInfo, RcptDecision, Reply, ServerConfig,
    ServerSession,
};

/// What happened, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Reply(String),
    StartTls,
    Rcpt(String),
    Auth {
        mechanism: &'static str,
        authzid: Option<String>,
        username: String,
        password: String,
    },
    Message(Message),
    Close,
}

pub struct Driver {
    pub s: ServerSession,
    pub seen: Vec<Seen>,
    queued: usize,
    /// Recipients whose local part starts with this are refused with 550 5.1.1.
    pub refuse_prefix: &'static str,
    pub password: &'static str,
}

pub fn peer() -> PeerInfo {
    PeerInfo {
        ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        tls: false,
    }
}

pub fn config() -> ServerConfig {
    ServerConfig {
        hostname: "mx.test".into(),
        starttls_available: true,
        ..ServerConfig::default()
    }
}

impl Driver {
    pub fn new(config: ServerConfig) -> Self {
        Self::with_peer(config, peer())
    }

    pub fn with_peer(config: ServerConfig, peer: PeerInfo) -> Self {
        Self {
            s: ServerSession::new(Arc::new(config), peer),
            seen: Vec::new(),
            queued: 0,
            refuse_prefix: "nobody",
            password: "secret",
        }
    }

    /// Feeds one write and handles every event that follows.
    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        self.s.feed(bytes);
        self.drain();
        self
    }

    pub fn eof(&mut self) -> &mut Self {
        self.s.eof();
        self.drain();
        self
    }

    pub fn drain(&mut self) {
        while let Some(event) = self.s.next_event() {
            match event {
                Event::Reply(reply) => {
                    let text = String::from_utf8(reply.to_bytes()).unwrap();
                    self.seen.push(Seen::Reply(text));
                }
                Event::StartTls => {
                    self.seen.push(Seen::StartTls);
                    assert!(self.s.next_event().is_none(), "events while TLS is pending");
                    self.s.tls_started().unwrap();
                }
                Event::CheckRecipient { address, .. } => {
                    // Nothing may come out while a decision is pending.
                    assert!(
                        self.s.next_event().is_none(),
                        "events while RCPT is pending"
                    );
                    let decision = if address.starts_with(self.refuse_prefix) {
                        RcptDecision::Reject(Reply::new(
                            550,
                            EnhancedStatus::new(5, 1, 1),
                            "No such user",
                        ))
                    } else {
                        RcptDecision::Accept
                    };
                    self.seen.push(Seen::Rcpt(address));
                    self.s.recipient_decision(decision).unwrap();
                }
                Event::Authenticate {
                    mechanism,
                    authzid,
                    username,
                    password,
                } => {
                    assert!(
                        self.s.next_event().is_none(),
                        "events while AUTH is pending"
                    );
                    let ok = password.expose() == self.password;
                    self.seen.push(Seen::Auth {
                        mechanism: mechanism.as_str(),
                        authzid,
                        username,
                        password: password.expose().to_owned(),
                    });
                    self.s.auth_decision(ok).unwrap();
                }
                Event::Message(message) => {
                    assert!(
                        self.s.next_event().is_none(),
                        "events while DATA is pending"
                    );
                    self.seen.push(Seen::Message(message));
                    self.queued += 1;
                    let queue_id = format!("Q{}", self.queued);
                    self.s
                        .message_decision(MessageDecision::Accepted { queue_id })
                        .unwrap();
                }
                Event::Close => {
                    self.seen.push(Seen::Close);
                    assert!(self.s.next_event().is_none(), "events after Close");
                }
            }
        }
    }

    /// Replies only, each as its wire text.
    pub fn replies(&self) -> Vec<&str> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Seen::Reply(r) => Some(r.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The first line of each reply, for short assertions.
    pub fn codes(&self) -> Vec<String> {
        self.replies()
            .iter()
            .map(|r| {
                let last = r.trim_end().lines().last().unwrap_or("");
                // "250-a\r\n250 b" -> "250 b"; for single lines the line itself.
                let first = r.lines().next().unwrap_or("");
                if first.as_bytes().get(3) == Some(&b'-') {
                    last.to_string()
                } else {
                    first.to_string()
                }
            })
            .collect()
    }

    pub fn messages(&self) -> Vec<&Message> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Seen::Message(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    pub fn closed(&self) -> bool {
        self.seen.last() == Some(&Seen::Close)
    }

    pub fn clear(&mut self) {
        self.seen.clear();
    }
}

/// Feeds `input` split into the given pieces and returns everything seen.
pub fn run_split(config: ServerConfig, pieces: &[&[u8]]) -> Vec<Seen> {
    let mut d = Driver::new(config);
    for piece in pieces {
        d.write(piece);
    }
    d.eof();
    d.seen
}
