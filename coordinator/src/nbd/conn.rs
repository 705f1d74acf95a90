//! One NBD connection: the fixed newstyle handshake, then the transmission phase.
//!
//! **Handshake.** The server greets (`NBDMAGIC`, `IHAVEOPT`, fixed newstyle and no-zeroes), the
//! client answers its flags (an unknown flag ends the connection), then sends options, at most
//! [`wire::MAX_OPTIONS`], each payload at most [`wire::MAX_OPTION_BYTES`] (over either: a
//! disconnect, logged). `NBD_OPT_GO` / `NBD_OPT_INFO` answer the export's size and flags and its
//! block sizes; `NBD_OPT_INFO` without the block sizes requested is answered
//! `NBD_REP_ERR_BLOCK_SIZE_REQD`; `NBD_OPT_LIST`, `NBD_OPT_ABORT` and `NBD_OPT_EXPORT_NAME` are
//! served; any other option is answered `NBD_REP_ERR_UNSUP`.
//!
//! **TLS** ([`ExportTls`]). `NBD_OPT_STARTTLS` is answered `NBD_REP_ACK`, then the TLS handshake
//! runs on the same TCP stream ([`dagraid_tls::ServerTls::accept_nbd`]: a client certificate of
//! the cluster naming `client.dagraid` or `coordinator.dagraid` is required at the handshake;
//! a failure or a timeout closes this connection, logged) and option haggling goes on over
//! TLS, where a second `NBD_OPT_STARTTLS` is answered `NBD_REP_ERR_INVALID`. Without TLS on
//! the export it is answered `NBD_REP_ERR_POLICY`. With TLS required (FORCEDTLS), every option
//! before TLS but `NBD_OPT_STARTTLS` and `NBD_OPT_ABORT` is answered `NBD_REP_ERR_TLS_REQD`,
//! and `NBD_OPT_EXPORT_NAME` (which cannot be refused) closes the connection; so does a
//! client that does not speak fixed newstyle (the spec allows it no TLS). The decision is
//! [`gate`]'s, pure and tested alone.
//!
//! **Transmission.** Plain TCP or TLS alike (generic over the stream's halves). Requests are read one after the other and run concurrently, each a task
//! that answers its own reply (simple replies, in any order, by handle). Memory is bounded: a
//! request's payload (a write's, or a read's answer) takes its bytes from the connection's
//! budget ([`NbdSettings::max_in_flight_bytes`]) before it is read or run, so a connection holds
//! at most that much payload plus its fixed buffers. A request that breaks the protocol in a
//! way that leaves the stream unreadable (bad magic, a write payload over the maximum) ends
//! the connection, after every request in flight has been answered; any other invalid request
//! gets its error reply (EINVAL, ENOSPC, EPERM) and the connection goes on. Each kind of
//! mistake is logged once per connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dagraid_core::access::AccessError;
use dagraid_core::layout::LayoutError;
use dagraid_tls::{NbdTlsError, ServerTls, TlsStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::wire::{
    self, BlockSizes, InfoRequest, Request, WireError, cmd, cmd_flags, errno, opt, rep, tflags,
};
use super::{ExportTls, NbdSettings};
use crate::config::NbdTls;
use crate::volumes::VolumeManager;

/// Bytes of zeros a TRIM or WRITE_ZEROES writes per access.
const ZERO_CHUNK_BYTES: u64 = 1 << 20;
/// How long a request refused by a full admission queue is retried before it fails (EIO).
const OVERLOAD_PATIENCE: Duration = Duration::from_secs(60);
/// Budget units: the in-flight budget counts KiB.
const BUDGET_UNIT: u64 = 1024;
/// How long the handshake may take before the connection is dropped (a client that connects
/// and says nothing holds no slot for ever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one reply may take to leave: a client that stops reading its replies is dropped,
/// so its requests' tasks (and a shutdown waiting for them) never block on it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves one connection until the client disconnects, breaks the protocol, or `stop`.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    volumes: Arc<VolumeManager>,
    settings: Arc<NbdSettings>,
    stop: CancellationToken,
) {
    let negotiated = tokio::select! {
        r = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            negotiate(stream, &volumes, &settings, &stop),
        ) => r,
        () = stop.cancelled() => {
            tracing::debug!(%peer, "nbd handshake cut by the shutdown");
            return;
        }
    };
    let Ok(negotiated) = negotiated else {
        tracing::warn!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "nbd handshake took too long: disconnecting");
        return;
    };
    match negotiated {
        Ok(Negotiated::Plain(tcp, export)) => {
            let (reader, writer) = tcp.into_split();
            run(reader, writer, export, peer, volumes, settings, stop).await;
        }
        Ok(Negotiated::Tls(tls, export)) => {
            tracing::debug!(%peer, "nbd session over TLS");
            let (reader, writer) = tokio::io::split(*tls);
            run(reader, writer, export, peer, volumes, settings, stop).await;
        }
        Ok(Negotiated::Nothing) => {
            tracing::debug!(%peer, "nbd negotiation ended without an export");
        }
        Err(Ended::Io(error)) => {
            tracing::debug!(%peer, %error, "nbd connection lost during the handshake");
        }
        Err(Ended::Protocol(problem)) => {
            tracing::warn!(%peer, %problem, "nbd handshake refused: disconnecting");
        }
        Err(Ended::Tls(error)) => {
            tracing::warn!(%peer, %error, "nbd TLS session refused: disconnecting");
        }
    }
}

