//! The data plane between nodes: a framed, credit-based duplex link over one byte stream
//! (a TCP connection to the peer address).
//!
//! A frame is a 4-byte big-endian length, a 1-byte kind and a body: `DATA` (one message as
//! JSON), `CREDIT` (a 4-byte count) or `PING` (empty). Each side may have at most `window`
//! data frames that the other has not yet taken: a sender spends one credit per message and
//! waits when it has none; a receiver grants a credit back each time its consumer takes a
//! message. So a consumer that stops taking stops its producer on the other machine, and
//! neither side buffers more than `window` messages: backpressure crosses the network and
//! memory stays bounded.
//!
//! The reading half never blocks on the consumer (there is room for every message the peer
//! may send), so credits keep flowing both ways. Both sides ping while idle; a link on which
//! nothing arrives for [`SILENCE`] is broken, as is one that ends, fails, or breaks the
//! credit rule. Every broken link ends with an error that names why.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{Semaphore, mpsc};

const DATA: u8 = 0;
const CREDIT: u8 = 1;
const PING: u8 = 2;

/// The largest frame accepted (a batch of records as JSON).
pub const MAX_FRAME: usize = 256 * 1024 * 1024;
/// How often an idle side pings.
pub const PING_EVERY: Duration = Duration::from_secs(2);
/// How long a side waits for any frame before it calls the link broken.
pub const SILENCE: Duration = Duration::from_secs(10);

/// Why a link broke.
#[derive(Clone, Debug, thiserror::Error)]
#[error("the data link to {peer}: {reason}")]
pub struct LinkError {
    pub peer: String,
    pub reason: String,
}

/// Why the link broke, shared by its halves.
#[derive(Default)]
struct Broken(Mutex<Option<String>>);

impl Broken {
    fn set(&self, reason: String) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(reason);
        }
    }
    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

enum Outgoing {
    Data(Vec<u8>),
    Credit(u32),
}

/// Sends messages, one credit each.
pub struct LinkSender<T> {
    peer: String,
    credits: Arc<Semaphore>,
    out: mpsc::UnboundedSender<Outgoing>,
    broken: Arc<Broken>,
    _t: std::marker::PhantomData<fn(T)>,
}

/// Receives messages and grants a credit back for each.
pub struct LinkReceiver<T> {
    peer: String,
    rx: mpsc::Receiver<Vec<u8>>,
    out: mpsc::UnboundedSender<Outgoing>,
    broken: Arc<Broken>,
    _t: std::marker::PhantomData<fn() -> T>,
}

/// Opens a link over `io`: messages of type `Out` go to the peer, messages of type `In` come
/// from it, each direction with `window` credits. `peer` names the other side in errors.
/// The link's tasks end when both halves are dropped or the stream breaks.
pub fn open<Out, In, Io>(io: Io, window: u32, peer: impl Into<String>) -> (LinkSender<Out>, LinkReceiver<In>)
where
    Out: Serialize,
    In: DeserializeOwned,
    Io: AsyncRead + AsyncWrite + Send + 'static,
{
    let peer = peer.into();
    let window = window.max(1);
    let (read, write) = tokio::io::split(io);
    let credits = Arc::new(Semaphore::new(window as usize));
    let broken = Arc::new(Broken::default());
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::channel(window as usize);
    tokio::spawn(read_frames(BufReader::with_capacity(256 * 1024, read), in_tx, credits.clone(), broken.clone()));
    tokio::spawn(write_frames(BufWriter::with_capacity(256 * 1024, write), out_rx, broken.clone(), credits.clone()));
    let sender = LinkSender { peer: peer.clone(), credits, out: out_tx.clone(), broken: broken.clone(), _t: Default::default() };
    let receiver = LinkReceiver { peer, rx: in_rx, out: out_tx, broken, _t: Default::default() };
    (sender, receiver)
}

impl<T: Serialize> LinkSender<T> {
    /// Sends one message once the peer has room for it.
    pub async fn send(&self, msg: &T) -> Result<(), LinkError> {
        self.send_as(msg).await
    }

    /// Sends a value that encodes as a `T` does (a borrowed form of one, say).
    pub async fn send_as<U: Serialize + ?Sized>(&self, msg: &U) -> Result<(), LinkError> {
        let body = serde_json::to_vec(msg).map_err(|e| self.error(format!("cannot encode a message: {e}")))?;
        if body.len() > MAX_FRAME {
            return Err(self.error(format!("a message of {} bytes is over the frame limit of {MAX_FRAME}", body.len())));
        }
        match self.credits.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(self.error("the link is closed".into())),
        }
        self.out.send(Outgoing::Data(body)).map_err(|_| self.error("the link is closed".into()))
    }

    fn error(&self, fallback: String) -> LinkError {
        LinkError { peer: self.peer.clone(), reason: self.broken.get().unwrap_or(fallback) }
    }
}

impl<T: DeserializeOwned> LinkReceiver<T> {
    /// The next message; an error when the link broke or ended.
    pub async fn recv(&mut self) -> Result<T, LinkError> {
        let Some(body) = self.rx.recv().await else {
            return Err(LinkError { peer: self.peer.clone(), reason: self.broken.get().unwrap_or_else(|| "the link is closed".into()) });
        };
        let _ = self.out.send(Outgoing::Credit(1));
        serde_json::from_slice(&body).map_err(|e| LinkError { peer: self.peer.clone(), reason: format!("a message that does not decode: {e}") })
    }
}

