fn main() {
    std::process::exit(kernel_matrix::cli::main());
}
