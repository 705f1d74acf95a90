//! A component on a storage node, as the core sees it: [`RemoteComponent`] implements
//! [`ComponentIo`] over a [`NodeClient`].
//!
//! Requests the node would refuse anyway (no blocks, a partial block, a range beyond the
//! component) are refused here without a round trip, with the same error kinds. Answers are
//! checked before they are passed on: a read answer of the wrong length is an error, never data.

use bytes::Bytes;
use dagraid_core::io::{ComponentIo, IoError, IoErrorKind};
use dagraid_proto::storage::v1 as pb;
use futures::future::BoxFuture;

use crate::error::{IoOp, NodeClientError, status_to_io_error};
use crate::node_client::{BlockCall, ComponentInfo, NodeClient};

/// One component on one storage node: (node, component id, block size, block count).
///
/// Cheap to clone; every component of a node shares that node's connections, its limit of calls
/// in flight and the coordinator's fencing.
#[derive(Debug, Clone)]
pub struct RemoteComponent {
    node: NodeClient,
    component_id: String,
    block_size: u32,
    block_count: u64,
}

impl RemoteComponent {
    /// Component `component_id` of `node`, with `block_count` blocks of `block_size` bytes.
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
        Ok(Self {
            node,
            component_id,
            block_size,
            block_count,
        })
    }

    /// The component `info` describes (as the node listed or created it), on `node`.
    pub fn from_info(node: NodeClient, info: &ComponentInfo) -> Result<Self, NodeClientError> {
        Self::new(node, info.id.clone(), info.block_size, info.block_count)
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

    /// Sends the block call `request(fencing)` makes, with the fencing the component's calls
    /// carry now. A call the node refused as stale because this client fenced the component
    /// meanwhile (its epoch moved past the one sent) is sent again with the new epoch: the node
    /// refuses a stale call before applying anything, so nothing is retried blindly. A refusal
    /// with no such move (a newer owner) is the answer.
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
                        && self.node.component_epoch(&self.component_id) > sent
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
}
