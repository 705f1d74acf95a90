//! Mutual TLS between real processes (docs/SECURITY.md): storage nodes answer the coordinator
//! only, the coordinator talks only to the node each address is supposed to be, the volume API
//! takes a client certificate or the token, and a certificate is replaced without a restart.
//! Every refused caller reads and writes nothing: the component files are compared before and
//! after, and the node epochs too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use dagraid_client::{
    Client, ClientError, ClientOptions, RaidLevel, RetryPolicy, TlsFiles, VolumeSpec,
};
use dagraid_proto::storage::v1 as spb;
use dagraid_proto::storage::v1::storage_node_client::StorageNodeClient;
use dagraid_tests::cluster::{Cluster, ClusterOptions, CoordinatorProcess};
use dagraid_tests::node::{NodeOptions, NodeProcess, NodeTls};
use dagraid_tests::tls::{TestPki, channel};
use dagraid_tests::{eventually, harness, with_timeout};
use dagraid_tls::Role;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn tls_cluster(nodes: usize, token: Option<&str>) -> ClusterOptions {
    ClusterOptions {
        nodes,
        tls: true,
        token: token.map(str::to_owned),
        ..ClusterOptions::default()
    }
}

/// Every file under `dir`, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Every storage call a stranger might try, each answered with `code` (or refused before any
/// answer, for `code == None`: the connection itself fails).
async fn every_call_is_refused(
    channel: Result<tonic::transport::Channel>,
    code: Option<Code>,
    what: &str,
) {
    let channel = match channel {
        Ok(c) => c,
        Err(e) => {
            assert!(
                code.is_none(),
                "{what}: no connection ({e:#}), expected {code:?}"
            );
            return;
        }
    };
    let mut node = StorageNodeClient::new(channel);
    let fencing = Some(spb::Fencing {
        cluster_id: "dagraid".into(),
        epoch: u64::MAX - 1,
    });
    let answers: Vec<(&str, Result<(), tonic::Status>)> = vec![
        (
            "ListComponents",
            node.list_components(spb::ListComponentsRequest {})
                .await
                .map(drop),
        ),
        (
            "GetNodeInfo",
            node.get_node_info(spb::GetNodeInfoRequest {})
                .await
                .map(drop),
        ),
        (
            "ReadBlocks",
            node.read_blocks(spb::ReadBlocksRequest {
                fencing: None,
                component_id: "anything".into(),
                start_block: 0,
                block_count: 1,
            })
            .await
            .map(drop),
        ),
        (
            "WriteBlocks",
            node.write_blocks(spb::WriteBlocksRequest {
                fencing: fencing.clone(),
                component_id: "anything".into(),
                start_block: 0,
                data: vec![0xAB; 4096].into(),
            })
            .await
            .map(drop),
        ),
        (
            "Fence",
            node.fence(spb::FenceRequest {
                cluster_id: "dagraid".into(),
                epoch: u64::MAX - 1,
                component_id: String::new(),
            })
            .await
            .map(drop),
        ),
    ];
    for (call, answer) in answers {
        let status = answer.expect_err(&format!("{what}: {call} was answered"));
        match code {
            Some(code) => assert_eq!(status.code(), code, "{what}: {call}: {status:?}"),
            None => assert_ne!(status.code(), Code::Ok, "{what}: {call}"),
        }
    }
}

