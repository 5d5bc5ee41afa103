//! Integration tests of leases: one owner among threads and processes, takeover after
//! SIGKILL (dead pid) or expiry (other host), renew, release, the pid-reuse guard, and
//! the async `LeaseKeeper`.
//!
//! Child processes are this test binary re-executed with `--exact child_entry` and
//! `VLLM_CORE_COORD_CHILD` naming their role; `child_entry` does nothing without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;
use std::time::{Duration, Instant};
use vllm_mcp_testkit::TestChild;
use vllm_store::Store;
use vllm_store::coordination::{
    HolderId, LeaseKeeper, held_by_me, holders, hostname, process_alive, process_start_time,
    release, renew, try_acquire,
};

const CHILD_ENV: &str = "VLLM_CORE_COORD_CHILD";
const DB_ENV: &str = "VLLM_CORE_COORD_DB";
const DUTY: &str = "metrics_sampler";
/// Contending threads in each process of `only_one_of_many_processes_and_threads_acquires`.
const THREADS_PER_PROCESS: usize = 4;

// ---------------------------------------------------------------------------
// Child processes

/// This binary re-executed as a child running `child_entry` in `role`.
fn spawn_child(role: &str, db: &Path) -> TestChild {
    TestChild::spawn(
        "child_entry",
        &[(CHILD_ENV, role.as_ref()), (DB_ENV, db.as_os_str())],
    )
}

/// Reads one line from the parent; `None` at EOF.
fn from_parent() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}

#[test]
fn child_entry() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let db = PathBuf::from(std::env::var(DB_ENV).expect("db path"));
    match role.as_str() {
        "contend" => child_contend(&db),
        "hold" => child_hold(&db),
        other => panic!("unknown child role {other}"),
    }
}

/// Several threads, each its own holder on its own connection, try the duty at once.
fn child_contend(db: &Path) {
    let stores: Vec<Store> = (0..THREADS_PER_PROCESS)
        .map(|_| Store::open(db).unwrap())
        .collect();
    println!("READY");
    from_parent();
    let wins = contend(&stores, Duration::from_secs(60));
    println!("WON {wins}");
    // Stay alive (a live holder) until the parent has counted every contender.
    while from_parent().is_some() {}
}

/// Takes the duty with a long TTL, says so, and holds it until killed.
fn child_hold(db: &Path) {
    let store = Store::open(db).unwrap();
    let me = HolderId::for_process();
    assert!(try_acquire(&store, DUTY, me, Duration::from_secs(300)).unwrap());
    println!("HELD {me}");
    while from_parent().is_some() {}
}

/// One thread per store, released together; returns how many acquired.
fn contend(stores: &[Store], ttl: Duration) -> usize {
    let barrier = Barrier::new(stores.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .iter()
            .map(|store| {
                let barrier = &barrier;
                s.spawn(move || {
                    let me = HolderId::new();
                    barrier.wait();
                    try_acquire(store, DUTY, &me, ttl).expect("try_acquire")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|won| *won)
            .count()
    })
}

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    (dir, store)
}

/// A pid that certainly belonged to a process that is gone (spawned, exited, reaped).
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().expect("spawn true");
    let pid = c.id();
    c.wait().unwrap();
    pid
}

/// Sleeps until `duty`'s lease has expired by the wall clock (a real expiry, not a stand-in).
fn wait_for_expiry(store: &Store, duty: &str) {
    let row = holders(store)
        .unwrap()
        .into_iter()
        .find(|l| l.duty == duty)
        .expect("lease row");
    let left = row.expires_at - vllm_store::time::unix_now();
    if left > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(left + 0.02));
    }
}

// ---------------------------------------------------------------------------
// One owner

#[test]
fn only_one_of_many_threads_acquires() {
    let (dir, store) = temp_store();
    let path = dir.path().join("s.db");
    let stores: Vec<Store> = (0..8).map(|_| Store::open(&path).unwrap()).collect();
    assert_eq!(contend(&stores, Duration::from_secs(60)), 1);

    let leases = holders(&store).unwrap();
    assert_eq!(leases.len(), 1);
    let l = &leases[0];
    assert_eq!(l.duty, DUTY);
    assert_eq!(l.pid, std::process::id());
    assert_eq!(l.host, hostname());
    assert!(!l.expired);
    assert!((l.expires_at - l.acquired_at - 60.0).abs() < 1e-6);
    // Nobody else is the holder.
    assert!(held_by_me(&store, &HolderId::new()).unwrap().is_empty());
}