async fn read_frames<R: AsyncRead + Unpin>(mut r: R, to_consumer: mpsc::Sender<Vec<u8>>, credits: Arc<Semaphore>, broken: Arc<Broken>) {
    let reason = loop {
        let frame = match tokio::time::timeout(SILENCE, read_frame(&mut r)).await {
            Err(_) => break format!("nothing arrived for {} s", SILENCE.as_secs()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break "the peer closed the connection".to_string(),
            Ok(Err(e)) => break format!("reading: {e}"),
            Ok(Ok(f)) => f,
        };
        match frame {
            (DATA, body) => match to_consumer.try_send(body) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => break "the peer sent more than its credits".to_string(),
                // The receiving half is gone: nobody reads any more.
                Err(mpsc::error::TrySendError::Closed(_)) => break "the receiver was dropped".to_string(),
            },
            (CREDIT, body) if body.len() == 4 => {
                let n = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
                if credits.available_permits() + n > Semaphore::MAX_PERMITS / 2 {
                    break "the peer granted too many credits".to_string();
                }
                credits.add_permits(n);
            }
            (PING, _) => {}
            (kind, _) => break format!("a frame of unknown kind {kind}"),
        }
    };
    broken.set(reason);
    // Wakes a sender waiting for credit: it fails instead of hanging.
    credits.close();
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let len = r.read_u32().await? as usize;
    if len == 0 || len > MAX_FRAME + 1 {
        return Err(std::io::Error::other(format!("a frame of {len} bytes")));
    }
    let kind = r.read_u8().await?;
    let mut body = vec![0u8; len - 1];
    r.read_exact(&mut body).await?;
    Ok((kind, body))
}

async fn write_frames<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::UnboundedReceiver<Outgoing>, broken: Arc<Broken>, credits: Arc<Semaphore>) {
    let result: std::io::Result<()> = async {
        loop {
            let msg = match tokio::time::timeout(PING_EVERY, rx.recv()).await {
                Err(_) => {
                    write_frame(&mut w, PING, &[]).await?;
                    w.flush().await?;
                    continue;
                }
                Ok(None) => return Ok(()),
                Ok(Some(m)) => m,
            };
            // Coalesce what is queued (credits especially) before one flush.
            let mut credit = 0u32;
            let mut next = Some(msg);
            while let Some(m) = next {
                match m {
                    Outgoing::Data(body) => write_frame(&mut w, DATA, &body).await?,
                    Outgoing::Credit(n) => credit += n,
                }
                next = rx.try_recv().ok();
            }
            if credit > 0 {
                write_frame(&mut w, CREDIT, &credit.to_be_bytes()).await?;
            }
            w.flush().await?;
        }
    }
    .await;
    match result {
        Ok(()) => {
            let _ = w.shutdown().await;
        }
        Err(e) => {
            broken.set(format!("writing: {e}"));
            credits.close();
        }
    }
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, kind: u8, body: &[u8]) -> std::io::Result<()> {
    w.write_u32(body.len() as u32 + 1).await?;
    w.write_u8(kind).await?;
    w.write_all(body).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn messages_cross_in_order_both_ways() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (a_tx, mut a_rx) = open::<u64, String, _>(a, 4, "b");
        let (b_tx, mut b_rx) = open::<String, u64, _>(b, 4, "a");
        let echo = tokio::spawn(async move {
            for _ in 0..1000 {
                let n = b_rx.recv().await.unwrap();
                b_tx.send(&format!("#{n}")).await.unwrap();
            }
        });
        let send = tokio::spawn(async move {
            for i in 0..1000u64 {
                a_tx.send(&i).await.unwrap();
            }
            a_tx
        });
        for i in 0..1000u64 {
            assert_eq!(a_rx.recv().await.unwrap(), format!("#{i}"));
        }
        echo.await.unwrap();
        drop(send.await.unwrap());
    }

    /// A consumer that does not take stops the producer after `window` messages.
    #[tokio::test]
    async fn a_consumer_that_does_not_take_stops_the_producer() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (a_tx, _a_rx) = open::<u64, u64, _>(a, 3, "b");
        let (_b_tx, mut b_rx) = open::<u64, u64, _>(b, 3, "a");
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let producer = tokio::spawn(async move {
            for i in 0..100u64 {
                a_tx.send(&i).await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(sent.load(Ordering::SeqCst), 3, "only the window's worth is sent while nobody takes");
        assert_eq!(b_rx.recv().await.unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(sent.load(Ordering::SeqCst), 4, "one taken, one more credit");
        for i in 1..100u64 {
            assert_eq!(b_rx.recv().await.unwrap(), i);
        }
        producer.await.unwrap();
    }

    #[tokio::test]
    async fn a_peer_that_goes_away_breaks_the_link_with_a_reason() {
        let (a, b) = tokio::io::duplex(1024);
        let (a_tx, mut a_rx) = open::<u64, u64, _>(a, 1, "node 2");
        drop(b);
        let e = a_rx.recv().await.unwrap_err();
        assert_eq!(e.peer, "node 2");
        assert!(e.reason.contains("closed"), "{e}");
        // The one credit may go into the dead stream; the next send must fail, not hang.
        let _ = a_tx.send(&1).await;
        let e = tokio::time::timeout(Duration::from_secs(5), a_tx.send(&2)).await.expect("send must not hang").unwrap_err();
        assert!(e.to_string().contains("node 2"), "{e}");
    }
}
