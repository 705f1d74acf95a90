//! A component on a storage node, as the core sees it: [`RemoteComponent`] implements
//! [`ComponentIo`] over a [`NodeClient`].
//!
//! Requests the node would refuse anyway (no blocks, a partial block, a range beyond the
//! component) are refused here without a round trip, with the same error kinds. Answers are
//! checked before they are passed on: a read answer of the wrong length is an error, never data.
//!
//! The component's log area (`WriteLog`, `ReadLog`, storage protocol version 3) is reached the
//! same way: checked here first (alignment to [`LOG_ALIGN`], range within
//! [`ComponentIo::log_bytes`]), writes fenced and sent again under a newer epoch of this client
//! like block writes. A version 2 node answers the log calls UNIMPLEMENTED: that is an
//! [`IoErrorKind::InvalidRequest`] saying the node is too old.

use bytes::Bytes;
use dagraid_core::io::{ComponentIo, IoError, IoErrorKind, LOG_ALIGN};
use dagraid_proto::storage::v1 as pb;
use futures::future::BoxFuture;

use crate::error::{IoOp, NodeClientError, status_to_io_error};
use crate::node_client::{BlockCall, ComponentInfo, NodeClient};

/// One component on one storage node: (node, component id, block size, block count, log
/// size).
///
/// Cheap to clone; every component of a node shares that node's connections, its limit of calls
/// in flight and the coordinator's fencing.
#[derive(Debug, Clone)]
pub struct RemoteComponent {
    node: NodeClient,
    component_id: String,
    block_size: u32,
    block_count: u64,
    /// Bytes of the log area; fixed for the value's life (the core sizes its log ring once).
    log_bytes: u64,
}

impl RemoteComponent {
    /// Component `component_id` of `node`, with `block_count` blocks of `block_size` bytes.
    ///
    /// Its log area is the size the node last reported to `node` for this component
    /// ([`NodeClient::component_log_bytes`]: the registry's health checks keep it known for every
    /// reachable node), 0 (no log area) when no answer named it yet;
    /// [`RemoteComponent::with_log_bytes`] sets it explicitly.
    pub fn new(
        node: NodeClient,
        component_id: impl Into<String>,
        block_size: u32,
        block_count: u64,
    ) -> Result<Self, NodeClientError> {
        let component_id = component_id.into();
        let invalid = |reason| NodeClientError::InvalidComponent {
            component: component_id.clone(),
            reason,
        };
        if component_id.is_empty() {
            return Err(invalid("the component id is empty"));
        }
        if block_size == 0 {
            return Err(invalid("the block size is zero"));
        }
        if block_count == 0 {
            return Err(invalid("the component has no blocks"));
        }
        let log_bytes = node.component_log_bytes(&component_id).unwrap_or(0);
        Ok(Self {
            node,
            component_id,
            block_size,
            block_count,
            log_bytes,
        })
    }

    /// The same component with a log area of `log_bytes` bytes (0: none), as the node reports
    /// it in `ComponentInfo.log_bytes`.
    pub fn with_log_bytes(mut self, log_bytes: u64) -> Self {
        self.log_bytes = log_bytes;
        self
    }

    /// The component `info` describes (as the node listed or created it), on `node`, with its
    /// log area.
    pub fn from_info(node: NodeClient, info: &ComponentInfo) -> Result<Self, NodeClientError> {
        Ok(
            Self::new(node, info.id.clone(), info.block_size, info.block_count)?
                .with_log_bytes(info.log_bytes),
        )
    }

    /// The node the component lives on.
    pub fn node(&self) -> &NodeClient {
        &self.node
    }

    fn error(&self, kind: IoErrorKind, start: u64, count: u64, detail: String) -> IoError {
        IoError::new(kind, &self.component_id, start, count, detail)
    }

    fn check_range(&self, start: u64, count: u64) -> Result<(), IoError> {
        if count == 0 {
            return Err(self.error(
                IoErrorKind::InvalidRequest,
                start,
                count,
                "a request of zero blocks".into(),
            ));
        }
        if start
            .checked_add(count)
            .is_none_or(|end| end > self.block_count)
        {
            return Err(self.error(
                IoErrorKind::OutOfRange,
                start,
                count,
                format!("the component has {} blocks", self.block_count),
            ));
        }
        Ok(())
    }

