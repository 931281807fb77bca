//! The `zkcoord` binary: parse the command line; for `serve`, resolve the config, set up
//! telemetry and serve until SIGTERM or SIGINT; for the client subcommands, hand over to
//! [`zkcoord::ctl`].

use std::process::ExitCode;

use clap::Parser;
use zkcoord::{
    cli::{Cli, Command},
    config::{Config, EX_USAGE},
    ctl, server, telemetry,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { ExitCode::from(EX_USAGE as u8) } else { ExitCode::SUCCESS };
        }
    };
    match cli.command {
        Command::Serve(args) => {
            let (file, flags) = args.into_settings();
            let config = match Config::resolve(flags, file, |name| std::env::var(name).ok()) {
                Ok(config) => config,
                Err(err) => {
                    eprintln!("zkcoord: {err}");
                    return ExitCode::from(EX_USAGE as u8);
                }
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(err) => {
                    eprintln!("zkcoord: cannot start the async runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(serve(config))
        }
        Command::Leader(args) => ctl::run(ctl::leader::run(args)),
        Command::Candidates(args) => ctl::run(ctl::candidates::run(args)),
        Command::Lease(args) => ctl::run(ctl::lease::run(args)),
        Command::Lock(args) => ctl::run(ctl::lock::run(args)),
        Command::Shards(args) => ctl::run(ctl::shards::run(args)),
        Command::Health(args) => ctl::run(ctl::health::run(args)),
        Command::Campaign(args) => ctl::run(ctl::campaign::run(args)),
        Command::RunChild(args) => ctl::child::run_child(args),
    }
}

async fn serve(config: Config) -> ExitCode {
    let _telemetry = match telemetry::init(&config.log_level, config.log_format) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("zkcoord: cannot set up telemetry: {err}");
            return ExitCode::from(EX_USAGE as u8);
        }
    };
    let listen = config.listen;
    let mut instance = match server::start(config).await {
        Ok(instance) => instance,
        Err(err) => {
            eprintln!("zkcoord: cannot listen on {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };
    // A stable line on stdout that scripts and tests wait for.
    println!("zkcoord listening on {}", instance.addr());
    tokio::select! {
        signal = shutdown_signal() => {
            tracing::info!(signal, "signal received");
            instance.shutdown().await;
            ExitCode::SUCCESS
        }
        result = instance.wait_failed() => {
            tracing::error!(?result, "grpc server stopped");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT, naming it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
