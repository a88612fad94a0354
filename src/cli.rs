//! The command line: `iort-cds [serve]` runs the service (the default), `iort-cds evaluate`
//! answers one hook request from a file or stdin through the same code path as HTTP.
//!
//! Every option can also come from an environment variable (`IORT_CDS_*`) or the TOML file
//! given with `--config`; precedence is flag > environment > file > built-in default. The
//! options are [`Overrides`] (`configuration.rs`): global, so they go before or after the
//! subcommand; the ones only `serve` reads are refused by `evaluate`.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::configuration::{Overrides, Settings};
use crate::http::ApiError;
use crate::pipeline::Engine;
use crate::startup::Application;
use crate::telemetry;

/// IORT coverage requirements: a CDS Hooks 2.0 / Da Vinci CRD service.
#[derive(Debug, Parser)]
#[command(name = "iort-cds", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (every setting; see README).
    #[arg(long, global = true, env = "IORT_CDS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The settings a flag or variable may give (global: before or after the subcommand).
    #[command(flatten)]
    overrides: Overrides,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the CDS service (the default command).
    Serve,
    /// Answer one hook request (JSON, from FILE or `-` for stdin) and print the CDS response.
    Evaluate(EvaluateArgs),
}

#[derive(Debug, Args, Clone)]
struct EvaluateArgs {
    /// The service id to call.
    #[arg(long, default_value = "iort-coverage")]
    service: String,
    /// The hook request JSON file, or `-` for stdin.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// Parse the command line and run.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    match cli.command {
        Some(Command::Evaluate(args)) => {
            if cli.overrides.serve.given() {
                eprintln!(
                    "iort-cds: options of `serve` (--listen, --public-base-url ...) do not apply to `evaluate`"
                );
                return ExitCode::from(2);
            }
            evaluate(config, cli.overrides, args)
        }
        Some(Command::Serve) | None => serve(config, cli.overrides),
    }
}

/// Build an async runtime, or say why not.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("iort-cds: cannot start the async runtime: {e}"))
        .ok()
}

fn serve(config: Option<&Path>, overrides: Overrides) -> ExitCode {
    let settings = match Settings::load(config, overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iort-cds: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format, &settings.log_level);
    telemetry::install_panic_hook();
    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let listen = settings.listen;
        let app = match Application::build(settings) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!("cannot start: {e}");
                eprintln!("iort-cds: cannot start: {e}");
                return ExitCode::from(2);
            }
        };
        tracing::info!(
            "iort-cds {} serving on http://{}:{} (discovery: /cds-services)",
            env!("CARGO_PKG_VERSION"),
            listen.ip(),
            app.port()
        );
        // One line on stdout (logs go to stderr), whatever the log format: with `--listen
        // 127.0.0.1:0` a script or test reads the port the system chose from it instead of
        // hunting for a free one (scripts/lib.sh, `start_service`).
        println!(
            "iort-cds listening on {}",
            listening_url(listen, app.port())
        );
        match app.run_until_stopped().await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("server error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `http://IP:PORT` of the bound address (IPv6 in brackets).
fn listening_url(listen: SocketAddr, port: u16) -> String {
    format!("http://{}", SocketAddr::new(listen.ip(), port))
}

fn evaluate(config: Option<&Path>, overrides: Overrides, args: EvaluateArgs) -> ExitCode {
    let settings = match Settings::load(config, overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iort-cds: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(settings.log_format, &settings.log_level);
    let body = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map(|_| buf)
    } else {
        std::fs::read(&args.file)
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            eprintln!("iort-cds: cannot read {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let engine = match Engine::load(&settings) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("iort-cds: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(engine.call(&args.service, &body)) {
        Ok(response) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&response).unwrap_or_else(|_| "{}".to_owned())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let e = ApiError::from(e);
            let status = actix_web::ResponseError::status_code(&e);
            eprintln!("iort-cds: the request was refused ({status})");
            println!(
                "{}",
                serde_json::to_string_pretty(&e.body()).unwrap_or_else(|_| "{}".to_owned())
            );
            ExitCode::FAILURE
        }
    }
}
