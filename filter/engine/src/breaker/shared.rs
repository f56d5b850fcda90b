//! The in-flight count of the concurrency limit, in the CAS store. (The breaker
//! state itself goes through each worker's [`super::local::Local`].)
//!
//! The count is kept per owner: each VM takes its slots under its own random id
//! and stamps its entry with a deadline, [`RECLAIM_NS`] ahead, which it pushes
//! forward whenever it takes or gives back a slot and on its tick while it holds
//! any ([`Slots::refresh_due`]). A VM that traps never runs `on_log` for the
//! requests it had in flight, nor its tick again: once its deadline passes, every
//! worker's next read counts its entry as gone, so a dead VM's slots come back
//! after at most [`RECLAIM_NS`]. Each entry also carries when it was created (its
//! epoch), and a slot is given back only to the entry it was taken from: a live
//! VM's late give-back after its entry was reclaimed (nothing stamped it for that
//! long) gives back nothing, even when the VM has a newer entry by then, so the
//! count never drops below what live owners hold.
//!
//! Layout: a version byte, then per owner `owner u64, count u32, deadline u64,
//! epoch u64`, little endian. Anything else (another version, a torn or truncated value) reads
//! as no owner at all: the next write starts the count afresh.

use std::cell::Cell;

use crate::le::{u32_at, u64_at};
use crate::store::{update, SharedStore, StoreError};

/// How long an owner's slots outlive its last sign of life (10 s).
pub const RECLAIM_NS: u64 = 10_000_000_000;
/// Most owners one count holds (VMs with slots at once: Envoy runs one per
/// worker); a request that would be the next one's first is refused as if the
/// limit were reached.
pub const MAX_OWNERS: usize = 256;
const VERSION: u8 = 3;
const ENTRY: usize = 28;

/// One route's concurrency count as this VM holds it.
#[derive(Debug)]
pub struct Slots {
    /// Shared-data key of the count.
    pub key: String,
    /// This VM's owner id (set when the plugin is prepared; per VM, so every
    /// configuration of one VM shares its entry).
    pub owner: Cell<u64>,
    /// Slots this configuration holds now.
    pub held: Cell<u32>,
    /// When this VM last stamped its entry, ns.
    pub stamped: Cell<u64>,
}

impl Slots {
    /// A count at `key`, owner not yet set.
    pub fn new(key: String) -> Self {
        Slots {
            key,
            owner: Cell::new(0),
            held: Cell::new(0),
            stamped: Cell::new(0),
        }
    }

    /// Whether the tick must push this VM's deadline forward: it holds slots and
    /// stamped its entry more than a third of [`RECLAIM_NS`] ago.
    pub fn refresh_due(&self, now: u64) -> bool {
        self.held.get() > 0 && now.saturating_sub(self.stamped.get()) > RECLAIM_NS / 3
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    owner: u64,
    count: u32,
    deadline: u64,
    epoch: u64,
}

/// The live entries of a stored count at `now` (malformed: none).
fn live(bytes: Option<&[u8]>, now: u64) -> Vec<Entry> {
    let Some((&VERSION, rest)) = bytes.and_then(<[u8]>::split_first) else {
        return Vec::new();
    };
    if rest.len() % ENTRY != 0 || rest.len() / ENTRY > MAX_OWNERS {
        return Vec::new();
    }
    rest.chunks_exact(ENTRY)
        .filter_map(|c| {
            let owner = u64_at(c, 0)?;
            let count = u32_at(c, 8)?;
            let deadline = u64_at(c, 12)?;
            let epoch = u64_at(c, 20)?;
            (count > 0 && deadline >= now).then_some(Entry {
                owner,
                count,
                deadline,
                epoch,
            })
        })
        .collect()
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entries.len() * ENTRY);
    out.push(VERSION);
    for e in entries {
        out.extend_from_slice(&e.owner.to_le_bytes());
        out.extend_from_slice(&e.count.to_le_bytes());
        out.extend_from_slice(&e.deadline.to_le_bytes());
        out.extend_from_slice(&e.epoch.to_le_bytes());
    }
    out
}

fn total(entries: &[Entry]) -> u32 {
    entries.iter().fold(0, |n, e| n.saturating_add(e.count))
}