    async fn read_blocks(&self, start: u64, count: u32) -> Result<Bytes, IoError> {
        let n = u64::from(count);
        self.check_range(start, n)?;
        let expected = n * u64::from(self.block_size);
        let answer = self
            .refenced(IoOp::Read, start, n, |fencing| pb::ReadBlocksRequest {
                component_id: self.component_id.clone(),
                start_block: start,
                block_count: count,
                // Checked by the node like a write's: refused once a newer owner took over.
                fencing: (fencing.epoch > 0).then_some(fencing),
            })
            .await?;
        if answer.data.len() as u64 != expected {
            let err = self.error(
                IoErrorKind::Other,
                start,
                n,
                format!(
                    "node {} answered {} bytes for {count} blocks of {} bytes",
                    self.node.address(),
                    answer.data.len(),
                    self.block_size
                ),
            );
            tracing::warn!(error = %err, "wrong-sized read answer");
            return Err(err);
        }
        Ok(answer.data)
    }

    async fn write_blocks(&self, start: u64, data: Bytes) -> Result<(), IoError> {
        let len = data.len() as u64;
        let bs = u64::from(self.block_size);
        let n = len / bs;
        if !len.is_multiple_of(bs) {
            return Err(self.error(
                IoErrorKind::InvalidRequest,
                start,
                n,
                format!("{len} bytes are not a whole number of {bs}-byte blocks"),
            ));
        }
        self.check_range(start, n)?;
        self.node
            .ensure_fenced()
            .await
            .map_err(|s| self.failed(&s, IoOp::Write, start, n))?;
        self.refenced(IoOp::Write, start, n, |fencing| pb::WriteBlocksRequest {
            fencing: Some(fencing),
            component_id: self.component_id.clone(),
            start_block: start,
            data: data.clone(),
        })
        .await
        .map(drop)
    }

    async fn flush_component(&self) -> Result<(), IoError> {
        self.node
            .ensure_fenced()
            .await
            .map_err(|s| self.failed(&s, IoOp::Flush, 0, 0))?;
        self.refenced(IoOp::Flush, 0, 0, |fencing| pb::FlushRequest {
            fencing: Some(fencing),
            component_id: self.component_id.clone(),
        })
        .await
        .map(drop)
    }

