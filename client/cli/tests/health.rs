//! `dagraid health`, the container health check, against a real gRPC health service: serving,
//! not serving, an unknown service, nothing listening.

use std::process::Output;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

const BIN: &str = env!("CARGO_BIN_EXE_dagraid");

/// A health service on a free 127.0.0.1 port: `up.Serving` serving, `down.NotServing` not.
async fn health_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("up.Serving", tonic_health::ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("down.NotServing", tonic_health::ServingStatus::NotServing)
        .await;
    tokio::spawn(async move {
        // Keeps the reporter alive as long as the server runs.
        let _reporter = reporter;
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr.to_string()
}

async fn dagraid(args: &[&str]) -> Output {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(BIN)
            .args(args)
            .env_remove("DAGRAID_COORDINATOR")
            .env_remove("DAGRAID_TOKEN")
            .output(),
    )
    .await
    .expect("dagraid health did not finish within 30 s")
    .unwrap();
    eprintln!(
        "dagraid {args:?}: {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn serving_services_pass_and_the_rest_fail_with_one_line() {
    let addr = health_server().await;

    // The server as a whole, bare host:port and URL forms.
    let out = dagraid(&["health", &addr]).await;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("http://{addr}: serving\n")
    );
    let out = dagraid(&["health", &format!("http://{addr}")]).await;
    assert!(out.status.success());

    let out = dagraid(&["health", &addr, "--service", "up.Serving"]).await;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("up.Serving at http://{addr}: serving\n")
    );

    let out = dagraid(&["health", &addr, "--service", "down.NotServing"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("dagraid: error: "), "{err}");
    assert!(err.contains("is not serving: NOT_SERVING"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = dagraid(&["health", &addr, "--service", "no.Such"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
}

#[tokio::test]
async fn nothing_listening_fails_within_the_timeout() {
    // A port that was free a moment ago.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let started = std::time::Instant::now();
    let out = dagraid(&["--timeout", "2", "health", &addr]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot reach http://{addr}")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn help_names_the_verb() {
    let out = std::process::Command::new(BIN)
        .args(["health", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("gRPC health service"), "{help}");
    assert!(help.contains("--service"), "{help}");
}
