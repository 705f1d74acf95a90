//! A handle on one volume: byte-addressed reads and writes cut into bounded calls.

use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use dagraid_proto::volume::v1 as pb;
use futures::{StreamExt, TryStreamExt};
use tracing::Instrument;

use crate::chunk::{self, Piece};
use crate::{Client, ClientError, VolumeInfo};

/// A handle on one volume of a [`Client`]. Cheap to clone.
///
/// Reads and writes take any offset and length inside the volume. A range larger than the
/// coordinator's `max_io_bytes` is cut into calls of at most that size, aligned to whole
/// stripes where possible, and up to [`crate::ClientOptions::max_in_flight`] of them are in
/// flight at once.
///
/// ```no_run
/// # async fn example(client: dagraid_client::Client) -> Result<(), dagraid_client::ClientError> {
/// let vol = client.volume("vol0");
/// vol.write_at(1 << 20, vec![7u8; 8 << 20]).await?;
/// vol.flush().await?;
/// let data = vol.read_at(1 << 20, 8 << 20).await?;
/// assert!(data.iter().all(|&b| b == 7));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Volume {
    client: Client,
    name: Arc<str>,
    /// Bytes of data in one full stripe (0: unknown); fetched with the first large access.
    stripe_bytes: Arc<OnceLock<u64>>,
}

impl Volume {
    pub(crate) fn new(client: Client, name: String) -> Self {
        Self {
            client,
            name: name.into(),
            stripe_bytes: Arc::new(OnceLock::new()),
        }
    }

