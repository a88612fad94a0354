//! Benchmarks of the whole pipeline against a parse-only baseline (issue 8; see BENCHMARKS.md).
//!
//! For each request kind ([`records::Kind`]: a non-IORT order, an IORT order with a typical
//! 40-resource record, an IORT order with a 1,000-resource record) two things are timed on the
//! same bytes:
//!
//! - `pipeline`: [`Engine::call`] (parse, limits, JSON Schema validation, typed request, gather
//!   from prefetch, facts, decision, cards and system actions), then the response serialised to
//!   JSON, which is what the HTTP route does minus HTTP;
//! - `parse-only`: serde_json parses the body into a `Value` and writes it back out, the least
//!   any JSON service must do with the body. The ratio pipeline / parse-only is the budget
//!   BENCHMARKS.md checks (typical <= 3x, heavy <= 5x), printed at the end of a run.
//!
//! The engine is built once, outside the timed loops, as the server builds it at start-up.
//! Before timing, each kind's answer is checked (no card on the fast path, one `covered` card
//! and system action otherwise), so the benchmark cannot silently time an error or an early
//! exit; `cargo test --benches` runs exactly these checks.
//!
//! The binary has two more modes, used by the scripts rather than by `cargo bench`:
//! - `IORT_BENCH_WRITE_BODIES=DIR`: write the request bodies of every kind to `DIR` (and, with
//!   `IORT_BENCH_FHIR_SERVER=URL`, the FHIR-fetch request and the record as a transaction
//!   Bundle), for `scripts/loadtest.sh`;
//! - `IORT_BENCH_PROFILE=KIND:N[:parse-only]`: run the pipeline (or the baseline) N times on
//!   KIND and exit, a small driver to run under a profiler (valgrind --tool=callgrind); the
//!   instruction counts give a ratio that does not depend on how loaded the machine is.

#[path = "support/records.rs"]
mod records;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput};
use iort_cds::configuration::Settings;
use iort_cds::hook::CdsResponse;
use iort_cds::pipeline::Engine;
use records::{Kind, SERVICE_ID};
use serde_json::Value;
use tokio::runtime::Runtime;

const COVERAGE_INFORMATION: &str =
    "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information";

/// Criterion function names inside each kind's group.
const PIPELINE: &str = "pipeline";
const PARSE_ONLY: &str = "parse-only";

/// Budget on pipeline / parse-only per kind (BENCHMARKS.md); `None`: no budget set.
fn budget(kind: Kind) -> Option<f64> {
    match kind {
        Kind::FastPath => None,
        Kind::Typical => Some(3.0),
        Kind::Heavy => Some(5.0),
    }
}

/// The engine and a runtime to drive its async entry point. Every awaited future here is ready
/// at once (the record is all in prefetch, so nothing is fetched): a current-thread runtime
/// adds well under a microsecond per call.
struct Harness {
    engine: Engine,
    runtime: Runtime,
}

impl Harness {
    fn new() -> Self {
        let engine = Engine::load(&Settings::default()).expect("the engine loads");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Self { engine, runtime }
    }

    fn call(&self, body: &[u8]) -> CdsResponse {
        self.runtime
            .block_on(self.engine.call(SERVICE_ID, body))
            .expect("the benchmark request is answered")
    }

    /// The timed pipeline: answer, then serialise the answer as the HTTP route does.
    fn pipeline(&self, body: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&self.call(body)).expect("a CdsResponse serialises")
    }
}

/// The timed baseline: parse into a `Value`, write it back out.
fn parse_only(body: &[u8]) -> Vec<u8> {
    let value: Value = serde_json::from_slice(body).expect("the body is JSON");
    serde_json::to_vec(&value).expect("a Value serialises")
}

/// The CRD `covered` code of the first system action, if any.
fn covered_code(response: &CdsResponse) -> Option<&str> {
    let resource = response.system_actions.first()?.resource.as_ref()?;
    resource["extension"]
        .as_array()?
        .iter()
        .filter(|e| e["url"] == COVERAGE_INFORMATION)
        .flat_map(|e| e["extension"].as_array().into_iter().flatten())
        .find(|x| x["url"] == "covered")?["valueCode"]
        .as_str()
}

/// Panics unless the answer is what `kind` must produce, so the timings are of the real path.
fn check_answer(kind: Kind, response: &CdsResponse) {
    if kind.has_iort_order() {
        assert_eq!(
            response.cards.len(),
            1,
            "{}: one card for the one IORT order",
            kind.name()
        );
        assert_eq!(
            covered_code(response),
            Some("covered"),
            "{}: the generated record meets the policy",
            kind.name()
        );
    } else {
        assert!(
            response.cards.is_empty() && response.system_actions.is_empty(),
            "{}: no IORT order, nothing to say",
            kind.name()
        );
    }
}

