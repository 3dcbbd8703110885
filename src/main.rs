mod cluster;
mod inventory;
mod ssh;
mod version;
fn main() {}
