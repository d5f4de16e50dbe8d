//! Lambda entry point of ingest-api: wiring only (see the library for everything else).

use aws_config::BehaviorVersion;
use ingest_api::{Config, State, handler, kinesis_client};
use lambda_http::{Error, service_fn};
use shared::config::Env;
use shared::telemetry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::process();
    telemetry::init_tracing(true, env.optional("RUST_LOG").as_deref());
    // A bad configuration fails the cold start loudly, naming the variable.
    let config = Config::from_env(&env)?;
    let sdk = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let state = State::new(config, kinesis_client(&sdk))?;
    lambda_http::run(service_fn(|req| handler(&state, req))).await
}
