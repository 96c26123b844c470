//! What a hostile grid member sends, one function per attack, so the abuse suite
//! (`host/cli/tests/abuse_cli.rs`, against a debug node in `make test`) and `marsh-abuse`
//! (release figures for `make bench`-style notes) run exactly the same requests. Each returns
//! what the server answered; the caller reads the server's memory and descriptors from `/proc`.

use http::{Method, Request, StatusCode};
use http_body_util::Full;

use crate::{CallError, ClientError, GbsClient, Nurl, Secrets, allocate_body, rtw_body, rtw_body_shares};

/// What one attack got back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The status of each request, in order, collapsed to one entry per distinct run.
    pub statuses: Vec<(StatusCode, usize)>,
    /// Requests that got no answer: the server closed the connection while the client was
    /// still sending (as it does when it refuses a large body without reading it).
    pub closed: usize,
}

impl Outcome {
    fn push(&mut self, status: StatusCode) {
        match self.statuses.last_mut() {
            Some((s, n)) if *s == status => *n += 1,
            _ => self.statuses.push((status, 1)),
        }
    }

    /// Whether every request was answered `status`.
    pub fn all(&self, status: StatusCode) -> bool {
        self.statuses.iter().all(|(s, _)| *s == status)
    }
}

/// A mutable share of `size` bytes made with one byte at its end (sparse on a disk backend), then
/// one read-test-write reading all of it back. The statuses: the write, then the read. (Since
/// issue 28 the write is refused: it leaves more than 4 KiB unwritten past the share's end.)
pub async fn sparse_slot_read(nurl: &Nurl, si: &str, size: u64) -> Result<Outcome, ClientError> {
    let mut client = GbsClient::connect(nurl).await?;
    let secrets = Secrets::from_seed(0x51);
    let mut out = Outcome::default();
    let create = rtw_body(0, &[], &[(size - 1, b"!")], &[]);
    out.push(client.read_test_write(si, &secrets, create).await?.status);
    let read = rtw_body_shares(&[(0, vec![], vec![], None)], &[(0, size)]);
    out.push(client.read_test_write(si, &secrets, read).await?.status);
    Ok(out)
}

/// A mutable share of `size` bytes written in full (4 MiB a request), then one read-test-write
/// whose read vector asks for 1 GiB of it. The statuses: the writes, then the read.
pub async fn large_slot_read(nurl: &Nurl, si: &str, size: u64) -> Result<Outcome, ClientError> {
    let mut client = GbsClient::connect(nurl).await?;
    let secrets = Secrets::from_seed(0x59);
    let mut out = Outcome::default();
    let piece = vec![0x59u8; 4 << 20];
    let mut offset = 0;
    while offset < size {
        let len = (size - offset).min(piece.len() as u64) as usize;
        let body = rtw_body(0, &[], &[(offset, &piece[..len])], &[]);
        out.push(client.read_test_write(si, &secrets, body).await?.status);
        offset += len as u64;
    }
    let read = rtw_body_shares(&[(0, vec![], vec![], None)], &[(0, 1 << 30)]);
    out.push(client.read_test_write(si, &secrets, read).await?.status);
    Ok(out)
}

/// A read-test-write body of `items` one-byte CBOR items in one `write` array (8 million make a
/// 15 MiB body that decodes into some 1.3 GB of values).
pub fn tiny_items_body(items: u32) -> Vec<u8> {
    let mut body = vec![0xa2, 0x72];
    body.extend(b"test-write-vectors");
    body.extend([0xa1, 0x00, 0xa3, 0x64]);
    body.extend(b"test");
    body.extend([0x80, 0x65]);
    body.extend(b"write");
    body.push(0x9a);
    body.extend(items.to_be_bytes());
    // Each item is `{"offset": 0, "data": h''}` cut to its smallest valid shape: an empty map.
    body.extend(std::iter::repeat_n(0xa0, items as usize));
    body.extend(b"\x6anew-length\xf6\x6bread-vector\x80");
    body
}

/// One read-test-write with [`tiny_items_body`].
pub async fn tiny_items(nurl: &Nurl, si: &str, items: u32) -> Result<Outcome, ClientError> {
    let mut client = GbsClient::connect(nurl).await?;
    let mut out = Outcome::default();
    out.push(client.read_test_write(si, &Secrets::from_seed(0x52), tiny_items_body(items)).await?.status);
    Ok(out)
}

