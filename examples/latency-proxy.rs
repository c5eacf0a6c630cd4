//! `latency-proxy LISTEN UPSTREAM ONE_WAY_MS [COUNT_FILE]`: a TCP proxy
//! adding a fixed delay each way (see `tests/common/latency.rs`), for
//! `bench/net.sh`. Prints the port it listens on, then serves until
//! killed, keeping the number of connections accepted so far in
//! COUNT_FILE (rewritten every 50 ms).

#[path = "../tests/common/latency.rs"]
mod latency;

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(4..=5).contains(&args.len()) {
        eprintln!("usage: latency-proxy LISTEN_ADDR UPSTREAM_ADDR ONE_WAY_MS [COUNT_FILE]");
        std::process::exit(2);
    }
    let listen = args[1].parse().expect("LISTEN_ADDR, e.g. 127.0.0.1:0");
    let upstream = args[2].parse().expect("UPSTREAM_ADDR, e.g. 127.0.0.1:8080");
    let ms: u64 = args[3].parse().expect("ONE_WAY_MS");
    let proxy = latency::LatencyProxy::start(listen, upstream, Duration::from_millis(ms));
    println!("{}", proxy.port);
    let Some(file) = args.get(4) else {
        proxy.serve_forever();
    };
    let mut last = u64::MAX;
    loop {
        let n = proxy.connections.load(std::sync::atomic::Ordering::Relaxed);
        if n != last {
            let tmp = format!("{file}.tmp");
            std::fs::write(&tmp, format!("{n}\n")).expect("write the count file");
            std::fs::rename(&tmp, file).expect("rename the count file");
            last = n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
