//! Run ids: time-ordered, unique, printed as 32 hex digits; and the fast random numbers they
//! (and retry jitter) draw from.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// A run's identifier: 48 bits of milliseconds since the Unix epoch, then 80 random bits, shown
/// as 32 hex digits, so ids sort by start time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(u128);

impl RunId {
    /// A new, unique, time-ordered id: 48 bits of milliseconds, a 16-bit sequence within the
    /// millisecond, 64 random bits. Ids made by one process sort in the order they were made,
    /// also within one millisecond (and if the clock steps back).
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        /// The last id's milliseconds and sequence, `ms << 16 | seq`.
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            & 0xffff_ffff_ffff;
        let mut last = LAST.load(Ordering::Relaxed);
        let stamp = loop {
            let next = if now > last >> 16 {
                now << 16
            } else {
                last + 1
            };
            match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break next,
                Err(seen) => last = seen,
            }
        };
        RunId((u128::from(stamp) << 64) | u128::from(random_u64()))
    }

    /// The id as a number.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    pub(crate) const fn from_u128(id: u128) -> Self {
        RunId(id)
    }
}

impl RunId {
    /// The id's 32 hex digits, zero-padded (what [`Display`](fmt::Display) prints), on the
    /// stack: for a store that writes ids as text, without a `String` per write.
    pub(crate) fn hex(self) -> HexId {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 32];
        let mut rest = self.0;
        for d in digits.iter_mut().rev() {
            *d = DIGITS[(rest & 0xf) as usize];
            rest >>= 4;
        }
        HexId(digits)
    }
}

/// A run id's 32 hex digits ([`RunId::hex`]).
#[derive(Clone, Copy)]
pub(crate) struct HexId([u8; 32]);

impl HexId {
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits are written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
    }
}

impl fmt::Debug for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunId({self})")
    }
}

impl FromStr for RunId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 {
            return Err(format!("run id `{s}` must be 32 hex digits"));
        }
        u128::from_str_radix(s, 16)
            .map(RunId)
            .map_err(|_| format!("run id `{s}` is not hex"))
    }
}

impl serde::Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

thread_local! {
    /// This thread's xorshift state, seeded from the OS's hasher keys and the time.
    static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0));
        h.finish() | 1
    });
}

/// Makes this thread's random numbers a fixed sequence (the test harness: the same backoff
/// jitter on every run of a test).
#[cfg(feature = "testing")]
pub(crate) fn seed_random(seed: u64) {
    STATE.with(|s| s.set(seed | 1));
}

/// A fast, non-cryptographic random number (jitter, run ids).
pub(crate) fn random_u64() -> u64 {
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// The idempotency key of the run that `upstream`'s success starts (per downstream workflow).
pub(crate) fn chain_key(upstream: RunId) -> String {
    format!("after:{upstream}")
}

/// The id of the run of `workflow` that `upstream`'s success starts: the upstream's time, and
/// random bits derived from the pair, so that the runner and the journal agree on it without
/// sharing state.
pub(crate) fn chained_run_id(upstream: RunId, workflow: &str) -> RunId {
    // FNV-1a, twice with different offsets: stable, and enough to make the pair unique.
    let fnv = |offset: u64| {
        let mut h = offset;
        for b in upstream
            .as_u128()
            .to_le_bytes()
            .iter()
            .chain(workflow.as_bytes())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let time = upstream.as_u128() >> 80;
    let random = (u128::from(fnv(0xcbf2_9ce4_8422_2325)) << 16)
        | u128::from(fnv(0x6c62_272e_07bb_0142) & 0xffff);
    RunId::from_u128((time << 80) | random)
}

/// Hashes a [`RunId`] for a map keyed by run ids made by runners: its low 64 bits are random
/// already (for an id of a chained run, derived from a hash), so they are the hash, where the
/// standard hasher would cost tens of nanoseconds per lookup (issue 16).
#[derive(Default)]
pub(crate) struct RunIdHasher(u64);

impl std::hash::Hasher for RunIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u128(&mut self, id: u128) {
        self.0 ^= id as u64;
    }

    /// Other keys (never a `RunId`) still hash, with FNV-1a.
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0 ^ 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A map from run ids, hashed by [`RunIdHasher`].
pub(crate) type RunIdMap<V> =
    std::collections::HashMap<RunId, V, std::hash::BuildHasherDefault<RunIdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_are_the_displayed_id() {
        for id in [
            RunId(0),
            RunId(u128::MAX),
            RunId(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
            RunId::new(),
        ] {
            assert_eq!(id.hex().as_str(), format!("{:032x}", id.as_u128()));
            assert_eq!(id.to_string(), format!("{:032x}", id.as_u128()));
        }
    }
}
