//! Helpers for the `arbor pull` integration tests, included by each
//! `tests/pull_*.rs` with `#[path = "common/pull.rs"] mod pull_support;`
//! (next to `mod common;`, which these helpers build on).
//!
//! * [`Nginx`]: a real nginx on 127.0.0.1 (ephemeral port, single process,
//!   everything in a temporary directory) whose access log records the URI,
//!   status and body size of every request, so tests can count exactly what
//!   a pull transferred.
//! * [`FaultServer`]: a small HTTP/1.1 server written for these tests that
//!   serves repository files but misbehaves on request (truncated bodies,
//!   resets, 5xx, stalls, slow drips, wrong bytes), and logs every request.
//! * Source trees and repositories made by the real `ostree`, object
//!   accounting (`ostree ls -R -C`, loose objects of a store, requests of a
//!   log), and the end-state checks every pull test makes (`ostree fsck`,
//!   manifest of `ostree checkout`, refs, `commitpartial` markers).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::*;

pub const NGINX: &str = "/usr/sbin/nginx";

// ---------------------------------------------------------------------------
// Requests as seen by a server
// ---------------------------------------------------------------------------

/// One request from a server's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The request path, e.g. `/edge/objects/ab/cd….filez`.
    pub path: String,
    /// HTTP status, or 0 when the server did not answer with one (fault
    /// server: reset / stall before headers).
    pub status: u16,
    /// Body bytes sent (nginx), or what the fault server did.
    pub note: String,
    /// The `Range` header, if the request had one (fault server only).
    pub range: Option<String>,
    /// The `If-Range` header, if the request had one (fault server only).
    pub if_range: Option<String>,
    /// Body bytes written (fault server only).
    pub sent: usize,
}

impl Request {
    /// The first byte a `Range: bytes=N-` request asked for.
    pub fn range_start(&self) -> Option<usize> {
        self.range
            .as_deref()?
            .strip_prefix("bytes=")?
            .strip_suffix('-')?
            .parse()
            .ok()
    }
}

/// What kind of file a request path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Summary,
    SummarySig,
    Config,
    Ref,
    Commit,
    CommitMeta,
    DirTree,
    DirMeta,
    File,
    /// Static-delta superblocks, parts and delta indexes.
    Delta,
    Other,
}

pub fn kind_of(path: &str) -> Kind {
    let base = path.rsplit('/').next().unwrap_or("");
    if path.contains("/deltas/") || path.contains("/delta-indexes/") {
        Kind::Delta
    } else if path.contains("/refs/") {
        Kind::Ref
    } else if base == "summary" {
        Kind::Summary
    } else if base == "summary.sig" {
        Kind::SummarySig
    } else if base == "config" {
        Kind::Config
    } else if base.ends_with(".commitmeta") {
        Kind::CommitMeta
    } else if base.ends_with(".commit") {
        Kind::Commit
    } else if base.ends_with(".dirtree") {
        Kind::DirTree
    } else if base.ends_with(".dirmeta") {
        Kind::DirMeta
    } else if base.ends_with(".filez") || base.ends_with(".file") {
        Kind::File
    } else {
        Kind::Other
    }
}

/// Requests per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub summary: usize,
    pub refs: usize,
    pub commit: usize,
    pub commitmeta: usize,
    pub dirtree: usize,
    pub dirmeta: usize,
    pub filez: usize,
    /// Delta superblocks, parts and indexes (discovery requests included).
    pub deltas: usize,
    pub other: usize,
}

impl Counts {
    pub fn of(reqs: &[Request]) -> Counts {
        let mut c = Counts::default();
        for r in reqs {
            match kind_of(&r.path) {
                Kind::Summary => c.summary += 1,
                Kind::Ref => c.refs += 1,
                Kind::Commit => c.commit += 1,
                Kind::CommitMeta => c.commitmeta += 1,
                Kind::DirTree => c.dirtree += 1,
                Kind::DirMeta => c.dirmeta += 1,
                Kind::File => c.filez += 1,
                Kind::Delta => c.deltas += 1,
                Kind::SummarySig | Kind::Config | Kind::Other => c.other += 1,
            }
        }
        c
    }

    /// Requests for objects (commit, commitmeta, dirtree, dirmeta, content).
    pub fn objects(&self) -> usize {
        self.commit + self.commitmeta + self.dirtree + self.dirmeta + self.filez
    }
}

/// Normalised object name `CHECKSUM.TYPE` (TYPE: commit, commitmeta,
/// dirtree, dirmeta, file) from `…/objects/XX/REST.EXT`.
pub fn object_key(path: &str) -> Option<String> {
    let (_, rest) = path.split_once("/objects/")?;
    let (dir, file) = rest.split_once('/')?;
    let (stem, ext) = file.split_once('.')?;
    let ext = match ext {
        "filez" | "file" => "file",
        e => e,
    };
    Some(format!("{dir}{stem}.{ext}"))
}

