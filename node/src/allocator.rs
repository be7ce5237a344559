//! glibc malloc settings for a long-running server.
//!
//! Each password hash (argon2id, OWASP parameters) allocates a 19 MiB block. glibc serves the
//! first one with mmap, and on freeing it raises its mmap threshold past 19 MiB, so every later
//! hash block comes from an arena and stays there once freed: a burst of sign-ups left the
//! process at 1.8 GB RSS, and connections opened afterwards reused that free space, which
//! made their measured cost swing between 0 and 5 kB from run to run. A fixed threshold turns
//! the dynamic one off: blocks of 16 MiB and more (the hash blocks) are always mapped and
//! given back on free, while smaller buffers (storage, RPC) still come from the arenas
//! without an mmap/munmap pair each time.

/// Allocations of this size and larger are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD_BYTES: i32 = 16 << 20;

/// Applies the settings; call once at start, before the runtime's threads exist.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is called before other
        // threads start, and a refused setting (0) leaves glibc's defaults in place.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) };
        if ok == 0 {
            tracing::warn!("mallopt(M_MMAP_THRESHOLD) refused; large freed buffers may stay in the heap");
        }
    }
}
