//! Reconstruction (issue 19) on real processes: a node killed (kill -9) under a write load is
//! rebuilt onto a hot spare by itself and another node may then go; a coordinator killed during
//! a reconstruction resumes it from its checkpoint, and one killed during a copyback resumes
//! that from its checkpoint too; RAID 6 rebuilds two columns onto two
//! spares; a column is rebuilt in place onto a node that came back with an empty disk; a
//! copyback under writes returns the spare to the pool; a bad block on a surviving column is
//! recorded lost (exactly its bytes) while the rest is rebuilt; a volume with no spare that fits
//! stays degraded and says why. Every test ends with a full read-back of every acknowledged
//! byte and the column checker over the volume's current members (a rebuilt column lives on
//! its spare's node).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dagraid_client::{Client, ClientError, ClientOptions, RaidLevel, RetryPolicy, VolumeSpec};
use dagraid_proto::volume::v1 as vpb;
use dagraid_tests::cluster::{Cluster, ClusterOptions, RawVolumeClient, layout_of};
use dagraid_tests::{eventually, with_timeout};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const BS: u64 = 4096;

async fn client(cluster: &Cluster) -> Client {
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

/// A cluster of `nodes` processes with the coordinator's down-out delay and rebuild rate.
async fn start(nodes: usize, down_out_ms: u64, rate: Option<u64>) -> Cluster {
    Cluster::start(ClusterOptions {
        nodes,
        down_out_delay_ms: Some(down_out_ms),
        rebuild_rate: rate,
        coordinator_args: vec!["--assembly-wait-ms".into(), "3000".into()],
        ..ClusterOptions::default()
    })
    .await
    .expect("start the cluster")
}

async fn volume(cluster: &Cluster, name: &str) -> vpb::Volume {
    cluster
        .volume_client()
        .await
        .unwrap()
        .get_volume(name)
        .await
        .unwrap()
}

/// Volume `name`, or `None` while the coordinator does not answer (for `eventually`).
async fn try_volume(cluster: &Cluster, name: &str) -> Option<vpb::Volume> {
    cluster
        .volume_client()
        .await
        .ok()?
        .get_volume(name)
        .await
        .ok()
}

/// Waits until the running job of `column` shows a durable checkpoint above stripe 0 and
/// answers it.
async fn durable_checkpoint(cluster: &Cluster, column: u32, what: &str) -> u64 {
    eventually(what, Duration::from_secs(60), || async {
        let v = try_volume(cluster, "vol").await?;
        let r = rebuild_of(&v, column);
        (r.running && r.stripes_checkpointed > 0).then_some(r.stripes_checkpointed)
    })
    .await
}

/// The raw API calls of the spare pool and the rebuilds (the SDK has none yet).
async fn raw(cluster: &Cluster) -> RawVolumeClient {
    cluster.volume_client().await.unwrap()
}

async fn add_spare(cluster: &Cluster, node: &str, size_bytes: u64) -> vpb::Spare {
    let mut r = raw(cluster).await;
    let req = r.request(vpb::AddSpareRequest {
        node_id: node.into(),
        size_bytes,
        block_size: 0,
    });
    r.inner.add_spare(req).await.unwrap().into_inner()
}

async fn list_spares(cluster: &Cluster) -> Vec<vpb::Spare> {
    let mut r = raw(cluster).await;
    let req = r.request(vpb::ListSparesRequest {});
    r.inner.list_spares(req).await.unwrap().into_inner().spares
}

/// Creates `name` over `nodes` (column order) and fills it with random bytes: the model.
async fn create_filled(
    c: &Client,
    name: &str,
    level: RaidLevel,
    size: u64,
    nodes: &[&str],
    seed: u64,
) -> Vec<u8> {
    let mut spec = VolumeSpec::new(name, level, size)
        .columns(nodes.len() as u32)
        .stripe_unit_bytes(64 * KIB);
    spec.nodes = nodes.iter().map(|n| n.to_string()).collect();
    let info = c.create_volume(spec).await.unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = vec![0u8; info.size_bytes as usize];
    rng.fill(&mut model[..]);
    let vol = c.volume(name);
    for (i, chunk) in model.chunks(MIB as usize).enumerate() {
        vol.write_at(i as u64 * MIB, Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    model
}

/// Reads the whole volume back and compares it with `model`, 1 MiB at a time.
async fn read_back(c: &Client, name: &str, model: &[u8]) {
    let vol = c.volume(name);
    let mut at = 0usize;
    while at < model.len() {
        let n = (MIB as usize).min(model.len() - at);
        let got = vol.read_at(at as u64, n).await.unwrap();
        if got[..] != model[at..at + n] {
            let first = (0..n).find(|&i| got[i] != model[at + i]).unwrap();
            panic!(
                "{name}: byte {} reads {:#x}, {:#x} was acknowledged",
                at + first,
                got[first],
                model[at + first]
            );
        }
        at += n;
    }
}

/// A writer under load: random 4 to 64 KiB writes at random block-aligned offsets, each one
/// repeated until acknowledged (the same bytes: a write of unknown outcome redone), so the
/// model holds exactly what the volume must read back.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(c: &Client, name: &str, model: Arc<Mutex<Vec<u8>>>, seed: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let vol = c.volume(name);
        let size = model.lock().unwrap().len() as u64;
        let (s, a) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            while !s.load(Ordering::Relaxed) {
                let blocks = rng.random_range(1..=16u64);
                let offset = rng.random_range(0..size / BS - blocks) * BS;
                let mut data = vec![0u8; (blocks * BS) as usize];
                rng.fill(&mut data[..]);
                let data = Bytes::from(data);
                let mut tries = 0;
                loop {
                    match vol.write_at(offset, data.clone()).await {
                        Ok(()) => break,
                        Err(e) => {
                            tries += 1;
                            assert!(tries < 100, "write {offset}+{} failed: {e}", data.len());
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                model.lock().unwrap()[offset as usize..offset as usize + data.len()]
                    .copy_from_slice(&data);
                a.fetch_add(1, Ordering::Relaxed);
            }
        });
        Load { stop, acked, task }
    }

    /// Waits until `n` more writes were acknowledged.
    async fn wait_writes(&self, n: u64) {
        let from = self.acked.load(Ordering::Relaxed);
        eventually("writes acknowledged", Duration::from_secs(60), || async {
            (self.acked.load(Ordering::Relaxed) >= from + n).then_some(())
        })
        .await;
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the writer panicked");
        self.acked.load(Ordering::Relaxed)
    }
}

fn optimal(v: &vpb::Volume) -> bool {
    v.state() == vpb::VolumeState::Optimal
        && v.components
            .iter()
            .all(|c| c.state() == vpb::ComponentState::Optimal)
}

/// Waits until `name` is optimal with every rebuild of `columns` completed; returns it.
async fn healed(cluster: &Cluster, name: &str, columns: &[u32], timeout: Duration) -> vpb::Volume {
    eventually("the volume optimal again", timeout, || async {
        let v = cluster
            .volume_client()
            .await
            .ok()?
            .get_volume(name)
            .await
            .ok()?;
        let done = columns.iter().all(|c| {
            v.rebuilds
                .iter()
                .any(|r| r.column == *c && r.completed && !r.running)
        });
        (optimal(&v) && done).then_some(v)
    })
    .await
}

fn rebuild_of(v: &vpb::Volume, column: u32) -> &vpb::Rebuild {
    v.rebuilds
        .iter()
        .find(|r| r.column == column)
        .unwrap_or_else(|| panic!("no rebuild of column {column}: {:?}", v.rebuilds))
}

fn node_of(v: &vpb::Volume, column: usize) -> String {
    v.components[column].node_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_writes_is_rebuilt_onto_a_spare_then_another_node_may_go() {
    with_timeout(async {
        let mut cluster = start(5, 0, None).await;
        let c = client(&cluster).await;
        let nodes = ["node1", "node2", "node3", "node4"];
        let model = create_filled(&c, "vol", RaidLevel::Raid5, 8 * MIB, &nodes, 1).await;
        let before = volume(&cluster, "vol").await;
        let spare = add_spare(&cluster, "node5", 0).await;
        let model = Arc::new(Mutex::new(model));
        let load = Load::start(&c, "vol", model.clone(), 2);
        load.wait_writes(20).await;

        cluster
            .node_by_id_mut("node2")
            .unwrap()
            .kill9()
            .await
            .unwrap();
        // Writes go on while the column fails and is rebuilt.
        load.wait_writes(50).await;
        let v = healed(&cluster, "vol", &[1], Duration::from_secs(90)).await;
        load.wait_writes(20).await;
        let writes = load.stop().await;
        let model = model.lock().unwrap().clone();

        assert_eq!(node_of(&v, 1), "node5");
        assert_eq!(v.components[1].component_id, spare.id);
        assert_ne!(
            v.components[1].component_id,
            before.components[1].component_id
        );
        let r = rebuild_of(&v, 1);
        assert_eq!(r.kind(), vpb::RebuildKind::Spare, "{r:?}");
        assert_eq!(r.stripes_done, r.stripes_total, "{r:?}");
        assert_eq!(r.lost_blocks, 0, "{r:?}");
        assert!(v.rebuild_waiting.is_empty(), "{}", v.rebuild_waiting);
        let spares = list_spares(&cluster).await;
        assert_eq!((spares[0].volume.as_str(), spares[0].column), ("vol", 1));
        assert!(writes >= 90, "{writes} writes");
        read_back(&c, "vol", &model).await;
        cluster.check_columns("vol", &[]).await.unwrap();

        // The rebuild restored the redundancy: a different original node may go.
        cluster
            .node_by_id_mut("node3")
            .unwrap()
            .kill9()
            .await
            .unwrap();
        read_back(&c, "vol", &model).await;
        let v = volume(&cluster, "vol").await;
        assert_ne!(v.state(), vpb::VolumeState::Failed);
        cluster.check_columns("vol", &[2]).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_during_a_reconstruction_resumes_it_from_its_checkpoint() {
    with_timeout(async {
        // 256 KiB/s: the column's 2.7 MiB take about 11 s.
        let mut cluster = start(5, 0, Some(256 * KIB)).await;
        let c = client(&cluster).await;
        let nodes = ["node1", "node2", "node3", "node4"];
        let model = create_filled(&c, "vol", RaidLevel::Raid5, 8 * MIB, &nodes, 3).await;
        add_spare(&cluster, "node5", 0).await;
        cluster
            .node_by_id_mut("node4")
            .unwrap()
            .kill9()
            .await
            .unwrap();
        // A read reaches the dead node: its column fails, and is rebuilt onto the spare.
        read_back(&c, "vol", &model).await;
        let total = eventually(
            "a quarter of the stripes rebuilt",
            Duration::from_secs(60),
            || async {
                let v = try_volume(&cluster, "vol").await?;
                v.rebuilds
                    .iter()
                    .find(|r| r.column == 3 && r.running && r.stripes_done * 4 >= r.stripes_total)
                    .map(|r| r.stripes_total)
            },
        )
        .await;
        // A checkpoint above 0 made durable (about every second), the rebuild still running.
        let checkpointed = durable_checkpoint(&cluster, 3, "a checkpoint above stripe 0").await;
        let done_at_kill = rebuild_of(&volume(&cluster, "vol").await, 3).stripes_done;
        assert!(done_at_kill < total, "the rebuild ended before the kill");
        cluster.coordinator.kill9().await.unwrap();
        cluster.coordinator.restart().await.unwrap();

        let c = client(&cluster).await;
        let v = eventually(
            "the volume reassembled or refused",
            Duration::from_secs(60),
            || async {
                let v = try_volume(&cluster, "vol").await?;
                (v.state() != vpb::VolumeState::NotAssembled
                    || v.assembly.as_ref().is_some_and(|a| a.needs_force))
                .then_some(v)
            },
        )
        .await;
        // Not clean and a column not current, which the record already said: assembled by
        // itself, the partial-parity log replayed (docs/STATE.md), no force.
        assert_ne!(v.state(), vpb::VolumeState::NotAssembled, "{v:?}");
        assert!(
            v.assembly
                .as_ref()
                .is_none_or(|a| !a.needs_force && !a.forced),
            "{v:?}"
        );
        let v = healed(&cluster, "vol", &[3], Duration::from_secs(90)).await;
        let r = rebuild_of(&v, 3);
        assert!(r.completed && r.error.is_empty(), "{r:?}");
        assert!(
            r.resumed_from > 0 && r.resumed_from < r.stripes_total,
            "resumed from the checkpoint, not from 0 nor past the end: {r:?}"
        );
        assert!(r.resumed_from <= done_at_kill, "{r:?} vs {done_at_kill}");
        assert!(
            r.resumed_from >= checkpointed,
            "resumed below the checkpoint the API showed before the kill ({checkpointed}): {r:?}"
        );
        eprintln!(
            "resumed from stripe {} of {total} (at the kill: {done_at_kill}, checkpointed: {checkpointed})",
            r.resumed_from
        );
        assert_eq!(node_of(&v, 3), "node5");
        read_back(&c, "vol", &model).await;
        cluster.check_columns("vol", &[]).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raid6_rebuilds_two_killed_nodes_onto_two_spares() {
    with_timeout(async {
        let mut cluster = start(7, 0, None).await;
        let c = client(&cluster).await;
        let nodes = ["node1", "node2", "node3", "node4", "node5"];
        let model = create_filled(&c, "vol", RaidLevel::Raid6, 9 * MIB, &nodes, 4).await;
        let a = add_spare(&cluster, "node6", 0).await;
        let b = add_spare(&cluster, "node7", 0).await;
        let model = Arc::new(Mutex::new(model));
        let load = Load::start(&c, "vol", model.clone(), 5);
        load.wait_writes(10).await;
        cluster
            .node_by_id_mut("node2")
            .unwrap()
            .kill9()
            .await
            .unwrap();
        cluster
            .node_by_id_mut("node4")
            .unwrap()
            .kill9()
            .await
            .unwrap();
        load.wait_writes(30).await;
        let v = healed(&cluster, "vol", &[1, 3], Duration::from_secs(90)).await;
        load.stop().await;
        let model = model.lock().unwrap().clone();

        let mut on: Vec<String> = [1, 3].iter().map(|&c| node_of(&v, c)).collect();
        on.sort();
        assert_eq!(on, ["node6", "node7"]);
        let mut ids: Vec<&str> = [1, 3]
            .iter()
            .map(|&c| v.components[c].component_id.as_str())
            .collect();
        ids.sort();
        let mut spares = vec![a.id.as_str(), b.id.as_str()];
        spares.sort();
        assert_eq!(ids, spares);
        for column in [1, 3] {
            let r = rebuild_of(&v, column);
            assert_eq!(r.kind(), vpb::RebuildKind::Spare, "{r:?}");
            assert_eq!(r.stripes_done, r.stripes_total, "{r:?}");
        }
        read_back(&c, "vol", &model).await;
        cluster.check_columns("vol", &[]).await.unwrap();
        // Two columns' worth of redundancy again: two more original nodes may go.
        cluster
            .node_by_id_mut("node1")
            .unwrap()
            .kill9()
            .await
            .unwrap();
        cluster
            .node_by_id_mut("node5")
            .unwrap()
            .kill9()
            .await
            .unwrap();
        read_back(&c, "vol", &model).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_is_rebuilt_in_place_onto_a_node_back_with_an_empty_disk() {
    with_timeout(async {
        // No spare, and a long down-out delay: only the rebuild by hand runs.
        let mut cluster = start(4, 3_600_000, None).await;
        let c = client(&cluster).await;
        let nodes = ["node1", "node2", "node3", "node4"];
        let model = create_filled(&c, "vol", RaidLevel::Raid5, 8 * MIB, &nodes, 6).await;
        let before = volume(&cluster, "vol").await;
        let old = before.components[1].component_id.clone();

        let node = cluster.node_by_id_mut("node2").unwrap();
        node.kill9().await.unwrap();
        node.wipe_data_dir().unwrap();
        node.restart_on_same_port().await.unwrap();
        assert!(!node.component_file(&old).exists());
        // The column fails on its first access (the component is gone from the node).
        let model = Arc::new(Mutex::new(model));
        let load = Load::start(&c, "vol", model.clone(), 7);
        eventually("column 1 failed", Duration::from_secs(60), || async {
            let v = try_volume(&cluster, "vol").await?;
            (v.components[1].state() == vpb::ComponentState::Failed).then_some(())
        })
        .await;
        // The monitor's next round says why it waits.
        let waiting = eventually("a waiting reason", Duration::from_secs(30), || async {
            let v = try_volume(&cluster, "vol").await?;
            (!v.rebuild_waiting.is_empty()).then_some(v.rebuild_waiting)
        })
        .await;
        assert!(waiting.contains("down-out"), "{waiting}");
        let mut r = raw(&cluster).await;
        let req = r.request(vpb::RebuildColumnRequest {
            volume: "vol".into(),
            column: 1,
            in_place: true,
            ..Default::default()
        });
        r.inner.rebuild_column(req).await.unwrap();
        let v = healed(&cluster, "vol", &[1], Duration::from_secs(90)).await;
        load.wait_writes(10).await;
        load.stop().await;
        let model = model.lock().unwrap().clone();

        assert_eq!(node_of(&v, 1), "node2");
        let new = &v.components[1].component_id;
        assert_ne!(new, &old);
        assert!(
            cluster
                .node_by_id("node2")
                .unwrap()
                .component_file(new)
                .exists(),
            "the new component {new} is on node2"
        );
        let r = rebuild_of(&v, 1);
        assert_eq!(r.kind(), vpb::RebuildKind::InPlace, "{r:?}");
        assert_eq!(r.stripes_done, r.stripes_total, "{r:?}");
        read_back(&c, "vol", &model).await;
        cluster.check_columns("vol", &[]).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copyback_under_writes_moves_the_column_and_returns_the_spare_to_the_pool() {
    with_timeout(async {
        let mut cluster = start(6, 0, None).await;
        let c = client(&cluster).await;
        let nodes = ["node1", "node2", "node3", "node4"];
        let model = create_filled(&c, "vol", RaidLevel::Raid5, 8 * MIB, &nodes, 8).await;
        let spare = add_spare(&cluster, "node5", 0).await;
        let model = Arc::new(Mutex::new(model));
        let load = Load::start(&c, "vol", model.clone(), 9);
        cluster
            .node_by_id_mut("node2")
            .unwrap()
            .kill9()
            .await
            .unwrap();
        let v = healed(&cluster, "vol", &[1], Duration::from_secs(90)).await;
        assert_eq!(v.components[1].component_id, spare.id);

        // node6 stands for the replaced disk. 1 MiB/s: the copy takes about 3 s of writes.
        let mut r = raw(&cluster).await;
        let req = r.request(vpb::CopybackRequest {
            volume: "vol".into(),
            column: 1,
            to_node_id: "node6".into(),
            rate_bytes_per_second: MIB,
        });
        r.inner.copyback(req).await.unwrap();
        let running = eventually("the copyback running", Duration::from_secs(10), || async {
            let v = try_volume(&cluster, "vol").await?;
            v.rebuilds
                .iter()
                .find(|r| r.column == 1 && r.kind() == vpb::RebuildKind::Copyback)
                .cloned()
        })
        .await;
        assert_eq!(running.node_id, "node6");
        let v = eventually("the copyback done", Duration::from_secs(90), || async {
            let v = try_volume(&cluster, "vol").await?;
            let done = v
                .rebuilds
                .iter()
                .any(|r| r.column == 1 && r.kind() == vpb::RebuildKind::Copyback && r.completed);
            (done && optimal(&v)).then_some(v)
        })
        .await;
        load.wait_writes(10).await;
        let writes = load.stop().await;
        let model = model.lock().unwrap().clone();

        assert_eq!(node_of(&v, 1), "node6");
        assert_eq!(v.components[1].component_id, running.component_id);
        assert_ne!(v.components[1].component_id, spare.id);
        let r = rebuild_of(&v, 1);
        assert!(r.error.is_empty(), "{r:?}");
        let spares = list_spares(&cluster).await;
        assert_eq!(spares.len(), 1, "{spares:?}");
        assert_eq!(spares[0].id, spare.id);
        assert!(spares[0].volume.is_empty(), "the spare is free: {spares:?}");
        assert!(spares[0].reachable, "{spares:?}");
        assert_eq!(v.spares_available, 1);
        assert!(writes > 10);
        read_back(&c, "vol", &model).await;
        cluster.check_columns("vol", &[]).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_during_a_copyback_resumes_it_from_its_checkpoint() {
    with_timeout(async {
        let mut cluster = start(6, 0, None).await;
        let c = client(&cluster).await;
        let nodes = ["node1", "node2", "node3", "node4"];
        let model = create_filled(&c, "vol", RaidLevel::Raid5, 8 * MIB, &nodes, 10).await;
        let spare = add_spare(&cluster, "node5", 0).await;
        cluster
            .node_by_id_mut("node2")
            .unwrap()
            .kill9()
            .await
            .unwrap();
        read_back(&c, "vol", &model).await;
        let v = healed(&cluster, "vol", &[1], Duration::from_secs(90)).await;
        assert_eq!(v.components[1].component_id, spare.id);

        // Writes all along: before the kill, through it (each one repeated until
        // acknowledged) and after it.
        let model = Arc::new(Mutex::new(model));
        let load = Load::start(&c, "vol", model.clone(), 11);
        load.wait_writes(5).await;
        // 256 KiB/s: the column's 2.7 MiB take about 11 s.
        let mut r = raw(&cluster).await;
        let req = r.request(vpb::CopybackRequest {
            volume: "vol".into(),
            column: 1,
            to_node_id: "node6".into(),
            rate_bytes_per_second: 256 * KIB,
        });
        r.inner.copyback(req).await.unwrap();
        let running = eventually(
            "a quarter of the column copied",
            Duration::from_secs(60),
            || async {
                let v = try_volume(&cluster, "vol").await?;
                v.rebuilds
                    .iter()
                    .find(|r| {
                        r.column == 1
                            && r.kind() == vpb::RebuildKind::Copyback
                            && r.running
                            && r.stripes_done * 4 >= r.stripes_total
                    })
                    .cloned()
            },
        )
        .await;
        assert_eq!(running.node_id, "node6");
        // A checkpoint above 0 made durable (about every second), the copyback still running.
        let checkpointed = durable_checkpoint(&cluster, 1, "a copyback checkpoint above stripe 0").await;
        let at_kill = rebuild_of(&volume(&cluster, "vol").await, 1).clone();
        let done_at_kill = at_kill.stripes_done;
        assert!(
            at_kill.running && done_at_kill < at_kill.stripes_total,
            "the copyback ended before the kill: {at_kill:?}"
        );
        cluster.coordinator.kill9().await.unwrap();
        cluster.coordinator.restart().await.unwrap();

        // No new request: the copyback resumes by itself, onto the same replacement.
        let v = eventually("the copyback done", Duration::from_secs(90), || async {
            let v = try_volume(&cluster, "vol").await?;
            let done = v
                .rebuilds
                .iter()
                .any(|r| r.column == 1 && r.kind() == vpb::RebuildKind::Copyback && r.completed);
            (done && optimal(&v)).then_some(v)
        })
        .await;
        let r = rebuild_of(&v, 1);
        assert!(r.completed && r.error.is_empty(), "{r:?}");
        assert!(
            r.resumed_from > 0 && r.resumed_from < r.stripes_total,
            "resumed from the checkpoint, not from 0 nor past the end: {r:?}"
        );
        assert!(r.resumed_from <= done_at_kill, "{r:?} vs {done_at_kill}");
        assert!(
            r.resumed_from >= checkpointed,
            "resumed below the checkpoint the API showed before the kill ({checkpointed}): {r:?}"
        );
        eprintln!(
            "copyback resumed from stripe {} of {} (at the kill: {done_at_kill}, checkpointed: {checkpointed})",
            r.resumed_from, r.stripes_total
        );
        let log = cluster.coordinator.log();
        for line in log.lines().filter(|l| l.contains("copyback")) {
            eprintln!("{line}");
        }
        assert!(
            log.contains("resuming copyback from its checkpoint"),
            "the monitor resumed it"
        );
        assert_eq!(node_of(&v, 1), "node6");
        assert_eq!(v.components[1].component_id, running.component_id);
        load.wait_writes(10).await;
        let writes = load.stop().await;
        let model = model.lock().unwrap().clone();
        assert!(writes > 15);

        let spares = list_spares(&cluster).await;
        assert_eq!(spares.len(), 1, "{spares:?}");
        assert_eq!(spares[0].id, spare.id);
        assert!(spares[0].volume.is_empty(), "the spare is free: {spares:?}");
        let c = client(&cluster).await;
        read_back(&c, "vol", &model).await;
        cluster.check_columns("vol", &[]).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_block_on_a_surviving_column_is_recorded_lost_and_the_rest_rebuilt() {
    with_timeout(async {
        let cluster = start(5, 0, None).await;
        let c = client(&cluster).await;
        let nodes = ["node1", "node2", "node3", "node4"];
        let model = create_filled(&c, "vol", RaidLevel::Raid5, 8 * MIB, &nodes, 10).await;
        let v = volume(&cluster, "vol").await;
        let layout = layout_of(&v).unwrap();
        let unit = layout.unit_bytes();
        let sb = layout.stripe_data_bytes();
        let rows = unit / BS;

        // Stripe 5, row 3: the bad block is data unit 0's; the failed column is another data
        // column of that stripe (not its parity), so the row loses two data blocks.
        let stripe = 5;
        let row = 3;
        let sl = layout.stripe(stripe).unwrap();
        let bad_column = sl.data_column(0).unwrap();
        let (failed_index, failed_column) = sl
            .data_columns()
            .find(|&(i, _)| i != 0)
            .map(|(i, c)| (i as u64, c))
            .unwrap();
        let bad_offset = stripe * sb + row * BS;
        let failed_offset = stripe * sb + failed_index * unit + row * BS;
        let loc = layout.locate(bad_offset).unwrap();
        assert_eq!(loc.column, bad_column);
        let component_block = loc.component_offset / BS;
        assert_eq!(component_block, stripe * rows + row);
        let node = cluster.node_by_id(&node_of(&v, bad_column)).unwrap();
        node.corrupt_block(&v.components[bad_column].component_id, BS, component_block)
            .unwrap();

        add_spare(&cluster, "node5", 0).await;
        c.fail_component("vol", failed_column as u32).await.unwrap();
        let v = healed(
            &cluster,
            "vol",
            &[failed_column as u32],
            Duration::from_secs(90),
        )
        .await;
        let r = rebuild_of(&v, failed_column as u32);
        assert_eq!(r.lost_blocks, 2, "{r:?}");
        assert_eq!(node_of(&v, failed_column), "node5");

        let mut expected = vec![(bad_offset, BS), (failed_offset, BS)];
        expected.sort();
        let lost: Vec<(u64, u64)> = c
            .list_lost("vol")
            .await
            .unwrap()
            .iter()
            .map(|r| (r.offset, r.length))
            .collect();
        assert_eq!(
            lost, expected,
            "ListLost names exactly the two blocks of the row"
        );
        assert_eq!(v.lost_bytes, 2 * BS);
        let vol = c.volume("vol");
        for &(offset, len) in &expected {
            match vol.read_at(offset, len as usize).await {
                Err(ClientError::Unreadable { .. }) => {}
                other => panic!("lost block at {offset}: {other:?}"),
            }
        }
        // Every other byte reads back as written.
        let mut at = 0u64;
        for &(offset, len) in expected.iter().chain([(model.len() as u64, 0)].iter()) {
            while at < offset {
                let n = (offset - at).min(MIB);
                let got = vol.read_at(at, n as usize).await.unwrap();
                assert!(
                    got[..] == model[at as usize..(at + n) as usize],
                    "bytes {at}+{n} differ"
                );
                at += n;
            }
            at = offset + len;
        }
        cluster.check_columns("vol", &[]).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_spare_that_fits_the_volume_stays_degraded_and_says_why() {
    with_timeout(async {
        let mut cluster = start(5, 0, None).await;
        let c = client(&cluster).await;
        let nodes = ["node1", "node2", "node3", "node4"];
        let model = create_filled(&c, "vol", RaidLevel::Raid5, 8 * MIB, &nodes, 11).await;
        let v = volume(&cluster, "vol").await;
        let column_bytes = v.components[0].size_bytes;
        // Too small, and on a node holding a column: neither fits.
        let small = add_spare(&cluster, "node5", column_bytes / 2).await;
        let held = add_spare(&cluster, "node1", 0).await;
        assert!(small.size_bytes < column_bytes);
        assert!(held.size_bytes >= column_bytes);

        cluster
            .node_by_id_mut("node3")
            .unwrap()
            .kill9()
            .await
            .unwrap();
        read_back(&c, "vol", &model).await;
        let waiting = eventually("a waiting reason", Duration::from_secs(60), || async {
            let v = try_volume(&cluster, "vol").await?;
            (!v.rebuild_waiting.is_empty()).then_some(v.rebuild_waiting)
        })
        .await;
        assert!(waiting.contains("no spare fits"), "{waiting}");
        // A few monitor rounds later it still waits, degraded, with nothing taken.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            let v = volume(&cluster, "vol").await;
            assert_eq!(v.state(), vpb::VolumeState::Degraded);
            assert_eq!(v.components[2].state(), vpb::ComponentState::Failed);
            assert!(v.rebuilds.is_empty(), "{:?}", v.rebuilds);
            assert!(
                v.rebuild_waiting.contains("no spare fits"),
                "{}",
                v.rebuild_waiting
            );
            assert_eq!(v.spares_available, 0);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(
            list_spares(&cluster)
                .await
                .iter()
                .all(|s| s.volume.is_empty())
        );
        read_back(&c, "vol", &model).await;
        cluster.check_columns("vol", &[]).await.unwrap();
    })
    .await;
}

/// A column that lives on a spare fails with its spare's node (dead for good) while another
/// spare is free: it must be rebuilt onto the free one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_on_a_spare_whose_node_dies_is_rebuilt_onto_another_spare() {
    with_timeout(async {
        let mut cluster = start(6, 0, None).await;
        let c = client(&cluster).await;
        let nodes = ["node1", "node2", "node3", "node4"];
        let model = create_filled(&c, "vol", RaidLevel::Raid5, 8 * MIB, &nodes, 12).await;
        add_spare(&cluster, "node5", 0).await;
        add_spare(&cluster, "node6", 0).await;
        cluster
            .node_by_id_mut("node2")
            .unwrap()
            .kill9()
            .await
            .unwrap();
        read_back(&c, "vol", &model).await;
        let v = healed(&cluster, "vol", &[1], Duration::from_secs(90)).await;
        let first = v.components[1].clone();
        let other = if first.node_id == "node5" {
            "node6"
        } else {
            "node5"
        };

        // The spare's node dies for good: the column must move to the other, free spare.
        cluster
            .node_by_id_mut(&first.node_id)
            .unwrap()
            .kill9()
            .await
            .unwrap();
        read_back(&c, "vol", &model).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let v = loop {
            let v = volume(&cluster, "vol").await;
            if optimal(&v) && v.components[1].node_id == other {
                break v;
            }
            if tokio::time::Instant::now() > deadline {
                let log = cluster.coordinator.log();
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains("reconstruction") || l.contains("rebuild"))
                    .collect();
                panic!(
                    "column 1 not rebuilt onto {other}'s spare within 60 s: column 1 {:?}, rebuilds {:?}, waiting {:?}, spares {:?}; coordinator log (rebuild lines, last 12):\n{}",
                    v.components[1],
                    v.rebuilds,
                    v.rebuild_waiting,
                    list_spares(&cluster).await,
                    lines[lines.len().saturating_sub(12)..].join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        read_back(&c, "vol", &model).await;
        cluster.check_columns("vol", &[]).await.unwrap();
        // The dead spare no longer holds the column.
        let spares = list_spares(&cluster).await;
        let dead = spares.iter().find(|s| s.id == first.component_id);
        assert!(
            dead.is_none_or(|s| s.volume.is_empty()),
            "the replaced spare is still in use by the volume: {spares:?}"
        );
        assert_eq!(v.components[1].node_id, other);
    })
    .await;
}
