//! The transfers behind [`HttpSource`](super::http::HttpSource): many
//! requests in flight on a small tokio runtime, handing bodies to the pull
//! engine's worker threads as they arrive.
//!
//! Design. Requests are not tied to threads: one async reqwest client on a
//! one-thread runtime carries every transfer (reqwest's blocking client
//! runs the same machinery, but one request per calling thread: at 16
//! threads a 50 ms path is idle most of the time, and at 256 threads the
//! threads themselves cost more than they hide). The engine announces what
//! it will need ([`Fetcher::prefetch`]), metadata before content, and parks
//! the tasks; the fetcher starts those requests up to a limit that adapts
//! to what the path delivers ([`super::concurrency`]) and tells the engine
//! when each body can be taken without waiting, which hands the task back
//! to a worker. So the engine keeps its shape (a queue of tasks, a few
//! workers that inflate, hash and write, CPU and disk bound) and its
//! workers never wait for a round trip, while the order of arrival, not of
//! request, decides what is written first. A source without latency
//! (local repositories) declines the announcement and is read by the
//! workers as before. Delta parts are announced the same way
//! ([`Fetcher::prefetch`] without a listener): all their requests go out
//! before the first part is applied.
//!
//! Connections are reused: HTTP/2 multiplexes every request over one
//! connection (tested), HTTP/1.1 keeps a pool about as large as the most
//! requests ever in flight (hyper opens a few more when a request races a
//! connection being returned), which the adaptive limit keeps at 16-32 on
//! a server nearby and lets grow to `--jobs` only when the round trip
//! demands it. HTTP/1.1 has no multiplexing (and pipelining is not safe
//! through the proxies of the world), so a far server over plain HTTP
//! costs that many connections.
//!
//! Memory is bounded whatever the commit's size or the latency. Bodies of
//! up to [`SMALL_BODY`] bytes are received whole while their total held
//! (received, not yet taken) stays under [`HELD_BUDGET`]; new requests wait
//! while it does not. Bigger bodies (and small ones when the budget is
//! spent) are streamed: the engine is told once the headers are in, and
//! the body is read only as the worker consumes it, through a channel of
//! two chunks, so the network's flow control (TCP, HTTP/2 windows) holds
//! back the rest. What remains grows with the connections: hyper's read
//! buffer of each HTTP/1.1 connection grows with the bodies it carries (to
//! about 400 KiB at most); measured, 128 connections to a server 50 ms
//! away held about 20 MiB of a 45 MiB peak (BENCHMARKS.md).
//!
//! Flaky paths. A request that fails transiently (connection refused or
//! reset, 5xx, 408, 429, a stall of `timeout` with nothing received) is
//! retried after a backoff (0.2 s doubling to 5 s, or the server's
//! `Retry-After`), `retries` times, without holding its place among the
//! requests in flight meanwhile; an attempt that still received
//! [`RESUME_CREDIT`] or more new bytes is not counted against that budget,
//! so a big body on a path that keeps cutting off makes progress instead
//! of failing. A body cut off mid-way resumes with a `Range` request (with
//! `If-Range` when the server gave a validator); a server that answers the
//! whole body instead is read past what was already received, so no
//! consumer ever sees a byte twice (bodies held whole, which may be files
//! that change, such as a summary, start again instead). Callers re-fetch
//! what does not hash to its name (the engine for objects, the delta code
//! for parts); this module knows nothing of checksums.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{self, HeaderValue};
use reqwest::{Client, StatusCode};
use tokio::sync::{mpsc, oneshot};

use super::concurrency::Limiter;
use super::source::{FetchError, FetchErrorKind, NetworkStats, PrefetchReady};
use crate::ostree::ObjectName;

/// Bodies up to this size are received whole (when the budget allows).
pub const SMALL_BODY: u64 = 256 * 1024;
/// Bytes of whole bodies received and not yet taken by the engine.
pub const HELD_BUDGET: u64 = 4 << 20;
/// An attempt that received this much new data before failing does not
/// count against the retry budget.
pub const RESUME_CREDIT: u64 = 1 << 20;
/// Chunks a streamed body may have received ahead of its reader.
const STREAM_CHUNKS: usize = 2;

#[derive(Clone, Debug)]
pub struct Settings {
    /// A transfer that receives nothing for this long fails (and is
    /// retried); also the connect timeout.
    pub timeout: Duration,
    /// Retries of a request after a transient failure.
    pub retries: u32,
    /// The most requests in flight.
    pub max_in_flight: usize,
}

