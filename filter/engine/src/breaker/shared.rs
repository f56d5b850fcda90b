//! The in-flight count of the concurrency limit, in the CAS store. (The breaker
//! state itself goes through each worker's [`super::local::Local`].)
//!
//! The count is kept per owner: each VM takes its slots under its own random id
//! and stamps its entry with a deadline, [`RECLAIM_NS`] ahead, which it pushes
//! forward whenever it takes or gives back a slot and on its tick while it holds
//! any ([`Slots::refresh_due`]). A VM that traps never runs `on_log` for the
//! requests it had in flight, nor its tick again: once its deadline passes, every
//! worker's next read counts its entry as gone, so a dead VM's slots come back
//! after at most [`RECLAIM_NS`]. A live VM's late give-back after its entry was
//! reclaimed (no tick for that long) gives back nothing: the count never drops
//! below what live owners hold.
//!
//! Layout: a version byte, then per owner `owner u64, count u32, deadline u64`,
//! little endian. Anything else (another version, a torn or truncated value) reads
//! as no owner at all: the next write starts the count afresh.

use std::cell::Cell;

use crate::le::{u32_at, u64_at};
use crate::store::{update, SharedStore, StoreError};

/// How long an owner's slots outlive its last sign of life (10 s).
pub const RECLAIM_NS: u64 = 10_000_000_000;
/// Most owners one count holds (VMs with slots at once); a request that would be
/// the next one's first is refused as if the limit were reached.
pub const MAX_OWNERS: usize = 64;
const VERSION: u8 = 2;
const ENTRY: usize = 20;

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
            (count > 0 && deadline >= now).then_some(Entry {
                owner,
                count,
                deadline,
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
    }
    out
}

fn total(entries: &[Entry]) -> u32 {
    entries.iter().fold(0, |n, e| n.saturating_add(e.count))
}

/// Takes an in-flight slot for `s`'s owner if fewer than `max` live ones are
/// taken. `Ok(false)`: full.
pub fn acquire(
    store: &mut impl SharedStore,
    s: &Slots,
    max: u32,
    now: u64,
) -> Result<bool, StoreError> {
    let owner = s.owner.get();
    let deadline = now.saturating_add(RECLAIM_NS);
    let taken = update(store, &s.key, |bytes| {
        let mut entries = live(bytes, now);
        if total(&entries) >= max {
            return (None, false);
        }
        let full = entries.len() >= MAX_OWNERS;
        match entries.iter_mut().find(|e| e.owner == owner) {
            Some(e) => {
                e.count += 1;
                e.deadline = deadline;
            }
            None if full => return (None, false),
            None => entries.push(Entry {
                owner,
                count: 1,
                deadline,
            }),
        }
        (Some(encode(&entries)), true)
    })?;
    if taken {
        s.held.set(s.held.get() + 1);
        s.stamped.set(now);
    }
    Ok(taken)
}

/// Gives one of `s`'s owner's slots back (none when its entry was reclaimed).
pub fn release(store: &mut impl SharedStore, s: &Slots, now: u64) -> Result<(), StoreError> {
    s.held.set(s.held.get().saturating_sub(1));
    stamp(store, s, now, 1)
}

/// Pushes `s`'s owner's deadline forward (the tick, while it holds slots).
pub fn refresh(store: &mut impl SharedStore, s: &Slots, now: u64) -> Result<(), StoreError> {
    stamp(store, s, now, 0)
}

