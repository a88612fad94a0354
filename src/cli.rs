//! The command line: `iort-cds [serve]` runs the service (the default), `iort-cds evaluate`
//! answers one hook request from a file or stdin through the same code path as HTTP, and
//! `iort-cds assertions show|list` reads the audit store (see [`crate::store`]) with the same
//! configuration as `serve`.
//!
//! Every option can also come from an environment variable (`IORT_CDS_*`) or the TOML file
//! given with `--config`; precedence is flag > environment > file > built-in default.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::configuration::{LogFormat, Overrides, Settings};
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
    /// Options every command reads (global: before or after the subcommand).
    #[command(flatten)]
    common: CommonArgs,
    /// Options of `serve`, the default command (also accepted before `serve`).
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the CDS service (the default command).
    Serve(ServeArgs),
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

/// Options shared by every command, accepted before or after the subcommand's name
/// (`iort-cds --config F serve` and `iort-cds serve --config F` are the same).
#[derive(Debug, Args, Clone)]
struct CommonArgs {
    /// TOML configuration file (every setting; see README).
    #[arg(long, global = true, env = "IORT_CDS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `iort_cds=debug` (RUST_LOG overrides it).
    #[arg(long, global = true, env = "IORT_CDS_LOG_LEVEL", value_name = "FILTER")]
    log_level: Option<String>,
    /// Log line format.
    #[arg(long, global = true, env = "IORT_CDS_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Folder whose files override the embedded fhir-profiles/ (value sets, schemas, policy).
    #[arg(long, global = true, env = "IORT_CDS_PROFILES_DIR", value_name = "DIR")]
    profiles_dir: Option<PathBuf>,
    /// Folder whose files override the embedded cards/ (card templates).
    #[arg(long, global = true, env = "IORT_CDS_CARDS_DIR", value_name = "DIR")]
    cards_dir: Option<PathBuf>,
    /// Distance to the closest margin (mm) up to which a margin counts as close (default 2).
    #[arg(
        long,
        global = true,
        env = "IORT_CDS_CLOSE_MARGIN_MM",
        value_name = "MM"
    )]
    close_margin_mm: Option<f64>,
    /// The audit store's database: `sqlite:///path/file.db` or `postgres://user@host/db`
    /// (default: `iort-cds.db` in the working directory).
    #[arg(long, global = true, env = "IORT_CDS_STORE_URL", value_name = "URL")]
    store_url: Option<String>,
}

#[derive(Debug, Args, Clone, Default)]
struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, env = "IORT_CDS_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Largest accepted request body in bytes (default 8 MiB).
    #[arg(long, env = "IORT_CDS_MAX_BODY_BYTES", value_name = "BYTES")]
    max_body_bytes: Option<usize>,
    /// Allowed CORS origins, comma-separated; `*` allows any (never `null`), `""` none.
    /// Default: any on a loopback listener, none beyond.
    #[arg(
        long,
        env = "IORT_CDS_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    cors_origins: Option<Vec<String>>,
    /// Public base URL when behind a proxy (used for the JWT audience check).
    #[arg(long, env = "IORT_CDS_PUBLIC_BASE_URL", value_name = "URL")]
    public_base_url: Option<String>,
    /// Worker threads (default: one per core).
    #[arg(long, env = "IORT_CDS_WORKERS", value_name = "N")]
    workers: Option<usize>,
    /// Serve WITHOUT client authentication on a non-loopback address (testing only; warns).
    #[arg(long, env = "IORT_CDS_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
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

fn overrides(common: &CommonArgs) -> Overrides {
    Overrides {
        log_format: common.log_format,
        log_level: common.log_level.clone(),
        profiles_dir: common.profiles_dir.clone(),
        cards_dir: common.cards_dir.clone(),
        close_margin_mm: common.close_margin_mm,
        store_url: common.store_url.clone(),
        ..Overrides::default()
    }
}

/// Parse the command line and run.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Evaluate(args)) => {
            if cli.serve.given() {
                eprintln!(
                    "iort-cds: options of `serve` (--listen, --public-base-url ...) do not apply to `evaluate`"
                );
                return ExitCode::from(2);
            }
            evaluate(&cli.common, args)
        }
        Some(Command::Assertions(command)) => {
            if cli.serve.given() {
                eprintln!("iort-cds: options of `serve` do not apply to `assertions`");
                return ExitCode::from(2);
            }
            assertions(&cli.common, command)
        }
        Some(Command::Serve(args)) => serve(&cli.common, args.or(cli.serve)),
        None => serve(&cli.common, cli.serve),
    }
}

impl ServeArgs {
    /// Whether any serve option was given (flag or environment).
    fn given(&self) -> bool {
        self.listen.is_some()
            || self.max_body_bytes.is_some()
            || self.cors_origins.is_some()
            || self.public_base_url.is_some()
            || self.workers.is_some()
            || self.insecure_no_auth
    }

    /// These options, each taken from `outer` (given before `serve`) where not given here.
    fn or(self, outer: ServeArgs) -> ServeArgs {
        ServeArgs {
            listen: self.listen.or(outer.listen),
            max_body_bytes: self.max_body_bytes.or(outer.max_body_bytes),
            cors_origins: self.cors_origins.or(outer.cors_origins),
            public_base_url: self.public_base_url.or(outer.public_base_url),
            workers: self.workers.or(outer.workers),
            insecure_no_auth: self.insecure_no_auth || outer.insecure_no_auth,
        }
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

fn serve(common: &CommonArgs, args: ServeArgs) -> ExitCode {
    let o = Overrides {
        listen: args.listen,
        max_body_bytes: args.max_body_bytes,
        cors_allowed_origins: args.cors_origins.clone(),
        public_base_url: args.public_base_url.clone(),
        workers: args.workers,
        insecure_no_auth: args.insecure_no_auth,
        ..overrides(common)
    };
    let settings = match Settings::load(common.config.as_deref(), o) {
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

fn evaluate(common: &CommonArgs, args: EvaluateArgs) -> ExitCode {
    let settings = match Settings::load(common.config.as_deref(), overrides(common)) {
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

fn assertions(common: &CommonArgs, command: AssertionsCommand) -> ExitCode {
    let settings = match Settings::load(common.config.as_deref(), overrides(common)) {
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
