//! An open-loop HTTP load generator for `bench/api.sh`: sends GET requests at a fixed rate
//! over keep-alive connections and reports latency percentiles measured from each request's
//! *scheduled* time, so a stalled server cannot hide queued requests (no coordinated
//! omission). `wrk` cannot hold a fixed rate and `wrk2` is not packaged in Debian.
//!
//!     loadgen ADDR PATH RATE SECONDS CONNECTIONS [HEADER: VALUE]...

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: loadgen ADDR PATH RATE SECONDS CONNECTIONS [HEADER: VALUE]...");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let path = args[2].clone();
    let rate: f64 = args[3].parse().expect("RATE");
    let secs: f64 = args[4].parse().expect("SECONDS");
    let conns: usize = args[5].parse().expect("CONNECTIONS");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for h in &args[6..] {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let request = Arc::new(request.into_bytes());

    let total = (rate * secs) as u64;
    // Scheduled send times go to whichever connection is free.
    let (tx, rx) = mpsc::channel::<Instant>(total as usize + 1);
    let rx = Arc::new(Mutex::new(rx));
    let errors = Arc::new(AtomicU64::new(0));
    let non_2xx = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..conns {
        let (rx, request, addr, errors, non_2xx) = (rx.clone(), request.clone(), addr.clone(), errors.clone(), non_2xx.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut conn: Option<BufReader<TcpStream>> = None;
            loop {
                let Some(scheduled) = rx.lock().await.recv().await else { break };
                let now = Instant::now();
                if scheduled > now {
                    tokio::time::sleep_until(scheduled.into()).await;
                }
                if conn.is_none() {
                    match TcpStream::connect(&addr).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            conn = Some(BufReader::new(s));
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                }
                let c = conn.as_mut().expect("connected");
                match exchange(c, &request).await {
                    Ok(status) => {
                        if !(200..300).contains(&status) {
                            non_2xx.fetch_add(1, Ordering::Relaxed);
                        }
                        lat.push(scheduled.elapsed());
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
            lat
        }));
    }
    let start = Instant::now() + Duration::from_millis(100);
    let interval = Duration::from_secs_f64(1.0 / rate);
    for i in 0..total {
        let at = start + interval.mul_f64(i as f64);
        if tx.send(at).await.is_err() {
            break;
        }
    }
    drop(tx);
    let mut lat: Vec<Duration> = Vec::new();
    for w in workers {
        lat.extend(w.await.expect("worker"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1000.0
    };
    println!(
        "requests={} achieved_rate={:.1}/s errors={} non_2xx={} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
        lat.len(),
        lat.len() as f64 / elapsed,
        errors.load(Ordering::Relaxed),
        non_2xx.load(Ordering::Relaxed),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
}

/// Sends one request and reads the whole response; its status.
async fn exchange(c: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<u16> {
    c.get_mut().write_all(request).await?;
    let mut line = String::new();
    if c.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
    let mut len = 0usize;
    loop {
        line.clear();
        if c.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().map_err(|_| std::io::ErrorKind::InvalidData)?;
        }
    }
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).await?;
    Ok(status)
}
