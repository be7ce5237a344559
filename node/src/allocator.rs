//! The node binary's allocator: mimalloc, with transparent huge pages off.
//!
//! Why not glibc malloc: a gdb snapshot of a 2-node cluster stalled under 4,000 DMs/s showed
//! three of four tokio workers and the fsync thread waiting on one glibc arena lock (in
//! `_int_free` / `realloc`) while the fourth held it in `sysmalloc`; the frees were openraft's
//! per-round metrics maps of 64 groups. mimalloc's thread-local free lists have no such lock:
//! the same 100 s run went from p99 2,410 ms to 893–1,325 ms with this build (two runs; the
//! runs vary about as much as that), at about the same CPU (docs/allocator.md).
//!
//! Why `no_thp`: mimalloc asks for huge pages on its 1 GiB arena by default, and with the
//! kernel's `madvise` THP mode every touched 2 MiB region then becomes resident: an idle node
//! started at 215 MB RSS instead of 55 MB.
//!
//! The argon2 hash blocks (19 MiB each) are mimalloc "huge" allocations: each gets its own
//! segment, which mimalloc would keep for reuse. Connections opened after a burst of logins
//! then reuse that space, the node keeps 19 MiB per hashing thread, and the idle-connection
//! benchmark measures 0 B per connection. `release_freed_memory` after each hash gives it back.
//!
//! The `#[global_allocator]` itself is in `main.rs`: the binary chooses the allocator, and the
//! library crates (tests, fuzz targets, benches) stay on the system one.

/// Returns freed memory of the calling thread's heap, and of the arenas, to the OS at once.
/// For threads that free large blocks rarely (the password hashers), not for hot paths. Does
/// nothing useful where mimalloc is not the global allocator (in-process tests).
pub fn release_freed_memory() {
    // SAFETY: mi_collect only walks mimalloc's own structures; any thread may call it.
    unsafe { libmimalloc_sys::mi_collect(true) };
}
