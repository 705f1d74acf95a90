//! Parity math: XOR (RAID 4/5 parity and RAID 6's P) and GF(2^8) P+Q (RAID 6).
//!
//! Conventions, pinned by golden vectors in the tests and derived in `docs/PARITY.md`:
//! - P is the XOR of the stripe's data units.
//! - Q is the sum over the *logical* data index `i` (0-based position of the unit within the
//!   stripe's data, not its physical column) of `g^i * D_i` in GF(2^8), polynomial 0x11d,
//!   g = 2: the Linux md / H. Peter Anvin convention.
//! - Every operand of one call covers the same byte range of its unit, so all slices of one call
//!   have the same length; callers may pass any sub-range (byte-granular accesses), since each
//!   byte position is computed independently.
//!
//! Everything takes plain slices and returns a [`ParityError`] for inconsistent arguments,
//! checked before any byte is written, so a rejected call changes nothing.
//!
//! Code map: [`xor`] (XOR of slices), [`gf256`] (field arithmetic and multiply-slice
//! primitives), [`pq`] (encode, small-write updates, recovery of every loss of up to two
//! columns).

pub mod gf256;
pub mod pq;
pub mod xor;

#[cfg(test)]
mod tests;

use std::fmt;

pub use gf256::{mul_slice, mul_slice_xor};
pub use pq::{
    MAX_DATA_UNITS, p_encode, p_update, pq_encode, pq_update, q_encode, q_update, reconstruct,
    recover_data_and_p, recover_data_and_q, recover_data_from_p, recover_data_from_q,
    recover_two_data,
};
pub use xor::{xor_into, xor_many};

/// One column of a RAID 6 stripe, as seen by the parity math.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    /// The data unit with this logical index within the stripe.
    Data(usize),
    /// The XOR parity unit.
    P,
    /// The GF(2^8) syndrome unit.
    Q,
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Column::Data(i) => write!(f, "data unit {i}"),
            Column::P => f.write_str("P"),
            Column::Q => f.write_str("Q"),
        }
    }
}

/// Which argument of a parity call an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    /// The destination of an XOR or multiply.
    Dst,
    /// The source of a two-operand XOR.
    Src,
    /// Source number `n` of [`xor_many`].
    Source(usize),
    /// The present data unit with this logical index.
    Data(usize),
    /// The P unit passed in.
    P,
    /// The Q unit passed in.
    Q,
    /// The old contents of the data unit of a small write.
    OldData,
    /// The new contents of the data unit of a small write.
    NewData,
    /// The output buffer for a lost column.
    Recovered(Column),
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Dst => f.write_str("destination"),
            Operand::Src => f.write_str("source"),
            Operand::Source(n) => write!(f, "source {n}"),
            Operand::Data(i) => write!(f, "data unit {i}"),
            Operand::P => f.write_str("P"),
            Operand::Q => f.write_str("Q"),
            Operand::OldData => f.write_str("old data"),
            Operand::NewData => f.write_str("new data"),
            Operand::Recovered(c) => write!(f, "output for lost {c}"),
        }
    }
}

/// Why a parity call was rejected. Every variant is detected before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParityError {
    /// An operand's length differs from the call's first operand: the slices would not cover the
    /// same byte range of their units.
    #[error("{operand} is {actual} bytes, expected {expected} like the other operands")]
    LengthMismatch {
        /// The operand whose length is off.
        operand: Operand,
        /// The length of the call's first operand.
        expected: usize,
        /// The operand's length.
        actual: usize,
    },
    /// A stripe without data units has no parity.
    #[error("a stripe needs at least one data unit")]
    NoDataUnits,
    /// More data units than distinct Q coefficients g^i.
    #[error("{count} data units, at most {MAX_DATA_UNITS} fit a P+Q stripe")]
    TooManyDataUnits {
        /// The number of data units passed.
        count: usize,
    },
    /// A logical data index outside the stripe.
    #[error("data index {index} outside a stripe of {count} data units")]
    DataIndexOutOfRange {
        /// The index given.
        index: usize,
        /// The number of data units (for updates, the largest stripe: [`MAX_DATA_UNITS`]).
        count: usize,
    },
    /// A recovery call was given a different number of absent (`None`) data units than it
    /// recovers.
    #[error("expected {expected} absent data units, found {found}")]
    MissingCount {
        /// How many the call recovers.
        expected: usize,
        /// How many were `None`.
        found: usize,
    },
    /// More lost columns than P+Q tolerates.
    #[error("{lost} columns lost, P+Q recovers at most two")]
    TooManyLost {
        /// The number of lost columns.
        lost: usize,
    },
    /// The same column was listed twice as lost.
    #[error("{0} listed twice as lost")]
    DuplicateLost(Column),
}

/// Checks that an operand has the call's common length.
pub(crate) fn check_len(
    operand: Operand,
    expected: usize,
    actual: usize,
) -> Result<(), ParityError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ParityError::LengthMismatch {
            operand,
            expected,
            actual,
        })
    }
}