/// How many times each object was requested (any status).
pub fn requested_objects(reqs: &[Request]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in reqs {
        if let Some(k) = object_key(&r.path) {
            *m.entry(k).or_insert(0) += 1;
        }
    }
    m
}

/// The set of objects requested, excluding `.commitmeta` (a 404 for it is
/// the normal case and not an object transfer).
pub fn requested_set(reqs: &[Request]) -> BTreeSet<String> {
    requested_objects(reqs)
        .into_keys()
        .filter(|k| !k.ends_with(".commitmeta"))
        .collect()
}

/// Asserts every object was requested at most once.
#[track_caller]
pub fn assert_no_duplicate_requests(reqs: &[Request]) {
    let dups: Vec<_> = requested_objects(reqs)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        dups.is_empty(),
        "objects requested more than once: {dups:?}"
    );
}

/// Asserts none of `reqs` asked for an object of a tree (dirtree, dirmeta
/// or content): what a pull refused at its commit must not have cost more.
#[track_caller]
pub fn assert_no_tree_requests(reqs: &[Request]) {
    let tree: Vec<_> = reqs
        .iter()
        .filter(|r| matches!(kind_of(&r.path), Kind::DirTree | Kind::DirMeta | Kind::File))
        .collect();
    assert!(
        tree.is_empty(),
        "tree or content fetched for a refused commit: {tree:#?}"
    );
}

/// Asserts two object sets are equal, listing the differences.
#[track_caller]
pub fn assert_set_eq(actual: &BTreeSet<String>, expected: &BTreeSet<String>, what: &str) {
    if actual == expected {
        return;
    }
    let missing: Vec<_> = expected.difference(actual).take(20).collect();
    let extra: Vec<_> = actual.difference(expected).take(20).collect();
    panic!(
        "{what}: sets differ ({} actual, {} expected)\n  missing: {missing:?}\n  unexpected: {extra:?}",
        actual.len(),
        expected.len()
    );
}

// ---------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// nginx serving a directory on 127.0.0.1, killed on drop.
pub struct Nginx {
    pub port: u16,
    pub root: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
    access_log: PathBuf,
    syncs: AtomicU64,
}

impl Nginx {
    /// Serves `root` (every file, as static files; missing files are 404).
    pub fn start(root: &Path) -> Nginx {
        Nginx::start_with(root, "", "")
    }

    /// `http_extra` goes into the `http` block, `location_extra` into
    /// `location /` (e.g. `limit_req …;`).
    pub fn start_with(root: &Path, http_extra: &str, location_extra: &str) -> Nginx {
        Nginx::start_server(root, http_extra, "", "", location_extra)
    }

    /// Serves `root` over TLS with HTTP/2 (nginx's `listen … ssl http2`);
    /// `server_extra` holds the `ssl_*` directives.
    pub fn start_tls(root: &Path, http_extra: &str, server_extra: &str) -> Nginx {
        Nginx::start_server(root, http_extra, "ssl http2", server_extra, "")
    }

    fn start_server(
        root: &Path,
        http_extra: &str,
        listen_extra: &str,
        server_extra: &str,
        location_extra: &str,
    ) -> Nginx {
        let dir = pid_tempdir("nginx");
        let d = dir.path();
        fs::create_dir_all(d.join("tmp")).unwrap();
        let access_log = d.join("access.log");
        let mut last_err = String::new();
        for _ in 0..8 {
            let port = free_port();
            let conf = format!(
                r#"daemon off;
master_process off;
user root;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    log_format arbortest '$request_uri $status $body_bytes_sent';
    access_log {d}/access.log arbortest;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 100000;
    keepalive_timeout 60s;
    {http_extra}
    server {{
        listen 127.0.0.1:{port} {listen_extra};
        root {root};
        {server_extra}
        location / {{
            {location_extra}
        }}
    }}
}}
"#,
                d = d.display(),
                root = root.display(),
            );
            fs::write(d.join("nginx.conf"), conf).unwrap();
            let _ = fs::remove_file(&access_log);
            let mut child = Command::new(NGINX)
                .arg("-p")
                .arg(d)
                .arg("-c")
                .arg(d.join("nginx.conf"))
                .arg("-e")
                .arg(d.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn nginx");
            kill_at_exit(child.id());
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    let log = fs::read_to_string(d.join("error.log")).unwrap_or_default();
                    last_err = format!("nginx exited with {status}: {err}\n{log}");
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Nginx {
                        port,
                        root: root.to_path_buf(),
                        dir,
                        child,
                        access_log,
                        syncs: AtomicU64::new(0),
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = "nginx did not start listening within 10 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("cannot start nginx: {last_err}");
    }

    /// `http://127.0.0.1:PORT/REL`.
    pub fn url(&self, rel: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            rel.trim_start_matches('/')
        )
    }