/// What a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The whole body, refused past `max` bytes (metadata, summary, refs).
    Whole { max: u64 },
    /// Content (objects, delta parts): whole when small, else streamed;
    /// no size limit here (the consumer knows what it expects).
    Content,
}

/// A body, whole or streaming.
pub enum Body {
    Bytes(Vec<u8>),
    Stream(BodyReader),
}

pub struct Fetcher {
    runtime: Option<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    handle: tokio::runtime::Handle,
    settings: Settings,
    sched: Mutex<Sched>,
    received: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    resumed: AtomicU64,
}

struct Sched {
    limiter: Limiter,
    active: usize,
    peak: usize,
    /// Prefetches not started yet: metadata first.
    urgent: VecDeque<Arc<Slot>>,
    normal: VecDeque<Arc<Slot>>,
    /// Prefetched and not taken yet, by URL.
    prefetched: HashMap<String, Arc<Slot>>,
    /// Transfers running (or waiting to retry), for cancellation.
    running: HashMap<u64, Arc<Slot>>,
    /// Transfers waiting, after a backoff, for a request to be allowed in
    /// flight again: served before new requests.
    retries: VecDeque<oneshot::Sender<Permit>>,
    next_id: u64,
    /// Bytes of whole bodies received or reserved and not taken.
    held: u64,
    /// Prefetched results (bodies, streams, errors) not taken yet: many
    /// means the consumers, not the network, are what limits the pull.
    unclaimed: usize,
}

/// One transfer and its result.
struct Slot {
    id: u64,
    url: String,
    want: Want,
    ready: Option<(Arc<dyn PrefetchReady>, ObjectName)>,
    state: Mutex<SlotState>,
    cond: Condvar,
    /// Held bytes this slot accounts for (released when taken).
    reserved: AtomicU64,
    cancelled: AtomicBool,
    abort: Mutex<Option<tokio::task::AbortHandle>>,
}

