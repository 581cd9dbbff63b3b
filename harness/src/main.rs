use clap::Parser;

fn main() {
    pvmtest::sys::keep_malloc_small();
    // As /init of a kernel-matrix VM there are no arguments to parse: the task is a file.
    if pvmtest::guest::is_init() {
        pvmtest::guest::init_main();
    }
    let cli = pvmtest::cli::Cli::parse();
    std::process::exit(pvmtest::cli::main_with(cli));
}
