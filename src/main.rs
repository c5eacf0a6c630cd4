fn main() -> std::process::ExitCode {
    arbor::cli::main()
}
