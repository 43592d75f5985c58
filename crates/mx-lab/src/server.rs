//! The transports: our own UDP loop and TCP accept loop in front of hickory's `Catalog`, so that
//! faults can act per name, per type and per protocol.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{LowerName, Record};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::runtime::{TokioRuntimeProvider, TokioTime};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponse, MessageResponseBuilder, ZoneHandler, ZoneType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::faults::{normalize_name, parse_rtype};
use crate::{Fault, Faults, LabError, ZoneSet};

/// With an ephemeral port, how many UDP ports to try before giving up on finding one whose
/// TCP twin is also free.
const BIND_TRIES: usize = 20;
/// A TCP connection with nothing in flight and nothing received for this long is closed, so
/// abandoned clients do not pin tasks forever.
const TCP_IDLE: Duration = Duration::from_secs(60);
/// RFC 1035 4.2.1: without EDNS a UDP answer must fit 512 bytes.
const UDP_CLASSIC_MAX: u16 = 512;

/// An in-process authoritative DNS server on one address and port, UDP and TCP.
///
/// ```no_run
/// # async fn demo() -> Result<(), mx_lab::LabError> {
/// use mx_lab::{Fault, LabDns, ZoneSet};
///
/// let zones = ZoneSet::parse(
///     "$ORIGIN example.com.\n\
///      @ 3600 IN SOA ns hostmaster 1 3600 600 86400 300\n\
///      @ 300 IN MX 10 mx1\n\
///      mx1 300 IN A 192.0.2.1\n\
///      $FAULT mx1 servfail AAAA\n",
///     "<inline>",
///     None,
/// )?;
/// let lab = LabDns::start(&zones, "127.0.0.1:0".parse().unwrap()).await?;
/// lab.faults().set("example.com", Some("MX"), Fault::Timeout);
/// // ... point a resolver at lab.addr() ...
/// lab.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct LabDns {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for LabDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabDns")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

struct Shared {
    catalog: Catalog,
    faults: Faults,
    counts: Mutex<HashMap<(String, u16), QueryCount>>,
}

#[derive(Default)]
struct QueryCount {
    /// Every transport.
    all: u64,
    /// UDP only: the drop pattern counts these.
    udp: u64,
}

impl LabDns {
    /// Starts serving UDP and TCP on the same address and port. Port 0 picks a free port (the
    /// same for both). Faults declared in the zone text are installed in the fault table.
    ///
    /// Must be called inside a Tokio runtime; the server's tasks run on it.
    pub async fn start(zones: &ZoneSet, listen: SocketAddr) -> Result<LabDns, LabError> {
        let catalog = build_catalog(zones)?;
        let (udp, tcp, addr) = bind_pair(listen).await?;

        let faults = Faults::default();
        for (name, rtype, fault) in zones.faults() {
            faults.try_set(&name, rtype.as_deref(), fault)?;
        }
        let shared = Arc::new(Shared {
            catalog,
            faults,
            counts: Mutex::new(HashMap::new()),
        });

        let (stop, stop_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(udp_loop(udp, shared.clone(), stop_rx.clone())),
            tokio::spawn(tcp_accept_loop(tcp, shared.clone(), stop_rx)),
        ];
        info!(%addr, zones = ?zones.apexes(), "lab DNS serving");
        Ok(LabDns {
            addr,
            shared,
            stop,
            tasks,
        })
    }

    /// The address both transports listen on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The live fault table of this server.
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }

    /// Number of queries received for (`name`, `rtype`) since start, all transports, faulted
    /// or not. Name as in [`Faults::set`]; an unknown type counts 0.
    pub fn query_count(&self, name: &str, rtype: &str) -> u64 {
        let Ok(code) = parse_rtype(rtype) else {
            return 0;
        };
        let counts = self.shared.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .get(&(normalize_name(name), code))
            .map_or(0, |count| count.all)
    }

    /// Stops serving; when this returns the port is closed and every connection is gone.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if let Err(error) = task.await {
                warn!(%error, "lab DNS task ended abnormally");
            }
        }
        info!(addr = %self.addr, "lab DNS stopped");
    }
}

