//! What `COMMAND DOCS` and `COMMAND INFO` say about each command, and its key spec, set with
//! `RedisModule_SetCommandInfo` (Redis 7.0+). The key specs are what ACL key patterns and
//! cluster routing go by: read-only for LOCK.INFO and LOCK.HOLDERS, read-write for the others.

use std::ffi::{CStr, CString};
use std::os::raw::c_int;
use std::ptr;

use redis_module::{raw, Context};

struct CommandDoc {
    name: &'static CStr,
    /// ACL categories (Redis 7.2+, Valkey); the public commands also get the module's own.
    acl: &'static CStr,
    public: bool,
    summary: &'static CStr,
    complexity: &'static CStr,
    arity: c_int,
    key_flags: u32,
    args: &'static [ArgDoc],
}

struct ArgDoc {
    name: &'static CStr,
    kind: raw::RedisModuleCommandArgType,
    /// The keyword before an option's value (`TOKEN`, `BLOCK`); options are optional.
    token: Option<&'static CStr>,
    /// The choices of a `ONEOF` argument.
    subargs: &'static [ArgDoc],
}

const KEY: raw::RedisModuleCommandArgType = raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY;
const STRING: raw::RedisModuleCommandArgType =
    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING;
const INTEGER: raw::RedisModuleCommandArgType =
    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER;
const PURE_TOKEN: raw::RedisModuleCommandArgType =
    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN;
const ONEOF: raw::RedisModuleCommandArgType =
    raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF;

const fn arg(name: &'static CStr, kind: raw::RedisModuleCommandArgType) -> ArgDoc {
    ArgDoc {
        name,
        kind,
        token: None,
        subargs: &[],
    }
}

/// An optional choice of one of `subargs`.
const fn one_of(name: &'static CStr, subargs: &'static [ArgDoc]) -> ArgDoc {
    ArgDoc {
        name,
        kind: ONEOF,
        token: None,
        subargs,
    }
}

const fn option(
    name: &'static CStr,
    token: &'static CStr,
    kind: raw::RedisModuleCommandArgType,
) -> ArgDoc {
    ArgDoc {
        name,
        kind,
        token: Some(token),
        subargs: &[],
    }
}

/// `[SHARED | LIMIT n]` of LOCK.ACQUIRE and of the LOCK.APPLY effect.
const MODE: ArgDoc = one_of(
    c"mode",
    &[
        option(c"shared", c"SHARED", PURE_TOKEN),
        option(c"limit", c"LIMIT", INTEGER),
    ],
);

const RW_UPDATE: u32 = raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_UPDATE;

