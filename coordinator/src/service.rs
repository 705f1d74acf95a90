//! The gRPC face of the coordinator: `dagraid.volume.v1.VolumeService` over the
//! [`VolumeManager`], with proto types converted here and every error mapped through
//! [`ServiceError::to_status`].
//!
//! Reads and writes go to [`dagraid_core::access::Array::read`] / `write`, which run the access in
//! its own task once its stripe locks are held: a client that disconnects or times out after that
//! cannot tear a stripe. Requests are checked before any I/O (unknown volume, zero length, more
//! than `max_io_bytes`; the range against the volume in the core).
//!
//! [`BearerAuth`] guards the service when a token is configured.

use std::sync::Arc;

use dagraid_core::array::{ArrayState, ComponentState};
use dagraid_core::layout::RaidLevel;
use dagraid_proto::volume::v1 as pb;
use pb::volume_service_server::VolumeService;
use std::sync::atomic::Ordering;
use tonic::service::Interceptor;
use tonic::{Request, Response, Status};

use crate::rebuild::{RebuildKind, RebuildStatus, RebuildTarget, Rebuilds};
use crate::resync::ResyncStatus;
use crate::scrub::{ParityJobKind, ParityJobStatus, Scrubs};
use crate::service_error::ServiceError;
use crate::spares::SpareRecord;
use crate::volumes::{UnassembledVolume, Volume, VolumeEntry, VolumeManager, VolumeSpec};

/// Implements `dagraid.volume.v1.VolumeService`.
#[derive(Debug, Clone)]
pub struct VolumeApi {
    volumes: Arc<VolumeManager>,
    rebuilds: Arc<Rebuilds>,
    scrubs: Arc<Scrubs>,
    max_io_bytes: u64,
}

impl VolumeApi {
    /// The API over `volumes`, refusing Reads and Writes larger than `max_io_bytes`.
    pub fn new(
        volumes: Arc<VolumeManager>,
        rebuilds: Arc<Rebuilds>,
        scrubs: Arc<Scrubs>,
        max_io_bytes: u64,
    ) -> Self {
        Self {
            volumes,
            rebuilds,
            scrubs,
            max_io_bytes,
        }
    }

    fn check_len(
        &self,
        volume: &str,
        op: &'static str,
        offset: u64,
        len: u64,
    ) -> Result<(), ServiceError> {
        if len == 0 {
            return Err(ServiceError::ZeroLength {
                volume: volume.to_owned(),
                op,
                offset,
            });
        }
        if len > self.max_io_bytes {
            return Err(ServiceError::TooLarge {
                volume: volume.to_owned(),
                op,
                len,
                max: self.max_io_bytes,
            });
        }
        Ok(())
    }
}

impl VolumeApi {
    /// The proto view of a volume with what the API adds to [`entry_to_proto`]: the spares
    /// of the pool that fit it, its reconstructions and why a failed column waits.
    fn volume_view(&self, entry: &VolumeEntry) -> pb::Volume {
        let mut v = entry_to_proto(entry);
        v.spares_available = self.volumes.spares_fitting(entry).len() as u32;
        v.rebuilds = self
            .rebuilds
            .statuses(&v.name)
            .iter()
            .map(rebuild_to_proto)
            .collect();
        v.rebuild_waiting = self.rebuilds.waiting(&v.name).unwrap_or_default();
        v.parity_job = self
            .scrubs
            .status(&v.name)
            .as_ref()
            .map(parity_job_to_proto);
        v
    }

    fn assembled_view(&self, volume: &Arc<Volume>) -> pb::Volume {
        self.volume_view(&VolumeEntry::Assembled(volume.clone()))
    }

    fn spare_view(&self, spare: &SpareRecord) -> pb::Spare {
        spare_to_proto(spare, self.volumes.spares().reachable(spare))
    }
}