#[test]
fn only_one_of_many_processes_and_threads_acquires() {
    let (dir, store) = temp_store();
    let path = dir.path().join("s.db");
    let mut children: Vec<TestChild> = (0..3).map(|_| spawn_child("contend", &path)).collect();
    for c in &mut children {
        c.expect_line("READY");
    }
    let started = Instant::now();
    for c in &mut children {
        c.send("go");
    }
    // The parent contends too, at the same moment.
    let local: Vec<Store> = (0..THREADS_PER_PROCESS)
        .map(|_| Store::open(&path).unwrap())
        .collect();
    let mut wins = contend(&local, Duration::from_secs(60));
    let mut winners = Vec::new();
    if wins == 1 {
        winners.push(std::process::id());
    }
    for c in &mut children {
        let n: usize = c.expect_line("WON").parse().unwrap();
        if n > 0 {
            winners.push(c.pid());
        }
        wins += n;
    }
    eprintln!(
        "{} contenders in 4 processes decided in {:?}",
        4 * THREADS_PER_PROCESS,
        started.elapsed()
    );
    assert_eq!(wins, 1, "exactly one contender holds the lease");
    let leases = holders(&store).unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(vec![leases[0].pid], winners);
    for c in children {
        c.wait_success();
    }
}

// ---------------------------------------------------------------------------
// Takeover

#[test]
fn a_sigkilled_holder_is_replaced_at_once() {
    let (dir, store) = temp_store();
    let mut child = spawn_child("hold", &dir.path().join("s.db"));
    let child_holder = child.expect_line("HELD");
    let me = HolderId::new();
    assert!(
        !try_acquire(&store, DUTY, &me, Duration::from_secs(60)).unwrap(),
        "the live child holds it"
    );
    let lease = &holders(&store).unwrap()[0];
    assert_eq!(
        (lease.holder.as_str(), lease.pid),
        (child_holder.as_str(), child.pid())
    );
    assert!(lease.expires_at - vllm_store::time::unix_now() > 200.0);

    let killed_at = Instant::now();
    child.child.kill().unwrap();
    child.child.wait().unwrap();
    // Its 300 s lease has not expired, but its process is gone: taken at once.
    assert!(try_acquire(&store, DUTY, &me, Duration::from_secs(60)).unwrap());
    eprintln!("lease taken over {:?} after SIGKILL", killed_at.elapsed());
    assert_eq!(held_by_me(&store, &me).unwrap(), vec![DUTY.to_owned()]);
}

#[test]
fn a_killed_unreaped_holder_counts_as_dead() {
    let (dir, store) = temp_store();
    let mut child = spawn_child("hold", &dir.path().join("s.db"));
    child.expect_line("HELD");
    let pid = child.pid();
    child.child.kill().unwrap();
    // Not reaped yet: a zombie, which `kill(pid, 0)` still reports as existing.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        if stat[stat.rfind(')').unwrap() + 1..]
            .trim_start()
            .starts_with('Z')
        {
            break;
        }
        assert!(Instant::now() < deadline, "child never became a zombie");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        unsafe { libc::kill(pid as libc::pid_t, 0) },
        0,
        "a zombie still exists"
    );
    assert!(!process_alive(pid, None));
    assert!(try_acquire(&store, DUTY, &HolderId::new(), Duration::from_secs(60)).unwrap());
    child.child.wait().unwrap();
}

#[test]
fn a_holder_on_another_host_is_replaced_only_after_expiry() {
    let (_dir, store) = temp_store();
    // Its pid is dead here, but it lives on another host: only expiry counts.
    let remote = HolderId::from_parts(
        "remote:1:feed",
        dead_pid(),
        "another-host.invalid",
        None,
        None,
    );
    assert!(try_acquire(&store, DUTY, &remote, Duration::from_millis(600)).unwrap());
    let me = HolderId::new();
    assert!(!try_acquire(&store, DUTY, &me, Duration::from_secs(60)).unwrap());
    assert!(!holders(&store).unwrap()[0].expired);

    wait_for_expiry(&store, DUTY);
    assert!(holders(&store).unwrap()[0].expired);
    assert!(
        held_by_me(&store, &remote).unwrap().is_empty(),
        "an expired lease is held by no one"
    );
    assert!(try_acquire(&store, DUTY, &me, Duration::from_secs(60)).unwrap());
    let lease = &holders(&store).unwrap()[0];
    assert_eq!(lease.holder, me.as_str());
    assert_eq!(lease.host, hostname());
    // The remote holder lost it and cannot renew it.
    assert!(!renew(&store, DUTY, &remote, Duration::from_secs(60)).unwrap());
}

