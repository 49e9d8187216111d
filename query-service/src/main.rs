use query_service::{Application, Settings};

/// mimalloc: far less time in the allocator than glibc's malloc under this
/// workload (see the commit that introduced it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings: Settings = platform::settings::start(|s: &Settings| &s.log, false)?;
    let app = Application::build(settings, platform::shutdown::on_signal()).await?;
    app.run_until_stopped().await
}
