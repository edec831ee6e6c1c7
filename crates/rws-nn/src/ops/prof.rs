//! Opt-in wall-clock accounting per op (`RWS_PROFILE=1`): the speed work needs to know where a
//! training step goes, and sampling profilers lose the rayon workers' call stacks.
use std::sync::Mutex;
use std::time::Instant;

static TOTALS: Mutex<Vec<(&'static str, f64, u64, f64)>> = Mutex::new(Vec::new());

/// Process CPU seconds (all threads): on a shared machine, CPU time per op is steadier than wall time.
#[cfg(target_os = "linux")]
fn cpu_now() -> f64 {
    #[repr(C)]
    struct Ts {
        s: i64,
        ns: i64,
    }
    extern "C" {
        fn clock_gettime(clk: i32, ts: *mut Ts) -> i32;
    }
    let mut t = Ts { s: 0, ns: 0 };
    // SAFETY: CLOCK_PROCESS_CPUTIME_ID (2) with a valid out-pointer.
    unsafe { clock_gettime(2, &mut t) };
    t.s as f64 + t.ns as f64 * 1e-9
}
#[cfg(not(target_os = "linux"))]
fn cpu_now() -> f64 {
    0.0
}

fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("RWS_PROFILE").is_ok_and(|v| v == "1"))
}

pub(crate) struct Span(Option<(&'static str, Instant, f64)>);

pub(crate) fn span(name: &'static str) -> Span {
    Span(enabled().then(|| (name, Instant::now(), cpu_now())))
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some((name, t, c)) = self.0 {
            let dt = t.elapsed().as_secs_f64();
            let dc = cpu_now() - c;
            let mut v = TOTALS.lock().unwrap();
            match v.iter_mut().find(|e| e.0 == name) {
                Some(e) => {
                    e.1 += dt;
                    e.2 += 1;
                    e.3 += dc;
                }
                None => v.push((name, dt, 1, dc)),
            }
        }
    }
}

/// (op, wall seconds, calls, process CPU seconds) since the last call (empty unless
/// `RWS_PROFILE=1`), then reset. Nested spans count in both.
pub fn take_profile() -> Vec<(&'static str, f64, u64, f64)> {
    std::mem::take(&mut *TOTALS.lock().unwrap())
}
