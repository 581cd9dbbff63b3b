use clap::Parser;

fn main() {
    let cli = pvmtest::cli::Cli::parse();
    std::process::exit(pvmtest::cli::main_with(cli));
}
