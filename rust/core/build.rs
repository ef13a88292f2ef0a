//! Compiles `jpeg_libjpeg.c`, the C side of decoding JPEG as Pillow does, against the
//! libjpeg-turbo headers that mozjpeg-sys builds and exports (`links = "jpeg"`).

fn main() {
    let source = "src/pipeline/jpeg_libjpeg.c";
    println!("cargo:rerun-if-changed={source}");
    let includes = std::env::var_os("DEP_JPEG_INCLUDE")
        .expect("mozjpeg-sys exports its include folders as DEP_JPEG_INCLUDE");
    let mut build = cc::Build::new();
    build.file(source).warnings(true).extra_warnings(true);
    for folder in std::env::split_paths(&includes) {
        build.include(folder);
    }
    build.compile("lightclip_jpeg");
}
