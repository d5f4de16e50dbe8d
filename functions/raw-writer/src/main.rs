//! raw-writer Lambda entry point: wiring only (see the library docs for what it does).

use caudal_aws::clients::{self, ClientOptions};
use caudal_core::config::Env;
use caudal_core::telemetry;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use raw_writer::event::RawWriterEvent;
use raw_writer::{Config, State, handler};

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
        clients::firehose(&sdk, &opts),
        clients::sqs(&sdk, &opts),
    );
    let state = &state;
    // Boxed: the handler future is deep, and boxing keeps the runtime's future type shallow.
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<RawWriterEvent>| {
        Box::pin(handler(state, ev))
    }))
    .await
}