/// The transmission phase of a negotiated connection, over either kind of stream.
async fn run<R, W>(
    reader: R,
    writer: W,
    export: Export,
    peer: SocketAddr,
    volumes: Arc<VolumeManager>,
    settings: Arc<NbdSettings>,
    stop: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    tracing::info!(%peer, volume = %export.name, size = export.size, "nbd export in transmission");
    let connection = Arc::new(Connection {
        export,
        volumes,
        settings: settings.clone(),
        writer: Mutex::new(writer),
        dead: std::sync::atomic::AtomicBool::new(false),
        logged: AtomicU32::new(0),
        peer,
    });
    transmit(connection, reader, &settings, stop).await;
    tracing::info!(%peer, "nbd connection closed");
}

/// What a negotiation ended in.
enum Negotiated {
    /// An export, over the plain TCP stream.
    Plain(TcpStream, Export),
    /// An export, over TLS.
    Tls(Box<TlsStream<TcpStream>>, Export),
    /// No export (`NBD_OPT_ABORT`).
    Nothing,
}

/// How a handshake ended without an export.
enum Ended {
    Io(std::io::Error),
    Protocol(String),
    Tls(NbdTlsError),
}

impl From<std::io::Error> for Ended {
    fn from(e: std::io::Error) -> Self {
        Ended::Io(e)
    }
}

impl From<WireError> for Ended {
    fn from(e: WireError) -> Self {
        Ended::Protocol(e.to_string())
    }
}

/// The export a connection chose.
#[derive(Debug, Clone)]
struct Export {
    name: String,
    /// The volume's id: a volume deleted and made again under the same name is not this one.
    id: String,
    size: u64,
    flags: u16,
    sizes: BlockSizes,
}

