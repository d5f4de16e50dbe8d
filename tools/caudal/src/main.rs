//! `caudal`: the operator CLI ([`caudal::cli`]).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(caudal::cli::run(std::env::args_os()).await)
}
