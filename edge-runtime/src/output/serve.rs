//! `--serve ADDR`: the rendered frames as an MJPEG stream over HTTP, with a tiny page to watch
//! it in a browser (a headless Jetson's display).
//!
//! Routes: `/` the page; `/stream.mjpg` `multipart/x-mixed-replace` JPEG stream;
//! `/frame.jpg` the latest frame; `/status.json` frames served, FPS and the status line.
//! Each client gets the newest frame when it is ready for one: a slow client skips frames
//! and never holds the pipeline back.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{encode_jpeg, Output, Rendered};
use crate::RuntimeError;

/// Boundary of the multipart stream.
pub const BOUNDARY: &str = "edgesegframe";
/// Most simultaneous clients.
pub const MAX_CLIENTS: usize = 16;

#[derive(Default)]
struct State {
    seq: u64,
    jpeg: Arc<Vec<u8>>,
    status: String,
    fps: f64,
    ended: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    clients: AtomicUsize,
}

/// The HTTP server; frames are published with [`Output::write`].
pub struct MjpegServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    quality: u8,
    accept: Option<JoinHandle<()>>,
}

impl MjpegServer {
    /// Binds `addr` (port 0 picks a free port; see [`MjpegServer::addr`]) and starts serving.
    pub fn bind(addr: &str, quality: u8) -> Result<Self, RuntimeError> {
        let err = |reason: String| RuntimeError::Output {
            path: format!("--serve {addr}"),
            reason,
        };
        let listener = TcpListener::bind(addr).map_err(|e| err(format!("cannot listen: {e}")))?;
        let local = listener.local_addr().map_err(|e| err(e.to_string()))?;
        listener.set_nonblocking(true).map_err(|e| err(e.to_string()))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            clients: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(listener, s))
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            addr: local,
            shared,
            quality,
            accept: Some(accept),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Publishes an already-encoded JPEG with its status line and FPS.
    pub fn publish(&self, jpeg: Vec<u8>, status: &str, fps: f64) {
        let mut s = self.shared.state.lock().expect("server lock");
        s.seq += 1;
        s.jpeg = Arc::new(jpeg);
        s.status = status.to_string();
        s.fps = fps;
        drop(s);
        self.shared.cv.notify_all();
    }

