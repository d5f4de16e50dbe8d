//! The floor of the start-up benchmark (`testkit/benches/startup.rs`): the smallest
//! `lambda_runtime` function — the same `#[tokio::main]` and runtime as caudal's functions, no
//! configuration, no clients, an echo handler.

use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(
        |ev: LambdaEvent<serde_json::Value>| async move { Ok::<_, Error>(ev.payload) },
    ))
    .await
}
