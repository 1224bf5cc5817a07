//! `scripts/chaos --smoke` end to end: one `kill -9` of a real `eddy run` during a load-gen run
//! (late and malformed records, parallel HTTP clients on `eddy serve`), a restart, and
//! `load-gen --verify` exact. Catches a regression of the script (it must still drive the real
//! binary and report every column) and of crash recovery. Real services (`scripts/services`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn chaos_smoke_kill9_and_restart_verifies_exactly() {
    eddy_testkit::services(&[]);
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::env::temp_dir().join(format!(
        "chaos_smoke_{}_{}",
        std::process::id(),
        eddy_core::now_ms()
    ));
    let doc = out.join("chaos.md");
    std::fs::create_dir_all(&out).unwrap();
    let mut child = Command::new(format!("{root}/scripts/chaos"))
        .arg("--smoke")
        .env("CHAOS_BIN", env!("CARGO_BIN_EXE_eddy"))
        .env("CHAOS_OUT", &out)
        .env("CHAOS_DOC", &doc)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("scripts/chaos starts");
    // The script bounds itself (load, restart, verify timeout); this is the outer guard.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(240) {
            // SIGTERM lets the script's trap stop the processes it started.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
            panic!("scripts/chaos --smoke still running after 240 s; logs in {out:?}");
        }
        std::thread::park_timeout(Duration::from_millis(200));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let table = std::fs::read_to_string(&doc).unwrap_or_default();
    assert!(
        status.success(),
        "scripts/chaos --smoke failed ({status}): {stdout}\nlogs in {out:?}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("| kill -9 of eddy run"))
        .unwrap_or_else(|| panic!("no kill -9 row in {doc:?}:\n{table}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // | scenario | recovery | max lag | repeats | 5xx | verify | events | HTTP answers | exits |
    // ruled late |
    assert!(cells[2].ends_with(" s"), "recovered: {row}");
    assert!(cells[3].parse::<u64>().is_ok(), "max lag: {row}");
    assert!(
        cells[4].parse::<u64>().is_ok(),
        "dead-letter repeats: {row}"
    );
    assert_eq!(cells[5], "0", "no HTTP 5xx: {row}");
    assert_eq!(cells[6], "exact", "verify: {row}");
    assert!(
        cells[7].parse::<u64>().is_ok_and(|n| n > 0),
        "events: {row}"
    );
    assert!(cells[10].parse::<u64>().is_ok(), "ruled late: {row}");
}
