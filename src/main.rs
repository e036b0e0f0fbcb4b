//! The `enrollca` command line.

/// jemalloc, for its per-thread caches: glibc's malloc, capped at two arenas to stay in the
/// memory budget, had the async workers, the blocking pool and sled's threads contend on the
/// arena locks. A/B, ACME orders: 8% less server CPU per order. A fleet's first-contact
/// validations peak at 489 MiB, inside the 512 MiB budget (glibc: 447, mimalloc: 556).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    enrollca::admin::cli::main()
}
