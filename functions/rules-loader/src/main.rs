//! rules-loader Lambda entry point: wiring only (see the library for the handler).

use caudal_aws::clients::{self, ClientOptions};
use caudal_core::config::Env;
use caudal_core::telemetry;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use rules_loader::{Config, LoaderEvent, State, handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::process();
    telemetry::init_tracing(true, env.optional("RUST_LOG").as_deref());
    // A bad configuration fails the cold start loudly, naming the variable.
    let config = Config::from_env(&env)?;
    let sdk = clients::load_sdk_config().await;
    let opts = ClientOptions::LAMBDA;
    let state = State::new(
        config,
        clients::s3(&sdk, &opts),
        clients::redshift_data(&sdk, &opts),
    )
    .with_sqs(clients::sqs(&sdk, &opts));
    lambda_runtime::run(service_fn(|ev: LambdaEvent<LoaderEvent>| {
        handler(&state, ev)
    }))
    .await
}