/// The proto view of a spare; `reachable`: its node answered the last health check.
pub fn spare_to_proto(spare: &SpareRecord, reachable: bool) -> pb::Spare {
    let (volume, column) = spare
        .in_use
        .as_ref()
        .map(|u| (u.volume.clone(), u.column))
        .unwrap_or_default();
    pb::Spare {
        id: spare.id.clone(),
        node_id: spare.node_id.clone(),
        node_address: spare.node_address.clone(),
        block_size: spare.block_size,
        block_count: spare.block_count,
        size_bytes: spare.size_bytes(),
        volume,
        column,
        reachable,
    }
}

fn level_from_proto(value: i32) -> Option<RaidLevel> {
    match pb::RaidLevel::try_from(value).ok()? {
        pb::RaidLevel::Unspecified => None,
        pb::RaidLevel::Raid0 => Some(RaidLevel::Raid0),
        pb::RaidLevel::Raid1 => Some(RaidLevel::Raid1),
        pb::RaidLevel::Raid4 => Some(RaidLevel::Raid4),
        pb::RaidLevel::Raid5 => Some(RaidLevel::Raid5),
        pb::RaidLevel::Raid6 => Some(RaidLevel::Raid6),
    }
}

fn level_to_proto(level: RaidLevel) -> pb::RaidLevel {
    match level {
        RaidLevel::Raid0 => pb::RaidLevel::Raid0,
        RaidLevel::Raid1 => pb::RaidLevel::Raid1,
        RaidLevel::Raid4 => pb::RaidLevel::Raid4,
        RaidLevel::Raid5 => pb::RaidLevel::Raid5,
        RaidLevel::Raid6 => pb::RaidLevel::Raid6,
    }
}

fn component_state_to_proto(state: ComponentState) -> pb::ComponentState {
    match state {
        ComponentState::Optimal => pb::ComponentState::Optimal,
        ComponentState::Failed => pb::ComponentState::Failed,
        ComponentState::Reconstructing => pb::ComponentState::Reconstructing,
        ComponentState::Stale => pb::ComponentState::Stale,
        ComponentState::Copyback => pb::ComponentState::Copyback,
        ComponentState::Spare => pb::ComponentState::Spare,
    }
}

fn volume_state_to_proto(state: ArrayState, resyncing: bool) -> pb::VolumeState {
    match state {
        ArrayState::Failed => pb::VolumeState::Failed,
        _ if resyncing => pb::VolumeState::Resyncing,
        ArrayState::Optimal => pb::VolumeState::Optimal,
        ArrayState::Degraded => pb::VolumeState::Degraded,
    }
}

fn resync_to_proto(r: ResyncStatus) -> pb::ResyncProgress {
    pb::ResyncProgress {
        running: r.running,
        stripes_done: r.done,
        stripes_total: r.total,
        stripes_skipped: r.skipped,
        error: r.error.unwrap_or_default(),
        stripes_repaired: r.repaired,
        stripes_lost: r.lost,
        retries: r.retries,
        regions_total: r.regions_total,
        regions_done: r.regions_done,
        full: r.full,
    }
}

fn components_to_proto(
    volume: &[crate::store::ComponentRecord],
    states: &[ComponentState],
    gone: &dagraid_core::layout::ColumnSet,
    component_bytes: u64,
) -> Vec<pb::Component> {
    volume
        .iter()
        .map(|c| pb::Component {
            column: c.column,
            node_id: c.node_id.clone(),
            node_address: c.node_address.clone(),
            component_id: c.component_id.clone(),
            state: component_state_to_proto(
                states
                    .get(c.column as usize)
                    .copied()
                    .unwrap_or(ComponentState::Failed),
            ) as i32,
            size_bytes: component_bytes,
            gone: gone.contains(c.column as usize),
        })
        .collect()
}

