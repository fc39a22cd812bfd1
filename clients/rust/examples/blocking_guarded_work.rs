//! The blocking API: threads take turns on one lock, check the lost signal between steps of
//! their work, and pass the fence along. The server comes from `REDIS_URL` (default
//! `redis://127.0.0.1:6379/`).
//!
//! `cargo run --release -p fencelock --example blocking_guarded_work`

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use fencelock::blocking::Locks;
use fencelock::LockOptions;

fn work(locks: &Locks, highest: &AtomicI64, id: usize) -> Result<(), String> {
    let opts = LockOptions::new()
        .ttl(Duration::from_millis(500))
        .wait(Duration::from_secs(20));
    let held = locks
        .lock("blocking-work", opts)
        .map_err(|e| e.to_string())?;
    let lost = held.lost_signal();
    for step in 0..3 {
        // Sleep, but wake at once if the lock is lost.
        if lost.wait_timeout(Duration::from_millis(200)) {
            return Err(format!("worker {id}: lost ({:?}), stopped", lost.reason()));
        }
        let before = highest.fetch_max(held.fence(), Ordering::SeqCst);
        if before > held.fence() {
            return Err(format!("worker {id}: stale fence {}", held.fence()));
        }
        println!("worker {id} step {step} with fence {}", held.fence());
    }
    match held.release() {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("worker {id}: the lock was gone at release")),
        Err(e) => Err(e.to_string()),
    }
}

fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let locks = match redis::Client::open(url) {
        Ok(client) => Locks::new(client),
        Err(e) => {
            eprintln!("bad REDIS_URL: {e}");
            std::process::exit(2);
        }
    };
    let highest = Arc::new(AtomicI64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|id| {
            let (locks, highest) = (locks.clone(), highest.clone());
            thread::spawn(move || work(&locks, &highest, id))
        })
        .collect();
    let mut failed = false;
    for t in threads {
        if let Err(e) = t.join().unwrap_or_else(|_| Err("a worker panicked".into())) {
            eprintln!("{e}");
            failed = true;
        }
    }
    std::process::exit(i32::from(failed));
}
