//! rules-loader Lambda entry point: wiring only (see the library for the handler).
use aws_config::BehaviorVersion;
use lambda_runtime::{LambdaEvent, service_fn};
use rules_loader::{Config, LoaderEvent, State, handler};
use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init_tracing(true, std::env::var("RUST_LOG").ok().as_deref());
    let config = Config::from_env(&Env::process())?;
    let aws = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let state = State::new(
        config,
        aws_sdk_s3::Client::new(&aws),
        aws_sdk_redshiftdata::Client::new(&aws),
    );
    lambda_runtime::run(service_fn(|ev: LambdaEvent<LoaderEvent>| {
        handler(&state, ev)
    }))
    .await
}