fn stamp(
    store: &mut impl SharedStore,
    s: &Slots,
    now: u64,
    give_back: u32,
) -> Result<(), StoreError> {
    let owner = s.owner.get();
    update(store, &s.key, |bytes| {
        let mut entries = live(bytes, now);
        let Some(i) = entries.iter().position(|e| e.owner == owner) else {
            return (None, ());
        };
        if let Some(e) = entries.get_mut(i) {
            e.count -= give_back.min(e.count);
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
    use crate::store::fake::FakeStore;
    use wasm_bindgen_test::wasm_bindgen_test;

    const SEC: u64 = 1_000_000_000;

    /// Two workers: the next read of the second returns what the key held before
    /// the first one's write landed (both read, then both write).
    struct Racing {
        store: FakeStore,
        stale: Option<(Option<Vec<u8>>, Option<u32>)>,
    }

    impl SharedStore for Racing {
        fn get(&mut self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), StoreError> {
            match self.stale.take() {
                Some(s) => Ok(s),
                None => self.store.get(key),
            }
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.store.set(key, value, cas)
        }
    }

    fn vm(owner: u64) -> Slots {
        let s = Slots::new("cc".into());
        s.owner.set(owner);
        s
    }

    fn two_racing_first_slots(prepared: bool) -> u32 {
        let mut r = Racing {
            store: FakeStore::default(),
            stale: None,
        };
        if prepared {
            prepare(&mut r, "cc").unwrap();
        }
        let before = r.get("cc").unwrap();
        assert!(acquire(&mut r, &vm(1), 2, SEC).unwrap(), "first worker");
        r.stale = Some(before);
        assert!(acquire(&mut r, &vm(2), 2, SEC).unwrap(), "second worker");
        in_flight(&mut r, "cc", SEC).unwrap()
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
        assert!(acquire(&mut s, &vm(1), 5, SEC).unwrap());
        prepare(&mut s, "cc").unwrap();
        assert_eq!(
            in_flight(&mut s, "cc", SEC).unwrap(),
            1,
            "a reload keeps requests in flight"
        );
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn the_limit_counts_every_owner_and_each_gives_back_only_its_own() {
        let mut s = FakeStore::default();
        prepare(&mut s, "cc").unwrap();
        let (a, b) = (vm(1), vm(2));
        assert!(acquire(&mut s, &a, 3, SEC).unwrap());
        assert!(acquire(&mut s, &a, 3, SEC).unwrap());
        assert!(acquire(&mut s, &b, 3, SEC).unwrap());
        assert!(!acquire(&mut s, &b, 3, SEC).unwrap(), "3 of 3 taken");
        assert_eq!((a.held.get(), b.held.get()), (2, 1));
        release(&mut s, &b, SEC).unwrap();
        release(&mut s, &b, SEC).unwrap(); // one more than it holds: nothing
        assert_eq!(in_flight(&mut s, "cc", SEC).unwrap(), 2);
        assert_eq!(b.held.get(), 0);
        release(&mut s, &a, SEC).unwrap();
        release(&mut s, &a, SEC).unwrap();
        assert_eq!(in_flight(&mut s, "cc", SEC).unwrap(), 0);
        assert_eq!(s.data["cc"].0, vec![VERSION], "owners without slots leave");
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_dead_owners_slots_come_back_after_the_reclaim_window() {
        let mut s = FakeStore::default();
        prepare(&mut s, "cc").unwrap();
        let (dead, live_vm) = (vm(7), vm(8));
        for _ in 0..4 {
            assert!(acquire(&mut s, &dead, 4, SEC).unwrap());
        }
        // The VM traps: no release, no tick. Until its deadline the slots count.
        let last = SEC + RECLAIM_NS;
        assert!(!acquire(&mut s, &live_vm, 4, last).unwrap());
        assert_eq!(in_flight(&mut s, "cc", last).unwrap(), 4);
        // One nanosecond later they are gone for every reader.
        assert_eq!(in_flight(&mut s, "cc", last + 1).unwrap(), 0);
        for _ in 0..4 {
            assert!(acquire(&mut s, &live_vm, 4, last + 1).unwrap());
        }
        assert!(!acquire(&mut s, &live_vm, 4, last + 1).unwrap());
        // The dead VM's give-back, should it ever come, takes nothing from others.
        release(&mut s, &dead, last + 2).unwrap();
        assert_eq!(in_flight(&mut s, "cc", last + 2).unwrap(), 4);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_live_owner_keeps_its_slots_by_refreshing() {
        let mut s = FakeStore::default();
        prepare(&mut s, "cc").unwrap();
        let a = vm(3);
        assert!(acquire(&mut s, &a, 1, 0).unwrap());
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
        assert_eq!(in_flight(&mut s, "cc", now + RECLAIM_NS).unwrap(), 1);
        assert!(!acquire(&mut s, &vm(4), 1, now).unwrap());
        release(&mut s, &a, now).unwrap();
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
            &[1, 0, 0, 0][..], // the old layout: a bare u32
            &[VERSION, 1, 2, 3][..],
            &[3u8; 21][..],
        ] {
            let mut s = FakeStore::default();
            s.set("cc", bad, None).unwrap();
            assert_eq!(in_flight(&mut s, "cc", 0).unwrap(), 0, "{bad:?}");
            assert!(acquire(&mut s, &vm(1), 1, 0).unwrap(), "{bad:?}");
            assert_eq!(in_flight(&mut s, "cc", 0).unwrap(), 1, "{bad:?}");
        }
        let mut s = FakeStore::default();
        prepare(&mut s, "cc").unwrap();
        for owner in 0..MAX_OWNERS as u64 {
            assert!(acquire(&mut s, &vm(owner), 1000, 0).unwrap());
        }
        assert!(
            !acquire(&mut s, &vm(999), 1000, 0).unwrap(),
            "owner 65 waits"
        );
        assert!(
            acquire(&mut s, &vm(0), 1000, 0).unwrap(),
            "known owners go on"
        );
        assert_eq!(in_flight(&mut s, "cc", 0).unwrap(), 65);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_count_with_trailing_bytes_or_too_many_owners_reads_as_empty() {
        let one = Entry {
            owner: 1,
            count: 3,
            deadline: u64::MAX,
        };
        let mut s = FakeStore::default();
        s.set("cc", &encode(&[one]), None).unwrap();
        assert_eq!(in_flight(&mut s, "cc", 0).unwrap(), 3, "well formed");
        let mut torn = encode(&[one]);
        torn.push(0);
        s.set("cc", &torn, None).unwrap();
        assert_eq!(in_flight(&mut s, "cc", 0).unwrap(), 0, "a torn record");
        let many: Vec<Entry> = (0..=MAX_OWNERS as u64)
            .map(|owner| Entry { owner, ..one })
            .collect();
        s.set("cc", &encode(&many[..MAX_OWNERS]), None).unwrap();
        assert_eq!(in_flight(&mut s, "cc", 0).unwrap(), 3 * MAX_OWNERS as u32);
        s.set("cc", &encode(&many), None).unwrap();
        assert_eq!(in_flight(&mut s, "cc", 0).unwrap(), 0, "65 owners");
        // Owners holding nothing take no place: 64 of them leave room for more.
        let idle: Vec<Entry> = (0..MAX_OWNERS as u64)
            .map(|owner| Entry { owner, count: 0, ..one })
            .collect();
        s.set("cc", &encode(&idle), None).unwrap();
        assert!(acquire(&mut s, &vm(1000), 10, 0).unwrap());
        assert_eq!(s.data["cc"].0.len(), 1 + ENTRY, "only the new owner is kept");
    }
}