enum SlotState {
    Waiting,
    Done(Result<Body, FetchError>),
    Taken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fetcher {
    pub fn new(
        client_builder: reqwest::ClientBuilder,
        settings: Settings,
    ) -> Result<Fetcher, Box<dyn std::error::Error + Send + Sync>> {
        // One thread carries every transfer: parsing headers and moving
        // chunks is little work next to inflating and writing, and the
        // engine's workers need the cores.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("arbor-http")
            .enable_all()
            .build()?;
        let client = {
            // Clients made outside a runtime have no timer; build within.
            let _guard = runtime.enter();
            client_builder.build()?
        };
        let inner = Arc::new(Inner {
            client,
            handle: runtime.handle().clone(),
            sched: Mutex::new(Sched {
                limiter: Limiter::new(settings.max_in_flight, Instant::now()),
                active: 0,
                peak: 0,
                urgent: VecDeque::new(),
                normal: VecDeque::new(),
                prefetched: HashMap::new(),
                running: HashMap::new(),
                retries: VecDeque::new(),
                next_id: 0,
                held: 0,
                unclaimed: 0,
            }),
            settings,
            received: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
        });
        Ok(Fetcher {
            runtime: Some(runtime),
            inner,
        })
    }

    pub fn received(&self) -> u64 {
        self.inner.received.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> NetworkStats {
        let i = &self.inner;
        NetworkStats {
            requests: i.requests.load(Ordering::Relaxed),
            retries: i.retries.load(Ordering::Relaxed),
            resumed: i.resumed.load(Ordering::Relaxed),
            peak_in_flight: lock(&i.sched).peak as u64,
        }
    }

    /// Starts fetching `url` in the background (unless it already is);
    /// `ready` is told `name` once [`Fetcher::fetch`] of it will not wait.
    pub fn prefetch(
        &self,
        url: String,
        want: Want,
        urgent: bool,
        ready: Option<(Arc<dyn PrefetchReady>, ObjectName)>,
    ) {
        {
            let mut s = lock(&self.inner.sched);
            if s.prefetched.contains_key(&url) {
                return;
            }
            let slot = s.new_slot(url.clone(), want, ready);
            s.prefetched.insert(url, slot.clone());
            if urgent {
                s.urgent.push_back(slot);
            } else {
                s.normal.push_back(slot);
            }
        }
        self.inner.pump();
    }

    /// The body of `url`: prefetched, or fetched now (whatever the limit:
    /// the caller is waiting). Retries and resumption happen inside.
    pub fn fetch(&self, url: &str, want: Want) -> Result<Body, FetchError> {
        let (slot, permit) = {
            let mut s = lock(&self.inner.sched);
            match s.prefetched.remove(url) {
                Some(slot) => {
                    // Not started yet: start it now, ahead of its turn.
                    let queued = s
                        .urgent
                        .iter()
                        .chain(s.normal.iter())
                        .any(|q| q.id == slot.id);
                    let permit = queued.then(|| {
                        s.urgent.retain(|q| q.id != slot.id);
                        s.normal.retain(|q| q.id != slot.id);
                        s.begin(&self.inner, &slot)
                    });
                    (slot, permit)
                }
                None => {
                    let slot = s.new_slot(url.to_string(), want, None);
                    let permit = s.begin(&self.inner, &slot);
                    (slot, Some(permit))
                }
            }
        };
        if let Some(permit) = permit {
            self.inner.spawn(slot.clone(), permit);
        }
        self.inner.take(&slot)
    }

    /// Fails every transfer and waiter with [`FetchErrorKind::Cancelled`]
    /// and forgets what was prefetched.
    pub fn cancel(&self) {
        let slots: Vec<Arc<Slot>> = {
            let mut guard = lock(&self.inner.sched);
            let s = &mut *guard;
            let mut all: Vec<Arc<Slot>> = s.urgent.drain(..).chain(s.normal.drain(..)).collect();
            all.extend(s.prefetched.drain().map(|(_, v)| v));
            all.extend(s.running.values().cloned());
            s.retries.clear();
            all
        };
        for slot in &slots {
            slot.cancelled.store(true, Ordering::Relaxed);
            // A result never taken is dropped (a stream's reader with it).
            drop(slot.claim(&self.inner));
            slot.finish(&self.inner, Err(cancelled(&slot.url)));
            if let Some(a) = lock(&slot.abort).take() {
                a.abort();
            }
        }
        // Bodies received and never taken no longer count.
        for slot in &slots {
            self.inner.release(slot);
        }
        self.inner.pump();
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.cancel();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Sched {
    fn new_slot(
        &mut self,
        url: String,
        want: Want,
        ready: Option<(Arc<dyn PrefetchReady>, ObjectName)>,
    ) -> Arc<Slot> {
        self.next_id += 1;
        Arc::new(Slot {
            id: self.next_id,
            url,
            want,
            ready,
            state: Mutex::new(SlotState::Waiting),
            cond: Condvar::new(),
            reserved: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            abort: Mutex::new(None),
        })
    }

    /// Counts a transfer as started (the caller spawns it with the
    /// permit).
    fn begin(&mut self, inner: &Arc<Inner>, slot: &Arc<Slot>) -> Permit {
        self.running.insert(slot.id, slot.clone());
        self.permit(inner)
    }

    /// One more request in flight, until the permit is dropped.
    fn permit(&mut self, inner: &Arc<Inner>) -> Permit {
        self.active += 1;
        self.peak = self.peak.max(self.active);
        Permit {
            inner: inner.clone(),
        }
    }

    /// Whether the limit may be what holds the pull back: requests wait
    /// to start, and the consumers keep up with what arrives (then the
    /// consumer is asked whether it waits for more).
    fn limit_binds(&self) -> bool {
        (!self.urgent.is_empty() || !self.normal.is_empty())
            && self.held < HELD_BUDGET
            && self.unclaimed <= self.limiter.limit() / 4
    }
}

impl Slot {
    /// Sets the result unless one was set (a cancellation wins over a
    /// late result) and tells whoever waits.
    fn finish(&self, inner: &Inner, result: Result<Body, FetchError>) -> bool {
        let mut st = lock(&self.state);
        if !matches!(*st, SlotState::Waiting) {
            return false;
        }
        *st = SlotState::Done(result);
        drop(st);
        if self.ready.is_some() {
            lock(&inner.sched).unclaimed += 1;
        }
        self.cond.notify_all();
        if let Some((ready, name)) = &self.ready {
            ready.ready(*name);
        }
        true
    }

    /// Takes the result out, if there is one; it then no longer counts as
    /// unclaimed.
    fn claim(&self, inner: &Inner) -> Option<Result<Body, FetchError>> {
        let mut st = lock(&self.state);
        match std::mem::replace(&mut *st, SlotState::Taken) {
            SlotState::Done(r) => {
                drop(st);
                if self.ready.is_some() {
                    let mut s = lock(&inner.sched);
                    s.unclaimed = s.unclaimed.saturating_sub(1);
                }
                Some(r)
            }
            other => {
                *st = other;
                None
            }
        }
    }
}

impl Inner {
    /// Lets retries, then queued prefetches, go while the limit (and, for
    /// prefetches, the budget) allow.
    fn pump(self: &Arc<Self>) {
        let mut start = Vec::new();
        // Permits of retries that were cancelled meanwhile: dropped (which
        // pumps again) once the lock is released.
        let mut unused = Vec::new();
        {
            let mut s = lock(&self.sched);
            while s.active < s.limiter.limit() {
                let Some(tx) = s.retries.pop_front() else {
                    break;
                };
                let permit = s.permit(self);
                if let Err(p) = tx.send(permit) {
                    unused.push(p);
                }
            }
            while s.active < s.limiter.limit() && s.held < HELD_BUDGET {
                let Some(slot) = s.urgent.pop_front().or_else(|| s.normal.pop_front()) else {
                    break;
                };
                let permit = s.begin(self, &slot);
                start.push((slot, permit));
            }
        }
        drop(unused);
        for (slot, permit) in start {
            self.spawn(slot, permit);
        }
    }

    /// Waits until one more request may be in flight (a retry, after its
    /// backoff).
    async fn acquire(self: &Arc<Self>) -> Permit {
        let rx = {
            let mut s = lock(&self.sched);
            if s.active < s.limiter.limit() && s.retries.is_empty() {
                return s.permit(self);
            }
            let (tx, rx) = oneshot::channel();
            s.retries.push_back(tx);
            rx
        };
        match rx.await {
            Ok(p) => p,
            // Cancelled (the queue was cleared): the task is being aborted.
            Err(_) => std::future::pending().await,
        }
    }

    fn spawn(self: &Arc<Self>, slot: Arc<Slot>, permit: Permit) {
        let inner = self.clone();
        let s = slot.clone();
        let handle = self.handle.spawn(async move {
            let _running = Running {
                inner: inner.clone(),
                id: s.id,
            };
            if s.cancelled.load(Ordering::Relaxed) {
                return;
            }
            inner.run(&s, permit).await;
        });
        *lock(&slot.abort) = Some(handle.abort_handle());
        if slot.cancelled.load(Ordering::Relaxed) {
            handle.abort();
        }
    }

    /// Waits for a slot's result and takes it.
    fn take(self: &Arc<Self>, slot: &Arc<Slot>) -> Result<Body, FetchError> {
        loop {
            if let Some(r) = slot.claim(self) {
                self.release(slot);
                self.pump();
                return r;
            }
            let st = lock(&slot.state);
            match *st {
                SlotState::Waiting => {
                    drop(slot.cond.wait(st).unwrap_or_else(|p| p.into_inner()));
                }
                SlotState::Done(_) => {}
                SlotState::Taken => return Err(cancelled(&slot.url)),
            }
        }
    }

    fn release(&self, slot: &Slot) {
        let n = slot.reserved.swap(0, Ordering::Relaxed);
        if n > 0 {
            let mut s = lock(&self.sched);
            s.held = s.held.saturating_sub(n);
        }
    }

    /// Tries to count `n` more held bytes for `slot`; false when over
    /// budget.
    fn reserve(&self, slot: &Slot, n: u64, force: bool) -> bool {
        let mut s = lock(&self.sched);
        if !force && s.held.saturating_add(n) > HELD_BUDGET {
            return false;
        }
        s.held = s.held.saturating_add(n);
        slot.reserved.fetch_add(n, Ordering::Relaxed);
        true
    }

    async fn run(self: &Arc<Self>, slot: &Arc<Slot>, permit: Permit) {
        let mut permit = Some(permit);
        let mut t = Transfer {
            inner: self,
            slot,
            buf: Vec::new(),
            sink: Sink::Undecided,
            delivered: 0,
            total: None,
            validator: None,
            ranges: true,
            retry_after: None,
            ttfb: Duration::ZERO,
        };
        let mut failures = 0u32;
        let mut attempts = 0u32;
        let result = loop {
            attempts += 1;
            t.retry_after = None;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let before = t.delivered;
            let r = t.attempt().await;
            let progress = t.delivered.saturating_sub(before);
            match r {
                Ok(()) => break Ok(()),
                Err(e) if e.kind == FetchErrorKind::Network => {
                    lock(&self.sched).limiter.on_failure(Instant::now());
                    if progress < RESUME_CREDIT {
                        failures += 1;
                    }
                    if failures > self.settings.retries {
                        break Err(FetchError { attempts, ..e });
                    }
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    let backoff = Duration::from_millis(100u64 << failures.clamp(1, 6))
                        .min(Duration::from_secs(5));
                    // Not in flight while it waits: others may go.
                    drop(permit.take());
                    tokio::time::sleep(backoff.max(t.retry_after.unwrap_or_default())).await;
                    permit = Some(self.acquire().await);
                }
                Err(e) => break Err(FetchError { attempts, ..e }),
            }
        };
        if result.is_ok() {
            let mut s = lock(&self.sched);
            let binding =
                s.limit_binds() && slot.ready.as_ref().is_none_or(|(ready, _)| ready.starved());
            s.limiter
                .on_complete(Instant::now(), t.delivered, binding, t.ttfb);
        }
        match (result, t.sink) {
            (Ok(()), Sink::Stream(tx)) => {
                let _ = tx.send(Msg::End).await;
            }
            (Err(e), Sink::Stream(tx)) => {
                let _ = tx.send(Msg::Failed(e)).await;
            }
            (Ok(()), _) => {
                // Whole: counted as held until taken.
                let len = t.buf.len() as u64;
                let already = slot.reserved.load(Ordering::Relaxed);
                if len > already {
                    self.reserve(slot, len - already, true);
                }
                if !slot.finish(self, Ok(Body::Bytes(t.buf))) {
                    self.release(slot);
                }
            }
            (Err(e), _) => {
                slot.finish(self, Err(e));
                self.release(slot);
            }
        }
    }
}

/// One request in flight, counted until dropped.
struct Permit {
    inner: Arc<Inner>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        lock(&self.inner.sched).active -= 1;
        self.inner.pump();
    }
}

/// Keeps a transfer cancellable until its task ends (or is aborted).
struct Running {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.inner.sched).running.remove(&self.id);
    }
}

enum Sink {
    /// The first response decides (content: whole or streamed).
    Undecided,
    Whole {
        max: u64,
    },
    Stream(mpsc::Sender<Msg>),
}

enum Msg {
    Data(Bytes),
    End,
    Failed(FetchError),
}

/// The state of one transfer across its attempts.
struct Transfer<'a> {
    inner: &'a Arc<Inner>,
    slot: &'a Arc<Slot>,
    buf: Vec<u8>,
    sink: Sink,
    /// Bytes handed on (to `buf` or the stream).
    delivered: u64,
    /// The whole body's length, from the first full response.
    total: Option<u64>,
    /// `ETag` (strong) or `Last-Modified`, for `If-Range`.
    validator: Option<HeaderValue>,
    /// Whether to ask for ranges (off once a server mishandled one).
    ranges: bool,
    /// What a 429/503 asked us to wait.
    retry_after: Option<Duration>,
    /// From sending the last request to its response's headers.
    ttfb: Duration,
}

