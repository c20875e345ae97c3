//! `carrier-bench`: the benchmark of a Carrier server (see `carrier::bench`).

fn main() -> std::process::ExitCode {
    carrier::bench::main()
}
