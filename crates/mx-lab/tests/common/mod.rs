//! A tiny DNS client for the tests, built on hickory-proto only (no resolver: we want to see
//! exactly what the lab puts on the wire).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Generous: a success must not flake on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// How long "no answer" is watched for.
pub const SILENCE: Duration = Duration::from_millis(300);

static NEXT_ID: AtomicU16 = AtomicU16::new(1);

pub fn query(name: &str, rtype: &str) -> Message {
    let mut m = Message::query();
    m.metadata.id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    m.metadata.recursion_desired = false;
    let name = Name::from_ascii(name).expect("test name");
    let rtype = RecordType::from_str(rtype).expect("test type");
    m.add_query(Query::query(name, rtype));
    m
}

pub fn with_edns(mut m: Message, payload: u16) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(payload);
    m.set_edns(edns);
    m
}

/// Sends one UDP query and waits up to `wait` for the response with the same id. Also
/// returns the raw size of the datagram.
pub async fn udp_exchange(
    server: SocketAddr,
    m: &Message,
    wait: Duration,
) -> Option<(Message, usize)> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    socket
        .send_to(&m.to_vec().expect("encode"), server)
        .await
        .expect("send");
    let mut buf = vec![0u8; 65_535];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (n, _) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf))
            .await
            .ok()?
            .expect("recv");
        let reply = Message::from_vec(&buf[..n]).expect("decode reply");
        if reply.metadata.id == m.metadata.id {
            return Some((reply, n));
        }
    }
}

pub async fn udp(server: SocketAddr, name: &str, rtype: &str) -> Message {
    udp_exchange(server, &query(name, rtype), PATIENCE)
        .await
        .map(|(m, _)| m)
        .unwrap_or_else(|| panic!("no UDP answer for {name} {rtype}"))
}

pub struct Tcp {
    stream: TcpStream,
}

#[derive(Debug)]
pub enum TcpRead {
    Message(Message),
    /// The server closed the connection (FIN or RST).
    Closed(std::io::ErrorKind),
    /// Nothing arrived in time.
    Silent,
}

impl Tcp {
    pub async fn connect(server: SocketAddr) -> Tcp {
        let stream = tokio::time::timeout(PATIENCE, TcpStream::connect(server))
            .await
            .expect("connect in time")
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Tcp { stream }
    }

    pub async fn send(&mut self, m: &Message) {
        let bytes = m.to_vec().expect("encode");
        self.send_raw(&bytes).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let mut frame = (bytes.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(bytes);
        self.stream.write_all(&frame).await.expect("write");
    }

    pub async fn read(&mut self, wait: Duration) -> TcpRead {
        let mut len = [0u8; 2];
        match tokio::time::timeout(wait, self.stream.read_exact(&mut len)).await {
            Err(_) => return TcpRead::Silent,
            Ok(Err(e)) => return TcpRead::Closed(e.kind()),
            Ok(Ok(_)) => {}
        }
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(PATIENCE, self.stream.read_exact(&mut body)).await {
            Err(_) => TcpRead::Silent,
            Ok(Err(e)) => TcpRead::Closed(e.kind()),
            Ok(Ok(_)) => TcpRead::Message(Message::from_vec(&body).expect("decode reply")),
        }
    }

    pub async fn answer(&mut self) -> Message {
        match self.read(PATIENCE).await {
            TcpRead::Message(m) => m,
            other => panic!("expected a TCP answer, got {other:?}"),
        }
    }
}

pub async fn tcp(server: SocketAddr, name: &str, rtype: &str) -> Message {
    let mut conn = Tcp::connect(server).await;
    conn.send(&query(name, rtype)).await;
    conn.answer().await
}
