//! Memory handed back to the kernel after a load peak. The binary runs
//! on mimalloc, which purges the pages a flood of connections freed only
//! when the thread that owns them collects: an idle proxy never would, and
//! its RSS would stay at the peak. Each runtime thread collects when it
//! goes idle, at most once a second, so a busy thread pays nothing.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The least time between two collections on one thread.
const EVERY: Duration = Duration::from_secs(1);

/// Called before a runtime thread parks (`on_thread_park`).
pub fn on_park() {
    thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
    LAST.with(|last| {
        let now = Instant::now();
        if last.get().is_some_and(|t| now.duration_since(t) < EVERY) {
            return;
        }
        last.set(Some(now));
        collect();
    });
}

/// Frees what the calling thread's mimalloc heap holds unused, and
/// returns to the kernel the pages whose purge delay has passed.
#[allow(unsafe_code)]
fn collect() {
    // SAFETY: `mi_collect` takes no pointer and only walks the calling
    // thread's own mimalloc heap; it is safe to call at any time, also
    // when mimalloc is not the global allocator (as in unit tests).
    unsafe { libmimalloc_sys::mi_collect(false) }
}
