//! Test support shared by eddy's integration tests, on the real services (started by
//! `scripts/services`), never mocks:
//! - [`services`]: starts Redis, ClickHouse and Kafka once per test binary;
//! - [`stores`]: a fresh Redis prefix and ClickHouse database per test, typed reads;
//! - [`fixtures`]: builders of rows, batches and the query server's answers;
//! - [`http`]: requests to the query server, answers decoded into `eddy_core::api` types;
//! - [`kafka`]: producing raw messages, reading the dead-letter topic back;
//! - [`pipeline`]: a pipeline config with topics, Redis prefix and database of a test's own;
//! - [`wait`]: polling a condition with a deadline instead of sleeping.

pub mod fixtures;
pub mod http;
pub mod kafka;
pub mod pipeline;
pub mod proxy;
pub mod stores;
pub mod wait;

use std::path::PathBuf;
use std::sync::Mutex;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Starts `services` (`"redis"`, `"clickhouse"`, `"kafka"`; empty for all) with
/// `scripts/services up`, once per set per test binary, panicking with the script's output if
/// it fails. The script installs what is missing and waits until each service answers.
pub fn services(services: &[&str]) {
    static STARTED: Mutex<Vec<Vec<String>>> = Mutex::new(Vec::new());
    let wanted: Vec<String> = services.iter().map(|s| s.to_string()).collect();
    let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
    if started.contains(&wanted) {
        return;
    }
    let out = std::process::Command::new(repo().join("scripts/services"))
        .arg("up")
        .args(services)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("cannot run scripts/services");
    assert!(
        out.status.success(),
        "scripts/services up {services:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    started.push(wanted);
}

/// A loopback port free a moment ago (bound, then released), for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Runs `f` to completion on a tokio runtime of its own, on a thread of its own, so that it
/// may be called from sync tests and from inside another runtime (an async test) alike.
pub fn block_on<F>(f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
                .block_on(f)
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}
