use query_service::{Application, Settings};

/// mimalloc: far less time in the allocator than glibc's malloc under this
/// workload (see the commit that introduced it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = platform::settings::load()?;
    platform::telemetry::init(&settings.log);
    for name in platform::settings::unknown_env_vars::<Settings>() {
        tracing::warn!(%name, "environment variable is not a setting of this service");
    }
    let app = Application::build(settings, platform::shutdown::on_signal()).await?;
    app.run_until_stopped().await
}
