//! The process's allocator settings, applied once at start-up by the `mgen`
//! binary (and the benches, so they time what the command does).
//!
//! The executors allocate and free activation matrices of a few MB per op.
//! glibc serves blocks above its mmap threshold (128 KiB, growing to at most
//! 32 MiB as blocks are freed) with fresh mappings and returns freed heap
//! tops to the kernel, so each op paid page faults on newly zeroed pages:
//! 15% of a BERT-base request in the reference executor. Raising the mmap
//! threshold to 64 MiB and the trim threshold to 256 MiB keeps that memory
//! for reuse (1.32–1.40× → 1.27× the request's matrix products alone, measured
//! in `cargo bench --bench reference`; peak memory of the `glue8.mgen`
//! search unchanged at 4.1 GB). Results do not depend on the allocator.
//! Elsewhere than glibc this does nothing.

/// Applies the settings (idempotent; call before the first large
/// allocation).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called
    // with valid parameter codes and values.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
