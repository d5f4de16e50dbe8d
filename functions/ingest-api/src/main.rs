//! Lambda entry point of ingest-api: wiring only (see the library for everything else).

use caudal_aws::clients::{self, ClientOptions};
use caudal_core::config::Env;
use caudal_core::telemetry;
use ingest_api::{Config, State, handler};
use lambda_http::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::process();
    telemetry::init_tracing(true, env.optional("RUST_LOG").as_deref());
    // A bad configuration fails the cold start loudly, naming the variable.
    let config = Config::from_env(&env)?;
    let sdk = clients::load_sdk_config().await;
    let state = State::new(config, clients::kinesis(&sdk, &ClientOptions::LAMBDA))?;
    lambda_http::run(service_fn(|req| handler(&state, req))).await
}
