//! `mock-vllm`: the binary; everything lives in the library.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(mock_vllm::main_entry(args));
}