/// The proto view of a volume: layout, components with their current states, counters, its
/// resync and how it was assembled.
pub fn volume_to_proto(volume: &Volume) -> pb::Volume {
    let layout = volume.layout();
    let geometry = layout.geometry();
    let array = volume.array();
    let states = array.states();
    let stats = array.stats();
    let component_bytes = geometry.blocks_per_column() * geometry.block_size();
    let resync = volume.resync();
    // Not optimal while dirty: resyncing until the resync completed (also while it waits to
    // retry after an error).
    let resyncing = resync.as_ref().is_some_and(|r| !r.completed());
    let note = volume.note();
    pb::Volume {
        name: volume.name().to_owned(),
        id: volume.id().to_owned(),
        level: level_to_proto(layout.level()) as i32,
        columns: layout.columns() as u32,
        stripe_unit_bytes: layout.unit_bytes(),
        block_size: geometry.block_size() as u32,
        size_bytes: layout.capacity(),
        state: volume_state_to_proto(array.array_state(), resyncing) as i32,
        components: components_to_proto(
            &volume.components(),
            states.states(),
            states.gone_columns(),
            component_bytes,
        ),
        counters: Some(pb::VolumeCounters {
            reads: stats.reads.load(Ordering::Relaxed),
            writes: stats.writes.load(Ordering::Relaxed),
            bytes_read: stats.bytes_read.load(Ordering::Relaxed),
            bytes_written: stats.bytes_written.load(Ordering::Relaxed),
            errors: stats.errors.load(Ordering::Relaxed),
            dags_rolled_forward: stats.rolled_forward.load(Ordering::Relaxed),
            dags_rolled_backward: stats.rolled_backward.load(Ordering::Relaxed),
            lost_stripes: array.lost_stripes().len() as u64,
        }),
        lost_bytes: states.lost().blocks() * geometry.block_size(),
        lost_ranges: states.lost().range_count() as u64,
        resync: resync.map(resync_to_proto),
        assembly: Some(pb::AssemblyInfo {
            problem: String::new(),
            needs_force: false,
            forced: note.forced,
            at_risk: note.at_risk.clone().unwrap_or_default(),
        }),
        rebuilds: Vec::new(),
        rebuild_waiting: String::new(),
        spares_available: 0,
        parity_job: None,
        parity_map: Some(parity_map_to_proto(volume)),
    }
}

fn parity_map_to_proto(volume: &Volume) -> pb::ParityMap {
    let map = volume.array().parity_map();
    let counts = map.counts();
    pb::ParityMap {
        region_bytes: map.region_stripes() * volume.layout().stripe_data_bytes(),
        regions: counts.regions,
        dirty_regions: counts.dirty,
        resync_regions: counts.needs_sync,
        cooldown_ms: volume.map_cooldown().as_millis() as u64,
    }
}

/// The proto view of a volume that is not assembled: its layout as stored, the states the
/// assembly decided, and why.
pub fn unassembled_to_proto(volume: &UnassembledVolume) -> pb::Volume {
    let record = volume.record();
    let layout = record.layout().ok();
    let block_size = u64::from(record.block_size);
    pb::Volume {
        name: record.name.clone(),
        id: record.id.clone(),
        level: layout
            .as_ref()
            .map(|l| level_to_proto(l.level()) as i32)
            .unwrap_or_default(),
        columns: record.components.len() as u32,
        stripe_unit_bytes: record.stripe_unit_blocks * block_size,
        block_size: record.block_size,
        size_bytes: layout.as_ref().map(|l| l.capacity()).unwrap_or_default(),
        state: pb::VolumeState::NotAssembled as i32,
        components: components_to_proto(
            &record.components,
            volume.states(),
            &Default::default(),
            record.blocks_per_column * block_size,
        ),
        counters: Some(pb::VolumeCounters::default()),
        lost_bytes: record.lost.set().blocks() * block_size,
        lost_ranges: record.lost.ranges.len() as u64,
        resync: None,
        assembly: Some(pb::AssemblyInfo {
            problem: volume.problem().to_owned(),
            needs_force: volume.needs_force(),
            forced: false,
            at_risk: String::new(),
        }),
        rebuilds: Vec::new(),
        rebuild_waiting: String::new(),
        spares_available: 0,
        parity_job: None,
        parity_map: None,
    }
}

