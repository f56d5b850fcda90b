//! What one Envoy keeps of a fleet rollout in its shared data (one entry per
//! rollout, every worker folding into it with one compare-and-swap per tick, as
//! for a rollout judged alone): its identity for the service, the counts not
//! yet sent, the batch sent and not yet acknowledged, the fleet's state as last
//! read, and its own record for the times the service cannot be reached.
//!
//! Also the one entry per plugin that says which worker syncs next and when.

use crate::analysis::rollout::{put_counts, read_counts, Cause, Counts, Record};
use crate::le::Reader;

const VERSION: u8 = 1;

/// A batch sent to the service and not yet acknowledged: it is sent again, the
/// same, until it is (the service folds it once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Its sequence number (from 1, per Envoy and rollout).
    pub seq: u64,
    /// Per variant, baseline first.
    pub counts: Vec<Counts>,
    /// Verdicts this Envoy reached alone while the service was unreachable:
    /// (variant index from 1, cause).
    pub local: Vec<(usize, Cause)>,
}

/// One Envoy's side of a fleet rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// This Envoy's id in the service (random, drawn when the entry was made:
    /// once per Envoy process, since shared data lives as long as the process).
    pub envoy: u64,
    /// When the entry was made, ns.
    pub created: u64,
    /// The last sequence number given to a batch.
    pub seq: u64,
    /// Sent, not yet acknowledged.
    pub inflight: Option<Batch>,
    /// Counted since the last batch was made (per variant, baseline first).
    pub outbox: Vec<Counts>,
    /// When the service last answered for this rollout, ns (0: never).
    pub answered: u64,
    /// The version of the fleet state held (0: none yet).
    pub version: u64,
    /// The fleet's state as last read (see `wire::mirror`).
    pub fleet: Option<Record>,
    /// This Envoy's own record: judged only while the service is unreachable
    /// (`whileUnreachable: local`).
    pub local: Record,
}

impl Link {
    /// A fresh link for a policy of `variants` variants.
    pub fn new(variants: usize, envoy: u64, now: u64) -> Link {
        Link {
            envoy,
            created: now,
            seq: 0,
            inflight: None,
            outbox: vec![Counts::default(); variants],
            answered: 0,
            version: 0,
            fleet: None,
            local: Record::new(variants),
        }
    }

    /// Bytes for shared data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.outbox.len() * 48);
        out.push(VERSION);
        out.extend_from_slice(&(self.outbox.len() as u16).to_le_bytes());
        for n in [
            self.envoy,
            self.created,
            self.seq,
            self.answered,
            self.version,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for c in &self.outbox {
            put_counts(&mut out, c);
        }
        match &self.inflight {
            None => out.push(0),
            Some(b) => {
                out.push(1);
                out.extend_from_slice(&b.seq.to_le_bytes());
                for c in &b.counts {
                    put_counts(&mut out, c);
                }
                out.push(b.local.len().min(255) as u8);
                for (v, cause) in b.local.iter().take(255) {
                    out.push((*v).min(255) as u8);
                    out.push(cause.code());
                }
            }
        }
        put_record(&mut out, Some(&self.local));
        put_record(&mut out, self.fleet.as_ref());
        out
    }

    /// Decodes what [`Link::encode`] wrote for a policy of `variants` variants;
    /// `None` when the bytes are not such a link (corrupt, another version's).
    pub fn decode(bytes: &[u8], variants: usize) -> Option<Link> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION || usize::from(r.u16()?) != variants {
            return None;
        }
        let (envoy, created, seq, answered, version) =
            (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let outbox = read_counts_n(&mut r, variants)?;
        let inflight = match r.u8()? {
            0 => None,
            1 => {
                let seq = r.u64()?;
                let counts = read_counts_n(&mut r, variants)?;
                let mut local = Vec::new();
                for _ in 0..r.u8()? {
                    local.push((usize::from(r.u8()?), Cause::from_code(r.u8()?)?));
                }
                Some(Batch { seq, counts, local })
            }
            _ => return None,
        };
        let local = read_record(&mut r, variants)??;
        let fleet = read_record(&mut r, variants)?;
        r.done().then_some(Link {
            envoy,
            created,
            seq,
            inflight,
            outbox,
            answered,
            version,
            fleet,
            local,
        })
    }
}

fn read_counts_n(r: &mut Reader<'_>, n: usize) -> Option<Vec<Counts>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(read_counts(r)?);
    }
    Some(out)
}

fn put_record(out: &mut Vec<u8>, rec: Option<&Record>) {
    let bytes = rec.map(Record::encode).unwrap_or_default();
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&bytes);
}

/// `Some(None)`: no record stored; `None`: unreadable.
fn read_record(r: &mut Reader<'_>, variants: usize) -> Option<Option<Record>> {
    let len = usize::try_from(r.u32()?).ok()?;
    if len == 0 {
        return Some(None);
    }
    Record::decode(r.bytes(len)?, variants).map(Some)
}

/// Which worker syncs next, and when: one entry per plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncSlot {
    /// When the next sync is due, ns.
    pub next: u64,
    /// The worker (its VM's id) that made the last sync.
    pub owner: u64,
    /// When that sync was sent, ns (0: it is over, answered or failed).
    pub sent: u64,
}

impl SyncSlot {
    /// Bytes for shared data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(25);
        out.push(VERSION);
        for n in [self.next, self.owner, self.sent] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out
    }

    /// Decodes what [`SyncSlot::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Option<SyncSlot> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return None;
        }
        let slot = SyncSlot {
            next: r.u64()?,
            owner: r.u64()?,
            sent: r.u64()?,
        };
        r.done().then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::rollout::Verdict;
    use wasm_bindgen_test::wasm_bindgen_test;

    fn full() -> Link {
        let mut l = Link::new(3, 0xfeed, 5);
        l.seq = 9;
        l.answered = 77;
        l.version = 12;
        l.outbox[2] = Counts {
            n: 3,
            errors: 2,
            slow: 1,
        };
        l.inflight = Some(Batch {
            seq: 9,
            counts: vec![
                Counts {
                    n: 10,
                    errors: 1,
                    slow: 0
                };
                3
            ],
            local: vec![(2, Cause::Slow)],
        });
        let mut fleet = Record::new(3);
        fleet.step = 2;
        fleet.variants[1].verdict = Some(Verdict {
            cause: Cause::Errors,
            at: 3,
            shadow: false,
            since: 0,
        });
        l.fleet = Some(fleet);
        l.local.baseline.n = 40;
        l
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_link_reads_back_what_was_written() {
        for l in [Link::new(2, 1, 2), full()] {
            let n = l.outbox.len();
            assert_eq!(Link::decode(&l.encode(), n), Some(l));
        }
        let s = SyncSlot {
            next: 1,
            owner: 2,
            sent: 3,
        };
        assert_eq!(SyncSlot::decode(&s.encode()), Some(s));
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn any_truncation_or_another_shape_reads_as_unreadable() {
        let bytes = full().encode();
        for cut in 0..bytes.len() {
            assert_eq!(Link::decode(&bytes[..cut], 3), None, "cut at {cut}");
        }
        assert_eq!(Link::decode(&bytes, 2), None, "another policy's shape");
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Link::decode(&longer, 3), None);
        let mut other = bytes;
        other[0] = 2;
        assert_eq!(Link::decode(&other, 3), None, "another version");
        let slot = SyncSlot::default().encode();
        for cut in 0..slot.len() {
            assert_eq!(SyncSlot::decode(&slot[..cut]), None);
        }
    }
}
