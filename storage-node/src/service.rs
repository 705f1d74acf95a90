//! The gRPC face of the node: converts `dagraid.storage.v1` messages at the boundary and maps
//! every error through [`NodeError::to_status`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dagraid_proto::storage::v1 as pb;
use pb::storage_node_server::StorageNode;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

use crate::block_store::{BlockStore, ComponentHealth};
use crate::error::NodeError;
use crate::faults::{Fault, FaultAction, FaultOps};
use crate::node::{Node, Owner};
use crate::slot::Area;

/// Implements `dagraid.storage.v1.StorageNode` over a [`Node`].
#[derive(Clone)]
pub struct StorageService {
    node: Arc<Node>,
}

impl StorageService {
    /// The service of `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// Runs a mutating operation in its own task, so a client that gives up (dropping the request)
/// cannot cut it in half: the write and its in-flight registration end together, which keeps
/// `Fence` honest. The task stays in the call's span, so its disk I/O is traced under it.
async fn detached<T, F>(op: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: Future<Output = Result<T, NodeError>> + Send + 'static,
{
    match tokio::spawn(op.in_current_span()).await {
        Ok(result) => result.map_err(Status::from),
        Err(join) => Err(NodeError::io("operation task", std::io::Error::other(join)).into()),
    }
}

fn owner(fencing: Option<pb::Fencing>) -> Result<Owner, NodeError> {
    optional_owner(fencing).ok_or_else(|| {
        NodeError::InvalidArgument("fencing (cluster id and epoch) is required".into())
    })
}

/// The owner of a read: reads from clients older than protocol version 2 carry none.
fn optional_owner(fencing: Option<pb::Fencing>) -> Option<Owner> {
    fencing.map(|f| Owner {
        cluster_id: f.cluster_id,
        epoch: f.epoch,
    })
}

fn area(value: i32) -> Result<Area, NodeError> {
    match pb::SlotArea::try_from(value) {
        Ok(pb::SlotArea::Label) => Ok(Area::Label),
        Ok(pb::SlotArea::Metadata) => Ok(Area::Metadata),
        _ => Err(NodeError::InvalidArgument(format!(
            "area {value} is not SLOT_AREA_LABEL or SLOT_AREA_METADATA"
        ))),
    }
}

/// The proto view of a component.
pub fn component_info(store: &BlockStore) -> pb::ComponentInfo {
    let header = store.header();
    let (state, failure_reason) = match store.health() {
        ComponentHealth::Optimal => (pb::ComponentState::Optimal, String::new()),
        ComponentHealth::Failed(reason) => (pb::ComponentState::Failed, reason),
    };
    pb::ComponentInfo {
        component_id: header.id.clone(),
        serial: header.serial,
        block_size: header.block_size,
        block_count: header.block_count,
        size_bytes: u64::from(header.block_size) * header.block_count,
        state: state as i32,
        failure_reason,
        log_bytes: header.log_bytes,
        fence_epoch: store.fence_epoch(),
    }
}

fn fault(req: &pb::InjectFaultRequest) -> Result<Fault, NodeError> {
    let delay = Duration::from_millis(u64::from(req.delay_ms));
    let action = match pb::FaultKind::try_from(req.kind) {
        Ok(pb::FaultKind::Fail) => {
            let code = match req.status_code {
                0 => Code::Unavailable,
                1..=16 => Code::from_i32(req.status_code),
                other => {
                    return Err(NodeError::InvalidArgument(format!(
                        "status_code {other} is not a gRPC status code"
                    )));
                }
            };
            FaultAction::Fail(code)
        }
        Ok(pb::FaultKind::Delay) => FaultAction::Delay(delay),
        Ok(pb::FaultKind::Hang) => FaultAction::Hang,
        Ok(pb::FaultKind::LateApply) => FaultAction::LateApply(delay),
        _ => {
            return Err(NodeError::InvalidArgument(format!(
                "fault kind {} is not FAIL, DELAY, HANG, LATE_APPLY, POWER_CUT or HOLD_SYNCS",
                req.kind
            )));
        }
    };
    let ops = match pb::FaultOps::try_from(req.ops) {
        Ok(pb::FaultOps::Any) => FaultOps::Any,
        Ok(pb::FaultOps::Read) => FaultOps::Read,
        Ok(pb::FaultOps::Write) => FaultOps::Write,
        Ok(pb::FaultOps::Flush) => FaultOps::Flush,
        Ok(pb::FaultOps::BlockWrite) => FaultOps::BlockWrite,
        Ok(pb::FaultOps::LogRead) => FaultOps::LogRead,
        Err(_) => {
            return Err(NodeError::InvalidArgument(format!(
                "fault ops {} is not ANY, READ, WRITE, FLUSH, BLOCK_WRITE or LOG_READ",
                req.ops
            )));
        }
    };
    Ok(Fault {
        action,
        ops,
        remaining: (req.count > 0).then_some(req.count),
    })
}

#[tonic::async_trait]
impl StorageNode for StorageService {
    async fn get_node_info(
        &self,
        _request: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        let summary = self.node.summary();
        Ok(Response::new(pb::NodeInfo {
            node_id: summary.node_id,
            cluster_id: summary.cluster_id,
            epoch: summary.epoch,
            components: summary
                .components
                .iter()
                .map(|c| component_info(c))
                .collect(),
            max_io_bytes: summary.max_io_bytes,
            fault_injection_enabled: summary.fault_injection,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol_version: dagraid_proto::storage::PROTOCOL_VERSION,
        }))
    }

    async fn create_component(
        &self,
        request: Request<pb::CreateComponentRequest>,
    ) -> Result<Response<pb::CreateComponentResponse>, Status> {
        let req = request.into_inner();
        let owner = owner(req.fencing)?;
        let node = self.node.clone();
        let store = detached(async move {
            node.create_component(
                &owner,
                &req.component_id,
                req.block_size,
                req.block_count,
                req.serial,
                req.log_bytes,
            )
            .await
        })
        .await?;
        Ok(Response::new(pb::CreateComponentResponse {
            component: Some(component_info(&store)),
        }))
    }

    async fn list_components(
        &self,
        _request: Request<pb::ListComponentsRequest>,
    ) -> Result<Response<pb::ListComponentsResponse>, Status> {
        let components = self.node.components_list();
        Ok(Response::new(pb::ListComponentsResponse {
            components: components.iter().map(|c| component_info(c)).collect(),
        }))
    }

    async fn delete_component(
        &self,
        request: Request<pb::DeleteComponentRequest>,
    ) -> Result<Response<pb::DeleteComponentResponse>, Status> {
        let req = request.into_inner();
        let owner = owner(req.fencing)?;
        let node = self.node.clone();
        detached(async move { node.delete_component(&owner, &req.component_id).await }).await?;
        Ok(Response::new(pb::DeleteComponentResponse {}))
    }

    async fn read_blocks(
        &self,
        request: Request<pb::ReadBlocksRequest>,
    ) -> Result<Response<pb::ReadBlocksResponse>, Status> {
        let req = request.into_inner();
        let data = self
            .node
            .read_blocks(
                optional_owner(req.fencing),
                &req.component_id,
                req.start_block,
                u64::from(req.block_count),
            )
            .await?;
        Ok(Response::new(pb::ReadBlocksResponse { data }))
    }

    async fn write_blocks(
        &self,
        request: Request<pb::WriteBlocksRequest>,
    ) -> Result<Response<pb::WriteBlocksResponse>, Status> {
        let req = request.into_inner();
        let owner = owner(req.fencing)?;
        let node = self.node.clone();
        detached(async move {
            node.write_blocks(owner, &req.component_id, req.start_block, req.data)
                .await
        })
        .await?;
        Ok(Response::new(pb::WriteBlocksResponse {}))
    }

    async fn write_log(
        &self,
        request: Request<pb::WriteLogRequest>,
    ) -> Result<Response<pb::WriteLogResponse>, Status> {
        let req = request.into_inner();
        let owner = owner(req.fencing)?;
        let node = self.node.clone();
        detached(async move {
            node.write_log(owner, &req.component_id, req.offset, req.data)
                .await
        })
        .await?;
        Ok(Response::new(pb::WriteLogResponse {}))
    }

    async fn read_log(
        &self,
        request: Request<pb::ReadLogRequest>,
    ) -> Result<Response<pb::ReadLogResponse>, Status> {
        let req = request.into_inner();
        let data = self
            .node
            .read_log(
                optional_owner(req.fencing),
                &req.component_id,
                req.offset,
                u64::from(req.length),
            )
            .await?;
        Ok(Response::new(pb::ReadLogResponse { data }))
    }

    async fn flush(
        &self,
        request: Request<pb::FlushRequest>,
    ) -> Result<Response<pb::FlushResponse>, Status> {
        let req = request.into_inner();
        let owner = owner(req.fencing)?;
        let node = self.node.clone();
        detached(async move { node.flush(owner, &req.component_id).await }).await?;
        Ok(Response::new(pb::FlushResponse {}))
    }

    async fn read_slot(
        &self,
        request: Request<pb::ReadSlotRequest>,
    ) -> Result<Response<pb::ReadSlotResponse>, Status> {
        let req = request.into_inner();
        let area = area(req.area)?;
        let record = self
            .node
            .read_slot(optional_owner(req.fencing), &req.component_id, area)
            .await?;
        Ok(Response::new(match record {
            Some(record) => pb::ReadSlotResponse {
                present: true,
                sequence: record.sequence,
                payload: record.payload.into(),
            },
            None => pb::ReadSlotResponse {
                present: false,
                sequence: 0,
                payload: Default::default(),
            },
        }))
    }

    async fn write_slot(
        &self,
        request: Request<pb::WriteSlotRequest>,
    ) -> Result<Response<pb::WriteSlotResponse>, Status> {
        let req = request.into_inner();
        let owner = owner(req.fencing)?;
        let area = area(req.area)?;
        let node = self.node.clone();
        let sequence = detached(async move {
            node.write_slot(owner, &req.component_id, area, req.payload)
                .await
        })
        .await?;
        Ok(Response::new(pb::WriteSlotResponse { sequence }))
    }

    async fn fence(
        &self,
        request: Request<pb::FenceRequest>,
    ) -> Result<Response<pb::FenceResponse>, Status> {
        let req = request.into_inner();
        let node = self.node.clone();
        let epoch = detached(async move {
            if req.component_id.is_empty() {
                node.fence(&req.cluster_id, req.epoch).await
            } else {
                node.fence_component(&req.cluster_id, &req.component_id, req.epoch)
                    .await
            }
        })
        .await?;
        Ok(Response::new(pb::FenceResponse { epoch }))
    }

    async fn inject_fault(
        &self,
        request: Request<pb::InjectFaultRequest>,
    ) -> Result<Response<pb::InjectFaultResponse>, Status> {
        let req = request.into_inner();
        if !self.node.fault_injection_enabled() {
            return Err(NodeError::FaultInjectionDisabled.into());
        }
        match pb::FaultKind::try_from(req.kind) {
            Ok(pb::FaultKind::PowerCut) => {
                if !req.component_id.is_empty() {
                    return Err(NodeError::InvalidArgument(format!(
                        "a power cut takes the whole node: component_id must be empty, not {:?}",
                        req.component_id
                    ))
                    .into());
                }
                let node = self.node.clone();
                tokio::task::spawn_blocking(move || node.power_cut(req.seed))
                    .await
                    .map_err(|e| NodeError::io("power cut task", std::io::Error::other(e)))??;
            }
            Ok(pb::FaultKind::HoldSyncs) => self.node.hold_syncs(&req.component_id)?,
            _ => {
                let fault = fault(&req)?;
                self.node.inject_fault(&req.component_id, fault)?;
            }
        }
        Ok(Response::new(pb::InjectFaultResponse {}))
    }

    async fn clear_faults(
        &self,
        request: Request<pb::ClearFaultsRequest>,
    ) -> Result<Response<pb::ClearFaultsResponse>, Status> {
        let req = request.into_inner();
        let id = (!req.component_id.is_empty()).then_some(req.component_id.as_str());
        self.node.clear_faults(id)?;
        Ok(Response::new(pb::ClearFaultsResponse {}))
    }
}
