//! The NBD wire format, from the NBD project's `doc/proto.md`: the constants, the parsers of
//! what a client sends (option headers and payloads, requests) and the encoders of what the
//! server answers. No I/O here: every parser takes bytes and answers a value or a
//! [`WireError`], so it is tested alone and under proptest.

use std::fmt;

/// `NBDMAGIC`, the first word the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: after [`NBDMAGIC`] in the newstyle greeting, and before every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of every request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flag: fixed newstyle negotiation.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the client may ask to skip the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: fixed newstyle.
pub const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: no zeroes after `NBD_OPT_EXPORT_NAME`.
pub const CLIENT_NO_ZEROES: u32 = 1 << 1;

/// Transmission flags of an export.
pub mod tflags {
    /// Always set.
    pub const HAS_FLAGS: u16 = 1 << 0;
    /// Writes are refused.
    pub const READ_ONLY: u16 = 1 << 1;
    /// `NBD_CMD_FLUSH` is supported.
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// `NBD_CMD_FLAG_FUA` is supported.
    pub const SEND_FUA: u16 = 1 << 3;
    /// `NBD_CMD_TRIM` is supported.
    pub const SEND_TRIM: u16 = 1 << 5;
    /// `NBD_CMD_WRITE_ZEROES` is supported.
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// A flush on one connection covers the writes completed on every connection.
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
}

/// Option codes.
pub mod opt {
    /// Choose an export and enter transmission (no error reply possible).
    pub const EXPORT_NAME: u32 = 1;
    /// End the negotiation.
    pub const ABORT: u32 = 2;
    /// List the exports.
    pub const LIST: u32 = 3;
    /// Upgrade the connection to TLS (after the server's `NBD_REP_ACK`).
    pub const STARTTLS: u32 = 5;
    /// Describe an export.
    pub const INFO: u32 = 6;
    /// Describe an export and enter transmission.
    pub const GO: u32 = 7;
}

/// Option reply types.
pub mod rep {
    /// The option succeeded (final reply).
    pub const ACK: u32 = 1;
    /// One export of a list.
    pub const SERVER: u32 = 2;
    /// One piece of information about an export.
    pub const INFO: u32 = 3;
    /// Unknown option.
    pub const ERR_UNSUP: u32 = (1 << 31) | 1;
    /// Refused by policy.
    pub const ERR_POLICY: u32 = (1 << 31) | 2;
    /// Malformed or invalid option.
    pub const ERR_INVALID: u32 = (1 << 31) | 3;
    /// TLS is required before this option (FORCEDTLS).
    pub const ERR_TLS_REQD: u32 = (1 << 31) | 5;
    /// No such export.
    pub const ERR_UNKNOWN: u32 = (1 << 31) | 6;
    /// The server is shutting down.
    pub const ERR_SHUTDOWN: u32 = (1 << 31) | 7;
    /// The client must ask for the block sizes to use this export.
    pub const ERR_BLOCK_SIZE_REQD: u32 = (1 << 31) | 8;
}

/// Information types of `NBD_REP_INFO`.
pub mod info {
    /// Size and transmission flags.
    pub const EXPORT: u16 = 0;
    /// Minimum, preferred and maximum block sizes.
    pub const BLOCK_SIZE: u16 = 3;
}

/// Command types.
pub mod cmd {
    /// Read.
    pub const READ: u16 = 0;
    /// Write (a payload follows the request).
    pub const WRITE: u16 = 1;
    /// Disconnect.
    pub const DISC: u16 = 2;
    /// Flush.
    pub const FLUSH: u16 = 3;
    /// Trim (discard): dagraid writes zeros.
    pub const TRIM: u16 = 4;
    /// Write zeros.
    pub const WRITE_ZEROES: u16 = 6;
}

/// Command flags.
pub mod cmd_flags {
    /// Force unit access: answered once durable (every dagraid write is).
    pub const FUA: u16 = 1 << 0;
    /// `NBD_CMD_WRITE_ZEROES`: do not punch a hole (dagraid never does).
    pub const NO_HOLE: u16 = 1 << 1;
}

