/// glibc's malloc, keeping a few freed object-sized buffers for reuse
/// (see [`rbdfs::cache::RecyclingAllocator`]).
#[global_allocator]
static ALLOCATOR: rbdfs::cache::RecyclingAllocator = rbdfs::cache::RecyclingAllocator;

fn main() {
    rbdfs::cache::tune_allocator();
    std::process::exit(rbdfs::cli::main());
}
