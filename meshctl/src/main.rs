//! The `meshctl` binary: parses the command line and runs the command.

use clap::Parser;

fn main() {
    let cli = meshctl::cli::Cli::parse();
    common::logging::init(if cli.is_daemon() { "info" } else { "warn" });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(meshctl::commands::run(cli));
    std::process::exit(code);
}
