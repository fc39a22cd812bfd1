//! The commands: LOCK.ACQUIRE, LOCK.RENEW, LOCK.RELEASE and LOCK.INFO (`locks`), the common
//! calls of the first three answered in fewer steps (`fast_path`), and the effect commands
//! LOCK.APPLY and LOCK.CLOCK that replicas and AOF replay run (`effects`).

pub mod effects;
pub mod fast_path;
pub mod locks;
