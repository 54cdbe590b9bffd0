//! The C ABI from a real C program: `tests/c/two_nodes.c`, compiled with the system C
//! compiler against the `cdylib` cargo built for this test run, then run natively and
//! under valgrind memcheck.
//!
//! Where the library comes from: to link this test, cargo builds the `bonghwa` library
//! target, and it builds a library target with all its crate types (`cdylib`, `staticlib`,
//! `rlib`) in one rustc run, into `target/<profile>/deps/`: the directory this test
//! executable lives in. So `deps/libbonghwa.so` is always the library of this very build,
//! from `cargo test -p bonghwa-ffi` or `cargo test --workspace`, clean target or not, with
//! no nested cargo run. (`target/<profile>/libbonghwa.so` is NOT used: cargo copies it
//! there only on `cargo build`, so during `cargo test` it is missing or stale.)

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A hung C program (a deadlock in the library) fails the test instead of hanging CI.
/// Bounds the whole run, not any step in it; valgrind makes the program ~50× slower.
const WATCHDOG: Duration = Duration::from_secs(20 * 60);

/// `target/<profile>/deps`: where cargo put the `cdylib` for this test run.
fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    assert_eq!(
        deps.file_name().unwrap(),
        "deps",
        "unexpected test path {exe:?}"
    );
    deps.to_owned()
}

/// Compiles `tests/c/two_nodes.c` into `out` and returns the executable.
fn compile_two_nodes(out: &Path) -> PathBuf {
    compile_c("tests/c/two_nodes.c", out)
}

/// Compiles one C file of this crate, warnings as errors, against the header and the
/// `cdylib` (found again at run time through an rpath), into `out`; returns the executable.
fn compile_c(source: &str, out: &Path) -> PathBuf {
    let ffi = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib_dir = deps_dir();
    let library = lib_dir.join(format!(
        "{}bonghwa{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        library.exists(),
        "{} is missing: cargo should have built the cdylib with this test",
        library.display()
    );
    let exe = out.join(Path::new(source).file_stem().unwrap());
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .args(["-g", "-O0", "-pthread"])
        .arg("-I")
        .arg(ffi.join("include"))
        .arg(ffi.join(source))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib_dir.display()))
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lbonghwa")
        .status()
        .unwrap_or_else(|e| panic!("could not run the C compiler {cc:?}: {e}"));
    assert!(status.success(), "compiling {source} failed: {status}");
    exe
}

/// Runs `command` to completion, killing it if it outlives [`WATCHDOG`].
fn run_with_watchdog(mut command: Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, finished) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(WATCHDOG) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{command:?} still ran after {WATCHDOG:?}: killed it (a hang in the library?)");
        }
    }
}

fn report(what: &str, output: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn two_nodes_in_c_exchange_messages_and_survive_hostile_calls() {
    let work = tempfile::tempdir().unwrap();
    let exe = compile_two_nodes(work.path());
    let data = work.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut command = Command::new(&exe);
    command.arg(&data);
    let output = run_with_watchdog(command);
    let text = report("two_nodes", &output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("two_nodes: all checks passed"), "{text}");
}

#[test]
fn two_nodes_in_c_is_clean_under_valgrind() {
    let valgrind = Command::new("valgrind").arg("--version").output();
    if !valgrind.is_ok_and(|o| o.status.success()) {
        let message = "valgrind is not installed: the memcheck run of two_nodes.c did not happen";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{message}; CI must install it (apt-get install valgrind)");
        }
        // Straight to the stderr handle: libtest captures `eprintln!` of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! SKIPPED: {message} (install valgrind to run it) !!!!!!!!\n"
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let exe = compile_two_nodes(work.path());
    let data = work.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut command = Command::new("valgrind");
    command
        .args([
            "--tool=memcheck",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
            "--error-exitcode=1",
            "--num-callers=40",
        ])
        .arg(&exe)
        .arg(&data);
    let output = run_with_watchdog(command);
    let text = report("valgrind two_nodes", &output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("two_nodes: all checks passed"), "{text}");
    assert!(text.contains("ERROR SUMMARY: 0 errors"), "{text}");
}

#[test]
fn the_chat_example_compiles_against_the_header() {
    // It needs a second person to chat with, so it is compiled, not run; two_nodes.c makes
    // the same calls and runs.
    let work = tempfile::tempdir().unwrap();
    let exe = compile_c("examples/chat.c", work.path());
    assert!(exe.exists());
}