/// Takes an in-flight slot for `s`'s owner if fewer than `max` live ones are
/// taken: the epoch of the entry it was taken from (to give it back to), or
/// `None` when full.
pub fn acquire(
    store: &mut impl SharedStore,
    s: &Slots,
    max: u32,
    now: u64,
) -> Result<Option<u64>, StoreError> {
    let owner = s.owner.get();
    let deadline = now.saturating_add(RECLAIM_NS);
    let taken = update(store, &s.key, |bytes| {
        let mut entries = live(bytes, now);
        if total(&entries) >= max {
            return (None, None);
        }
        let full = entries.len() >= MAX_OWNERS;
        let epoch = match entries.iter_mut().find(|e| e.owner == owner) {
            Some(e) => {
                e.count += 1;
                e.deadline = deadline;
                e.epoch
            }
            None if full => return (None, None),
            None => {
                entries.push(Entry {
                    owner,
                    count: 1,
                    deadline,
                    epoch: now,
                });
                now
            }
        };
        (Some(encode(&entries)), Some(epoch))
    })?;
    if taken.is_some() {
        s.held.set(s.held.get() + 1);
        s.stamped.set(now);
    }
    Ok(taken)
}

/// Gives back a slot `s`'s owner took from its entry of `epoch` (nothing when
/// that entry was reclaimed meanwhile).
pub fn release(
    store: &mut impl SharedStore,
    s: &Slots,
    epoch: u64,
    now: u64,
) -> Result<(), StoreError> {
    s.held.set(s.held.get().saturating_sub(1));
    stamp(store, s, now, Some(epoch))
}

/// Pushes `s`'s owner's deadline forward (the tick, while it holds slots).
pub fn refresh(store: &mut impl SharedStore, s: &Slots, now: u64) -> Result<(), StoreError> {
    stamp(store, s, now, None)
}

fn stamp(
    store: &mut impl SharedStore,
    s: &Slots,
    now: u64,
    give_back: Option<u64>,
) -> Result<(), StoreError> {
    let owner = s.owner.get();
    update(store, &s.key, |bytes| {
        let mut entries = live(bytes, now);
        let Some(i) = entries.iter().position(|e| e.owner == owner) else {
            return (None, ());
        };
        if let Some(e) = entries.get_mut(i) {
            if give_back.is_some_and(|epoch| epoch != e.epoch) {
                return (None, ()); // taken from an entry reclaimed since
            }
            e.count -= u32::from(give_back.is_some()).min(e.count);
            e.deadline = now.saturating_add(RECLAIM_NS);
            if e.count == 0 {
                entries.remove(i);
            }
        }
        (Some(encode(&entries)), ())
    })?;
    s.stamped.set(now);
    Ok(())
}

/// Creates the count empty when it does not exist yet. Shared data has no
/// create-if-absent: two workers taking the first slots of an absent count both
/// write without compare-and-swap, and one slot is lost (a third request would be
/// admitted over `maxConcurrent`). Created once, at configure time, before traffic,
/// every later write is a compare-and-swap.
pub fn prepare(store: &mut impl SharedStore, key: &str) -> Result<(), StoreError> {
    if store.get(key)?.0.is_none() {
        store.set(key, &[VERSION], None)?;
    }
    Ok(())
}

