//! Engine tests: every DAG shape of RAIDFRAME.md with a fault at every disk node, random DAGs under
//! random fault schedules, cancellation, concurrency, and the spans of every firing.

pub(crate) mod capture;
mod misc;
mod props;
mod shapes;

use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Engine, EngineConfig};
use crate::io::ComponentIo;
use crate::testing::{FaultyComponent, IoLog, MemComponent};

/// Block size of the test components: small, so buffers are cheap.
const BS: u32 = 16;
/// Blocks per test component.
const BLOCKS: u64 = 64;

/// Components of one test: in-memory storage behind fault injectors sharing one log.
struct Rig {
    log: IoLog,
    mems: Vec<Arc<MemComponent>>,
    faulty: Vec<Arc<FaultyComponent>>,
}

impl Rig {
    /// `n` components; block `b` of component `c` is filled with byte `c * 64 + b`.
    fn new(n: usize) -> Self {
        capture::install_router();
        let log = IoLog::new();
        let mems: Vec<_> = (0..n)
            .map(|c| {
                MemComponent::filled(format!("c{c}"), BS, BLOCKS, move |b| {
                    (c as u64 * 64 + b) as u8
                })
            })
            .collect();
        let faulty = mems
            .iter()
            .map(|m| FaultyComponent::new(m.clone() as Arc<dyn ComponentIo>, log.clone()))
            .collect();
        Rig { log, mems, faulty }
    }

    fn table(&self) -> Vec<Arc<dyn ComponentIo>> {
        self.faulty
            .iter()
            .map(|f| f.clone() as Arc<dyn ComponentIo>)
            .collect()
    }

    fn snapshot(&self) -> Vec<Vec<u8>> {
        self.mems.iter().map(|m| m.contents()).collect()
    }
}

/// One block of `value` bytes.
fn block(value: u8) -> Vec<u8> {
    vec![value; BS as usize]
}

fn xor(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![0u8; parts[0].len()];
    for p in parts {
        for (o, b) in out.iter_mut().zip(p.iter()) {
            *o ^= b;
        }
    }
    out
}

/// An engine with a short deadline, for tests under paused time.
fn engine() -> Engine {
    capture::install_router();
    Engine::new(EngineConfig {
        node_deadline: Duration::from_secs(1),
    })
}