    /// Waits until every request answered so far is in the access log: a
    /// request of our own is logged after them (nginx runs one process,
    /// and logs a request as soon as its response is sent).
    fn sync(&self) {
        let n = self.syncs.fetch_add(1, Ordering::Relaxed);
        let marker = format!("/__arbor_test_sync_{n}");
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = write!(
                s,
                "GET {marker} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            );
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let log = fs::read_to_string(&self.access_log).unwrap_or_default();
            if log.lines().any(|l| l.starts_with(&format!("{marker} "))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("nginx did not log the sync request {marker}");
    }

    /// Every request logged so far (our own sync requests excluded).
    pub fn requests(&self) -> Vec<Request> {
        self.sync();
        let log = fs::read_to_string(&self.access_log).unwrap_or_default();
        log.lines()
            .filter(|l| !l.starts_with("/__arbor_test_sync_"))
            .map(|l| {
                let mut f = l.rsplitn(3, ' ');
                let bytes = f.next().unwrap_or("").to_string();
                let status = f.next().unwrap_or("0").parse().unwrap_or(0);
                let path = f.next().unwrap_or("").to_string();
                Request {
                    path,
                    status,
                    sent: bytes.parse().unwrap_or(0),
                    note: bytes,
                    range: None,
                    if_range: None,
                }
            })
            .collect()
    }

    /// The number of requests logged so far (for [`Nginx::requests_since`]).
    pub fn mark(&self) -> usize {
        self.requests().len()
    }

    pub fn requests_since(&self, mark: usize) -> Vec<Request> {
        self.requests().into_iter().skip(mark).collect()
    }

    /// Requests under `/PREFIX/` only.
    pub fn requests_under(&self, prefix: &str) -> Vec<Request> {
        let p = format!("/{}/", prefix.trim_matches('/'));
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(&p))
            .collect()
    }

    /// Raw lines of the access log (for failure messages).
    pub fn access_log_text(&self) -> String {
        fs::read_to_string(&self.access_log).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Our own child, by its pid (SIGKILL; single-process nginx).
        let _ = self.child.kill();
        let _ = self.child.wait();
        LIVE_SERVERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&p| p != self.child.id());
    }
}

/// Pids of the nginx servers still running. Servers kept in statics (shared
/// by a file's tests) are never dropped: they are killed when the test
/// process exits, so no run leaves servers behind.
static LIVE_SERVERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