/// The proto view of a reconstruction or copyback.
pub fn rebuild_to_proto(s: &RebuildStatus) -> pb::Rebuild {
    pb::Rebuild {
        column: s.column as u32,
        kind: match s.kind {
            RebuildKind::Spare => pb::RebuildKind::Spare,
            RebuildKind::InPlace => pb::RebuildKind::InPlace,
            RebuildKind::Copyback => pb::RebuildKind::Copyback,
            RebuildKind::ReAdd => pb::RebuildKind::ReAdd,
        } as i32,
        node_id: s.node_id.clone(),
        component_id: s.component_id.clone(),
        running: s.running,
        completed: s.completed,
        stripes_done: s.stripes_done,
        stripes_total: s.stripes_total,
        bytes_done: s.bytes_done,
        rate_bytes_per_second: s.rate,
        rate_limit_bytes_per_second: s.rate_limit,
        eta_seconds: s.eta.map(|d| d.as_secs()).unwrap_or(0),
        lost_blocks: s.lost_blocks,
        error: s.error.clone(),
        resumed_from: s.resumed_from,
        stripes_checkpointed: s.stripes_checkpointed,
        regions_resynced: s.regions_resynced,
        regions_total: s.regions_total,
        note: s.note.clone(),
    }
}

/// The proto view of a parity check or rewrite.
pub fn parity_job_to_proto(s: &ParityJobStatus) -> pb::ParityJob {
    pb::ParityJob {
        kind: match s.kind {
            ParityJobKind::Check => pb::ParityJobKind::Check,
            ParityJobKind::Rewrite => pb::ParityJobKind::Rewrite,
        } as i32,
        running: s.running,
        completed: s.completed,
        stripes_done: s.stripes_done,
        stripes_total: s.stripes_total,
        mismatches: s.mismatches,
        mismatched_stripes: s.mismatched_stripes.clone(),
        rate_bytes_per_second: s.rate,
        rate_limit_bytes_per_second: s.rate_limit,
        eta_seconds: s.eta.map(|d| d.as_secs()).unwrap_or(0),
        error: s.error.clone(),
        skipped_stripes: s.skipped,
        failed_stripes: s.failed,
        unreadable_blocks: s.unreadable_blocks,
        rewritten_stripes: s.rewritten,
        resumed_from: s.resumed_from,
    }
}

/// The proto view of a volume, assembled or not.
pub fn entry_to_proto(entry: &VolumeEntry) -> pb::Volume {
    match entry {
        VolumeEntry::Assembled(v) => volume_to_proto(v),
        VolumeEntry::Unassembled(u) => unassembled_to_proto(u),
    }
}

#[tonic::async_trait]
impl VolumeService for VolumeApi {
    async fn get_cluster_info(
        &self,
        _: Request<pb::GetClusterInfoRequest>,
    ) -> Result<Response<pb::ClusterInfo>, Status> {
        let registry = self.volumes.registry();
        let nodes = registry
            .nodes()
            .iter()
            .map(|n| {
                let health = n.health();
                pb::StorageNodeInfo {
                    node_id: n.id().to_owned(),
                    address: n.address().to_owned(),
                    reachable: health.reachable,
                    components: self.volumes.components_on(n.id()) as u32,
                    detail: health.detail,
                    missed_checks: health.missed,
                }
            })
            .collect();
        Ok(Response::new(pb::ClusterInfo {
            cluster_id: registry.fencing().cluster_id().to_owned(),
            epoch: registry.fencing().epoch(),
            max_io_bytes: self.max_io_bytes,
            nodes,
        }))
    }

    async fn create_volume(
        &self,
        request: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let r = request.into_inner();
        let level = level_from_proto(r.level);
        if level.is_none() && r.level != pb::RaidLevel::Unspecified as i32 {
            return Err(ServiceError::BadGeometry {
                detail: format!("unknown RAID level {}", r.level),
            }
            .into());
        }
        let spec = VolumeSpec {
            name: r.name,
            level,
            size_bytes: r.size_bytes,
            columns: r.columns,
            stripe_unit_bytes: r.stripe_unit_bytes,
            block_size: r.block_size,
            nodes: r.nodes,
        };
        let volume = self.volumes.create(spec).await?;
        Ok(Response::new(self.assembled_view(&volume)))
    }

