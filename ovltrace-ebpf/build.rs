fn main() {
    // bpf-linker is needed to link the programs; say so before rustc fails obscurely.
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf")
        && which::which("bpf-linker").is_err()
    {
        println!("cargo:warning=bpf-linker not found on PATH: run `cargo xtask setup`");
    }
}
