//! `GET /v1/status`: the status record of every pipeline process ([`StatusResponse`]), from
//! where [`StatusSource`] says.

use crate::AppState;
use crate::error::AppError;
use crate::openapi::Unavailable;
use axum::Json;
use axum::extract::State;
use eddy_core::Metrics;
use eddy_core::api::{NoQuery, ProcessIdentity, ProcessStatus, StatusResponse, Store};
use eddy_core::config::RedisConfig;
use redis::aio::ConnectionManager;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// The least age of the digest a local answer's rates are measured from, ms.
pub const RATE_BASE_MS: i64 = 1_000;

/// Where `GET /v1/status` finds the pipeline's status records.
#[derive(Clone)]
pub enum StatusSource {
    /// The server's own metrics, digested on each request: the demo, whose pipeline runs in the
    /// server's process and records into the same [`Metrics`] ([`StatusSource::local`]).
    Local {
        /// Who answers.
        identity: ProcessIdentity,
        /// Recent digests (at least 100 ms apart): the newest one at least [`RATE_BASE_MS`]
        /// old is the base of rates and sink states.
        previous: Arc<Mutex<VecDeque<ProcessStatus>>>,
    },
    /// The records `eddy run` processes publish in Redis (`eddy_storage::status`).
    Redis {
        /// The speed layer's Redis.
        client: redis::Client,
        /// Its connection, made on the first request (a connection manager needs the
        /// server's runtime).
        manager: Arc<OnceCell<ConnectionManager>>,
        /// Time limit of connecting and of each request.
        timeout: Duration,
        /// Key prefix (`redis.prefix`).
        prefix: String,
    },
}

impl StatusSource {
    /// This process's own metrics, as `identity`.
    pub fn local(identity: ProcessIdentity) -> Self {
        Self::Local {
            identity,
            previous: Arc::default(),
        }
    }

    /// The records of `cfg`'s Redis; each request bounded by `timeout`. No I/O (and no
    /// runtime needed) until the first request.
    pub fn redis(cfg: &RedisConfig, timeout: Duration) -> Result<Self, eddy_storage::StorageError> {
        Ok(Self::Redis {
            client: eddy_storage::redis_client(cfg)?,
            manager: Arc::new(OnceCell::new()),
            timeout,
            prefix: cfg.prefix.clone(),
        })
    }

    /// The answer at `now_ms`.
    async fn read(&self, metrics: &Metrics, now_ms: i64) -> Result<StatusResponse, AppError> {
        match self {
            StatusSource::Local { identity, previous } => {
                let mut history = previous.lock().unwrap_or_else(|e| e.into_inner());
                let base = history
                    .iter()
                    .rev()
                    .find(|p| now_ms.saturating_sub(p.updated_at_ms) >= RATE_BASE_MS);
                let status = ProcessStatus::digest(
                    identity.clone(),
                    metrics,
                    base,
                    eddy_core::api::rss_bytes(),
                    now_ms,
                );
                if let Some(b) = base.map(|b| b.updated_at_ms) {
                    history.retain(|p| p.updated_at_ms >= b);
                }
                let newest = history.back().map_or(i64::MIN, |p| p.updated_at_ms);
                if now_ms.saturating_sub(newest) >= 100 {
                    history.push_back(status.clone());
                }
                Ok(StatusResponse::at(now_ms, Store::Memory, vec![status]))
            }
            StatusSource::Redis {
                client,
                manager,
                timeout,
                prefix,
            } => {
                let unavailable = |e: &dyn std::fmt::Display| {
                    AppError::Unavailable(format!("status records: {e}"))
                };
                let manager = manager
                    .get_or_try_init(|| async { eddy_storage::redis_manager(client, *timeout) })
                    .await
                    .map_err(|e| unavailable(&e))?;
                let mut con = manager.clone();
                let records = eddy_storage::status::read_statuses(&mut con, prefix)
                    .await
                    .map_err(|e| unavailable(&e))?;
                // As stored (not validated: a status answer never fails on it).
                let serving: Option<String> = redis::cmd("GET")
                    .arg(eddy_storage::keys::serving(prefix))
                    .query_async(&mut con)
                    .await
                    .map_err(|e| unavailable(&e))?;
                let mut answer = StatusResponse::at(now_ms, Store::Redis, records);
                answer.serving_version = serving.filter(|s| s != eddy_core::version::BASE);
                Ok(answer)
            }
        }
    }
}

/// The last status record of every pipeline process: consumer lag per partition, watermark,
/// checkpoints, sinks, dead letters per reason, memory; `stale` when a process stopped
/// publishing (no record for 5 s). No query parameter.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "operations",
    responses(
        (status = 200, description = "Every process's last record, by process index",
         body = StatusResponse),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn status(
    State(state): State<AppState>,
    crate::query::Params(NoQuery {}): crate::query::Params<NoQuery>,
) -> Result<Json<StatusResponse>, AppError> {
    Ok(Json(
        state
            .status
            .read(&state.metrics, eddy_core::now_ms())
            .await?,
    ))
}
