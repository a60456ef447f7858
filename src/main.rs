//! `jumio-export`: parse arguments, set up logging and the runtime, run the command, exit with its code.

use clap::Parser;

fn main() {
    // glibc keeps large freed blocks in per-thread arenas; archives are assembled in buffers of a
    // few MB on blocking threads, and without this the heap grew with the number of references
    // exported (485 MiB at 30,000 in the benchmark). Blocks of 128 KiB and more are mmapped and
    // returned to the system when freed.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
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