extern "C" fn kill_live_servers() {
    if let Ok(pids) = LIVE_SERVERS.lock() {
        for &pid in pids.iter() {
            // SAFETY: kill(2) on a child of this process that is not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

fn kill_at_exit(pid: u32) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain function, run by exit(3).
    HOOK.call_once(|| unsafe {
        libc::atexit(kill_live_servers);
    });
    LIVE_SERVERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(pid);
}

// ---------------------------------------------------------------------------
// The misbehaving server
// ---------------------------------------------------------------------------

/// What the fault server does with one request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Serve the file (200) or 404 when it does not exist.
    Serve,
    /// Answer with this status and a short body.
    Status(u16),
    /// Announce the full length, send only this many body bytes, close.
    Truncate(usize),
    /// Read the request, then reset the connection (RST) without answering.
    Reset,
    /// Read the request and send nothing for this long, then close.
    StallBeforeHeaders(Duration),
    /// Headers and `after` body bytes, then nothing for `stall`, then close.
    StallBody { after: usize, stall: Duration },
    /// The whole body, `chunk` bytes every `interval` (slow but steady).
    Drip { chunk: usize, interval: Duration },
    /// 200 with these bytes instead of the file's.
    Body(Vec<u8>),
    /// Wait this long, then serve normally.
    Delay(Duration),
    /// Serve the body with the byte at this offset (of the body sent, at
    /// most its last) inverted.
    Flip(usize),
    /// Headers and this many body bytes, then a connection reset.
    ResetAfter(usize),
}

type Policy = dyn Fn(&str, usize) -> Fault + Send + Sync;

struct FaultState {
    root: PathBuf,
    /// Whether `Range: bytes=N-` is honoured (206), as nginx does.
    ranges: bool,
    /// TCP connections accepted.
    connections: AtomicU64,
    policy: Box<Policy>,
    attempts: Mutex<HashMap<String, usize>>,
    log: Mutex<Vec<Request>>,
    stop: AtomicBool,
}

/// An HTTP/1.1 server (keep-alive, one thread per connection) serving the
/// files under `root`, with a policy deciding per request path and attempt
/// number (0 for the first request of that path) how to misbehave. It
/// ignores `Range` unless started with [`FaultServer::with_ranges`]; then
/// it answers `Range: bytes=N-` with 206 and the faults apply to that
/// partial body. Every response carries an `ETag`.
pub struct FaultServer {
    pub port: u16,
    state: Arc<FaultState>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultServer {
    pub fn start(
        root: &Path,
        policy: impl Fn(&str, usize) -> Fault + Send + Sync + 'static,
    ) -> FaultServer {
        FaultServer::start_server(root, false, Box::new(policy))
    }

    /// Like [`FaultServer::start`], honouring ranges.
    pub fn with_ranges(
        root: &Path,
        policy: impl Fn(&str, usize) -> Fault + Send + Sync + 'static,
    ) -> FaultServer {
        FaultServer::start_server(root, true, Box::new(policy))
    }

    fn start_server(root: &Path, ranges: bool, policy: Box<Policy>) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fault server");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(FaultState {
            root: root.to_path_buf(),
            ranges,
            connections: AtomicU64::new(0),
            policy,
            attempts: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let st = state.clone();
        let acceptor = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                std::thread::spawn(move || serve_connection(&st, conn));
            }
        });
        FaultServer {
            port,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// Serves every path normally except `path`, whose first `times`
    /// requests (`usize::MAX`: all of them) get `fault`.
    pub fn only(root: &Path, path: &str, times: usize, fault: Fault) -> FaultServer {
        let path = path.to_string();
        FaultServer::start(root, move |p, n| {
            if p == path && n < times {
                fault.clone()
            } else {
                Fault::Serve
            }
        })
    }

    pub fn url(&self, rel: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            rel.trim_start_matches('/')
        )
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.log.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// How many requests had a path ending with `suffix`.
    pub fn count(&self, suffix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.ends_with(suffix))
            .count()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn serve_connection(st: &FaultState, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut out = stream;
    loop {
        if st.stop.load(Ordering::SeqCst) {
            return;
        }
        // Request line and headers.
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (mut range, mut if_range) = (None, None);
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) | Err(_) => return,
                Ok(_) if h == "\r\n" || h == "\n" => break,
                Ok(_) => {}
            }
            if let Some((name, value)) = h.split_once(':') {
                let value = value.trim().to_string();
                match name.trim().to_ascii_lowercase().as_str() {
                    "range" => range = Some(value),
                    "if-range" => if_range = Some(value),
                    _ => {}
                }
            }
        }
        let attempt = {
            let mut a = st.attempts.lock().unwrap();
            let n = a.entry(path.clone()).or_insert(0);
            let cur = *n;
            *n += 1;
            cur
        };
        let fault = (st.policy)(&path, attempt);
        let file = local_file(&st.root, &path).and_then(|p| fs::read(p).ok());
        // What a 200 or 206 answer carries: the whole file, or its tail.
        let start = match (&file, st.ranges, &range) {
            (Some(_), true, Some(r)) => r
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok()),
            _ => None,
        };
        let log = |status: u16, note: &str, sent: usize| {
            st.log.lock().unwrap().push(Request {
                path: path.clone(),
                status,
                note: note.to_string(),
                range: range.clone(),
                if_range: if_range.clone(),
                sent,
            })
        };
        let head = |len: usize| Head {
            code: if start.is_some() { 206 } else { 200 },
            len,
            total: file.as_ref().map_or(len, |f| f.len()),
            start: start.unwrap_or(0),
        };
        if let (Some(f), Some(s)) = (&file, start)
            && s >= f.len()
        {
            log(416, "range not satisfiable", 0);
            let body = b"bad range\n";
            if write_response(&mut out, 416, body.len(), body).is_err() {
                return;
            }
            continue;
        }
        let body: Option<&[u8]> = file.as_deref().map(|f| &f[start.unwrap_or(0)..]);
        let keep = match fault {
            Fault::Serve => respond_file(&mut out, body, head, &log),
            Fault::Delay(d) => {
                std::thread::sleep(d);
                respond_file(&mut out, body, head, &log)
            }
            Fault::Status(code) => {
                log(code, "status", 0);
                let body = format!("status {code}\n");
                write_response(&mut out, code, body.len(), body.as_bytes()).is_ok()
            }
            Fault::Body(bytes) => {
                log(200, "wrong body", bytes.len());
                write_response(&mut out, 200, bytes.len(), &bytes).is_ok()
            }
            Fault::Flip(at) => {
                let mut data = body.unwrap_or_default().to_vec();
                let at = at.min(data.len().saturating_sub(1));
                if let Some(b) = data.get_mut(at) {
                    *b ^= 0xff;
                }
                log(head(0).code, "flipped", data.len());
                write_with(&mut out, head(data.len()), &data).is_ok()
            }
            Fault::Truncate(n) => {
                let data = body.unwrap_or_default();
                let n = n.min(data.len().saturating_sub(1));
                log(head(0).code, "truncated", n);
                let _ = write_partial(&mut out, head(data.len()), &data[..n]);
                let _ = out.flush();
                let _ = out.shutdown(Shutdown::Both);
                false
            }
            Fault::ResetAfter(n) => {
                let data = body.unwrap_or_default();
                let n = n.min(data.len().saturating_sub(1));
                log(head(0).code, "reset in body", n);
                let _ = write_partial(&mut out, head(data.len()), &data[..n]);
                let _ = out.flush();
                reset(&out);
                false
            }
            Fault::Reset => {
                log(0, "reset", 0);
                reset(&out);
                false
            }
            Fault::StallBeforeHeaders(d) => {
                log(0, "stall before headers", 0);
                std::thread::sleep(d);
                let _ = out.shutdown(Shutdown::Both);
                false
            }
            Fault::StallBody { after, stall } => {
                let data = body.unwrap_or_default();
                let n = after.min(data.len().saturating_sub(1));
                log(head(0).code, "stall in body", n);
                let _ = write_partial(&mut out, head(data.len()), &data[..n]);
                let _ = out.flush();
                std::thread::sleep(stall);
                let _ = out.shutdown(Shutdown::Both);
                false
            }
            Fault::Drip { chunk, interval } => {
                let data = body.unwrap_or_default();
                log(head(0).code, "drip", data.len());
                let mut ok = write_partial(&mut out, head(data.len()), &[]).is_ok();
                for c in data.chunks(chunk.max(1)) {
                    if !ok {
                        break;
                    }
                    std::thread::sleep(interval);
                    ok = out.write_all(c).and_then(|()| out.flush()).is_ok();
                }
                ok
            }
        };
        if !keep {
            return;
        }
    }
}

