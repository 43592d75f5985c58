//! Datagrams in bursts: on Linux one `recvmmsg` takes every answer already queued on a socket
//! (up to [`BATCH`]) per wake-up, instead of one `recvfrom` each; elsewhere the plain path.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Datagrams taken per system call.
pub const BATCH: usize = 32;
/// Room for any UDP datagram, as the plain path has: an answer larger than the EDNS size we
/// advertise is still read whole. Only the pages a datagram touches are ever resident.
const SLOT: usize = 65_535;

/// Receive buffers for one socket's loop, reused for every burst.
pub struct RecvBatch {
    buffers: Vec<u8>,
    /// Length and source of each datagram of the last burst.
    received: Vec<(usize, SocketAddr)>,
    #[cfg(target_os = "linux")]
    sources: Vec<libc::sockaddr_storage>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        RecvBatch {
            buffers: vec![0u8; BATCH * SLOT],
            received: Vec::with_capacity(BATCH),
            #[cfg(target_os = "linux")]
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid (AF_UNSPEC) value.
            sources: vec![unsafe { std::mem::zeroed() }; BATCH],
        }
    }

    /// Waits for at least one datagram and returns every one the socket had queued (up to
    /// [`BATCH`]). Receive errors (an ICMP error surfacing from an earlier send) are logged
    /// and skipped: the socket is still fine.
    pub async fn receive(
        &mut self,
        socket: &UdpSocket,
    ) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.received.clear();
        while self.received.is_empty() {
            if let Err(error) = self.fill(socket).await {
                tracing::debug!(%error, "UDP receive error");
            }
        }
        let buffers = &self.buffers;
        self.received
            .iter()
            .enumerate()
            .map(move |(i, (len, source))| (&buffers[i * SLOT..i * SLOT + len], *source))
    }

    #[cfg(not(target_os = "linux"))]
    async fn fill(&mut self, socket: &UdpSocket) -> std::io::Result<()> {
        let (len, source) = socket.recv_from(&mut self.buffers[..SLOT]).await?;
        self.received.push((len, source));
        Ok(())
    }

    #[cfg(target_os = "linux")]
    async fn fill(&mut self, socket: &UdpSocket) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        use tokio::io::Interest;
        loop {
            socket.readable().await?;
            // try_io clears the readiness when the call reports WouldBlock, so the next
            // readable() really waits for the kernel.
            match socket.try_io(Interest::READABLE, || self.recvmmsg(socket.as_raw_fd())) {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn recvmmsg(&mut self, fd: std::os::fd::RawFd) -> std::io::Result<()> {
        // SAFETY: all-zero iovec and mmsghdr values are valid (null pointers, zero lengths);
        // every one the kernel sees is filled in below.
        let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, ((iovec, header), source)) in iovecs
            .iter_mut()
            .zip(headers.iter_mut())
            .zip(self.sources.iter_mut())
            .enumerate()
        {
            iovec.iov_base = self.buffers[i * SLOT..].as_mut_ptr().cast();
            iovec.iov_len = SLOT;
            header.msg_hdr.msg_name = std::ptr::from_mut(source).cast();
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `headers` holds BATCH entries, each pointing at its own iovec (SLOT bytes
        // inside `buffers`, which is BATCH * SLOT long) and its own sockaddr_storage with its
        // true size; all of them outlive the call, and nothing else touches them meanwhile.
        // MSG_DONTWAIT: the socket is non-blocking anyway; readiness comes from tokio.
        let count = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        let count = usize::try_from(count).map_err(|_| std::io::Error::last_os_error())?;
        for (header, source) in headers.iter().zip(&self.sources).take(count) {
            // A source of another family cannot come from the server asked: dropped.
            if let Some(source) = socket_addr(source, header.msg_hdr.msg_namelen) {
                let len = (header.msg_len as usize).min(SLOT);
                self.received.push((len, source));
            }
        }
        Ok(())
    }
}

/// The address the kernel wrote into a `sockaddr_storage` (`len` bytes of it), read by
/// socket2; `None` for a family other than IPv4 and IPv6.
#[cfg(target_os = "linux")]
fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let mut copy = socket2::SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_storage` is one of this platform's `sockaddr_*` types.
    unsafe { *copy.view_as::<libc::sockaddr_storage>() = *storage };
    // SAFETY: the kernel initialised the address, and `len` is the length it reported.
    unsafe { socket2::SockAddr::new(copy, len) }.as_socket()
}

/// A query waiting in a socket's outbox, with what identifies its wait (to fail it if the
/// send fails); its bytes are in the outbox's buffer.
#[cfg(target_os = "linux")]
pub struct Outgoing {
    start: usize,
    len: usize,
    pub to: SocketAddr,
    pub id: u16,
    pub token: u64,
}

/// The queries waiting for a socket's sender, their bytes one after another in one buffer:
/// the sender swaps the whole outbox for its emptied one, so after the first bursts no query
/// allocates a buffer of its own (one allocated by the asking task and freed by the sender,
/// often on the other thread).
#[cfg(target_os = "linux")]
#[derive(Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    queries: Vec<Outgoing>,
}

#[cfg(target_os = "linux")]
impl Outbox {
    pub fn push(&mut self, datagram: &[u8], to: SocketAddr, id: u16, token: u64) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(datagram);
        self.queries.push(Outgoing {
            start,
            len: datagram.len(),
            to,
            id,
            token,
        });
    }

    pub fn queries(&self) -> &[Outgoing] {
        &self.queries
    }

    pub fn len(&self) -> usize {
        self.queries.len()
    }

    /// Empties the outbox, keeping its buffers for the next burst.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.queries.clear();
    }

    fn datagram(&self, query: &Outgoing) -> &[u8] {
        &self.bytes[query.start..query.start + query.len]
    }
}

/// Sends the queries of `outbox` from the `from`-th on (up to [`BATCH`] of them) with one
/// `sendmmsg`, waiting while the socket's send buffer is full. Returns how many went out; an
/// error is the first datagram's own (the caller fails that query and goes on with the next).
#[cfg(target_os = "linux")]
pub async fn send(socket: &UdpSocket, outbox: &Outbox, from: usize) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    use tokio::io::Interest;
    let queue = &outbox.queries[from..];
    let queue = &queue[..queue.len().min(BATCH)];
    let addresses: Vec<socket2::SockAddr> = queue
        .iter()
        .map(|q| socket2::SockAddr::from(q.to))
        .collect();
    loop {
        socket.writable().await?;
        let sent = socket.try_io(Interest::WRITABLE, || {
            sendmmsg(socket.as_raw_fd(), outbox, queue, &addresses)
        });
        match sent {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

#[cfg(target_os = "linux")]
fn sendmmsg(
    fd: std::os::fd::RawFd,
    outbox: &Outbox,
    queue: &[Outgoing],
    addresses: &[socket2::SockAddr],
) -> std::io::Result<usize> {
    // SAFETY: all-zero iovec and mmsghdr values are valid (null pointers, zero lengths);
    // the first `queue.len()` of each are filled in below, and only those are passed.
    let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (((query, address), iovec), header) in queue
        .iter()
        .zip(addresses)
        .zip(iovecs.iter_mut())
        .zip(headers.iter_mut())
    {
        let datagram = outbox.datagram(query);
        iovec.iov_base = datagram.as_ptr().cast_mut().cast();
        iovec.iov_len = datagram.len();
        header.msg_hdr.msg_name = address.as_ptr().cast_mut().cast();
        header.msg_hdr.msg_namelen = address.len();
        header.msg_hdr.msg_iov = iovec;
        header.msg_hdr.msg_iovlen = 1;
    }
    let count = queue.len().min(addresses.len()).min(BATCH);
    // SAFETY: the first `count` headers point at live iovecs over the queries' own bytes in
    // the outbox and at live socket addresses of the stated lengths; the kernel only reads
    // through them (sendmmsg writes nothing but each header's msg_len), and all of it outlives
    // the call.
    let sent = unsafe {
        libc::sendmmsg(
            fd,
            headers.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT as _,
        )
    };
    usize::try_from(sent).map_err(|_| std::io::Error::last_os_error())
}
