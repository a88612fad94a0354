//! The floor the load test measures the service against (`scripts/loadtest.sh`, BENCHMARKS.md).
//!
//! Why it exists: the service's throughput alone does not say how far it is from what the
//! machine, the HTTP stack and JSON parsing allow. This server does the least any JSON service
//! must do with the same bodies: read the body, parse it as JSON (`serde_json::Value`) and write
//! it back, with the same HTTP stack (actix-web 4, one worker per core). The ratio of the
//! service's requests/s to this server's is the figure the performance goals are stated in.
//!
//! It is its own crate (its own workspace and Cargo.lock) because fhirbolt switches on
//! serde_json's `arbitrary_precision` and `preserve_order` for every crate in the service's
//! build, and both make parsing slower; the floor uses serde_json's default features, as an
//! ordinary JSON service would.
//!
//! Usage: `echo-floor [--listen 127.0.0.1:0]`. It prints one line `LISTENING <port>` on stdout
//! once it accepts connections (like tests/fhir-server/server.js). Any POST: 200 with the body
//! parsed and written back as JSON; a body that is not JSON: 400.

use actix_web::{App, HttpResponse, HttpServer, web};

/// Bodies as large as the service accepts by default (8 MiB).
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

async fn echo(body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(value) => match serde_json::to_vec(&value) {
            Ok(out) => HttpResponse::Ok()
                .content_type("application/json")
                .body(out),
            Err(_) => HttpResponse::InternalServerError().finish(),
        },
        Err(_) => HttpResponse::BadRequest().finish(),
    }
}

fn listen_address() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:0".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs ADDRESS:PORT")?,
            "-h" | "--help" => {
                println!("usage: echo-floor [--listen 127.0.0.1:0]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(listen)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let listen = listen_address().map_err(std::io::Error::other)?;
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let server = HttpServer::new(|| {
        App::new()
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .default_service(web::post().to(echo))
    })
    .workers(workers)
    .bind(&listen)?;
    for addr in server.addrs() {
        println!("LISTENING {}", addr.port());
    }
    server.run().await
}
