//! The `iort-cds` binary: see [`iort_cds::cli`].

fn main() -> std::process::ExitCode {
    tune_allocator();
    iort_cds::cli::main()
}

/// Keep large blocks (request bodies, the parse buffers of a large record: hundreds of KB) out
/// of glibc's heap arenas. By default glibc raises its mmap threshold each time such a block is
/// freed, so after the first large request they come from the arenas, where freed memory stays
/// with the process. A fixed 128 KiB threshold lowered peak RSS under many concurrent large
/// records at the same throughput (figures in BENCHMARKS.md).
/// Set in the binary, not the library, so embedders keep their own allocator settings.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    const MMAP_THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets an allocator parameter; it is called once, first thing in
    // main, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