const DOCS: &[CommandDoc] = &[
    CommandDoc {
        name: c"lock.acquire",
        acl: c"write blocking",
        public: true,
        summary: c"Takes the lock for ttl milliseconds; replies [token, fence], or null if it cannot be granted. With BLOCK, waits in FIFO order for up to timeout ms (0: no limit). SHARED: a shared hold beside other shared ones; LIMIT n: one of at most n shared holds. EPHEMERAL: the hold ends when this connection closes. META: a public label of the hold.",
        complexity: c"O(1)",
        arity: -3,
        key_flags: RW_UPDATE,
        args: &[
            arg(c"key", KEY),
            arg(c"ttl", INTEGER),
            option(c"token", c"TOKEN", STRING),
            option(c"timeout", c"BLOCK", INTEGER),
            MODE,
            option(c"ephemeral", c"EPHEMERAL", PURE_TOKEN),
            option(c"meta", c"META", STRING),
        ],
    },
    CommandDoc {
        name: c"lock.renew",
        acl: c"write fast",
        public: true,
        summary: c"Moves the deadline of the hold of token to now + ttl; replies 1, or 0 if token holds nothing.",
        complexity: c"O(1)",
        arity: 4,
        key_flags: RW_UPDATE,
        args: &[arg(c"key", KEY), arg(c"token", STRING), arg(c"ttl", INTEGER)],
    },
    CommandDoc {
        name: c"lock.release",
        acl: c"write fast",
        public: true,
        summary: c"Ends the hold of token (the lock goes to waiters, or is freed with its last holder); replies 1, or 0 if token holds nothing.",
        complexity: c"O(1)",
        arity: 3,
        key_flags: raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_DELETE,
        args: &[arg(c"key", KEY), arg(c"token", STRING)],
    },
    CommandDoc {
        name: c"lock.info",
        acl: c"read fast",
        public: true,
        summary: c"Replies the fence, holders, limit, meta, mode, remaining ttl and waiters of a held lock, or null if it is free.",
        complexity: c"O(1)",
        arity: 2,
        key_flags: raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS,
        args: &[arg(c"key", KEY)],
    },
    CommandDoc {
        name: c"lock.holders",
        acl: c"read",
        public: true,
        summary: c"Replies each live holder of a held lock in grant order (fence, ttl, mode, ephemeral, meta), or null if it is free; never a token.",
        complexity: c"O(N log N) where N is the number of holders",
        arity: 2,
        key_flags: raw::REDISMODULE_CMD_KEY_RO | raw::REDISMODULE_CMD_KEY_ACCESS,
        args: &[arg(c"key", KEY)],
    },
    CommandDoc {
        name: c"lock.apply",
        acl: c"write",
        public: false,
        summary: c"Internal: stores a lock, or one shared holder, as the primary made it (replication and AOF only). The holder is deadline:fence:token; the form before 0.4 (token deadline fence) is still read.",
        complexity: c"O(1)",
        arity: -3,
        key_flags: raw::REDISMODULE_CMD_KEY_OW | raw::REDISMODULE_CMD_KEY_UPDATE,
        args: &[
            arg(c"key", KEY),
            arg(c"hold", STRING),
            MODE,
            option(c"meta", c"META", STRING),
        ],
    },
    CommandDoc {
        name: c"lock.drop",
        acl: c"write",
        public: false,
        summary: c"Internal: removes one shared holder, and the key with the last (replication and AOF only).",
        complexity: c"O(1)",
        arity: 3,
        key_flags: raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_DELETE,
        args: &[arg(c"key", KEY), arg(c"token", STRING)],
    },
    CommandDoc {
        name: c"lock.clock",
        acl: c"write",
        public: false,
        summary: c"Internal: raises the fence clock to fence (replication and AOF only).",
        complexity: c"O(1)",
        arity: 2,
        key_flags: NO_KEY,
        args: &[arg(c"fence", INTEGER)],
    },
];

/// `key_flags` of a command without keys.
const NO_KEY: u32 = 0;

/// The module's own ACL category: `+@lock` grants the five public commands.
const MODULE_CATEGORY: &CStr = c"lock";

/// Attach docs, key specs and ACL categories to every command. On a server without the API
/// (before 7.0) the commands still work with their legacy key positions; the server copies what
/// it is given. False (after logging why) if the module must not load.
pub fn register(ctx: &Context) -> bool {
    let (Some(get_command), Some(set_info)) =
        (unsafe { (raw::RedisModule_GetCommand, raw::RedisModule_SetCommandInfo) })
    else {
        ctx.log_warning(
            "this server has no RedisModule_SetCommandInfo: no COMMAND DOCS or key specs",
        );
        return true;
    };
    let module_category = add_module_category(ctx);
    let version = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
    };
    for doc in DOCS {
        // SAFETY: all pointers handed over are to statics or to locals that outlive the call.
        let command = unsafe { get_command(ctx.ctx, doc.name.as_ptr()) };
        if command.is_null() {
            ctx.log_warning(&format!(
                "command {doc_name:?} not found",
                doc_name = doc.name
            ));
            return false;
        }
        let mut key_specs = [key_spec(doc.key_flags), unsafe { std::mem::zeroed() }];
        let key_specs = if doc.key_flags == NO_KEY {
            &mut key_specs[1..]
        } else {
            &mut key_specs[..]
        };
        // The choices of ONEOF arguments, kept alive until the server has copied them.
        let mut choices: Vec<Vec<raw::RedisModuleCommandArg>> = Vec::new();
        let mut args: Vec<raw::RedisModuleCommandArg> = doc
            .args
            .iter()
            .map(|doc| raw_arg(doc, &mut choices, false))
            .collect();
        args.push(unsafe { std::mem::zeroed() });
        let info = raw::RedisModuleCommandInfo {
            version: &version,
            summary: doc.summary.as_ptr(),
            complexity: doc.complexity.as_ptr(),
            since: c"0.1.0".as_ptr(),
            history: ptr::null_mut(),
            tips: ptr::null(),
            arity: doc.arity,
            key_specs: key_specs.as_mut_ptr(),
            args: args.as_mut_ptr(),
        };
        if unsafe { set_info(command, &info) } != raw::REDISMODULE_OK as c_int {
            ctx.log_warning(&format!("could not set the command info of {:?}", doc.name));
            return false;
        }
        if !set_categories(command, doc, module_category) {
            ctx.log_warning(&format!(
                "could not set the ACL categories of {:?}",
                doc.name
            ));
            return false;
        }
    }
    true
}

