//! Large (reconstruct) write: `Nil -> Rod x k (untouched units) -> [Ovl] -> Xor [Q] -> Cmt ->
//! {Wnd x n, Wnp, [Wnq]} -> Trm`.
//!
//! New parity from the new content of the whole stripe over the hull: the units the access does
//! not touch (and the untouched bytes of partially written ones) are read, the rest is the
//! user's data. A full-stripe write reads nothing. Used when more than half the data units are
//! touched and no data unit is lost, or when a live parity unit answered data loss (its old
//! content is not needed here). It shares its core with [`super::degraded_write`].

use super::{BuildError, BuiltDag, DagFamily, StripeRequest, degraded_write};

/// Builds the large write of `req`'s stripe.
pub fn build(req: &StripeRequest<'_>) -> Result<BuiltDag, BuildError> {
    degraded_write::reconstruct_write(req, DagFamily::LargeWrite)
}
