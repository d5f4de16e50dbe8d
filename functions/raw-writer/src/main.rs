//! raw-writer Lambda entry point: wiring only (see the library for everything else). Every
//! function's `main` is the same four steps; the local stack runs the same `start`.

use caudal_aws::clients::ClientFactory;
use caudal_core::config::Env;
use caudal_core::telemetry;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use raw_writer::event::RawWriterEvent;
use raw_writer::handler;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::process();
    telemetry::init_tracing(true, env.optional("RUST_LOG").as_deref());
    // A bad configuration fails the cold start loudly, naming the variable.
    let state = raw_writer::start(&env, &ClientFactory::lambda().await)?;
    let state = &state;
    // Boxed: the handler future is deep, and boxing keeps the runtime's future type shallow.
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<RawWriterEvent>| {
        Box::pin(handler(state, ev))
    }))
    .await
}
