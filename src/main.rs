fn main() {
    std::process::exit(distill::cli::main());
}
