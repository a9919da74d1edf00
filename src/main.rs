fn main() {
    std::process::exit(rbdfs::cli::main());
}
