//! The `iort-cds` binary: see [`iort_cds::cli`].

fn main() -> std::process::ExitCode {
    iort_cds::cli::main()
}
