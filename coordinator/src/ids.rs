//! Where the coordinator's random ids come from: volume ids, spare ids and the suffixes of
//! replacement components.
//!
//! A coordinator binary draws them from the operating system's randomness, so ids never repeat
//! across coordinators, restarts or clusters. The deterministic simulation hands in a seed
//! (`CoordinatorSetup::id_seed`): the ids then come from that seed and the owner epoch of the
//! coordinator's life (each life draws other ids, as a component created in one life must not
//! be created again under the same id in the next), so a run's ids are the same every time its
//! seed runs.

use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A source of random ids (see the module doc).
#[derive(Debug)]
pub struct IdSource {
    /// `None`: the operating system's randomness.
    seeded: Option<Mutex<StdRng>>,
}

impl Default for IdSource {
    fn default() -> Self {
        Self::os()
    }
}

impl IdSource {
    /// Ids from the operating system's randomness (what the binaries use).
    pub fn os() -> Self {
        Self { seeded: None }
    }

    /// Ids from `seed` and the owner `epoch` of this coordinator's life: the same sequence for
    /// the same pair, another for another epoch.
    pub fn seeded(seed: u64, epoch: u64) -> Self {
        // Mixed so that neighbouring seeds and epochs give unrelated streams.
        let mixed = seed ^ epoch.rotate_left(32).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Self {
            seeded: Some(Mutex::new(StdRng::seed_from_u64(mixed))),
        }
    }

    /// The next 64 random bits.
    pub fn u64(&self) -> u64 {
        match &self.seeded {
            None => rand::random::<u64>(),
            Some(rng) => rng.lock().unwrap_or_else(|p| p.into_inner()).random(),
        }
    }

    /// The next 32 random bits.
    pub fn u32(&self) -> u32 {
        match &self.seeded {
            None => rand::random::<u32>(),
            Some(rng) => rng.lock().unwrap_or_else(|p| p.into_inner()).random(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_and_epoch_give_the_same_ids_and_another_epoch_others() {
        let draw = |ids: IdSource| (ids.u64(), ids.u32(), ids.u64());
        let step = 1u64 << 32;
        assert_eq!(
            draw(IdSource::seeded(7, step)),
            draw(IdSource::seeded(7, step))
        );
        assert_ne!(
            draw(IdSource::seeded(7, step)),
            draw(IdSource::seeded(7, 2 * step))
        );
        assert_ne!(
            draw(IdSource::seeded(7, step)),
            draw(IdSource::seeded(8, step))
        );
    }
}
