//! `dagraid certs init`: the cluster CA and a certificate per process, for a deployment that
//! is not `dagraid up` (which makes its own in DATA_DIR/tls). The compose file runs it as its
//! one-shot `certs` service.
//!
//! `--dir` holds the CA (`ca.pem`, `ca-key.pem`) and every certificate issued from it; it is
//! made on the first run and kept afterwards, so running it again issues only what is missing.
//! With `--out`, each process also gets a directory of its own, `OUT/<name>/` (`coordinator`,
//! `client`, and each node id) holding only `ca.pem`, `cert.pem` and `key.pem`: mount that one
//! into its container, so that no process holds another's key or the CA's.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use dagraid_tls::pki::ClusterPki;
use dagraid_tls::{Role, TlsFiles};

/// The verbs of `dagraid certs`.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Make (or keep) the cluster CA in --dir, and certificates for the coordinator, the
    /// client and every --node.
    ///
    /// Files are 0600 in 0700 directories. Run again, it keeps what exists and issues only
    /// what is missing. With --out, OUT/coordinator, OUT/client and OUT/<node id> each get
    /// ca.pem, cert.pem and key.pem (copied again on every run); with --owner, everything
    /// written is handed to that user (for containers that run as another user than this
    /// step).
    Init {
        /// Directory of the CA and of every certificate issued from it.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// A storage node id (a DNS label); once per node. Its certificate names
        /// `ID.node.dagraid`, which the coordinator checks.
        #[arg(long = "node", value_name = "ID")]
        nodes: Vec<String>,
        /// Also copy each process's own three files into OUT/<name>/.
        #[arg(long, value_name = "OUT")]
        out: Option<PathBuf>,
        /// Numeric owner (UID:GID) of everything written under --out (needs root).
        #[arg(long, value_name = "UID:GID", value_parser = parse_owner)]
        owner: Option<(u32, u32)>,
    },
}

fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected UID:GID, e.g. 10001:10001"))?;
    let number = |v: &str| {
        v.parse::<u32>()
            .map_err(|_| format!("{s:?}: {v:?} is not a number"))
    };
    Ok((number(uid)?, number(gid)?))
}

/// Runs `dagraid certs ...`.
pub(crate) fn run(command: &CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init {
            dir,
            nodes,
            out,
            owner,
        } => init(dir, nodes, out.as_deref(), *owner),
    }
}

fn init(
    dir: &Path,
    nodes: &[String],
    out: Option<&Path>,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<()> {
    if owner.is_some() && out.is_none() {
        bail!("--owner applies to what --out writes: give --out too");
    }
    let pki = ClusterPki::open_or_create(dir)
        .with_context(|| format!("the cluster CA in {}", dir.display()))?;
    println!("CA: {}", pki.ca().display());
    let mut roles = vec![
        ("coordinator".to_owned(), Role::Coordinator),
        ("client".to_owned(), Role::Client),
    ];
    for id in nodes {
        dagraid_tls::check_node_id(id).with_context(|| format!("--node {id:?}"))?;
        if roles.iter().any(|(name, _)| name == id) {
            bail!("--node {id:?} is given twice, or is the name of another role");
        }
        roles.push((id.clone(), Role::Node(id.clone())));
    }
    for (name, role) in &roles {
        let files = pki.ensure(role)?;
        let Some(cert) = &files.cert else {
            bail!("no certificate for {}", role.dns_name());
        };
        println!("{:<12} {} ({})", name, cert.display(), role.dns_name());
        if let Some(out) = out {
            let own = out.join(name);
            copy_out(&files, &own, owner).with_context(|| format!("writing {}", own.display()))?;
            println!("{:<12} {}/{{ca,cert,key}}.pem", "", own.display());
        }
    }
    Ok(())
}

/// Copies the CA, a certificate and its key into `dir` as ca.pem, cert.pem and key.pem
/// ([`dagraid_tls::pki::export`]), handed to `owner` when given.
fn copy_out(files: &TlsFiles, dir: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    let written = dagraid_tls::pki::export(files, dir, ["ca.pem", "cert.pem", "key.pem"])?;
    if let Some((uid, gid)) = owner {
        for path in written.iter().map(PathBuf::as_path).chain([dir]) {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("handing {} to {uid}:{gid}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn init_makes_each_process_a_directory_of_its_own_and_keeps_the_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, out) = (tmp.path().join("ca"), tmp.path().join("out"));
        let nodes = vec!["node1".to_owned(), "node2".to_owned()];
        init(&dir, &nodes, Some(&out), None).unwrap();
        let ca = std::fs::read(dir.join("ca.pem")).unwrap();
        for name in ["coordinator", "client", "node1", "node2"] {
            let own = out.join(name);
            let mut names: Vec<_> = std::fs::read_dir(&own)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            assert_eq!(names, ["ca.pem", "cert.pem", "key.pem"], "{name}");
            assert_eq!(std::fs::read(own.join("ca.pem")).unwrap(), ca);
            let mode = std::fs::metadata(own.join("key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let node1 = std::fs::read(out.join("node1/cert.pem")).unwrap();
        // Again: the same CA and certificates, and a node added.
        let more = vec!["node1".to_owned(), "node3".to_owned()];
        init(&dir, &more, Some(&out), None).unwrap();
        assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
        assert_eq!(std::fs::read(out.join("node1/cert.pem")).unwrap(), node1);
        assert!(out.join("node3/key.pem").exists());
    }

    #[test]
    fn bad_input_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        let e = init(&dir, &["a.b".into()], None, None).unwrap_err();
        assert!(format!("{e:#}").contains("a.b"), "{e:#}");
        let e = init(&dir, &["client".into()], None, None).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = init(&dir, &[], None, Some((1, 1))).unwrap_err();
        assert!(e.to_string().contains("--out"), "{e}");
        assert!(parse_owner("10001").is_err());
        assert!(parse_owner("a:1").is_err());
        assert_eq!(parse_owner("10001:10002").unwrap(), (10001, 10002));
    }
}