#[tokio::test]
async fn storage_nodes_answer_only_the_coordinator() {
    with_timeout(async {
        let mut cluster = Cluster::start(tls_cluster(3, Some("test-token")))
            .await
            .unwrap();
        let client = harness::client(&cluster).await;
        let volume = client
            .create_volume(VolumeSpec::new("sec", RaidLevel::Raid5, 8 << 20).columns(3))
            .await
            .unwrap();
        let data: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
        let vol = client.volume("sec");
        vol.write_at(0, data.clone()).await.unwrap();
        // The coordinator stops cleanly (its last label writes done): from here on nothing of
        // the cluster's own writes to the components.
        cluster.coordinator.terminate().await.unwrap();
        let before: Vec<_> = cluster
            .nodes
            .iter()
            .map(|n| snapshot(&n.data_dir()))
            .collect();
        let pki = cluster.pki.as_ref().unwrap();
        let epochs_before = epochs(&cluster).await;

        let other = TestPki::new().unwrap();
        for (i, node) in cluster.nodes.iter().enumerate() {
            let name = Role::Node(format!("node{}", i + 1));
            let addr = node.addr();
            every_call_is_refused(
                channel(addr, &pki.ca_only(), &name).await,
                Some(Code::Unauthenticated),
                "no client certificate",
            )
            .await;
            every_call_is_refused(
                channel(addr, &pki.files(&Role::Client).unwrap(), &name).await,
                Some(Code::PermissionDenied),
                "a client certificate",
            )
            .await;
            // Another node's certificate is not the coordinator's either.
            every_call_is_refused(
                channel(
                    addr,
                    &pki.files(&Role::Node("node9".into())).unwrap(),
                    &name,
                )
                .await,
                None,
                "a node certificate",
            )
            .await;
            let stranger = TlsFiles {
                ca: pki.pki().ca(),
                ..other.files(&Role::Coordinator).unwrap()
            };
            every_call_is_refused(
                channel(addr, &stranger, &name).await,
                None,
                "a coordinator certificate of another CA",
            )
            .await;
            every_call_is_refused(dagraid_tests::node::channel(addr).await, None, "plaintext")
                .await;
            // Health answers anyone who speaks TLS to it: probes need no certificate.
            let health = HealthClient::new(channel(addr, &pki.ca_only(), &name).await.unwrap())
                .check(HealthCheckRequest::default())
                .await
                .unwrap()
                .into_inner();
            assert_eq!(health.status(), ServingStatus::Serving);
        }

        assert_eq!(
            epochs(&cluster).await,
            epochs_before,
            "a refused Fence moved an epoch"
        );
        for (node, before) in cluster.nodes.iter().zip(&before) {
            assert!(
                snapshot(&node.data_dir()) == *before,
                "a refused call changed a file of {}",
                node.addr()
            );
        }

        // The coordinator comes back and serves every acknowledged byte; the columns agree.
        cluster.coordinator.restart().await.unwrap();
        let client = harness::client(&cluster).await;
        let settled = harness::settled(&client, "sec").await;
        assert_eq!(settled.name, volume.name);
        let got = client.volume("sec").read_at(0, data.len()).await.unwrap();
        assert!(got == data, "the bytes read back differ");
        cluster.check_columns("sec", &[]).await.unwrap();
    })
    .await;
}

