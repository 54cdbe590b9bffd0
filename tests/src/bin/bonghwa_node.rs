//! The `bonghwa` binary under the name `bonghwa-node`, for process-level tests.

fn main() -> std::process::ExitCode {
    bonghwa_cli::cli::main()
}