    async fn list_volumes(
        &self,
        _: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let volumes = self
            .volumes
            .entries()
            .iter()
            .map(|e| self.volume_view(e))
            .collect();
        Ok(Response::new(pb::ListVolumesResponse { volumes }))
    }

    async fn get_volume(
        &self,
        request: Request<pb::GetVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let volume = self.volumes.entry(&request.into_inner().name)?;
        Ok(Response::new(self.volume_view(&volume)))
    }

    async fn delete_volume(
        &self,
        request: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
        self.volumes.delete(&request.into_inner().name).await?;
        Ok(Response::new(pb::DeleteVolumeResponse {}))
    }

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        let r = request.into_inner();
        let volume = self.volumes.get(&r.volume)?;
        self.check_len(&r.volume, "read", r.offset, r.length)?;
        let (data, _) = volume
            .array()
            .read(r.offset, r.length)
            .await
            .map_err(|source| ServiceError::Access {
                volume: r.volume.clone(),
                source,
            })?;
        Ok(Response::new(pb::ReadResponse {
            data: data.into_bytes(),
        }))
    }

    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = request.into_inner();
        let volume = self.volumes.get(&r.volume)?;
        self.check_len(&r.volume, "write", r.offset, r.data.len() as u64)?;
        volume
            .array()
            .write(r.offset, r.data)
            .await
            .map_err(|source| ServiceError::Access {
                volume: r.volume.clone(),
                source,
            })?;
        Ok(Response::new(pb::WriteResponse {}))
    }

    async fn flush(
        &self,
        request: Request<pb::FlushRequest>,
    ) -> Result<Response<pb::FlushResponse>, Status> {
        let name = request.into_inner().volume;
        let volume = self.volumes.get(&name)?;
        volume
            .array()
            .flush()
            .await
            .map_err(|source| ServiceError::Access {
                volume: name,
                source,
            })?;
        Ok(Response::new(pb::FlushResponse {}))
    }

    async fn fail_component(
        &self,
        request: Request<pb::FailComponentRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let r = request.into_inner();
        let volume = self
            .volumes
            .fail_component(&r.volume, r.column as usize)
            .await?;
        Ok(Response::new(self.assembled_view(&volume)))
    }

    async fn assemble_volume(
        &self,
        request: Request<pb::AssembleVolumeRequest>,
    ) -> Result<Response<pb::AssembleVolumeResponse>, Status> {
        let r = request.into_inner();
        let report = self.volumes.assemble_volume(&r.name, r.force).await?;
        Ok(Response::new(pb::AssembleVolumeResponse {
            at_risk: report.volume.note().at_risk.clone().unwrap_or_default(),
            volume: Some(self.assembled_view(&report.volume)),
            newly_failed: report
                .newly_failed
                .into_iter()
                .map(|(column, reason)| pb::FailedColumn {
                    column: column as u32,
                    reason,
                })
                .collect(),
        }))
    }

    async fn list_lost(
        &self,
        request: Request<pb::ListLostRequest>,
    ) -> Result<Response<pb::ListLostResponse>, Status> {
        let r = request.into_inner();
        let (lost, block_size) = match self.volumes.entry(&r.volume)? {
            VolumeEntry::Assembled(v) => (v.array().lost(), v.layout().geometry().block_size()),
            VolumeEntry::Unassembled(u) => {
                (u.record().lost.set(), u64::from(u.record().block_size))
            }
        };
        Ok(Response::new(pb::ListLostResponse {
            ranges: lost
                .ranges()
                .map(|b| pb::LostRange {
                    offset: b.start * block_size,
                    length: (b.end - b.start) * block_size,
                })
                .collect(),
            block_size: block_size as u32,
        }))
    }

    async fn add_spare(
        &self,
        request: Request<pb::AddSpareRequest>,
    ) -> Result<Response<pb::Spare>, Status> {
        let r = request.into_inner();
        // Size 0: the largest column of any volume, so the spare fits every volume.
        let size = match r.size_bytes {
            0 => self
                .volumes
                .largest_component_bytes()
                .ok_or_else(|| ServiceError::BadSpare {
                    detail: "size_bytes is 0 and there is no volume to size the spare after: give a size".into(),
                })?,
            s => s,
        };
        let spare = self
            .volumes
            .spares()
            .add(&r.node_id, size, r.block_size)
            .await?;
        Ok(Response::new(self.spare_view(&spare)))
    }

    async fn remove_spare(
        &self,
        request: Request<pb::RemoveSpareRequest>,
    ) -> Result<Response<pb::RemoveSpareResponse>, Status> {
        self.volumes
            .spares()
            .remove(&request.into_inner().id)
            .await?;
        Ok(Response::new(pb::RemoveSpareResponse {}))
    }

    async fn list_spares(
        &self,
        _request: Request<pb::ListSparesRequest>,
    ) -> Result<Response<pb::ListSparesResponse>, Status> {
        let spares = self
            .volumes
            .spares()
            .list()
            .iter()
            .map(|s| self.spare_view(s))
            .collect();
        Ok(Response::new(pb::ListSparesResponse { spares }))
    }

    async fn rebuild_column(
        &self,
        request: Request<pb::RebuildColumnRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let r = request.into_inner();
        let target = match (r.in_place, r.spare_id.is_empty()) {
            (true, false) => {
                return Err(ServiceError::InvalidRequest {
                    detail: "in_place and spare_id exclude each other: give one or neither".into(),
                }
                .into());
            }
            (true, true) => RebuildTarget::InPlace,
            (false, false) => RebuildTarget::Spare(r.spare_id),
            (false, true) => RebuildTarget::BestSpare,
        };
        let volume = self
            .rebuilds
            .rebuild_column(
                &r.volume,
                r.column as usize,
                target,
                r.rate_bytes_per_second,
            )
            .await?;
        Ok(Response::new(self.assembled_view(&volume)))
    }

    async fn re_add_column(
        &self,
        request: Request<pb::ReAddColumnRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let r = request.into_inner();
        let volume = self
            .rebuilds
            .re_add_column(&r.volume, r.column as usize, r.rate_bytes_per_second)
            .await?;
        Ok(Response::new(self.assembled_view(&volume)))
    }

    async fn copyback(
        &self,
        request: Request<pb::CopybackRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let r = request.into_inner();
        if r.to_node_id.is_empty() {
            return Err(ServiceError::InvalidRequest {
                detail: "to_node_id is required: the node of the replacement".into(),
            }
            .into());
        }
        let volume = self
            .rebuilds
            .copyback(
                &r.volume,
                r.column as usize,
                &r.to_node_id,
                r.rate_bytes_per_second,
            )
            .await?;
        Ok(Response::new(self.assembled_view(&volume)))
    }

    async fn check_parity(
        &self,
        request: Request<pb::ParityRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let r = request.into_inner();
        let volume = self
            .scrubs
            .start(&r.volume, ParityJobKind::Check, r.rate_bytes_per_second)?;
        Ok(Response::new(self.assembled_view(&volume)))
    }

    async fn rewrite_parity(
        &self,
        request: Request<pb::ParityRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        let r = request.into_inner();
        let volume =
            self.scrubs
                .start(&r.volume, ParityJobKind::Rewrite, r.rate_bytes_per_second)?;
        Ok(Response::new(self.assembled_view(&volume)))
    }
}