    /// Ends every stream and stops accepting.
    pub fn shutdown(&mut self) {
        self.shared.state.lock().expect("server lock").ended = true;
        self.shared.cv.notify_all();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

impl Drop for MjpegServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Output for MjpegServer {
    fn describe(&self) -> String {
        format!("MJPEG over HTTP at http://{}/", self.addr)
    }
    fn write(&mut self, frame: &Rendered) -> Result<(), RuntimeError> {
        self.publish(encode_jpeg(&frame.image, self.quality), &frame.status, frame.fps);
        Ok(())
    }
    fn finish(&mut self) -> Result<(), RuntimeError> {
        self.shutdown();
        Ok(())
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        if shared.state.lock().expect("server lock").ended {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                if shared.clients.load(Ordering::Relaxed) >= MAX_CLIENTS {
                    let mut stream = stream;
                    let _ = respond(
                        &mut stream,
                        "503 Service Unavailable",
                        "text/plain",
                        b"too many clients\n",
                    );
                    continue;
                }
                shared.clients.fetch_add(1, Ordering::Relaxed);
                let s = shared.clone();
                let spawned = std::thread::Builder::new().name("http-client".into()).spawn(move || {
                    let _ = handle(stream, &s);
                    s.clients.fetch_sub(1, Ordering::Relaxed);
                });
                if spawned.is_err() {
                    shared.clients.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                tracing::warn!("http: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    stream.flush()
}

/// The page: the stream and the status line, refreshed every second.
pub const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>edge-seg</title>
<style>body{background:#111;color:#ddd;font-family:sans-serif;margin:1em}img{max-width:100%;display:block}</style>
</head><body>
<h1>edge-seg</h1>
<img id="stream" src="/stream.mjpg" alt="segmentation stream">
<p id="status">connecting…</p>
<script>
async function poll(){try{const s=await (await fetch('/status.json')).json();
document.getElementById('status').textContent=s.status+' — '+s.frames+' frames'+(s.ended?' (ended)':'');}catch(e){}}
setInterval(poll,1000);poll();
</script>
</body></html>
"#;

/// Time a client has to send its whole request head (a per-connection deadline: a client that
/// trickles bytes cannot hold a slot longer than this, issue #23).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Largest request head read.
const MAX_HEAD: usize = 64 << 10;

/// Reads the request head (up to the empty line, [`MAX_HEAD`] bytes) before `deadline`; returns
/// its first line.
fn read_request_line(stream: &mut TcpStream, deadline: std::time::Instant) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request deadline passed",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") || head.len() > MAX_HEAD {
            break;
        }
    }
    let first = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    Ok(String::from_utf8_lossy(first).trim_end().to_string())
}

fn handle(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let request = read_request_line(&mut stream, std::time::Instant::now() + REQUEST_DEADLINE)?;
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut stream, "405 Method Not Allowed", "text/plain", b"GET only\n");
    }
    match path.split('?').next().unwrap_or("") {
        "/" | "/index.html" => respond(&mut stream, "200 OK", "text/html; charset=utf-8", PAGE.as_bytes()),
        "/status.json" => {
            let s = shared.state.lock().expect("server lock");
            let body = serde_json::json!({
                "frames": s.seq,
                "fps": s.fps,
                "status": s.status,
                "ended": s.ended,
            })
            .to_string();
            drop(s);
            respond(&mut stream, "200 OK", "application/json", body.as_bytes())
        }
        "/frame.jpg" => {
            let jpeg = {
                let s = shared.state.lock().expect("server lock");
                (s.seq > 0).then(|| s.jpeg.clone())
            };
            match jpeg {
                Some(j) => respond(&mut stream, "200 OK", "image/jpeg", &j),
                None => respond(&mut stream, "503 Service Unavailable", "text/plain", b"no frame yet\n"),
            }
        }
        "/stream.mjpg" => stream_mjpeg(&mut stream, shared),
        _ => respond(&mut stream, "404 Not Found", "text/plain", b"not found\n"),
    }
}

fn stream_mjpeg(stream: &mut TcpStream, shared: &Shared) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
    )?;
    let mut last = 0;
    loop {
        let (jpeg, seq) = {
            let mut s = shared.state.lock().expect("server lock");
            while s.seq == last && !s.ended {
                s = shared
                    .cv
                    .wait_timeout(s, Duration::from_millis(500))
                    .expect("server lock")
                    .0;
            }
            if s.seq == last && s.ended {
                drop(s);
                write!(stream, "--{BOUNDARY}--\r\n")?;
                return stream.flush();
            }
            (s.jpeg.clone(), s.seq)
        };
        last = seq;
        write!(
            stream,
            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        )?;
        stream.write_all(&jpeg)?;
        stream.write_all(b"\r\n")?;
        stream.flush()?;
    }
}

