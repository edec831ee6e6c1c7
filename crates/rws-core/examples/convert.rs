//! Converts any checkpoint rws reads (safetensors, sharded, PyTorch zip) to one safetensors file:
//! `cargo run --release -p rws-core --example convert -- IN OUT`.
fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 3 {
        eprintln!("usage: convert IN OUT");
        std::process::exit(2);
    }
    let r = rws_core::TensorMap::load(std::path::Path::new(&a[1])).and_then(|m| m.save(std::path::Path::new(&a[2])));
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