/// Checks `authorization: Bearer <token>` on every call when a token is configured.
#[derive(Clone)]
pub struct BearerAuth {
    /// Shared by every clone (the service's and the reloader's): [`BearerAuth::set_token`]
    /// changes what every call is checked against.
    token: Arc<std::sync::RwLock<Option<Arc<[u8]>>>>,
    client_certificates: bool,
}

/// Never shows the token.
impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("token", &self.current().map(|_| "<redacted>"))
            .field("client_certificates", &self.client_certificates)
            .finish()
    }
}

impl BearerAuth {
    /// Requires `token` on every call; `None` lets every call through. With
    /// `client_certificates` (the API serves TLS), a call whose TLS client certificate names
    /// the client role (`client.dagraid`) is let through without the token, and without a
    /// token configured such a certificate is required.
    pub fn new(token: Option<&str>, client_certificates: bool) -> Self {
        Self {
            token: Arc::new(std::sync::RwLock::new(
                token.map(|t| Arc::from(t.as_bytes())),
            )),
            client_certificates,
        }
    }

    /// Replaces the token (a rotation): from now on only `token` is accepted.
    pub fn set_token(&self, token: Option<&str>) {
        *self
            .token
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            token.map(|t| Arc::from(t.as_bytes()));
    }

    fn current(&self) -> Option<Arc<[u8]>> {
        self.token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether an `authorization` header value carries the token.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = self.current() else {
            return true;
        };
        let Some(value) = authorization else {
            return false;
        };
        // The scheme is case-insensitive (RFC 7235).
        let Some(presented) = value
            .split_first_chunk::<7>()
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|(_, rest)| rest)
        else {
            return false;
        };
        constant_time_eq(presented, &token)
    }
}

