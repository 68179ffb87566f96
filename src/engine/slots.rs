//! A pool of numbered slots (chunk-sized places on a compact shadow or an overflow volume):
//! slots `first..end`, handed out lowest-never-used first, then those given back. It is held
//! in memory only and rebuilt at start from the chunk maps, which are the record of use.

use std::collections::BTreeSet;

#[derive(Debug)]
pub struct Pool {
    first: u64,
    end: u64,
    /// Every slot from here on has never been handed out since the pool was built.
    next: u64,
    /// Slots below `next` given back.
    free: Vec<u64>,
}

impl Pool {
    /// A pool of slots `first..end`, all free.
    pub fn new(first: u64, end: u64) -> Pool {
        Pool {
            first,
            end: end.max(first),
            next: first,
            free: Vec::new(),
        }
    }

    /// A pool of slots `first..end` of which `used` are taken. Err with a slot outside the
    /// pool or named twice.
    pub fn with_used(
        first: u64,
        end: u64,
        used: impl IntoIterator<Item = u64>,
    ) -> Result<Pool, u64> {
        let mut taken = BTreeSet::new();
        for s in used {
            if s < first || s >= end || !taken.insert(s) {
                return Err(s);
            }
        }
        let next = taken.last().map_or(first, |&s| s + 1);
        let free = (first..next).rev().filter(|s| !taken.contains(s)).collect();
        Ok(Pool {
            first,
            end,
            next,
            free,
        })
    }

    /// A free slot, if any.
    pub fn take(&mut self) -> Option<u64> {
        if let Some(s) = self.free.pop() {
            return Some(s);
        }
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Give a slot back (the caller made sure nothing refers to it any more).
    pub fn give(&mut self, slot: u64) {
        if slot + 1 == self.next {
            self.next -= 1;
            // Slots given back just below the new end go with it.
            while self.next > self.first && self.free.last() == Some(&(self.next - 1)) {
                self.free.pop();
                self.next -= 1;
            }
        } else if slot < self.next {
            self.free.push(slot);
        }
    }

    /// Take a given slot out of the pool (it is in use). False if it is not free.
    pub fn claim(&mut self, slot: u64) -> bool {
        if slot < self.first || slot >= self.end {
            return false;
        }
        if slot >= self.next {
            self.free.extend((self.next..slot).rev());
            self.next = slot + 1;
            return true;
        }
        match self.free.iter().position(|&s| s == slot) {
            Some(i) => {
                self.free.swap_remove(i);
                true
            }
            None => false,
        }
    }

    pub fn total(&self) -> u64 {
        self.end - self.first
    }

    pub fn used(&self) -> u64 {
        self.next - self.first - self.free.len() as u64
    }

    /// Every slot is free again.
    pub fn clear(&mut self) {
        self.next = self.first;
        self.free.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slots_come_lowest_first_and_come_back() {
        let mut p = Pool::with_used(1, 5, [2]).unwrap();
        assert_eq!(p.used(), 1);
        assert_eq!(p.take(), Some(1));
        assert_eq!(p.take(), Some(3));
        assert_eq!(p.take(), Some(4));
        assert_eq!(p.take(), None);
        p.give(3);
        assert_eq!(p.take(), Some(3));
        assert!(Pool::with_used(1, 5, [2, 2]).is_err());
        assert!(Pool::with_used(1, 5, [5]).is_err());
        assert!(!p.claim(4));
    }

    proptest! {
        /// Whatever is taken, given and claimed, no slot is out twice and used + free = total.
        #[test]
        fn no_slot_is_handed_out_twice(ops in proptest::collection::vec((0u8..3, 0u64..12), 0..200)) {
            let mut p = Pool::with_used(2, 12, []).unwrap();
            let mut out = BTreeSet::new();
            for (op, n) in ops {
                match op {
                    0 => if let Some(s) = p.take() { prop_assert!(out.insert(s)); },
                    1 => if out.remove(&n) { p.give(n); },
                    _ => if p.claim(n) { prop_assert!(out.insert(n)); },
                }
                prop_assert_eq!(p.used(), out.len() as u64);
            }
            let mut rest = Vec::new();
            while let Some(s) = p.take() { prop_assert!(!out.contains(&s)); rest.push(s); }
            prop_assert_eq!(rest.len() as u64 + out.len() as u64, p.total());
        }
    }
}
