//! A fake coordinator for the SDK and CLI tests: the volume API over real gRPC on 127.0.0.1,
//! volumes held in memory, with knobs for faults and counters of what it was asked.
//!
//! It checks what the real coordinator checks at its edge (token, volume names, ranges,
//! `max_io_bytes`) and nothing RAID: the SDK and CLI are tested against the wire protocol.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dagraid_proto::error_kind;
use dagraid_proto::volume::v1 as pb;
use pb::volume_service_server::{VolumeService, VolumeServiceServer};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

/// What a test sets and reads back.
#[derive(Debug, Default)]
pub struct Knobs {
    /// Answer the next N reads with an unnamed UNAVAILABLE (what a transport failure looks like).
    pub fail_reads: AtomicUsize,
    /// Answer the next N writes with an unnamed UNAVAILABLE.
    pub fail_writes: AtomicUsize,
    /// Answer the next N GetVolume calls with an unnamed UNAVAILABLE.
    pub fail_get_volume: AtomicUsize,
    /// Delay of each read and write, in milliseconds (makes concurrency observable).
    pub io_delay_ms: AtomicU64,
    /// Never answer reads (a stopped coordinator).
    pub stall_reads: std::sync::atomic::AtomicBool,
    /// Stripes of a volume as its rebuilds count them (0: 20).
    pub rebuild_stripes: AtomicU64,
    /// Stripes a running rebuild advances on each GetVolume (0: 5).
    pub rebuild_step: AtomicU64,
    /// A rebuild that reaches this many stripes stops there with an error (0: never).
    pub rebuild_fail_at: AtomicU64,
    /// `Volume.spares_available` in every answer.
    pub spares_available: AtomicU32,
    /// The next N GetVolume answers list no rebuilds (a coordinator that restarted and has
    /// not resumed them yet); the rebuilds still advance.
    pub hide_rebuilds: AtomicUsize,
    // Counters.
    pub cluster_info_calls: AtomicUsize,
    pub get_volume_calls: AtomicUsize,
    pub read_calls: AtomicUsize,
    pub write_calls: AtomicUsize,
    pub flush_calls: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// (offset, length) of every read and write call, in arrival order.
    pub io_log: Mutex<Vec<(&'static str, u64, u64)>>,
    /// Spares added while set are in use by column 1 of vol0 (as if a rebuild had taken them).
    pub spares_taken: std::sync::atomic::AtomicBool,
}

struct FakeVolume {
    info: pb::Volume,
    data: Vec<u8>,
}

pub struct Fake {
    token: Option<String>,
    max_io_bytes: u64,
    volumes: Mutex<BTreeMap<String, FakeVolume>>,
    spares: Mutex<BTreeMap<String, pb::Spare>>,
    pub knobs: Arc<Knobs>,
}

/// A running fake coordinator.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub knobs: Arc<Knobs>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FakeServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a fake with `token` (None: no authentication) and `max_io_bytes`.
pub async fn start(token: Option<&str>, max_io_bytes: u64) -> FakeServer {
    let knobs = Arc::new(Knobs::default());
    let fake = Fake {
        token: token.map(str::to_owned),
        max_io_bytes,
        volumes: Mutex::new(BTreeMap::new()),
        spares: Mutex::new(BTreeMap::new()),
        knobs: knobs.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .max_frame_size(1 << 20)
            .add_service(
                VolumeServiceServer::new(fake)
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            )
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = rx.await;
                },
            )
            .await
            .unwrap();
    });
    FakeServer {
        addr,
        knobs,
        shutdown: Some(tx),
    }
}

fn named(mut status: Status, kind: &'static str) -> Status {
    status
        .metadata_mut()
        .insert(error_kind::HEADER, MetadataValue::from_static(kind));
    status
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

struct InFlight<'a>(&'a Knobs);