/// A minimal client for `/stream.mjpg`: reads `n` JPEG parts (used by tests and benches).
pub fn read_stream_parts(addr: SocketAddr, n: usize, timeout: Duration) -> std::io::Result<Vec<Vec<u8>>> {
    use std::io::Read;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    write!(s, "GET /stream.mjpg HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("status line: {line:?}")));
    }
    let mut ctype_ok = false;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line
            .to_ascii_lowercase()
            .starts_with("content-type: multipart/x-mixed-replace")
        {
            ctype_ok = line.contains(&format!("boundary={BOUNDARY}"));
        }
        if line == "\r\n" {
            break;
        }
    }
    if !ctype_ok {
        return Err(std::io::Error::other("not a multipart/x-mixed-replace response"));
    }
    let mut parts = Vec::new();
    while parts.len() < n {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        if line.trim_end() == format!("--{BOUNDARY}--") {
            break;
        }
        if line.trim_end() != format!("--{BOUNDARY}") {
            return Err(std::io::Error::other(format!("expected a boundary, got {line:?}")));
        }
        let mut len = None;
        loop {
            line.clear();
            r.read_line(&mut line)?;
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse::<usize>().ok();
            }
            if line == "\r\n" {
                break;
            }
        }
        let len = len.ok_or_else(|| std::io::Error::other("part without Content-Length"))?;
        let mut body = vec![0; len + 2];
        r.read_exact(&mut body)?;
        body.truncate(len);
        parts.push(body);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use image::RgbImage;

    use super::*;

    fn get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&all[..split]).into_owned(),
            all[split + 4..].to_vec(),
        )
    }

    /// Issue #23: clients that trickle their request one byte a second lose their slot at the
    /// request deadline, so they cannot lock everyone else out with 503s.
    #[test]
    fn issue23_trickling_clients_lose_their_slot_at_the_deadline() {
        let server = MjpegServer::bind("127.0.0.1:0", 80).unwrap();
        let addr = server.addr();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tricklers: Vec<_> = (0..MAX_CLIENTS)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    for b in b"GET /status.json HTTP/1.1\r\nHost: slow\r\n".iter().cycle() {
                        if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        // refused while they hold every slot: a 503, or a reset when the server closes before
        // it has read the request
        let refused = {
            let mut s = TcpStream::connect(addr).unwrap();
            let _ = write!(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut all = Vec::new();
            match s.read_to_end(&mut all) {
                Ok(_) => String::from_utf8_lossy(&all).starts_with("HTTP/1.1 503"),
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        };
        assert!(refused, "the tricklers hold every slot");
        std::thread::sleep(REQUEST_DEADLINE + Duration::from_millis(1500));
        let (head, _) = get(addr, "/");
        stop.store(true, Ordering::Relaxed);
        assert!(head.starts_with("HTTP/1.1 200"), "after the deadline: {head}");
        for t in tricklers {
            t.join().unwrap();
        }
    }

    #[test]
    fn serves_page_status_frames_and_a_multipart_stream() {
        let mut server = MjpegServer::bind("127.0.0.1:0", 80).unwrap();
        let addr = server.addr();
        let (head, body) = get(addr, "/");
        assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/html"), "{head}");
        assert!(String::from_utf8_lossy(&body).contains("src=\"/stream.mjpg\""));
        assert!(get(addr, "/frame.jpg").0.starts_with("HTTP/1.1 503"));
        assert!(get(addr, "/nope").0.starts_with("HTTP/1.1 404"));

        // a client reads three frames while the pipeline publishes
        let client = std::thread::spawn(move || read_stream_parts(addr, 3, Duration::from_secs(10)));
        let frame = |v: u8| Rendered {
            index: v as u64,
            name: "f".into(),
            image: RgbImage::from_pixel(32, 16, image::Rgb([v, 128, 255 - v])),
            status: "camvid-small | tract | 12.0 FPS".into(),
            fps: 12.0,
        };
        for i in 0..200u8 {
            server.write(&frame(i)).unwrap();
            std::thread::sleep(Duration::from_millis(10));
            if client.is_finished() {
                break;
            }
        }
        let parts = client.join().unwrap().unwrap();
        assert_eq!(parts.len(), 3);
        for p in &parts {
            let img = image::load_from_memory_with_format(p, image::ImageFormat::Jpeg).unwrap();
            assert_eq!((img.width(), img.height()), (32, 16));
        }
        let (head, body) = get(addr, "/frame.jpg");
        assert!(head.contains("image/jpeg"), "{head}");
        assert!(image::load_from_memory(&body).is_ok());
        let (_, status) = get(addr, "/status.json");
        let v: serde_json::Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(v["status"], "camvid-small | tract | 12.0 FPS");
        assert!(v["frames"].as_u64().unwrap() >= 3);

        // ending the run ends open streams with the closing boundary
        let late = std::thread::spawn(move || read_stream_parts(addr, 100, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(100));
        server.finish().unwrap();
        let parts = late.join().unwrap().unwrap();
        assert_eq!(
            parts.len(),
            1,
            "the latest frame, then the stream ends instead of waiting for 100"
        );
    }
}