/// Looks volume `name` up as an export; the error is the option reply's type and message.
fn find_export(
    volumes: &VolumeManager,
    settings: &NbdSettings,
    name: &str,
) -> Result<Export, (u32, String)> {
    let volume = volumes
        .get(name)
        .map_err(|e| (rep::ERR_UNKNOWN, format!("volume {name:?}: {e}")))?;
    let layout = volume.layout();
    let block = u32::try_from(layout.geometry().block_size()).unwrap_or(u32::MAX);
    let sizes = BlockSizes::of(
        block,
        layout.stripe_data_bytes(),
        u64::from(settings.max_request_bytes),
    )
    .ok_or_else(|| {
        (
            rep::ERR_POLICY,
            format!(
                "volume {name:?} has blocks of {block} bytes, which NBD cannot express (a power of two of at most 64 KiB)"
            ),
        )
    })?;
    let mut flags = tflags::HAS_FLAGS | tflags::SEND_FLUSH | tflags::CAN_MULTI_CONN;
    if settings.read_only {
        flags |= tflags::READ_ONLY;
    } else {
        flags |= tflags::SEND_FUA | tflags::SEND_TRIM | tflags::SEND_WRITE_ZEROES;
    }
    Ok(Export {
        name: name.to_owned(),
        id: volume.id().to_owned(),
        size: layout.capacity(),
        flags,
        sizes,
    })
}

/// What the TLS policy makes of an option before it is served ([`gate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Serve it as usual.
    Serve,
    /// Answer this error reply and its message; the negotiation goes on.
    Refuse(u32, &'static str),
    /// Answer `NBD_REP_ACK`, then the TLS handshake.
    StartTls,
    /// End the connection: `NBD_OPT_EXPORT_NAME` cannot be refused otherwise.
    Close(&'static str),
}

/// The TLS policy's decision on option `code` (with `payload_len` bytes of data), under
/// `mode` for this connection, `tls_active` once `NBD_OPT_STARTTLS` succeeded.
fn gate(mode: NbdTls, tls_active: bool, code: u32, payload_len: usize) -> Gate {
    if code == opt::STARTTLS {
        return if mode == NbdTls::Off {
            Gate::Refuse(rep::ERR_POLICY, "TLS is not offered on this export")
        } else if tls_active {
            Gate::Refuse(rep::ERR_INVALID, "TLS is already on")
        } else if payload_len != 0 {
            Gate::Refuse(rep::ERR_INVALID, "NBD_OPT_STARTTLS takes no data")
        } else {
            Gate::StartTls
        };
    }
    if mode != NbdTls::Require || tls_active {
        return Gate::Serve;
    }
    match code {
        opt::ABORT => Gate::Serve,
        opt::EXPORT_NAME => {
            Gate::Close("NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS, and TLS is required")
        }
        _ => Gate::Refuse(
            rep::ERR_TLS_REQD,
            "TLS is required: send NBD_OPT_STARTTLS first",
        ),
    }
}

/// Where option haggling stopped.
enum Step {
    Export(Export),
    StartTls,
    Abort,
}

/// The state option haggling carries across the TLS upgrade.
struct Haggling<'a> {
    volumes: &'a VolumeManager,
    settings: &'a NbdSettings,
    stop: &'a CancellationToken,
    /// The TLS mode of this connection (off for a client without fixed newstyle).
    mode: NbdTls,
    tls_active: bool,
    no_zeroes: bool,
    /// Options seen, over both phases.
    options: usize,
}

