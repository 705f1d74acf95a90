//! Small pieces the real-process tests share: an SDK client without retries, random payloads,
//! waiting for a volume to settle, and the read-back check that allows writes of unknown outcome.

use std::time::Duration;

use dagraid_client::{Client, ClientOptions, RetryPolicy, VolumeInfo, VolumeState};
use rand::Rng;
use rand::rngs::StdRng;

use crate::cluster::Cluster;
use crate::eventually;

/// Writes whose outcome is unknown (cut by a crash or a fault): offset and data.
pub type UnknownWrites = Vec<(u64, Vec<u8>)>;

/// An SDK client of `cluster`'s coordinator: its token, a 20 s request timeout, no retries (a
/// test decides what a failed call means).
pub async fn client(cluster: &Cluster) -> Client {
    Client::connect(
        cluster.url(),
        ClientOptions {
            request_timeout: Duration::from_secs(20),
            retry: RetryPolicy::none(),
            ..cluster.client_options()
        },
    )
    .await
    .expect("connect to the coordinator")
}

/// `len` random bytes.
pub fn random(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// Waits (up to 120 s) until `volume` is assembled and its resync, if any, has ended.
pub async fn settled(c: &Client, volume: &str) -> VolumeInfo {
    eventually(
        &format!("{volume} assembled with its resync done"),
        Duration::from_secs(120),
        || async {
            let v = c.volume(volume).status().await.ok()?;
            let resyncing =
                v.state == VolumeState::Resyncing || v.resync.as_ref().is_some_and(|r| r.running);
            (!resyncing && v.state != VolumeState::NotAssembled).then_some(v)
        },
    )
    .await
}

/// Checks `got` against `reference` (every acknowledged write applied), except inside the
/// writes of unknown outcome, where each byte is the old or the new one. Panics at the first
/// byte that is neither.
pub fn check_acknowledged(got: &[u8], reference: &[u8], unknown: &[(u64, Vec<u8>)]) {
    assert_eq!(got.len(), reference.len());
    let mut maybe: Vec<Option<u8>> = vec![None; got.len()];
    for (off, data) in unknown {
        for (i, b) in data.iter().enumerate() {
            maybe[*off as usize + i] = Some(*b);
        }
    }
    for (i, (&g, &r)) in got.iter().zip(reference).enumerate() {
        assert!(
            g == r || maybe[i] == Some(g),
            "byte {i} is {g:#x}; acknowledged {r:#x}, in flight {:?}",
            maybe[i]
        );
    }
}