fn build_catalog(zones: &ZoneSet) -> Result<Catalog, LabError> {
    let mut catalog = Catalog::new();
    for zone in zones.zones() {
        let handler = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
            zone.apex.clone(),
            zone.records.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        )
        .map_err(|message| LabError::Zone {
            label: zones.label().to_owned(),
            apex: zone.apex.to_string(),
            message,
        })?;
        let handler: Arc<dyn ZoneHandler> = Arc::new(handler);
        catalog.upsert(LowerName::new(&zone.apex), vec![handler]);
    }
    Ok(catalog)
}

async fn bind_pair(listen: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), LabError> {
    let bind_error = |addr| move |source| LabError::Bind { addr, source };
    // Rejected UDP sockets stay open until we are done, so the kernel cannot hand the same
    // port out again on the next try.
    let mut rejected = Vec::new();
    loop {
        let udp = UdpSocket::bind(listen).await.map_err(bind_error(listen))?;
        let addr = udp.local_addr().map_err(bind_error(listen))?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp, addr)),
            // The kernel picked a UDP port whose TCP twin is taken: draw another.
            Err(error) if listen.port() == 0 && rejected.len() + 1 < BIND_TRIES => {
                debug!(%addr, %error, "TCP port busy, retrying with another UDP port");
                rejected.push(udp);
            }
            Err(source) => return Err(LabError::Bind { addr, source }),
        }
    }
}

/// What to do with one received message.
enum Plan {
    /// Not a DNS query we can read: ignore on UDP, close on TCP.
    Malformed,
    /// Deliberately no answer (a response sent to us, or the timeout fault).
    Drop,
    /// The truncate fault over TCP.
    Reset,
    /// An answer that is ready now.
    Reply(Vec<u8>),
    /// Answer from the catalog, possibly after a delay; done in its own task.
    Answer(Box<Request>, Option<Duration>),
}

impl Shared {
    fn plan(&self, raw: Vec<u8>, src: SocketAddr, protocol: Protocol) -> Plan {
        let request = match Request::from_bytes(raw, src, protocol) {
            Ok(request) => request,
            Err(error) => {
                debug!(%src, %protocol, %error, "malformed query");
                return Plan::Malformed;
            }
        };
        // Answering a response could start a loop with another server; stay silent.
        if request.metadata.message_type == MessageType::Response {
            return Plan::Drop;
        }
        let fault = match request.queries.queries() {
            [query] => {
                let name = query.name().to_string();
                let qtype = u16::from(query.query_type());
                debug!(%src, %protocol, %name, qtype = %query.query_type(), "query");
                let nth = self.count(&name, qtype, protocol);
                match self.faults.lookup(&name, qtype) {
                    Some(Fault::Drop(percent)) if protocol == Protocol::Udp => {
                        Fault::drops(percent, &name, nth).then_some(Fault::Timeout)
                    }
                    Some(Fault::Drop(_)) => None,
                    other => other,
                }
            }
            // Zero or several questions: let the catalog answer FORMERR.
            _ => None,
        };
        match fault {
            None | Some(Fault::Drop(_)) => Plan::Answer(Box::new(request), None),
            Some(Fault::Delay(delay)) => Plan::Answer(Box::new(request), Some(delay)),
            Some(Fault::Timeout) => Plan::Drop,
            Some(Fault::ServFail) => Plan::Reply(error_reply(&request, ResponseCode::ServFail)),
            Some(Fault::Refused) => Plan::Reply(error_reply(&request, ResponseCode::Refused)),
            Some(Fault::TruncateThenRefuseTcp) => match protocol {
                Protocol::Udp => Plan::Reply(truncated_reply(&request)),
                _ => Plan::Reset,
            },
        }
    }

    /// Counts the query; returns how many UDP queries for the same (name, type) came before
    /// it, which is what the drop pattern of [`Fault::Drop`] is keyed on.
    fn count(&self, name: &str, qtype: u16, protocol: Protocol) -> u64 {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry((name.to_owned(), qtype)).or_default();
        count.all += 1;
        if protocol != Protocol::Udp {
            return 0;
        }
        count.udp += 1;
        count.udp - 1
    }

    async fn answer(&self, request: Box<Request>, delay: Option<Duration>) -> Option<Vec<u8>> {
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let capture = Capture::new(request.protocol());
        self.catalog
            .handle_request::<_, TokioTime>(&request, capture.clone())
            .await;
        capture.take()
    }
}

fn error_reply(request: &Request, code: ResponseCode) -> Vec<u8> {
    let response =
        MessageResponseBuilder::from_message_request(request).error_msg(&request.metadata, code);
    encode(response, request.protocol()).1
}

