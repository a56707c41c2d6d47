//! Shared pieces of the command-line tools: logging, error reporting, the training benchmark.

use std::process::ExitCode;

pub mod train_bench;

/// Keep freed memory in the process (glibc): allocations below 32 MiB come from the heap, and
/// the heap is never trimmed back to the kernel.
///
/// Why: a training or evaluation step allocates a fresh buffer for almost every tensor op, and
/// glibc's defaults (a dynamic mmap threshold, trimming the top of the heap past 2x it) handed many
/// of those blocks back to the kernel on free, so the next step page-faulted and zeroed them
/// again: 10-12% of a ViT-Tiny step was the kernel's `clear_page` and page faults. Keeping them
/// made ViT-Tiny evaluation 1.5x as fast and training 1.1x, without raising peak memory
/// (BENCHMARKS.md, "Keeping freed memory"). Blocks of 32 MiB and more (the im2col buffers)
/// stay mmapped. Other C libraries: nothing to do.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Log to stderr through tracing; `RUST_LOG` overrides the default `info` level.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,wgpu_core=warn,wgpu_hal=warn,naga=warn,cubecl=warn",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Print an error and its causes on stderr, without a backtrace, and return exit code 2.
pub fn report(err: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("error: {err}");
    let full = |e: &(dyn std::error::Error + 'static)| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::StorageFull)
    };
    let mut disk_full = full(err);
    let mut source = err.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        disk_full |= full(cause);
        source = cause.source();
    }
    if disk_full {
        eprintln!(
            "  hint: the disk is full. Files are written to a temporary name and renamed, so what was written before is intact: free space, then run the command again (`train --resume RUN_DIR` continues a run from its last checkpoint)"
        );
    }
    ExitCode::from(2)
}

/// Parse a `--backend` value.
pub fn parse_backend(s: &str) -> Result<oodforge_core::config::BackendChoice, String> {
    s.parse()
}
