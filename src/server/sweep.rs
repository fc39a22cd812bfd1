//! After a promotion: a replica keeps no timers (its primary removes expired shared holders
//! and sends the effects), so the new primary looks once at every lock to find the shared
//! locks whose holders must leave at their own deadlines, some perhaps already past. A few
//! scan steps per 0 ms timer tick, so a large keyspace does not stall the server.

use std::time::Duration;

use lock_core::queue::LockId;
use redis_module::{Context, ContextFlags};

use crate::ffi::scan::Scan;
use crate::ffi::{guard, timer};
use crate::server::{runner, state};

/// Scan steps per tick (each visits about ten keys, as a SCAN does).
const STEPS_PER_TICK: usize = 100;

pub fn after_promotion() {
    match (state::detached(), Scan::new(0)) {
        (Some(ctx), Ok(scan)) => {
            timer::start(&ctx, Duration::ZERO, on_tick, scan);
        }
        _ => state::log_warning(
            "lock: no sweep after the promotion: expired shared holders leave at the next \
             command on their lock",
        ),
    }
}

fn on_tick(ctx: &Context, mut scan: Scan) {
    guard::callback((), || {
        // Demoted again meanwhile: the new primary's own sweep will do.
        if !ctx.get_flags().contains(ContextFlags::MASTER) {
            return;
        }
        let mut found = Vec::new();
        for _ in 0..STEPS_PER_TICK {
            let more = match scan.select(ctx) {
                Ok(true) => scan.step(ctx, |held| held.holders_expire_first(), &mut found),
                // Past the last database: done.
                Ok(false) => return look_at(scan.db, found),
                Err(e) => {
                    state::log_warning(&format!("lock: the sweep after a promotion ended: {e}"));
                    return;
                }
            };
            match more {
                Ok(true) => continue,
                Ok(false) => match Scan::new(scan.db + 1) {
                    Ok(next) => {
                        look_at(scan.db, std::mem::take(&mut found));
                        scan = next;
                    }
                    Err(_) => return look_at(scan.db, found),
                },
                Err(_) => return look_at(scan.db, found),
            }
        }
        look_at(scan.db, found);
        timer::start(ctx, Duration::ZERO, on_tick, scan);
    })
}

fn look_at(db: i32, keys: Vec<Vec<u8>>) {
    if !keys.is_empty() {
        runner::look_again(keys.into_iter().map(|key| LockId { db, key }).collect());
    }
}
