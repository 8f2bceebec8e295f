//! `cargo run -p app`: load the settings, build the application, serve.

use std::process::ExitCode;

use app::settings::Settings;
use app::startup::{Application, StartupError};

#[tokio::main]
async fn main() -> ExitCode {
    // Milliseconds: a failover is over within a second or two.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line that says what is wrong and how to fix it; no backtrace.
            eprintln!("app: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), StartupError> {
    let settings = Settings::load()?;
    let application = Application::build(settings).await?;
    application.run_until_stopped().await
}
