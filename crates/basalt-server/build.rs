//! Rebuilds the server when the dashboard's build output changes, so the embedded files are current.

fn main() {
    println!("cargo:rerun-if-changed=../../web/dist");
}
