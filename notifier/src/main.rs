use notifier::{Application, Settings};

/// mimalloc, as in every binary of the workspace.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The notifier of the stock back end: delivers stock events and business
/// alerts to webhook subscribers (docs/webhooks.md). Settings come from
/// `APP_*` environment variables (docs/configuration.md). Run one or more.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = platform::settings::start(|s: &Settings| &s.log, false)?;
    let app = Application::build(settings, platform::shutdown::on_signal()).await?;
    app.run_until_stopped().await
}