/// The whole handshake: greeting, client flags, options, and the TLS upgrade when asked.
async fn negotiate(
    mut tcp: TcpStream,
    volumes: &VolumeManager,
    settings: &NbdSettings,
    stop: &CancellationToken,
) -> Result<Negotiated, Ended> {
    let mut greeting = Vec::with_capacity(18);
    greeting.extend_from_slice(&wire::NBDMAGIC.to_be_bytes());
    greeting.extend_from_slice(&wire::IHAVEOPT.to_be_bytes());
    greeting.extend_from_slice(&(wire::FLAG_FIXED_NEWSTYLE | wire::FLAG_NO_ZEROES).to_be_bytes());
    tcp.write_all(&greeting).await?;
    let client_flags = tcp.read_u32().await?;
    let known = wire::CLIENT_FIXED_NEWSTYLE | wire::CLIENT_NO_ZEROES;
    if client_flags & !known != 0 {
        return Err(Ended::Protocol(format!(
            "unknown client flags {client_flags:#x}"
        )));
    }
    let (mode, server_tls) = match &settings.tls {
        ExportTls::Off => (NbdTls::Off, None),
        ExportTls::On(tls) => (NbdTls::On, Some(tls)),
        ExportTls::Require(tls) => (NbdTls::Require, Some(tls)),
    };
    let fixed = client_flags & wire::CLIENT_FIXED_NEWSTYLE != 0;
    // TLS needs fixed newstyle (the spec): a client without it gets no TLS, so it is refused
    // when TLS is required.
    let mode = match (fixed, mode) {
        (true, mode) => mode,
        (false, NbdTls::Require) => {
            return Err(Ended::Protocol(
                "a client without fixed newstyle cannot start TLS, which is required".into(),
            ));
        }
        (false, _) => NbdTls::Off,
    };
    let mut state = Haggling {
        volumes,
        settings,
        stop,
        mode,
        tls_active: false,
        no_zeroes: client_flags & wire::CLIENT_NO_ZEROES != 0,
        options: 0,
    };
    match options(&mut tcp, &mut state).await? {
        Step::Export(export) => return Ok(Negotiated::Plain(tcp, export)),
        Step::Abort => return Ok(Negotiated::Nothing),
        Step::StartTls => {}
    }
    let Some(server_tls) = server_tls else {
        return Err(Ended::Protocol("TLS started without TLS material".into()));
    };
    let mut tls = accept(server_tls, tcp).await?;
    state.tls_active = true;
    match options(&mut tls, &mut state).await? {
        Step::Export(export) => Ok(Negotiated::Tls(Box::new(tls), export)),
        Step::Abort => Ok(Negotiated::Nothing),
        Step::StartTls => Err(Ended::Protocol("TLS started twice".into())),
    }
}

async fn accept(tls: &ServerTls, tcp: TcpStream) -> Result<TlsStream<TcpStream>, Ended> {
    tls.accept_nbd(tcp).await.map_err(Ended::Tls)
}

