//! The `sbma` binary as a user runs it.

use std::process::Command;

fn sbma(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sbma"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_verifies_every_byte_out_of_core() {
    for policy in ["clock", "lru", "fifo", "all"] {
        for sim in [false, true] {
            let mut args = vec![
                "demo",
                "--size",
                "8M",
                "--budget",
                "2M",
                "--page-size",
                "16K",
                "--policy",
                policy,
            ];
            if sim {
                args.push("--sim");
            }
            let (code, out, err) = sbma(&args);
            assert_eq!(code, 0, "{policy} sim={sim}: {out}{err}");
            assert!(out.contains("through a 2 MiB budget (4.0x)"), "{out}");
            let backend = if sim {
                "backend: sim"
            } else {
                "backend: signal"
            };
            assert!(out.contains(backend), "{out}");
            assert!(out.contains("(0 mismatches)"), "{out}");
            // The background writer keeps some of the budget free, so the
            // peak may stay a little below it; it must never exceed it.
            let held: f64 = out
                .split("peak memory held ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no peak in:\n{out}"));
            assert!(
                held > 1.0 && held <= 2.0,
                "{policy}: peak memory held {held} MiB for a 2 MiB budget\n{out}"
            );
        }
    }
}

#[test]
fn bad_input_is_a_one_line_error() {
    for (args, needle) in [
        (&["demo", "--budget", "1X"][..], "--budget 1X: unknown unit"),
        (
            &["demo", "--policy", "lfu"][..],
            "--policy lfu: unknown eviction policy",
        ),
        (
            &["demo", "--page-size", "3K"][..],
            "--page-size: page size is not a power of two",
        ),
        (
            &["demo", "--budget", "1K"][..],
            "budget of 1024 bytes is too small",
        ),
        (&["demo", "--sim", "--budget", "1K"][..], "cannot hold one"),
        (&["demo", "--size"][..], "--size needs a value"),
        (
            &["demo", "--frobnicate", "1"][..],
            "unknown option --frobnicate",
        ),
        (&["run", "--", "true"][..], "not built yet"),
        (&["bogus"][..], "unknown command `bogus`"),
        (&[][..], "no command given"),
    ] {
        let (code, _, err) = sbma(args);
        assert_eq!(code, 2, "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("sbma: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    let (code, out, _) = sbma(&["help"]);
    assert_eq!(code, 0);
    assert!(out.contains("usage: sbma"));
}
