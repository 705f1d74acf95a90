//! Real tonic servers on 127.0.0.1 behind [`ServerTls::incoming`], called through
//! [`ClientTls::connector`]: who gets through, who is refused and how, and what a reload does.

use std::sync::Arc;
use std::time::Duration;

use dagraid_tls::pki::ClusterPki;
use dagraid_tls::{ClientTls, Role, ServerTls, TlsFiles, require_role};
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// A server presenting `role`'s certificate whose health service demands `need` per call (the
/// way a storage node guards its API), and which serves until the test ends.
async fn serve(pki: &ClusterPki, role: Role, need: Role) -> (std::net::SocketAddr, Arc<ServerTls>) {
    let tls = ServerTls::load(pki.ensure(&role).unwrap()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let guarded = tonic::service::interceptor::InterceptedService::new(
        health,
        move |req: tonic::Request<()>| {
            require_role(&req, &need)?;
            Ok(req)
        },
    );
    let incoming = tls.incoming(listener);
    tokio::spawn(
        Server::builder()
            .add_service(guarded)
            .serve_with_incoming(incoming),
    );
    (addr, tls)
}

async fn check(
    addr: std::net::SocketAddr,
    tls: &Arc<ClientTls>,
    server_name: &str,
) -> Result<(), tonic::Status> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tls.connector(server_name).unwrap())
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e:?}")))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
}

fn client(pki: &ClusterPki, role: Option<Role>) -> Arc<ClientTls> {
    let files = match role {
        Some(role) => pki.ensure(&role).unwrap(),
        None => TlsFiles {
            ca: pki.ca(),
            cert: None,
            key: None,
        },
    };
    ClientTls::load(files).unwrap()
}

#[tokio::test]
async fn only_the_named_role_gets_through() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::open_or_create(&dir.path().join("tls")).unwrap();
    let node = Role::Node("node1".into());
    let (addr, _tls) = serve(&pki, node.clone(), Role::Coordinator).await;
    let name = node.dns_name();

    check(addr, &client(&pki, Some(Role::Coordinator)), &name)
        .await
        .expect("the coordinator is let in");

    let e = check(addr, &client(&pki, None), &name).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = check(addr, &client(&pki, Some(Role::Client)), &name)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");

    // A certificate of another CA fails the handshake (the server refuses it) ...
    let other = ClusterPki::open_or_create(&dir.path().join("other")).unwrap();
    let stranger = ClientTls::load(TlsFiles {
        ca: pki.ca(),
        ..other.ensure(&Role::Coordinator).unwrap()
    })
    .unwrap();
    let e = check(addr, &stranger, &name).await.unwrap_err();
    // TLS 1.3: the client's side of the handshake ends before the server has checked the
    // client's certificate, so the refusal (an alert) may end the first call instead.
    assert!(
        matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Unknown),
        "{e:?}"
    );
    // ... and so does a client that trusts another CA (it refuses the server).
    let e = check(addr, &client(&other, Some(Role::Coordinator)), &name)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");

    // Plaintext to the TLS port fails cleanly, and the server goes on serving.
    let plain = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    match plain.connect().await {
        Err(_) => {}
        Ok(channel) => {
            let e = HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .unwrap_err();
            // The server closes the connection at the first bytes, which are no handshake.
            assert!(
                matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Unknown),
                "{e:?}"
            );
        }
    }
    check(addr, &client(&pki, Some(Role::Coordinator)), &name)
        .await
        .expect("still serving");
}

#[tokio::test]
async fn a_server_must_carry_the_name_the_client_expects() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::open_or_create(dir.path()).unwrap();
    let (addr, _tls) = serve(&pki, Role::Node("node1".into()), Role::Coordinator).await;
    let coordinator = client(&pki, Some(Role::Coordinator));
    // node2 expected at node1's address: refused at the handshake, by the client.
    let e = check(addr, &coordinator, &Role::Node("node2".into()).dns_name())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(
        format!("{e:?}").to_lowercase().contains("certificate"),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_reload_serves_new_handshakes_with_the_new_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::open_or_create(dir.path()).unwrap();
    let node = Role::Node("node1".into());
    let (addr, tls) = serve(&pki, node.clone(), Role::Coordinator).await;
    let coordinator = client(&pki, Some(Role::Coordinator));
    let before = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(coordinator.connector(&node.dns_name()).unwrap())
        .await
        .unwrap();
    HealthClient::new(before.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap();

    // The node's certificate is replaced by one for another name and reloaded: new
    // handshakes present it (and the old name no longer verifies) ...
    let files = pki.files(&node);
    pki.issue(
        &Role::Node("node9".into()),
        files.cert.as_ref().unwrap(),
        files.key.as_ref().unwrap(),
    )
    .unwrap();
    tls.reload().unwrap();
    let e = check(addr, &coordinator, &node.dns_name())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    check(addr, &coordinator, &Role::Node("node9".into()).dns_name())
        .await
        .expect("the new certificate is served");
    // ... while the connection made before the reload carries on.
    HealthClient::new(before)
        .check(HealthCheckRequest::default())
        .await
        .expect("an existing connection continues");

    // A reload of broken files keeps what is in use.
    std::fs::write(files.cert.as_ref().unwrap(), "garbage").unwrap();
    assert!(tls.reload().is_err());
    check(addr, &coordinator, &Role::Node("node9".into()).dns_name())
        .await
        .expect("still served with the last good certificate");
}

/// An NBD session (`ServerTls::accept_nbd` over an in-memory pipe): the certificate is the
/// credential, so a client without one, one of another role, or one from another CA is refused.
#[tokio::test]
async fn nbd_sessions_need_a_client_or_coordinator_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ClusterPki::open_or_create(&dir.path().join("tls")).unwrap();
    let other = ClusterPki::open_or_create(&dir.path().join("other")).unwrap();
    let server = ServerTls::load(pki.ensure(&Role::Coordinator).unwrap()).unwrap();
    assert!(server.nbd_config().alpn_protocols.is_empty());
    assert_eq!(server.config().alpn_protocols, vec![b"h2".to_vec()]);

    // The client trusts the cluster CA in every case; what differs is its own certificate.
    let stranger = other.ensure(&Role::Client).unwrap();
    let stranger = TlsFiles {
        ca: pki.ca(),
        ..stranger
    };
    let cases = [
        (client(&pki, Some(Role::Client)), true),
        (client(&pki, Some(Role::Coordinator)), true),
        (client(&pki, Some(Role::Node("node1".into()))), false),
        (client(&pki, None), false),
        (ClientTls::load(stranger).unwrap(), false),
    ];
    for (i, (tls, allowed)) in cases.into_iter().enumerate() {
        let (near, far) = tokio::io::duplex(64 << 10);
        let connector = tokio_rustls::TlsConnector::from(tls.config());
        let name = rustls_pki_types::ServerName::try_from("coordinator.dagraid").unwrap();
        let client = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            // TLS 1.3: the client's side completes before the server judges its certificate,
            // so the refusal shows as the first read failing or ending.
            let mut stream = connector.connect(name, far).await?;
            let mut byte = [0u8; 1];
            stream.read(&mut byte).await
        });
        let accepted = server.accept_nbd(near).await;
        assert_eq!(accepted.is_ok(), allowed, "case {i}: {accepted:?}");
        drop(accepted);
        let _ = client.await.unwrap();
    }
}