fn truncated_reply(request: &Request) -> Vec<u8> {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.truncation = true;
    metadata.authoritative = true;
    let response = MessageResponseBuilder::from_message_request(request).build_no_records(metadata);
    encode(response, request.protocol()).1
}

/// hickory's own `MessageResponse::encode` is crate-private; this is the same logic: cap UDP
/// answers at the client's EDNS size (512 without EDNS), letting the encoder drop records that
/// do not fit and set TC, and fall back to a bare SERVFAIL if encoding fails.
fn encode<'a, A, N, S, D>(
    response: MessageResponse<'_, 'a, A, N, S, D>,
    protocol: Protocol,
) -> (ResponseInfo, Vec<u8>)
where
    A: Iterator<Item = &'a Record> + Send + 'a,
    N: Iterator<Item = &'a Record> + Send + 'a,
    S: Iterator<Item = &'a Record> + Send + 'a,
    D: Iterator<Item = &'a Record> + Send + 'a,
{
    let id = response.metadata().id;
    let max_size = match protocol {
        Protocol::Udp => response.edns().map_or(UDP_CLASSIC_MAX, |edns| {
            edns.max_payload().max(UDP_CLASSIC_MAX)
        }),
        _ => u16::MAX,
    };
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max_size);
    let error = match response.destructive_emit(&mut encoder) {
        Ok(info) => return (info, bytes),
        Err(error) => error,
    };
    warn!(%error, id, "cannot encode response, sending SERVFAIL");
    servfail_header(id)
}

fn servfail_header(id: u16) -> (ResponseInfo, Vec<u8>) {
    let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    let mut bytes = Vec::with_capacity(12);
    let mut encoder = BinEncoder::new(&mut bytes);
    if let Err(error) = header.emit(&mut encoder) {
        warn!(%error, "cannot encode SERVFAIL header");
    }
    (ResponseInfo::from(header), bytes)
}

/// A ResponseHandler that keeps the encoded answer instead of sending it, so the transport
/// (and the faults) stay ours.
#[derive(Clone)]
struct Capture {
    protocol: Protocol,
    out: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Capture {
    fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            out: Arc::new(Mutex::new(None)),
        }
    }

    fn take(&self) -> Option<Vec<u8>> {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let (info, bytes) = encode(response, self.protocol);
        *self.out.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes);
        Ok(info)
    }
}

async fn udp_loop(socket: UdpSocket, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // Answers come back from the per-query tasks through this channel, so that only this loop
    // owns the socket and closing it on shutdown is immediate.
    let (tx, mut rx) = mpsc::channel::<(Vec<u8>, SocketAddr)>(256);
    let mut inflight = JoinSet::new();
    let mut buf = vec![0u8; 65_535];
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            received = socket.recv_from(&mut buf) => {
                let (len, src) = match received {
                    Ok(received) => received,
                    Err(error) => {
                        // e.g. an ICMP error surfacing from an earlier send; the socket is fine.
                        debug!(%error, "UDP receive error");
                        continue;
                    }
                };
                match shared.plan(buf[..len].to_vec(), src, Protocol::Udp) {
                    Plan::Malformed | Plan::Drop | Plan::Reset => {}
                    Plan::Reply(bytes) => send_udp(&socket, &bytes, src).await,
                    Plan::Answer(request, delay) => {
                        let shared = shared.clone();
                        let tx = tx.clone();
                        inflight.spawn(async move {
                            if let Some(bytes) = shared.answer(request, delay).await {
                                let _ = tx.send((bytes, src)).await;
                            }
                        });
                    }
                }
            }
            Some((bytes, dst)) = rx.recv() => send_udp(&socket, &bytes, dst).await,
            Some(joined) = inflight.join_next(), if !inflight.is_empty() => log_join(joined),
        }
    }
    drop(socket);
    inflight.shutdown().await;
}

async fn send_udp(socket: &UdpSocket, bytes: &[u8], dst: SocketAddr) {
    if let Err(error) = socket.send_to(bytes, dst).await {
        debug!(%dst, %error, "UDP send failed");
    }
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined
        && error.is_panic()
    {
        warn!(%error, "lab DNS request task panicked");
    }
}

