fn main() {
    rbdfs::cache::tune_allocator();
    std::process::exit(rbdfs::cli::main());
}
