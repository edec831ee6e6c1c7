// Training and evaluation throughput of the reference CNN (Fashion-MNIST shape: conv
// 1→32→32, pool, 32→64→64, pool, each conv + BN + ReLU; linear 3136→128→10; batch 128), with the
// fast ops (`fast`) or candle's built-ins (`candle`). Compare with scripts/bench_train_pytorch.py.
//
// `RAYON_NUM_THREADS=2 cargo bench -p rws-nn --bench train_speed -- [fused-pool|fused|fast|fast-nobn|candle|both|all] [BATCHES] [BATCH]`
include!("speed/common.rs");

fn main() -> candle_core::Result<()> {
    bench_main()
}