impl<'a> InFlight<'a> {
    fn enter(knobs: &'a Knobs) -> Self {
        let now = knobs.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        knobs.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(knobs)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Fake {
    fn check_token<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let want = format!("Bearer {token}");
        match request.metadata().get("authorization") {
            Some(v) if v.to_str().ok() == Some(want.as_str()) => Ok(()),
            _ => Err(named(
                Status::unauthenticated("missing or wrong bearer token"),
                error_kind::UNAUTHENTICATED,
            )),
        }
    }

    fn unknown(name: &str) -> Status {
        named(
            Status::not_found(format!("no volume named {name:?}")),
            error_kind::UNKNOWN_VOLUME,
        )
    }

    fn check_range(&self, v: &FakeVolume, offset: u64, length: u64) -> Result<(), Status> {
        if length == 0 {
            return Err(named(
                Status::invalid_argument("length must be at least 1"),
                error_kind::INVALID_REQUEST,
            ));
        }
        if length > self.max_io_bytes {
            return Err(named(
                Status::invalid_argument(format!(
                    "length {length} exceeds max_io_bytes {}",
                    self.max_io_bytes
                )),
                error_kind::TOO_LARGE,
            ));
        }
        if offset
            .checked_add(length)
            .is_none_or(|end| end > v.data.len() as u64)
        {
            return Err(named(
                Status::out_of_range(format!(
                    "bytes {offset}+{length} outside the volume of {} bytes",
                    v.data.len()
                )),
                error_kind::OUT_OF_RANGE,
            ));
        }
        Ok(())
    }

    /// What the fake answers about a volume: its record with the knobs that apply.
    fn answer(&self, v: &FakeVolume) -> pb::Volume {
        let mut info = v.info.clone();
        info.spares_available = self.knobs.spares_available.load(Ordering::SeqCst);
        info
    }

    fn rebuild_stripes(&self) -> u64 {
        match self.knobs.rebuild_stripes.load(Ordering::SeqCst) {
            0 => 20,
            n => n,
        }
    }

    /// RebuildColumn: the checks the coordinator makes at its edge, then a rebuild that runs
    /// (it advances on each GetVolume).
    fn start_rebuild(&self, r: pb::RebuildColumnRequest) -> Result<pb::Volume, Status> {
        let mut volumes = self.volumes.lock().unwrap();
        let v = volumes
            .get_mut(&r.volume)
            .ok_or_else(|| Self::unknown(&r.volume))?;
        if r.in_place && !r.spare_id.is_empty() {
            return Err(named(
                Status::invalid_argument("in_place and spare_id exclude each other"),
                error_kind::INVALID_REQUEST,
            ));
        }
        let Some(c) = v.info.components.get_mut(r.column as usize) else {
            return Err(named(
                Status::invalid_argument(format!(
                    "volume {:?} has no column {}",
                    r.volume, r.column
                )),
                error_kind::INVALID_REQUEST,
            ));
        };
        if c.state != pb::ComponentState::Failed as i32 {
            return Err(named(
                Status::failed_precondition(format!(
                    "column {} is not failed: only a failed column is reconstructed",
                    r.column
                )),
                error_kind::REBUILD_REFUSED,
            ));
        }
        // A named spare must be a free one of the pool; the best fit is the first free one,
        // or the fake's own `spare-1` on node6 when the pool has none.
        let mut spares = self.spares.lock().unwrap();
        let chosen = if r.in_place {
            None
        } else if r.spare_id.is_empty() {
            spares.values_mut().find(|s| s.volume.is_empty())
        } else {
            match spares.get_mut(&r.spare_id) {
                None => {
                    return Err(named(
                        Status::not_found(format!("no spare {:?} in the pool", r.spare_id)),
                        error_kind::UNKNOWN_SPARE,
                    ));
                }
                Some(s) if !s.volume.is_empty() => {
                    return Err(named(
                        Status::failed_precondition(format!(
                            "spare {:?} is in use by column {} of volume {:?}",
                            s.id, s.column, s.volume
                        )),
                        error_kind::SPARE_IN_USE,
                    ));
                }
                Some(s) => Some(s),
            }
        };
        let (kind, node_id, component_id) = match chosen {
            _ if r.in_place => (
                pb::RebuildKind::InPlace,
                c.node_id.clone(),
                format!("{}-r", c.component_id),
            ),
            Some(spare) => {
                spare.volume = r.volume.clone();
                spare.column = r.column;
                (
                    pb::RebuildKind::Spare,
                    spare.node_id.clone(),
                    spare.id.clone(),
                )
            }
            None => (pb::RebuildKind::Spare, "node6".into(), "spare-1".into()),
        };
        c.state = pb::ComponentState::Reconstructing as i32;
        v.info.state = pb::VolumeState::Reconstructing as i32;
        v.info.rebuild_waiting.clear();
        let rebuild = self.new_rebuild(
            r.column,
            kind,
            node_id,
            component_id,
            r.rate_bytes_per_second,
        );
        v.info.rebuilds.push(rebuild);
        Ok(self.answer(v))
    }

    /// Copyback: the column must live on a spare (a component `spare-...`), optimal.
    fn start_copyback(&self, r: pb::CopybackRequest) -> Result<pb::Volume, Status> {
        let mut volumes = self.volumes.lock().unwrap();
        let v = volumes
            .get_mut(&r.volume)
            .ok_or_else(|| Self::unknown(&r.volume))?;
        let Some(c) = v.info.components.get_mut(r.column as usize) else {
            return Err(named(
                Status::invalid_argument(format!("no column {}", r.column)),
                error_kind::INVALID_REQUEST,
            ));
        };
        if c.state != pb::ComponentState::Optimal as i32 || !c.component_id.starts_with("spare-") {
            return Err(named(
                Status::failed_precondition(format!(
                    "column {} does not live on a spare",
                    r.column
                )),
                error_kind::REBUILD_REFUSED,
            ));
        }
        if !(1..=6).any(|i| r.to_node_id == format!("node{i}")) {
            return Err(named(
                Status::invalid_argument(format!("no storage node {:?}", r.to_node_id)),
                error_kind::INVALID_REQUEST,
            ));
        }
        c.state = pb::ComponentState::Copyback as i32;
        let rebuild = self.new_rebuild(
            r.column,
            pb::RebuildKind::Copyback,
            r.to_node_id.clone(),
            format!("{}-c{}-cb", r.volume, r.column),
            r.rate_bytes_per_second,
        );
        v.info.rebuilds.push(rebuild);
        Ok(self.answer(v))
    }

    fn new_rebuild(
        &self,
        column: u32,
        kind: pb::RebuildKind,
        node_id: String,
        component_id: String,
        rate_limit: u64,
    ) -> pb::Rebuild {
        pb::Rebuild {
            column,
            kind: kind as i32,
            node_id,
            component_id,
            running: true,
            completed: false,
            stripes_done: 0,
            stripes_total: self.rebuild_stripes(),
            bytes_done: 0,
            rate_bytes_per_second: 0,
            rate_limit_bytes_per_second: if rate_limit == 0 {
                64 << 20
            } else {
                rate_limit
            },
            eta_seconds: 0,
            lost_blocks: 0,
            error: String::new(),
            resumed_from: 0,
            stripes_checkpointed: 0,
            regions_resynced: 0,
            regions_total: 0,
            note: String::new(),
        }
    }

    /// One step of every running rebuild of `v`: on to the end (the column then lives on the
    /// target, optimal), or to `rebuild_fail_at` (stopped with an error, the column failed
    /// again).
    fn advance_rebuilds(&self, v: &mut FakeVolume) {
        let step = match self.knobs.rebuild_step.load(Ordering::SeqCst) {
            0 => 5,
            n => n,
        };
        let fail_at = self.knobs.rebuild_fail_at.load(Ordering::SeqCst);
        let stripe_bytes = v.info.stripe_unit_bytes * u64::from(v.info.columns);
        for r in v.info.rebuilds.iter_mut().filter(|r| r.running) {
            let before = r.stripes_done;
            r.stripes_done = (r.stripes_done + step).min(r.stripes_total);
            if fail_at > 0 && r.stripes_done >= fail_at {
                r.stripes_done = fail_at.max(before);
                r.running = false;
                r.error = format!("{}: connection refused", r.node_id);
            } else if r.stripes_done == r.stripes_total {
                r.running = false;
                r.completed = true;
            }
            r.bytes_done += (r.stripes_done - before) * stripe_bytes;
            // The checkpoint lags behind the stripes done, as the coordinator's lags its
            // batches; all of them once completed.
            r.stripes_checkpointed = if r.completed {
                r.stripes_total
            } else {
                r.stripes_done.saturating_sub(1)
            };
            r.rate_bytes_per_second = if r.running { 50 << 20 } else { 0 };
            r.eta_seconds = if r.running {
                (r.stripes_total - r.stripes_done) * 2
            } else {
                0
            };
            r.lost_blocks = u64::from(r.stripes_done >= r.stripes_total / 2);
            let c = &mut v.info.components[r.column as usize];
            if r.completed {
                c.node_id = r.node_id.clone();
                c.component_id = r.component_id.clone();
                c.state = pb::ComponentState::Optimal as i32;
            } else if !r.running {
                c.state = if r.kind == pb::RebuildKind::Copyback as i32 {
                    pb::ComponentState::Optimal as i32
                } else {
                    pb::ComponentState::Failed as i32
                };
            }
        }
        let states: Vec<i32> = v.info.components.iter().map(|c| c.state).collect();
        v.info.state = if states
            .iter()
            .all(|&s| s == pb::ComponentState::Optimal as i32)
        {
            pb::VolumeState::Optimal as i32
        } else if states.contains(&(pb::ComponentState::Reconstructing as i32)) {
            pb::VolumeState::Reconstructing as i32
        } else {
            pb::VolumeState::Degraded as i32
        };
    }

    async fn io_delay(&self) {
        let ms = self.knobs.io_delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

#[tonic::async_trait]
impl VolumeService for Fake {
    async fn add_spare(
        &self,
        request: Request<pb::AddSpareRequest>,
    ) -> Result<Response<pb::Spare>, Status> {
        self.check_token(&request)?;
        let r = request.into_inner();
        if r.size_bytes == 0 {
            return Err(named(
                Status::invalid_argument(
                    "bad spare request: size_bytes is 0 and there is no volume to size the spare after: give a size",
                ),
                error_kind::INVALID_REQUEST,
            ));
        }
        if !r.node_id.starts_with("node") {
            return Err(named(
                Status::invalid_argument(format!(
                    "bad spare request: unknown storage node {:?}",
                    r.node_id
                )),
                error_kind::INVALID_REQUEST,
            ));
        }
        let block_size = if r.block_size == 0 {
            4096
        } else {
            r.block_size
        };
        let block_count = r.size_bytes.div_ceil(u64::from(block_size));
        let mut spares = self.spares.lock().unwrap();
        let taken = self.knobs.spares_taken.load(Ordering::SeqCst);
        let spare = pb::Spare {
            id: format!("spare-{:016x}", spares.len() + 1),
            node_id: r.node_id.clone(),
            node_address: format!("127.0.0.1:{}", 7100 + spares.len()),
            block_size,
            block_count,
            size_bytes: block_count * u64::from(block_size),
            volume: if taken { "vol0".into() } else { String::new() },
            column: u32::from(taken),
            reachable: true,
        };
        spares.insert(spare.id.clone(), spare.clone());
        Ok(Response::new(spare))
    }

    async fn remove_spare(
        &self,
        request: Request<pb::RemoveSpareRequest>,
    ) -> Result<Response<pb::RemoveSpareResponse>, Status> {
        self.check_token(&request)?;
        let id = request.into_inner().id;
        let mut spares = self.spares.lock().unwrap();
        match spares.get(&id) {
            None => Err(named(
                Status::not_found(format!("no spare {id:?} in the pool")),
                error_kind::UNKNOWN_SPARE,
            )),
            Some(s) if !s.volume.is_empty() => Err(named(
                Status::failed_precondition(format!(
                    "spare {id:?} is in use by column {} of volume {:?}",
                    s.column, s.volume
                )),
                error_kind::SPARE_IN_USE,
            )),
            Some(_) => {
                spares.remove(&id);
                Ok(Response::new(pb::RemoveSpareResponse {}))
            }
        }
    }

    async fn list_spares(
        &self,
        request: Request<pb::ListSparesRequest>,
    ) -> Result<Response<pb::ListSparesResponse>, Status> {
        self.check_token(&request)?;
        let spares = self.spares.lock().unwrap().values().cloned().collect();
        Ok(Response::new(pb::ListSparesResponse { spares }))
    }

    async fn rebuild_column(
        &self,
        request: Request<pb::RebuildColumnRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        self.check_token(&request)?;
        self.start_rebuild(request.into_inner()).map(Response::new)
    }

    async fn copyback(
        &self,
        request: Request<pb::CopybackRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        self.check_token(&request)?;
        self.start_copyback(request.into_inner()).map(Response::new)
    }

    async fn re_add_column(
        &self,
        request: Request<pb::ReAddColumnRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        self.check_token(&request)?;
        Err(Status::unimplemented(
            "the fake coordinator does not re-add (tests/tests/re_add.rs covers it on a real one)",
        ))
    }

    async fn check_parity(
        &self,
        request: Request<pb::ParityRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        self.check_token(&request)?;
        Err(Status::unimplemented(
            "the fake coordinator has no parity jobs",
        ))
    }

    async fn rewrite_parity(
        &self,
        request: Request<pb::ParityRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        self.check_token(&request)?;
        Err(Status::unimplemented(
            "the fake coordinator has no parity jobs",
        ))
    }

    async fn get_cluster_info(
        &self,
        request: Request<pb::GetClusterInfoRequest>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        self.check_token(&request)?;
        self.knobs.cluster_info_calls.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::ClusterInfo {
            cluster_id: "fake".into(),
            epoch: 7,
            max_io_bytes: self.max_io_bytes,
            nodes: (1..=5)
                .map(|i| pb::StorageNodeInfo {
                    node_id: format!("node{i}"),
                    address: format!("127.0.0.1:{}", 7100 + i),
                    reachable: i != 5,
                    components: 1,
                    detail: if i == 5 {
                        "connection refused".into()
                    } else {
                        String::new()
                    },
                    missed_checks: if i == 5 { 3 } else { 0 },
                })
                .collect(),
        }))
    }

    async fn create_volume(
        &self,
        request: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        self.check_token(&request)?;
        let r = request.into_inner();
        if r.name.is_empty() || r.name.len() > 64 {
            return Err(named(
                Status::invalid_argument("bad volume name"),
                error_kind::INVALID_REQUEST,
            ));
        }
        let mut volumes = self.volumes.lock().unwrap();
        if volumes.contains_key(&r.name) {
            return Err(named(
                Status::already_exists(format!("volume {:?} exists", r.name)),
                error_kind::VOLUME_EXISTS,
            ));
        }
        let columns = if r.columns == 0 { 5 } else { r.columns };
        let stripe_unit = if r.stripe_unit_bytes == 0 {
            65536
        } else {
            r.stripe_unit_bytes
        };
        if r.size_bytes > 1 << 30 {
            return Err(named(
                Status::invalid_argument("the fake holds at most 1 GiB"),
                error_kind::BAD_GEOMETRY,
            ));
        }
        let info = pb::Volume {
            name: r.name.clone(),
            id: format!("id-{}", r.name),
            level: r.level,
            columns,
            stripe_unit_bytes: stripe_unit,
            block_size: if r.block_size == 0 {
                4096
            } else {
                r.block_size
            },
            size_bytes: r.size_bytes,
            state: pb::VolumeState::Optimal as i32,
            components: (0..columns)
                .map(|c| pb::Component {
                    column: c,
                    node_id: r
                        .nodes
                        .get(c as usize)
                        .cloned()
                        .unwrap_or_else(|| format!("node{}", c + 1)),
                    node_address: format!("127.0.0.1:{}", 7101 + c),
                    component_id: format!("{}-c{c}", r.name),
                    state: pb::ComponentState::Optimal as i32,
                    size_bytes: r.size_bytes / u64::from(columns),
                    gone: false,
                })
                .collect(),
            counters: Some(pb::VolumeCounters::default()),
            resync: None,
            assembly: None,
            lost_bytes: 0,
            lost_ranges: 0,
            rebuilds: Vec::new(),
            rebuild_waiting: String::new(),
            parity_job: None,
            spares_available: 0,
            parity_map: None,
        };
        volumes.insert(
            r.name,
            FakeVolume {
                info: info.clone(),
                data: vec![0; r.size_bytes as usize],
            },
        );
        Ok(Response::new(info))
    }

    async fn list_volumes(
        &self,
        request: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        self.check_token(&request)?;
        let volumes = self.volumes.lock().unwrap();
        Ok(Response::new(pb::ListVolumesResponse {
            volumes: volumes.values().map(|v| v.info.clone()).collect(),
        }))
    }

    async fn get_volume(
        &self,
        request: Request<pb::GetVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        self.check_token(&request)?;
        self.knobs.get_volume_calls.fetch_add(1, Ordering::SeqCst);
        if take_one(&self.knobs.fail_get_volume) {
            return Err(Status::unavailable("injected transport failure"));
        }
        let name = request.into_inner().name;
        let mut volumes = self.volumes.lock().unwrap();
        let v = volumes.get_mut(&name).ok_or_else(|| Self::unknown(&name))?;
        // Each look moves the running rebuilds on by one step: tests follow them without
        // sleeping.
        self.advance_rebuilds(v);
        let mut answer = self.answer(v);
        if take_one(&self.knobs.hide_rebuilds) {
            answer.rebuilds.clear();
        }
        Ok(Response::new(answer))
    }

    async fn delete_volume(
        &self,
        request: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
        self.check_token(&request)?;
        let name = request.into_inner().name;
        match self.volumes.lock().unwrap().remove(&name) {
            Some(_) => Ok(Response::new(pb::DeleteVolumeResponse {})),
            None => Err(Self::unknown(&name)),
        }
    }

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        self.check_token(&request)?;
        let r = request.into_inner();
        self.knobs.read_calls.fetch_add(1, Ordering::SeqCst);
        self.knobs
            .io_log
            .lock()
            .unwrap()
            .push(("read", r.offset, r.length));
        if self.knobs.stall_reads.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if take_one(&self.knobs.fail_reads) {
            return Err(Status::unavailable("injected transport failure"));
        }
        let _guard = InFlight::enter(&self.knobs);
        self.io_delay().await;
        let volumes = self.volumes.lock().unwrap();
        let v = volumes
            .get(&r.volume)
            .ok_or_else(|| Self::unknown(&r.volume))?;
        self.check_range(v, r.offset, r.length)?;
        let start = r.offset as usize;
        let data = Bytes::copy_from_slice(&v.data[start..start + r.length as usize]);
        Ok(Response::new(pb::ReadResponse { data }))
    }

    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.check_token(&request)?;
        let r = request.into_inner();
        self.knobs.write_calls.fetch_add(1, Ordering::SeqCst);
        self.knobs
            .io_log
            .lock()
            .unwrap()
            .push(("write", r.offset, r.data.len() as u64));
        if take_one(&self.knobs.fail_writes) {
            return Err(Status::unavailable("injected transport failure"));
        }
        let _guard = InFlight::enter(&self.knobs);
        self.io_delay().await;
        let mut volumes = self.volumes.lock().unwrap();
        let max_io = self.max_io_bytes;
        let v = volumes
            .get_mut(&r.volume)
            .ok_or_else(|| Self::unknown(&r.volume))?;
        let len = r.data.len() as u64;
        if len == 0 {
            return Err(named(
                Status::invalid_argument("empty write"),
                error_kind::INVALID_REQUEST,
            ));
        }
        if len > max_io {
            return Err(named(
                Status::invalid_argument("write too large"),
                error_kind::TOO_LARGE,
            ));
        }
        if r.offset
            .checked_add(len)
            .is_none_or(|end| end > v.data.len() as u64)
        {
            return Err(named(
                Status::out_of_range("write outside the volume"),
                error_kind::OUT_OF_RANGE,
            ));
        }
        let start = r.offset as usize;
        v.data[start..start + r.data.len()].copy_from_slice(&r.data);
        let counters = v.info.counters.get_or_insert_default();
        counters.writes += 1;
        counters.bytes_written += len;
        Ok(Response::new(pb::WriteResponse {}))
    }

    async fn flush(
        &self,
        request: Request<pb::FlushRequest>,
    ) -> Result<Response<pb::FlushResponse>, Status> {
        self.check_token(&request)?;
        self.knobs.flush_calls.fetch_add(1, Ordering::SeqCst);
        let name = request.into_inner().volume;
        if !self.volumes.lock().unwrap().contains_key(&name) {
            return Err(Self::unknown(&name));
        }
        Ok(Response::new(pb::FlushResponse {}))
    }

    async fn fail_component(
        &self,
        request: Request<pb::FailComponentRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        self.check_token(&request)?;
        let r = request.into_inner();
        let mut volumes = self.volumes.lock().unwrap();
        let v = volumes
            .get_mut(&r.volume)
            .ok_or_else(|| Self::unknown(&r.volume))?;
        let failed = v
            .info
            .components
            .iter()
            .filter(|c| c.state == pb::ComponentState::Failed as i32)
            .count();
        if failed >= 1 {
            return Err(named(
                Status::failed_precondition("a second failure would lose data"),
                error_kind::WOULD_EXCEED_TOLERANCE,
            ));
        }
        let Some(c) = v.info.components.get_mut(r.column as usize) else {
            return Err(named(
                Status::invalid_argument(format!("no column {}", r.column)),
                error_kind::INVALID_REQUEST,
            ));
        };
        c.state = pb::ComponentState::Failed as i32;
        v.info.state = pb::VolumeState::Degraded as i32;
        v.info.rebuild_waiting = format!("column {}: the down-out delay has not passed", r.column);
        Ok(Response::new(self.answer(v)))
    }

    async fn assemble_volume(
        &self,
        request: Request<pb::AssembleVolumeRequest>,
    ) -> Result<Response<pb::AssembleVolumeResponse>, Status> {
        self.check_token(&request)?;
        let r = request.into_inner();
        let volumes = self.volumes.lock().unwrap();
        let v = volumes.get(&r.name).ok_or_else(|| Self::unknown(&r.name))?;
        // The fake's volumes are always assembled: answered as they are.
        Ok(Response::new(pb::AssembleVolumeResponse {
            volume: Some(v.info.clone()),
            at_risk: String::new(),
            newly_failed: Vec::new(),
        }))
    }

    async fn list_lost(
        &self,
        request: Request<pb::ListLostRequest>,
    ) -> Result<Response<pb::ListLostResponse>, Status> {
        self.check_token(&request)?;
        let r = request.into_inner();
        let volumes = self.volumes.lock().unwrap();
        let v = volumes
            .get(&r.volume)
            .ok_or_else(|| Self::unknown(&r.volume))?;
        // The fake never loses anything.
        Ok(Response::new(pb::ListLostResponse {
            ranges: Vec::new(),
            block_size: v.info.block_size,
        }))
    }
}