/// Error values of replies (Linux errno numbers, as the protocol fixes them).
pub mod errno {
    /// Not permitted (a write to a read-only export).
    pub const EPERM: u32 = 1;
    /// Input/output error (data loss, the volume unavailable).
    pub const EIO: u32 = 5;
    /// Out of memory or overloaded.
    pub const ENOMEM: u32 = 12;
    /// Invalid request.
    pub const EINVAL: u32 = 22;
    /// A write beyond the end of the export.
    pub const ENOSPC: u32 = 28;
    /// The command is not supported.
    pub const ENOTSUP: u32 = 95;
    /// The server is shutting down.
    pub const ESHUTDOWN: u32 = 108;
}

/// Longest option payload accepted (the spec's strings are at most 4 KiB; GO adds a few
/// bytes): a longer one is refused with a disconnect rather than read.
pub const MAX_OPTION_BYTES: u32 = 64 << 10;
/// Options accepted before one enters transmission; more is taken as abuse (disconnect).
pub const MAX_OPTIONS: usize = 32;
/// Longest export name (the spec's limit on strings).
pub const MAX_NAME_BYTES: usize = 4096;
/// Bytes of a request header.
pub const REQUEST_BYTES: usize = 28;
/// Bytes of an option header.
pub const OPTION_HEADER_BYTES: usize = 16;

/// What is wrong with bytes a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A magic number is not the one expected.
    BadMagic {
        /// Which magic.
        what: &'static str,
        /// What came instead.
        got: u64,
    },
    /// A length over its limit.
    TooLong {
        /// What is too long.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// Any other malformed content.
    Malformed(String),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::BadMagic { what, got } => write!(f, "bad {what} magic {got:#x}"),
            WireError::TooLong { what, len, max } => {
                write!(f, "{what} of {len} bytes is over the limit of {max}")
            }
            WireError::Malformed(detail) => f.write_str(detail),
        }
    }
}

impl std::error::Error for WireError {}

/// An option's header: its code and the length of the payload that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option code ([`opt`]).
    pub code: u32,
    /// Bytes of payload that follow.
    pub len: u32,
}

/// Parses an option header; a payload over [`MAX_OPTION_BYTES`] is refused.
pub fn parse_option_header(b: &[u8; OPTION_HEADER_BYTES]) -> Result<OptionHeader, WireError> {
    let magic = u64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
    if magic != IHAVEOPT {
        return Err(WireError::BadMagic {
            what: "option",
            got: magic,
        });
    }
    let code = u32::from_be_bytes(b[8..12].try_into().expect("4 bytes"));
    let len = u32::from_be_bytes(b[12..16].try_into().expect("4 bytes"));
    if len > MAX_OPTION_BYTES {
        return Err(WireError::TooLong {
            what: "option payload",
            len: u64::from(len),
            max: u64::from(MAX_OPTION_BYTES),
        });
    }
    Ok(OptionHeader { code, len })
}

/// The payload of `NBD_OPT_INFO` and `NBD_OPT_GO`: an export name and the information
/// requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    /// The export (volume) name.
    pub name: String,
    /// The information types requested ([`info`]).
    pub requests: Vec<u16>,
}

impl InfoRequest {
    /// Whether the client asked for the block sizes (and so promises to honour them).
    pub fn wants_block_size(&self) -> bool {
        self.requests.contains(&info::BLOCK_SIZE)
    }
}

/// Parses the payload of `NBD_OPT_INFO` / `NBD_OPT_GO`: u32 name length, name, u16 count,
/// count u16 information types; nothing more.
pub fn parse_info_request(data: &[u8]) -> Result<InfoRequest, WireError> {
    let short = || WireError::Malformed("INFO/GO payload too short".into());
    let name_len = u32::from_be_bytes(data.get(0..4).ok_or_else(short)?.try_into().expect("4"));
    let name_end = 4usize
        .checked_add(name_len as usize)
        .filter(|&e| e <= data.len())
        .ok_or_else(short)?;
    let name = parse_name(&data[4..name_end])?;
    let count = u16::from_be_bytes(
        data.get(name_end..name_end + 2)
            .ok_or_else(short)?
            .try_into()
            .expect("2"),
    );
    let list = &data[name_end + 2..];
    if list.len() != usize::from(count) * 2 {
        return Err(WireError::Malformed(format!(
            "INFO/GO payload names {count} information requests in {} bytes",
            list.len()
        )));
    }
    let requests = list
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    Ok(InfoRequest { name, requests })
}