    /// The volume's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client this handle uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Reads `len` bytes at `offset`. Retried after transport failures (reads are idempotent).
    ///
    /// Errors: [`ClientError::OutOfRange`] past the end, [`ClientError::Unrecoverable`] or
    /// [`ClientError::Unreadable`] where the data is lost; never wrong bytes.
    ///
    /// ```no_run
    /// # async fn example(vol: dagraid_client::Volume) -> Result<(), dagraid_client::ClientError> {
    /// let block = vol.read_at(4096, 4096).await?;
    /// assert_eq!(block.len(), 4096);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes, ClientError> {
        let span = tracing::info_span!(
            "client.read",
            otel.kind = "client",
            volume = &*self.name,
            offset,
            length = len as u64,
            otel.status_code = tracing::field::Empty,
        );
        let r = self
            .read_untraced(offset, len)
            .instrument(span.clone())
            .await;
        if r.is_err() {
            span.record("otel.status_code", "error");
        }
        r
    }

    async fn read_untraced(&self, offset: u64, len: usize) -> Result<Bytes, ClientError> {
        let pieces = self.pieces(offset, len).await?;
        let mut pieces = pieces.peekable();
        let first = pieces.next().expect("a range has at least one piece");
        if pieces.peek().is_none() {
            return self.read_piece(first).await;
        }
        let in_flight = self.client.options().max_in_flight;
        let mut out = BytesMut::with_capacity(len);
        let mut answers = futures::stream::iter(std::iter::once(first).chain(pieces))
            .map(|piece| self.read_piece(piece))
            .buffered(in_flight);
        while let Some(data) = answers.next().await {
            out.extend_from_slice(&data?);
        }
        Ok(out.freeze())
    }

    /// Writes `data` at `offset`; returns once every byte is durable on every live column it
    /// touches. Never retried: after an error (in particular a transport error or a timeout)
    /// the range holds old or new data, call by call, and should be written again.
    ///
    /// Each call is atomic per stripe; a range cut into several calls is not atomic as a whole.
    ///
    /// ```no_run
    /// # async fn example(vol: dagraid_client::Volume) -> Result<(), dagraid_client::ClientError> {
    /// vol.write_at(0, bytes::Bytes::from_static(b"hello, world")).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn write_at(&self, offset: u64, data: impl Into<Bytes>) -> Result<(), ClientError> {
        let data: Bytes = data.into();
        let span = tracing::info_span!(
            "client.write",
            otel.kind = "client",
            volume = &*self.name,
            offset,
            length = data.len() as u64,
            otel.status_code = tracing::field::Empty,
        );
        let r = self
            .write_untraced(offset, data)
            .instrument(span.clone())
            .await;
        if r.is_err() {
            span.record("otel.status_code", "error");
        }
        r
    }

    async fn write_untraced(&self, offset: u64, data: Bytes) -> Result<(), ClientError> {
        let pieces = self.pieces(offset, data.len()).await?;
        let in_flight = self.client.options().max_in_flight;
        futures::stream::iter(pieces)
            .map(|piece| {
                let payload = data.slice(piece.start..piece.start + piece.len);
                self.write_piece(piece.offset, payload)
            })
            .buffer_unordered(in_flight)
            .try_for_each(|()| async { Ok(()) })
            .await
    }

    /// Makes every acknowledged write durable on every live component. Retried after transport
    /// failures (it changes no data).
    pub async fn flush(&self) -> Result<(), ClientError> {
        let request = pb::FlushRequest {
            volume: self.name.to_string(),
        };
        self.client
            .idempotent(request, |mut rpc, request| async move {
                rpc.flush(request).await
            })
            .await?;
        Ok(())
    }

    /// The volume's layout, components (node, component id, state), state and counters, as the
    /// coordinator has them now.
    ///
    /// ```no_run
    /// # async fn example(vol: dagraid_client::Volume) -> Result<(), dagraid_client::ClientError> {
    /// let info = vol.describe().await?;
    /// for c in &info.components {
    ///     println!("column {} on {}: {}", c.column, c.node_id, c.state);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn describe(&self) -> Result<VolumeInfo, ClientError> {
        let request = pb::GetVolumeRequest {
            name: self.name.to_string(),
        };
        let volume = self
            .client
            .idempotent(request, |mut rpc, request| async move {
                rpc.get_volume(request).await
            })
            .await?;
        let info = VolumeInfo::from_proto(volume)?;
        let _ = self.stripe_bytes.set(info.stripe_data_bytes().unwrap_or(0));
        Ok(info)
    }

    /// The same call as [`Volume::describe`], named after `raidctl -s`: read
    /// [`VolumeInfo::state`] and each component's state.
    pub async fn status(&self) -> Result<VolumeInfo, ClientError> {
        self.describe().await
    }

    /// The calls of one access. Only a range that needs more than one call costs a lookup of
    /// the stripe size (once per handle).
    async fn pieces(&self, offset: u64, len: usize) -> Result<chunk::Pieces, ClientError> {
        if offset.checked_add(len as u64).is_none() {
            return Err(ClientError::OutOfRange {
                message: format!("offset {offset} + length {len} overflows"),
            });
        }
        let max_io = self.client.max_io_bytes().await?;
        let stripe = if len as u64 > max_io {
            match self.stripe_bytes.get() {
                Some(&bytes) => bytes,
                None => self.describe().await?.stripe_data_bytes().unwrap_or(0),
            }
        } else {
            0
        };
        Ok(chunk::plan(offset, len, max_io, stripe))
    }

    async fn read_piece(&self, piece: Piece) -> Result<Bytes, ClientError> {
        let request = pb::ReadRequest {
            volume: self.name.to_string(),
            offset: piece.offset,
            length: piece.len as u64,
        };
        let answer = self
            .client
            .idempotent(request, |mut rpc, request| async move {
                rpc.read(request).await
            })
            .await?;
        if answer.data.len() != piece.len {
            return Err(ClientError::InvalidResponse(format!(
                "read of {} bytes at offset {} of {} returned {} bytes",
                piece.len,
                piece.offset,
                self.name,
                answer.data.len()
            )));
        }
        Ok(answer.data)
    }

    async fn write_piece(&self, offset: u64, data: Bytes) -> Result<(), ClientError> {
        let request = pb::WriteRequest {
            volume: self.name.to_string(),
            offset,
            data,
        };
        self.client
            .call(request, |mut rpc, request| async move {
                rpc.write(request).await
            })
            .await?;
        Ok(())
    }
}