async fn tcp_accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, src)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_tcp(stream, src, shared.clone(), stop.clone()));
                }
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning on the error.
                    warn!(%error, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => log_join(joined),
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// One TCP connection: RFC 7766 framing, several (pipelined) queries, answers written in the
/// order they become ready.
async fn serve_tcp(
    mut stream: TcpStream,
    src: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let mut inflight = JoinSet::new();
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut reading = true;
    let idle = tokio::time::sleep(TCP_IDLE);
    tokio::pin!(idle);

    loop {
        if !reading && inflight.is_empty() {
            // The client half-closed: flush what is already answered, then close.
            while let Ok(bytes) = rx.try_recv() {
                if write_frame(&mut stream, &bytes).await.is_err() {
                    break;
                }
            }
            break;
        }
        tokio::select! {
            _ = stop.changed() => break,
            read = stream.read(&mut chunk), if reading => {
                match read {
                    Ok(0) => reading = false,
                    Ok(n) => {
                        idle.as_mut().reset(Instant::now() + TCP_IDLE);
                        buf.extend_from_slice(&chunk[..n]);
                        let mut ready = Vec::new();
                        let outcome = take_frames(&mut buf, &shared, src, &tx, &mut inflight, &mut ready);
                        if let Err(error) = write_frames(&mut stream, &ready).await {
                            debug!(%src, %error, "TCP write failed");
                            break;
                        }
                        match outcome {
                            Ok(()) => {}
                            Err(Close::Malformed) => {
                                debug!(%src, "malformed TCP query, closing");
                                break;
                            }
                            Err(Close::Reset) => {
                                debug!(%src, "truncate fault: resetting TCP connection");
                                // SO_LINGER 0 turns the close into a RST, which is what a
                                // server refusing TCP looks like to the client.
                                if let Err(error) = stream.set_zero_linger() {
                                    debug!(%error, "cannot set SO_LINGER 0");
                                }
                                break;
                            }
                        }
                    }
                    Err(error) => {
                        debug!(%src, %error, "TCP read failed");
                        break;
                    }
                }
            }
            Some(bytes) = rx.recv() => {
                idle.as_mut().reset(Instant::now() + TCP_IDLE);
                if let Err(error) = write_frame(&mut stream, &bytes).await {
                    debug!(%src, %error, "TCP write failed");
                    break;
                }
            }
            Some(joined) = inflight.join_next(), if !inflight.is_empty() => log_join(joined),
            _ = &mut idle, if inflight.is_empty() => {
                debug!(%src, "idle TCP connection closed");
                break;
            }
        }
    }
    // Close (or reset) before waiting for the aborted tasks: the client must see it at once.
    drop(stream);
    inflight.shutdown().await;
}

enum Close {
    Malformed,
    Reset,
}

/// Handles every complete frame in `buf`, leaving a partial one for the next read. Answers
/// available at once go to `ready`; the others are spawned and come back through `tx`.
fn take_frames(
    buf: &mut Vec<u8>,
    shared: &Arc<Shared>,
    src: SocketAddr,
    tx: &mpsc::Sender<Vec<u8>>,
    inflight: &mut JoinSet<()>,
    ready: &mut Vec<Vec<u8>>,
) -> Result<(), Close> {
    let mut offset = 0;
    let result = loop {
        let Some(header) = buf.get(offset..offset + 2) else {
            break Ok(());
        };
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if len == 0 {
            break Err(Close::Malformed);
        }
        let Some(message) = buf.get(offset + 2..offset + 2 + len) else {
            break Ok(());
        };
        let message = message.to_vec();
        offset += 2 + len;
        match shared.plan(message, src, Protocol::Tcp) {
            Plan::Malformed => break Err(Close::Malformed),
            Plan::Reset => break Err(Close::Reset),
            Plan::Drop => {}
            Plan::Reply(bytes) => ready.push(bytes),
            Plan::Answer(request, delay) => {
                let shared = shared.clone();
                let tx = tx.clone();
                inflight.spawn(async move {
                    if let Some(bytes) = shared.answer(request, delay).await {
                        let _ = tx.send(bytes).await;
                    }
                });
            }
        }
    };
    buf.drain(..offset);
    result
}

async fn write_frames(stream: &mut TcpStream, frames: &[Vec<u8>]) -> std::io::Result<()> {
    for bytes in frames {
        write_frame(stream, bytes).await?;
    }
    Ok(())
}

async fn write_frame(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(bytes.len())
        .map_err(|_| std::io::Error::other("response too large for TCP framing"))?;
    let mut frame = Vec::with_capacity(bytes.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).await
}
