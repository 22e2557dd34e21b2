//! `sbma`: the command-line front end.
//!
//! - `sbma demo [options]`: the out-of-core demo (README's main job).
//! - `sbma run -- prog args`: run a program under the preload shim
//!   (issue 5; refuses with a clear message until then).

mod demo;

use std::process::ExitCode;

const USAGE: &str = "\
usage: sbma <command> [options]

commands:
  demo [--size S] [--budget B] [--page-size P] [--policy NAME] [--seed N] [--sim]
        run an out-of-core workload (S of data through a budget of B) on
        storage-backed memory, verify every byte and print the statistics.
        Defaults: --size 1G --budget 128M --page-size 64K --policy clock.
        --sim runs the same workload on the core's in-process model.
  run -- PROG [ARGS...]
        run an unmodified program on storage-backed memory (not available yet)
  help  print this text

sizes accept K, M, G, T suffixes (powers of 1024); policies: clock, lru, fifo, all";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::Options::parse(&args[1..]).and_then(demo::run),
        Some("run") => {
            Err("`sbma run` needs the LD_PRELOAD shim, which is not built yet (issue 5)".into())
        }
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some("--version" | "-V") => {
            println!("sbma {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}` (try `sbma help`)")),
        None => Err("no command given (try `sbma help`)".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("sbma: {msg}");
            ExitCode::from(2)
        }
    }
}
