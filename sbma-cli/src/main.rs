//! `sbma`: the command-line front end.
//!
//! - `sbma demo [options]`: the out-of-core demo (README's main job).
//! - `sbma run [options] -- prog args`: run an unmodified program under the
//!   preload shim.

mod demo;
mod janitor;
mod run;

use std::process::ExitCode;

const USAGE: &str = "\
usage: sbma <command> [options]

commands:
  demo [--size S] [--budget B] [--page-size P] [--policy NAME] [--seed N]
       [--backend auto|signal|uffd] [--sim]
        run an out-of-core workload (S of data through a budget of B) on
        storage-backed memory, verify every byte and print the statistics.
        Defaults: --size 1G --budget 128M --page-size 64K --policy clock.
        --sim runs the same workload on the core's in-process model.
  run [--budget B] [--page-size P] [--policy NAME] [--dir D] [--min-size S]
      [--backend auto|signal|uffd] [--group NAME] [--stats[=json]] -- PROG [ARGS...]
        run an unmodified program with its heap on storage-backed memory
        (the LD_PRELOAD shim); the program's exit status is passed through;
        --stats prints faults, bytes in/out, peak resident and I/O time at
        exit (of every process of the program); --group shares the budget
        with every process run with the same group name (SBMA_GROUP)
  help  print this text

sizes accept K, M, G, T suffixes (powers of 1024); policies: clock, lru, fifo, all";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::Options::parse(&args[1..]).and_then(demo::run),
        Some("run") => {
            return match run::Options::parse(&args[1..]).and_then(run::run) {
                Ok(code) => code,
                Err(msg) => {
                    eprintln!("sbma: {msg}");
                    ExitCode::from(2)
                }
            };
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