/// The number of requests in flight at `now` (live owners' slots).
pub fn in_flight(store: &mut impl SharedStore, key: &str, now: u64) -> Result<u32, StoreError> {
    Ok(total(&live(store.get(key)?.0.as_deref(), now)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fake::{FakeStore, Racing};
    use wasm_bindgen_test::wasm_bindgen_test;

    const SEC: u64 = 1_000_000_000;

    fn vm(owner: u64) -> Slots {
        let s = Slots::new("cc".into());
        s.owner.set(owner);
        s
    }

    /// Takes a slot: its epoch, or `None` when full.
    fn take(store: &mut impl SharedStore, s: &Slots, max: u32, now: u64) -> Option<u64> {
        acquire(store, s, max, now).unwrap()
    }

    fn count(store: &mut impl SharedStore, now: u64) -> u32 {
        in_flight(store, "cc", now).unwrap()
    }

    fn two_racing_first_slots(prepared: bool) -> u32 {
        let mut r = Racing::default();
        if prepared {
            prepare(&mut r, "cc").unwrap();
        }
        let before = r.get("cc").unwrap();
        assert!(take(&mut r, &vm(1), 2, SEC).is_some(), "first worker");
        r.stale = Some(("cc".into(), before));
        assert!(take(&mut r, &vm(2), 2, SEC).is_some(), "second worker");
        count(&mut r, SEC)
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_count_created_before_traffic_counts_two_racing_first_requests() {
        // Absent, both first writes are unconditional: one slot is lost.
        assert_eq!(two_racing_first_slots(false), 1);
        // Prepared, the second write's compare-and-swap fails and it retries.
        assert_eq!(two_racing_first_slots(true), 2);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn preparing_keeps_an_existing_count() {
        let mut s = FakeStore::default();
        assert!(take(&mut s, &vm(1), 5, SEC).is_some());
        prepare(&mut s, "cc").unwrap();
        assert_eq!(count(&mut s, SEC), 1, "a reload keeps requests in flight");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_limit_counts_every_owner_and_each_gives_back_only_its_own() {
        let mut s = FakeStore::default();
        prepare(&mut s, "cc").unwrap();
        let (a, b) = (vm(1), vm(2));
        let ea = take(&mut s, &a, 3, SEC).unwrap();
        assert_eq!(take(&mut s, &a, 3, SEC), Some(ea), "one entry per owner");
        let eb = take(&mut s, &b, 3, SEC).unwrap();
        assert_eq!(take(&mut s, &b, 3, SEC), None, "3 of 3 taken");
        assert_eq!((a.held.get(), b.held.get()), (2, 1));
        release(&mut s, &b, eb, SEC).unwrap();
        release(&mut s, &b, eb, SEC).unwrap(); // one more than it holds: nothing
        assert_eq!(count(&mut s, SEC), 2);
        assert_eq!(b.held.get(), 0);
        release(&mut s, &a, ea, SEC).unwrap();
        release(&mut s, &a, ea, SEC).unwrap();
        assert_eq!(count(&mut s, SEC), 0);
        assert_eq!(s.data["cc"].0, vec![VERSION], "owners without slots leave");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_dead_owners_slots_come_back_after_the_reclaim_window() {
        let mut s = FakeStore::default();
        prepare(&mut s, "cc").unwrap();
        let (dead, live_vm) = (vm(7), vm(8));
        let mut epoch = 0;
        for _ in 0..4 {
            epoch = take(&mut s, &dead, 4, SEC).unwrap();
        }
        // The VM traps: no release, no tick. Until its deadline the slots count.
        let last = SEC + RECLAIM_NS;
        assert_eq!(take(&mut s, &live_vm, 4, last), None);
        assert_eq!(count(&mut s, last), 4);
        // One nanosecond later they are gone for every reader.
        assert_eq!(count(&mut s, last + 1), 0);
        for _ in 0..4 {
            assert!(take(&mut s, &live_vm, 4, last + 1).is_some());
        }
        assert_eq!(take(&mut s, &live_vm, 4, last + 1), None);
        // The dead VM's give-back, should it ever come, takes nothing from others.
        release(&mut s, &dead, epoch, last + 2).unwrap();
        assert_eq!(count(&mut s, last + 2), 4);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_late_give_back_never_lowers_the_newer_entry_of_the_same_owner() {
        let mut s = FakeStore::default();
        prepare(&mut s, "cc").unwrap();
        let a = vm(5);
        // A long stream's slot; nothing stamps the entry for the reclaim window.
        let old = take(&mut s, &a, 2, 0).unwrap();
        let later = RECLAIM_NS + 1;
        assert_eq!(count(&mut s, later), 0, "reclaimed");
        // Two new streams take both slots under a new entry.
        let new = take(&mut s, &a, 2, later).unwrap();
        assert_ne!(new, old);
        assert_eq!(take(&mut s, &a, 2, later), Some(new));
        // The long stream ends: its give-back finds a newer entry and leaves it.
        release(&mut s, &a, old, later + 1).unwrap();
        assert_eq!(count(&mut s, later + 1), 2, "both new streams still count");
        assert_eq!(take(&mut s, &vm(6), 2, later + 1), None);
        release(&mut s, &a, new, later + 2).unwrap();
        assert_eq!(count(&mut s, later + 2), 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_live_owner_keeps_its_slots_by_refreshing() {
        let mut s = FakeStore::default();
        prepare(&mut s, "cc").unwrap();
        let a = vm(3);
        let epoch = take(&mut s, &a, 1, 0).unwrap();
        assert!(
            !a.refresh_due(RECLAIM_NS / 3),
            "stamped a third ago: not yet"
        );
        let mut now = 0;
        for _ in 0..10 {
            now += RECLAIM_NS / 3 + 1;
            assert!(a.refresh_due(now));
            refresh(&mut s, &a, now).unwrap();
            assert!(!a.refresh_due(now));
        }
        assert!(now > 3 * RECLAIM_NS, "held long past one window");
        assert_eq!(count(&mut s, now + RECLAIM_NS), 1);
        assert_eq!(take(&mut s, &vm(4), 1, now), None);
        release(&mut s, &a, epoch, now).unwrap();
        assert!(!a.refresh_due(now + 2 * RECLAIM_NS), "holds nothing");
        // A refresh by an owner without an entry writes nothing.
        let sets = s.sets;
        refresh(&mut s, &a, now).unwrap();
        assert_eq!(s.sets, sets);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn malformed_counts_read_as_empty_and_owners_are_bounded() {
        for bad in [
            &b""[..],
            &[1, 0, 0, 0][..],       // the first layout: a bare u32
            &[2u8; 21][..],          // the second: 20-byte entries
            &[VERSION, 1, 2, 3][..], // torn
            &[VERSION + 1; 29][..],  // a later version
        ] {
            let mut s = FakeStore::default();
            s.set("cc", bad, None).unwrap();
            assert_eq!(count(&mut s, 0), 0, "{bad:?}");
            assert!(take(&mut s, &vm(1), 1, 0).is_some(), "{bad:?}");
            assert_eq!(count(&mut s, 0), 1, "{bad:?}");
        }
        let mut s = FakeStore::default();
        prepare(&mut s, "cc").unwrap();
        for owner in 0..MAX_OWNERS as u64 {
            assert!(take(&mut s, &vm(owner), 1000, 0).is_some());
        }
        assert_eq!(
            take(&mut s, &vm(999), 1000, 0),
            None,
            "one owner too many waits"
        );
        assert!(
            take(&mut s, &vm(0), 1000, 0).is_some(),
            "known owners go on"
        );
        assert_eq!(count(&mut s, 0), MAX_OWNERS as u32 + 1);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_count_with_trailing_bytes_or_too_many_owners_reads_as_empty() {
        let one = Entry {
            owner: 1,
            count: 3,
            deadline: u64::MAX,
            epoch: 9,
        };
        let mut s = FakeStore::default();
        s.set("cc", &encode(&[one]), None).unwrap();
        assert_eq!(count(&mut s, 0), 3, "well formed");
        let mut torn = encode(&[one]);
        torn.push(0);
        s.set("cc", &torn, None).unwrap();
        assert_eq!(count(&mut s, 0), 0, "a torn record");
        let many: Vec<Entry> = (0..=MAX_OWNERS as u64)
            .map(|owner| Entry { owner, ..one })
            .collect();
        s.set("cc", &encode(&many[..MAX_OWNERS]), None).unwrap();
        assert_eq!(count(&mut s, 0), 3 * MAX_OWNERS as u32);
        s.set("cc", &encode(&many), None).unwrap();
        assert_eq!(count(&mut s, 0), 0, "one owner too many");
        // Owners holding nothing take no place: a full list of them leaves room.
        let idle: Vec<Entry> = (0..MAX_OWNERS as u64)
            .map(|owner| Entry {
                owner,
                count: 0,
                ..one
            })
            .collect();
        s.set("cc", &encode(&idle), None).unwrap();
        assert!(take(&mut s, &vm(1000), 10, 0).is_some());
        assert_eq!(
            s.data["cc"].0.len(),
            1 + ENTRY,
            "only the new owner is kept"
        );
    }
}