/// The status line and headers of a 200 or 206 answer.
#[derive(Clone, Copy)]
struct Head {
    code: u16,
    /// Content-Length (of this answer's body).
    len: usize,
    /// The whole file's length (for Content-Range and the ETag).
    total: usize,
    /// The first byte sent (206).
    start: usize,
}

fn head_bytes(h: Head) -> Vec<u8> {
    let mut buf = Vec::new();
    write!(
        buf,
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nETag: \"{:x}\"\r\nAccept-Ranges: bytes\r\n",
        h.code,
        reason(h.code),
        h.len,
        h.total
    )
    .unwrap();
    if h.code == 206 {
        write!(
            buf,
            "Content-Range: bytes {}-{}/{}\r\n",
            h.start,
            h.total.saturating_sub(1),
            h.total
        )
        .unwrap();
    }
    buf.extend_from_slice(b"\r\n");
    buf
}

/// Headers announcing `h.len` bytes, then `body` (all of them, or fewer).
fn write_partial(out: &mut TcpStream, h: Head, body: &[u8]) -> std::io::Result<()> {
    let mut buf = head_bytes(h);
    buf.extend_from_slice(body);
    out.write_all(&buf)?;
    out.flush()
}

fn write_with(out: &mut TcpStream, h: Head, body: &[u8]) -> std::io::Result<()> {
    write_partial(
        out,
        Head {
            len: body.len(),
            ..h
        },
        body,
    )
}

fn local_file(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = url_path.split('?').next()?.trim_start_matches('/');
    if rel.split('/').any(|c| c == ".." || c == ".") {
        return None;
    }
    let p = root.join(rel);
    p.is_file().then_some(p)
}

