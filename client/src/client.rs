//! The connection to a coordinator: options, authentication, deadlines, retries, and the admin
//! and query calls.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dagraid_proto::volume::v1 as pb;
use dagraid_tls::{ClientTls, Role, TlsFiles};
use pb::volume_service_client::VolumeServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::{
    AssembleOutcome, ClientError, ClusterInfo, LostRange, RebuildTarget, Spare, Volume, VolumeInfo,
    VolumeSpec,
};

/// HTTP/2 frame size: a 1 MiB chunk travels in one frame (the setting that matters most for
/// large transfers, STACK.md).
pub const HTTP2_MAX_FRAME_SIZE: u32 = 1 << 20;
/// HTTP/2 per-stream flow-control window: room for several 1 MiB frames before an update.
pub const HTTP2_STREAM_WINDOW: u32 = 8 << 20;
/// HTTP/2 per-connection flow-control window.
pub const HTTP2_CONNECTION_WINDOW: u32 = 32 << 20;
/// Encode and decode limit of one message: above any `max_io_bytes` a coordinator may announce
/// (at most 1 GiB) plus overhead, so the coordinator, not this client, says what is too large.
pub const MAX_MESSAGE_BYTES: usize = (1 << 30) + (2 << 20);

type Rpc = VolumeServiceClient<Channel>;

/// Retries of idempotent calls (reads, flush, queries) after a transport failure.
///
/// A call is retried only when it never got an answer from the coordinator's service
/// ([`ClientError::is_transport`]); writes and admin mutations are never retried, whatever the
/// policy, since a lost answer does not tell whether they happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 disables retries.
    pub max_attempts: u32,
    /// Pause before the first retry; it doubles on each further retry.
    pub initial_backoff: Duration,
    /// Longest pause between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(800),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

/// How a [`Client`] talks to the coordinator.
///
/// ```
/// use std::time::Duration;
/// use dagraid_client::ClientOptions;
///
/// let options = ClientOptions {
///     token: Some("s3cret".into()),
///     request_timeout: Duration::from_secs(10),
///     ..ClientOptions::default()
/// };
/// # let _ = options;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Bearer token, sent as `authorization: Bearer <token>` on every call.
    pub token: Option<String>,
    /// Deadline of establishing each connection.
    pub connect_timeout: Duration,
    /// Deadline of one call (one chunk of a large read or write), also sent to the coordinator
    /// as `grpc-timeout`.
    pub request_timeout: Duration,
    /// HTTP/2 connections to the coordinator, used round robin (several 1 MiB transfers are
    /// faster over a few connections than over one).
    pub connections: usize,
    /// Chunks of one large read or write in flight at once.
    pub max_in_flight: usize,
    /// Interval of HTTP/2 pings, also on idle connections.
    pub keepalive_interval: Duration,
    /// A connection whose ping is not answered within this is closed.
    pub keepalive_timeout: Duration,
    /// Retries of idempotent calls.
    pub retry: RetryPolicy,
    /// Upper bound of one call's payload, below the coordinator's own `max_io_bytes` (`None`:
    /// the coordinator's limit alone).
    pub max_io_bytes: Option<u64>,
    /// TLS to the coordinator (`https://` endpoints): the cluster CA, and optionally a client
    /// certificate naming `client.dagraid`, which the coordinator accepts instead of the token
    /// (docs/SECURITY.md). `None`: plaintext (`http://`).
    pub tls: Option<TlsFiles>,
    /// The name the coordinator's certificate must carry [default: `coordinator.dagraid`,
    /// the name every coordinator certificate of a dagraid cluster CA carries, whatever its
    /// address].
    pub tls_server_name: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            token: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            connections: 2,
            max_in_flight: 4,
            keepalive_interval: Duration::from_secs(2),
            keepalive_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            max_io_bytes: None,
            tls: None,
            tls_server_name: None,
        }
    }
}

