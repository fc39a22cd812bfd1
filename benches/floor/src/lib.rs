//! Bench only, never shipped: the least a lock command can cost through the module API, so
//! that `make bench` can state the lock module's speed as a fraction of what the server
//! allows. Each command does only what any lock must do, with raw handlers and raw replies:
//!
//! - `FLOOR.ACQUIRE key ttl TOKEN token`: on an empty key, store a 32-byte module value, set
//!   the key's expiry, replicate a four-argument effect (`FLOOR.APPLY key token deadline
//!   fence`, its numbers as text, the cheapest way the API takes them) and reply
//!   `[token, fence]`; on a held key reply null.
//! - `FLOOR.RENEW key token ttl`: if the token matches, move the expiry, replicate
//!   `PEXPIREAT`, reply 1 (else 0).
//! - `FLOOR.RELEASE key token`: if the token matches, delete the key, replicate `DEL`, reply 1
//!   (else 0).
//! - `FLOOR.APPLY key token deadline fence`: the effect, for replicas.
//!
//! No waiters, fences beyond a counter, notifications, statistics or checks a real lock
//! needs: it is a floor, not a lock. The arguments are those of the LOCK commands, so the
//! client sends the same bytes.

use std::os::raw::{c_char, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use redis_module::raw;

type Ctx = raw::RedisModuleCtx;
type Str = raw::RedisModuleString;

/// The token (up to 32 bytes) and its length, fixed-size as a lock value of the real module is.
#[repr(C)]
struct FloorValue {
    len: u8,
    token: [u8; 32],
}

static FLOOR_TYPE: AtomicPtr<raw::RedisModuleType> = AtomicPtr::new(ptr::null_mut());
static FENCE: AtomicU64 = AtomicU64::new(0);

const OK: c_int = raw::REDISMODULE_OK as c_int;
const ERR: c_int = raw::REDISMODULE_ERR as c_int;

/// A server API function; every one used here was checked at load.
macro_rules! api {
    ($name:ident) => {{
        #[allow(unused_unsafe)]
        let f = unsafe { raw::$name };
        match f {
            Some(f) => f,
            None => std::process::abort(),
        }
    }};
}

unsafe fn bytes<'a>(s: *mut Str) -> &'a [u8] {
    let mut len = 0;
    let p = unsafe { api!(RedisModule_StringPtrLen)(s, &mut len) };
    unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }
}

unsafe fn number(s: *mut Str) -> Option<i64> {
    let mut n = 0;
    (unsafe { api!(RedisModule_StringToLongLong)(s, &mut n) } == OK).then_some(n)
}

unsafe fn error(ctx: *mut Ctx, text: &std::ffi::CStr) -> c_int {
    unsafe { api!(RedisModule_ReplyWithError)(ctx, text.as_ptr()) }
}