fn respond_file(
    out: &mut TcpStream,
    body: Option<&[u8]>,
    head: impl Fn(usize) -> Head,
    log: &dyn Fn(u16, &str, usize),
) -> bool {
    match body {
        Some(data) => {
            let h = head(data.len());
            log(h.code, "served", data.len());
            write_with(out, h, data).is_ok()
        }
        None => {
            log(404, "not found", 0);
            let body = b"not found\n";
            write_response(out, 404, body.len(), body).is_ok()
        }
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        206 => "Partial Content",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

fn write_response(out: &mut TcpStream, code: u16, len: usize, body: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(body.len() + 128);
    write!(
        buf,
        "HTTP/1.1 {code} {}\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\n\r\n",
        reason(code)
    )?;
    buf.extend_from_slice(body);
    out.write_all(&buf)?;
    out.flush()
}

/// Closes with SO_LINGER 0, so the peer sees a connection reset.
fn reset(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket fd and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    // The stream is dropped by the caller's return (close → RST).
}

// ---------------------------------------------------------------------------
// Source trees and repositories
// ---------------------------------------------------------------------------

pub const TS: u64 = 1_700_000_000;

/// The edge tree of `tests/common` (every odd case), with fewer `many/`
/// files and a 1 MiB `big.bin` to keep debug-build pulls quick. Built once
/// per test binary.
pub fn pull_edge_tree() -> &'static SharedTree {
    static TREE: OnceLock<SharedTree> = OnceLock::new();
    TREE.get_or_init(|| {
        SharedTree::build(scratch_dir("pull-edge-tree").join("src"), |p| {
            build_edge_tree_with(p, 200, (1 << 20) + 4321)
        })
    })
}

/// A "medium" tree: `dirs` directories `dNN/` (every third with a `sub/`),
/// `files` regular files spread over them with distinct pseudo-random
/// contents of 200..4200 bytes, plus a few symlinks. `seed` changes every
/// file's content.
pub fn build_medium_tree(dir: &Path, dirs: usize, files: usize, seed: u64) {
    make_dir(dir, 0o755);
    for d in 0..dirs {
        make_dir(&dir.join(format!("d{d:02}")), 0o755);
        if d.is_multiple_of(3) {
            make_dir(&dir.join(format!("d{d:02}/sub")), 0o750);
        }
    }
    for i in 0..files {
        let d = i % dirs;
        let rel = if d.is_multiple_of(3) && i.is_multiple_of(2) {
            format!("d{d:02}/sub/f{i:04}")
        } else {
            format!("d{d:02}/f{i:04}")
        };
        let len = 200 + (i * 37 % 4000);
        let data = pseudo_random_bytes(len, seed.wrapping_mul(1_000_003) + i as u64);
        write_file(
            &dir.join(rel),
            &data,
            if i % 7 == 0 { 0o755 } else { 0o644 },
        );
    }
    for d in (0..dirs).step_by(4) {
        std::os::unix::fs::symlink(format!("../d{d:02}"), dir.join(format!("d{d:02}/up"))).unwrap();
    }
    write_file(&dir.join("README"), b"medium tree\n", 0o644);
}

/// Changes a medium tree for the next commit of a history: rewrites the
/// files of directory `dNN` for NN = round (mod dirs), adds `new_ROUND/`
/// with three files and removes `README` on round 2.
pub fn evolve_medium_tree(dir: &Path, round: u64) {
    let dirs: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.file_name().unwrap().to_string_lossy().starts_with('d'))
            .collect();
        v.sort();
        v
    };
    let target = &dirs[round as usize % dirs.len()];
    for e in fs::read_dir(target).unwrap().flatten() {
        let p = e.path();
        if fs::symlink_metadata(&p).unwrap().file_type().is_file() {
            let mut data = fs::read(&p).unwrap();
            data.extend_from_slice(format!("changed in round {round}\n").as_bytes());
            fs::write(&p, data).unwrap();
        }
    }
    let nd = dir.join(format!("new_{round}"));
    make_dir(&nd, 0o755);
    for i in 0..3 {
        write_file(
            &nd.join(format!("n{i}")),
            &pseudo_random_bytes(1000 + i * 10, 77 + round * 10 + i as u64),
            0o644,
        );
    }
    if round == 2 {
        let _ = fs::remove_file(dir.join("README"));
    }
}

/// `ostree init --mode=archive` + commits, as in a real server repo.
pub fn ostree_summary_update(repo: &Path) {
    ostree_repo_ok(repo, ["summary", "-u"]);
}

/// A history of `n` commits of the medium tree on `branch` in `repo`
/// (archive, created if needed); returns the commits, oldest first.
pub fn commit_medium_history(
    repo: &Path,
    work: &Path,
    branch: &str,
    n: u64,
    dirs: usize,
    files: usize,
) -> Vec<String> {
    if !repo.join("config").exists() {
        ostree_init(repo, Mode::Archive);
    }
    build_medium_tree(work, dirs, files, 1);
    let mut commits = Vec::new();
    for round in 0..n {
        if round > 0 {
            evolve_medium_tree(work, round);
        }
        let c = ostree_commit(
            repo,
            work,
            branch,
            &CommitOpts::new(&format!("commit {}", round + 1), "", TS + round),
        );
        commits.push(c);
    }
    commits
}

// ---------------------------------------------------------------------------
// Objects of a commit, objects of a store
// ---------------------------------------------------------------------------

/// One line of `ostree ls -R -C`.
#[derive(Clone, Debug)]
pub struct LsEntry {
    pub kind: char,
    pub path: String,
    /// Content checksum (files, symlinks) or dirtree (directories).
    pub checksum: String,
    /// Directories only.
    pub dirmeta: Option<String>,
}

