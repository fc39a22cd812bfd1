//! The module's settings, as `CONFIG GET/SET lock.<name>`, `lock.<name>` lines in the config
//! file, and load-time arguments (`loadmodule ... max-ttl 60000`). The arguments are checked as
//! CONFIG SET checks a value: a wrong one stops the module from loading, with a log line that
//! names it. They are the defaults, so a `lock.<name>` line (which CONFIG REWRITE writes)
//! overrides them.

use std::sync::atomic::{AtomicI64, Ordering};

use redis_module::configuration::{register_i64_configuration, ConfigurationFlags};
use redis_module::{raw, Context, RedisString};

use lock_core::request::parse_i64;

/// `lock.max-ttl`: the largest ttl ACQUIRE and RENEW accept, in ms; 0 means no limit.
pub static MAX_TTL: AtomicI64 = AtomicI64::new(0);

/// `lock.max-waiters`: how many clients may wait for one lock with BLOCK; 0 means no limit.
pub static MAX_WAITERS: AtomicI64 = AtomicI64::new(0);

/// `lock.fence-jump`: how far (ms) the first grant after a start or a promotion jumps ahead of
/// the clock and of every fence seen, to stay above grants this server may have missed.
pub static FENCE_JUMP: AtomicI64 = AtomicI64::new(DEFAULT_FENCE_JUMP_MS);

/// `lock.fence-max-ahead`: how far (ms) ahead of the clock a loaded, replicated or restored
/// fence may raise the fence clock; RESTORE refuses a lock beyond it.
pub static FENCE_MAX_AHEAD: AtomicI64 = AtomicI64::new(DEFAULT_FENCE_MAX_AHEAD_MS);

const DEFAULT_FENCE_JUMP_MS: i64 = 60_000;
const DEFAULT_FENCE_MAX_AHEAD_MS: i64 = 24 * 60 * 60 * 1000;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// Fences are Unix microseconds below 2^62: no distance in ms is larger.
const FENCE_RANGE_MS: i64 = (1 << 62) / 1000;

pub fn max_ttl() -> i64 {
    MAX_TTL.load(Ordering::Relaxed)
}

pub fn max_waiters() -> usize {
    usize::try_from(MAX_WAITERS.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
}

pub fn fence_jump_us() -> u64 {
    ms_to_us(&FENCE_JUMP)
}

pub fn fence_max_ahead_us() -> u64 {
    ms_to_us(&FENCE_MAX_AHEAD)
}

fn ms_to_us(setting: &AtomicI64) -> u64 {
    u64::try_from(setting.load(Ordering::Relaxed))
        .unwrap_or(0)
        .saturating_mul(1000)
}

/// One setting: its name after `lock.`, where it lives, its default and its range.
struct Setting {
    name: &'static str,
    value: &'static AtomicI64,
    default: i64,
    min: i64,
    max: i64,
}

const SETTINGS: [Setting; 4] = [
    Setting {
        name: "max-ttl",
        value: &MAX_TTL,
        default: 0,
        min: 0,
        max: i64::MAX,
    },
    Setting {
        name: "max-waiters",
        value: &MAX_WAITERS,
        default: 0,
        min: 0,
        max: i64::MAX,
    },
    Setting {
        name: "fence-jump",
        value: &FENCE_JUMP,
        default: DEFAULT_FENCE_JUMP_MS,
        min: 0,
        max: DAY_MS,
    },
    Setting {
        name: "fence-max-ahead",
        value: &FENCE_MAX_AHEAD,
        default: DEFAULT_FENCE_MAX_AHEAD_MS,
        min: 1000,
        max: FENCE_RANGE_MS,
    },
];

/// The load-time arguments as (setting, value) pairs, checked; the error names what is wrong.
fn parse_args(args: &[&[u8]]) -> Result<Vec<(usize, i64)>, String> {
    let names = || {
        SETTINGS
            .iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut values = Vec::new();
    for pair in args.chunks(2) {
        let name = String::from_utf8_lossy(pair[0]);
        let Some(index) = SETTINGS.iter().position(|s| s.name.as_bytes() == pair[0]) else {
            return Err(format!(
                "unknown module argument '{name}' (the settings are {})",
                names()
            ));
        };
        let [_, value] = pair else {
            return Err(format!("module argument {name} has no value"));
        };
        let setting = &SETTINGS[index];
        let text = String::from_utf8_lossy(value);
        let number = parse_i64(value)
            .ok_or_else(|| format!("module argument {name} '{text}' is not a whole number"))?;
        if !(setting.min..=setting.max).contains(&number) {
            return Err(format!(
                "module argument {name} {number} is out of range: argument must be between {} \
                 and {} inclusive (as for CONFIG SET lock.{name})",
                setting.min, setting.max
            ));
        }
        if values.iter().any(|&(i, _)| i == index) {
            return Err(format!("module argument {name} is given more than once"));
        }
        values.push((index, number));
    }
    Ok(values)
}

/// Check the load-time arguments, register every setting with them as defaults, and apply the
/// config file's `lock.*` lines. False (after logging why) if the module must not load.
pub fn register(ctx: &Context, args: &[RedisString]) -> bool {
    let args: Vec<&[u8]> = args.iter().map(RedisString::as_slice).collect();
    let given = match parse_args(&args) {
        Ok(given) => given,
        Err(e) => {
            ctx.log_warning(&format!("{e}: the module is not loaded"));
            return false;
        }
    };
    for (index, setting) in SETTINGS.iter().enumerate() {
        let default = given
            .iter()
            .find(|&&(i, _)| i == index)
            .map_or(setting.default, |&(_, v)| v);
        setting.value.store(default, Ordering::Relaxed);
        register_i64_configuration(
            ctx,
            setting.name,
            setting.value,
            default,
            setting.min,
            setting.max,
            ConfigurationFlags::DEFAULT,
            None,
        );
    }
    match unsafe { raw::RedisModule_LoadConfigs } {
        // SAFETY: called once, during module load, after every config is registered.
        Some(load) => unsafe { load(ctx.ctx) == raw::REDISMODULE_OK as i32 },
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Vec<(usize, i64)>, String> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        parse_args(&args)
    }

    #[test]
    fn arguments_in_range_are_taken() {
        assert_eq!(parse(&[]), Ok(vec![]));
        assert_eq!(
            parse(&["max-waiters", "3", "max-ttl", "60000"]),
            Ok(vec![(1, 3), (0, 60000)])
        );
        assert_eq!(parse(&["fence-jump", "0"]), Ok(vec![(2, 0)]));
    }

    #[test]
    fn wrong_arguments_are_named() {
        let err = parse(&["max-ttl", "-1"]).unwrap_err();
        assert!(
            err.contains("max-ttl -1") && err.contains("between 0 and"),
            "{err}"
        );
        let err = parse(&["max-waiters", "-3"]).unwrap_err();
        assert!(err.contains("max-waiters -3"), "{err}");
        let err = parse(&["bogus", "1"]).unwrap_err();
        assert!(err.contains("'bogus'") && err.contains("max-ttl"), "{err}");
        let err = parse(&["max-ttl", "abc"]).unwrap_err();
        assert!(err.contains("max-ttl 'abc'"), "{err}");
        let err = parse(&["max-ttl"]).unwrap_err();
        assert!(err.contains("max-ttl has no value"), "{err}");
        let err = parse(&["max-ttl", "1", "max-ttl", "2"]).unwrap_err();
        assert!(err.contains("more than once"), "{err}");
        let err = parse(&["fence-max-ahead", "999"]).unwrap_err();
        assert!(err.contains("between 1000 and"), "{err}");
    }
}
