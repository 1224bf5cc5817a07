//! Every input of the `http_params` fuzz corpus (`fuzz/corpus/http_params/`, minimized with
//! `cargo fuzz cmin`) through the real router over a `MemoryBackend`, with the fuzz target's
//! own checks, on stable and without libFuzzer: no 5xx, every answer a JSON body of the
//! documented type. See docs/fuzzing.md.

#[path = "../../fuzz/src/http_check.rs"]
mod http_check;

#[path = "../../fuzz/src/corpus.rs"]
mod corpus;

fn corpus() -> Vec<(std::path::PathBuf, Vec<u8>)> {
    corpus::corpus(env!("CARGO_MANIFEST_DIR"), "http_params")
}

#[tokio::test]
async fn every_corpus_input_passes_the_router_checks() {
    let corpus = corpus();
    assert!(corpus.len() >= 10, "the corpus is missing");
    let app = eddy_query_server::app(http_check::state());
    let mut statuses = std::collections::BTreeSet::new();
    for (path, bytes) in corpus {
        let app = app.clone();
        // In a task of its own, so a failed check names the corpus file.
        match tokio::spawn(async move { http_check::check_http(app, &bytes).await }).await {
            Ok(status) => statuses.extend(status),
            Err(e) => panic!(
                "corpus input {} fails the router checks: {e}",
                path.display()
            ),
        }
    }
    // The corpus reaches answers and rejections alike.
    for status in [200, 400, 404, 405] {
        assert!(statuses.contains(&status), "no {status} in {statuses:?}");
    }
}