/// `ostree ls -R -C REV [PATH]` parsed.
pub fn ostree_ls(repo: &Path, rev: &str, path: &str) -> Vec<LsEntry> {
    let out = ostree_repo_ok(repo, ["ls", "-R", "-C", rev, path]).stdout_str();
    let mut v = Vec::new();
    for line in out.lines() {
        // mode uid gid size csum [dirmeta] path[ -> target]
        let mut rest = line;
        let mut fields = Vec::new();
        let kind = line.chars().next().unwrap();
        let n = if kind == 'd' { 6 } else { 5 };
        for _ in 0..n {
            rest = rest.trim_start();
            let end = rest.find(' ').unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let mut path = rest.strip_prefix(' ').unwrap_or(rest).to_string();
        if kind == 'l'
            && let Some(i) = path.find(" -> ")
        {
            path.truncate(i);
        }
        v.push(LsEntry {
            kind,
            path,
            checksum: fields[4].to_string(),
            dirmeta: (kind == 'd').then(|| fields[5].to_string()),
        });
    }
    v
}

/// The objects a commit's tree (or a part of it) consists of, as
/// normalised names `CHECKSUM.TYPE`.
#[derive(Clone, Debug, Default)]
pub struct TreeObjects {
    pub dirtrees: BTreeSet<String>,
    pub dirmetas: BTreeSet<String>,
    pub files: BTreeSet<String>,
}

impl TreeObjects {
    pub fn of(repo: &Path, rev: &str, path: &str) -> TreeObjects {
        let mut t = TreeObjects::default();
        for e in ostree_ls(repo, rev, path) {
            match e.kind {
                'd' => {
                    t.dirtrees.insert(format!("{}.dirtree", e.checksum));
                    t.dirmetas.insert(format!("{}.dirmeta", e.dirmeta.unwrap()));
                }
                _ => {
                    t.files.insert(format!("{}.file", e.checksum));
                }
            }
        }
        t
    }

    pub fn all(&self) -> BTreeSet<String> {
        let mut s = self.dirtrees.clone();
        s.extend(self.dirmetas.iter().cloned());
        s.extend(self.files.iter().cloned());
        s
    }

    pub fn union(&self, o: &TreeObjects) -> TreeObjects {
        TreeObjects {
            dirtrees: self.dirtrees.union(&o.dirtrees).cloned().collect(),
            dirmetas: self.dirmetas.union(&o.dirmetas).cloned().collect(),
            files: self.files.union(&o.files).cloned().collect(),
        }
    }
}

/// Every object of a commit, the commit itself included.
pub fn commit_objects(repo: &Path, commit: &str) -> BTreeSet<String> {
    let mut s = TreeObjects::of(repo, commit, "/").all();
    s.insert(format!("{commit}.commit"));
    s
}

/// Loose objects of a repository as normalised names (`.filez` → `.file`).
pub fn store_objects(repo: &Path) -> BTreeSet<String> {
    list_objects(repo)
        .into_iter()
        .filter_map(|o| {
            let (dir, file) = o.split_once('/')?;
            let (stem, ext) = file.split_once('.')?;
            let ext = if ext == "filez" { "file" } else { ext };
            Some(format!("{dir}{stem}.{ext}"))
        })
        .collect()
}

/// Only the entries of `set` of the given type (`file`, `dirtree`, …).
pub fn of_type(set: &BTreeSet<String>, ty: &str) -> BTreeSet<String> {
    set.iter()
        .filter(|k| k.rsplit('.').next() == Some(ty))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------
// Stores and end-state checks
// ---------------------------------------------------------------------------

/// A new arbor store of `mode` in a fresh directory (kept by the caller),
/// with `core.fsync=false`: syncing the disk is most of a small pull's wall
/// time and is irrelevant to what these tests check (a SIGKILL does not
/// lose the page cache). [`new_synced_store`] keeps the default.
pub fn new_store(mode: Mode) -> (tempfile::TempDir, PathBuf) {
    let (t, repo) = new_synced_store(mode);
    ostree_repo_ok(&repo, ["config", "set", "core.fsync", "false"]);
    (t, repo)
}

/// A new arbor store of `mode` with the default configuration (fsync on).
pub fn new_synced_store(mode: Mode) -> (tempfile::TempDir, PathBuf) {
    let t = shared_tempdir();
    let repo = t.path().join("store");
    arbor_init(&repo, mode);
    (t, repo)
}

/// `arbor remote add NAME URL EXTRA...` in `store`.
pub fn add_remote(store: &Path, name: &str, url: &str, extra: &[&str]) {
    let mut a = vec!["remote", "add", name, url];
    a.extend_from_slice(extra);
    arbor_repo_ok(store, a);
}

/// A new store (as [`new_store`], archive) with the remote `origin` at
/// `url`, added with `extra` options.
pub fn store_with_origin(url: &str, extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let (t, store) = new_store(Mode::Archive);
    add_remote(&store, "origin", url, extra);
    (t, store)
}

/// `arbor --repo STORE pull ARGS...` (not asserted).
pub fn pull(store: &Path, args: &[&str]) -> Run {
    let mut a = vec!["pull"];
    a.extend_from_slice(args);
    arbor_repo(store, a)
}

#[track_caller]
pub fn pull_ok(store: &Path, args: &[&str]) -> Run {
    pull(store, args).assert_ok()
}

/// The commit a ref file names (`heads/main`, `remotes/origin/main`), if any.
pub fn read_ref(repo: &Path, rel: &str) -> Option<String> {
    let p = repo.join("refs").join(rel);
    match fs::read_to_string(&p) {
        Ok(s) => Some(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("read {}: {e}", p.display()),
    }
}

/// All ref files under `refs/` as `heads/main` → checksum.
pub fn all_refs(repo: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, fs::read_to_string(&p).unwrap().trim().to_string());
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(&repo.join("refs"), &repo.join("refs"), &mut m);
    m
}

pub fn is_partial(repo: &Path, commit: &str) -> bool {
    repo.join("state")
        .join(format!("{commit}.commitpartial"))
        .exists()
}

pub fn has_object(repo: &Path, key: &str) -> bool {
    store_objects(repo).contains(key)
}

/// `ostree fsck` succeeds on the store (partial commits are skipped by it,
/// every object present is verified). Returns its output.
#[track_caller]
pub fn assert_fsck_clean(store: &Path) -> String {
    let r = ostree_repo(store, ["fsck"]);
    if !r.success() {
        panic!(
            "ostree fsck failed on {}\n{}",
            store.display(),
            r.describe()
        );
    }
    r.combined()
}

/// `arbor fsck` succeeds on the store too (it skips partial commits like
/// ostree and verifies every object).
#[track_caller]
pub fn assert_arbor_fsck_clean(store: &Path) -> String {
    let r = arbor_repo(store, ["fsck"]);
    if !r.success() {
        panic!("arbor fsck failed on {}\n{}", store.display(), r.describe());
    }
    r.combined()
}

/// Every loose object of the store re-hashes to its name, whether or not a
/// complete commit reaches it (`ostree fsck` skips partial commits, so it
/// never reads what a failed pull left behind). Metadata objects (commit,
/// dirtree, dirmeta) are checked here, independently of arbor, as the
/// SHA-256 of their bytes; content objects, whose checksum covers a header
/// rebuilt from how the mode stores them, by `arbor fsck`, which re-hashes
/// every loose object. `.commitmeta` is named after its commit, not its
/// bytes.
#[track_caller]
pub fn assert_objects_hash_to_names(store: &Path) {
    for o in store_objects(store) {
        let Some((csum, ty)) = o.split_once('.') else {
            panic!("object without a type: {o}");
        };
        if matches!(ty, "commit" | "dirtree" | "dirmeta") {
            let bytes = fs::read(object_path(store, csum, ty)).unwrap();
            assert_eq!(
                sha256_hex(&bytes),
                csum,
                "{o} in {} does not hash to its name",
                store.display()
            );
        }
    }
    assert_arbor_fsck_clean(store);
}

/// Manifest of `ostree checkout [-U] [--subpath=P] REV` from `repo`.
pub fn checkout_manifest(repo: &Path, rev: &str, user: bool, subpath: Option<&str>) -> String {
    let t = shared_tempdir();
    let dest = t.path().join("co");
    let mut args: Vec<String> = vec!["checkout".into()];
    if user {
        args.push("-U".into());
    }
    if let Some(s) = subpath {
        args.push(format!("--subpath={s}"));
    }
    args.push(rev.into());
    args.push(dest.display().to_string());
    ostree_repo_ok(repo, &args);
    manifest(&dest)
}

/// The pulled commit checks out (with `ostree`) from the store exactly as
/// it does from the source repository.
#[track_caller]
pub fn assert_same_checkout(store: &Path, source: &Path, commit: &str, user: bool) {
    let expected = checkout_manifest(source, commit, user, None);
    let actual = checkout_manifest(store, commit, user, None);
    assert_manifest_eq(
        &actual,
        &expected,
        &format!("ostree checkout of {commit} from the store vs from the source"),
    );
}

/// The complete post-pull check: fsck clean, commit complete (no
/// `commitpartial`), and the same checkout as from the source.
#[track_caller]
pub fn assert_pulled(store: &Path, source: &Path, commit: &str, user: bool) {
    assert_fsck_clean(store);
    assert!(
        !is_partial(store, commit),
        "commit {commit} is still marked partial in {}",
        store.display()
    );
    assert_same_checkout(store, source, commit, user);
}

/// Whether an `ostree checkout` of this mode's store needs `-U`.
pub fn user_checkout(mode: Mode) -> bool {
    mode == Mode::BareUserOnly
}

/// Asserts the output mentions every one of `needles`.
#[track_caller]
pub fn assert_mentions(run: &Run, needles: &[&str]) {
    let text = run.combined();
    for n in needles {
        assert!(
            text.contains(n),
            "expected the output to mention {n:?}\n{}",
            run.describe()
        );
    }
}

/// The pull of `remote:branch` failed, naming `commit` and the remote;
/// the ref was not written and the commit object not stored.
#[track_caller]
pub fn assert_refused(
    store: &Path,
    r: Run,
    branch: &str,
    commit: &str,
    remote: &str,
    also: &[&str],
) {
    let r = r.assert_clean_failure();
    let err = r.stderr_str();
    assert!(
        err.contains(commit),
        "error names the commit\n{}",
        r.describe()
    );
    assert!(
        err.contains(&format!("remote \"{remote}\"")),
        "error names the remote\n{}",
        r.describe()
    );
    for s in also {
        assert!(err.contains(s), "error mentions {s:?}\n{}", r.describe());
    }
    assert_eq!(
        read_ref(store, &format!("remotes/{remote}/{branch}")),
        None,
        "the ref must not be written\n{}",
        r.describe()
    );
    assert!(
        !object_path(store, commit, "commit").exists(),
        "a refused commit is not stored"
    );
}
