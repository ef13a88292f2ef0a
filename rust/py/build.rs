//! Lets an installed wheel find libtorch without LD_LIBRARY_PATH: `_core.so` sits in
//! `site-packages/lightclip/`, torch's shared libraries in `site-packages/torch/lib/`.
//! (`import lightclip` also imports torch first, which loads them for editable installs.)
fn main() {
    println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,$ORIGIN/../torch/lib");
}
