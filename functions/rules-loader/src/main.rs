//! rules-loader Lambda entry point: wiring only (see the library for everything else). Every
//! function's `main` is the same four steps; the local stack runs the same `start`.

use caudal_aws::clients::ClientFactory;
use caudal_core::config::Env;
use caudal_core::telemetry;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use rules_loader::{LoaderEvent, handler};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::process();
    telemetry::init_tracing(true, env.optional("RUST_LOG").as_deref());
    // A bad configuration fails the cold start loudly, naming the variable.
    let state = rules_loader::start(&env, &ClientFactory::lambda().await)?;
    lambda_runtime::run(service_fn(|ev: LambdaEvent<LoaderEvent>| {
        handler(&state, ev)
    }))
    .await
}