/// Declare `@lock` where the server can (Redis 7.4+, Valkey): false where it cannot.
fn add_module_category(ctx: &Context) -> bool {
    let Some(add) = (unsafe { raw::RedisModule_AddACLCategory }) else {
        return false;
    };
    // SAFETY: called during module load with the load context.
    unsafe { add(ctx.ctx, MODULE_CATEGORY.as_ptr()) == raw::REDISMODULE_OK as c_int }
}

/// The command's ACL categories, where the server has them (Redis 7.2+, Valkey). Redis 7.0
/// has no such API: there, module commands belong to no category (the README says so).
fn set_categories(
    command: *mut raw::RedisModuleCommand,
    doc: &CommandDoc,
    module_category: bool,
) -> bool {
    let Some(set) = (unsafe { raw::RedisModule_SetCommandACLCategories }) else {
        return true;
    };
    let mut categories = doc.acl.to_string_lossy().into_owned();
    if module_category && doc.public {
        categories.push(' ');
        categories.push_str(&MODULE_CATEGORY.to_string_lossy());
    }
    let Ok(categories) = CString::new(categories) else {
        return false;
    };
    // SAFETY: command is a live command of this module; the string outlives the call.
    unsafe { set(command, categories.as_ptr()) == raw::REDISMODULE_OK as c_int }
}

/// One key at argv[1].
fn key_spec(flags: u32) -> raw::RedisModuleCommandKeySpec {
    raw::RedisModuleCommandKeySpec {
        notes: ptr::null(),
        flags: u64::from(flags),
        begin_search_type: raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX,
        bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
            index: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_1 { pos: 1 },
        },
        find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE,
        fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
            range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 {
                lastkey: 0,
                keystep: 1,
                limit: 0,
            },
        },
    }
}

/// `doc` as the server reads it; the array of its choices, if any, goes into `choices`. The
/// choices of a ONEOF (`nested`) are not optional in themselves.
fn raw_arg(
    doc: &ArgDoc,
    choices: &mut Vec<Vec<raw::RedisModuleCommandArg>>,
    nested: bool,
) -> raw::RedisModuleCommandArg {
    let subargs = if doc.subargs.is_empty() {
        ptr::null_mut()
    } else {
        let mut sub: Vec<_> = doc
            .subargs
            .iter()
            .map(|d| raw_arg(d, choices, true))
            .collect();
        sub.push(unsafe { std::mem::zeroed() });
        // A Vec's buffer does not move when the Vec itself is moved into `choices`.
        let at = sub.as_mut_ptr();
        choices.push(sub);
        at
    };
    let optional = !nested && (doc.token.is_some() || doc.kind == ONEOF);
    raw::RedisModuleCommandArg {
        name: doc.name.as_ptr(),
        type_: doc.kind,
        key_spec_index: if doc.kind == KEY { 0 } else { -1 },
        token: doc.token.map_or(ptr::null(), CStr::as_ptr),
        summary: ptr::null(),
        since: ptr::null(),
        flags: if optional {
            raw::REDISMODULE_CMD_ARG_OPTIONAL as c_int
        } else {
            0
        },
        deprecated_since: ptr::null(),
        subargs,
        display_text: ptr::null(),
    }
}