fn benches(c: &mut Criterion, harness: &Harness) {
    for kind in Kind::ALL {
        let size = kind.size();
        let body = records::body(&records::request(kind));
        check_answer(kind, &harness.call(&body));
        println!(
            "{}: {} bytes, {} resources in prefetch",
            kind.name(),
            body.len(),
            size.total()
        );

        let mut group = c.benchmark_group(kind.name());
        group.throughput(Throughput::Bytes(body.len() as u64));
        if kind == Kind::Heavy {
            // About 10-20 ms a call: fewer samples keep a full run within a few minutes.
            group.sample_size(20);
            group.measurement_time(Duration::from_secs(10));
        }
        group.bench_function(PIPELINE, |b| b.iter(|| harness.pipeline(black_box(&body))));
        group.bench_function(PARSE_ONLY, |b| b.iter(|| parse_only(black_box(&body))));
        group.finish();
    }
}

/// Where criterion writes its results (set explicitly so the ratios can be read back).
fn output_directory() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// Criterion's typical estimate (the slope when sampling was linear, else the mean), in ns,
/// from a result written by this run (not an older one).
fn estimate_ns(dir: &Path, group: &str, function: &str, since: SystemTime) -> Option<f64> {
    let file = dir
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let fresh = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= since);
    if !fresh {
        return None;
    }
    let estimates: Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
    estimates["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| estimates["mean"]["point_estimate"].as_f64())
}

fn format_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

/// The ratio table for the kinds whose two benchmarks ran in this process.
fn report_ratios(dir: &Path, since: SystemTime) {
    let mut rows = Vec::new();
    for kind in Kind::ALL {
        let (Some(pipeline), Some(baseline)) = (
            estimate_ns(dir, kind.name(), PIPELINE, since),
            estimate_ns(dir, kind.name(), PARSE_ONLY, since),
        ) else {
            continue;
        };
        let ratio = pipeline / baseline;
        let verdict = match budget(kind) {
            Some(max) if ratio <= max => format!("<= {max}x: met"),
            Some(max) => format!("<= {max}x: MISSED"),
            None => "no budget".to_owned(),
        };
        rows.push(format!(
            "| {} | {} | {} | {:.2}x | {verdict} |",
            kind.name(),
            format_ns(pipeline),
            format_ns(baseline),
            ratio
        ));
    }
    if rows.is_empty() {
        return;
    }
    println!("\npipeline / parse-only (criterion's typical estimate per call):\n");
    println!("| kind | pipeline | parse-only | ratio | budget |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}

/// `IORT_BENCH_WRITE_BODIES=DIR`: the load test's request bodies.
fn write_bodies(dir: &Path) {
    std::fs::create_dir_all(dir).expect("the bodies folder can be created");
    let write = |name: &str, value: &Value| {
        let path = dir.join(name);
        std::fs::write(&path, records::body(value))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        println!("wrote {}", path.display());
    };
    for kind in Kind::ALL {
        write(&format!("{}.json", kind.name()), &records::request(kind));
    }
    if let Ok(server) = std::env::var("IORT_BENCH_FHIR_SERVER") {
        write(
            "fhir-fetch.json",
            &records::request_without_prefetch(Kind::Typical, Some(&server)),
        );
        write(
            "fhir-record.json",
            &records::Record::generate(Kind::Typical.size()).transaction(),
        );
    }
}

/// `IORT_BENCH_PROFILE=KIND:N[:parse-only]`: run the pipeline (or the baseline) N times, for
/// a profiler.
fn profile(spec: &str) {
    let mut parts = spec.split(':');
    let name = parts.next().unwrap_or_default();
    let n = parts.next().unwrap_or("100");
    let baseline = match parts.next() {
        None => false,
        Some(PARSE_ONLY) => true,
        Some(other) => panic!("IORT_BENCH_PROFILE: {other:?} is not {PARSE_ONLY:?}"),
    };
    let kind = Kind::from_name(name).unwrap_or_else(|| {
        panic!("IORT_BENCH_PROFILE: unknown kind {name:?} (fast-path, typical, heavy)")
    });
    let n: usize = n
        .parse()
        .unwrap_or_else(|_| panic!("IORT_BENCH_PROFILE: {n:?} is not a count"));
    let harness = Harness::new();
    let body = records::body(&records::request(kind));
    check_answer(kind, &harness.call(&body));
    let mut bytes = 0;
    for _ in 0..n {
        bytes += if baseline {
            parse_only(black_box(&body)).len()
        } else {
            harness.pipeline(black_box(&body)).len()
        };
    }
    let what = if baseline { PARSE_ONLY } else { PIPELINE };
    println!("{} {what}: {n} runs, {bytes} output bytes", kind.name());
}

fn main() {
    if let Some(dir) = std::env::var_os("IORT_BENCH_WRITE_BODIES") {
        write_bodies(Path::new(&dir));
        return;
    }
    if let Ok(spec) = std::env::var("IORT_BENCH_PROFILE") {
        profile(&spec);
        return;
    }
    let started = SystemTime::now();
    let dir = output_directory();
    let harness = Harness::new();
    let mut criterion = Criterion::default()
        .output_directory(&dir)
        .configure_from_args();
    benches(&mut criterion, &harness);
    criterion.final_summary();
    report_ratios(&dir, started);
}