/// Option haggling on `io` until an export is chosen, the client aborts, or TLS is to start.
async fn options<S>(io: &mut S, state: &mut Haggling<'_>) -> Result<Step, Ended>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (volumes, settings) = (state.volumes, state.settings);
    while state.options < wire::MAX_OPTIONS {
        state.options += 1;
        let mut header = [0u8; wire::OPTION_HEADER_BYTES];
        io.read_exact(&mut header).await?;
        let header = wire::parse_option_header(&header)?;
        let mut payload = vec![0u8; header.len as usize];
        io.read_exact(&mut payload).await?;
        let code = header.code;
        let reply = |kind: u32, data: &[u8]| wire::option_reply(code, kind, data);
        if state.stop.is_cancelled() && code != opt::ABORT {
            send(
                io,
                &reply(rep::ERR_SHUTDOWN, b"the coordinator is shutting down"),
            )
            .await?;
            continue;
        }
        match gate(state.mode, state.tls_active, code, payload.len()) {
            Gate::Serve => {}
            Gate::Refuse(kind, message) => {
                send(io, &reply(kind, message.as_bytes())).await?;
                continue;
            }
            Gate::StartTls => {
                send(io, &reply(rep::ACK, &[])).await?;
                return Ok(Step::StartTls);
            }
            Gate::Close(why) => return Err(Ended::Protocol(why.into())),
        }
        match code {
            opt::EXPORT_NAME => {
                // No error reply is possible: an unknown export ends the connection.
                let name = wire::parse_name(&payload)?;
                let export = find_export(volumes, settings, &name)
                    .map_err(|(_, message)| Ended::Protocol(message))?;
                send(
                    io,
                    &wire::export_name_reply(export.size, export.flags, state.no_zeroes),
                )
                .await?;
                return Ok(Step::Export(export));
            }
            opt::ABORT => {
                // The client closes next; a failed answer changes nothing.
                let _ = send(io, &reply(rep::ACK, &[])).await;
                return Ok(Step::Abort);
            }
            opt::LIST => {
                if !payload.is_empty() {
                    send(io, &reply(rep::ERR_INVALID, b"NBD_OPT_LIST takes no data")).await?;
                    continue;
                }
                let mut answer = Vec::new();
                for entry in volumes.entries() {
                    answer.extend(reply(rep::SERVER, &wire::server_entry(entry.name())));
                }
                answer.extend(reply(rep::ACK, &[]));
                send(io, &answer).await?;
            }
            opt::INFO | opt::GO => {
                let request: InfoRequest = match wire::parse_info_request(&payload) {
                    Ok(r) => r,
                    Err(e) => {
                        send(io, &reply(rep::ERR_INVALID, e.to_string().as_bytes())).await?;
                        continue;
                    }
                };
                let export = match find_export(volumes, settings, &request.name) {
                    Ok(e) => e,
                    Err((kind, message)) => {
                        send(io, &reply(kind, message.as_bytes())).await?;
                        continue;
                    }
                };
                let mut answer = reply(rep::INFO, &wire::info_export(export.size, export.flags));
                answer.extend(reply(rep::INFO, &wire::info_block_size(export.sizes)));
                if code == opt::INFO && !request.wants_block_size() {
                    answer.extend(reply(
                        rep::ERR_BLOCK_SIZE_REQD,
                        b"request NBD_INFO_BLOCK_SIZE: requests must be multiples of the volume's block size",
                    ));
                    send(io, &answer).await?;
                    continue;
                }
                answer.extend(reply(rep::ACK, &[]));
                send(io, &answer).await?;
                if code == opt::GO {
                    return Ok(Step::Export(export));
                }
            }
            other => {
                let message = format!("option {other} is not supported");
                send(io, &reply(rep::ERR_UNSUP, message.as_bytes())).await?;
            }
        }
    }
    Err(Ended::Protocol(format!(
        "more than {} options without choosing an export",
        wire::MAX_OPTIONS
    )))
}

/// Writes `bytes` and flushes them (a TLS stream holds records back until flushed).
async fn send<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// A connection in transmission, writing its replies to `W`.
struct Connection<W> {
    export: Export,
    volumes: Arc<VolumeManager>,
    settings: Arc<NbdSettings>,
    writer: Mutex<W>,
    /// Set when a reply could not be sent: no more replies are tried, no more requests read.
    dead: std::sync::atomic::AtomicBool,
    /// The kinds of mistakes already logged ([`Mistake`] bits).
    logged: AtomicU32,
    peer: SocketAddr,
}

/// Kinds of client mistakes, each logged once per connection.
#[derive(Debug, Clone, Copy)]
enum Mistake {
    Unaligned = 1,
    OutOfRange = 2,
    UnknownCommand = 4,
    BadFlags = 8,
    TooLong = 16,
    ReadOnly = 32,
    ZeroLength = 64,
}

impl<W: AsyncWrite + Unpin> Connection<W> {
    /// Logs `detail` if no mistake of this kind was logged on this connection.
    fn mistake(&self, kind: Mistake, detail: &str) {
        let bit = kind as u32;
        if self.logged.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            tracing::warn!(peer = %self.peer, volume = %self.export.name, ?kind, detail, "nbd request refused (logged once per connection)");
        }
    }

    /// Sends a simple reply (with the data of a successful read). A client gone is not an
    /// error here: the reading side sees it.
    async fn reply(&self, handle: u64, error: u32, data: Option<Bytes>) {
        if self.dead.load(Ordering::Relaxed) {
            return;
        }
        let header = wire::simple_reply(error, handle);
        let mut w = self.writer.lock().await;
        let sent = tokio::time::timeout(REPLY_TIMEOUT, async {
            w.write_all(&header).await?;
            if let Some(data) = data {
                w.write_all(&data).await?;
            }
            w.flush().await
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            if !self.dead.swap(true, Ordering::Relaxed) {
                tracing::warn!(peer = %self.peer, volume = %self.export.name, "nbd reply not sent (the client stopped reading or went away): dropping the connection");
            }
            // Wakes the client, and the reading side, up.
            let _ = w.shutdown().await;
        }
    }
}

