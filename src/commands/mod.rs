//! The commands: LOCK.ACQUIRE, LOCK.RENEW, LOCK.RELEASE and LOCK.INFO (`locks`), and the
//! effect commands LOCK.APPLY and LOCK.CLOCK that replicas and AOF replay run (`effects`).

pub mod effects;
pub mod locks;
