//! grpcurl works against the coordinator: it serves gRPC server reflection (v1) beside health,
//! and the reflection client lists the services and finds the volume API's descriptor.

use std::collections::BTreeSet;

use dagraid_tests::cluster::{Cluster, ClusterOptions};
use dagraid_tests::with_timeout;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

/// One reflection request, its one answer.
async fn ask(
    client: &mut ServerReflectionClient<tonic::transport::Channel>,
    request: MessageRequest,
) -> MessageResponse {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer: ServerReflectionResponse = answers.message().await.unwrap().unwrap();
    answer.message_response.expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_lists_its_services_through_reflection() {
    with_timeout(async {
        let cluster = Cluster::start(ClusterOptions {
            nodes: 1,
            // Reflection, like health, answers without the token.
            token: Some("secret".into()),
            ..ClusterOptions::default()
        })
        .await
        .unwrap();
        // Over TLS without a client certificate: reflection needs no credential.
        let pki = cluster.pki.as_ref().expect("a TLS cluster");
        let channel = dagraid_tests::tls::channel(
            cluster.coordinator.addr(),
            &pki.ca_only(),
            &dagraid_tls::Role::Coordinator,
        )
        .await
        .unwrap();
        let mut client = ServerReflectionClient::new(channel);

        let MessageResponse::ListServicesResponse(list) =
            ask(&mut client, MessageRequest::ListServices(String::new())).await
        else {
            panic!("not a list of services");
        };
        let names: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
        let expected: BTreeSet<String> = [
            "dagraid.volume.v1.VolumeService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(names, expected);

        let MessageResponse::FileDescriptorResponse(files) = ask(
            &mut client,
            MessageRequest::FileContainingSymbol("dagraid.volume.v1.VolumeService".into()),
        )
        .await
        else {
            panic!("no descriptor of the volume API");
        };
        assert!(!files.file_descriptor_proto.is_empty());
    })
    .await;
}
