//! `GET /projection/status`: where the serving read models stand, per
//! partition of the events topic, how far behind they are, and whether a
//! projector instance applies each partition.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use readmodel::tables::{dead_letters, offsets, streams};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(projection_status))
}

/// One partition's position and lag.
#[derive(Debug, Serialize)]
pub struct PartitionStatus {
    partition: i32,
    /// The next offset the projection will apply.
    position: i64,
    /// The next offset to be written to the partition (`null` when the broker is unreachable).
    end: Option<i64>,
    /// Records not yet applied.
    lag: Option<i64>,
    /// Age of the last applied record while behind; 0 when caught up.
    lag_seconds: Option<f64>,
    last_applied_at: Option<DateTime<Utc>>,
    /// PostgreSQL backend pid of the session of the projector instance that
    /// applies this partition (see `pg_stat_activity`); `null`: nobody does.
    owner: Option<i32>,
}

/// Where the serving read models stand.
#[derive(Debug, Serialize)]
pub struct Status {
    generation: i64,
    topic: String,
    partitions: Vec<PartitionStatus>,
    lag: Option<i64>,
    lag_seconds: Option<f64>,
    /// Streams waiting behind a parked record (see the projector's dead letters).
    halted_streams: i64,
    parked_records: i64,
    /// `up`, or why the broker's end offsets are unknown.
    kafka: String,
    /// Running projector instances.
    projector_instances: usize,
    /// Partitions no projector instance applies: their read models are frozen.
    unowned_partitions: Vec<i32>,
}

/// Position of the serving read models per partition, lag in records and
/// seconds, which projector instance applies each partition (and which
/// partitions nobody applies), halted streams and parked records.
#[utoipa::path(
    get, path = "/projection/status", tag = "status", security(("bearer" = ["reader"])),
    responses(
        (status = 200, description = "The projection's status"),
        (status = 503, description = "PostgreSQL unavailable"),
    )
)]
async fn projection_status(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    let generation = state.store.generation().map_err(|e| ApiError::Unavailable(e.into()))?;
    let topic = state.end_offsets.topic.clone();
    let t = topic.clone();
    let (offsets, halted, parked, ownership) = state
        .store
        .query("projection_status", |pool, s| async move {
            let offsets = offsets::positions(&pool, &s, &t).await?;
            let halted = streams::halted_count(&pool, &s).await?;
            let parked = dead_letters::parked_count(&pool, &s).await?;
            let ownership = platform::ownership::view(&mut *pool.acquire().await?, &t).await?;
            Ok((offsets, halted, parked, ownership))
        })
        .await
        .map_err(|e| ApiError::Unavailable(e.into()))?;
    let ends = state.end_offsets.clone().fetch().await;
    let positions: BTreeMap<i32, (i64, Option<DateTime<Utc>>)> =
        offsets.into_iter().map(|(p, next, last)| (p, (next, last))).collect();
    let mut partitions: Vec<i32> = positions.keys().copied().collect();
    if let Ok(ends) = &ends {
        partitions.extend(ends.keys());
    }
    partitions.sort_unstable();
    partitions.dedup();
    let now = Utc::now();
    let statuses: Vec<PartitionStatus> = partitions
        .into_iter()
        .map(|p| {
            let (position, last) = positions.get(&p).copied().unwrap_or((0, None));
            let end = ends.as_ref().ok().and_then(|e| e.get(&p).copied());
            let lag = end.map(|e| (e - position).max(0));
            let lag_seconds = lag.map(|l| match (l, last) {
                (0, _) | (_, None) => 0.0,
                (_, Some(t)) => (now - t).num_milliseconds().max(0) as f64 / 1000.0,
            });
            let owner = ownership.owners.get(&p).copied();
            PartitionStatus { partition: p, position, end, lag, lag_seconds, last_applied_at: last, owner }
        })
        .collect();
    let unowned_partitions = statuses.iter().filter(|s| s.owner.is_none()).map(|s| s.partition).collect();
    let lag = statuses.iter().map(|s| s.lag).sum::<Option<i64>>();
    let lag_seconds = statuses.iter().map(|s| s.lag_seconds).try_fold(0.0_f64, |m, s| s.map(|s| m.max(s)));
    let status = Status {
        generation: generation.id,
        topic,
        partitions: statuses,
        lag,
        lag_seconds,
        halted_streams: halted,
        parked_records: parked,
        kafka: ends.err().map_or_else(|| "up".to_owned(), |e| format!("unreachable: {e}")),
        projector_instances: ownership.members.len(),
        unowned_partitions,
    };
    Ok(Json(status))
}