impl ClientOptions {
    fn validate(&self) -> Result<(), ClientError> {
        if self.connections == 0 {
            return Err(ClientError::InvalidOptions(
                "connections must be at least 1",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ClientError::InvalidOptions(
                "max_in_flight must be at least 1",
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err(ClientError::InvalidOptions(
                "retry.max_attempts must be at least 1",
            ));
        }
        if self.max_io_bytes == Some(0) {
            return Err(ClientError::InvalidOptions("max_io_bytes must be positive"));
        }
        for (d, what) in [
            (self.connect_timeout, "connect_timeout must be positive"),
            (self.request_timeout, "request_timeout must be positive"),
            (
                self.keepalive_interval,
                "keepalive_interval must be positive",
            ),
            (self.keepalive_timeout, "keepalive_timeout must be positive"),
        ] {
            if d.is_zero() {
                return Err(ClientError::InvalidOptions(what));
            }
        }
        Ok(())
    }
}

/// A connection to one dagraid coordinator. Cheap to clone: clones share the connections.
///
/// ```no_run
/// use dagraid_client::{Client, ClientOptions, RaidLevel, VolumeSpec};
///
/// # async fn example() -> Result<(), dagraid_client::ClientError> {
/// let client = Client::connect(
///     "http://127.0.0.1:7070",
///     ClientOptions { token: Some("s3cret".into()), ..Default::default() },
/// )
/// .await?;
/// client
///     .create_volume(VolumeSpec::new("vol1", RaidLevel::Raid5, 1 << 30))
///     .await?;
/// let vol = client.volume("vol1");
/// vol.write_at(0, b"hello".to_vec()).await?;
/// assert_eq!(&vol.read_at(0, 5).await?[..], b"hello");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: String,
    rpcs: Vec<Rpc>,
    next: AtomicUsize,
    authorization: Option<MetadataValue<Ascii>>,
    options: ClientOptions,
    /// The coordinator's `max_io_bytes` capped by the options; 0 until first fetched.
    max_io_bytes: AtomicU64,
}

impl Client {
    /// Connects to the coordinator at `endpoint` (`http://host:port`; a bare `host:port` means
    /// `http://`). Fails if no connection can be made within the connect timeout; once
    /// connected, a lost connection is remade on the next call.
    pub async fn connect(
        endpoint: impl Into<String>,
        options: ClientOptions,
    ) -> Result<Self, ClientError> {
        let endpoint = endpoint.into();
        options.validate()?;
        let authorization =
            match &options.token {
                None => None,
                Some(token) => Some(MetadataValue::try_from(format!("Bearer {token}")).map_err(
                    |_| ClientError::InvalidOptions("the token must be printable ASCII"),
                )?),
            };
        let invalid = |reason: String| ClientError::InvalidEndpoint {
            endpoint: endpoint.clone(),
            reason,
        };
        // tonic is given http://: the TLS, when asked for, is the connector's.
        let uri = match (endpoint.split_once("://"), &options.tls) {
            (None, _) => format!("http://{endpoint}"),
            (Some(("http", _)), None) => endpoint.clone(),
            (Some(("https", rest)), Some(_)) => format!("http://{rest}"),
            (Some(("https", _)), None) => {
                return Err(invalid(
                    "https:// needs TLS options (ClientOptions::tls: the cluster CA)".into(),
                ));
            }
            (Some(("http", _)), Some(_)) => {
                return Err(invalid("TLS options are set: use https://host:port".into()));
            }
            (Some(_), _) => {
                return Err(invalid("only http:// and https:// are supported".into()));
            }
        };
        let connector = match &options.tls {
            None => None,
            Some(files) => {
                let tls = ClientTls::load(files.clone()).map_err(|e| ClientError::Tls {
                    message: e.to_string(),
                })?;
                let name = options
                    .tls_server_name
                    .clone()
                    .unwrap_or_else(|| Role::Coordinator.dns_name());
                Some(tls.connector(&name).map_err(|e| ClientError::Tls {
                    message: e.to_string(),
                })?)
            }
        };
        let config = Endpoint::from_shared(uri)
            .map_err(|e| invalid(error_chain(&e)))?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(options.keepalive_interval)
            .keep_alive_timeout(options.keepalive_timeout)
            .keep_alive_while_idle(true)
            .max_frame_size(HTTP2_MAX_FRAME_SIZE)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW);
        let uri = config.uri();
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("expected http://host:port".into()));
        }
        let channels = futures::future::try_join_all((0..options.connections).map(|_| {
            let config = config.clone();
            let connector = connector.clone();
            async move {
                let connecting = async {
                    match connector {
                        Some(connector) => config.connect_with_connector(connector).await,
                        None => config.connect().await,
                    }
                };
                match tokio::time::timeout(options.connect_timeout, connecting).await {
                    Ok(Ok(channel)) => Ok(channel),
                    Ok(Err(e)) => Err(ClientError::Transport {
                        message: format!("cannot connect: {}", error_chain(&e)),
                    }),
                    Err(_) => Err(ClientError::Timeout {
                        message: format!("cannot connect within {:?}", options.connect_timeout),
                    }),
                }
            }
        }))
        .await?;
        let rpcs = channels
            .into_iter()
            .map(|channel| {
                VolumeServiceClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint,
                rpcs,
                next: AtomicUsize::new(0),
                authorization,
                options,
                max_io_bytes: AtomicU64::new(0),
            }),
        })
    }

    /// The endpoint as given to [`Client::connect`].
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The options in force.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// A handle on volume `name`. Makes no call: an unknown volume shows on first use as
    /// [`ClientError::UnknownVolume`].
    pub fn volume(&self, name: impl Into<String>) -> Volume {
        Volume::new(self.clone(), name.into())
    }

    /// Cluster identity, limits and storage nodes. Also refreshes the cached `max_io_bytes`
    /// that reads and writes are cut by.
    ///
    /// ```no_run
    /// # async fn example(client: dagraid_client::Client) -> Result<(), dagraid_client::ClientError> {
    /// let info = client.cluster_info().await?;
    /// for node in &info.nodes {
    ///     println!("{} {} reachable={}", node.node_id, node.address, node.reachable);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn cluster_info(&self) -> Result<ClusterInfo, ClientError> {
        let info = self
            .idempotent(
                pb::GetClusterInfoRequest {},
                |mut rpc, request| async move { rpc.get_cluster_info(request).await },
            )
            .await?;
        let info = ClusterInfo::from_proto(info);
        if info.max_io_bytes == 0 {
            return Err(ClientError::InvalidResponse(
                "cluster info announces max_io_bytes 0".into(),
            ));
        }
        let limit = info
            .max_io_bytes
            .min(self.inner.options.max_io_bytes.unwrap_or(u64::MAX))
            // One call's payload must fit in memory and in a message.
            .min(MAX_MESSAGE_BYTES as u64 - (2 << 20));
        self.inner.max_io_bytes.store(limit, Ordering::Relaxed);
        Ok(info)
    }

    /// Largest payload of one call: the coordinator's `max_io_bytes` (fetched once, then
    /// cached) capped by [`ClientOptions::max_io_bytes`].
    pub async fn max_io_bytes(&self) -> Result<u64, ClientError> {
        match self.inner.max_io_bytes.load(Ordering::Relaxed) {
            0 => {
                self.cluster_info().await?;
                Ok(self.inner.max_io_bytes.load(Ordering::Relaxed))
            }
            cached => Ok(cached),
        }
    }

    /// Creates a volume. Never retried: on a transport error, [`Client::list_volumes`] tells
    /// whether it was made.
    ///
    /// ```no_run
    /// # async fn example(client: dagraid_client::Client) -> Result<(), dagraid_client::ClientError> {
    /// use dagraid_client::{RaidLevel, VolumeSpec};
    /// let spec = VolumeSpec::new("db", RaidLevel::Raid6, 4 << 30)
    ///     .columns(6)
    ///     .stripe_unit_bytes(128 << 10);
    /// let volume = client.create_volume(spec).await?;
    /// println!("{} is {}", volume.name, volume.state);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_volume(&self, spec: VolumeSpec) -> Result<VolumeInfo, ClientError> {
        let volume = self
            .call(spec.into_proto(), |mut rpc, request| async move {
                rpc.create_volume(request).await
            })
            .await?;
        VolumeInfo::from_proto(volume)
    }

    /// Every volume, in the coordinator's order.
    ///
    /// ```no_run
    /// # async fn example(client: dagraid_client::Client) -> Result<(), dagraid_client::ClientError> {
    /// for v in client.list_volumes().await? {
    ///     println!("{} {} {}", v.name, v.level, v.state);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, ClientError> {
        let answer = self
            .idempotent(pb::ListVolumesRequest {}, |mut rpc, request| async move {
                rpc.list_volumes(request).await
            })
            .await?;
        answer
            .volumes
            .into_iter()
            .map(VolumeInfo::from_proto)
            .collect()
    }

    /// Deletes a volume and its components. Never retried.
    ///
    /// ```no_run
    /// # async fn example(client: dagraid_client::Client) -> Result<(), dagraid_client::ClientError> {
    /// client.delete_volume("scratch").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_volume(&self, name: &str) -> Result<(), ClientError> {
        let request = pb::DeleteVolumeRequest {
            name: name.to_owned(),
        };
        self.call(request, |mut rpc, request| async move {
            rpc.delete_volume(request).await
        })
        .await?;
        Ok(())
    }

    /// Fails column `column` of `volume`, like `raidctl -f`; refused with
    /// [`ClientError::WouldExceedTolerance`] when the layout would not survive it. Returns the
    /// volume as it is afterwards. Never retried.
    ///
    /// ```no_run
    /// # async fn example(client: dagraid_client::Client) -> Result<(), dagraid_client::ClientError> {
    /// let after = client.fail_component("vol0", 2).await?;
    /// assert_eq!(after.state, dagraid_client::VolumeState::Degraded);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn fail_component(
        &self,
        volume: &str,
        column: u32,
    ) -> Result<VolumeInfo, ClientError> {
        let request = pb::FailComponentRequest {
            volume: volume.to_owned(),
            column,
        };
        let volume = self
            .call(request, |mut rpc, request| async move {
                rpc.fail_component(request).await
            })
            .await?;
        VolumeInfo::from_proto(volume)
    }

    /// The lost byte ranges of `volume`: bytes that answer DATA_LOSS (`unreadable`) until they
    /// are written again, in increasing order.
    pub async fn list_lost(&self, volume: &str) -> Result<Vec<LostRange>, ClientError> {
        let request = pb::ListLostRequest {
            volume: volume.to_owned(),
        };
        let answer = self
            .call(request, |mut rpc, request| async move {
                rpc.list_lost(request).await
            })
            .await?;
        Ok(answer
            .ranges
            .into_iter()
            .map(|r| LostRange {
                offset: r.offset,
                length: r.length,
            })
            .collect())
    }

    /// Runs the assembly of `volume` again, from the labels on its components (`raidctl -C`):
    /// for a volume the coordinator did not assemble at start ([`crate::VolumeState::NotAssembled`]).
    /// A volume that was not shut down cleanly and is degraded is assembled only with `force`;
    /// the answer then says what is at risk. Refusals are [`ClientError::NotAssembled`], with the
    /// reason. An assembled volume is answered as it is. Never retried.
    ///
    /// ```no_run
    /// # async fn example(client: dagraid_client::Client) -> Result<(), dagraid_client::ClientError> {
    /// let outcome = client.assemble_volume("vol0", true).await?;
    /// if let Some(risk) = &outcome.at_risk {
    ///     eprintln!("assembled by force: {risk}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn assemble_volume(
        &self,
        volume: &str,
        force: bool,
    ) -> Result<AssembleOutcome, ClientError> {
        let request = pb::AssembleVolumeRequest {
            name: volume.to_owned(),
            force,
        };
        let answer = self
            .call(request, |mut rpc, request| async move {
                rpc.assemble_volume(request).await
            })
            .await?;
        AssembleOutcome::from_proto(answer)
    }

    /// Starts the reconstruction of failed column `column` of `volume` now, without waiting for
    /// the coordinator's down-out delay: onto a spare of the pool ([`RebuildTarget::BestSpare`]
    /// or a named [`RebuildTarget::Spare`]), or in place ([`RebuildTarget::InPlace`]). `rate`
    /// caps it in bytes per second (`None`: the coordinator's `--rebuild-rate`).
    ///
    /// Answers once the column is reconstructing; the answer's [`VolumeInfo::rebuilds`] (and
    /// every [`Volume::describe`] after it) show the progress. Never retried: on a transport
    /// error, `describe` tells whether it started.
    ///
    /// Refusals: [`ClientError::UnknownVolume`]; [`ClientError::InvalidArgument`] (no such
    /// column, an empty spare id, a rate of 0); [`ClientError::UnknownSpare`] and
    /// [`ClientError::SpareInUse`] for a named spare; [`ClientError::RebuildRefused`] (the
    /// column is not failed or is being rebuilt already, no spare fits, a resync must finish
    /// first: the message says which); [`ClientError::Unsupported`] from a coordinator without
    /// reconstruction; the coordinator's other refusals as their own variants.
    ///
    /// ```no_run
    /// # async fn example(client: dagraid_client::Client) -> Result<(), dagraid_client::ClientError> {
    /// use dagraid_client::RebuildTarget;
    /// let v = client
    ///     .rebuild_column("vol0", 2, RebuildTarget::BestSpare, Some(64 << 20))
    ///     .await?;
    /// if let Some(r) = v.rebuild_of(2) {
    ///     println!("column 2 onto {}/{}: {}%", r.node_id, r.component_id, r.percent());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn rebuild_column(
        &self,
        volume: &str,
        column: u32,
        target: RebuildTarget,
        rate: Option<u64>,
    ) -> Result<VolumeInfo, ClientError> {
        let (spare_id, in_place) = match target {
            RebuildTarget::BestSpare => (String::new(), false),
            RebuildTarget::Spare(id) if id.trim().is_empty() => {
                return Err(ClientError::InvalidArgument {
                    message: "the spare id is empty (RebuildTarget::BestSpare lets the \
                              coordinator pick one)"
                        .into(),
                });
            }
            RebuildTarget::Spare(id) => (id, false),
            RebuildTarget::InPlace => (String::new(), true),
        };
        let request = pb::RebuildColumnRequest {
            volume: volume.to_owned(),
            column,
            spare_id,
            in_place,
            rate_bytes_per_second: rate_on_the_wire(rate)?,
        };
        let volume = self
            .call(request, |mut rpc, request| async move {
                rpc.rebuild_column(request).await
            })
            .await?;
        VolumeInfo::from_proto(volume)
    }

    /// Re-adds failed column `column` of `volume` from its own component, back on its node
    /// after an outage: the component is fenced at a new epoch, then only the regions the
    /// parity map names (written while it was away, or in flight when it failed) are rebuilt
    /// onto it. When the map cannot say what it missed, the column is reconstructed in full
    /// onto it and [`RebuildProgress::note`](crate::RebuildProgress::note) says why. `rate`
    /// caps it in bytes per second (`None`: the coordinator's default). The coordinator also
    /// re-adds a column by itself when its node comes back.
    ///
    /// Answers once the job runs; [`VolumeInfo::rebuilds`] shows it (kind
    /// [`crate::RebuildKind::ReAdd`]). Never retried. Refusals: [`ClientError::UnknownVolume`];
    /// [`ClientError::InvalidArgument`] (no such column); [`ClientError::RebuildRefused`] (the
    /// column is not failed, its node does not answer, its component is missing or its label
    /// does not fit: another volume, column or geometry, or a newer counter; the message says
    /// which).
    ///
    /// ```no_run
    /// # async fn example(client: dagraid_client::Client) -> Result<(), dagraid_client::ClientError> {
    /// let v = client.re_add_column("vol0", 1, None).await?;
    /// if let Some(r) = v.rebuild_of(1) {
    ///     println!("{} of {} dirty regions", r.regions_resynced, r.regions_total);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn re_add_column(
        &self,
        volume: &str,
        column: u32,
        rate: Option<u64>,
    ) -> Result<VolumeInfo, ClientError> {
        let request = pb::ReAddColumnRequest {
            volume: volume.to_owned(),
            column,
            rate_bytes_per_second: rate_on_the_wire(rate)?,
        };
        let volume = self
            .call(request, |mut rpc, request| async move {
                rpc.re_add_column(request).await
            })
            .await?;
        VolumeInfo::from_proto(volume)
    }

    /// Starts an online parity check of `volume`: every stripe's redundancy (P, Q, RAID 1
    /// copies) compared with its data under the stripe's lock, while clients read and write;
    /// nothing is written. `rate` caps it in bytes of stripes per second (`None`: the
    /// coordinator's `--scrub-rate`).
    ///
    /// Answers once it runs; [`VolumeInfo::parity_job`] shows its progress and the mismatching
    /// stripes. Never retried. Refusals: [`ClientError::UnknownVolume`];
    /// [`ClientError::ParityRefused`] (RAID 0, a parity job runs already, a resync or a
    /// reconstruction runs: the message says which).
    pub async fn check_parity(
        &self,
        volume: &str,
        rate: Option<u64>,
    ) -> Result<VolumeInfo, ClientError> {
        let request = pb::ParityRequest {
            volume: volume.to_owned(),
            rate_bytes_per_second: rate_on_the_wire(rate)?,
        };
        let volume = self
            .call(request, |mut rpc, request| async move {
                rpc.check_parity(request).await
            })
            .await?;
        VolumeInfo::from_proto(volume)
    }

    /// Starts an online parity rewrite of `volume`: every stripe's redundancy rewritten from
    /// its data under the stripe's write lock. As [`Client::check_parity`] otherwise.
    pub async fn rewrite_parity(
        &self,
        volume: &str,
        rate: Option<u64>,
    ) -> Result<VolumeInfo, ClientError> {
        let request = pb::ParityRequest {
            volume: volume.to_owned(),
            rate_bytes_per_second: rate_on_the_wire(rate)?,
        };
        let volume = self
            .call(request, |mut rpc, request| async move {
                rpc.rewrite_parity(request).await
            })
            .await?;
        VolumeInfo::from_proto(volume)
    }

    /// Copies column `column` of `volume`, which lives on a spare since its reconstruction,
    /// back to a new blank component on storage node `to_node`, without stopping I/O; the
    /// spare returns to the pool once the copy is done. `rate` caps it in bytes per second
    /// (`None`: the coordinator's default).
    ///
    /// Answers once the copy runs; [`VolumeInfo::rebuilds`] shows its progress (kind
    /// [`crate::RebuildKind::Copyback`]). Never retried. Refusals as for
    /// [`Client::rebuild_column`] ([`ClientError::RebuildRefused`] when the column does not
    /// live on a spare); an empty `to_node` is [`ClientError::InvalidArgument`].
    ///
    /// ```no_run
    /// # async fn example(client: dagraid_client::Client) -> Result<(), dagraid_client::ClientError> {
    /// let v = client.copyback("vol0", 2, "node3", None).await?;
    /// println!("{:?}", v.rebuild_of(2));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn copyback(
        &self,
        volume: &str,
        column: u32,
        to_node: &str,
        rate: Option<u64>,
    ) -> Result<VolumeInfo, ClientError> {
        if to_node.trim().is_empty() {
            return Err(ClientError::InvalidArgument {
                message: "copyback needs the storage node of the replacement".into(),
            });
        }
        let request = pb::CopybackRequest {
            volume: volume.to_owned(),
            column,
            to_node_id: to_node.to_owned(),
            rate_bytes_per_second: rate_on_the_wire(rate)?,
        };
        let volume = self
            .call(request, |mut rpc, request| async move {
                rpc.copyback(request).await
            })
            .await?;
        VolumeInfo::from_proto(volume)
    }

    /// The next connection, round robin.
    fn pick(&self) -> Rpc {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.inner.rpcs[i % self.inner.rpcs.len()].clone()
    }

    /// A call's request: deadline, token, and the current span's trace context (so the
    /// coordinator's spans join the caller's trace).
    fn request<M>(&self, message: M) -> Request<M> {
        let mut request = Request::new(message);
        request.set_timeout(self.inner.options.request_timeout);
        dagraid_telemetry::propagation::inject_current(request.metadata_mut());
        if let Some(authorization) = &self.inner.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        request
    }

    /// One attempt under the request timeout, which is enforced here too: a coordinator that
    /// is stopped (SIGSTOP) never answers at all.
    pub(crate) async fn call<M, T, F, Fut>(&self, message: M, rpc: F) -> Result<T, ClientError>
    where
        F: FnOnce(Rpc, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let timeout = self.inner.options.request_timeout;
        match tokio::time::timeout(timeout, rpc(self.pick(), self.request(message))).await {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => match ClientError::from_status(&status) {
                // tonic enforces the `grpc-timeout` it sends, with the bare "Timeout expired".
                ClientError::Timeout { message } => Err(ClientError::Timeout {
                    message: format!(
                        "no answer from {} within {timeout:?} ({message})",
                        self.endpoint()
                    ),
                }),
                err => Err(err),
            },
            Err(_) => Err(ClientError::Timeout {
                message: format!("no answer from {} within {timeout:?}", self.endpoint()),
            }),
        }
    }

    /// Adds a hot spare on storage node `node_id`: a component of at least `size_bytes`
    /// (rounded up to whole blocks; 0: the size of the largest column of any volume, refused
    /// when there is no volume) with blocks of `block_size` bytes (0: 4096), labelled as a
    /// spare. Not retried: a retry could add a second spare.
    pub async fn add_spare(
        &self,
        node_id: &str,
        size_bytes: u64,
        block_size: u32,
    ) -> Result<Spare, ClientError> {
        let request = pb::AddSpareRequest {
            node_id: node_id.to_owned(),
            size_bytes,
            block_size,
        };
        let spare = self
            .call(request, |mut rpc, request| async move {
                rpc.add_spare(request).await
            })
            .await?;
        Ok(Spare::from_proto(spare))
    }

    /// Removes hot spare `id` from the pool and its component from its node; refused with
    /// [`ClientError::SpareInUse`] while a volume uses it, [`ClientError::UnknownSpare`] when
    /// the pool has no such spare.
    pub async fn remove_spare(&self, id: &str) -> Result<(), ClientError> {
        let request = pb::RemoveSpareRequest { id: id.to_owned() };
        self.call(request, |mut rpc, request| async move {
            rpc.remove_spare(request).await
        })
        .await?;
        Ok(())
    }

    /// The hot-spare pool, by id.
    pub async fn list_spares(&self) -> Result<Vec<Spare>, ClientError> {
        let answer = self
            .idempotent(pb::ListSparesRequest {}, |mut rpc, request| async move {
                rpc.list_spares(request).await
            })
            .await?;
        Ok(answer.spares.into_iter().map(Spare::from_proto).collect())
    }

    /// An idempotent call: retried after transport failures, with a doubling pause, up to the
    /// retry policy's attempts. Each attempt has its own deadline and takes the next connection.
    pub(crate) async fn idempotent<M, T, F, Fut>(
        &self,
        message: M,
        rpc: F,
    ) -> Result<T, ClientError>
    where
        M: Clone,
        F: Fn(Rpc, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let policy = &self.inner.options.retry;
        let mut backoff = policy.initial_backoff;
        let mut attempt = 1;
        loop {
            match self.call(message.clone(), &rpc).await {
                Err(err) if err.is_transport() && attempt < policy.max_attempts => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(policy.max_backoff);
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }
}

/// A rebuild's rate limit as the proto carries it, where 0 means the coordinator's default: a
/// limit of 0 bytes per second would never finish, so it is refused rather than sent.
fn rate_on_the_wire(rate: Option<u64>) -> Result<u64, ClientError> {
    match rate {
        None => Ok(0),
        Some(0) => Err(ClientError::InvalidArgument {
            message: "a rate must be at least 1 byte per second (None: the \
                      coordinator's default)"
                .into(),
        }),
        Some(rate) => Ok(rate),
    }
}

/// An error and its causes on one line (tonic's transport errors say only "transport error").
pub(crate) fn error_chain(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        assert!(ClientOptions::default().validate().is_ok());
        let bad = [
            ClientOptions {
                connections: 0,
                ..Default::default()
            },
            ClientOptions {
                max_in_flight: 0,
                ..Default::default()
            },
            ClientOptions {
                request_timeout: Duration::ZERO,
                ..Default::default()
            },
            ClientOptions {
                max_io_bytes: Some(0),
                ..Default::default()
            },
            ClientOptions {
                retry: RetryPolicy {
                    max_attempts: 0,
                    ..Default::default()
                },
                ..Default::default()
            },
        ];
        for options in bad {
            assert!(matches!(
                options.validate(),
                Err(ClientError::InvalidOptions(_))
            ));
        }
    }

    #[tokio::test]
    async fn bad_endpoints_and_tokens_are_refused_before_connecting() {
        for endpoint in ["", "http://", "https://127.0.0.1:1", "not a url at all"] {
            let err = Client::connect(endpoint, ClientOptions::default())
                .await
                .unwrap_err();
            assert!(
                matches!(err, ClientError::InvalidEndpoint { .. }),
                "{endpoint:?}: {err:?}"
            );
        }
        let err = Client::connect(
            "http://127.0.0.1:1",
            ClientOptions {
                token: Some("line\nbreak".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ClientError::InvalidOptions(_)), "{err:?}");
    }

    #[tokio::test]
    async fn connection_refused_is_a_transport_error() {
        // Bind then drop a listener: its port is almost surely closed now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = Client::connect(format!("127.0.0.1:{port}"), ClientOptions::default())
            .await
            .unwrap_err();
        assert!(err.is_transport(), "{err:?}");
        assert!(err.to_string().contains("refused"), "{err}");
    }
}
