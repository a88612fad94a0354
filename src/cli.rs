//! The command line: `iort-cds [serve]` runs the service (the default), `iort-cds evaluate`
//! answers one hook request from a file or stdin through the same code path as HTTP.
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
