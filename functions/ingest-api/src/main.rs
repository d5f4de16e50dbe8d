//! ingest-api Lambda entry point: wiring only (see the library for everything else). Every
//! function's `main` is the same four steps; the local stack runs the same `start`.

use caudal_aws::clients::ClientFactory;
use caudal_core::config::Env;
use caudal_core::telemetry;
use lambda_http::request::LambdaRequest;
use lambda_http::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::process();
    telemetry::init_tracing(true, env.optional("RUST_LOG").as_deref());
    // A bad configuration fails the cold start loudly, naming the variable.
    let state = ingest_api::start(&env, &ClientFactory::lambda().await)?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<LambdaRequest>| {
        ingest_api::serve(&state, event)
    }))
    .await
}
