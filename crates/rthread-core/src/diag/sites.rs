//! Interned code sites: `(file, line, function)` triples stored once, named by a [`SiteId`].
//!
//! Records elsewhere in [`crate::diag`] keep a `u32` site id instead of strings, so a lock or a
//! wait record stays a handful of integers. The table is append-only: an id, once handed out,
//! names the same site for the life of the process.
//!
//! # Locking
//!
//! One `RwLock` guards the table. Interning a site that is already known takes the read lock
//! for one hash lookup; a new site takes the write lock for one push and one insert. [`site`]
//! takes the read lock for one index and two `Arc` clones. Neither is on a lock's acquire or
//! wait path: sites are interned when a lock is created, or (in diagnostic mode) on acquire.

use core::fmt;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::Location;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

/// An interned site. Never 0, so that 0 can mean "no site" in the atomic records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteId(u32);

impl SiteId {
    /// The raw id (never 0), as stored in compact records.
    #[must_use]
    pub const fn as_u32(self) -> u32 {
        self.0
    }

    /// The id from its raw form; `None` for 0 ("no site").
    #[must_use]
    pub const fn from_u32(raw: u32) -> Option<SiteId> {
        if raw == 0 {
            None
        } else {
            Some(SiteId(raw))
        }
    }
}

/// A place in the program: a file, a line, and the enclosing function if known (empty if not).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Site {
    /// Source file, as the caller spelled it.
    pub file: Arc<str>,
    /// Line number (1-based; 0 if unknown).
    pub line: u32,
    /// Enclosing function; empty when unknown (Rust's `Location` has no function name).
    pub function: Arc<str>,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if !self.function.is_empty() {
            write!(f, " in {}", self.function)?;
        }
        Ok(())
    }
}

/// The table: `sites[id - 1]` is the site of `id`; `by_hash` finds candidate ids for a triple
/// without allocating a key.
#[derive(Default)]
struct Table {
    sites: Vec<Site>,
    by_hash: HashMap<u64, Vec<u32>>,
}

impl Table {
    fn find(&self, hash: u64, file: &str, line: u32, function: &str) -> Option<SiteId> {
        self.by_hash.get(&hash)?.iter().copied().find_map(|id| {
            let s = &self.sites[(id - 1) as usize];
            (s.line == line && &*s.file == file && &*s.function == function).then_some(SiteId(id))
        })
    }
}

static TABLE: LazyLock<RwLock<Table>> = LazyLock::new(|| RwLock::new(Table::default()));

/// A fixed-key hash of the triple (the same in every run, which keeps the table deterministic).
fn hash_of(file: &str, line: u32, function: &str) -> u64 {
    let mut h = DefaultHasher::new();
    (file, line, function).hash(&mut h);
    h.finish()
}

/// The id of `(file, line, function)`, interning it on first use. Interning the same triple
/// again returns the same id.
///
/// # Panics
///
/// If more than `u32::MAX - 1` distinct sites are interned.
pub fn intern_site(file: &str, line: u32, function: &str) -> SiteId {
    let hash = hash_of(file, line, function);
    {
        let table = TABLE.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = table.find(hash, file, line, function) {
            return id;
        }
    }
    let mut table = TABLE.write().unwrap_or_else(PoisonError::into_inner);
    // Another thread may have interned it between the two locks.
    if let Some(id) = table.find(hash, file, line, function) {
        return id;
    }
    let id = u32::try_from(table.sites.len() + 1)
        .ok()
        .filter(|&id| id != u32::MAX)
        .expect("too many interned sites");
    table.sites.push(Site {
        file: file.into(),
        line,
        function: function.into(),
    });
    table.by_hash.entry(hash).or_default().push(id);
    SiteId(id)
}

/// The id of a Rust source location (with no function name).
pub fn intern_location(location: &Location<'_>) -> SiteId {
    intern_site(location.file(), location.line(), "")
}

/// The id of the caller's source location (`#[track_caller]`: the caller's caller when called
/// from a `#[track_caller]` function).
#[track_caller]
pub fn intern_caller() -> SiteId {
    intern_location(Location::caller())
}

/// The site of `id`; `None` only for an id that this process never handed out.
#[must_use]
pub fn site(id: SiteId) -> Option<Site> {
    let table = TABLE.read().unwrap_or_else(PoisonError::into_inner);
    table.sites.get((id.0 - 1) as usize).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_triple_same_id() {
        let a = intern_site("sites_test.py", 10, "f");
        let b = intern_site("sites_test.py", 10, "f");
        assert_eq!(a, b);
        assert_ne!(a, intern_site("sites_test.py", 11, "f"));
        assert_ne!(a, intern_site("sites_test.py", 10, "g"));
        assert_ne!(a, intern_site("sites_test2.py", 10, "f"));
        let s = site(a).unwrap();
        assert_eq!((&*s.file, s.line, &*s.function), ("sites_test.py", 10, "f"));
        assert_eq!(s.to_string(), "sites_test.py:10 in f");
    }

    #[test]
    fn raw_round_trip_and_unknown() {
        let id = intern_site("sites_raw.rs", 1, "");
        assert_eq!(SiteId::from_u32(id.as_u32()), Some(id));
        assert_eq!(SiteId::from_u32(0), None);
        assert_eq!(site(SiteId(u32::MAX - 1)), None);
        assert_eq!(site(id).unwrap().to_string(), "sites_raw.rs:1");
    }

    #[test]
    fn caller_location() {
        let line = line!() + 1;
        let id = intern_caller();
        let s = site(id).unwrap();
        assert!(s.file.ends_with("sites.rs"), "{s}");
        assert_eq!(s.line, line);
    }

    #[test]
    fn concurrent_interning_agrees() {
        let ids: Vec<Vec<SiteId>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..200)
                            .map(|i| intern_site("sites_concurrent.py", i, "h"))
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for other in &ids[1..] {
            assert_eq!(other, &ids[0]);
        }
        let mut distinct = ids[0].clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 200);
    }
}
