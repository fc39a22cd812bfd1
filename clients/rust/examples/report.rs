// clients/rust/examples/report.rs: cargo run --release -p fencelock --example report
use std::time::Duration;

use fencelock::{LockOptions, Locks};

const FENCED_APPEND: &str = r"
local highest = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) < highest then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return redis.call('RPUSH', KEYS[2], ARGV[2])";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let client = redis::Client::open(url)?;
    let locks = Locks::new(client.clone());
    let mut con = client.get_multiplexed_async_connection().await?;
    let opts = LockOptions::new()
        .ttl(Duration::from_secs(2)) // the watchdog renews every ttl/3
        .wait(Duration::from_secs(10)); // queued on the server, first come first served
    let held = locks.lock("report", opts).await?; // Err(Error::NotAcquired) after 10 s
    let script = redis::Script::new(FENCED_APPEND);
    let work = async {
        for n in 0..5 {
            let appended: i64 = script
                .key("report:fence")
                .key("report:lines")
                .arg(held.fence())
                .arg(format!("line {n}"))
                .invoke_async(&mut con)
                .await?;
            if appended == 0 {
                return Err("fence refused: a newer holder has written".into());
            }
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    };
    tokio::select! {
        done = work => done?,
        _ = held.lost() => return Err(format!("stopped: {:?}", held.lost_reason()).into()),
    }
    println!("released: {}", held.release().await?); // true if it still held the lock
    let lines: Vec<String> = redis::cmd("LRANGE")
        .arg("report:lines")
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await?;
    println!("{lines:?}");
    let _: () = redis::cmd("DEL")
        .arg("report:fence")
        .arg("report:lines")
        .query_async(&mut con)
        .await?;
    Ok(())
}
