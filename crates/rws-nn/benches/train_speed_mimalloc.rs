//! The train_speed benchmark with mimalloc as the global allocator, to measure what an allocator
//! that keeps freed memory saves over glibc's (page faults on every large activation).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

include!("train_speed.rs");
