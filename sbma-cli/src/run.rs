//! `sbma run [options] -- PROG [ARGS...]`: runs an unmodified program under
//! the `LD_PRELOAD` shim (`libsbma_interpose.so`), configured through the
//! `SBMA_*` variables the shim reads. The program replaces `sbma` (exec),
//! so its exit status and signals reach the parent unchanged.

use sbma_core::units::parse_size;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const SHIM: &str = "libsbma_interpose.so";

/// Parsed `sbma run` arguments.
#[derive(Debug, Default)]
pub struct Options {
    env: Vec<(&'static str, String)>,
    program: Vec<String>,
}

impl Options {
    /// Parses the arguments after `run`.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        let mut i = 0;
        while i < args.len() {
            let a = args[i].as_str();
            if a == "--" {
                o.program = args[i + 1..].to_vec();
                break;
            }
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) => (f, Some(v.to_owned())),
                None => (a, None),
            };
            let mut value = |name: &str| -> Result<String, String> {
                if let Some(v) = inline.clone() {
                    return Ok(v);
                }
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match flag {
                "--budget" => o.size("SBMA_BUDGET", "--budget", value("--budget")?)?,
                "--page-size" => o.size("SBMA_PAGE_SIZE", "--page-size", value("--page-size")?)?,
                "--min-size" => o.size("SBMA_MIN_SIZE", "--min-size", value("--min-size")?)?,
                "--policy" => {
                    let p = value("--policy")?;
                    if !["clock", "lru", "fifo", "all"].contains(&p.as_str()) {
                        return Err(format!("--policy `{p}`: expected clock, lru, fifo or all"));
                    }
                    o.env.push(("SBMA_POLICY", p));
                }
                "--dir" => o.env.push(("SBMA_DIR", value("--dir")?)),
                "--group" => {
                    let g = value("--group")?;
                    if let Err(sbma_pager::Error::Config { reason, .. }) =
                        sbma_pager::Group::check_name(&g)
                    {
                        return Err(format!("--group `{g}`: {reason}"));
                    }
                    o.env.push(("SBMA_GROUP", g));
                }
                "--backend" => {
                    let b = value("--backend")?;
                    if !["auto", "signal", "uffd"].contains(&b.as_str()) {
                        return Err(format!("--backend `{b}`: expected auto, signal or uffd"));
                    }
                    o.env.push(("SBMA_BACKEND", b));
                }
                "--stats" => match inline.as_deref() {
                    None => o.env.push(("SBMA_STATS", "1".into())),
                    Some("json") => o.env.push(("SBMA_STATS", "json".into())),
                    Some(v) => {
                        return Err(format!("--stats=`{v}`: expected --stats or --stats=json"));
                    }
                },
                _ if a.starts_with('-') => return Err(format!("unknown option `{a}` for run")),
                _ => {
                    o.program = args[i..].to_vec();
                    break;
                }
            }
            i += 1;
        }
        if o.program.is_empty() {
            return Err("run needs a program: sbma run [options] -- PROG [ARGS...]".into());
        }
        Ok(o)
    }

    fn size(&mut self, var: &'static str, flag: &str, v: String) -> Result<(), String> {
        parse_size(&v).map_err(|e| format!("{flag} `{v}`: {e}"))?;
        self.env.push((var, v));
        Ok(())
    }
}

/// Where the shim is: `$SBMA_SHIM`, else the newest of the copies next to
/// this executable and in its build tree (`deps/`; `cargo test` refreshes
/// only that one).
fn find_shim() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SBMA_SHIM") {
        let p = PathBuf::from(p);
        return if p.exists() {
            Ok(p)
        } else {
            Err(format!("SBMA_SHIM={} does not exist", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("locating sbma: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    [dir.join(SHIM), dir.join("deps").join(SHIM), dir.join("../lib").join(SHIM)]
        .into_iter()
        .filter_map(|p| std::fs::metadata(&p).and_then(|m| m.modified()).ok().map(|t| (t, p)))
        .max()
        .map(|(_, p)| p)
        .ok_or_else(|| {
            format!(
                "cannot find {SHIM} next to {} (build it: cargo build -p sbma-interpose, or set SBMA_SHIM)",
                exe.display()
            )
        })
}

/// CPython keeps its small objects in 256 KiB arenas it maps itself
/// (`mmap`), not in `malloc`'d memory: under the shim they would stay
/// outside the budget (a script with a 313 MB peak ran at 304 MB resident
/// with a 62 MiB budget). `PYTHONMALLOC=malloc` sends every allocation
/// through `malloc`, so the budget bounds the whole heap. Set unless the
/// user set it; other programs ignore it.
const PYTHON_MALLOC: &str = "PYTHONMALLOC";

/// Open MPI's shared-memory transport reads large messages straight out of
/// the sending rank's memory (`process_vm_readv`, "CMA"). Under the signal
/// backend an evicted page there is `PROT_NONE` and the read fails with
/// `EFAULT` (Open MPI prints `Read -1, expected N, errno = 14` and falls
/// back to a slower protocol); with `none` the sender copies through shared
/// memory itself, faulting its pages in. Set unless the user set it.
const OMPI_SINGLE_COPY: &str = "OMPI_MCA_btl_vader_single_copy_mechanism";

impl Options {
    /// The value `var` will have in the program: set by an option, else
    /// inherited (empty counts as unset).
    fn setting(&self, var: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| *k == var)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(var).ok().filter(|v| !v.is_empty()))
    }
}

/// Whether the program will run on the signal backend: asked for, or
/// chosen by `auto` because no userfaultfd opens here.
fn signal_backend(o: &Options) -> bool {
    match o.setting("SBMA_BACKEND").unwrap_or_default().as_str() {
        "signal" => true,
        "uffd" => false,
        _ => sbma_pager::Backend::Uffd.available().is_err(),
    }
}

/// Runs the program in place of this process (`execvp(3)`), so its exit
/// status, signals and pid are the program's own: a parent such as
/// `mpirun` that signals or waits for "its" process reaches the program.
/// Returns only when the program cannot be started.
pub fn run(o: Options) -> Result<ExitCode, String> {
    use std::os::unix::process::CommandExt;
    let shim = find_shim()?;
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(old) if !old.is_empty() => format!("{}:{old}", shim.display()),
        _ => shim.display().to_string(),
    };
    let mut cmd = Command::new(&o.program[0]);
    cmd.args(&o.program[1..]).env("LD_PRELOAD", preload);
    for (k, v) in &o.env {
        cmd.env(k, v);
    }
    if std::env::var_os(PYTHON_MALLOC).is_none() {
        cmd.env(PYTHON_MALLOC, "malloc");
    }
    if signal_backend(&o) && std::env::var_os(OMPI_SINGLE_COPY).is_none() {
        cmd.env(OMPI_SINGLE_COPY, "none");
    }
    if let Some(g) = o.setting("SBMA_GROUP") {
        if sbma_pager::Group::check_name(&g).is_ok() {
            crate::janitor::start(&g);
        }
    }
    let e = cmd.exec();
    Err(format!("cannot run `{}`: {e}", o.program[0]))
}
