//! The per-call check of the role a peer's certificate names.

use rustls_pki_types::{CertificateDer, ServerName};

use crate::Role;

/// Why a peer may not make a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// The peer presented no certificate.
    #[error("no client certificate: this call needs a certificate naming {want}")]
    NoCertificate {
        /// The role's DNS name.
        want: String,
    },
    /// The certificate (which chains to the cluster CA: the handshake checked that) names
    /// another role.
    #[error("the client certificate does not name {want}: this call is not allowed to it")]
    WrongRole {
        /// The role's DNS name.
        want: String,
    },
}

impl From<RoleError> for tonic::Status {
    fn from(e: RoleError) -> Self {
        match e {
            RoleError::NoCertificate { .. } => tonic::Status::unauthenticated(e.to_string()),
            RoleError::WrongRole { .. } => tonic::Status::permission_denied(e.to_string()),
        }
    }
}

/// Checks that the peer's certificate chain (leaf first, as the TLS handshake verified it)
/// names `role`.
pub fn peer_role(certs: Option<&[CertificateDer<'_>]>, role: &Role) -> Result<(), RoleError> {
    let want = role.dns_name();
    let Some(leaf) = certs.and_then(|c| c.first()) else {
        return Err(RoleError::NoCertificate { want });
    };
    let named = webpki::EndEntityCert::try_from(leaf)
        .ok()
        .is_some_and(|cert| {
            ServerName::try_from(want.as_str())
                .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
        });
    if named {
        Ok(())
    } else {
        Err(RoleError::WrongRole { want })
    }
}

/// [`peer_role`] for a call served over a TLS connection from
/// [`crate::ServerTls::incoming`]: UNAUTHENTICATED without a certificate, PERMISSION_DENIED
/// with one of another role.
pub fn require_role<T>(request: &tonic::Request<T>, role: &Role) -> Result<(), tonic::Status> {
    let certs = request.peer_certs();
    peer_role(certs.as_deref().map(Vec::as_slice), role).map_err(tonic::Status::from)
}
