//! The train_speed benchmark with mimalloc as the global allocator, to measure what an allocator
//! that keeps freed memory saves over glibc's (page faults on every large activation).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

include!("speed/common.rs");

extern "C" {
    fn mi_option_set(option: i32, value: std::os::raw::c_long);
}

fn main() -> candle_core::Result<()> {
    // mimalloc returns freed memory to the OS after 10 ms by default (`purge_delay`, option 15),
    // so every batch's activations fault in fresh zeroed pages again: on this VM a fresh 13 MB
    // buffer costs 7–45 ms of page clearing. Never purging keeps the step's working set mapped,
    // as glibc's heap does for PyTorch. `RWS_MI_PURGE=default` keeps mimalloc's default (A/B).
    if std::env::var("RWS_MI_PURGE").map_or(true, |v| v != "default") {
        // SAFETY: plain option setter of the linked mimalloc; 15 = mi_option_purge_delay.
        unsafe { mi_option_set(15, -1) };
    }
    bench_main()
}