#[test]
fn a_dead_pid_on_this_host_is_replaced_before_expiry() {
    let (_dir, store) = temp_store();
    let gone = HolderId::from_parts("gone:1:dead", dead_pid(), hostname(), None, None);
    assert!(try_acquire(&store, DUTY, &gone, Duration::from_secs(600)).unwrap());
    assert!(try_acquire(&store, DUTY, &HolderId::new(), Duration::from_secs(60)).unwrap());
}

#[test]
fn renew_keeps_the_lease() {
    let (_dir, store) = temp_store();
    let a = HolderId::new();
    let b = HolderId::new();
    let ttl = Duration::from_millis(300);
    assert!(try_acquire(&store, DUTY, &a, ttl).unwrap());
    let acquired_at = holders(&store).unwrap()[0].acquired_at;

    // Renewed for several TTLs, B never gets it.
    let until = Instant::now() + ttl * 4;
    while Instant::now() < until {
        assert!(renew(&store, DUTY, &a, ttl).unwrap());
        assert!(!try_acquire(&store, DUTY, &b, ttl).unwrap());
        std::thread::sleep(ttl / 4);
    }
    // try_acquire by the holder also renews, keeping acquired_at.
    assert!(try_acquire(&store, DUTY, &a, ttl).unwrap());
    let lease = &holders(&store).unwrap()[0];
    assert_eq!(lease.acquired_at, acquired_at);
    assert!(lease.renewed_at > acquired_at);
    assert!(
        !renew(&store, DUTY, &b, ttl).unwrap(),
        "only the holder renews"
    );

    // Unrenewed, it expires and B takes it; A's renew then fails.
    wait_for_expiry(&store, DUTY);
    assert!(try_acquire(&store, DUTY, &b, ttl).unwrap());
    assert!(!renew(&store, DUTY, &a, ttl).unwrap());
    assert_eq!(holders(&store).unwrap()[0].holder, b.as_str());
}

#[test]
fn release_frees_the_lease() {
    let (_dir, store) = temp_store();
    let a = HolderId::new();
    let b = HolderId::new();
    assert!(try_acquire(&store, DUTY, &a, Duration::from_secs(600)).unwrap());
    assert!(try_acquire(&store, "idle_reaper", &a, Duration::from_secs(600)).unwrap());
    assert_eq!(
        held_by_me(&store, &a).unwrap(),
        vec!["idle_reaper".to_owned(), DUTY.to_owned()]
    );

    assert!(!release(&store, DUTY, &b).unwrap(), "B does not hold it");
    assert!(!try_acquire(&store, DUTY, &b, Duration::from_secs(600)).unwrap());
    assert!(release(&store, DUTY, &a).unwrap());
    assert!(!release(&store, DUTY, &a).unwrap(), "already released");
    assert!(try_acquire(&store, DUTY, &b, Duration::from_secs(600)).unwrap());
    assert_eq!(
        held_by_me(&store, &a).unwrap(),
        vec!["idle_reaper".to_owned()]
    );
    assert_eq!(held_by_me(&store, &b).unwrap(), vec![DUTY.to_owned()]);
    assert_eq!(holders(&store).unwrap().len(), 2);
}

#[test]
fn a_zero_ttl_is_refused() {
    let (_dir, store) = temp_store();
    let err = try_acquire(&store, DUTY, &HolderId::new(), Duration::ZERO).unwrap_err();
    assert_eq!(err.code(), "INVALID_ARGUMENT");
}

// ---------------------------------------------------------------------------
// Pid reuse

