//! A group budget shared by real processes (issue 7's foundation): race-free
//! creation by concurrent joiners, one account for all, 0600 permissions,
//! a SIGKILLed member's charge reclaimed, nothing left in /dev/shm.
//!
//! The parent re-executes this binary as the member processes
//! (`SBMA_TEST_MEMBER=<group>:<bytes>`): each joins, charges, reports
//! "ready", and holds its charge until its standard input closes.

mod common;

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
    if let Ok(spec) = std::env::var("SBMA_TEST_WORKER") {
        worker(&spec);
        return;
    }
    if let Ok(spec) = std::env::var("SBMA_TEST_HOLDER") {
        holder(&spec);
        return;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let tests: [(&str, fn()); 8] = [
        (
            "a_group_whose_members_all_died_is_collected",
            a_group_whose_members_all_died_is_collected,
        ),
        (
            "idle_holders_give_memory_back_blocked_ones_first",
            idle_holders_give_memory_back_blocked_ones_first,
        ),
        (
            "four_pagers_twice_over_the_group_budget",
            four_pagers_twice_over_the_group_budget,
        ),
        (
            "a_killed_pager_leaves_the_budget_to_the_others",
            a_killed_pager_leaves_the_budget_to_the_others,
        ),
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

// ---------------------------------------------------------------------
// Pagers in a group: each process's working set is half the group budget.
// ---------------------------------------------------------------------

const GROUP_BUDGET: usize = 16 * MIB;
const WORKING_SET: usize = GROUP_BUDGET / 2;
const ROUNDS: u64 = 8;
const OPS_PER_ROUND: usize = 6_000;

fn word(i: usize, version: u64) -> u64 {
    ((i as u64) << 20) | version
}

/// A worker process: a region of half the group budget, filled, then
/// random read-modify-writes in rounds, each word checked against its
/// expected version; reports each round, then the mismatches.
fn worker(group: &str) {
    let pager = sbma_pager::Pager::builder()
        .budget(GROUP_BUDGET)
        .page_size(16 << 10)
        .group(group)
        .build()
        .unwrap();
    let region = pager.alloc(WORKING_SET).unwrap();
    let p = region.as_mut_ptr().cast::<u64>();
    let words = WORKING_SET / 8;
    let mut versions = vec![0u8; words];
    for i in 0..words {
        // SAFETY: inside the region.
        unsafe { p.add(i).write_volatile(word(i, 0)) };
    }
    let mut bad = 0u64;
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(std::process::id());
    for round in 0..ROUNDS {
        for _ in 0..OPS_PER_ROUND {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % words as u64) as usize;
            // SAFETY: inside the region.
            let v = unsafe { p.add(i).read_volatile() };
            bad += u64::from(v != word(i, u64::from(versions[i])));
            versions[i] = versions[i].wrapping_add(1);
            // SAFETY: as above.
            unsafe { p.add(i).write_volatile(word(i, u64::from(versions[i]))) };
        }
        println!("round {round}");
        std::io::stdout().flush().unwrap();
    }
    for (i, &v) in versions.iter().enumerate() {
        // SAFETY: inside the region.
        bad += u64::from(unsafe { p.add(i).read_volatile() } != word(i, u64::from(v)));
    }
    let s = pager.stats();
    eprintln!("worker {}: {s:?}", std::process::id());
    println!("done {bad} {}", s.pages_evicted);
}

fn spawn_worker(group: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env("SBMA_TEST_WORKER", group)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads a worker's report to the end: the rounds it finished, and its
/// final "done <mismatches> <evicted>" if it got there.
fn report(c: &mut Child) -> (u64, Option<(u64, u64)>) {
    let mut out = String::new();
    c.stdout.as_mut().unwrap().read_to_string(&mut out).unwrap();
    let rounds = out.lines().filter(|l| l.starts_with("round ")).count() as u64;
    let done = out.lines().find_map(|l| {
        let mut f = l.strip_prefix("done ")?.split(' ');
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    });
    (rounds, done)
}

/// Samples the group's charge from an observer member until `stop`.
fn sampler(
    group: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(usize, usize)> {
    std::thread::spawn(move || {
        // The observer charges nothing; it only reads the account.
        let me = Group::join(&group, GROUP_BUDGET).unwrap();
        let (mut samples, mut max) = (0, 0);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let r = me.resident();
            assert!(r <= GROUP_BUDGET, "group charge {r} over the budget");
            max = max.max(r);
            samples += 1;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        (samples, max)
    })
}

fn four_pagers_twice_over_the_group_budget() {
    let group = unique("pagers");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sample = sampler(group.clone(), stop.clone());
    let mut kids: Vec<Child> = (0..4).map(|_| spawn_worker(&group)).collect();
    let (mut asked, mut given, mut total_evicted) = (0u64, 0u64, 0u64);
    for (k, c) in kids.iter_mut().enumerate() {
        let (rounds, done) = report(c);
        let status = c.wait().unwrap();
        let mut err = String::new();
        c.stderr.as_mut().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "worker {k}: {status:?}\n{err}");
        assert_eq!(rounds, ROUNDS, "worker {k} starved\n{err}");
        let (bad, evicted) = done.unwrap();
        assert_eq!(bad, 0, "worker {k}: {bad} words wrong\n{err}");
        total_evicted += evicted;
        asked += stat(&err, "peer_requests");
        given += stat(&err, "pages_given_to_peers");
    }
    println!(
        "  pages evicted {total_evicted}, peer requests {asked}, pages given to peers {given}"
    );
    // A member may finish inside its share, but the group as a whole is
    // twice over: it must have paged. (With background writers on, each
    // member's writer keeps room in the shared budget by evicting its own
    // pages, so peers rarely need to be asked: see
    // `idle_holders_give_memory_back_blocked_ones_first` for the doorbell.)
    assert!(total_evicted > 0, "the group never paged");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (samples, max) = sample.join().unwrap();
    println!(
        "  4 x {} MiB through a {} MiB group: {samples} samples, max charge {} KiB",
        WORKING_SET / MIB,
        GROUP_BUDGET / MIB,
        max >> 10
    );
    assert!(
        max > GROUP_BUDGET / 2,
        "the group budget was never used: {max}"
    );
    assert!(!shm_path(&group).exists(), "segment left behind");
}

fn a_killed_pager_leaves_the_budget_to_the_others() {
    let group = unique("killpager");
    let observer = Group::join(&group, GROUP_BUDGET).unwrap();
    let mut victim = spawn_worker(&group);
    let mut others: Vec<Child> = (0..3).map(|_| spawn_worker(&group)).collect();
    // Let the victim take its share, then kill it mid-run.
    let mut line = String::new();
    BufReader::new(victim.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "round 0");
    victim.kill().unwrap();
    victim.wait().unwrap();
    for (k, c) in others.iter_mut().enumerate() {
        let (rounds, done) = report(c);
        let status = c.wait().unwrap();
        let mut err = String::new();
        c.stderr.as_mut().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "worker {k}: {status:?}\n{err}");
        assert_eq!(rounds, ROUNDS, "worker {k}\n{err}");
        assert_eq!(done.unwrap().0, 0, "worker {k}: words wrong\n{err}");
    }
    // The dead member's charge is reclaimed: the whole budget is free again.
    observer.reap();
    assert_eq!(observer.resident(), 0);
    assert_eq!(observer.members().len(), 1);
    observer.try_charge(GROUP_BUDGET).unwrap();
    observer.uncharge(GROUP_BUDGET);
    drop(observer);
    assert!(!shm_path(&group).exists(), "segment left behind");
}

/// A counter from a worker's `Stats` debug line.
fn stat(err: &str, field: &str) -> u64 {
    err.split(&format!("{field}: "))
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------
// The doorbell: members holding memory give it back when asked.
// ---------------------------------------------------------------------

fn quiet_pager(group: &str) -> sbma_pager::Pager {
    // No background writer: memory moves between members only on request.
    sbma_pager::Pager::builder()
        .budget(GROUP_BUDGET)
        .page_size(16 << 10)
        .background_io(false)
        .group(group)
        .build()
        .unwrap()
}

fn fill_words(p: *mut u64, words: usize, seed: u64) {
    for i in 0..words {
        // SAFETY: callers pass a live region of `words` words.
        unsafe { p.add(i).write_volatile(word(i, seed)) };
    }
}

fn bad_words(p: *const u64, words: usize, seed: u64) -> usize {
    // SAFETY: as in `fill_words`.
    (0..words)
        .filter(|&i| unsafe { p.add(i).read_volatile() } != word(i, seed))
        .count()
}

/// A holder process: fills `bytes`, optionally declares itself blocked,
/// reports "ready", waits for stdin to close, checks its data and reports
/// "given <pages given to peers> bad <words wrong>".
fn holder(spec: &str) {
    let mut f = spec.split(':');
    let (group, bytes, blocked) = (
        f.next().unwrap(),
        f.next().unwrap().parse::<usize>().unwrap(),
        f.next() == Some("blocked"),
    );
    let pager = quiet_pager(group);
    let region = pager.alloc(bytes).unwrap();
    let p = region.as_mut_ptr().cast::<u64>();
    let seed = u64::from(std::process::id());
    fill_words(p, bytes / 8, seed);
    let guard = blocked.then(|| pager.blocked());
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(guard);
    let bad = bad_words(p, bytes / 8, seed);
    println!("given {} bad {bad}", pager.stats().pages_given_to_peers);
}

fn spawn_holder(group: &str, bytes: usize, blocked: bool) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .env(
            "SBMA_TEST_HOLDER",
            format!(
                "{group}:{bytes}:{}",
                if blocked { "blocked" } else { "running" }
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    c
}

fn holder_report(mut c: Child) -> (u64, u64) {
    drop(c.stdin.take());
    let mut out = String::new();
    c.stdout.as_mut().unwrap().read_to_string(&mut out).unwrap();
    assert!(c.wait().unwrap().success(), "{out}");
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!((f[0], f[2]), ("given", "bad"), "{out}");
    (f[1].parse().unwrap(), f[3].parse().unwrap())
}

fn idle_holders_give_memory_back_blocked_ones_first() {
    let group = unique("doorbell");
    // Two idle holders take 12 of the 16 MiB: one blocked, one running.
    let blocked = spawn_holder(&group, 6 * MIB, true);
    let running = spawn_holder(&group, 6 * MIB, false);
    // This process needs 8 MiB: below its fair share (16/3 MiB) it asks
    // for memory back rather than cycling through its own 4 MiB.
    let pager = quiet_pager(&group);
    let region = pager.alloc(8 * MIB).unwrap();
    let p = region.as_mut_ptr().cast::<u64>();
    fill_words(p, MIB, 7);
    assert_eq!(bad_words(p, MIB, 7), 0);
    let s = pager.stats();
    assert!(s.peer_requests > 0, "{s:?}");
    assert!(
        s.resident as usize >= 5 * MIB,
        "this member reached about its fair share: {s:?}"
    );
    assert!(s.group_resident as usize <= GROUP_BUDGET, "{s:?}");
    // The running holder reports first: its data is all resident, it asks
    // nobody, and what it gave so far went to this process. (The blocked
    // one, once it runs again to check its data, is below its share and
    // may ask the others for memory back in turn.)
    let (given_running, bad_running) = holder_report(running);
    let (given_blocked, bad_blocked) = holder_report(blocked);
    println!(
        "  pages given: blocked member {given_blocked}, running member {given_running}; requests {}",
        s.peer_requests
    );
    assert!(given_blocked > 0, "the blocked member gave nothing");
    assert_eq!(
        given_running, 0,
        "the running member gave before the blocked one ran out"
    );
    assert_eq!(
        (bad_blocked, bad_running),
        (0, 0),
        "holders' data after giving back"
    );
    drop(region);
    drop(pager);
    assert!(!shm_path(&group).exists(), "segment left behind");
}

fn a_group_whose_members_all_died_is_collected() {
    // The only member is killed: nobody unlinks the segment...
    let dead = unique("alldead");
    let mut m = spawn_member(&dead, 4 * MIB);
    assert_eq!(wait_ready(&mut m), 4 * MIB);
    m.kill().unwrap();
    m.wait().unwrap();
    assert!(shm_path(&dead).exists());
    // ...until any group starts: it collects the abandoned one.
    let other = unique("collector");
    let g = Group::join(&other, LIMIT).unwrap();
    assert!(!shm_path(&dead).exists(), "abandoned segment not collected");
    drop(g);
    assert!(!shm_path(&other).exists());
}