impl Transfer<'_> {
    fn error(&self, kind: FetchErrorKind, what: impl Into<String>) -> FetchError {
        FetchError::new(kind, self.slot.url.clone(), what)
    }

    fn network(&self, what: impl Into<String>) -> FetchError {
        self.error(FetchErrorKind::Network, what)
    }

    async fn attempt(&mut self) -> Result<(), FetchError> {
        let timeout = self.inner.settings.timeout;
        let offset = self.delivered;
        let mut req = self.inner.client.get(&self.slot.url);
        let ranged = offset > 0 && self.ranges;
        if ranged {
            req = req.header(header::RANGE, format!("bytes={offset}-"));
            if let Some(v) = &self.validator {
                req = req.header(header::IF_RANGE, v.clone());
            }
        }
        let sent = Instant::now();
        let mut resp = match tokio::time::timeout(timeout, req.send()).await {
            Err(_) => {
                return Err(self.network(format!(
                    "no answer from the server for {} s",
                    timeout.as_secs_f64()
                )));
            }
            Ok(Err(e)) => return Err(classify(&self.slot.url, e)),
            Ok(Ok(r)) => r,
        };
        self.ttfb = sent.elapsed();
        let status = resp.status();
        let code = status.as_u16();
        // Bytes of this response's body already delivered by an earlier one.
        let mut skip = 0u64;
        let full = status != StatusCode::PARTIAL_CONTENT;
        match status {
            StatusCode::PARTIAL_CONTENT if ranged => {
                if content_range_start(resp.headers()) != Some(offset) {
                    self.ranges = false;
                    return Err(self
                        .network("the server answered a different range than asked")
                        .with_status(code));
                }
                self.inner.resumed.fetch_add(1, Ordering::Relaxed);
            }
            StatusCode::PARTIAL_CONTENT => {
                return Err(self
                    .error(
                        FetchErrorKind::Fatal,
                        "server answered 206 to a request without a range",
                    )
                    .with_status(code));
            }
            s if s.is_success() => skip = offset,
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE => {
                return Err(FetchError::not_found(self.slot.url.clone()).with_status(code));
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                self.ranges = false;
                return Err(self
                    .network(format!("server answered {status} to a range request"))
                    .with_status(code));
            }
            s if s.is_server_error()
                || s == StatusCode::REQUEST_TIMEOUT
                || s == StatusCode::TOO_MANY_REQUESTS =>
            {
                self.retry_after = retry_after(resp.headers());
                return Err(self
                    .network(format!("server answered {s}"))
                    .with_status(code));
            }
            s => {
                return Err(self
                    .error(FetchErrorKind::Fatal, format!("server answered {s}"))
                    .with_status(code));
            }
        }
        if full {
            // A full body: its length and validator describe the file.
            self.total = resp.content_length();
            self.validator = validator(resp.headers());
            if let Sink::Whole { .. } = self.sink {
                // Files held whole (summaries, refs) may change between
                // attempts: start again rather than splice two versions.
                // Streams are objects and delta parts, named by their
                // checksum, so the rest of the new body continues them.
                self.buf.clear();
                self.delivered = 0;
                skip = 0;
            }
        }
        if let Sink::Undecided = self.sink {
            self.sink = match self.slot.want {
                Want::Whole { max } => Sink::Whole { max },
                Want::Content => match self.total {
                    Some(n)
                        if n <= SMALL_BODY
                            && (self.slot.reserved.load(Ordering::Relaxed) >= n
                                || self.inner.reserve(self.slot, n, false)) =>
                    {
                        Sink::Whole { max: u64::MAX }
                    }
                    _ => self.hand_over().await?,
                },
            };
        }
        if let (Sink::Whole { max }, Some(total)) = (&self.sink, self.total)
            && total > *max
        {
            return Err(self
                .error(
                    FetchErrorKind::Fatal,
                    format!("{total} bytes, over the limit of {max}"),
                )
                .with_status(code));
        }
        if let (Sink::Whole { .. }, Some(total)) = (&self.sink, self.total) {
            // The announced size, not doubled on the way (up to 1 MiB: the
            // announcement is the server's word).
            let want = total.min(1 << 20) as usize;
            self.buf.reserve_exact(want.saturating_sub(self.buf.len()));
        }
        loop {
            let chunk = match tokio::time::timeout(timeout, resp.chunk()).await {
                Err(_) => {
                    return Err(self
                        .network(format!(
                            "nothing received for {} s after {} bytes",
                            timeout.as_secs_f64(),
                            self.delivered
                        ))
                        .with_status(code));
                }
                Ok(Err(e)) => {
                    return Err(self
                        .network(format!(
                            "the transfer broke off after {} bytes",
                            self.delivered
                        ))
                        .with_status(code)
                        .with_source(e));
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            self.inner
                .received
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let mut chunk = chunk;
            if skip > 0 {
                let n = skip.min(chunk.len() as u64);
                chunk = chunk.slice(n as usize..);
                skip -= n;
            }
            if chunk.is_empty() {
                continue;
            }
            let n = chunk.len() as u64;
            match &self.sink {
                Sink::Whole { max } => {
                    if self.delivered + n > *max {
                        return Err(self
                            .error(
                                FetchErrorKind::Fatal,
                                format!("more than the limit of {max} bytes"),
                            )
                            .with_status(code));
                    }
                    self.buf.extend_from_slice(&chunk);
                }
                Sink::Stream(tx) => {
                    if tx.send(Msg::Data(chunk)).await.is_err() {
                        // The reader is gone: nobody wants the rest.
                        return Err(cancelled(&self.slot.url));
                    }
                }
                Sink::Undecided => unreachable!("decided above"),
            }
            self.delivered += n;
        }
        if skip > 0 {
            return Err(self
                .network("the body is shorter than an earlier answer's")
                .with_status(code));
        }
        if let Some(total) = self.total
            && self.delivered != total
        {
            return Err(self
                .network(format!(
                    "the body ended after {} of {total} bytes",
                    self.delivered
                ))
                .with_status(code));
        }
        Ok(())
    }

    /// Makes the body a stream: the slot's result becomes its reader, and
    /// reading starts once the reader is first read.
    async fn hand_over(&mut self) -> Result<Sink, FetchError> {
        let (tx, rx) = mpsc::channel(STREAM_CHUNKS);
        let (attach_tx, attach_rx) = oneshot::channel();
        let reader = BodyReader {
            rx,
            chunk: Bytes::new(),
            attach: Some(attach_tx),
            url: self.slot.url.clone(),
            done: false,
        };
        // Held bytes reserved for a whole body are not needed after all.
        self.inner.release(self.slot);
        self.slot.finish(self.inner, Ok(Body::Stream(reader)));
        if attach_rx.await.is_err() {
            return Err(cancelled(&self.slot.url));
        }
        Ok(Sink::Stream(tx))
    }
}

fn cancelled(url: &str) -> FetchError {
    FetchError::new(FetchErrorKind::Cancelled, url, "cancelled")
}

/// The first byte of `Content-Range: bytes FIRST-LAST/TOTAL`.
fn content_range_start(h: &header::HeaderMap) -> Option<u64> {
    let v = h.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.trim().strip_prefix("bytes ")?;
    rest.split('-').next()?.trim().parse().ok()
}

/// A strong `ETag`, else `Last-Modified`: what `If-Range` may carry.
fn validator(h: &header::HeaderMap) -> Option<HeaderValue> {
    if let Some(e) = h.get(header::ETAG)
        && !e.as_bytes().starts_with(b"W/")
    {
        return Some(e.clone());
    }
    h.get(header::LAST_MODIFIED).cloned()
}

/// `Retry-After` in seconds (dates are ignored), at most a minute.
fn retry_after(h: &header::HeaderMap) -> Option<Duration> {
    let secs: u64 = h
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

/// A failed request as a [`FetchError`]: network trouble is retried, a
/// refused certificate or a malformed request is not.
fn classify(url: &str, e: reqwest::Error) -> FetchError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    let kind = if e.is_builder() || is_tls_rejection(&e) {
        FetchErrorKind::Fatal
    } else {
        FetchErrorKind::Network
    };
    FetchError::new(kind, url, what).with_source(e)
}

/// A TLS handshake that failed on a certificate or protocol error: asking
/// again gives the same answer, so it is not retried.
fn is_tls_rejection(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    // hyper wraps the TLS error in io::Errors, whose `source` skips the
    // error they wrap: look inside them too.
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        && is_tls_rejection(inner)
    {
        return true;
    }
    e.source().is_some_and(is_tls_rejection)
}

/// A streamed body, read by a worker thread (never from the runtime).
pub struct BodyReader {
    rx: mpsc::Receiver<Msg>,
    chunk: Bytes,
    attach: Option<oneshot::Sender<()>>,
    url: String,
    done: bool,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(a) = self.attach.take() {
            let _ = a.send(());
        }
        while self.chunk.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Msg::Data(c)) => self.chunk = c,
                Some(Msg::End) => self.done = true,
                Some(Msg::Failed(e)) => return Err(e.into_io()),
                // The transfer was cancelled.
                None => return Err(cancelled(&self.url).into_io()),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_validators_are_read() {
        let mut h = header::HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "bytes 100-199/200".parse().unwrap());
        assert_eq!(content_range_start(&h), Some(100));
        h.insert(header::CONTENT_RANGE, "bytes */200".parse().unwrap());
        assert_eq!(content_range_start(&h), None);
        h.insert(header::ETAG, "W/\"x\"".parse().unwrap());
        h.insert(
            header::LAST_MODIFIED,
            "Tue, 01 Jan 2030 00:00:00 GMT".parse().unwrap(),
        );
        assert_eq!(validator(&h).unwrap(), "Tue, 01 Jan 2030 00:00:00 GMT");
        h.insert(header::ETAG, "\"5f-1a\"".parse().unwrap());
        assert_eq!(validator(&h).unwrap(), "\"5f-1a\"");
        h.insert(header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(header::RETRY_AFTER, "3600".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(60)));
    }
}