/// `rounds` allocations, each of `shares` zero-sized shares of a fresh storage index, with an
/// upload secret of `secret_len` bytes (Tahoe's are 32). Returns the statuses and how many
/// shares were allocated in all.
pub async fn zero_allocations(
    nurl: &Nurl,
    rounds: u32,
    shares: u64,
    secret_len: usize,
) -> Result<(Outcome, u64), ClientError> {
    let mut client = GbsClient::connect(nurl).await?;
    let upload = vec![0x53; secret_len];
    let lease = Secrets::from_seed(0x53);
    let numbers: Vec<u64> = (0..shares).collect();
    let mut out = Outcome::default();
    let mut allocated = 0;
    for round in 0..rounds {
        let mut si = [0x53u8; 16];
        si[..4].copy_from_slice(&round.to_be_bytes());
        let si = data_encoding::BASE32_NOPAD.encode(&si).to_ascii_lowercase();
        let secrets: [(&str, &[u8]); 3] =
            [("lease-renew-secret", &lease.renew), ("lease-cancel-secret", &lease.cancel), ("upload-secret", &upload)];
        let r =
            client.call(Method::POST, &format!("immutable/{si}"), &secrets, &[], allocate_body(&numbers, 0)).await?;
        out.push(r.status);
        if r.status == StatusCode::OK {
            allocated += allocated_count(&r.body);
        }
    }
    Ok((out, allocated))
}

/// How many shares an allocate answer lists as allocated.
fn allocated_count(body: &[u8]) -> u64 {
    let Ok(ciborium::value::Value::Map(m)) = ciborium::de::from_reader::<ciborium::value::Value, _>(body) else {
        return 0;
    };
    m.iter()
        .find(|(k, _)| k.as_text() == Some("allocated"))
        .and_then(|(_, v)| match v {
            ciborium::value::Value::Tag(_, inner) => inner.as_array().map(|a| a.len() as u64),
            _ => None,
        })
        .unwrap_or(0)
}

/// Downloads that are asked for and never read: each on its own connection, the answer's head
/// received and its body left unread. Held until the value is dropped.
#[derive(Debug)]
pub struct Stalled {
    /// The unread answers, with their connections.
    pub answers: Vec<(GbsClient, http::Response<hyper::body::Incoming>)>,
}

/// `n` downloads of share `shnum` of `si`, whole, never read.
pub async fn stalled_downloads(nurl: &Nurl, si: &str, shnum: u64, n: usize) -> Result<Stalled, ClientError> {
    let mut answers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut client = GbsClient::connect(nurl).await?;
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("/storage/v1/immutable/{si}/{shnum}"))
            .header("host", "tahoe-lafs")
            .header("authorization", client.authorization.clone())
            .body(Full::default())
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let answer = client.send_unread(req).await?;
        answers.push((client, answer));
    }
    Ok(Stalled { answers })
}

/// Upload a share of `size` bytes (pseudo-random content), for [`stalled_downloads`].
pub async fn upload_share(nurl: &Nurl, si: &str, size: usize) -> Result<(), CallError> {
    let mut client = GbsClient::connect(nurl).await?;
    let data: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let secrets = Secrets::from_seed(0x54);
    let allocated = client.allocate(si, &secrets, &[0], size as u64).await?;
    if allocated.status != StatusCode::OK {
        return Err(CallError::Status { what: "allocate", status: allocated.status, body: String::new() });
    }
    for (i, chunk) in data.chunks(4 << 20).enumerate() {
        let r = client.write(si, 0, &secrets, (i * (4 << 20)) as u64, chunk).await?;
        if !matches!(r.status, StatusCode::OK | StatusCode::CREATED) {
            return Err(CallError::Status { what: "write", status: r.status, body: String::new() });
        }
    }
    Ok(())
}

/// `n` read-test-writes sent at once, each on its own connection, each writing `size` bytes at
/// offset 0 of share 0 of `si` with the same write enabler: bodies that queue behind the
/// slot's lock (and, on a node that bounds the bodies it holds, behind that bound).
pub async fn queued_bodies(nurl: &Nurl, si: &str, n: usize, size: usize) -> Result<Outcome, ClientError> {
    let data = vec![0x5a; size];
    let body = bytes::Bytes::from(rtw_body(0, &[], &[(0, &data)], &[]));
    drop(data);
    let secrets = Secrets::from_seed(0x55);
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (nurl, si, body, secrets) = (nurl.clone(), si.to_owned(), body.clone(), secrets.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = GbsClient::connect(&nurl).await?;
            let [renew, cancel] = secrets.lease();
            let all = [("write-enabler", secrets.write_enabler.as_slice()), renew, cancel];
            client.call(Method::POST, &format!("mutable/{si}/read-test-write"), &all, &[], body).await
        }));
    }
    let mut out = Outcome::default();
    let mut statuses = Vec::with_capacity(n);
    for task in tasks {
        match task.await.map_err(|e| ClientError::Http(e.to_string()))? {
            Ok(reply) => statuses.push(reply.status),
            Err(ClientError::Http(_)) => out.closed += 1,
            Err(e) => return Err(e),
        }
    }
    statuses.sort();
    for status in statuses {
        out.push(status);
    }
    Ok(out)
}

