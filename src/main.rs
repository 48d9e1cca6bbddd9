fn main() -> std::process::ExitCode {
    regate::cli::run()
}