    /// Checks a log-area access of `len` bytes at `offset` as the node would: a log area, both
    /// multiples of [`LOG_ALIGN`], a non-zero length, inside the area.
    fn check_log(&self, offset: u64, len: u64) -> Result<(), IoError> {
        let refuse = |kind, detail: String| Err(self.error(kind, offset, 0, detail));
        if self.log_bytes == 0 {
            return refuse(
                IoErrorKind::InvalidRequest,
                "this component has no log area".into(),
            );
        }
        if !offset.is_multiple_of(LOG_ALIGN) || len == 0 || !len.is_multiple_of(LOG_ALIGN) {
            return refuse(
                IoErrorKind::InvalidRequest,
                format!(
                    "a log access of {len} bytes at offset {offset}: both must be multiples of {LOG_ALIGN}, the length not zero"
                ),
            );
        }
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.log_bytes)
        {
            return refuse(
                IoErrorKind::OutOfRange,
                format!(
                    "log bytes {offset}..+{len} lie beyond the log area of {} bytes",
                    self.log_bytes
                ),
            );
        }
        Ok(())
    }

    async fn write_log_area(&self, offset: u64, data: Bytes) -> Result<(), IoError> {
        self.check_log(offset, data.len() as u64)?;
        self.node
            .ensure_fenced()
            .await
            .map_err(|s| self.failed(&s, IoOp::WriteLog, offset, 0))?;
        self.refenced(IoOp::WriteLog, offset, 0, |fencing| pb::WriteLogRequest {
            fencing: Some(fencing),
            component_id: self.component_id.clone(),
            offset,
            data: data.clone(),
        })
        .await
        .map(drop)
    }

    async fn read_log_area(&self, offset: u64, len: u32) -> Result<Bytes, IoError> {
        self.check_log(offset, u64::from(len))?;
        let answer = self
            .refenced(IoOp::ReadLog, offset, 0, |fencing| pb::ReadLogRequest {
                component_id: self.component_id.clone(),
                offset,
                length: len,
                fencing: (fencing.epoch > 0).then_some(fencing),
            })
            .await?;
        if answer.data.len() != len as usize {
            let err = self.error(
                IoErrorKind::Other,
                offset,
                0,
                format!(
                    "node {} answered {} bytes for a log read of {len}",
                    self.node.address(),
                    answer.data.len()
                ),
            );
            tracing::warn!(error = %err, "wrong-sized log read answer");
            return Err(err);
        }
        Ok(answer.data)
    }

    /// Sends the block call `request(fencing)` makes, with the fencing the component's calls
    /// carry now. A call the node refused as stale because this client fenced the component
    /// meanwhile (its epoch moved past the one sent, or will once a fence of this component
    /// still on its way is recorded: the node may refuse the call before the fence's answer
    /// arrives) is sent again with the new epoch: the node refuses a stale call before applying
    /// anything, so nothing is retried blindly. A refusal with no such move (a newer owner) is
    /// the answer, at once.
    async fn refenced<C: BlockCall>(
        &self,
        op: IoOp,
        start: u64,
        count: u64,
        request: impl Fn(pb::Fencing) -> C,
    ) -> Result<C::Answer, IoError> {
        loop {
            let fencing = self.node.fencing_for(&self.component_id);
            let sent = fencing.epoch;
            match self.node.io_call(request(fencing)).await {
                Ok(answer) => return Ok(answer),
                Err(status) => {
                    let err = self.failed(&status, op, start, count);
                    if err.kind == IoErrorKind::Fenced
                        && self.node.moved_past(&self.component_id, sent).await
                    {
                        tracing::debug!(component = %self.component_id, sent, "refused under an epoch this client fenced past: sent again");
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }

    fn failed(&self, status: &tonic::Status, op: IoOp, start: u64, count: u64) -> IoError {
        if status.code() == tonic::Code::Unimplemented
            && matches!(op, IoOp::WriteLog | IoOp::ReadLog)
        {
            let err = self.error(
                IoErrorKind::InvalidRequest,
                start,
                count,
                format!(
                    "node {}: the node is too old for log-area calls (they need storage protocol version {}; it answered UNIMPLEMENTED: {}): upgrade the node",
                    self.node.address(),
                    dagraid_proto::storage::LOG_PROTOCOL_VERSION,
                    status.message()
                ),
            );
            tracing::debug!(error = %err, "log call to a node without log calls");
            return err;
        }
        let mut err = status_to_io_error(status, op, &self.component_id, start, count);
        err.detail = format!("node {}: {}", self.node.address(), err.detail);
        tracing::debug!(error = %err, "component call failed");
        err
    }
}

impl ComponentIo for RemoteComponent {
    fn id(&self) -> &str {
        &self.component_id
    }

    fn block_size(&self) -> u32 {
        self.block_size
    }

    fn block_count(&self) -> u64 {
        self.block_count
    }

    fn read(&self, start_block: u64, block_count: u32) -> BoxFuture<'_, Result<Bytes, IoError>> {
        Box::pin(self.read_blocks(start_block, block_count))
    }

    fn write(&self, start_block: u64, data: Bytes) -> BoxFuture<'_, Result<(), IoError>> {
        Box::pin(self.write_blocks(start_block, data))
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), IoError>> {
        Box::pin(self.flush_component())
    }

    /// The log area's size; when it was not known at construction (the node did not answer
    /// yet), what the node has reported since.
    fn log_bytes(&self) -> u64 {
        if self.log_bytes > 0 {
            return self.log_bytes;
        }
        self.node
            .component_log_bytes(&self.component_id)
            .unwrap_or(0)
    }

    fn write_log(&self, offset: u64, data: Bytes) -> BoxFuture<'_, Result<(), IoError>> {
        Box::pin(self.write_log_area(offset, data))
    }

    fn read_log(&self, offset: u64, len: u32) -> BoxFuture<'_, Result<Bytes, IoError>> {
        Box::pin(self.read_log_area(offset, len))
    }

    /// A component fence on the node ([`NodeClient::fence_component`]), under the I/O deadline.
    fn fence(&self) -> BoxFuture<'_, Result<(), IoError>> {
        Box::pin(async move {
            self.node
                .fence_component(&self.component_id)
                .await
                .map(drop)
                .map_err(|s| self.failed(&s, IoOp::Fence, 0, 0))
        })
    }

    /// Every call is bounded by its node client's I/O deadline, counted from when it is sent:
    /// a call may first wait for a place among its node's calls in flight, and that wait must
    /// not count (the engine adds no deadline of its own).
    fn own_deadline(&self) -> Option<std::time::Duration> {
        Some(self.node.io_deadline())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use pb::storage_node_server::{StorageNode, StorageNodeServer};
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::error::NodeErrorKind;
    use crate::node_client::{FencingContext, NodeClientConfig};

    /// A node that answers reads with `extra` bytes too many (negative: too few), and reports
    /// `protocol_version`.
    struct WrongSizedReads {
        block_size: usize,
        extra: isize,
        protocol_version: u32,
    }

    fn unimplemented<T>() -> Result<Response<T>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    #[tonic::async_trait]
    impl StorageNode for WrongSizedReads {
        async fn read_blocks(
            &self,
            request: Request<pb::ReadBlocksRequest>,
        ) -> Result<Response<pb::ReadBlocksResponse>, Status> {
            let want = request.into_inner().block_count as usize * self.block_size;
            let len = want.checked_add_signed(self.extra).unwrap();
            Ok(Response::new(pb::ReadBlocksResponse {
                data: Bytes::from(vec![7u8; len]),
            }))
        }
        async fn get_node_info(
            &self,
            _: Request<pb::GetNodeInfoRequest>,
        ) -> Result<Response<pb::NodeInfo>, Status> {
            Ok(Response::new(pb::NodeInfo {
                components: vec![pb::ComponentInfo {
                    component_id: "c".into(),
                    state: 99,
                    ..Default::default()
                }],
                protocol_version: self.protocol_version,
                version: "0.0.1".into(),
                ..Default::default()
            }))
        }
        async fn create_component(
            &self,
            _: Request<pb::CreateComponentRequest>,
        ) -> Result<Response<pb::CreateComponentResponse>, Status> {
            Ok(Response::new(pb::CreateComponentResponse {
                component: None,
            }))
        }
        async fn list_components(
            &self,
            _: Request<pb::ListComponentsRequest>,
        ) -> Result<Response<pb::ListComponentsResponse>, Status> {
            unimplemented()
        }
        async fn delete_component(
            &self,
            _: Request<pb::DeleteComponentRequest>,
        ) -> Result<Response<pb::DeleteComponentResponse>, Status> {
            unimplemented()
        }
        async fn write_blocks(
            &self,
            _: Request<pb::WriteBlocksRequest>,
        ) -> Result<Response<pb::WriteBlocksResponse>, Status> {
            unimplemented()
        }
        async fn flush(
            &self,
            _: Request<pb::FlushRequest>,
        ) -> Result<Response<pb::FlushResponse>, Status> {
            unimplemented()
        }
        // As a protocol version 2 node answers them.
        async fn write_log(
            &self,
            _: Request<pb::WriteLogRequest>,
        ) -> Result<Response<pb::WriteLogResponse>, Status> {
            Err(Status::unimplemented("Method not found: WriteLog"))
        }
        async fn read_log(
            &self,
            _: Request<pb::ReadLogRequest>,
        ) -> Result<Response<pb::ReadLogResponse>, Status> {
            Err(Status::unimplemented("Method not found: ReadLog"))
        }
        async fn read_slot(
            &self,
            _: Request<pb::ReadSlotRequest>,
        ) -> Result<Response<pb::ReadSlotResponse>, Status> {
            unimplemented()
        }
        async fn write_slot(
            &self,
            _: Request<pb::WriteSlotRequest>,
        ) -> Result<Response<pb::WriteSlotResponse>, Status> {
            unimplemented()
        }
        async fn fence(
            &self,
            _: Request<pb::FenceRequest>,
        ) -> Result<Response<pb::FenceResponse>, Status> {
            unimplemented()
        }
        async fn inject_fault(
            &self,
            _: Request<pb::InjectFaultRequest>,
        ) -> Result<Response<pb::InjectFaultResponse>, Status> {
            unimplemented()
        }
        async fn clear_faults(
            &self,
            _: Request<pb::ClearFaultsRequest>,
        ) -> Result<Response<pb::ClearFaultsResponse>, Status> {
            unimplemented()
        }
    }

    /// Serves `service` in-process on 127.0.0.1:0 until the test's runtime ends.
    async fn serve(service: WrongSizedReads) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(StorageNodeServer::new(service))
                .serve_with_incoming(incoming),
        );
        addr
    }

    fn client(addr: &str) -> NodeClient {
        NodeClient::new(
            addr,
            FencingContext::new("dagraid", 0),
            NodeClientConfig::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_read_answer_of_the_wrong_length_is_an_error_never_data() {
        for extra in [-1isize, 1, -512] {
            let addr = serve(WrongSizedReads {
                block_size: 512,
                extra,
                protocol_version: 2,
            })
            .await;
            let c = RemoteComponent::new(client(&addr.to_string()), "c", 512, 8).unwrap();
            let e = c.read(2, 3).await.unwrap_err();
            assert_eq!(e.kind, IoErrorKind::Other, "{e}");
            assert_eq!((e.start_block, e.block_count), (2, 3));
            assert!(
                e.detail
                    .contains(&format!("answered {} bytes", 1536isize + extra)),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn admin_answers_that_break_the_protocol_are_invalid_responses() {
        let addr = serve(WrongSizedReads {
            block_size: 512,
            extra: 0,
            protocol_version: 2,
        })
        .await;
        let node = client(&addr.to_string());
        let e = node.node_info().await.unwrap_err();
        assert_eq!(e.kind(), Some(&NodeErrorKind::InvalidResponse), "{e}");
        assert!(e.to_string().contains("state 99"), "{e}");
        let e = node.create_component("c", 512, 8, 0).await.unwrap_err();
        assert_eq!(e.kind(), Some(&NodeErrorKind::InvalidResponse), "{e}");
        // Not implemented by this node: by code.
        let e = node.list_components().await.unwrap_err();
        assert_eq!(e.kind(), Some(&NodeErrorKind::Other), "{e}");
    }

    /// A node older than protocol version 2 (it reports 0) is refused at the first contact,
    /// with an error naming it, and never fenced or written.
    #[tokio::test]
    async fn a_node_older_than_the_protocol_is_refused_by_name() {
        for old in [0, 1] {
            let addr = serve(WrongSizedReads {
                block_size: 512,
                extra: 0,
                protocol_version: old,
            })
            .await
            .to_string();
            let node = client(&addr);
            let e = node.node_info().await.unwrap_err();
            assert!(
                matches!(
                    &e,
                    NodeClientError::IncompatibleNode { node, protocol_version, needed: 2, .. }
                        if *node == addr && *protocol_version == old
                ),
                "{e}"
            );
            let message = e.to_string();
            assert!(
                message.contains(&addr)
                    && message.contains(&format!("protocol version {old}"))
                    && message.contains("upgrade the node"),
                "{message}"
            );
            // A client with an epoch checks before its first Fence (the fake would answer
            // UNIMPLEMENTED to the Fence itself).
            let fencing = FencingContext::new("dagraid", 3);
            let node = NodeClient::new(&addr, fencing, NodeClientConfig::default()).unwrap();
            let status = node.ensure_fenced().await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
            assert!(status.message().contains("upgrade the node"), "{status}");
            assert_eq!(node.fenced_epoch(), 0);
        }
    }

    #[tokio::test]
    async fn requests_the_node_would_refuse_are_refused_without_a_call() {
        // Nothing listens there: any request that reached the network would be Unavailable.
        let c = RemoteComponent::new(client("127.0.0.1:1"), "c", 512, 8).unwrap();
        let kind = |r: Result<(), IoError>| r.unwrap_err().kind;
        assert_eq!(
            kind(c.read(0, 0).await.map(drop)),
            IoErrorKind::InvalidRequest
        );
        assert_eq!(kind(c.read(7, 2).await.map(drop)), IoErrorKind::OutOfRange);
        assert_eq!(
            kind(c.read(u64::MAX, 1).await.map(drop)),
            IoErrorKind::OutOfRange
        );
        assert_eq!(
            kind(c.write(0, Bytes::new()).await),
            IoErrorKind::InvalidRequest
        );
        assert_eq!(
            kind(c.write(0, Bytes::from(vec![0u8; 513])).await),
            IoErrorKind::InvalidRequest
        );
        let e = c.write(7, Bytes::from(vec![0u8; 1024])).await.unwrap_err();
        assert_eq!(e.kind, IoErrorKind::OutOfRange);
        assert_eq!((e.start_block, e.block_count), (7, 2));
        // And a request that does go out finds nobody.
        assert_eq!(kind(c.read(0, 1).await.map(drop)), IoErrorKind::Unavailable);
        assert_eq!(kind(c.flush().await), IoErrorKind::Unavailable);
    }

    #[tokio::test]
    async fn log_requests_the_node_would_refuse_are_refused_without_a_call() {
        let c = RemoteComponent::new(client("127.0.0.1:1"), "c", 512, 8).unwrap();
        // Nothing ever reported a log area for it.
        assert_eq!(c.log_bytes(), 0);
        let e = c
            .write_log(0, Bytes::from(vec![0u8; 4096]))
            .await
            .unwrap_err();
        assert_eq!(e.kind, IoErrorKind::InvalidRequest, "{e}");
        assert!(e.detail.contains("no log area"), "{e}");
        let c = c.with_log_bytes(4 * 4096);
        assert_eq!(c.log_bytes(), 4 * 4096);
        let kind = |r: Result<(), IoError>| r.unwrap_err().kind;
        for (offset, len) in [(1, 4096), (4096, 0), (0, 100), (0, 4097)] {
            assert_eq!(
                kind(c.write_log(offset, Bytes::from(vec![0u8; len])).await),
                IoErrorKind::InvalidRequest,
                "{offset} {len}"
            );
            assert_eq!(
                kind(c.read_log(offset, len as u32).await.map(drop)),
                IoErrorKind::InvalidRequest,
                "{offset} {len}"
            );
        }
        for (offset, len) in [
            (4 * 4096, 4096u32),
            (3 * 4096, 8192),
            (u64::MAX - 4095, 4096),
        ] {
            assert_eq!(
                kind(c.read_log(offset, len).await.map(drop)),
                IoErrorKind::OutOfRange,
                "{offset} {len}"
            );
            assert_eq!(
                kind(
                    c.write_log(offset, Bytes::from(vec![0u8; len as usize]))
                        .await
                ),
                IoErrorKind::OutOfRange,
                "{offset} {len}"
            );
        }
        // A request that does go out finds nobody.
        assert_eq!(
            kind(c.read_log(3 * 4096, 4096).await.map(drop)),
            IoErrorKind::Unavailable
        );
    }

    /// A protocol version 2 node answers the log calls UNIMPLEMENTED: an invalid request that
    /// says the node is too old, never a failed component.
    #[tokio::test]
    async fn log_calls_to_a_version_2_node_say_it_is_too_old() {
        let addr = serve(WrongSizedReads {
            block_size: 512,
            extra: 0,
            protocol_version: 2,
        })
        .await;
        let c = RemoteComponent::new(client(&addr.to_string()), "c", 512, 8)
            .unwrap()
            .with_log_bytes(1 << 20);
        let w = c
            .write_log(0, Bytes::from(vec![1u8; 4096]))
            .await
            .unwrap_err();
        let r = c.read_log(4096, 4096).await.unwrap_err();
        for e in [w, r] {
            assert_eq!(e.kind, IoErrorKind::InvalidRequest, "{e}");
            assert!(
                e.detail.contains("too old") && e.detail.contains("protocol version 3"),
                "{e}"
            );
        }
        // Everything else still works with it.
        assert_eq!(c.read(0, 1).await.unwrap().len(), 512);
    }

    #[test]
    fn components_without_blocks_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let node = client("127.0.0.1:1");
        for (id, bs, n) in [("", 512, 1), ("c", 0, 1), ("c", 512, 0)] {
            let e = RemoteComponent::new(node.clone(), id, bs, n).unwrap_err();
            assert!(matches!(e, NodeClientError::InvalidComponent { .. }), "{e}");
        }
        let c = RemoteComponent::new(node, "c", 512, 3).unwrap();
        assert_eq!((c.id(), c.block_size(), c.block_count()), ("c", 512, 3));
    }

    /// The fencing a storage node applies, kept in a fake: a Fence raises the node's epoch (no
    /// component) or one component's; a write below max(node epoch, component epoch) is refused
    /// as stale, like the real node's. While `hold` is set, a component Fence is applied at once
    /// but answered only when the test adds a permit to `release`: the window in which the node
    /// refuses a call of the client's old epoch before the client has the fence's answer.
    struct Fences {
        state: std::sync::Mutex<FenceState>,
        hold: std::sync::atomic::AtomicBool,
        /// A component fence was applied (one permit per fence).
        applied: tokio::sync::Notify,
        /// A write was refused as stale (one permit per refusal).
        refused: tokio::sync::Notify,
        release: tokio::sync::Semaphore,
    }

    #[derive(Default)]
    struct FenceState {
        node: u64,
        components: std::collections::HashMap<String, u64>,
        /// Writes applied: (component, epoch carried).
        written: Vec<(String, u64)>,
    }

    impl Fences {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                state: Default::default(),
                hold: Default::default(),
                applied: Default::default(),
                refused: Default::default(),
                release: tokio::sync::Semaphore::new(0),
            })
        }

        fn written(&self) -> Vec<(String, u64)> {
            self.state.lock().unwrap().written.clone()
        }
    }

    fn stale(got: u64, current: u64) -> Status {
        let mut status = Status::failed_precondition(format!(
            "epoch {got} is stale: this node has accepted epoch {current}"
        ));
        status.metadata_mut().insert(
            dagraid_proto::error_kind::HEADER,
            dagraid_proto::error_kind::STALE_EPOCH.parse().unwrap(),
        );
        status
    }

    struct FenceNode(Arc<Fences>);

    #[tonic::async_trait]
    impl StorageNode for FenceNode {
        async fn read_blocks(
            &self,
            _: Request<pb::ReadBlocksRequest>,
        ) -> Result<Response<pb::ReadBlocksResponse>, Status> {
            unimplemented()
        }
        async fn get_node_info(
            &self,
            _: Request<pb::GetNodeInfoRequest>,
        ) -> Result<Response<pb::NodeInfo>, Status> {
            Ok(Response::new(pb::NodeInfo {
                protocol_version: dagraid_proto::storage::PROTOCOL_VERSION,
                version: "0.0.1".into(),
                ..Default::default()
            }))
        }
        async fn create_component(
            &self,
            _: Request<pb::CreateComponentRequest>,
        ) -> Result<Response<pb::CreateComponentResponse>, Status> {
            unimplemented()
        }
        async fn list_components(
            &self,
            _: Request<pb::ListComponentsRequest>,
        ) -> Result<Response<pb::ListComponentsResponse>, Status> {
            unimplemented()
        }
        async fn delete_component(
            &self,
            _: Request<pb::DeleteComponentRequest>,
        ) -> Result<Response<pb::DeleteComponentResponse>, Status> {
            unimplemented()
        }
        async fn write_blocks(
            &self,
            request: Request<pb::WriteBlocksRequest>,
        ) -> Result<Response<pb::WriteBlocksResponse>, Status> {
            let r = request.into_inner();
            let got = r.fencing.map_or(0, |f| f.epoch);
            let current = {
                let mut state = self.0.state.lock().unwrap();
                let current = state
                    .node
                    .max(state.components.get(&r.component_id).copied().unwrap_or(0));
                if got >= current {
                    state.written.push((r.component_id, got));
                    return Ok(Response::new(pb::WriteBlocksResponse {}));
                }
                current
            };
            self.0.refused.notify_one();
            Err(stale(got, current))
        }
        async fn flush(
            &self,
            _: Request<pb::FlushRequest>,
        ) -> Result<Response<pb::FlushResponse>, Status> {
            unimplemented()
        }
        async fn read_slot(
            &self,
            _: Request<pb::ReadSlotRequest>,
        ) -> Result<Response<pb::ReadSlotResponse>, Status> {
            unimplemented()
        }
        async fn write_slot(
            &self,
            _: Request<pb::WriteSlotRequest>,
        ) -> Result<Response<pb::WriteSlotResponse>, Status> {
            unimplemented()
        }
        async fn fence(
            &self,
            request: Request<pb::FenceRequest>,
        ) -> Result<Response<pb::FenceResponse>, Status> {
            let r = request.into_inner();
            let epoch = {
                let mut state = self.0.state.lock().unwrap();
                let current = if r.component_id.is_empty() {
                    state.node
                } else {
                    state
                        .node
                        .max(state.components.get(&r.component_id).copied().unwrap_or(0))
                };
                if r.epoch < current {
                    return Err(stale(r.epoch, current));
                }
                if r.component_id.is_empty() {
                    state.node = r.epoch;
                } else {
                    state.components.insert(r.component_id.clone(), r.epoch);
                }
                r.epoch
            };
            if !r.component_id.is_empty() {
                self.0.applied.notify_one();
                if self.0.hold.load(std::sync::atomic::Ordering::SeqCst) {
                    self.0.release.acquire().await.unwrap().forget();
                }
            }
            Ok(Response::new(pb::FenceResponse { epoch }))
        }
        async fn inject_fault(
            &self,
            _: Request<pb::InjectFaultRequest>,
        ) -> Result<Response<pb::InjectFaultResponse>, Status> {
            unimplemented()
        }
        async fn clear_faults(
            &self,
            _: Request<pb::ClearFaultsRequest>,
        ) -> Result<Response<pb::ClearFaultsResponse>, Status> {
            unimplemented()
        }
        async fn write_log(
            &self,
            _: Request<pb::WriteLogRequest>,
        ) -> Result<Response<pb::WriteLogResponse>, Status> {
            unimplemented()
        }
        async fn read_log(
            &self,
            _: Request<pb::ReadLogRequest>,
        ) -> Result<Response<pb::ReadLogResponse>, Status> {
            unimplemented()
        }
    }

    async fn serve_fences(fences: Arc<Fences>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(StorageNodeServer::new(FenceNode(fences)))
                .serve_with_incoming(incoming),
        );
        addr
    }

    const OWNER: u64 = crate::node_client::OWNER_EPOCH_STEP;

    /// Component `id` of a client at owner epoch [`OWNER`] of the fake node at `addr`.
    fn owned(addr: SocketAddr, id: &str) -> RemoteComponent {
        let node = NodeClient::new(
            &addr.to_string(),
            FencingContext::new("dagraid", OWNER),
            NodeClientConfig::default(),
        )
        .unwrap();
        RemoteComponent::new(node, id, 512, 8).unwrap()
    }

    fn block() -> Bytes {
        Bytes::from(vec![1u8; 512])
    }

    /// The race seen in CI (a RAID 6 power-cut test write refused at epoch 2^32+1 by this
    /// coordinator's own fence at 2^32+2): the node applies a component fence and refuses a
    /// write sent at the old epoch before the fence's answer reaches the client. The write
    /// waits for the fence and is sent again at the new epoch; it does not fail as fenced.
    #[tokio::test]
    async fn a_call_refused_by_a_fence_of_this_client_still_on_its_way_is_sent_again() {
        let fences = Fences::new();
        let addr = serve_fences(fences.clone()).await;
        let c = owned(addr, "c");
        c.write(0, block()).await.unwrap();
        fences.hold.store(true, std::sync::atomic::Ordering::SeqCst);
        let fencing = tokio::spawn({
            let c = c.clone();
            async move { c.fence().await }
        });
        // The node has the fence; the client does not know yet.
        fences.applied.notified().await;
        assert_eq!(c.node().component_epoch("c"), OWNER);
        let write = tokio::spawn({
            let c = c.clone();
            async move { c.write(1, block()).await }
        });
        fences.refused.notified().await;
        // Refused at the old epoch while the fence is still on its way: the write must not have
        // failed (before the fix it had, as fenced, by now: give it time to).
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            !write.is_finished(),
            "failed while the fence was on its way: {:?}",
            write.await
        );
        fences.release.add_permits(1);
        fencing.await.unwrap().unwrap();
        write.await.unwrap().unwrap();
        assert_eq!(c.node().component_epoch("c"), OWNER + 1);
        assert_eq!(
            fences.written(),
            [("c".to_owned(), OWNER), ("c".to_owned(), OWNER + 1)]
        );
    }

    /// A refusal with no fence of this client above the epoch sent (a newer owner took over) is
    /// the answer at once: a fence of another component on the same node, still on its way, is
    /// not waited for. And a fence dropped before its answer (its caller cancelled) wakes the
    /// calls waiting for it, which then fail as fenced instead of hanging.
    #[tokio::test]
    async fn a_refusal_by_a_newer_owner_is_not_waited_on() {
        let fences = Fences::new();
        let addr = serve_fences(fences.clone()).await;
        let c = owned(addr, "c");
        let d = RemoteComponent::new(c.node().clone(), "d", 512, 8).unwrap();
        c.write(0, block()).await.unwrap();
        fences.hold.store(true, std::sync::atomic::Ordering::SeqCst);
        let fencing_d = tokio::spawn({
            let d = d.clone();
            async move { d.fence().await }
        });
        fences.applied.notified().await;
        // A newer owner fences the node.
        fences.state.lock().unwrap().node = 2 * OWNER;
        let quick = std::time::Duration::from_secs(5);
        let e = tokio::time::timeout(quick, c.write(1, block()))
            .await
            .expect("a newer owner's refusal is answered at once")
            .unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Fenced, "{e}");
        fencing_d.abort();
        assert!(fencing_d.await.unwrap_err().is_cancelled());

        // A fence of `c` itself dropped while on its way: the refused write waits for it, then
        // fails as fenced (nothing moved) once it is dropped.
        fences.state.lock().unwrap().node = OWNER;
        let fencing_c = tokio::spawn({
            let c = c.clone();
            async move { c.fence().await }
        });
        fences.applied.notified().await;
        let write = tokio::spawn({
            let c = c.clone();
            async move { c.write(2, block()).await }
        });
        fences.refused.notified().await;
        fencing_c.abort();
        let e = tokio::time::timeout(quick, write)
            .await
            .expect("a dropped fence wakes the calls waiting for it")
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind, IoErrorKind::Fenced, "{e}");
        assert_eq!(fences.written(), [("c".to_owned(), OWNER)]);
    }
}