async fn transmit<R, W>(
    connection: Arc<Connection<W>>,
    mut reader: R,
    settings: &NbdSettings,
    stop: CancellationToken,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let budget_units = settings.max_in_flight_bytes.div_ceil(BUDGET_UNIT);
    let budget = Arc::new(Semaphore::new(
        usize::try_from(budget_units).unwrap_or(usize::MAX >> 4),
    ));
    let mut running = JoinSet::new();
    loop {
        let mut header = [0u8; wire::REQUEST_BYTES];
        let read = tokio::select! {
            r = reader.read_exact(&mut header) => r,
            () = stop.cancelled() => break,
        };
        if read.is_err() || connection.dead.load(Ordering::Relaxed) {
            break;
        }
        // Reap what has finished, so the set does not grow with the connection's age.
        while running.try_join_next().is_some() {}
        let request = match wire::parse_request(&header) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(peer = %connection.peer, problem = %e, "nbd request unreadable: disconnecting");
                break;
            }
        };
        if request.kind == cmd::DISC {
            break;
        }
        let payload_len = match request.kind {
            cmd::WRITE | cmd::READ => u64::from(request.len),
            _ => 0,
        };
        if payload_len > u64::from(settings.max_request_bytes) {
            let detail = format!(
                "{} of {} bytes is over the export's maximum of {}",
                name_of(request.kind),
                request.len,
                settings.max_request_bytes
            );
            if request.kind == cmd::WRITE {
                // Its payload is not read (it could be 4 GiB): the stream cannot go on.
                tracing::warn!(peer = %connection.peer, %detail, "nbd write too long: disconnecting");
                break;
            }
            connection.mistake(Mistake::TooLong, &detail);
            connection.reply(request.handle, errno::EINVAL, None).await;
            continue;
        }
        let units = u32::try_from(payload_len.div_ceil(BUDGET_UNIT).max(1)).unwrap_or(u32::MAX);
        let permit = tokio::select! {
            p = budget.clone().acquire_many_owned(units) => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
        let payload = if request.kind == cmd::WRITE {
            let mut buf = BytesMut::zeroed(request.len as usize);
            // A write whose payload does not arrive is never started.
            let read = tokio::select! {
                r = reader.read_exact(&mut buf) => r,
                () = stop.cancelled() => break,
            };
            if read.is_err() {
                break;
            }
            Some(buf.freeze())
        } else {
            None
        };
        let connection = connection.clone();
        let span = tracing::info_span!(
            "nbd.request",
            command = name_of(request.kind),
            offset = request.offset,
            len = request.len
        );
        running.spawn(
            async move {
                let (error, data) = execute(&connection, request, payload).await;
                connection.reply(request.handle, error, data).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    // Every request read is answered before the connection closes: none is cut in the
    // middle of its access.
    while running.join_next().await.is_some() {}
    let mut w = connection.writer.lock().await;
    let _ = w.shutdown().await;
}

fn name_of(kind: u16) -> &'static str {
    match kind {
        cmd::READ => "read",
        cmd::WRITE => "write",
        cmd::DISC => "disc",
        cmd::FLUSH => "flush",
        cmd::TRIM => "trim",
        cmd::WRITE_ZEROES => "write_zeroes",
        _ => "unknown",
    }
}

/// Runs one request: its reply's error value and, for a read, the data.
async fn execute<W: AsyncWrite + Unpin>(
    c: &Connection<W>,
    r: Request,
    payload: Option<Bytes>,
) -> (u32, Option<Bytes>) {
    let writes = matches!(r.kind, cmd::WRITE | cmd::TRIM | cmd::WRITE_ZEROES);
    let allowed_flags = match r.kind {
        cmd::WRITE | cmd::TRIM => cmd_flags::FUA,
        cmd::WRITE_ZEROES => cmd_flags::FUA | cmd_flags::NO_HOLE,
        cmd::READ | cmd::FLUSH => 0,
        _ => {
            c.mistake(
                Mistake::UnknownCommand,
                &format!("command {} is not supported", r.kind),
            );
            return (errno::EINVAL, None);
        }
    };
    if r.flags & !allowed_flags != 0 {
        c.mistake(
            Mistake::BadFlags,
            &format!("flags {:#x} on a {}", r.flags, name_of(r.kind)),
        );
        return (errno::EINVAL, None);
    }
    if writes && c.settings.read_only {
        c.mistake(Mistake::ReadOnly, "a write to a read-only export");
        return (errno::EPERM, None);
    }
    if r.kind != cmd::FLUSH {
        if r.len == 0 {
            c.mistake(
                Mistake::ZeroLength,
                &format!("a {} of zero bytes", name_of(r.kind)),
            );
            return (errno::EINVAL, None);
        }
        let end = r.offset.checked_add(u64::from(r.len));
        if end.is_none_or(|e| e > c.export.size) {
            c.mistake(
                Mistake::OutOfRange,
                &format!(
                    "a {} of {} bytes at {} beyond the export's {} bytes",
                    name_of(r.kind),
                    r.len,
                    r.offset,
                    c.export.size
                ),
            );
            return (if writes { errno::ENOSPC } else { errno::EINVAL }, None);
        }
        let block = u64::from(c.export.sizes.minimum);
        if !r.offset.is_multiple_of(block) || !u64::from(r.len).is_multiple_of(block) {
            c.mistake(
                Mistake::Unaligned,
                &format!(
                    "a {} of {} bytes at {}: not multiples of the block size {block}",
                    name_of(r.kind),
                    r.len,
                    r.offset
                ),
            );
            return (errno::EINVAL, None);
        }
    }
    let volume = match c.volumes.get(&c.export.name) {
        Ok(v) if v.id() == c.export.id => v,
        Ok(_) => {
            tracing::warn!(volume = %c.export.name, "nbd export's volume was deleted and made again: EIO");
            return (errno::EIO, None);
        }
        Err(e) => {
            tracing::warn!(volume = %c.export.name, error = %e, "nbd export's volume is not served: EIO");
            return (errno::EIO, None);
        }
    };
    let array = volume.array().clone();
    let result = match r.kind {
        cmd::READ => patiently(|| array.read(r.offset, u64::from(r.len)))
            .await
            .map(|(data, _)| Some(data.into_bytes())),
        cmd::WRITE => {
            let data = payload.unwrap_or_default();
            patiently(|| array.write(r.offset, data.clone()))
                .await
                .map(|_| None)
        }
        cmd::FLUSH => patiently(|| array.flush()).await.map(|()| None),
        _ => write_zeroes(&array, r.offset, u64::from(r.len))
            .await
            .map(|()| None),
    };
    match result {
        Ok(data) => (0, data),
        Err(error) => {
            tracing::warn!(volume = %c.export.name, command = name_of(r.kind), offset = r.offset, len = r.len, %error, "nbd request failed");
            (errno_of(&error, writes), None)
        }
    }
}

/// Zeros over `offset..offset + len`, in accesses of at most [`ZERO_CHUNK_BYTES`], through the
/// ordinary write path (parity follows).
async fn write_zeroes(
    array: &Arc<dagraid_core::access::Array>,
    offset: u64,
    len: u64,
) -> Result<(), AccessError> {
    let zeros = Bytes::from(vec![0u8; ZERO_CHUNK_BYTES.min(len) as usize]);
    let mut at = offset;
    while at < offset + len {
        let n = ZERO_CHUNK_BYTES.min(offset + len - at);
        let chunk = zeros.slice(..n as usize);
        patiently(|| array.write(at, chunk.clone())).await?;
        at += n;
    }
    Ok(())
}

/// Runs `access`, again while it is refused by a full admission queue (it has not started
/// then, so nothing is retried blindly), for at most [`OVERLOAD_PATIENCE`]. NBD clients take
/// any error as an I/O error; a busy coordinator is worth waiting for.
async fn patiently<T, F, Fut>(mut access: F) -> Result<T, AccessError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AccessError>>,
{
    let deadline = tokio::time::Instant::now() + OVERLOAD_PATIENCE;
    let mut pause = Duration::from_millis(5);
    loop {
        match access().await {
            Err(AccessError::Overloaded(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// The NBD error value of an access error: EINVAL/ENOSPC for a request the layout refuses,
/// ENOMEM for an overload that outlasted the patience, EIO for the rest (data loss among them).
fn errno_of(error: &AccessError, write: bool) -> u32 {
    match error {
        AccessError::Layout(LayoutError::OutOfRange { .. }) if write => errno::ENOSPC,
        AccessError::Layout(_) => errno::EINVAL,
        AccessError::Overloaded(_) => errno::ENOMEM,
        _ => errno::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every option the export knows, and one it does not.
    const OPTIONS: [u32; 7] = [
        opt::EXPORT_NAME,
        opt::ABORT,
        opt::LIST,
        opt::INFO,
        opt::GO,
        opt::STARTTLS,
        99,
    ];

    #[test]
    fn required_tls_refuses_every_option_but_starttls_and_abort_before_it() {
        for code in OPTIONS {
            let expected = match code {
                opt::STARTTLS => Gate::StartTls,
                opt::ABORT => Gate::Serve,
                opt::EXPORT_NAME => {
                    assert!(matches!(
                        gate(NbdTls::Require, false, code, 0),
                        Gate::Close(_)
                    ));
                    continue;
                }
                _ => Gate::Refuse(
                    rep::ERR_TLS_REQD,
                    "TLS is required: send NBD_OPT_STARTTLS first",
                ),
            };
            assert_eq!(
                gate(NbdTls::Require, false, code, 0),
                expected,
                "option {code}"
            );
        }
    }

    #[test]
    fn after_tls_no_option_is_refused_for_tls_and_starttls_is_invalid() {
        for mode in [NbdTls::On, NbdTls::Require] {
            for code in OPTIONS {
                let got = gate(mode, true, code, 0);
                if code == opt::STARTTLS {
                    assert!(matches!(got, Gate::Refuse(rep::ERR_INVALID, _)), "{got:?}");
                } else {
                    assert_eq!(got, Gate::Serve, "{mode:?} option {code}");
                }
            }
        }
    }

    #[test]
    fn offered_tls_serves_plaintext_and_off_refuses_starttls() {
        for code in OPTIONS.into_iter().filter(|&c| c != opt::STARTTLS) {
            assert_eq!(gate(NbdTls::On, false, code, 0), Gate::Serve);
            assert_eq!(gate(NbdTls::Off, false, code, 0), Gate::Serve);
            assert!(
                !matches!(gate(NbdTls::Require, false, code, 0), Gate::Serve) || code == opt::ABORT
            );
        }
        assert_eq!(gate(NbdTls::On, false, opt::STARTTLS, 0), Gate::StartTls);
        assert!(matches!(
            gate(NbdTls::On, false, opt::STARTTLS, 1),
            Gate::Refuse(rep::ERR_INVALID, _)
        ));
        assert!(matches!(
            gate(NbdTls::Off, false, opt::STARTTLS, 0),
            Gate::Refuse(rep::ERR_POLICY, _)
        ));
    }
}
