//! Injected transports: the byte streams a server accepts and a client connects over, when they
//! are not the operating system's TCP (the deterministic simulation, `tests/tests/simulation.rs`,
//! hands in turmoil's simulated TCP).
//!
//! Servers take an [`Incoming`] for tonic's `serve_with_incoming`, clients a [`Connector`] for
//! `Endpoint::connect_with_connector`; both carry a [`BoxedIo`]. Real binaries never build one:
//! they bind and connect as always.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::Stream;

/// A bidirectional byte stream, whatever carries it.
pub trait Io: AsyncRead + AsyncWrite + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + 'static> Io for T {}

/// One connection of an injected transport.
pub struct BoxedIo(Pin<Box<dyn Io>>);

impl BoxedIo {
    /// Wraps a stream.
    pub fn new(io: impl Io) -> Self {
        Self(Box::pin(io))
    }
}

impl fmt::Debug for BoxedIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoxedIo")
    }
}

impl AsyncRead for BoxedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for BoxedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for BoxedIo {
    // The peer's address is not known to an injected transport; nothing of ours reads it.
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// The connections a server accepts, for `serve_with_incoming` (ends when the stream does).
pub type Incoming = Pin<Box<dyn Stream<Item = io::Result<BoxedIo>> + Send>>;

type Connecting = Pin<Box<dyn Future<Output = io::Result<BoxedIo>> + Send>>;

/// How a client connects to an address (`host:port` of the URI), as a tower service for
/// `Endpoint::connect_with_connector`. Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    connect: Arc<dyn Fn(http::Uri) -> Connecting + Send + Sync>,
}

impl Connector {
    /// A connector that calls `connect` with each URI to reach.
    pub fn new<F, Fut>(connect: F) -> Self
    where
        F: Fn(http::Uri) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<BoxedIo>> + Send + 'static,
    {
        Self {
            connect: Arc::new(move |uri| Box::pin(connect(uri))),
        }
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connector")
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<BoxedIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<BoxedIo>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = (self.connect)(uri);
        Box::pin(async move { connecting.await.map(TokioIo::new) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_connector_hands_out_the_streams_it_makes() {
        let (client, mut server) = tokio::io::duplex(64);
        let client = std::sync::Mutex::new(Some(client));
        let connector = Connector::new(move |uri: http::Uri| {
            let io = client.lock().unwrap().take();
            async move {
                assert_eq!(uri.port_u16(), Some(7100));
                io.map(BoxedIo::new)
                    .ok_or_else(|| io::Error::other("only one connection"))
            }
        });
        let io = connector
            .clone()
            .oneshot("http://node1:7100".parse().unwrap())
            .await
            .unwrap();
        let mut io = io.into_inner();
        io.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        assert!(
            connector
                .oneshot("http://node1:7100".parse().unwrap())
                .await
                .is_err()
        );
    }
}
