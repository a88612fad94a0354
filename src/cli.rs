//! The command line: `iort-cds [serve]` runs the service (the default), `iort-cds evaluate`
//! answers one hook request from a file or stdin through the same code path as HTTP, and
//! `iort-cds assertions show|list` reads the audit store (see [`crate::store`]) with the same
//! configuration as `serve`.
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
    /// Read the determinations the service recorded (the audit store).
    #[command(subcommand)]
    Assertions(AssertionsCommand),
}

#[derive(Debug, Subcommand)]
enum AssertionsCommand {
    /// Print the determination behind a coverage-assertion-id, as JSON.
    Show {
        /// The coverage-assertion-id the service handed to the EHR.
        #[arg(value_name = "ID")]
        id: String,
    },
    /// List recorded determinations, newest first.
    List {
        /// Only this patient's (the hook's context.patientId).
        #[arg(long, value_name = "ID")]
        patient: Option<String>,
        /// Only from this date (YYYY-MM-DD, UTC) or time (RFC 3339, UTC: ...Z) on.
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100, value_name = "N")]
        limit: u32,
        /// JSON (an array) instead of a table.
        #[arg(long)]
        json: bool,
    },
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
        Some(Command::Assertions(command)) => {
            if cli.overrides.serve.given() {
                eprintln!("iort-cds: options of `serve` do not apply to `assertions`");
                return ExitCode::from(2);
            }
            assertions(config, cli.overrides, command)
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

fn assertions(config: Option<&Path>, overrides: Overrides, command: AssertionsCommand) -> ExitCode {
    let settings = match Settings::load(config, overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("iort-cds: {e}");
            return ExitCode::from(2);
        }
    };
    if let AssertionsCommand::List {
        since: Some(since), ..
    } = &command
        && !valid_since(since)
    {
        eprintln!(
            "iort-cds: --since must be a date (YYYY-MM-DD) or a UTC time (RFC 3339, ending in Z)"
        );
        return ExitCode::from(2);
    }
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let reader = match crate::store::Reader::open(&settings.store).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("iort-cds: cannot open the store: {e}");
                return ExitCode::FAILURE;
            }
        };
        match command {
            AssertionsCommand::Show { id } => match reader.show(&id).await {
                Ok(Some(d)) => {
                    println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    eprintln!("iort-cds: no determination with that coverage-assertion-id");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("iort-cds: cannot read the store: {e}");
                    ExitCode::FAILURE
                }
            },
            AssertionsCommand::List {
                patient,
                since,
                limit,
                json,
            } => match reader
                .list(patient.as_deref(), since.as_deref(), i64::from(limit))
                .await
            {
                Ok(rows) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&rows).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                Ok(rows) => {
                    print!("{}", table(&rows));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("iort-cds: cannot read the store: {e}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

/// `--since`: a date, or a UTC time as stored (so text order is time order).
fn valid_since(since: &str) -> bool {
    chrono::NaiveDate::parse_from_str(since, "%Y-%m-%d").is_ok()
        || (since.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(since).is_ok())
}

/// Determinations as a plain-text table, one line each.
fn table(rows: &[serde_json::Value]) -> String {
    let columns = [
        ("DECIDED AT", "/decidedAt"),
        ("ASSERTION ID", "/assertionId"),
        ("PATIENT", "/patientId"),
        ("ORDER", "/order"),
        ("COVERED", "/covered"),
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|(_, p)| {
                    r.pointer(p)
                        .and_then(|v| v.as_str())
                        .unwrap_or("-")
                        .to_owned()
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|c| c[i].len())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        let mut l = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    let mut out = line(columns.iter().map(|(h, _)| *h).collect());
    for c in &cells {
        out.push_str(&line(c.iter().map(String::as_str).collect()));
    }
    out
}
