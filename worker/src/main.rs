use worker::{Application, Settings};

/// mimalloc, as in every binary of the workspace.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The worker of the stock back end: runs the background jobs the
/// command-service queues (docs/jobs.md). Settings come from `APP_*`
/// environment variables (docs/configuration.md). Run any number of them.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = platform::settings::start(|s: &Settings| &s.log, false)?;
    let app = Application::build(settings, platform::shutdown::on_signal()).await?;
    app.run_until_stopped().await
}