#[test]
fn a_recycled_pid_does_not_keep_a_dead_holders_lease() {
    let (_dir, store) = temp_store();
    let pid = std::process::id();
    let start = process_start_time(pid).expect("/proc/self/stat");
    let me = HolderId::new();
    assert_eq!(me.start_time(), Some(start));

    // A holder that had our pid but started at another time: the pid was reused.
    let recycled = HolderId::from_parts(
        "old:1:a",
        pid,
        hostname(),
        Some(start + 12_345),
        me.boot_id().map(Into::into),
    );
    assert!(try_acquire(&store, DUTY, &recycled, Duration::from_secs(600)).unwrap());
    assert!(
        try_acquire(&store, DUTY, &me, Duration::from_secs(60)).unwrap(),
        "recycled pid taken over"
    );

    // The same pid with the right start time is alive: not taken.
    let duty2 = "alert_webhook";
    let same = HolderId::from_parts(
        "same:1:b",
        pid,
        hostname(),
        Some(start),
        me.boot_id().map(Into::into),
    );
    assert!(try_acquire(&store, duty2, &same, Duration::from_secs(600)).unwrap());
    assert!(!try_acquire(&store, duty2, &me, Duration::from_secs(60)).unwrap());

    // A holder from before a reboot (another boot id) is gone whatever its pid.
    if me.boot_id().is_some() {
        let duty3 = "autostart";
        let before_reboot = HolderId::from_parts(
            "old:1:c",
            pid,
            hostname(),
            Some(start),
            Some("another-boot".into()),
        );
        assert!(try_acquire(&store, duty3, &before_reboot, Duration::from_secs(600)).unwrap());
        assert!(try_acquire(&store, duty3, &me, Duration::from_secs(60)).unwrap());
    }
}

#[test]
fn process_alive_checks_pid_and_start_time() {
    let pid = std::process::id();
    let start = process_start_time(pid).unwrap();
    assert!(process_alive(pid, None));
    assert!(process_alive(pid, Some(start)));
    assert!(!process_alive(pid, Some(start + 1)));
    assert!(!process_alive(dead_pid(), None));
    assert!(!process_alive(0, None));
    assert!(
        process_alive(1, None),
        "init exists, though we may not signal it"
    );
}

// ---------------------------------------------------------------------------
// LeaseKeeper

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keeper_holds_renews_and_hands_over() {
    let (_dir, store) = temp_store();
    let ttl = Duration::from_millis(300);
    let h1 = HolderId::new();
    let k1 = LeaseKeeper::spawn(store.clone(), DUTY, h1.clone(), ttl);
    let mut held1 = k1.subscribe();
    tokio::time::timeout(Duration::from_secs(5), held1.wait_for(|h| *h))
        .await
        .expect("k1 acquires")
        .unwrap();

    // k2 waits while k1 renews across several TTLs.
    let k2 = LeaseKeeper::spawn(store.clone(), DUTY, HolderId::new(), ttl);
    let mut held2 = k2.subscribe();
    assert!(
        tokio::time::timeout(ttl * 4, held2.wait_for(|h| *h))
            .await
            .is_err(),
        "k2 must not get a lease k1 keeps renewing"
    );
    assert!(k1.is_held());
    let lease = holders(&store).unwrap().remove(0);
    assert!(!lease.expired);
    assert!(lease.renewed_at > lease.acquired_at, "k1 renewed");

    // Shutdown releases at once; k2 takes it on its next tick.
    let released_at = Instant::now();
    k1.shutdown().await;
    assert!(!*held1.borrow());
    assert!(
        holders(&store)
            .unwrap()
            .iter()
            .all(|l| l.holder != h1.as_str()),
        "shutdown deleted k1's lease row (it did not merely expire)"
    );
    tokio::time::timeout(Duration::from_secs(5), held2.wait_for(|h| *h))
        .await
        .expect("k2 takes over")
        .unwrap();
    eprintln!(
        "LeaseKeeper handover took {:?} (ttl {ttl:?})",
        released_at.elapsed()
    );

    // Dropping the keeper releases too.
    drop(k2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !holders(&store).unwrap().is_empty() {
        assert!(Instant::now() < deadline, "dropped keeper never released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keeper_reports_a_lost_lease() {
    let (_dir, store) = temp_store();
    let k = LeaseKeeper::spawn(
        store.clone(),
        DUTY,
        HolderId::new(),
        Duration::from_millis(300),
    );
    let mut held = k.subscribe();
    tokio::time::timeout(Duration::from_secs(5), held.wait_for(|h| *h))
        .await
        .expect("acquires")
        .unwrap();
    // Another live holder takes the row over (as after this process stalled past expiry).
    let thief = HolderId::new();
    store
        .write(|tx| -> vllm_store::Result<_> {
            tx.execute(
                "UPDATE leases SET holder = ?1, expires_at = ?2 WHERE duty = ?3",
                rusqlite::params![thief.as_str(), vllm_store::time::unix_now() + 600.0, DUTY],
            )?;
            Ok(())
        })
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), held.wait_for(|h| !*h))
        .await
        .expect("the keeper notices")
        .unwrap();
    k.shutdown().await;
    // Shutting down did not release the thief's lease.
    assert_eq!(holders(&store).unwrap()[0].holder, thief.as_str());
}
