//! The in-tree HTTP/1.1 load generator shared by the benchmarks: keep-alive connections on
//! loopback, each sending the same request as soon as the previous answer arrived; and the
//! median the benchmarks sum their rounds up with.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The median of `v` (the mean of the two middle values when their number is even).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) struct Request {
    pub(crate) path: &'static str,
    pub(crate) body: &'static str,
    pub(crate) expect: &'static str,
}

pub(crate) struct Stats {
    pub(crate) requests: usize,
    pub(crate) secs: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// Requests of the 500 ms warm-up before the measurement (answered, not measured).
    pub(crate) warmup: usize,
}

async fn connection(
    addr: SocketAddr,
    req: &'static Request,
    until: Instant,
    mut lat: Vec<u32>,
) -> Vec<u32> {
    let request = format!(
        "POST {} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        req.path,
        req.body.len(),
        req.body
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 8192];
    while Instant::now() < until {
        let start = Instant::now();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut filled = 0;
        loop {
            let n = stream.read(&mut buf[filled..]).await.unwrap();
            assert!(n > 0, "server closed the connection");
            filled += n;
            if let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buf[..end]).unwrap();
                assert!(head.starts_with(req.expect), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap();
                while filled < end + 4 + len {
                    filled += stream.read(&mut buf[filled..]).await.unwrap();
                }
                break;
            }
        }
        lat.push(start.elapsed().as_micros() as u32);
    }
    lat
}

pub(crate) fn load(addr: SocketAddr, req: &'static Request, conns: usize, secs: f64) -> Stats {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Warm up.
        let warm = Instant::now() + Duration::from_millis(500);
        let tasks: Vec<_> = (0..conns)
            .map(|_| tokio::spawn(connection(addr, req, warm, Vec::new())))
            .collect();
        let mut warmup = 0;
        for t in tasks {
            warmup += t.await.unwrap().len();
        }
        let start = Instant::now();
        let until = start + Duration::from_secs_f64(secs);
        let tasks: Vec<_> = (0..conns)
            .map(|_| tokio::spawn(connection(addr, req, until, Vec::with_capacity(200_000))))
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let elapsed = start.elapsed().as_secs_f64();
        all.sort_unstable();
        let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64;
        Stats {
            requests: all.len(),
            secs: elapsed,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            warmup,
        }
    })
}
