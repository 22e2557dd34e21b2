//! A group budget shared by real processes (issue 7's foundation): race-free
//! creation by concurrent joiners, one account for all, 0600 permissions,
//! a SIGKILLed member's charge reclaimed, nothing left in /dev/shm.
//!
//! The parent re-executes this binary as the member processes
//! (`SBMA_TEST_MEMBER=<group>:<bytes>`): each joins, charges, reports
//! "ready", and holds its charge until its standard input closes.

use sbma_pager::sbma_core::Budget;
use sbma_pager::{Error, Group, segment_name};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

const MIB: usize = 1 << 20;
const LIMIT: usize = 64 * MIB;

fn main() {
    if let Ok(spec) = std::env::var("SBMA_TEST_MEMBER") {
        member(&spec);
        return;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: [(&str, fn()); 4] = [
        (
            "concurrent_joiners_share_one_budget",
            concurrent_joiners_share_one_budget,
        ),
        (
            "a_killed_member_gives_its_charge_back",
            a_killed_member_gives_its_charge_back,
        ),
        (
            "bad_names_and_budgets_are_clear_errors",
            bad_names_and_budgets_are_clear_errors,
        ),
        (
            "the_last_member_removes_the_segment",
            the_last_member_removes_the_segment,
        ),
    ];
    let mut ran = 0;
    for (name, f) in tests {
        if filter.is_empty() || filter.iter().any(|x| name.contains(x.as_str())) {
            f();
            println!("test {name} ... ok");
            ran += 1;
        }
    }
    println!("\n{ran} passed, 0 failed");
}

/// A member process: join, charge in 1 MiB steps, report, hold until stdin
/// closes, then check its own account and leave.
fn member(spec: &str) {
    let (name, bytes) = spec.split_once(':').unwrap();
    let bytes: usize = bytes.parse().unwrap();
    let g = Group::join(name, LIMIT).unwrap();
    for _ in 0..bytes / MIB {
        g.try_charge(MIB).unwrap();
    }
    println!("ready {}", g.charged());
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    assert_eq!(g.charged(), bytes);
    g.uncharge(bytes);
}

fn unique(tag: &str) -> String {
    format!("test-{tag}-{}", std::process::id())
}

fn spawn_member(group: &str, bytes: usize) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env("SBMA_TEST_MEMBER", format!("{group}:{bytes}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_ready(c: &mut Child) -> usize {
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("member said {line:?}"))
        .parse()
        .unwrap()
}

fn shm_path(group: &str) -> std::path::PathBuf {
    std::path::Path::new("/dev/shm").join(segment_name(group).trim_start_matches('/'))
}

fn concurrent_joiners_share_one_budget() {
    let group = unique("share");
    // Eight processes start at once: one creates the segment, the others
    // must wait for it to be initialised, never see it half made.
    let mut kids: Vec<Child> = (0..8).map(|_| spawn_member(&group, 6 * MIB)).collect();
    for k in &mut kids {
        assert_eq!(wait_ready(k), 6 * MIB);
    }
    let me = Group::join(&group, LIMIT).unwrap();
    assert_eq!(me.limit(), LIMIT);
    assert_eq!(
        me.resident(),
        48 * MIB,
        "every member's charge is in the one account"
    );
    let members = me.members();
    assert_eq!(members.len(), 9);
    assert!(
        members
            .iter()
            .filter(|m| m.pid != std::process::id() as i32)
            .all(|m| m.charged == 6 * MIB as u64)
    );
    // 16 MiB are left: 20 do not fit, and the shortfall says so.
    let short = me.try_charge(20 * MIB).unwrap_err();
    assert_eq!(short.available, 16 * MIB);
    me.try_charge(16 * MIB).unwrap();
    assert_eq!(me.peak(), LIMIT);
    me.uncharge(16 * MIB);
    // Permissions: the owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(shm_path(&group))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "segment mode {mode:o}");
    for mut k in kids {
        drop(k.stdin.take());
        assert!(k.wait().unwrap().success());
    }
    assert_eq!(
        me.resident(),
        0,
        "members gave their charge back on leaving"
    );
    assert_eq!(me.members().len(), 1);
    drop(me);
    assert!(!shm_path(&group).exists(), "segment left behind");
}

fn a_killed_member_gives_its_charge_back() {
    let group = unique("kill");
    let mut victim = spawn_member(&group, 40 * MIB);
    assert_eq!(wait_ready(&mut victim), 40 * MIB);
    let mut other = spawn_member(&group, 8 * MIB);
    assert_eq!(wait_ready(&mut other), 8 * MIB);
    let me = Group::join(&group, LIMIT).unwrap();
    assert_eq!(me.resident(), 48 * MIB);
    assert!(me.try_charge(32 * MIB).is_err());
    victim.kill().unwrap(); // SIGKILL: no destructor runs
    victim.wait().unwrap();
    // The next admission that does not fit reaps the dead member.
    me.try_charge(32 * MIB).unwrap();
    assert_eq!(me.resident(), 40 * MIB);
    let members = me.members();
    assert_eq!(members.len(), 2, "{members:?}");
    me.uncharge(32 * MIB);
    drop(other.stdin.take());
    assert!(other.wait().unwrap().success());
    assert_eq!(me.resident(), 0);
    drop(me);
    assert!(!shm_path(&group).exists(), "segment left behind");
}

fn bad_names_and_budgets_are_clear_errors() {
    for bad in ["", "a/b", "spaces here", &"x".repeat(201)] {
        let e = Group::join(bad, LIMIT).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Config {
                    name: "SBMA_GROUP",
                    ..
                }
            ),
            "{bad:?}: {e:?}"
        );
    }
    let group = unique("budget");
    let first = Group::join(&group, LIMIT).unwrap();
    let e = Group::join(&group, LIMIT / 2).unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "the group exists with a budget of {LIMIT} bytes, not {}",
            LIMIT / 2
        )),
        "{e}"
    );
    drop(first);
    assert!(!shm_path(&group).exists());
}

fn the_last_member_removes_the_segment() {
    // Members come and go; the segment lives exactly as long as somebody
    // is in it, and a new member after the last one leaves starts afresh.
    let group = unique("last");
    for round in 0..20 {
        let a = Group::join(&group, LIMIT).unwrap();
        let b = Group::join(&group, LIMIT).unwrap();
        a.try_charge(MIB * (round + 1)).unwrap();
        assert_eq!(b.resident(), MIB * (round + 1));
        drop(a); // its charge goes with it
        assert_eq!(b.resident(), 0);
        assert!(shm_path(&group).exists());
        drop(b);
        assert!(!shm_path(&group).exists(), "round {round}");
    }
}