/// A request body fed by the caller a piece at a time.
#[derive(Debug)]
struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|piece| piece.map(|p| Ok(hyper::body::Frame::data(p))))
    }
}

/// An upload being trickled: its PATCH goes on (and its connection stays open) until this is
/// dropped.
#[derive(Debug)]
pub struct Trickle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Allocate share 0 of `si` (`size` bytes) with the secrets of `seed`, then send one PATCH of
/// the whole share whose body arrives at `bytes_per_second` (in pieces once a second), for as
/// long as the returned [`Trickle`] is held. Returns once the first piece is on its way.
pub async fn trickled_upload(
    nurl: &Nurl,
    si: &str,
    size: u64,
    bytes_per_second: usize,
    seed: u8,
) -> Result<Trickle, CallError> {
    let secrets = Secrets::from_seed(seed);
    let mut client = GbsClient::connect(nurl).await?;
    let allocated = client.allocate(si, &secrets, &[0], size).await?;
    if allocated.status != StatusCode::OK {
        return Err(CallError::Status { what: "allocate", status: allocated.status, body: String::new() });
    }
    let tls = crate::tls_stream(nurl).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, ChannelBody>(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let (feed, body) = tokio::sync::mpsc::channel(1);
    let req = Request::builder()
        .method(Method::PATCH)
        .uri(format!("/storage/v1/immutable/{si}/0"))
        .header("host", "tahoe-lafs")
        .header("authorization", crate::authorization(nurl))
        .header("content-range", format!("bytes 0-{}/*", size - 1))
        .header("content-length", size.to_string())
        .header("x-tahoe-authorization", format!("upload-secret {}", data_encoding::BASE64.encode(&secrets.upload)))
        .body(ChannelBody(body))
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let task = tokio::spawn(async move {
        let connection = tokio::spawn(conn);
        let answer = tokio::spawn(sender.send_request(req));
        let mut sent = 0u64;
        while sent < size {
            let piece = (bytes_per_second as u64).min(size - sent);
            if feed.send(bytes::Bytes::from(vec![0x57; piece as usize])).await.is_err() {
                break;
            }
            sent += piece;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        let _ = answer.await;
        connection.abort();
    });
    Ok(Trickle { task })
}

/// Open `per_source` TCP connections to `addr` from each of `sources` (local addresses to bind,
/// e.g. `127.0.0.2`..), and never start TLS on them. Held until dropped.
pub async fn unstarted_connections(
    addr: std::net::SocketAddr,
    sources: &[std::net::IpAddr],
    per_source: usize,
) -> std::io::Result<Vec<tokio::net::TcpStream>> {
    let mut held = Vec::with_capacity(sources.len() * per_source);
    for source in sources {
        for _ in 0..per_source {
            let socket =
                if source.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.bind(std::net::SocketAddr::new(*source, 0))?;
            held.push(socket.connect(addr).await?);
        }
    }
    Ok(held)
}

/// The `available-space` a server's `version` answer states.
pub async fn available_space(nurl: &Nurl) -> Result<u64, ClientError> {
    use ciborium::value::Value;
    let mut client = GbsClient::connect(nurl).await?;
    let reply = client.call(Method::GET, "version", &[], &[], Vec::new()).await?;
    let bad = || ClientError::Http("a version answer without available-space".into());
    let Ok(Value::Map(top)) = ciborium::de::from_reader::<Value, _>(&reply.body[..]) else { return Err(bad()) };
    let v1 = top
        .iter()
        .find(|(k, _)| k.as_bytes().is_some_and(|k| k.ends_with(b"storage/v1")))
        .and_then(|(_, v)| v.as_map())
        .ok_or_else(bad)?;
    v1.iter()
        .find(|(k, _)| k.as_bytes().is_some_and(|k| k == b"available-space"))
        .and_then(|(_, v)| v.as_integer())
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(bad)
}

/// One read-test-write of a single byte at `offset` of share 0 of a fresh `si`: a share that
/// claims `offset + 1` bytes for one byte sent. Its status.
pub async fn sparse_claim(nurl: &Nurl, si: &str, offset: u64) -> Result<StatusCode, ClientError> {
    let mut client = GbsClient::connect(nurl).await?;
    let body = rtw_body(0, &[], &[(offset, b"!")], &[]);
    Ok(client.read_test_write(si, &Secrets::from_seed(0x58), body).await?.status)
}
