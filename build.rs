// `include_dir!` does not tell cargo about new migration folders; this does.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
