fn main() -> std::process::ExitCode {
    snakepit_cli::main()
}
