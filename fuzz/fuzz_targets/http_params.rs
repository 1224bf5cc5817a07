//! The query server's real router (over a populated `MemoryBackend`) on arbitrary paths and
//! query strings: never a 5xx, every answer a JSON body of the documented type (see
//! `src/http_check.rs`).
#![no_main]

#[path = "../src/http_check.rs"]
mod http_check;

use std::sync::LazyLock;

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
});
static APP: LazyLock<axum::Router> = LazyLock::new(|| eddy_query_server::app(http_check::state()));

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    RT.block_on(async { http_check::check_http(APP.clone(), data).await });
});
