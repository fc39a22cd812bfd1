//! Workers that take turns on one lock (async API): each waits for the lock, keeps it with
//! the watchdog, passes its fence to a fenced resource, and stops its work if the lock is
//! lost. The server comes from `REDIS_URL` (default `redis://127.0.0.1:6379/`).
//!
//! `cargo run --release -p fencelock --example guarded_work`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fencelock::{LockOptions, Locks};

/// A resource that refuses writes carrying a fence lower than the highest it has seen: a
/// writer whose lock expired (and was granted to someone else) cannot overwrite newer data.
#[derive(Default)]
struct FencedStore {
    highest: Mutex<i64>,
}

impl FencedStore {
    fn write(&self, fence: i64, worker: usize, step: usize) -> Result<(), String> {
        let mut highest = self.highest.lock().map_err(|e| e.to_string())?;
        if fence < *highest {
            return Err(format!("worker {worker}: stale fence {fence} < {highest}"));
        }
        *highest = fence;
        println!("worker {worker} step {step} with fence {fence}");
        Ok(())
    }
}

async fn worker(locks: Locks, store: Arc<FencedStore>, id: usize) -> Result<usize, String> {
    let opts = LockOptions::new()
        .ttl(Duration::from_millis(500)) // renewed every ~167 ms by the watchdog
        .wait(Duration::from_secs(20));
    let held = locks
        .lock("guarded-work", opts)
        .await
        .map_err(|e| e.to_string())?;
    let work = async {
        for step in 0..3 {
            // Longer than the ttl in all: the watchdog keeps the lock.
            tokio::time::sleep(Duration::from_millis(250)).await;
            store.write(held.fence(), id, step)?;
        }
        Ok::<usize, String>(3)
    };
    let done = tokio::select! {
        done = work => done?,
        _ = held.lost() => {
            return Err(format!("worker {id}: lost the lock ({:?}), stopped", held.lost_reason()))
        }
    };
    match held.release().await {
        Ok(true) => Ok(done),
        Ok(false) => Err(format!("worker {id}: the lock was gone at release")),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::main]
async fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let client = match redis::Client::open(url) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("bad REDIS_URL: {e}");
            std::process::exit(2);
        }
    };
    let locks = Locks::new(client);
    let store = Arc::new(FencedStore::default());
    let workers: Vec<_> = (0..4)
        .map(|id| tokio::spawn(worker(locks.clone(), store.clone(), id)))
        .collect();
    let mut failed = false;
    let mut steps = 0;
    for w in workers {
        match w.await {
            Ok(Ok(done)) => steps += done,
            Ok(Err(e)) => {
                eprintln!("{e}");
                failed = true;
            }
            Err(e) => {
                eprintln!("worker task failed: {e}");
                failed = true;
            }
        }
    }
    println!("{steps} steps done");
    std::process::exit(if failed || steps != 12 { 1 } else { 0 });
}