/// Every node's owner epoch, asked as the coordinator.
async fn epochs(cluster: &Cluster) -> Vec<u64> {
    let mut epochs = Vec::new();
    for n in &cluster.nodes {
        let info = n
            .client()
            .await
            .unwrap()
            .get_node_info(spb::GetNodeInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        epochs.push(info.epoch);
    }
    epochs
}

async fn connect(cluster: &Cluster, options: ClientOptions) -> Result<Client, ClientError> {
    Client::connect(
        cluster.url(),
        ClientOptions {
            retry: RetryPolicy::none(),
            connect_timeout: Duration::from_secs(5),
            ..options
        },
    )
    .await
}

#[tokio::test]
async fn the_volume_api_takes_a_client_certificate_or_the_token() {
    with_timeout(async {
        let cluster = Cluster::start(tls_cluster(3, Some("test-token")))
            .await
            .unwrap();
        let pki = cluster.pki.as_ref().unwrap();
        let admin = harness::client(&cluster).await;
        admin
            .create_volume(VolumeSpec::new("api", RaidLevel::Raid5, 8 << 20).columns(3))
            .await
            .unwrap();
        let data = vec![0x5Au8; 256 << 10];
        admin.volume("api").write_at(0, data.clone()).await.unwrap();

        // A client certificate without the token, and the token without a certificate.
        let by_cert = ClientOptions {
            tls: Some(pki.files(&Role::Client).unwrap()),
            ..ClientOptions::default()
        };
        let by_token = ClientOptions {
            tls: Some(pki.ca_only()),
            token: Some("test-token".into()),
            ..ClientOptions::default()
        };
        for (what, options) in [("certificate", by_cert), ("token", by_token)] {
            let c = connect(&cluster, options).await.unwrap();
            let got = c.volume("api").read_at(0, data.len()).await.unwrap();
            assert!(got == data, "{what}: wrong bytes");
        }

        // Neither, or a wrong token: UNAUTHENTICATED, nothing written.
        for token in [None, Some("wrong-token".to_owned())] {
            let c = connect(
                &cluster,
                ClientOptions {
                    tls: Some(pki.ca_only()),
                    token: token.clone(),
                    ..ClientOptions::default()
                },
            )
            .await
            .unwrap();
            let e = c
                .volume("api")
                .write_at(0, vec![1u8; 4096])
                .await
                .unwrap_err();
            assert!(
                matches!(e, ClientError::Unauthenticated { .. }),
                "{token:?}: {e:?}"
            );
        }

        // A certificate of another CA, plaintext to the TLS port, and a node's certificate
        // posing as the coordinator: no call gets through.
        let other = TestPki::new().unwrap();
        let stranger = ClientOptions {
            tls: Some(TlsFiles {
                ca: pki.pki().ca(),
                ..other.files(&Role::Client).unwrap()
            }),
            ..ClientOptions::default()
        };
        let wrong_ca = ClientOptions {
            tls: Some(other.files(&Role::Client).unwrap()),
            token: Some("test-token".into()),
            ..ClientOptions::default()
        };
        let node_name = ClientOptions {
            tls: Some(pki.files(&Role::Client).unwrap()),
            tls_server_name: Some(Role::Node("node1".into()).dns_name()),
            ..ClientOptions::default()
        };
        for (what, options) in [
            ("a client certificate of another CA", stranger),
            ("trusting another CA", wrong_ca),
            ("expecting a node's name", node_name),
        ] {
            match connect(&cluster, options).await {
                Err(e) => assert!(
                    e.is_transport() || matches!(e, ClientError::Timeout { .. }),
                    "{what}: {e:?}"
                ),
                Ok(c) => {
                    let e = c
                        .volume("api")
                        .write_at(0, vec![2u8; 4096])
                        .await
                        .unwrap_err();
                    assert!(e.is_transport(), "{what}: {e:?}");
                }
            }
        }
        let plain = Client::connect(
            format!("http://{}", cluster.coordinator.addr()),
            ClientOptions {
                token: Some("test-token".into()),
                retry: RetryPolicy::none(),
                ..ClientOptions::default()
            },
        )
        .await;
        match plain {
            Err(e) => assert!(e.is_transport(), "plaintext: {e:?}"),
            Ok(c) => {
                let e = c
                    .volume("api")
                    .write_at(0, vec![3u8; 4096])
                    .await
                    .unwrap_err();
                assert!(e.is_transport(), "plaintext: {e:?}");
            }
        }

        let got = admin.volume("api").read_at(0, data.len()).await.unwrap();
        assert!(got == data, "a refused write changed the volume");
        cluster.check_columns("api", &[]).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn without_a_token_the_api_needs_a_client_certificate() {
    with_timeout(async {
        let cluster = Cluster::start(tls_cluster(3, None)).await.unwrap();
        let pki = cluster.pki.as_ref().unwrap();
        let c = connect(
            &cluster,
            ClientOptions {
                tls: Some(pki.ca_only()),
                ..ClientOptions::default()
            },
        )
        .await
        .unwrap();
        let e = c.list_volumes().await.unwrap_err();
        match &e {
            ClientError::Unauthenticated { message } => {
                assert!(message.contains("client certificate"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        harness::client(&cluster)
            .await
            .list_volumes()
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn the_coordinator_talks_only_to_the_node_it_expects() {
    with_timeout(async {
        let cluster = Cluster::start(tls_cluster(3, Some("test-token")))
            .await
            .unwrap();
        let pki = cluster.pki.as_ref().unwrap();
        // A second coordinator told that node1 is at node2's address and node2 at node1's:
        // whatever answers there is not the node it expects, so it never talks to it.
        let (a, b, c) = (
            cluster.nodes[0].addr(),
            cluster.nodes[1].addr(),
            cluster.nodes[2].addr(),
        );
        let mut args = vec![
            "--cluster-id".to_owned(),
            "dagraid".to_owned(),
            "--token".to_owned(),
            "test-token".to_owned(),
            "--health-interval-ms".to_owned(),
            "200".to_owned(),
            "--node".to_owned(),
            format!("node1={b}"),
            "--node".to_owned(),
            format!("node2={a}"),
            "--node".to_owned(),
            format!("node3={c}"),
        ];
        args.extend(pki.server_args(&Role::Coordinator).unwrap());
        let confused = CoordinatorProcess::start(args).await.unwrap();
        let client = Client::connect(
            format!("https://{}", confused.addr()),
            ClientOptions {
                tls: Some(pki.files(&Role::Client).unwrap()),
                retry: RetryPolicy::none(),
                ..ClientOptions::default()
            },
        )
        .await
        .unwrap();
        let reachable = eventually("node3 reachable", Duration::from_secs(20), || {
            let client = client.clone();
            async move {
                let info = client.cluster_info().await.ok()?;
                let by_id: BTreeMap<_, _> = info
                    .nodes
                    .iter()
                    .map(|n| (n.node_id.clone(), n.reachable))
                    .collect();
                by_id.get("node3").copied().filter(|r| *r).map(|_| by_id)
            }
        })
        .await;
        assert_eq!(reachable.get("node1"), Some(&false), "{reachable:?}");
        assert_eq!(reachable.get("node2"), Some(&false), "{reachable:?}");
        assert!(
            confused.log().contains("certificate"),
            "the coordinator's log does not say why: {}",
            confused.log()
        );
    })
    .await;
}

#[tokio::test]
async fn a_node_refuses_to_start_with_another_nodes_certificate() {
    with_timeout(async {
        let pki = TestPki::new().unwrap();
        let e = NodeProcess::start(NodeOptions {
            node_id: Some("node1".into()),
            tls: Some(NodeTls {
                node: pki.files(&Role::Node("node2".into())).unwrap(),
                caller: pki.files(&Role::Coordinator).unwrap(),
            }),
            ..NodeOptions::default()
        })
        .await
        .err()
        .expect("the node started");
        let e = format!("{e:#}");
        assert!(e.contains("node1.node.dagraid"), "{e}");
    })
    .await;
}

#[tokio::test]
async fn sighup_replaces_a_nodes_certificate_without_failing_io() {
    with_timeout(async {
        let cluster = Cluster::start(tls_cluster(3, Some("test-token")))
            .await
            .unwrap();
        let pki = cluster.pki.as_ref().unwrap();
        let client = harness::client(&cluster).await;
        client
            .create_volume(VolumeSpec::new("hup", RaidLevel::Raid5, 8 << 20).columns(3))
            .await
            .unwrap();
        let vol = client.volume("hup");
        let node1 = Role::Node("node1".into());
        let files = pki.files(&node1).unwrap();
        let (cert, key) = (files.cert.clone().unwrap(), files.key.clone().unwrap());
        let caller = pki.files(&Role::Coordinator).unwrap();
        let addr = cluster.nodes[0].addr();
        let before = channel(addr, &caller, &node1).await.unwrap();

        // Writes go on the whole time; none may fail.
        let writer = {
            let vol = vol.clone();
            tokio::spawn(async move {
                let mut written = Vec::new();
                for i in 0..200u64 {
                    let block = vec![(i % 250) as u8 + 1; 4096];
                    vol.write_at((i % 64) * 4096, block.clone()).await.unwrap();
                    written.push(((i % 64) * 4096, block));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                written
            })
        };

        // A new key and certificate for node1 (the same name), then SIGHUP: new handshakes get
        // the new certificate.
        let old_cert = std::fs::read(&cert).unwrap();
        pki.pki().issue(&node1, &cert, &key).unwrap();
        assert_ne!(std::fs::read(&cert).unwrap(), old_cert);
        cluster.nodes[0].hangup().await.unwrap();
        let new_der = {
            let pem = std::fs::read(&cert).unwrap();
            dagraid_tests::tls::first_certificate(&pem)
        };
        eventually(
            "node1 serves its new certificate",
            Duration::from_secs(20),
            || {
                let caller = caller.clone();
                let new_der = new_der.clone();
                async move {
                    let served = dagraid_tests::tls::served_certificate(
                        addr,
                        &caller,
                        &Role::Node("node1".into()),
                    )
                    .await
                    .ok()?;
                    (served == new_der).then_some(())
                }
            },
        )
        .await;
        // The connection made before the reload carries on.
        StorageNodeClient::new(before)
            .list_components(spb::ListComponentsRequest {})
            .await
            .expect("an existing connection continues after the reload");

        let written = writer.await.unwrap();
        let mut expected = vec![0u8; 64 * 4096];
        for (offset, block) in written {
            expected[offset as usize..offset as usize + block.len()].copy_from_slice(&block);
        }
        let got = vol.read_at(0, expected.len()).await.unwrap();
        assert!(got == expected, "the bytes read back differ");
        cluster.check_columns("hup", &[]).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_token_file_is_rotated_by_sighup_without_a_restart() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "first-token-1111\n").unwrap();
        let cluster = Cluster::start(ClusterOptions {
            nodes: 3,
            token: None,
            coordinator_args: vec!["--token-file".to_owned(), token_file.display().to_string()],
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        let with = |token: &str| {
            let token = token.to_owned();
            let cluster = &cluster;
            async move {
                connect(
                    cluster,
                    ClientOptions {
                        token: Some(token),
                        // The CA alone: the token decides.
                        tls: cluster.pki.as_ref().map(|pki| pki.ca_only()),
                        ..ClientOptions::default()
                    },
                )
                .await
                .unwrap()
                .list_volumes()
                .await
            }
        };
        with("first-token-1111").await.unwrap();
        let e = with("second-token-2222").await.unwrap_err();
        assert!(matches!(e, ClientError::Unauthenticated { .. }), "{e:?}");

        // A new token in the file, then SIGHUP: the new one works, the old one stops working.
        std::fs::write(&token_file, "second-token-2222\n").unwrap();
        cluster.coordinator.hangup().await.unwrap();
        eventually(
            "the new token accepted",
            Duration::from_secs(20),
            || async { with("second-token-2222").await.ok() },
        )
        .await;
        let e = with("first-token-1111").await.unwrap_err();
        assert!(matches!(e, ClientError::Unauthenticated { .. }), "{e:?}");

        // A broken file keeps the token in use.
        std::fs::write(&token_file, "").unwrap();
        cluster.coordinator.hangup().await.unwrap();
        eventually(
            "the failed reload logged",
            Duration::from_secs(20),
            || async {
                cluster
                    .coordinator
                    .log()
                    .contains("token reload failed")
                    .then_some(())
            },
        )
        .await;
        with("second-token-2222").await.unwrap();

        let log = cluster.coordinator.log();
        assert!(
            !log.contains("first-token-1111") && !log.contains("second-token-2222"),
            "a token was logged:\n{log}"
        );
    })
    .await;
}

/// `dagraid health`, the compose file's health check, over TLS without a client certificate:
/// serving for the right name, refused for another name or over plaintext.
#[tokio::test]
async fn dagraid_health_checks_over_tls_against_the_servers_name() {
    with_timeout(async {
        let cluster = Cluster::start(tls_cluster(1, Some("t"))).await.unwrap();
        let pki = cluster.pki.as_ref().unwrap();
        let ca = pki.pki().ca();
        let cli = dagraid_tests::process::binary("dagraid", "DAGRAID_BIN").unwrap();
        let health = |address: String, args: Vec<String>| {
            let mut cmd = tokio::process::Command::new(&cli);
            cmd.args(["--timeout", "10", "health"])
                .arg(address)
                .args(args)
                .env_remove("DAGRAID_TLS_CA")
                .env_remove("DAGRAID_TLS_CERT")
                .env_remove("DAGRAID_TLS_KEY")
                .env_remove("DAGRAID_TLS_SERVER_NAME");
            async move { cmd.output().await.unwrap() }
        };
        let with_ca = |name: Option<&str>, service: &str| {
            let mut args = vec!["--tls-ca".to_owned(), ca.display().to_string()];
            if let Some(name) = name {
                args.extend(["--tls-server-name".to_owned(), name.to_owned()]);
            }
            args.extend(["--service".to_owned(), service.to_owned()]);
            args
        };
        let node = cluster.nodes[0].addr().to_string();
        let coordinator = cluster.coordinator.addr().to_string();
        let ok = health(
            node.clone(),
            with_ca(Some("node1.node.dagraid"), "dagraid.storage.v1.StorageNode"),
        )
        .await;
        assert!(ok.status.success(), "{ok:?}");
        assert!(String::from_utf8_lossy(&ok.stdout).contains("serving"));
        let ok = health(
            coordinator.clone(),
            with_ca(None, "dagraid.volume.v1.VolumeService"),
        )
        .await;
        assert!(ok.status.success(), "{ok:?}");
        // The node's address with the coordinator's name: the certificate does not match.
        let wrong = health(node.clone(), with_ca(None, "")).await;
        assert!(!wrong.status.success(), "{wrong:?}");
        assert!(
            String::from_utf8_lossy(&wrong.stderr).contains("over TLS"),
            "{wrong:?}"
        );
        // Plaintext to a TLS port.
        let plain = health(node, vec![]).await;
        assert!(!plain.status.success(), "{plain:?}");
    })
    .await;
}