/// Compares without an early exit, so the time taken does not tell how many leading bytes of a
/// guess were right (only whether the lengths matched).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.client_certificates {
            if dagraid_tls::require_role(&request, &dagraid_tls::Role::Client).is_ok() {
                return Ok(request);
            }
            if self.current().is_none() {
                return Err(ServiceError::ClientCertificateRequired.to_status());
            }
        }
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        if self.accepts(header) {
            Ok(request)
        } else {
            Err(ServiceError::Unauthenticated.to_status())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_never_shown_and_can_be_replaced() {
        let auth = BearerAuth::new(Some("s3cret-value"), false);
        assert!(!format!("{auth:?}").contains("s3cret-value"));
        let shared = auth.clone();
        shared.set_token(Some("n3w"));
        assert!(!auth.accepts(Some(b"Bearer s3cret-value")));
        assert!(auth.accepts(Some(b"Bearer n3w")));
    }

    #[test]
    fn the_token_is_checked_exactly() {
        let open = BearerAuth::new(None, false);
        assert!(open.accepts(None));
        assert!(open.accepts(Some(b"Bearer anything")));
        let auth = BearerAuth::new(Some("s3cret"), false);
        assert!(auth.accepts(Some(b"Bearer s3cret")));
        assert!(auth.accepts(Some(b"bearer s3cret")));
        for bad in [
            &b""[..],
            b"s3cret",
            b"Bearer",
            b"Bearer ",
            b"Bearer s3cre",
            b"Bearer s3cret2",
            b"Bearer S3cret",
            b"Basic s3cret",
            b"Bearer  s3cret",
        ] {
            assert!(
                !auth.accepts(Some(bad)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(!auth.accepts(None));
    }

    #[test]
    fn a_call_without_the_token_is_unauthenticated_with_its_kind() {
        let mut auth = BearerAuth::new(Some("t"), false);
        let status = auth.call(Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            status
                .metadata()
                .get(dagraid_proto::error_kind::HEADER)
                .unwrap(),
            "unauthenticated"
        );
        let mut ok = Request::new(());
        ok.metadata_mut()
            .insert("authorization", "Bearer t".parse().unwrap());
        auth.call(ok).unwrap();
    }

    #[test]
    fn levels_convert_both_ways() {
        for level in RaidLevel::ALL {
            assert_eq!(level_from_proto(level_to_proto(level) as i32), Some(level));
        }
        assert_eq!(level_from_proto(0), None);
        assert_eq!(level_from_proto(99), None);
    }
}
