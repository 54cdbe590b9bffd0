//! The `bonghwa` binary: see `bonghwa --help`.

fn main() -> std::process::ExitCode {
    bonghwa_cli::cli::main()
}
