//! `lanparty-custom`: the whole lanparty CLI plus the `udp-port-block`
//! filter. Naming the filter crate below is what keeps its registration in
//! the binary: without the `use`, the linker drops the crate silently and
//! configs that use `udp-port-block` fail with "unknown filter type".

use lanparty_custom_filter as _;

fn main() -> std::process::ExitCode {
    lanparty::main()
}
