//! Path and query parameters of every route: axum extractors over the serde types of
//! [`eddy_core::api`], with every rejection and every validation failure turned into a
//! [`AppError::BadRequest`] (the JSON 400). Validation lives here and nowhere else.

use crate::error::AppError;
use crate::{AppState, ServerQueryLimits};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use eddy_core::EventType;
use eddy_core::api::{CountsQuery, Granularity, ListQuery};
use serde::de::DeserializeOwned;
use std::marker::PhantomData;

/// Query parameters deserialized into `T` (unknown, repeated, missing or malformed ones are a
/// 400 with the parameter named).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params<T>(pub T);

/// The error `Query` wraps when the parameters do not deserialize.
type DeError = serde_path_to_error::Error<serde_urlencoded::de::Error>;

/// Names the parameter at fault: `invalid query parameter `from`: invalid digit found in
/// string`, or `invalid query: unknown field `limit`, expected one of ...` (also `missing
/// field`, `duplicate field`).
fn query_error(e: QueryRejection) -> AppError {
    use std::error::Error;
    let de = match &e {
        QueryRejection::FailedToDeserializeQueryString(r) => r
            .source()
            .and_then(|axum_error| axum_error.source())
            .and_then(|inner| inner.downcast_ref::<DeError>()),
        _ => None,
    };
    AppError::BadRequest(match de {
        Some(de) if de.path().iter().next().is_some() => {
            format!("invalid query parameter `{}`: {}", de.path(), de.inner())
        }
        Some(de) => format!("invalid query: {}", de.inner()),
        None => format!("invalid query: {}", e.body_text()),
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Query(t) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(query_error)?;
        Ok(Params(t))
    }
}

/// What an [`Id`] in the path identifies (named in error messages).
pub(crate) trait IdKind {
    /// E.g. `campaign id`.
    const WHAT: &'static str;
}

/// `{id}` of `/v1/campaigns/{id}`.
pub(crate) enum CampaignKind {}
impl IdKind for CampaignKind {
    const WHAT: &'static str = "campaign id";
}

/// `{id}` of `/v1/users/{id}/...`.
pub(crate) enum UserKind {}
impl IdKind for UserKind {
    const WHAT: &'static str = "user id";
}

/// The u64 `{id}` of the path.
pub(crate) struct Id<K>(pub u64, pub PhantomData<K>);

/// The campaign of `/v1/campaigns/{id}`.
pub(crate) type CampaignId = Id<CampaignKind>;
/// The user of `/v1/users/{id}/...`.
pub(crate) type UserId = Id<UserKind>;

fn path_error(what: &str, e: PathRejection) -> AppError {
    use axum::extract::path::ErrorKind;
    match e {
        PathRejection::FailedToDeserializePathParams(e) => match e.into_kind() {
            ErrorKind::ParseError { value, .. }
            | ErrorKind::ParseErrorAtKey { value, .. }
            | ErrorKind::ParseErrorAtIndex { value, .. } => {
                AppError::BadRequest(format!("{what} must be an unsigned integer, got {value:?}"))
            }
            kind => AppError::BadRequest(format!("invalid {what}: {kind}")),
        },
        e => AppError::BadRequest(format!("invalid {what}: {}", e.body_text())),
    }
}

impl<S: Send + Sync, K: IdKind> FromRequestParts<S> for Id<K> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(id) = Path::<u64>::from_request_parts(parts, state)
            .await
            .map_err(|e| path_error(K::WHAT, e))?;
        Ok(Id(id, PhantomData))
    }
}

/// Validated parameters of `GET /v1/counts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountsParams {
    /// Only this event type, or all types.
    pub event_type: Option<EventType>,
    /// Per-campaign counts of this campaign, or per-type stats when `None`.
    pub campaign_id: Option<u64>,
    /// Inclusive lower bound of window starts, epoch ms.
    pub from_ms: i64,
    /// Exclusive upper bound of window starts, epoch ms.
    pub to_ms: i64,
    /// Answer resolution.
    pub granularity: Granularity,
}

