//! raw-writer Lambda entry point: wiring only (see the library docs for what it does).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::config::Env;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = Env::process();
    shared::telemetry::init_tracing(true, env.optional("RUST_LOG").as_deref());
    let config = raw_writer::Config::from_env(&env)?;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let state = raw_writer::State::new(
        config,
        aws_sdk_s3::Client::new(&sdk),
        aws_sdk_firehose::Client::new(&sdk),
    );
    let state = &state;
    // Boxed: the handler future is deep, and boxing keeps the runtime's future type shallow.
    lambda_runtime::run(service_fn(
        move |ev: LambdaEvent<raw_writer::input::KinesisBatchEvent>| {
            Box::pin(raw_writer::handler(state, ev))
        },
    ))
    .await
}
