//! `sluice-ml`: one ML worker process (training and prediction stages). Run as many replicas as
//! the load needs; any of them serves any model. `sluice-ml fit` is the child process each fit
//! runs in (see `sluice_ml::fit`), not for users.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(sluice_ml::fit::FIT_COMMAND) {
        return sluice_ml::fit::child_main(&args[1..]);
    }
    sluice_core::config::load_dotenv();
    sluice_core::shutdown::init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sluice-ml: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(async { sluice_ml::run(sluice_core::shutdown::on_signal()).await }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
