//! [`Table`]: a hash map from `u64` keys whose lookups can be prefetched.
//!
//! The similarity state looks up a probe's sixteen band keys (and users, and holder lists) in
//! maps of millions of entries: each lookup misses the cache. A `std` map hides where a key's
//! entry is until the lookup itself, which then waits on a miss, branches on what it read,
//! and waits again. Here a key's place is known from its hash alone, so the places of a whole
//! batch of keys are prefetched ([`Table::prefetch`]) and their misses overlap; the lookups
//! that follow then mostly read one cache line already on its way.

use super::mix;
use super::state::prefetch;

/// A map from `u64` keys to `V` by open addressing: linear probing from a key's home slot (the
/// top bits of its hash), at most [`MAX_LOAD_NUM`]`/`[`MAX_LOAD_DEN`] full, deletion by
/// backward shift (no tombstones: a lookup stops at the first vacant slot). Key 0 marks a
/// vacant slot, so a real key 0 is kept aside.
#[derive(Debug)]
pub(crate) struct Table<V> {
    /// `2^bits` slots (none before the first insert); key 0: vacant.
    slots: Vec<(u64, V)>,
    bits: u32,
    /// Keys held in `slots`.
    len: usize,
    /// The value of key 0.
    zero: Option<V>,
}

/// The table grows when more than `MAX_LOAD_NUM / MAX_LOAD_DEN` of its slots would be used.
const MAX_LOAD_NUM: usize = 5;
const MAX_LOAD_DEN: usize = 8;

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            bits: 0,
            len: 0,
            zero: None,
        }
    }
}

impl<V: Default> Table<V> {
    /// The home slot of `key` (callers ensure the table has slots).
    #[inline]
    fn home(&self, key: u64) -> usize {
        (mix(key) >> (64 - self.bits)) as usize
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Sets the cache line of `key`'s home slot on its way (see [`prefetch`]): a lookup of
    /// `key` soon after mostly reads only that line.
    #[inline]
    pub(crate) fn prefetch(&self, key: u64) {
        if !self.slots.is_empty() {
            prefetch(&self.slots[self.home(key)]);
        }
    }

    /// The slot holding `key` (not 0), if any.
    #[inline]
    fn find(&self, key: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            match self.slots[i].0 {
                0 => return None,
                k if k == key => return Some(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The value of `key`.
    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<&V> {
        if key == 0 {
            return self.zero.as_ref();
        }
        self.find(key).map(|i| &self.slots[i].1)
    }

    /// The value of `key`, to change.
    #[inline]
    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        if key == 0 {
            return self.zero.as_mut();
        }
        self.find(key).map(move |i| &mut self.slots[i].1)
    }

    /// The value of `key`, inserted as `V::default()` if absent.
    pub(crate) fn get_or_default(&mut self, key: u64) -> &mut V {
        if key == 0 {
            return self.zero.get_or_insert_with(V::default);
        }
        let i = match self.find(key) {
            Some(i) => i,
            None => self.put(key, V::default()),
        };
        &mut self.slots[i].1
    }

    /// Sets the value of `key`, returning the one it replaces.
    pub(crate) fn insert(&mut self, key: u64, value: V) -> Option<V> {
        if key == 0 {
            return self.zero.replace(value);
        }
        match self.find(key) {
            Some(i) => Some(std::mem::replace(&mut self.slots[i].1, value)),
            None => {
                self.put(key, value);
                None
            }
        }
    }

    /// Puts the absent `key` (not 0), growing the table first if needed; returns its slot.
    fn put(&mut self, key: u64, value: V) -> usize {
        if (self.len + 1) * MAX_LOAD_DEN > self.slots.len() * MAX_LOAD_NUM {
            self.grow();
        }
        let mask = self.mask();
        let mut i = self.home(key);
        while self.slots[i].0 != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = (key, value);
        self.len += 1;
        i
    }

    /// Doubles the slots (16 at first) and puts every key again.
    fn grow(&mut self) {
        let bits = (self.bits + 1).max(4);
        let old = std::mem::replace(
            &mut self.slots,
            std::iter::repeat_with(|| (0, V::default()))
                .take(1 << bits)
                .collect(),
        );
        self.bits = bits;
        let mask = self.mask();
        for (key, value) in old.into_iter().filter(|(k, _)| *k != 0) {
            let mut i = self.home(key);
            while self.slots[i].0 != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = (key, value);
        }
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove(&mut self, key: u64) -> Option<V> {
        if key == 0 {
            return self.zero.take();
        }
        let mut hole = self.find(key)?;
        let value = std::mem::take(&mut self.slots[hole].1);
        self.slots[hole].0 = 0;
        self.len -= 1;
        // Backward shift: a later key of the run whose home is not cyclically in
        // `(hole, j]` would no longer be found past the hole: it moves into it.
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let k = self.slots[j].0;
            if k == 0 {
                break;
            }
            let home = self.home(k);
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots.swap(hole, j);
                hole = j;
            }
        }
        Some(value)
    }

    /// Keys held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len + usize::from(self.zero.is_some())
    }

    /// The values, in no particular order.
    #[cfg(test)]
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.slots
            .iter()
            .filter(|(k, _)| *k != 0)
            .map(|(_, v)| v)
            .chain(self.zero.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_table_is_a_map() {
        // Random inserts, replaces and removes over a small key range (long probe runs,
        // wrap-around, key 0), checked against a std map after every operation.
        let mut t: Table<u32> = Table::default();
        let mut m: HashMap<u64, u32> = HashMap::new();
        let mut x = 1u64;
        for step in 0..200_000u32 {
            x = mix(x);
            // Keys 0..300, and a few with equal homes in a tiny table.
            let key = if x.is_multiple_of(7) { x % 4 } else { x % 300 };
            match (x >> 32) % 4 {
                0 | 1 => assert_eq!(t.insert(key, step), m.insert(key, step)),
                2 => assert_eq!(t.remove(key), m.remove(&key)),
                _ => {
                    *t.get_or_default(key) += 1;
                    *m.entry(key).or_default() += 1;
                }
            }
            t.prefetch(key);
            assert_eq!(t.get(key), m.get(&key));
            assert_eq!(t.len(), m.len());
            if step % 1000 == 0 {
                for k in 0..300 {
                    assert_eq!(t.get(k), m.get(&k), "key {k} at step {step}");
                }
                let mut a: Vec<u32> = t.values().copied().collect();
                let mut b: Vec<u32> = m.values().copied().collect();
                a.sort_unstable();
                b.sort_unstable();
                assert_eq!(a, b);
            }
        }
        assert!(t.slots.len() * MAX_LOAD_NUM >= t.len * MAX_LOAD_DEN);
    }
}
