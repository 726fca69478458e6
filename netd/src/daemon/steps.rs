//! Per-request step timings for profiling the control plane: with `NETD_STEP_TIMES=1` in the
//! daemon's environment, `run`'s start, `rm` and the exit path log how long each of their steps
//! took (one line per operation, at info). Off by default: one environment read per daemon.
use std::{cell::RefCell, time::Instant};

struct Steps {
    t0: Instant,
    last: Instant,
    marks: Vec<(&'static str, u128)>,
}

tokio::task_local! {
    static STEPS: RefCell<Option<Steps>>;
}

/// Whether step timings are on (`NETD_STEP_TIMES` set to anything but `0`).
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("NETD_STEP_TIMES").is_some_and(|v| v != "0"))
}

/// Run `f` with a step recorder; log its steps (`what`, `id`) when it ends.
pub async fn timed<F: std::future::Future>(what: &'static str, id: &str, f: F) -> F::Output {
    if !enabled() {
        return f.await;
    }
    let now = Instant::now();
    let cell = RefCell::new(Some(Steps { t0: now, last: now, marks: Vec::new() }));
    STEPS
        .scope(cell, async move {
            let out = f.await;
            let line = STEPS.with(|c| {
                c.borrow().as_ref().map(|s| {
                    let mut line = String::new();
                    for (name, us) in &s.marks {
                        line.push_str(&format!(" {name}={us}"));
                    }
                    (s.t0.elapsed().as_micros(), line)
                })
            });
            if let Some((total, line)) = line {
                tracing::info!(target: "netd::steps", "{what} {id}: total={total}us{line}");
            }
            out
        })
        .await
}

/// The step that ends now (its time since the previous mark). No-op outside [`timed`].
pub fn mark(name: &'static str) {
    let _ = STEPS.try_with(|c| {
        if let Some(s) = c.borrow_mut().as_mut() {
            let now = Instant::now();
            s.marks.push((name, now.duration_since(s.last).as_micros()));
            s.last = now;
        }
    });
}