/// Parses an export name: UTF-8, no NUL, at most [`MAX_NAME_BYTES`].
pub fn parse_name(bytes: &[u8]) -> Result<String, WireError> {
    if bytes.len() > MAX_NAME_BYTES {
        return Err(WireError::TooLong {
            what: "export name",
            len: bytes.len() as u64,
            max: MAX_NAME_BYTES as u64,
        });
    }
    let name = std::str::from_utf8(bytes)
        .map_err(|_| WireError::Malformed("export name is not UTF-8".into()))?;
    if name.contains('\0') {
        return Err(WireError::Malformed("export name holds a NUL".into()));
    }
    Ok(name.to_owned())
}

/// One option reply: magic, option, type, length, payload.
pub fn option_reply(option: u32, kind: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + payload.len());
    b.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// The payload of `NBD_INFO_EXPORT`.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&info::EXPORT.to_be_bytes());
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b
}

/// The payload of `NBD_INFO_BLOCK_SIZE`.
pub fn info_block_size(sizes: BlockSizes) -> Vec<u8> {
    let mut b = Vec::with_capacity(14);
    b.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
    b.extend_from_slice(&sizes.minimum.to_be_bytes());
    b.extend_from_slice(&sizes.preferred.to_be_bytes());
    b.extend_from_slice(&sizes.maximum.to_be_bytes());
    b
}

/// The payload of one `NBD_REP_SERVER` (an export in a list).
pub fn server_entry(name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + name.len());
    b.extend_from_slice(&(name.len() as u32).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b
}

/// The answer to `NBD_OPT_EXPORT_NAME`: size, flags, and 124 zeroes unless the client asked
/// for none.
pub fn export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(134);
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        b.extend_from_slice(&[0; 124]);
    }
    b
}

/// The block sizes of an export (`NBD_INFO_BLOCK_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    /// The smallest unit of I/O: the volume's block size (a power of two, at most 64 KiB).
    pub minimum: u32,
    /// The largest power of two dividing a full stripe, at most `maximum`.
    pub preferred: u32,
    /// The largest request payload: a multiple of `minimum`.
    pub maximum: u32,
}

impl BlockSizes {
    /// The sizes of a volume of block size `block`, `stripe` data bytes per stripe, and
    /// requests of at most `max_io` bytes; `None` when the protocol cannot express them (a
    /// block size over 64 KiB or not a power of two, or `max_io` below one block).
    pub fn of(block: u32, stripe: u64, max_io: u64) -> Option<Self> {
        if !block.is_power_of_two() || block > 64 << 10 {
            return None;
        }
        let maximum = (max_io.min(u64::from(u32::MAX)) / u64::from(block)) * u64::from(block);
        let maximum = u32::try_from(maximum).ok().filter(|&m| m >= block)?;
        let stripe_power = if stripe == 0 {
            u64::from(block)
        } else {
            1u64 << stripe.trailing_zeros()
        };
        let max_power = 1u64 << (63 - u64::from(maximum).leading_zeros());
        let preferred = stripe_power.min(max_power).max(u64::from(block));
        Some(BlockSizes {
            minimum: block,
            preferred: u32::try_from(preferred).ok()?,
            maximum,
        })
    }
}

/// One request of the transmission phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags ([`cmd_flags`]).
    pub flags: u16,
    /// Command type ([`cmd`]).
    pub kind: u16,
    /// The client's handle, echoed in the reply.
    pub handle: u64,
    /// Byte offset in the export.
    pub offset: u64,
    /// Length in bytes (of the payload that follows, for a write).
    pub len: u32,
}

