//! `jumio-export`: parse arguments, set up logging and the runtime, run the command, exit with its code.

use clap::Parser;

/// How often free heap pages are handed back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_EVERY_SECONDS: u64 = 5;

fn main() {
    // Bodies stream through hyper's read buffers (up to ~400 KiB each, one or two per
    // connection); nothing the size of an archive is allocated any more. Below 512 KiB blocks come
    // from the heap, so a freed read buffer is reused by the next read instead of being
    // unmapped and faulted in again (issue 15 measured about two page faults per 4 KiB
    // received with a 128 KiB threshold); the 512 KiB trim threshold and the two arenas keep
    // what the heap holds beyond its live blocks small (small-file runs peaked at 58 MiB with a
    // 2 MiB trim threshold, 32 MiB with this one).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // The trim threshold gives back only the top of a heap: pages freed between live blocks stay
    // resident, and over a long run they add up (a 1M-reference run held 31 MiB of anonymous
    // memory for a live heap of 14). Every few seconds, free pages go back to the kernel.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let _ = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(TRIM_EVERY_SECONDS));
                // SAFETY: malloc_trim only returns free memory to the kernel; it takes the
                // allocator's own locks.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
    let cli = jumio_export::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime =
        match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .max_blocking_threads(jumio_export::BLOCKING_THREADS.max(
                2 * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            ))
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                std::process::exit(jumio_export::exit::ExitCode::Fatal.code());
            }
        };
    let code = runtime.block_on(jumio_export::commands::execute(cli.command));
    std::process::exit(code.code());
}
