//! Building and running the command-service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use platform::auth::{Access, Gate};
use platform::health;
use platform::shutdown::CancellationToken;
use tokio::net::TcpListener;

use crate::execute::{Executor, GroupCommit};
use crate::idempotency::middleware::Idempotency;
use crate::relay::{Relay, Wake};
use crate::routes;
use crate::state::AppState;
use crate::settings::Settings;

/// The OpenAPI document; the paths come from the handlers' annotations, the
/// same ones that register the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "erp-stock command-service",
        description = "The write API of the stock back end. Every command may carry an `Idempotency-Key` header \
                       (a retry with the same key and body returns the original response and appends nothing) \
                       and `X-Correlation-Id`. Every operation needs an `Authorization: Bearer` credential with \
                       the role it lists; the events record the credential's principal as their actor \
                       (`X-Actor` is ignored). Errors are RFC 9457 problem+json."
    ),
    components(schemas(
        crate::execute::Accepted,
        platform::problem::Problem,
        crate::jobs::JobKind,
        crate::jobs::params::ImportFormat,
        platform::jobs::Status,
        crate::webhooks::DeliveryState
    )),
    tags(
        (name = "articles", description = "Articles (Artikel)"),
        (name = "charges", description = "Charges (lots) of an article"),
        (name = "stock", description = "Stock movements"),
        (name = "reservations", description = "Reservations of part of a charge"),
        (name = "jobs", description = "Background jobs: bulk imports, reports (docs/jobs.md)"),
        (name = "webhooks", description = "Webhook subscriptions and their delivery log (docs/webhooks.md)"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

/// The API routes, without serving, and the gate built from their
/// document; tests call this directly.
pub fn router(state: AppState, idempotency: Idempotency, access: Access) -> (Router, Gate) {
    let pool = state.pool.clone();
    let metrics_pool = state.pool.clone();
    let readiness = health::readiness(move || {
        let pool = pool.clone();
        async move {
            let db = if platform::db::ping(&pool).await { Ok(()) } else { Err("unreachable".into()) };
            vec![("postgres", db)]
        }
    });
    let (commands, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::articles::router())
        .merge(routes::charges::router())
        .merge(routes::stock::router())
        .merge(routes::reservations::router())
        .split_for_parts();
    // Jobs keep their own idempotency keys (in `jobs`) and stream their
    // uploads: outside the commands' idempotency layer and its body limit.
    let (jobs, jobs_doc) = OpenApiRouter::new().merge(crate::jobs::router()).merge(crate::webhooks::router()).split_for_parts();
    let mut openapi = openapi;
    openapi.merge(jobs_doc);
    crate::webhooks::document(&mut openapi);
    let gate = access.gate(&mut openapi);
    let router = commands
        .route_layer(axum::middleware::from_fn_with_state(idempotency, crate::idempotency::middleware::middleware))
        .merge(jobs)
        .with_state(state)
        .route("/openapi.json", get(move || async move { Json(openapi) }))
        .merge(platform::metrics::router(move || platform::metrics::observe_pool(&metrics_pool)))
        .merge(health::router(readiness));
    (router, gate)
}

/// A bound, not yet running command-service.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    relay: Option<Relay>,
    shutdown: CancellationToken,
}

impl Application {
    /// Connects, migrates and binds; the relay starts with [`Self::run_until_stopped`].
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let pool = platform::db::pool(&settings.database)?;
        platform::db::migrate(&pool, &settings.database).await?;
        let group = GroupCommit {
            lanes: settings.group_commit.lanes,
            max_batch: settings.group_commit.max_batch,
        };
        let connect = settings.database.connect_options()?;
        let wake = Arc::new(Wake::default());
        let executor = Executor::new(pool.clone(), connect.clone(), settings.domain.policy()?, group, wake.clone());
        let state = AppState {
            executor: Arc::new(executor),
            pool: pool.clone(),
            jobs: Arc::new(settings.jobs.clone()),
            webhooks: Arc::new(settings.webhooks.clone()),
        };
        let idempotency = Idempotency {
            pool: pool.clone(),
            ttl: Duration::from_secs(settings.idempotency_ttl_secs),
            body_limit: settings.http.body_limit_bytes,
        };
        let access = Access::start(pool.clone(), &settings.auth, shutdown.clone())?;
        let (router, gate) = router(state, idempotency, access);
        let router = platform::http::with_common_layers(router, &settings.http, gate)?;
        let (listener, addr) = settings.http.bind().await?;
        if settings.relay.enabled {
            // The broker may be down: commands are accepted all the same, and
            // the relay checks again before it publishes.
            match tokio::time::timeout(Duration::from_secs(5), platform::kafka::retention_refusal(&settings.kafka)).await {
                Ok(Ok(Some(refusal))) => anyhow::bail!(refusal),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot check the events topic's retention now; the relay will"),
                Err(_) => tracing::warn!("the broker did not answer within 5 s; the relay will check the events topic's retention"),
            }
        }
        let relay = settings.relay.enabled.then(|| {
            Relay::new(pool, connect, settings.kafka, settings.relay, wake)
        });
        tracing::info!(%addr, "command-service listening");
        Ok(Self { listener, addr, router, relay, shutdown })
    }

    /// The address actually bound (port 0 becomes a real port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves and relays until the shutdown token is cancelled.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let relay = self.relay.map(|relay| tokio::spawn(relay.run(self.shutdown.clone())));
        platform::http::serve(self.listener, self.router, self.shutdown.clone()).await?;
        if let Some(relay) = relay {
            relay.await?;
        }
        Ok(())
    }
}