/// Parses a request header; only the magic is checked here (the rest depends on the export).
pub fn parse_request(b: &[u8; REQUEST_BYTES]) -> Result<Request, WireError> {
    let magic = u32::from_be_bytes(b[0..4].try_into().expect("4"));
    if magic != REQUEST_MAGIC {
        return Err(WireError::BadMagic {
            what: "request",
            got: u64::from(magic),
        });
    }
    Ok(Request {
        flags: u16::from_be_bytes(b[4..6].try_into().expect("2")),
        kind: u16::from_be_bytes(b[6..8].try_into().expect("2")),
        handle: u64::from_be_bytes(b[8..16].try_into().expect("8")),
        offset: u64::from_be_bytes(b[16..24].try_into().expect("8")),
        len: u32::from_be_bytes(b[24..28].try_into().expect("4")),
    })
}

/// A simple reply's header (the data of a successful read follows it).
pub fn simple_reply(error: u32, handle: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info_payload(name: &[u8], requests: &[u16]) -> Vec<u8> {
        let mut b = (name.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(name);
        b.extend_from_slice(&(requests.len() as u16).to_be_bytes());
        for r in requests {
            b.extend_from_slice(&r.to_be_bytes());
        }
        b
    }

    #[test]
    fn an_info_request_round_trips() {
        let r = parse_info_request(&info_payload(b"vol0", &[info::BLOCK_SIZE])).unwrap();
        assert_eq!(r.name, "vol0");
        assert!(r.wants_block_size());
        let r = parse_info_request(&info_payload(b"", &[])).unwrap();
        assert_eq!((r.name.as_str(), r.requests.len()), ("", 0));
    }

    #[test]
    fn malformed_info_requests_are_refused() {
        assert!(parse_info_request(&[]).is_err());
        assert!(
            parse_info_request(&[0, 0, 0, 9, b'a']).is_err(),
            "name past the end"
        );
        let mut extra = info_payload(b"v", &[3]);
        extra.push(0);
        assert!(parse_info_request(&extra).is_err(), "trailing byte");
        let mut short = info_payload(b"v", &[3, 0]);
        short.truncate(short.len() - 2);
        assert!(parse_info_request(&short).is_err(), "count over the list");
        assert!(parse_info_request(&info_payload(b"a\0b", &[])).is_err());
        assert!(parse_info_request(&info_payload(&[0xff, 0xfe], &[])).is_err());
        assert!(matches!(
            parse_name(&[b'a'; MAX_NAME_BYTES + 1]),
            Err(WireError::TooLong { .. })
        ));
    }

    #[test]
    fn option_headers_check_magic_and_length() {
        let mut h = [0u8; 16];
        h[0..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
        h[8..12].copy_from_slice(&opt::GO.to_be_bytes());
        h[12..16].copy_from_slice(&10u32.to_be_bytes());
        assert_eq!(
            parse_option_header(&h).unwrap(),
            OptionHeader {
                code: opt::GO,
                len: 10
            }
        );
        h[12..16].copy_from_slice(&(MAX_OPTION_BYTES + 1).to_be_bytes());
        assert!(matches!(
            parse_option_header(&h),
            Err(WireError::TooLong { .. })
        ));
        h[0] ^= 1;
        assert!(matches!(
            parse_option_header(&h),
            Err(WireError::BadMagic { .. })
        ));
    }

    #[test]
    fn block_sizes_follow_the_stripe_and_the_limits() {
        // RAID 5 over 5 columns of 64 KiB units: 256 KiB stripes.
        let s = BlockSizes::of(4096, 256 << 10, 16 << 20).unwrap();
        assert_eq!(
            (s.minimum, s.preferred, s.maximum),
            (4096, 256 << 10, 16 << 20)
        );
        // Three data columns: 192 KiB, whose largest power-of-two divisor is 64 KiB.
        assert_eq!(
            BlockSizes::of(4096, 192 << 10, 16 << 20).unwrap().preferred,
            64 << 10
        );
        // A maximum below the stripe caps the preferred size.
        let s = BlockSizes::of(512, 1 << 20, 12 << 10).unwrap();
        assert_eq!((s.preferred, s.maximum), (8 << 10, 12 << 10));
        assert!(BlockSizes::of(128 << 10, 1 << 20, 16 << 20).is_none());
        assert!(BlockSizes::of(4096, 1 << 20, 1024).is_none());
    }

    #[test]
    fn requests_parse_and_replies_encode() {
        let mut b = [0u8; REQUEST_BYTES];
        b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&cmd_flags::FUA.to_be_bytes());
        b[6..8].copy_from_slice(&cmd::WRITE.to_be_bytes());
        b[8..16].copy_from_slice(&7u64.to_be_bytes());
        b[16..24].copy_from_slice(&4096u64.to_be_bytes());
        b[24..28].copy_from_slice(&512u32.to_be_bytes());
        let r = parse_request(&b).unwrap();
        assert_eq!(
            r,
            Request {
                flags: cmd_flags::FUA,
                kind: cmd::WRITE,
                handle: 7,
                offset: 4096,
                len: 512
            }
        );
        let reply = simple_reply(errno::EIO, 7);
        assert_eq!(&reply[0..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&reply[4..8], &5u32.to_be_bytes());
        assert_eq!(export_name_reply(1, 1, false).len(), 134);
        assert_eq!(export_name_reply(1, 1, true).len(), 10);
        assert_eq!(option_reply(opt::GO, rep::ACK, &[]).len(), 20);
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("DAGRAID_NBD_PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2048),
            ..ProptestConfig::default()
        })]

        /// Any bytes: the parsers answer a value or an error, never panic, and what they
        /// accept is within the limits.
        #[test]
        fn parsers_never_panic_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(r) = parse_info_request(&bytes) {
                prop_assert!(r.name.len() <= MAX_NAME_BYTES);
                prop_assert_eq!(4 + r.name.len() + 2 + 2 * r.requests.len(), bytes.len());
            }
            let _ = parse_name(&bytes);
            if bytes.len() >= REQUEST_BYTES {
                let header: [u8; REQUEST_BYTES] = bytes[..REQUEST_BYTES].try_into().unwrap();
                let _ = parse_request(&header);
            }
            if bytes.len() >= OPTION_HEADER_BYTES {
                let header: [u8; OPTION_HEADER_BYTES] = bytes[..OPTION_HEADER_BYTES].try_into().unwrap();
                if let Ok(h) = parse_option_header(&header) {
                    prop_assert!(h.len <= MAX_OPTION_BYTES);
                }
            }
        }

        /// Well-formed GO payloads round-trip.
        #[test]
        fn info_requests_round_trip(name in "[a-z0-9._-]{0,64}", requests in proptest::collection::vec(any::<u16>(), 0..20)) {
            let r = parse_info_request(&info_payload(name.as_bytes(), &requests)).unwrap();
            prop_assert_eq!(r.name, name);
            prop_assert_eq!(r.requests, requests);
        }

        /// Valid magic: every request header parses to its fields.
        #[test]
        fn request_headers_round_trip(flags: u16, kind: u16, handle: u64, offset: u64, len: u32) {
            let mut b = [0u8; REQUEST_BYTES];
            b[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
            b[4..6].copy_from_slice(&flags.to_be_bytes());
            b[6..8].copy_from_slice(&kind.to_be_bytes());
            b[8..16].copy_from_slice(&handle.to_be_bytes());
            b[16..24].copy_from_slice(&offset.to_be_bytes());
            b[24..28].copy_from_slice(&len.to_be_bytes());
            prop_assert_eq!(parse_request(&b).unwrap(), Request { flags, kind, handle, offset, len });
        }

        /// Block sizes, whenever expressible, satisfy the protocol's rules.
        #[test]
        fn block_sizes_obey_the_protocol(block_log in 9u32..18, stripe in 1u64..(64 << 20), max_io in 0u64..(1 << 31)) {
            let block = 1u32 << block_log;
            if let Some(s) = BlockSizes::of(block, stripe, max_io) {
                prop_assert!(s.minimum.is_power_of_two() && s.minimum <= 64 << 10);
                prop_assert!(s.preferred.is_power_of_two() && s.preferred >= s.minimum);
                prop_assert!(s.preferred <= s.maximum);
                prop_assert_eq!(s.maximum % s.minimum, 0);
            }
        }
    }
}