impl CountsParams {
    /// Checks `from < to`, `to - from <= max_range_ms` and that the answer holds at most
    /// `max_points` points per series, and fills in the defaults.
    pub fn validate(q: CountsQuery, limits: &ServerQueryLimits) -> Result<Self, AppError> {
        let CountsQuery {
            from,
            to,
            event_type,
            campaign_id,
            granularity,
        } = q;
        if from >= to {
            return Err(AppError::BadRequest(format!(
                "`from` ({from}) must be less than `to` ({to})"
            )));
        }
        match to.checked_sub(from) {
            Some(range) if range <= limits.max_range_ms => {}
            _ => {
                return Err(AppError::BadRequest(format!(
                    "range `to - from` exceeds the maximum of {} ms",
                    limits.max_range_ms
                )));
            }
        }
        let granularity = granularity.unwrap_or_default();
        let step = match granularity {
            Granularity::Minute => limits.window_ms,
            Granularity::Hour => HOUR_MS,
        };
        let points = points_in(from, to, step);
        if points > limits.max_points as i128 {
            return Err(AppError::BadRequest(format!(
                "the query would return {points} points per series, above the maximum of {} \
                 (server.max_points): narrow `from`..`to`{}",
                limits.max_points,
                match granularity {
                    Granularity::Minute => " or ask for granularity=hour",
                    Granularity::Hour => "",
                }
            )));
        }
        Ok(Self {
            event_type,
            campaign_id,
            from_ms: from,
            to_ms: to,
            granularity,
        })
    }
}

impl FromRequestParts<AppState> for CountsParams {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let Params(q) = Params::<CountsQuery>::from_request_parts(parts, state).await?;
        Self::validate(q, &state.config)
    }
}

const HOUR_MS: i64 = 3_600_000;

/// How many multiples of `step` (window or hour starts) lie in `[from, to)`.
fn points_in(from: i64, to: i64, step: i64) -> i128 {
    let step = i128::from(step.max(1));
    let first = -(-i128::from(from)).div_euclid(step);
    let last = (i128::from(to) - 1).div_euclid(step);
    (last - first + 1).max(0)
}

