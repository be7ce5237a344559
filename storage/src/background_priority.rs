//! fjall's flush and compaction threads run at a lower CPU priority than the request path.
//!
//! A memtable flush or a compaction is tens to hundreds of milliseconds of CPU at once. On a
//! machine whose cores the request path keeps busy, one took a core from the tokio workers and
//! the fsync thread for that long, every message in flight waited behind it, and those stalls
//! decided the cluster's p99 near its highest rate (docs/benchmarks.md, "eighteenth"). At a
//! lower priority the scheduler gives background work what the request path leaves over; it
//! still gets a share when the cores stay full, and if it ever falls far behind, fjall's own
//! write backpressure slows the writers (RocksDB lowers its compaction threads the same way).

use std::path::Path;

/// The nice value of fjall's worker threads (0 is the default, 19 the lowest priority).
pub const BACKGROUND_NICE: i32 = 10;

/// Opens the fjall database in `fjall_dir` on a short-lived thread at `BACKGROUND_NICE` and in
/// the idle scheduling class: the worker threads fjall starts while opening inherit both.
/// Raising a thread's priority back needs a privilege, so the lowered thread is one that ends
/// here.
///
/// Why idle and not only a nice value: a nice-10 flush still ran beside the request path. The
/// kernel's EEVDF scheduler lets a running task finish its slice before a woken one of higher
/// weight takes the core, so each wake-up of a tokio worker or the fsync thread could wait a
/// few milliseconds behind the flush, and a clustered message passes through many wake-ups:
/// at 10,441 DM msgs/s on 2 nodes every state-machine flush (~0.3 s of a core per node) cut
/// the workers' CPU by a third for 1.5 s and the worst latency rose from ~25 ms to 100–200 ms
/// (docs/benchmarks.md, "twenty-third"). A `SCHED_IDLE` task runs only on a core nothing else
/// wants and is preempted at once by any normal task. If the cores stay full, flushes wait,
/// and fjall's own write backpressure (too many sealed memtables or L0 tables) slows the
/// writers, which is the overload behaviour wanted anyway.
pub fn open_at_background_priority(fjall_dir: &Path) -> fjall::Result<fjall::Database> {
    std::thread::scope(|scope| {
        let opener = std::thread::Builder::new()
            .name("ringchat-open".into())
            .spawn_scoped(scope, || {
                lower_this_thread();
                idle_this_thread();
                fjall::Database::builder(fjall_dir).open()
            })?;
        opener.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `work` on a thread of its own at `BACKGROUND_NICE` and returns its result: for large
/// one-off jobs beside the request path (building a snapshot file). The thread ends with the
/// job, since a lowered thread cannot be raised back without a privilege.
pub async fn run_in_background<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name(name.into()).spawn(move || {
        lower_this_thread();
        let _ = done.send(work());
    })?;
    result
        .await
        .map_err(|_| std::io::Error::other("a background job panicked"))
}

/// Sets the calling thread's nice value to `BACKGROUND_NICE` (Linux; elsewhere nothing).
fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its arguments; on Linux PRIO_PROCESS with 0 names the
    // calling thread, and lowering one's own priority needs no privilege.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE);
    }
}

/// Puts the calling thread in the `SCHED_IDLE` class (Linux; elsewhere nothing). Failure
/// (a sandbox that forbids it) leaves the thread at its nice value. For threads that never
/// need to run ahead of the request path: they cannot be raised back without a privilege.
pub(crate) fn idle_this_thread() {
    #[cfg(target_os = "linux")]
    // SAFETY: `param` lives across the call; pid 0 names the calling thread, and moving one's
    // own thread to SCHED_IDLE needs no privilege.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                "storage workers stay at a lower nice value: the idle scheduling class was refused"
            );
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// fjall names its worker threads so (`worker_pool.rs`).
    const FJALL_WORKER: &str = "fjall:worker";

    /// Field `field` (numbered as in proc(5): nice is 19, policy 41) of
    /// `/proc/self/task/*/stat` for each of this process's fjall worker threads.
    fn fjall_worker_stat_field(field: usize) -> Vec<i32> {
        let mut values = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
                continue;
            };
            if comm.trim_end() != FJALL_WORKER {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            // The fields after the parenthesised name start with field 3 (state).
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            values.push(after_name.split(' ').nth(field - 3).unwrap().parse().unwrap());
        }
        values
    }

    #[test]
    fn an_opened_store_runs_fjalls_workers_below_the_request_path() {
        let dir = tempfile::tempdir().unwrap();
        let _store = crate::Store::open(dir.path()).unwrap();
        let nices = fjall_worker_stat_field(19);
        assert!(!nices.is_empty(), "fjall started no worker threads");
        assert!(
            nices.iter().all(|n| *n == BACKGROUND_NICE),
            "fjall workers' nice values: {nices:?}"
        );
        let policies = fjall_worker_stat_field(41);
        assert!(
            policies.iter().all(|p| *p == libc::SCHED_IDLE),
            "fjall workers' scheduling policies: {policies:?}"
        );
    }
}
