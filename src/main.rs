//! `jumio-export`: parse arguments, set up logging and the runtime, run the command, exit with its code.

use clap::Parser;

/// The allocator: mimalloc. Against glibc's malloc as it was tuned here (512 KiB mmap and trim
/// thresholds, two arenas, a `malloc_trim` every 5 s) the job takes about 6 % less CPU on
/// full-size transactions and 8 % less on small files, mostly the churn of the connection's
/// read buffers (up to ~400 KiB each) and of the per-request allocations (`_int_malloc`,
/// `malloc_consolidate`, `_int_free`: 13 % of a small-file run's CPU under glibc); peak RSS is
/// 61 MiB on full-size transactions against 48 (BENCHMARKS.md, session 8).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's option numbers (`mi_option_e` in its `mimalloc.h`, v3; not exported by the
/// bindings).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed pages go back to the kernel 2 ms after they fall free (mimalloc's default waits a
/// second: a full-size run then peaked at 120 MiB), and arenas are committed as they are used
/// rather than whole: peak RSS stays under issue 15's 64 MiB. Run from `.init_array`, before
/// the Rust runtime's first allocation creates mimalloc's first arena (set in `main`, the
/// arena option comes too late and a full-size run peaks at 102 MiB).
extern "C" fn allocator_options() {
    // SAFETY: mi_option_set only stores an option's value; nothing else runs yet.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 2);
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
    }
}

#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static ALLOCATOR_OPTIONS: extern "C" fn() = allocator_options;

fn main() {
    #[cfg(not(target_os = "linux"))]
    allocator_options();
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
