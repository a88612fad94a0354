//! The asset folders are embedded with `include_dir!`, which cannot tell cargo to watch them on
//! stable Rust: without this, an edited card template or value set would not be re-embedded
//! until some Rust file changed.

fn main() {
    println!("cargo:rerun-if-changed=fhir-profiles");
    println!("cargo:rerun-if-changed=cards");
    println!("cargo:rerun-if-changed=build.rs");
}
