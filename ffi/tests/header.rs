//! The checked-in `include/bonghwa.h` must be exactly what cbindgen makes from the source
//! and `cbindgen.toml` today, so a change to the C surface cannot ship with a stale header.
//!
//! cbindgen runs as a library (a dev-dependency), so CI needs no cbindgen binary. To
//! regenerate after changing the C surface: `BONGHWA_BLESS_HEADER=1 cargo test -p bonghwa-ffi --test header`.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/lib.rs"))
        .generate()
        .unwrap();
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn the_checked_in_header_is_what_cbindgen_generates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/bonghwa.h");
    let fresh = generate();
    if std::env::var_os("BONGHWA_BLESS_HEADER").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "{} is stale: the C surface changed. Regenerate it with\n  \
         BONGHWA_BLESS_HEADER=1 cargo test -p bonghwa-ffi --test header\n\
         and commit it. Fresh header:\n{fresh}",
        path.display()
    );
}

#[test]
fn the_header_declares_the_seven_functions_of_design() {
    let header = generate();
    for declaration in [
        "typedef struct bh_node bh_node;",
        "bh_node *bh_node_open(const char *data_dir,",
        "char *bh_call(bh_node *node,",
        "char *bh_next_event(bh_node *node,",
        "void bh_string_free(char *s);",
        "void bh_node_close(bh_node *node);",
        "char *bh_last_error(void);",
        "const char *bh_version(void);",
    ] {
        assert!(
            header.contains(declaration),
            "missing {declaration:?} in:\n{header}"
        );
    }
}
