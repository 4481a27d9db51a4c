//! Which of several shards a key belongs to: a device's arbiter, an employee's conflict
//! actor. The same for a key in every run, so nothing depends on evaluation order.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};

/// The shard of `key`, out of `shards`.
pub(crate) fn shard_of<K: Hash + ?Sized>(key: &K, shards: usize) -> usize {
    (BuildHasherDefault::<DefaultHasher>::default().hash_one(key) % shards as u64) as usize
}