/// The list length `k`: `default.min(max)` when absent, else it must be in `1..=max`.
pub(crate) fn list_len(q: ListQuery, default: usize, max: usize) -> Result<usize, AppError> {
    match q.k {
        None => Ok(default.min(max)),
        Some(k) if (1..=max).contains(&k) => Ok(k),
        Some(k) => Err(AppError::BadRequest(format!(
            "`k` must be an integer from 1 to {max}, got {k}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ServerQueryLimits {
        ServerQueryLimits {
            max_range_ms: 1000,
            window_ms: 10,
            ..ServerQueryLimits::default()
        }
    }

    #[test]
    fn counts_accepts_valid_and_defaults() {
        let p = CountsParams::validate(CountsQuery::new(0, 1000), &limits()).unwrap();
        assert_eq!(
            p,
            CountsParams {
                event_type: None,
                campaign_id: None,
                from_ms: 0,
                to_ms: 1000,
                granularity: Granularity::Minute
            }
        );
        let p = CountsParams::validate(
            CountsQuery {
                granularity: Some(Granularity::Hour),
                campaign_id: Some(u64::MAX),
                event_type: Some(EventType::Conversion),
                ..CountsQuery::new(-5, -1)
            },
            &limits(),
        )
        .unwrap();
        assert_eq!(p.campaign_id, Some(u64::MAX));
        assert_eq!(p.event_type, Some(EventType::Conversion));
        assert_eq!(p.granularity, Granularity::Hour);
        assert_eq!((p.from_ms, p.to_ms), (-5, -1));
    }

    #[test]
    fn counts_bounds_points_per_series() {
        let limits = ServerQueryLimits {
            max_points: 10,
            ..limits()
        };
        assert_eq!(points_in(0, 100, 10), 10);
        assert_eq!(points_in(1, 100, 10), 9);
        assert_eq!(points_in(-15, -5, 10), 1);
        assert_eq!(points_in(0, 1, 10), 1);
        assert!(CountsParams::validate(CountsQuery::new(0, 100), &limits).is_ok());
        assert!(CountsParams::validate(CountsQuery::new(-5, 95), &limits).is_ok());
        let err = CountsParams::validate(CountsQuery::new(-15, 100), &limits).unwrap_err();
        assert!(err.to_string().contains("server.max_points"), "{err}");
        // Hours count as points of hourly answers.
        let hourly = CountsQuery {
            granularity: Some(Granularity::Hour),
            ..CountsQuery::new(0, 10 * HOUR_MS)
        };
        let wide = ServerQueryLimits {
            max_range_ms: i64::MAX,
            ..limits
        };
        assert!(CountsParams::validate(hourly, &wide).is_ok());
        let hourly = CountsQuery {
            granularity: Some(Granularity::Hour),
            ..CountsQuery::new(0, 10 * HOUR_MS + 1)
        };
        assert!(CountsParams::validate(hourly, &wide).is_err());
    }

    #[test]
    fn counts_rejects_bad_ranges() {
        for (from, to) in [(0, 1001), (10, 10), (11, 10), (i64::MIN, i64::MAX)] {
            assert!(
                matches!(
                    CountsParams::validate(CountsQuery::new(from, to), &limits()),
                    Err(AppError::BadRequest(_))
                ),
                "accepted {from}..{to}"
            );
        }
    }

    /// `/v1/counts?{qs}` through the extractor and the validation.
    async fn counts(qs: &str) -> Result<CountsParams, AppError> {
        let (mut parts, ()) = axum::http::Request::builder()
            .uri(format!("/v1/counts?{qs}"))
            .body(())
            .unwrap()
            .into_parts();
        let Params(q) = Params::<CountsQuery>::from_request_parts(&mut parts, &()).await?;
        CountsParams::validate(q, &limits())
    }

    #[tokio::test]
    async fn counts_query_strings() {
        let p = counts(
            "granularity=hour&campaign_id=18446744073709551615&event_type=conversion&to=-1&from=-5",
        )
        .await
        .unwrap();
        assert_eq!(p.campaign_id, Some(u64::MAX));
        assert_eq!(p.event_type, Some(EventType::Conversion));
        assert_eq!(p.granularity, Granularity::Hour);
        assert_eq!((p.from_ms, p.to_ms), (-5, -1));
        for qs in [
            "to=10",
            "from=0",
            "from=0&to=1001",
            "from=10&to=10",
            "from=1.5&to=10",
            "from=0&to=1e3",
            "from=0&to=",
            "from=-9223372036854775808&to=9223372036854775807",
            "from=0&to=99999999999999999999",
            "from=0&to=10&event_type=like",
            "from=0&to=10&event_type=",
            "from=0&to=10&campaign_id=-1",
            "from=0&to=10&campaign_id=x",
            "from=0&to=10&granularity=day",
            "from=0&to=10&limit=5",
            "from=0&to=10&from=1",
        ] {
            assert!(
                matches!(counts(qs).await, Err(AppError::BadRequest(_))),
                "accepted {qs}"
            );
        }
    }

    /// `k` of a list route through the extractor.
    async fn k(qs: &str) -> Result<usize, AppError> {
        let (mut parts, ()) = axum::http::Request::builder()
            .uri(format!("/v1/campaigns/top?{qs}"))
            .body(())
            .unwrap()
            .into_parts();
        let Params(q) = Params::<ListQuery>::from_request_parts(&mut parts, &()).await?;
        list_len(q, 10, 100)
    }

    #[tokio::test]
    async fn k_query_strings() {
        assert_eq!(k("").await, Ok(10));
        assert_eq!(k("k=100").await, Ok(100));
        for qs in [
            "k=0",
            "k=101",
            "k=-1",
            "k=1.5",
            "k=",
            "k=99999999999999999999999",
            "k=2&k=3",
            "n=2",
        ] {
            assert!(
                matches!(k(qs).await, Err(AppError::BadRequest(_))),
                "accepted {qs}"
            );
        }
    }

    #[test]
    fn k_defaults_and_bounds() {
        let k = |k| ListQuery { k };
        assert_eq!(list_len(k(None), 10, 100), Ok(10));
        assert_eq!(list_len(k(None), 10, 5), Ok(5));
        assert_eq!(list_len(k(Some(1)), 10, 100), Ok(1));
        assert_eq!(list_len(k(Some(100)), 10, 100), Ok(100));
        for bad in [0, 101, usize::MAX] {
            assert!(
                matches!(
                    list_len(k(Some(bad)), 10, 100),
                    Err(AppError::BadRequest(_))
                ),
                "accepted {bad}"
            );
        }
    }
}