/// The key open for writing and its value if it is ours; WRONGTYPE otherwise.
unsafe fn open(
    ctx: *mut Ctx,
    name: *mut Str,
) -> Result<(*mut raw::RedisModuleKey, *mut FloorValue), ()> {
    let key = unsafe {
        api!(RedisModule_OpenKey)(
            ctx,
            name,
            (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int,
        )
    }
    .cast::<raw::RedisModuleKey>();
    let kind = unsafe { api!(RedisModule_KeyType)(key) } as isize;
    if kind == raw::REDISMODULE_KEYTYPE_EMPTY {
        return Ok((key, ptr::null_mut()));
    }
    if kind == raw::REDISMODULE_KEYTYPE_MODULE
        && unsafe { api!(RedisModule_ModuleTypeGetType)(key) } == FLOOR_TYPE.load(Ordering::Relaxed)
    {
        let value = unsafe { api!(RedisModule_ModuleTypeGetValue)(key) }.cast::<FloorValue>();
        return Ok((key, value));
    }
    unsafe { api!(RedisModule_CloseKey)(key) };
    Err(())
}

unsafe fn matches(value: *mut FloorValue, token: &[u8]) -> bool {
    !value.is_null() && {
        let v = unsafe { &*value };
        &v.token[..usize::from(v.len)] == token
    }
}

/// A new value holding `token` (at most 32 bytes).
unsafe fn new_value(token: &[u8]) -> *mut FloorValue {
    let value =
        unsafe { api!(RedisModule_Alloc)(std::mem::size_of::<FloorValue>()) }.cast::<FloorValue>();
    let len = token.len().min(32);
    let mut v = FloorValue {
        len: len as u8,
        token: [0; 32],
    };
    v.token[..len].copy_from_slice(&token[..len]);
    unsafe { value.write(v) };
    value
}

unsafe fn store(key: *mut raw::RedisModuleKey, token: &[u8], deadline: i64) -> bool {
    let value = unsafe { new_value(token) };
    let set = unsafe {
        api!(RedisModule_ModuleTypeSetValue)(key, FLOOR_TYPE.load(Ordering::Relaxed), value.cast())
    };
    set == OK && unsafe { api!(RedisModule_SetAbsExpire)(key, deadline) } == OK
}

extern "C" fn acquire(ctx: *mut Ctx, argv: *mut *mut Str, argc: c_int) -> c_int {
    unsafe {
        if argc != 5 {
            return api!(RedisModule_WrongArity)(ctx);
        }
        let argv = std::slice::from_raw_parts(argv, argc as usize);
        let Some(ttl) = number(argv[2]).filter(|t| *t > 0) else {
            return error(ctx, c"ERR bad ttl");
        };
        let token = bytes(argv[4]);
        let Ok((key, value)) = open(ctx, argv[1]) else {
            return error(ctx, c"WRONGTYPE");
        };
        if !value.is_null() {
            api!(RedisModule_CloseKey)(key);
            return api!(RedisModule_ReplyWithNull)(ctx);
        }
        let deadline = api!(RedisModule_Milliseconds)().saturating_add(ttl);
        let fence = FENCE.fetch_add(1, Ordering::Relaxed) + 1;
        let stored = store(key, token, deadline);
        api!(RedisModule_CloseKey)(key);
        if !stored {
            return error(ctx, c"ERR could not store");
        }
        // Numbers as text, as the lock module sends them: the server makes one embedded
        // string of a buffer, where from a number ("l") it makes an object and a buffer.
        let (mut deadline_text, mut fence_text) = (itoa::Buffer::new(), itoa::Buffer::new());
        let (deadline, fence_text) = (deadline_text.format(deadline), fence_text.format(fence));
        api!(RedisModule_Replicate)(
            ctx,
            c"FLOOR.APPLY".as_ptr(),
            c"sbbb".as_ptr(),
            argv[1],
            token.as_ptr().cast::<c_char>(),
            token.len(),
            deadline.as_ptr().cast::<c_char>(),
            deadline.len(),
            fence_text.as_ptr().cast::<c_char>(),
            fence_text.len(),
        );
        api!(RedisModule_ReplyWithArray)(ctx, 2);
        api!(RedisModule_ReplyWithStringBuffer)(ctx, token.as_ptr().cast(), token.len());
        api!(RedisModule_ReplyWithLongLong)(ctx, fence as i64)
    }
}

extern "C" fn renew(ctx: *mut Ctx, argv: *mut *mut Str, argc: c_int) -> c_int {
    unsafe {
        if argc != 4 {
            return api!(RedisModule_WrongArity)(ctx);
        }
        let argv = std::slice::from_raw_parts(argv, argc as usize);
        let Some(ttl) = number(argv[3]).filter(|t| *t > 0) else {
            return error(ctx, c"ERR bad ttl");
        };
        let Ok((key, value)) = open(ctx, argv[1]) else {
            return error(ctx, c"WRONGTYPE");
        };
        if !matches(value, bytes(argv[2])) {
            api!(RedisModule_CloseKey)(key);
            return api!(RedisModule_ReplyWithLongLong)(ctx, 0);
        }
        let deadline = api!(RedisModule_Milliseconds)().saturating_add(ttl);
        api!(RedisModule_SetAbsExpire)(key, deadline);
        api!(RedisModule_CloseKey)(key);
        let mut deadline_text = itoa::Buffer::new();
        let deadline = deadline_text.format(deadline);
        api!(RedisModule_Replicate)(
            ctx,
            c"PEXPIREAT".as_ptr(),
            c"sb".as_ptr(),
            argv[1],
            deadline.as_ptr().cast::<c_char>(),
            deadline.len(),
        );
        api!(RedisModule_ReplyWithLongLong)(ctx, 1)
    }
}

extern "C" fn release(ctx: *mut Ctx, argv: *mut *mut Str, argc: c_int) -> c_int {
    unsafe {
        if argc != 3 {
            return api!(RedisModule_WrongArity)(ctx);
        }
        let argv = std::slice::from_raw_parts(argv, argc as usize);
        let Ok((key, value)) = open(ctx, argv[1]) else {
            return error(ctx, c"WRONGTYPE");
        };
        if !matches(value, bytes(argv[2])) {
            api!(RedisModule_CloseKey)(key);
            return api!(RedisModule_ReplyWithLongLong)(ctx, 0);
        }
        api!(RedisModule_DeleteKey)(key);
        api!(RedisModule_CloseKey)(key);
        api!(RedisModule_Replicate)(ctx, c"DEL".as_ptr(), c"s".as_ptr(), argv[1]);
        api!(RedisModule_ReplyWithLongLong)(ctx, 1)
    }
}

extern "C" fn apply(ctx: *mut Ctx, argv: *mut *mut Str, argc: c_int) -> c_int {
    unsafe {
        if argc != 5 {
            return api!(RedisModule_WrongArity)(ctx);
        }
        let argv = std::slice::from_raw_parts(argv, argc as usize);
        let (Some(deadline), Some(_fence)) = (number(argv[3]), number(argv[4])) else {
            return error(ctx, c"ERR bad effect");
        };
        let Ok((key, _)) = open(ctx, argv[1]) else {
            return error(ctx, c"WRONGTYPE");
        };
        let stored = store(key, bytes(argv[2]), deadline);
        api!(RedisModule_CloseKey)(key);
        if !stored {
            return error(ctx, c"ERR could not store");
        }
        api!(RedisModule_ReplicateVerbatim)(ctx);
        api!(RedisModule_ReplyWithLongLong)(ctx, 1)
    }
}

unsafe extern "C" fn rdb_load(io: *mut raw::RedisModuleIO, _encver: c_int) -> *mut c_void {
    let mut len = 0;
    let p = unsafe { api!(RedisModule_LoadStringBuffer)(io, &mut len) };
    if p.is_null() {
        return ptr::null_mut();
    }
    let value = unsafe { new_value(std::slice::from_raw_parts(p.cast::<u8>(), len)) };
    unsafe { api!(RedisModule_Free)(p.cast()) };
    value.cast()
}

unsafe extern "C" fn rdb_save(io: *mut raw::RedisModuleIO, value: *mut c_void) {
    let v = unsafe { &*value.cast::<FloorValue>() };
    unsafe { api!(RedisModule_SaveStringBuffer)(io, v.token.as_ptr().cast(), usize::from(v.len)) };
}

unsafe extern "C" fn free(value: *mut c_void) {
    unsafe { api!(RedisModule_Free)(value) };
}

unsafe extern "C" fn mem_usage(_value: *const c_void) -> usize {
    std::mem::size_of::<FloorValue>()
}

/// # Safety
/// Called by the server once, when it loads the module.
#[no_mangle]
pub unsafe extern "C" fn RedisModule_OnLoad(
    ctx: *mut Ctx,
    _argv: *mut *mut Str,
    _argc: c_int,
) -> c_int {
    if unsafe {
        raw::Export_RedisModule_Init(
            ctx,
            c"floor".as_ptr(),
            1,
            raw::REDISMODULE_APIVER_1 as c_int,
        )
    } == ERR
    {
        return ERR;
    }
    // Every function the commands call, so that none is looked up missing later.
    let present = unsafe {
        { raw::RedisModule_StringPtrLen }.is_some()
            && { raw::RedisModule_StringToLongLong }.is_some()
            && { raw::RedisModule_ReplyWithError }.is_some()
            && { raw::RedisModule_OpenKey }.is_some()
            && { raw::RedisModule_KeyType }.is_some()
            && { raw::RedisModule_ModuleTypeGetType }.is_some()
            && { raw::RedisModule_ModuleTypeGetValue }.is_some()
            && { raw::RedisModule_ModuleTypeSetValue }.is_some()
            && { raw::RedisModule_CloseKey }.is_some()
            && { raw::RedisModule_Alloc }.is_some()
            && { raw::RedisModule_Free }.is_some()
            && { raw::RedisModule_SetAbsExpire }.is_some()
            && { raw::RedisModule_WrongArity }.is_some()
            && { raw::RedisModule_ReplyWithNull }.is_some()
            && { raw::RedisModule_Milliseconds }.is_some()
            && { raw::RedisModule_Replicate }.is_some()
            && { raw::RedisModule_ReplicateVerbatim }.is_some()
            && { raw::RedisModule_ReplyWithArray }.is_some()
            && { raw::RedisModule_ReplyWithStringBuffer }.is_some()
            && { raw::RedisModule_ReplyWithLongLong }.is_some()
            && { raw::RedisModule_DeleteKey }.is_some()
            && { raw::RedisModule_LoadStringBuffer }.is_some()
            && { raw::RedisModule_SaveStringBuffer }.is_some()
            && { raw::RedisModule_CreateDataType }.is_some()
            && { raw::RedisModule_CreateCommand }.is_some()
    };
    if !present {
        return ERR;
    }
    let mut methods = raw::RedisModuleTypeMethods {
        version: 4,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: None,
        mem_usage: Some(mem_usage),
        digest: None,
        free: Some(free),
        aux_load: None,
        aux_save: None,
        aux_save_triggers: 0,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: None,
        copy2: None,
        aux_save2: None,
    };
    let handle =
        unsafe { api!(RedisModule_CreateDataType)(ctx, c"lockfloor".as_ptr(), 1, &mut methods) };
    if handle.is_null() {
        return ERR;
    }
    FLOOR_TYPE.store(handle, Ordering::Relaxed);
    let commands: [(&std::ffi::CStr, raw::RedisModuleCmdFunc, &std::ffi::CStr); 4] = [
        (c"floor.acquire", Some(acquire), c"write deny-oom"),
        (c"floor.renew", Some(renew), c"write fast"),
        (c"floor.release", Some(release), c"write fast"),
        (c"floor.apply", Some(apply), c"write"),
    ];
    for (name, handler, flags) in commands {
        if unsafe {
            api!(RedisModule_CreateCommand)(ctx, name.as_ptr(), handler, flags.as_ptr(), 1, 1, 1)
        } == ERR
        {
            return ERR;
        }
    }
    OK
}
