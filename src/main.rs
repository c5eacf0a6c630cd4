//! The `arbor` command line: argument parsing, output, progress bars and
//! hints about flags; the work is done by the `arbor` library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
